"""Scoring of inverse methods on simulated data: rows of metrics per sample and method.

One runner, :func:`score_methods`, simulates the samples of every
:class:`Cell` (a head setup and its source and noise parameters), applies each
method to the same sensor data and scores the maps. It has two presets:

- :func:`run_benchmark` (``mne-piunet benchmark``) compares every method of
  MNE (MNE, dSPM, sLORETA, eLORETA, MxNE, Gamma-MAP) with PIUNet in sweeps
  (:func:`benchmark_cells`);
- :func:`evaluate_methods` scores eLORETA and PIUNet over setups x SNRs x
  numbers of sources, and :func:`evaluate_model_card` runs it as the model
  card does (``mne-piunet evaluate``), with the :func:`preset_cells`
  (a loose cortical inverse, a 32-channel montage, the paper's setting).

A cell's setup is a :class:`~mne_piunet.simulation.HeadSetup` or an already
prepared setup (a user's forward and inverse, or a data/inverse mismatch):
:func:`finetune_benefit` scores the bundled and fine-tuned models that way.

Every method is scored on the 8 mm grid: the truth and the estimates are moved
onto it with the same mass-conserving operator that feeds the network, so all
methods share one support. NEMD is exact EMD (POT) after summing the maps into
16 mm cubes (743 cells): on the full 3,990-point grid one exact EMD with a
diffuse truth takes seconds, too slow for sweeps of hundreds of samples.
PLE is the distance between the map's peak and the truth's peak (meaningful
for one source; for several it is the error of the strongest one).

:mod:`mne_piunet.bench.report` turns the rows into tables, CSV files and plots.
"""

# License: BSD-3-Clause

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import mne
import numpy as np
from mne.utils import ProgressBar, logger, verbose

from ..anatomy import make_template_forward, montage_info
from ..metrics import coarse_nemd, nmse, peak_localisation_error, spatial_dispersion, weighted_cosine_distance
from ..simulation import (
    HeadSetup,
    PreparedSetup,
    SimulatedBatch,
    SourcePrior,
    jittered_info,
    linear_kernel,
    network_window,
    prepare_setup,
    prepare_user_setup,
    setup_forward,
    setup_info,
    simulate,
)
from ..utils._defaults import DEFAULT_LAMBDA2, N_SOURCES_SWEEP
from ..utils._docs import fill_doc

__all__ = (
    "BENCHMARK_METHODS",
    "EVAL_WINDOW",
    "METHODS",
    "PEER_METHODS",
    "Cell",
    "MethodRunner",
    "benchmark_cells",
    "evaluate_methods",
    "evaluate_model_card",
    "evaluation_cells",
    "finetune_benefit",
    "paper_setting_setup",
    "preset_cells",
    "meg_mismatch_setup",
    "sensor_cells",
    "user_style_models",
    "run_benchmark",
    "score_map",
    "score_methods",
    "PEAK_FLOOR_MAPS",
    "peak_floor",
    "DATA_FIT_VARIANTS",
    "data_fit_ab",
    "DATA_FIT_VALIDATION_SETUPS",
)

#: Held out from training: montages, skull conductivity and head never seen.
HELD_OUT_SETUPS = (
    HeadSetup("easycap-M1", "bem", (0.332, 0.0113, 0.332), "surface"),
    HeadSetup("biosemi128", "bem", (0.332, 0.0113, 0.332), "volume"),
)
#: A training setup, for the in-distribution figure.
IN_DISTRIBUTION_SETUP = HeadSetup("easycap-M10", "bem", (0.3, 0.006, 0.3), "volume")
SNRS_DB = (0.0, 5.0, 10.0, 20.0, 30.0)
N_SOURCES = N_SOURCES_SWEEP

LINEAR_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
SPARSE_METHODS = ("MxNE", "Gamma-MAP")
#: invertmeeg's Champagne family (the ``[peers]`` extra), by its solver names. They
#: fit the window's covariance, as no MNE solver does, and run on volume setups
#: only: on a 20,484-source cortex one sample takes minutes.
PEER_METHODS = {
    "Champagne": "champagne",
    "Flex-Champagne": "flex-champagne",
    "Omni-Champagne": "omni-champagne",
}
METHODS = LINEAR_METHODS + ("PIUNet",) + SPARSE_METHODS + tuple(PEER_METHODS)
#: The benchmark's default methods: MNE's and PIUNet (the peers need the extra).
BENCHMARK_METHODS = LINEAR_METHODS + ("PIUNet",) + SPARSE_METHODS
#: The methods of the model card's evaluation.
EVALUATION_METHODS = ("eLORETA", "PIUNet")
#: Methods whose output is a current moment (Am); dSPM and sLORETA are noise-normalised, unitless,
#: and the peers return amplitudes without orientation.
AM_METHODS = ("MNE", "eLORETA", "PIUNet", "MxNE", "Gamma-MAP")
#: Every simulated sample is a time course: 21 samples over 80 ms (250 Hz), scored at its
#: centre. PIUNet takes its temporal context from it, the sparse solvers and the peers
#: fit all of it, the linear methods and a model without context the centre alone.
EVAL_WINDOW = (0.08, 21)
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

#: Sensor arrays no training saw: a KIT array (a family held out), and the
#: Kernel Flux OPM layout (triaxial, where training had radial and dual-axis caps).
HELD_OUT_MEG = "kit157"
HELD_OUT_OPM = "flux120"
#: The held-out EEG montage of the sensor-type comparison (as :data:`HELD_OUT_SETUPS`).
HELD_OUT_EEG = "easycap-M1"
#: MEG's usual single-shell inverse on data from the 3-layer BEM.
SINGLE_SHELL = (0.3,)
SENSOR_SNRS_DB = (0.0, 5.0, 10.0, 20.0)
SENSOR_N_SOURCES = (1, 3, 5)


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
        :data:`mne_piunet.bench.report.SWEEP_LABELS`, or ``"evaluation"``).
    value : float | str
        The factor's value in this cell.
    setup : HeadSetup | PreparedSetup
        The forward model, or a prepared one (scored as it is).
    snr_db : float
        SNR of every sample (dB).
    n_sources : int
        Number of sources of every sample.
    sigma_mm : tuple of float
        Range of the sources' Gaussian extent sigma (mm), drawn log-uniformly.
    """

    sweep: str
    value: float | str
    setup: HeadSetup | PreparedSetup
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
    return cells + _montage_cells(montages) + _head_cells(skulls) + ([] if quick else _sensor_cells())


def _montage_cells(montages: tuple[str, ...]) -> list[Cell]:
    cells = []
    for m in montages:
        n_chan = len(mne.channels.make_standard_montage(m).ch_names)
        setup = HeadSetup(m, "bem", BENCH_CONDUCTIVITY, "surface")
        cells.append(Cell("montage", f"{m} ({n_chan} ch)", setup))
    return cells


def _sensor_cells() -> list[Cell]:
    """The benchmark's sensor-type sweep at the base condition, on held-out arrays (cortex)."""
    setups = {
        f"EEG ({BENCH_MONTAGE})": HeadSetup(BENCH_MONTAGE, "bem", BENCH_CONDUCTIVITY, "surface"),
        f"MEG ({HELD_OUT_MEG})": HeadSetup(None, "bem", BENCH_CONDUCTIVITY, "surface", meg=HELD_OUT_MEG),
        f"MEG+EEG ({HELD_OUT_MEG} + {BENCH_MONTAGE})": HeadSetup(
            BENCH_MONTAGE, "bem", BENCH_CONDUCTIVITY, "surface", meg=HELD_OUT_MEG
        ),
        f"OPM ({HELD_OUT_OPM})": HeadSetup(None, "bem", BENCH_CONDUCTIVITY, "surface", meg=HELD_OUT_OPM),
    }
    return [Cell("sensors", label, setup) for label, setup in setups.items()]


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
    does for every time point) to each sample's centre; PIUNet refines the
    eLORETA estimate with its temporal context from the sample's window; MxNE
    (and invertmeeg's Champagne family, :data:`PEER_METHODS`) fit each
    sample's whole window, Gamma-MAP its centre alone (MNE's Gamma-MAP slows
    down about 8x on a window of 21 points), each with the sample's true
    (white) noise covariance, as a well-estimated baseline covariance would
    give them, and all are scored at the centre.

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
        if (set(SPARSE_METHODS) | set(PEER_METHODS)) & set(methods):  # the setup's own forward (cached)
            setup = prepared.spec
            if not isinstance(setup, HeadSetup) or setup.loose:
                raise ValueError(
                    f"MxNE, Gamma-MAP and the peers run on template setups only (fixed cortex or free "
                    f"volume), not on {prepared.name!r}; score it with {LINEAR_METHODS + ('PIUNet',)}"
                )
            self.forward = setup_forward(setup, prepared.src)
        if set(PEER_METHODS) & set(methods):
            _import_peers()
            if prepared.normals is not None:  # a cortex: minutes per sample, so not scored
                logger.info(f"Peers not run on {prepared.name} (volume setups only)")
                self.methods = tuple(m for m in self.methods if m not in PEER_METHODS)

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
            estimates["PIUNet"] = piu.predict_grid(*batch.network_maps(piu.network.config))
            seconds["PIUNet"] = (time.perf_counter() - t0) / n + seconds.get("eLORETA", 0.0)
        clean = batch.true.reshape(n, -1) @ prep.leadfield.T
        std = np.ones(len(prep.info["ch_names"])) if prep.channel_std is None else prep.channel_std
        noise_var = np.var((batch.sensor - clean) / std, axis=1)[:, None] * std**2  # per channel type
        window = (
            batch.sensor[:, :, None] if batch.sensor_window is None else batch.sensor_window.swapaxes(1, 2)
        )
        for method in (m for m in SPARSE_METHODS + tuple(PEER_METHODS) if m in self.methods):
            data = batch.sensor[:, :, None] if method == "Gamma-MAP" else window
            t0 = time.perf_counter()
            est = np.stack([self.sparse(method, data[i], noise_var[i]) for i in range(n)])
            seconds[method] = (time.perf_counter() - t0) / n
            estimates[method] = prep.grid_values(est)
        return estimates, seconds

    def sparse(self, method: str, sensor: np.ndarray, noise_var: float) -> np.ndarray:
        """MxNE, Gamma-MAP or a peer on one sample's window, its centre returned.

        Parameters
        ----------
        method : "MxNE" | "Gamma-MAP" | one of :data:`PEER_METHODS`
            The solver.
        sensor : array, shape (n_chan, n_times)
            The sample's sensor data over its window (its centre in the middle).
        noise_var : float | array, shape (n_chan,)
            The sample's noise variance, one value or one per channel (white
            within a channel type).

        Returns
        -------
        est : array, shape (n_src, 3) | (n_src,)
            MRI-frame moments (free orientation) or amplitudes (fixed) at the
            window's centre. A peer's amplitudes have no orientation: they
            are laid along x, which the amplitude-based scores ignore (its
            ``wcos`` is NaN).
        """
        from mne.inverse_sparse import gamma_map, mixed_norm

        prep = self.prepared
        info = prep.info
        centre = sensor.shape[1] // 2
        # one solve per sample: quiet, or the benchmark's log is MNE's solver output
        evoked = mne.EvokedArray(sensor, info, tmin=-centre / info["sfreq"], nave=1, verbose=False)
        if method in PEER_METHODS:
            return self._peer(method, evoked, centre)
        cov = mne.Covariance(
            np.broadcast_to(np.asarray(noise_var, float), (len(info["ch_names"]),)).copy(),
            info["ch_names"], [], info["projs"], nfree=1000,
            verbose=False,
        )  # fmt: skip
        kwargs = dict(
            loose=1.0 if prep.free else 0.0, pick_ori="vector" if prep.free else None, verbose=False
        )
        with warnings.catch_warnings():  # short windows: MxNE's convergence warnings are expected
            warnings.simplefilter("ignore")
            if method == "MxNE":
                stc = mixed_norm(evoked, self.forward, cov, alpha=MXNE_ALPHA, **kwargs)
            else:
                stc = gamma_map(
                    evoked, self.forward, cov, alpha=GAMMA_MAP_ALPHA, xyz_same_gamma=True, **kwargs
                )
        return self._on_sources(stc, centre)

    def _peer(self, method: str, evoked: mne.Evoked, centre: int) -> np.ndarray:
        """An invertmeeg solver's amplitudes at the window's centre (its own regularisation search)."""
        solver = _import_peers()(PEER_METHODS[method])
        with warnings.catch_warnings(), _quiet("invert"):
            warnings.simplefilter("ignore")
            solver.make_inverse_operator(self.forward, evoked, alpha="auto")
            stc = solver.apply_inverse_operator(evoked)
        amplitude = np.abs(np.asarray(stc.data)[:, centre])
        if len(amplitude) != self.prepared.n_sources:
            raise RuntimeError(
                f"{method} returned {len(amplitude)} sources for a forward of {self.prepared.n_sources}"
            )
        if not self.prepared.free:
            return amplitude
        est = np.zeros((self.prepared.n_sources, 3))
        est[:, 0] = amplitude
        return est

    def _on_sources(self, stc, centre: int) -> np.ndarray:
        """A sparse solver's estimate at time point ``centre`` on all of the setup's sources."""
        prep, src = self.prepared, self.forward["src"]
        offsets = np.cumsum([0] + [s["nuse"] for s in src])
        idx = np.concatenate(
            [off + np.searchsorted(s["vertno"], v) for off, s, v in zip(offsets, src, stc.vertices)]
        )
        if prep.free:
            est = np.zeros((prep.n_sources, 3))
            est[idx] = stc.data[:, :, centre] @ prep.head_to_mri.T  # head -> MRI frame, like the truth
        else:
            est = np.zeros(prep.n_sources)
            est[idx] = stc.data[:, centre]
        return est


def _import_peers():
    """invertmeeg's ``Solver`` factory, or an ImportError naming the extra to install."""
    try:
        from invert import Solver
    except ImportError:
        raise ImportError(
            f"The peer methods {', '.join(PEER_METHODS)} come from invertmeeg, which is not installed: "
            'pip install "mne-piunet[peers]" (invertmeeg 1.1, Python < 3.14), or leave them out of methods.'
        ) from None
    return Solver


@contextmanager
def _quiet(name: str):
    """Silence a library's own logger (invertmeeg logs each solve)."""
    import logging

    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# --------------------------------------------------------------------------------------------------
# The runner and its presets


@verbose
def score_methods(
    piu,
    cells: list[Cell],
    n_per_cell: int,
    seed: int,
    lambda2: float = DEFAULT_LAMBDA2,
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
    if piu is not None and piu.network.config.window_s > EVAL_WINDOW[0]:
        raise ValueError(
            f"The network's window ({piu.network.config.window_s * 1e3:g} ms) is longer than the evaluation's "
            f"time courses ({EVAL_WINDOW[0] * 1e3:g} ms): it would see them as an instantaneous context. "
            "Lengthen EVAL_WINDOW (at 250 Hz) to score it."
        )
    # keyed by the setup itself (names leave out brain and scalp conductivity), or a prepared one's identity
    runners: dict[HeadSetup | int, MethodRunner] = {}
    rows = []
    for cell in ProgressBar(cells, mesg="Scoring"):
        key = cell.setup if isinstance(cell.setup, HeadSetup) else id(cell.setup)
        if key not in runners:
            prepared = cell.setup
            if isinstance(prepared, HeadSetup):
                prepared = prepare_setup(prepared, piu.grid, lambda2=lambda2)
            runners[key] = MethodRunner(prepared, methods)
        runner = runners[key]
        batch = simulate(
            runner.prepared, n_per_cell, rng, SourcePrior(instantaneous=0.0),
            snr_db=cell.snr_db, n_sources=cell.n_sources, sigma_mm=cell.sigma_mm, window=EVAL_WINDOW,
        )  # fmt: skip
        estimates, seconds = runner.estimate(batch, piu)
        rows += _cell_rows(cell, runner, batch, estimates, seconds, piu.grid.pos)
    return rows


def _source_space(prepared: PreparedSetup) -> str:
    """``"volume"`` (blobs), ``"surface"`` (fixed cortical patches) or ``"surface (loose)"``."""
    if prepared.normals is None:
        return "volume"
    return "surface (loose)" if prepared.free else "surface"


def _cell_rows(
    cell: Cell, runner: MethodRunner, batch: SimulatedBatch, estimates: dict, seconds: dict, pos: np.ndarray
) -> list[dict]:
    """One row per sample and method of one cell."""
    rows = []
    for i in range(len(batch.sensor)):
        for method in runner.methods:
            setup = cell.setup.spec if isinstance(cell.setup, PreparedSetup) else cell.setup
            row = dict(
                sweep=cell.sweep, value=cell.value, setup=cell.setup.name,
                montage=getattr(setup, "montage", cell.setup.name), n_channels=len(runner.prepared.info["ch_names"]),
                source_space=_source_space(runner.prepared),
                snr_db=cell.snr_db, n_sources=cell.n_sources,
                extent_mm=float(2 * np.mean(batch.sigma_mm[i])), sample=i, method=method,
            )  # fmt: skip
            row.update(score_map(estimates[method][i], batch.true_grid[i], pos, method in AM_METHODS))
            if method in PEER_METHODS:  # amplitudes without orientation
                row["wcos"] = np.nan
            row["seconds"] = seconds[method]
            rows.append(row)
    return rows


@verbose
def run_benchmark(
    piu,
    cells: list[Cell] | None = None,
    n_per_cell: int = 8,
    seed: int = 0,
    lambda2: float = DEFAULT_LAMBDA2,
    methods: tuple[str, ...] = BENCHMARK_METHODS,
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


@verbose
def evaluate_methods(
    piu,
    setups=HELD_OUT_SETUPS,
    snrs=SNRS_DB,
    n_sources=N_SOURCES,
    n_per_cell: int = 10,
    seed: int = 1234,
    lambda2: float = DEFAULT_LAMBDA2,
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
        sources, instead of 20 (40), :data:`SNRS_DB` and :data:`N_SOURCES`.
    seed : int
        Seed of the in-distribution samples; the held-out ones use ``seed + 1``.

    Returns
    -------
    in_distribution : list of dict
        Rows of :data:`IN_DISTRIBUTION_SETUP`, one source, SNR 20 dB.
    held_out : list of dict
        Rows of :data:`HELD_OUT_SETUPS`.
    """
    n = 3 if quick else 20
    snrs = (10.0, 20.0) if quick else SNRS_DB
    ks = (1, 3) if quick else N_SOURCES
    ind = evaluate_methods(piu, (IN_DISTRIBUTION_SETUP,), (20.0,), (1,), n_per_cell=2 * n, seed=seed)
    held = evaluate_methods(piu, HELD_OUT_SETUPS, snrs, ks, n_per_cell=n, seed=seed + 1)
    return ind, held


@verbose
def meg_mismatch_setup(
    meg: str, grid, montage: str | None = None, lambda2: float = DEFAULT_LAMBDA2, verbose=None
) -> PreparedSetup:
    """A held-out MEG (or MEG+EEG) setup whose data and inverse come from different head models.

    Data come from the 3-layer template BEM at :data:`BENCH_CONDUCTIVITY`;
    eLORETA from the inverse a MEG user makes, on the single-shell BEM (or,
    with EEG, the 3-layer one at MNE's default conductivities). Fixed
    orientations on the fsaverage5 cortex.

    Parameters
    ----------
    meg : str
        The MEG array (:func:`~mne_piunet.sensors.check_meg_array`).
    grid : SourceGrid
        The network's grid.
    montage : str | None
        An EEG montage beside the MEG array.
    lambda2 : float
        eLORETA's regularisation.
    %(verbose)s

    Returns
    -------
    prepared : PreparedSetup
        Named like its data's :class:`HeadSetup`, with ``", inverse <head>"``.
    """
    from ..anatomy import make_cortex_src

    src = make_cortex_src()
    data = HeadSetup(montage, "bem", BENCH_CONDUCTIVITY, "surface", meg=meg)
    inverse_cond = SINGLE_SHELL if montage is None else (0.3, 0.006, 0.3)
    model = HeadSetup(montage, "bem", inverse_cond, "surface", meg=meg)
    info = setup_info(data)
    data_fwd = setup_forward(data, src, info)
    inv_fwd = setup_forward(model, src, info)
    cov = mne.make_ad_hoc_cov(info, verbose=False)
    inv = mne.minimum_norm.make_inverse_operator(info, inv_fwd, cov, loose=0.0, fixed=True)
    head = "single shell" if montage is None else "MNE's default 3-layer BEM"
    return prepare_user_setup(data_fwd, inv, grid, lambda2, name=f"{data.name}, inverse {head}")


def sensor_cells(grid, quick: bool = False) -> list[Cell]:
    """The model card's sensor-type evaluation on held-out arrays and heads.

    Parameters
    ----------
    grid : SourceGrid
        The network's grid.
    quick : bool
        10 and 20 dB, 1 and 3 sources instead of :data:`SENSOR_SNRS_DB` and
        :data:`SENSOR_N_SOURCES`.

    Returns
    -------
    cells : list of Cell
        Their ``sweep`` is ``"sensors"`` and ``value`` the sensor set: EEG
        (data and inverse from one held-out head model, as
        :data:`HELD_OUT_SETUPS`), MEG and MEG+EEG with data from another head
        model than the inverse (:func:`meg_mismatch_setup`), and the held-out
        OPM layout.
    """
    snrs = (10.0, 20.0) if quick else SENSOR_SNRS_DB
    ks = (1, 3) if quick else SENSOR_N_SOURCES
    eeg = HeadSetup(HELD_OUT_EEG, "bem", BENCH_CONDUCTIVITY, "surface")
    setups = {
        f"EEG ({HELD_OUT_EEG})": eeg,
        f"MEG ({HELD_OUT_MEG})": meg_mismatch_setup(HELD_OUT_MEG, grid),
        f"MEG+EEG ({HELD_OUT_MEG} + {HELD_OUT_EEG})": meg_mismatch_setup(HELD_OUT_MEG, grid, HELD_OUT_EEG),
        f"OPM ({HELD_OUT_OPM})": HeadSetup(None, "bem", SINGLE_SHELL, "surface", meg=HELD_OUT_OPM),
    }
    return [
        Cell("sensors", label, setup, snr_db=snr, n_sources=k)
        for label, setup in setups.items()
        for snr in snrs
        for k in ks
    ]


# --------------------------------------------------------------------------------------------------
# Presets: the conditions a real user meets that the sweeps above do not


#: A loose-orientation cortical inverse (MNE's surface default: loose 0.2, depth 0.8) on a held-out montage.
LOOSE_SETUP = HeadSetup("easycap-M1", "bem", BENCH_CONDUCTIVITY, "surface", loose=0.2)
#: A held-out 32-channel montage (32-channel caps gain least).
SPARSE_MONTAGE_SETUP = HeadSetup("GSN-HydroCel-32", "bem", BENCH_CONDUCTIVITY, "surface")
#: The paper's setting: a 7 mm volume source space with free orientations,
#: easycap-M10, data from one skull conductivity and the inverse from another.
PAPER_SPACING_MM = 7.0
PAPER_DATA_CONDUCTIVITY = BENCH_CONDUCTIVITY  # skull 1/30 of the brain's
PAPER_INVERSE_CONDUCTIVITY = (0.3, 0.006, 0.3)  # MNE's default, skull 1/50


@verbose
def paper_setting_setup(grid, lambda2: float = DEFAULT_LAMBDA2, verbose=None) -> PreparedSetup:
    """The paper's evaluation setting as a prepared setup: data and inverse from different heads.

    Sensor data come from the forward at :data:`PAPER_DATA_CONDUCTIVITY`;
    eLORETA from an inverse made on :data:`PAPER_INVERSE_CONDUCTIVITY`, both on
    a 7 mm volume source space of the template (not the network's 8 mm grid).

    Parameters
    ----------
    grid : SourceGrid
        The network's grid.
    lambda2 : float
        eLORETA's regularisation.
    %(verbose)s

    Returns
    -------
    prepared : PreparedSetup
        Named ``"paper setting"``.
    """
    from ..grid import make_grid_src

    src = make_grid_src(PAPER_SPACING_MM)
    data_fwd = make_template_forward("easycap-M10", src, conductivity=PAPER_DATA_CONDUCTIVITY)
    inv_fwd = make_template_forward("easycap-M10", src, conductivity=PAPER_INVERSE_CONDUCTIVITY)
    info = montage_info("easycap-M10")
    cov = mne.make_ad_hoc_cov(info)
    inv = mne.minimum_norm.make_inverse_operator(info, inv_fwd, cov, loose=1.0)
    # the leadfield is the data forward's, the kernel the other inverse's
    return prepare_user_setup(data_fwd, inv, grid, lambda2, name="paper setting")


def preset_cells(grid, quick: bool = False) -> list[Cell]:
    """The model card's preset conditions.

    Parameters
    ----------
    grid : SourceGrid
        The network's grid (for the paper setting's resampling).
    quick : bool
        Leave out the paper setting (it builds two 7 mm forwards).

    Returns
    -------
    cells : list of Cell
        Their ``sweep`` is ``"preset"``: the loose inverse at 10 dB (1 and 3
        sources), the 32-channel montage at 10 dB (1 source) and the paper's
        setting at 20 dB (1 and 3 sources).
    """
    cells = [
        Cell("preset", f"loose cortex, {LOOSE_SETUP.montage}, 10 dB, {k} source(s)", LOOSE_SETUP, 10.0, k)
        for k in (1, 3)
    ]
    cells.append(
        Cell(
            "preset",
            f"32 channels, {SPARSE_MONTAGE_SETUP.montage}, 10 dB, 1 source",
            SPARSE_MONTAGE_SETUP,
            10.0,
            1,
        )
    )
    if not quick:
        paper = paper_setting_setup(grid)
        cells += [Cell("preset", f"paper setting, 20 dB, {k} source(s)", paper, 20.0, k) for k in (1, 3)]
    return cells


# --------------------------------------------------------------------------------------------------
# Fine-tuning on a user's head: the benchmark of :mod:`mne_piunet.train.finetune`

#: A user-style head no training saw: a held-out montage digitised with 5 mm
#: of jitter, and the template BEM with a skull 1/50 as conductive as a brain
#: of 0.33 S/m (the template's is 0.3 and 0.006: the scalp and brain differ too).
USER_STYLE_HEAD = dict(montage="easycap-M43", conductivity=(0.33, 0.0066, 0.33), jitter_mm=5.0, seed=7)


@verbose
def user_style_models(
    montage: str = USER_STYLE_HEAD["montage"],
    conductivity: tuple[float, float, float] = USER_STYLE_HEAD["conductivity"],
    jitter_mm: float = USER_STYLE_HEAD["jitter_mm"],
    seed: int = USER_STYLE_HEAD["seed"],
    loose: float | str = 0.2,
    verbose=None,
) -> tuple[mne.Forward, mne.minimum_norm.InverseOperator]:
    """A forward and inverse like a researcher's own, on the template cortex.

    The electrodes are a digitisation (a montage with seeded jitter), the head
    a BEM with other conductivities, and the inverse MNE's default for a
    cortical source space (loose 0.2, depth 0.8) with a noise covariance
    estimated from 2,000 samples of simulated background activity.

    Parameters
    ----------
    montage : str
        Built-in montage the digitisation is jittered from.
    conductivity : tuple of float
        Brain, skull and scalp conductivity (S/m).
    jitter_mm : float
        Electrode jitter (mm per coordinate).
    seed : int
        Seed of the jitter and the noise.
    loose : float | "fixed"
        The inverse's orientation prior (MNE's default for a cortex: 0.2).
    %(verbose)s

    Returns
    -------
    forward : mne.Forward
        Free-orientation EEG forward on the fsaverage5 cortex.
    inverse_operator : mne.minimum_norm.InverseOperator
        The loose inverse made from it.
    """
    from ..anatomy import make_cortex_src
    from ..simulation import background_noise_cov, noise_colouring

    info = jittered_info(montage, jitter_mm, seed)
    fwd = make_template_forward(info, make_cortex_src(), conductivity=conductivity)
    # a baseline covariance estimated from data, as a user's is
    lf = fwd["sol"]["data"]
    cov = background_noise_cov(lf, True, 200, seed)
    rng = np.random.default_rng(seed)
    colouring = noise_colouring(cov)
    data = colouring @ rng.standard_normal((colouring.shape[1], 2000)) * 1e-6
    raw = mne.io.RawArray(data, info)
    noise_cov = mne.compute_raw_covariance(raw)
    orientation = dict(fixed=True) if loose == "fixed" else dict(loose=loose)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, noise_cov, depth=0.8, **orientation)
    return fwd, inv


@verbose
def finetune_benefit(
    models: dict[str, object],
    forward: mne.Forward,
    inverse_operator: mne.minimum_norm.InverseOperator,
    snrs=(0.0, 10.0, 20.0, 30.0),
    n_sources=(1, 3, 5, 10),
    n_per_cell: int = 20,
    seed: int = 4321,
    lambda2: float = DEFAULT_LAMBDA2,
    verbose=None,
) -> list[dict]:
    """eLORETA and several PIUNet weights on the same samples of a user's own setup.

    Parameters
    ----------
    models : dict of str to PIUNetInverse
        Label -> model (e.g. ``"bundled"``, ``"tuned 10 min"``).
    forward, inverse_operator
        The user's models (:func:`~mne_piunet.simulation.prepare_user_setup`).
    snrs, n_sources : sequence
        The sweep.
    n_per_cell : int
        Samples per cell.
    seed : int
        Seed of the samples (apart from any fine-tune's training and validation streams).
    lambda2 : float
        eLORETA's regularisation.
    %(verbose)s

    Returns
    -------
    rows : list of dict
        :func:`score_methods` rows; PIUNet rows carry the model's label as ``method``.
    """
    first = next(iter(models.values()))
    prepared = prepare_user_setup(forward, inverse_operator, first.grid, lambda2, name="user")
    cells = evaluation_cells([prepared], snrs, n_sources)
    rows = []
    for i, (label, piu) in enumerate(models.items()):
        methods = ("eLORETA", "PIUNet") if i == 0 else ("PIUNet",)
        for row in score_methods(piu, cells, n_per_cell, seed, lambda2, methods):
            rows.append(dict(row, method=label if row["method"] == "PIUNet" else row["method"]))
    return rows


# --------------------------------------------------------------------------------------------------


# ------------------------------------------------------------ the grid's floor of peak error
#: The peaks :func:`peak_floor` locates in every sample, each against the true source.
PEAK_FLOOR_MAPS = ("truth on the grid", "eLORETA on its sources", "eLORETA on the grid", "PIUNet")


@fill_doc
def peak_floor(
    piu, setups=None, snrs=(5.0, 20.0), n_per_cell: int = 20, seed: int = 2718,
    lambda2: float = DEFAULT_LAMBDA2,
) -> list[dict]:  # fmt: skip
    """Peak localisation error against the true source, before and after the move onto the grid.

    The evaluation scores maps on the grid, against the truth moved there, so
    its peak errors leave out the grid's own floor: how far the 8 mm grid puts
    the truth's peak from the true source. Here every peak is measured from
    the true source on the setup's own source space (the largest moment of a
    single source): the truth moved onto the grid (the floor), eLORETA on its
    own sources and on the grid, and PIUNet.

    Parameters
    ----------
    piu : PIUNetInverse
        The model (its grid and temporal window).
    setups : sequence of HeadSetup | None
        The setups; None: :data:`HELD_OUT_SETUPS`.
    snrs : sequence of float
        SNRs (dB).
    n_per_cell : int
        Single-source time courses per setup and SNR.
    seed : int
        Seed of the samples.
    %(lambda2)s

    Returns
    -------
    rows : list of dict
        Per sample and map: ``setup``, ``snr_db``, ``map`` (one of
        :data:`PEAK_FLOOR_MAPS`) and ``error_mm``.
    """
    rng = np.random.default_rng(seed)
    window = network_window(piu.network.config) or (EVAL_WINDOW[0], EVAL_WINDOW[1])
    rows = []
    for setup in HELD_OUT_SETUPS if setups is None else setups:
        prepared = prepare_setup(setup, piu.grid, lambda2=lambda2)
        for snr in snrs:
            batch = simulate(prepared, n_per_cell, rng, SourcePrior(instantaneous=0.0), snr_db=snr, n_sources=1,
                             window=window)  # fmt: skip
            est = piu.predict_grid(*batch.network_maps(piu.network.config))
            maps = {
                "truth on the grid": (batch.true_grid, piu.grid.pos),
                "eLORETA on its sources": (batch.eloreta, prepared.pos),
                "eLORETA on the grid": (batch.eloreta_grid, piu.grid.pos),
                "PIUNet": (est, piu.grid.pos),
            }
            true_peak = prepared.pos[_peak_index(batch.true)]
            for name, (values, pos) in maps.items():
                errors = 1e3 * np.linalg.norm(pos[_peak_index(values)] - true_peak, axis=1)
                rows += [dict(setup=setup.name, snr_db=snr, map=name, error_mm=float(e)) for e in errors]
    return rows


def _peak_index(values: np.ndarray) -> np.ndarray:
    """Each sample's largest moment: (n, n_src[, 3]) -> (n,) source indices."""
    magnitude = np.linalg.norm(values, axis=-1) if values.ndim == 3 else np.abs(values)
    return np.argmax(magnitude, axis=1)


# ------------------------------------------------------------ the data-fit step, A/B
#: Validation setups the data-fit step's sharpness was picked on (of the ``temporal`` config's).
DATA_FIT_VALIDATION_SETUPS = (
    HeadSetup("mgh60", "bem", (0.332, 0.0113, 0.332), "volume"),
    HeadSetup("GSN-HydroCel-64_1.0", "bem", (0.332, 0.0113, 0.332), "surface"),
)
#: Data-fit A/B variants: (label, data_fit, rank-scaled sharpness).
DATA_FIT_VARIANTS = (
    ("network alone", False, True),
    ("data fit", True, False),
    ("data fit / rank", True, True),
)


@fill_doc
def data_fit_ab(
    weights, setups=None, snrs=(0.0, 5.0, 10.0, 20.0, 30.0), n_sources=(1, 3, 10), n_per_cell: int = 6,
    seed: int = 31415, lambda2: float = DEFAULT_LAMBDA2,
) -> list[dict]:  # fmt: skip
    """The network alone against the data-fit step, through ``PIUNetInverse.apply`` on the same time courses.

    Each sample is an 80 ms time course of the network's window points (at
    ``(points - 1) / window_s`` Hz), applied as an Evoked and scored at its
    centre, for each of :data:`DATA_FIT_VARIANTS`.

    Parameters
    ----------
    weights : path-like | None
        The weights (None: the bundled ones).
    setups : sequence of HeadSetup | None
        The setups; None: :data:`HELD_OUT_SETUPS`.
    snrs, n_sources : sequence
        The cells.
    n_per_cell : int
        Time courses per cell.
    seed : int
        Seed of the samples.
    %(lambda2)s

    Returns
    -------
    rows : list of dict
        Per sample and variant: ``setup``, ``snr_db``, ``n_sources``,
        ``variant``, ``nemd`` (16 mm cells) and ``ple`` (mm).
    """
    from .. import physics
    from ..inverse import PIUNetInverse

    models = {flag: PIUNetInverse(weights, data_fit=flag) for flag in (False, True)}
    config = models[True].network.config
    window = network_window(config) or (EVAL_WINDOW[0], 9)
    grid = models[True].grid
    rng = np.random.default_rng(seed)
    rows = []
    for setup in HELD_OUT_SETUPS if setups is None else setups:
        prepared = prepare_setup(setup, grid, lambda2=lambda2)
        info = prepared.info.copy()
        with info._unlock():
            info["sfreq"] = (window[1] - 1) / window[0]
        for snr in snrs:
            for k in n_sources:
                batch = simulate(prepared, n_per_cell, rng, SourcePrior(instantaneous=0.0), snr_db=snr,
                                 n_sources=k, window=window)  # fmt: skip
                for i in range(n_per_cell):
                    evoked = mne.EvokedArray(
                        batch.sensor_window[i].T, info, tmin=-window[0] / 2, verbose=False
                    )
                    for label, flag, scaled in DATA_FIT_VARIANTS:
                        rank_scaled, physics._RANK_SCALED = physics._RANK_SCALED, scaled
                        try:
                            stc = models[flag].apply(
                                evoked, prepared.inverse_operator, lambda2, pick_ori="vector"
                            )
                        finally:
                            physics._RANK_SCALED = rank_scaled
                        est = stc.data[:, :, window[1] // 2]
                        rows.append(dict(
                            setup=setup.name, snr_db=snr, n_sources=k, variant=label,
                            nemd=coarse_nemd(est, batch.true_grid[i], grid.pos),
                            ple=peak_localisation_error(est, batch.true_grid[i], grid.pos),
                        ))  # fmt: skip
    return rows
