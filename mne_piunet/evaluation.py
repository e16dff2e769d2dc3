"""Scoring of inverse methods on simulated data: rows of metrics per sample and method.

One runner, :func:`score_methods`, simulates the samples of every
:class:`Cell` (a head setup and its source and noise parameters), applies each
method to the same sensor data and scores the maps. It has two presets:

- :func:`run_benchmark` (``mne-piunet benchmark``) compares every method of
  MNE (MNE, dSPM, sLORETA, eLORETA, MxNE, Gamma-MAP) with PIUNet in sweeps
  (:func:`benchmark_cells`);
- :func:`evaluate_methods` scores eLORETA and PIUNet over setups x SNRs x
  numbers of sources, and :func:`evaluate_model_card` runs it as the model
  card does (``mne-piunet evaluate``).

Every method is scored on the 8 mm grid: the truth and the estimates are moved
onto it with the same mass-conserving operator that feeds the network, so all
methods share one support. NEMD is exact EMD (POT) after summing the maps into
16 mm cubes (~500 cells): on the full 4,000-point grid one exact EMD with a
diffuse truth takes seconds, too slow for sweeps of hundreds of samples.
PLE is the distance between the map's peak and the truth's peak (meaningful
for one source; for several it is the error of the strongest one).

:mod:`mne_piunet.report` turns the rows into tables, CSV files and plots.
"""

# License: BSD-3-Clause

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import mne
import numpy as np
from mne.utils import ProgressBar, verbose

from .anatomy import make_template_forward
from .metrics import coarse_nemd, nmse, peak_localisation_error, spatial_dispersion, weighted_cosine_distance
from .simulation import (
    HeadSetup,
    PreparedSetup,
    SimulatedBatch,
    SourcePrior,
    add_noise,
    linear_kernel,
    prepare_setup,
    simulate,
)

__all__ = (
    "METHODS",
    "Cell",
    "DemoResult",
    "MethodRunner",
    "benchmark_cells",
    "evaluate_methods",
    "evaluate_model_card",
    "evaluation_cells",
    "localise_demo",
    "run_benchmark",
    "score_map",
    "score_methods",
    "simulate_demo_evoked",
)

#: Held out from training: montages, skull conductivity and head never seen.
HELD_OUT_SETUPS = (
    HeadSetup("easycap-M1", "bem", (0.332, 0.0113, 0.332), "surface"),
    HeadSetup("biosemi128", "bem", (0.332, 0.0113, 0.332), "volume"),
)
#: A training setup, for the in-distribution figure.
IN_DISTRIBUTION_SETUP = HeadSetup("easycap-M10", "bem", (0.3, 0.006, 0.3), "volume")
SNRS_DB = (0.0, 5.0, 10.0, 20.0, 30.0)
N_SOURCES = (1, 2, 3, 5, 10)

LINEAR_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
SPARSE_METHODS = ("MxNE", "Gamma-MAP")
METHODS = LINEAR_METHODS + ("PIUNet",) + SPARSE_METHODS
#: The methods of the model card's evaluation.
EVALUATION_METHODS = ("eLORETA", "PIUNet")
#: Methods whose output is a current moment (Am); dSPM and sLORETA are noise-normalised, unitless.
AM_METHODS = ("MNE", "eLORETA", "PIUNet", "MxNE", "Gamma-MAP")
#: MxNE's regularisation in percent of alpha_max and Gamma-MAP's noise variance after whitening:
#: the values of MNE's own examples, not tuned on these data.
MXNE_ALPHA = 55.0
GAMMA_MAP_ALPHA = 0.5
#: Benchmark heads and montages, none of them seen in training (see weights/train_config.json).
BENCH_MONTAGE = "easycap-M43"
BENCH_CONDUCTIVITY = (0.332, 0.0113, 0.332)
BENCH_MONTAGES = ("GSN-HydroCel-32", "easycap-M43", "biosemi128")
BENCH_SKULLS = (0.0113, 0.0033)
EXTENTS_MM = (10.0, 20.0, 40.0, 80.0)
#: Default condition that every sweep varies one factor of.
BASE_SNR_DB, BASE_N_SOURCES, BASE_SIGMA_MM = 10.0, 1, (5.0, 40.0)

#: The demo's source: left superior temporal region (template MRI coordinates, m).
DEMO_SOURCE_POS = np.array([-0.052, -0.020, 0.006])
DEMO_METHODS = ("dSPM", "sLORETA", "eLORETA", "PIUNet")


# --------------------------------------------------------------------------------------------------
# Scores of one map


def score_map(est: np.ndarray, true: np.ndarray, pos: np.ndarray, am: bool = True) -> dict[str, float]:
    """Every score of one grid map.

    Parameters
    ----------
    est, true : array, shape (n_grid, 3)
        The estimate and the truth on the grid.
    pos : array, shape (n_grid, 3)
        Grid positions (m).
    am : bool
        Whether the estimate is a current moment (Am): NMSE and the amplitude
        ratios are only defined then.

    Returns
    -------
    scores : dict
        ``nemd`` (16 mm cells), ``ple`` and ``sd`` (mm), ``wcos``, ``nmse``,
        ``peak_ratio`` and ``mass_ratio`` (the estimate's largest and summed
        moment norms over the truth's: 1 is a calibrated amplitude) and
        ``empty`` (an all-zero estimate: its map scores are NaN).
    """
    empty = not np.any(est)
    scores = dict(nemd=np.nan, ple=np.nan, wcos=np.nan, sd=np.nan, nmse=np.nan)
    if not empty:
        scores.update(
            nemd=coarse_nemd(est, true, pos),
            ple=peak_localisation_error(est, true, pos),
            wcos=weighted_cosine_distance(est, true),
            sd=spatial_dispersion(est, true, pos),
            nmse=nmse(est, true) if am else np.nan,
        )
    est_norm, true_norm = np.linalg.norm(est, axis=-1), np.linalg.norm(true, axis=-1)
    scores["peak_ratio"] = est_norm.max() / true_norm.max() if am else np.nan
    scores["mass_ratio"] = est_norm.sum() / true_norm.sum() if am else np.nan
    scores["empty"] = empty
    return scores


# --------------------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True)
class Cell:
    """One condition: a setup and the source and noise parameters of its samples.

    Parameters
    ----------
    sweep : str
        The factor this cell's group varies (a key of
        :data:`mne_piunet.report.SWEEP_LABELS`, or ``"evaluation"``).
    value : float | str
        The factor's value in this cell.
    setup : HeadSetup
        The forward model.
    snr_db : float
        SNR of every sample (dB).
    n_sources : int
        Number of sources of every sample.
    sigma_mm : tuple of float
        Range of the sources' Gaussian extent sigma (mm), drawn log-uniformly.
    """

    sweep: str
    value: float | str
    setup: HeadSetup
    snr_db: float = BASE_SNR_DB
    n_sources: int = BASE_N_SOURCES
    sigma_mm: tuple[float, float] = BASE_SIGMA_MM


def benchmark_cells(quick: bool = False) -> list[Cell]:
    """The benchmark's sweeps: SNR, number of sources and extent on both source spaces; montages and heads.

    Parameters
    ----------
    quick : bool
        Keep two values per sweep on a sphere head (no BEM to build), for
        smoke runs.

    Returns
    -------
    cells : list of Cell
        Each sweep varies one factor around the base condition (SNR 10 dB, one
        source, extent log-uniform over 2 sigma = 10-80 mm) on easycap-M43 with
        the template BEM at skull conductivity 0.0113 S/m: a montage and a
        skull conductivity the bundled model never saw.
    """
    if quick:
        spaces = [HeadSetup(BENCH_MONTAGE, "sphere", source_space=s) for s in ("surface", "volume")]
        snrs, ks, extents, montages, skulls = (0.0, 20.0), (1, 3), (10.0, 40.0), (), ()
    else:
        spaces = [HeadSetup(BENCH_MONTAGE, "bem", BENCH_CONDUCTIVITY, s) for s in ("surface", "volume")]
        snrs, ks, extents, montages, skulls = SNRS_DB, N_SOURCES, EXTENTS_MM, BENCH_MONTAGES, BENCH_SKULLS
    cells = []
    for setup in spaces:
        cells += [Cell("snr_db", s, setup, snr_db=s) for s in snrs]
        cells += [Cell("n_sources", k, setup, n_sources=k) for k in ks]
        cells += [Cell("extent_mm", e, setup, sigma_mm=(e / 2, e / 2)) for e in extents]
    return cells + _montage_cells(montages) + _head_cells(skulls)


def _montage_cells(montages: tuple[str, ...]) -> list[Cell]:
    cells = []
    for m in montages:
        n_chan = len(mne.channels.make_standard_montage(m).ch_names)
        setup = HeadSetup(m, "bem", BENCH_CONDUCTIVITY, "surface")
        cells.append(Cell("montage", f"{m} ({n_chan} ch)", setup))
    return cells


def _head_cells(skulls: tuple[float, ...]) -> list[Cell]:
    cells = []
    for skull in skulls:
        cond = (BENCH_CONDUCTIVITY[0], skull, BENCH_CONDUCTIVITY[2])
        cells.append(
            Cell("head", f"BEM, skull {skull:g} S/m", HeadSetup(BENCH_MONTAGE, "bem", cond, "surface"))
        )
    if skulls:
        sphere = HeadSetup(BENCH_MONTAGE, "sphere", source_space="surface")
        cells.append(Cell("head", "4-layer sphere", sphere))
    return cells


def evaluation_cells(
    setups=HELD_OUT_SETUPS,
    snrs=SNRS_DB,
    n_sources=N_SOURCES,
    sigma_mm: tuple[float, float] = SourcePrior().sigma_mm,
) -> list[Cell]:
    """Every (setup, SNR, number of sources) combination, setups outermost.

    Parameters
    ----------
    setups : sequence of HeadSetup
        Forward models.
    snrs : sequence of float
        SNRs (dB).
    n_sources : sequence of int
        Numbers of sources.
    sigma_mm : tuple of float
        Range of the sources' extent sigma (mm).

    Returns
    -------
    cells : list of Cell
        Their ``sweep`` is ``"evaluation"``.
    """
    return [
        Cell("evaluation", f"SNR {snr:g} dB, {k} sources", setup, snr_db=snr, n_sources=k, sigma_mm=sigma_mm)
        for setup in setups
        for snr in snrs
        for k in n_sources
    ]


# --------------------------------------------------------------------------------------------------
# Methods


class MethodRunner:
    """All methods on one prepared setup, each on the same sensor data.

    Linear methods apply their ``apply_inverse`` kernel (computed once, as MNE
    does for every time point); PIUNet refines the eLORETA estimate; MxNE and
    Gamma-MAP run per sample with the sample's true (white) noise covariance,
    as a well-estimated baseline covariance would give them.

    Parameters
    ----------
    prepared : PreparedSetup
        The setup.
    methods : tuple of str
        A subset of :data:`METHODS`.
    """

    def __init__(self, prepared: PreparedSetup, methods: tuple[str, ...] = METHODS):
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}")
        self.prepared, self.methods = prepared, tuple(methods)
        self.kernels = {m: linear_kernel(prepared, m) for m in LINEAR_METHODS if m in methods}
        self.forward = None
        if set(SPARSE_METHODS) & set(methods):  # the setup's own forward (read from the cache)
            setup = prepared.setup
            self.forward = make_template_forward(
                setup.montage, prepared.src, head=setup.head, conductivity=setup.conductivity
            )

    def estimate(self, batch: SimulatedBatch, piu=None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every method's estimate of a batch.

        Parameters
        ----------
        batch : SimulatedBatch
            Samples of this runner's setup.
        piu : PIUNetInverse | None
            The model, needed when PIUNet is one of the methods.

        Returns
        -------
        estimates : dict of str to array, shape (n, n_grid, 3)
            Each method's maps on the grid.
        seconds : dict of str to float
            Each method's seconds per sample (PIUNet's include eLORETA's).
        """
        prep, n = self.prepared, len(batch.sensor)
        estimates, seconds = {}, {}
        for method, kernel in self.kernels.items():
            t0 = time.perf_counter()
            est = (batch.sensor @ kernel.T).reshape(batch.true.shape)
            seconds[method] = (time.perf_counter() - t0) / n
            estimates[method] = prep.grid_values(est)
        if "PIUNet" in self.methods:
            t0 = time.perf_counter()
            estimates["PIUNet"] = piu.predict_grid(batch.eloreta_grid)
            seconds["PIUNet"] = (time.perf_counter() - t0) / n + seconds.get("eLORETA", 0.0)
        clean = batch.true.reshape(n, -1) @ prep.leadfield.T
        noise_var = np.var(batch.sensor - clean, axis=1)
        for method in (m for m in SPARSE_METHODS if m in self.methods):
            t0 = time.perf_counter()
            est = np.stack([self.sparse(method, batch.sensor[i], noise_var[i]) for i in range(n)])
            seconds[method] = (time.perf_counter() - t0) / n
            estimates[method] = prep.grid_values(est)
        return estimates, seconds

    def sparse(self, method: str, sensor: np.ndarray, noise_var: float) -> np.ndarray:
        """MxNE or Gamma-MAP on one sample.

        Parameters
        ----------
        method : "MxNE" | "Gamma-MAP"
            The solver.
        sensor : array, shape (n_chan,)
            The sample's sensor data.
        noise_var : float
            The sample's noise variance (white).

        Returns
        -------
        est : array, shape (n_src, 3) | (n_src,)
            MRI-frame moments (free orientation) or amplitudes (fixed).
        """
        from mne.inverse_sparse import gamma_map, mixed_norm

        prep = self.prepared
        info = prep.info
        evoked = mne.EvokedArray(sensor[:, None], info, tmin=0.0, nave=1, verbose=False)
        cov = mne.Covariance(
            np.full(len(info["ch_names"]), noise_var), info["ch_names"], [], info["projs"], nfree=1000,
            verbose=False,
        )  # fmt: skip
        kwargs = dict(
            loose=1.0 if prep.free else 0.0, pick_ori="vector" if prep.free else None, verbose=False
        )
        with warnings.catch_warnings():  # one time point: MxNE's convergence warnings are expected
            warnings.simplefilter("ignore")
            if method == "MxNE":
                stc = mixed_norm(evoked, self.forward, cov, alpha=MXNE_ALPHA, **kwargs)
            else:
                stc = gamma_map(
                    evoked, self.forward, cov, alpha=GAMMA_MAP_ALPHA, xyz_same_gamma=True, **kwargs
                )
        return self._on_sources(stc)

    def _on_sources(self, stc) -> np.ndarray:
        """A sparse solver's estimate on all of the setup's sources."""
        prep, src = self.prepared, self.forward["src"]
        offsets = np.cumsum([0] + [s["nuse"] for s in src])
        idx = np.concatenate(
            [off + np.searchsorted(s["vertno"], v) for off, s, v in zip(offsets, src, stc.vertices)]
        )
        if prep.free:
            est = np.zeros((prep.n_sources, 3))
            est[idx] = stc.data[:, :, 0] @ prep.head_to_mri.T  # head -> MRI frame, like the truth
        else:
            est = np.zeros(prep.n_sources)
            est[idx] = stc.data[:, 0]
        return est


# --------------------------------------------------------------------------------------------------
# The runner and its presets


@verbose
def score_methods(
    piu,
    cells: list[Cell],
    n_per_cell: int,
    seed: int,
    lambda2: float = 1.0 / 9.0,
    methods: tuple[str, ...] = METHODS,
    *,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """Score every method on the same simulated samples of every cell.

    Parameters
    ----------
    piu : PIUNetInverse
        The model (its grid is the common scoring grid).
    cells : list of Cell
        The conditions, simulated in this order from one random generator.
    n_per_cell : int
        Samples per cell.
    seed : int
        Seed of the simulation (the same seed gives the same data).
    lambda2 : float
        Regularisation of the linear methods (eLORETA's is PIUNet's input).
    methods : tuple of str
        A subset of :data:`METHODS`.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    rows : list of dict
        One row per sample and method: the cell, the sample's extent, the
        scores of :func:`score_map` and seconds per sample.
    """
    rng = np.random.default_rng(seed)
    runners: dict[HeadSetup, MethodRunner] = {}
    rows = []
    for cell in ProgressBar(cells, mesg="Scoring"):
        if cell.setup not in runners:
            runners[cell.setup] = MethodRunner(prepare_setup(cell.setup, piu.grid, lambda2=lambda2), methods)
        runner = runners[cell.setup]
        batch = simulate(
            runner.prepared,
            n_per_cell,
            rng,
            snr_db=cell.snr_db,
            n_sources=cell.n_sources,
            sigma_mm=cell.sigma_mm,
        )
        estimates, seconds = runner.estimate(batch, piu)
        rows += _cell_rows(cell, runner, batch, estimates, seconds, piu.grid.pos)
    return rows


def _cell_rows(
    cell: Cell, runner: MethodRunner, batch: SimulatedBatch, estimates: dict, seconds: dict, pos: np.ndarray
) -> list[dict]:
    """One row per sample and method of one cell."""
    rows = []
    for i in range(len(batch.sensor)):
        for method in runner.methods:
            row = dict(
                sweep=cell.sweep, value=cell.value, setup=cell.setup.name, montage=cell.setup.montage,
                n_channels=len(runner.prepared.info["ch_names"]), source_space=cell.setup.source_space,
                snr_db=cell.snr_db, n_sources=cell.n_sources,
                extent_mm=float(2 * np.mean(batch.sigma_mm[i])), sample=i, method=method,
            )  # fmt: skip
            row.update(score_map(estimates[method][i], batch.true_grid[i], pos, method in AM_METHODS))
            row["seconds"] = seconds[method]
            rows.append(row)
    return rows


def run_benchmark(
    piu,
    cells: list[Cell] | None = None,
    n_per_cell: int = 8,
    seed: int = 0,
    lambda2: float = 1.0 / 9.0,
    methods: tuple[str, ...] = METHODS,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """The benchmark: every method on the sweeps of :func:`benchmark_cells`.

    Parameters
    ----------
    piu : PIUNetInverse
        The model (its grid is the common scoring grid).
    cells : list of Cell | None
        The conditions; ``None`` means :func:`benchmark_cells`.
    n_per_cell : int
        Samples per cell.
    seed : int
        Seed of the simulation (the same seed gives the same data).
    lambda2 : float
        Regularisation of the linear methods (eLORETA's is PIUNet's input).
    methods : tuple of str
        A subset of :data:`METHODS`.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    rows : list of dict
        See :func:`score_methods`.
    """
    cells = benchmark_cells() if cells is None else cells
    return score_methods(piu, cells, n_per_cell, seed, lambda2, methods, verbose=verbose)


def evaluate_methods(
    piu,
    setups=HELD_OUT_SETUPS,
    snrs=SNRS_DB,
    n_sources=N_SOURCES,
    n_per_cell: int = 10,
    seed: int = 1234,
    lambda2: float = 1.0 / 9.0,
    prior: SourcePrior = SourcePrior(),
    methods: tuple[str, ...] = EVALUATION_METHODS,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """Score eLORETA and PIUNet on simulated data, one row per sample and method.

    Not to be confused with :func:`mne_piunet.metrics.evaluate`, which scores
    one map.

    Parameters
    ----------
    piu : PIUNetInverse
        The model to evaluate.
    setups : sequence of HeadSetup
        Forward models (default: held-out montages and conductivities, a
        fixed-orientation cortical inverse and a free-orientation volume one).
    snrs, n_sources : sequence
        The sweep; each (setup, SNR, n_sources) cell gets ``n_per_cell`` samples.
    n_per_cell : int
        Samples per cell.
    seed : int
        Seed (the same seed gives the same data).
    lambda2 : float
        eLORETA regularisation.
    prior : SourcePrior
        Its ``sigma_mm`` is the range of source extents (cortical patches on
        surface setups, blobs on volume).
    methods : tuple of str
        A subset of :data:`METHODS`.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    rows : list of dict
        See :func:`score_methods`.
    """
    cells = evaluation_cells(setups, snrs, n_sources, prior.sigma_mm)
    return score_methods(piu, cells, n_per_cell, seed, lambda2, methods, verbose=verbose)


def evaluate_model_card(piu, quick: bool = False, seed: int = 1234) -> tuple[list[dict], list[dict]]:
    """The model card's evaluation: one training setup, then the held-out ones.

    Parameters
    ----------
    piu : PIUNetInverse
        The model.
    quick : bool
        3 samples per cell (6 in distribution), SNR 10 and 20 dB, 1 and 3
        sources, instead of 10 (20), :data:`SNRS_DB` and :data:`N_SOURCES`.
    seed : int
        Seed of the in-distribution samples; the held-out ones use ``seed + 1``.

    Returns
    -------
    in_distribution : list of dict
        Rows of :data:`IN_DISTRIBUTION_SETUP`, one source, SNR 20 dB.
    held_out : list of dict
        Rows of :data:`HELD_OUT_SETUPS`.
    """
    n = 3 if quick else 10
    snrs = (10.0, 20.0) if quick else SNRS_DB
    ks = (1, 3) if quick else N_SOURCES
    ind = evaluate_methods(piu, (IN_DISTRIBUTION_SETUP,), (20.0,), (1,), n_per_cell=2 * n, seed=seed)
    held = evaluate_methods(piu, HELD_OUT_SETUPS, snrs, ks, n_per_cell=n, seed=seed + 1)
    return ind, held


# --------------------------------------------------------------------------------------------------
# ``mne-piunet demo``: one known source, four inverses


def simulate_demo_evoked(
    setup: PreparedSetup, snr_db: float = 10.0, sigma_mm: float = 10.0, seed: int = 0
) -> tuple[mne.EvokedArray, np.ndarray]:
    """An Evoked from one Gaussian blob at :data:`DEMO_SOURCE_POS` with a 10 Hz burst.

    Parameters
    ----------
    setup : PreparedSetup
        A volume setup (free orientation).
    snr_db : float
        SNR (dB) at the peak of the burst: white noise of the level that
        :func:`mne_piunet.simulation.add_noise` gives the peak's map, at
        every time point.
    sigma_mm : float
        The blob's Gaussian extent sigma (mm).
    seed : int
        Seed of the noise.

    Returns
    -------
    evoked : mne.EvokedArray
        Half a second at the setup's sampling rate.
    centre : array, shape (3,)
        The true source position (m, template MRI coordinates).
    """
    rng = np.random.default_rng(seed)
    # a fixed, radial source (simulate_sources draws random centres and orientations)
    idx = np.argmin(np.linalg.norm(setup.pos - DEMO_SOURCE_POS, axis=1))
    centre = setup.pos[idx]
    profile = np.exp(-np.sum((setup.pos - centre) ** 2, axis=1) / (2 * (sigma_mm * 1e-3) ** 2))
    moments = (profile[:, None] * centre[None] / np.linalg.norm(centre)).reshape(-1) / np.linalg.norm(profile)
    times = np.arange(0, 0.5, 1 / setup.info["sfreq"])
    course = 20e-9 * np.sin(2 * np.pi * 10 * times) * np.exp(-((times - 0.2) ** 2) / (2 * 0.06**2))
    clean = np.outer(setup.leadfield @ moments, course)
    peak = np.broadcast_to(clean[:, np.argmax(np.abs(course))], clean.T.shape)
    noise = add_noise(peak, np.full(len(times), snr_db), rng) - peak
    evoked = mne.EvokedArray(clean + noise.T, setup.info, tmin=0.0, nave=1, verbose=False)
    return evoked, centre


@dataclass
class DemoResult:
    """The demo's simulation and each method's estimate and localisation error.

    Parameters
    ----------
    montage : str
        The montage.
    snr_db : float
        SNR at the peak (dB).
    evoked : mne.Evoked
        The simulated data.
    centre : array, shape (3,)
        The true source (m, template MRI coordinates).
    t_peak : float
        Time of the largest global field power (s).
    stcs : dict of str to VolSourceEstimate
        Each method's estimate.
    errors : dict of str to float
        Distance (mm) between each estimate's peak at ``t_peak`` and ``centre``.
    """

    montage: str
    snr_db: float
    evoked: mne.Evoked
    centre: np.ndarray
    t_peak: float
    stcs: dict
    errors: dict[str, float]


def localise_demo(
    piu, montage: str = "biosemi64", snr_db: float = 10.0, lambda2: float = 1.0 / 9.0
) -> DemoResult:
    """Simulate the demo's source and localise it with dSPM, sLORETA, eLORETA and PIUNet.

    Parameters
    ----------
    piu : PIUNetInverse
        The model.
    montage : str
        Built-in MNE montage, on the template BEM with the grid as a
        free-orientation source space.
    snr_db : float
        SNR at the peak (dB).
    lambda2 : float
        Regularisation of every method.

    Returns
    -------
    result : DemoResult
        The data, estimates and errors.
    """
    setup = prepare_setup(HeadSetup(montage), piu.grid)
    evoked, centre = simulate_demo_evoked(setup, snr_db)
    inv = setup.inverse_operator
    stcs = {
        m: mne.minimum_norm.apply_inverse(evoked, inv, lambda2, m, verbose=False) for m in DEMO_METHODS[:-1]
    }
    stcs["PIUNet"] = piu.apply(evoked, inv, lambda2)
    t_peak = float(evoked.times[np.argmax(np.sum(evoked.data**2, axis=0))])
    # the vertices of a grid inverse are the grid's own (template MRI frame)
    errors = {}
    for name, stc in stcs.items():
        values = np.abs(stc.data[:, stc.time_as_index(t_peak)[0]])
        errors[name] = float(np.linalg.norm(piu.grid.pos[np.argmax(values)] - centre) * 1e3)
    return DemoResult(montage, snr_db, evoked, centre, t_peak, stcs, errors)
