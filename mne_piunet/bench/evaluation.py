"""Scoring of inverse methods on simulated data: rows of metrics per sample and method.

The benchmark's library: :func:`score_map` scores one map; a :class:`Cell`
is one condition (a setup, its SNR, number and extent of sources); a
:class:`MethodRunner` runs every method on one setup's samples, PIUNet as
a user runs it (:meth:`~mne_piunet.PIUNetInverse.apply` on the sensor data
and the setup's inverse operator); :func:`score_methods` simulates and
scores a list of cells. A cell's setup is a template
:class:`~mne_piunet.simulation.HeadSetup`, a :class:`MismatchSetup` (data and
inverse from two head models) or an already prepared setup (a user's
forward and inverse). The experiments the docs quote are data, in
:mod:`mne_piunet.bench.experiments`; :mod:`mne_piunet.bench.report` turns
the rows into tables, CSV files and plots.

Every method is scored on the 8 mm grid: the truth and the estimates are moved
onto it with the same mass-conserving operator that feeds the network, so all
methods share one support. NEMD is exact EMD (POT) after summing the maps into
16 mm cubes (743 cells): on the full 3,990-point grid one exact EMD with a
diffuse truth takes seconds, too slow for sweeps of hundreds of samples.
PLE is the distance between the map's peak and the truth's peak (meaningful
for one source; for several it is the error of the strongest one).
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

from ..anatomy import make_template_forward
from ..metrics import coarse_nemd, nmse, peak_localisation_error, spatial_dispersion, weighted_cosine_distance
from ..simulation import (
    HeadSetup,
    PreparedSetup,
    SimulatedBatch,
    SourcePrior,
    jittered_info,
    linear_kernel,
    prepare_setup,
    prepare_user_setup,
    setup_forward,
    setup_info,
    simulate,
)
from ..simulation.seeds import FINETUNE_BENEFIT_SEED, PEAK_FLOOR_SEED
from ..utils._defaults import DEFAULT_LAMBDA2
from ..utils._docs import fill_doc

__all__ = (
    "AM_METHODS",
    "BENCHMARK_METHODS",
    "EVAL_WINDOW",
    "EVALUATION_METHODS",
    "METHODS",
    "PEAK_FLOOR_MAPS",
    "PEER_METHODS",
    "Cell",
    "MethodRunner",
    "MismatchSetup",
    "finetune_benefit",
    "peak_floor",
    "prepare_mismatch",
    "score_map",
    "score_methods",
    "user_style_models",
)

LINEAR_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
#: MxNE at the regularisation of MNE's examples (:data:`MXNE_ALPHA`), MxNE at
#: ``mixed_norm``'s own default (alpha chosen by SURE over a grid of 15: about 10 times
#: MxNE's time, 17 s against 1.6 s per 80 ms window on the development machine), Gamma-MAP.
SPARSE_METHODS = ("MxNE", "MxNE-SURE", "Gamma-MAP")
#: invertmeeg's Champagne family (the ``[peers]`` extra), by its solver names. They
#: fit the window's covariance, as no MNE solver does, and run on volume setups
#: only: on a 20,484-source cortex one sample takes minutes.
PEER_METHODS = {
    "Champagne": "champagne",
    "Flex-Champagne": "flex-champagne",
    "Omni-Champagne": "omni-champagne",
}
METHODS = LINEAR_METHODS + ("PIUNet",) + SPARSE_METHODS + tuple(PEER_METHODS)
#: The benchmark's default methods: MNE's and PIUNet (the peers need the extra; MxNE-SURE,
#: for its cost, only when ``methods`` names it).
BENCHMARK_METHODS = LINEAR_METHODS + ("PIUNet", "MxNE", "Gamma-MAP")
#: The methods of the model card's evaluation.
EVALUATION_METHODS = ("eLORETA", "PIUNet")
#: Methods whose output is a current moment (Am); dSPM and sLORETA are noise-normalised, unitless,
#: and the peers return amplitudes without orientation.
AM_METHODS = ("MNE", "eLORETA", "PIUNet", "MxNE", "MxNE-SURE", "Gamma-MAP")
#: Every simulated sample is a time course: 21 samples over 80 ms (250 Hz), scored at its
#: centre. PIUNet takes its temporal context from it, the sparse solvers and the peers
#: fit all of it, the linear methods and a model without context the centre alone.
EVAL_WINDOW = (0.08, 21)
#: MxNE's regularisation in percent of alpha_max and Gamma-MAP's noise variance after whitening:
#: the values of MNE's own examples, not tuned on these data.
MXNE_ALPHA = 55.0
GAMMA_MAP_ALPHA = 0.5
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
    setup : HeadSetup | MismatchSetup | PreparedSetup
        The forward model, data and inverse from two head models, or a
        prepared setup (scored as it is).
    snr_db : float
        SNR of every sample (dB).
    n_sources : int
        Number of sources of every sample.
    sigma_mm : tuple of float
        Range of the sources' Gaussian extent sigma (mm), drawn log-uniformly.
    """

    sweep: str
    value: float | str
    setup: HeadSetup | MismatchSetup | PreparedSetup
    snr_db: float
    n_sources: int
    sigma_mm: tuple[float, float] = SourcePrior().sigma_mm


@dataclass(frozen=True)
class MismatchSetup:
    """Data from one head model and the inverse from another, as with every real recording.

    Both share the sensors and the source space: the fsaverage5 cortex with
    fixed orientations (or MNE's surface default, loose 0.2 and depth 0.8,
    where ``inverse.loose`` is set), or a volume with free orientations.

    Parameters
    ----------
    data : HeadSetup
        The head model the sensor data come from.
    inverse : HeadSetup
        The head model of the inverse operator (and of the forward the sparse
        solvers fit), e.g. a single shell for MEG.
    spacing_mm : float | None
        A volume source space's spacing (mm); None: the network's grid.
    """

    data: HeadSetup
    inverse: HeadSetup
    spacing_mm: float | None = None

    @property
    def name(self) -> str:
        """``<data setup>, inverse <inverse head>``."""
        inverse = self.inverse
        head = (
            "bem " + "/".join(f"{c:g}" for c in inverse.conductivity) if inverse.head == "bem" else "sphere"
        )
        return f"{self.data.name}, inverse {head}"


@verbose
@fill_doc
def prepare_mismatch(
    setup: MismatchSetup, grid, lambda2: float = DEFAULT_LAMBDA2, verbose=None
) -> tuple[PreparedSetup, mne.Forward]:
    """A prepared setup whose data and inverse come from different head models.

    Parameters
    ----------
    setup : MismatchSetup
        The two head models.
    grid : SourceGrid
        The network's grid.
    %(lambda2)s
    %(verbose)s

    Returns
    -------
    prepared : PreparedSetup
        The data's leadfield and the inverse's eLORETA kernel, named
        :attr:`MismatchSetup.name`.
    forward : mne.Forward
        The inverse's own forward (free orientation), which a user's MxNE or
        Gamma-MAP would fit.
    """
    from ..anatomy import make_cortex_src
    from ..grid import make_grid_src

    volume = setup.data.source_space == "volume"
    src = (
        make_grid_src(setup.spacing_mm)
        if volume and setup.spacing_mm
        else (grid.src if volume else make_cortex_src())
    )
    info = setup_info(setup.data)
    data_fwd = setup_forward(setup.data, src, info)
    inv_fwd = setup_forward(setup.inverse, src, info)
    cov = mne.make_ad_hoc_cov(info, verbose=False)
    if volume:
        orientation = dict(loose=1.0)
    elif setup.inverse.loose:
        orientation = dict(loose=setup.inverse.loose, depth=0.8)
    else:
        orientation = dict(loose=0.0, fixed=True)
    inv = mne.minimum_norm.make_inverse_operator(info, inv_fwd, cov, verbose=False, **orientation)
    return prepare_user_setup(data_fwd, inv, grid, lambda2, name=setup.name), inv_fwd


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
    forward : mne.Forward | None
        The forward the sparse solvers and the peers fit: the inverse's own
        where the data come from another head model
        (:func:`prepare_mismatch`). None: the template setup's own.
    """

    def __init__(self, prepared: PreparedSetup, methods: tuple[str, ...] = METHODS, forward=None):
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}")
        self.prepared, self.methods, self.forward = prepared, tuple(methods), forward
        self.kernels = {m: linear_kernel(prepared, m) for m in LINEAR_METHODS if m in methods}
        if forward is None and (set(SPARSE_METHODS) | set(PEER_METHODS)) & set(methods):
            setup = prepared.spec  # the setup's own forward (cached)
            if not isinstance(setup, HeadSetup) or setup.loose:
                raise ValueError(
                    f"MxNE, Gamma-MAP and the peers need the forward they fit on {prepared.name!r}: pass "
                    f"forward=, or score it with {LINEAR_METHODS + ('PIUNet',)}"
                )
            self.forward = setup_forward(setup, prepared.src)
        if set(PEER_METHODS) & set(methods):
            _import_peers()
            if prepared.normals is not None:  # a cortex: minutes per sample, so not scored
                logger.info(f"Peers not run on {prepared.name} (volume setups only)")
                self.methods = tuple(m for m in self.methods if m not in PEER_METHODS)

    def estimate(
        self, batch: SimulatedBatch, models: dict | None = None, single: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every method's estimate of a batch.

        Parameters
        ----------
        batch : SimulatedBatch
            Samples of this runner's setup.
        models : dict of str to PIUNetInverse | None
            Label -> model, each scored under its label (``{"PIUNet": piu}``
            for the bundled one); needed when PIUNet is one of the methods.
        single : bool
            Give every method the centre sample alone (single maps): PIUNet
            an instantaneous context, MxNE one time point.

        Returns
        -------
        estimates : dict of str to array, shape (n, n_grid, 3)
            Each method's (or model's) maps on the grid.
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
        window = (
            batch.sensor[:, None] if single or batch.sensor_window is None else batch.sensor_window
        )  # (n, n_times, n_chan)
        if "PIUNet" in self.methods:
            for label, piu in (models or {}).items():
                t0 = time.perf_counter()
                estimates[label] = self.piunet(piu, window, batch.window_s)
                seconds[label] = (time.perf_counter() - t0) / n
        clean = batch.true.reshape(n, -1) @ prep.leadfield.T
        std = np.ones(len(prep.info["ch_names"])) if prep.channel_std is None else prep.channel_std
        noise_var = np.var((batch.sensor - clean) / std, axis=1)[:, None] * std**2  # per channel type
        for method in (m for m in SPARSE_METHODS + tuple(PEER_METHODS) if m in self.methods):
            data = batch.sensor[:, :, None] if method == "Gamma-MAP" else window.swapaxes(1, 2)
            t0 = time.perf_counter()
            est = np.stack([self.sparse(method, data[i], noise_var[i]) for i in range(n)])
            seconds[method] = (time.perf_counter() - t0) / n
            estimates[method] = prep.grid_values(est)
        return estimates, seconds

    def piunet(self, piu, window: np.ndarray, window_s: float) -> np.ndarray:
        """PIUNet's maps at the centre of each sample's window, as a user gets them.

        Each window is an :class:`mne.EvokedArray` taken through
        :meth:`~mne_piunet.PIUNetInverse.apply`'s own steps with this setup's
        inverse operator: eLORETA over the whole window, then the network and
        the data-fit step, exactly as for a recording. Only the centre, the
        time point scored, is refined (with its context from the window),
        which gives the centre of what ``apply`` returns for the window.

        Parameters
        ----------
        piu : PIUNetInverse
            The model.
        window : array, shape (n, n_times, n_chan)
            Each sample's sensor data; its centre is scored (one time point:
            a single map, with an instantaneous context).
        window_s : float
            The window's span (s), which sets its sampling rate.

        Returns
        -------
        est : array, shape (n, n_grid, 3)
            The moment vectors at each window's centre.
        """
        prep = self.prepared
        n_times = window.shape[1]
        centre = n_times // 2
        info = prep.info.copy()
        with info._unlock():
            info["sfreq"] = (n_times - 1) / window_s if n_times > 1 else info["sfreq"]
        est = []
        for data in window:
            evoked = mne.EvokedArray(data.T, info, tmin=-centre / info["sfreq"], verbose=False)
            # short data: the window is all there is, as intended; quiet, as apply(verbose=False)
            with warnings.catch_warnings(), mne.utils.use_log_level(verbose=False):
                warnings.simplefilter("ignore")
                refined = piu._apply_evoked(
                    evoked,
                    prep.inverse_operator,
                    prep.lambda2,
                    prepared=False,
                    method_params=None,
                    use_cps=True,
                    mni_transform=None,
                    subjects_dir=None,
                    rows=[centre],
                )[0]
            est.append(refined[:, :, 0])
        return np.stack(est)

    def sparse(self, method: str, sensor: np.ndarray, noise_var: float) -> np.ndarray:
        """MxNE, Gamma-MAP or a peer on one sample's window, its centre returned.

        Parameters
        ----------
        method : "MxNE" | "MxNE-SURE" | "Gamma-MAP" | one of :data:`PEER_METHODS`
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
            info["ch_names"],
            [],
            info["projs"],
            nfree=1000,
            verbose=False,
        )
        kwargs = dict(
            loose=1.0 if prep.free else 0.0, pick_ori="vector" if prep.free else None, verbose=False
        )
        with warnings.catch_warnings():  # short windows: MxNE's convergence warnings are expected
            warnings.simplefilter("ignore")
            if method.startswith("MxNE"):
                # SURE's finite differences are random: seeded, so a sample's score is reproducible
                # (random_state, which every MNE this package supports takes; newer ones also name it rng)
                alpha = (
                    dict(alpha="sure", random_state=0) if method == "MxNE-SURE" else dict(alpha=MXNE_ALPHA)
                )
                stc = mixed_norm(evoked, self.forward, cov, **alpha, **kwargs)
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
@fill_doc
def score_methods(
    models,
    cells: list[Cell],
    n_per_cell: int,
    seed: int,
    lambda2: float = DEFAULT_LAMBDA2,
    methods: tuple[str, ...] = METHODS,
    single: bool = False,
    *,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """Score every method on the same simulated samples of every cell.

    Parameters
    ----------
    models : PIUNetInverse | dict of str to PIUNetInverse
        The model, scored as ``"PIUNet"``, or labelled models, each scored
        under its label (their grid is the common scoring grid). PIUNet runs
        as a user runs it: :meth:`~mne_piunet.PIUNetInverse.apply` on the
        sample's sensor data and the setup's inverse operator.
    cells : list of Cell
        The conditions, simulated in this order from one random generator.
    n_per_cell : int
        Samples per cell.
    seed : int
        Seed of the simulation (the same seed gives the same data).
    %(lambda2)s
    methods : tuple of str
        A subset of :data:`METHODS`.
    single : bool
        Give every method the centre sample alone (single maps).
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    rows : list of dict
        One row per sample and method: the cell, the sample's extent, the
        scores of :func:`score_map` and seconds per sample.
    """
    models = models if isinstance(models, dict) else {"PIUNet": models}
    grid = next(iter(models.values())).grid
    rng = np.random.default_rng(seed)
    for label, piu in models.items():
        if piu.network.config.window_s > EVAL_WINDOW[0]:
            raise ValueError(
                f"The window of {label} ({piu.network.config.window_s * 1e3:g} ms) is longer than the "
                f"evaluation's time courses ({EVAL_WINDOW[0] * 1e3:g} ms): it would see them as an "
                "instantaneous context. Lengthen EVAL_WINDOW (at 250 Hz) to score it."
            )
    # keyed by the setup itself (names leave out brain and scalp conductivity), or a prepared one's identity
    runners: dict[HeadSetup | MismatchSetup | int, MethodRunner] = {}
    rows = []
    for cell in ProgressBar(cells, mesg="Scoring"):
        key = id(cell.setup) if isinstance(cell.setup, PreparedSetup) else cell.setup
        if key not in runners:
            runners[key] = _runner(cell.setup, grid, lambda2, methods)
        runner = runners[key]
        batch = simulate(
            runner.prepared,
            n_per_cell,
            rng,
            SourcePrior(instantaneous=0.0),
            snr_db=cell.snr_db,
            n_sources=cell.n_sources,
            sigma_mm=cell.sigma_mm,
            window=EVAL_WINDOW,
        )
        estimates, seconds = runner.estimate(batch, models, single)
        rows += _cell_rows(cell, runner, batch, estimates, seconds, grid.pos)
    return rows


def _runner(setup, grid, lambda2: float, methods: tuple[str, ...]) -> MethodRunner:
    """The runner of a cell's setup: a template setup prepared, a mismatch with its inverse's forward."""
    if isinstance(setup, HeadSetup):
        return MethodRunner(prepare_setup(setup, grid, lambda2=lambda2), methods)
    if isinstance(setup, MismatchSetup):
        prepared, forward = prepare_mismatch(setup, grid, lambda2)
        return MethodRunner(prepared, methods, forward)
    return MethodRunner(setup, methods)


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
    setup = cell.setup.spec if isinstance(cell.setup, PreparedSetup) else cell.setup
    setup = setup.data if isinstance(setup, MismatchSetup) else setup
    for i in range(len(batch.sensor)):
        for method in estimates:
            row = dict(
                sweep=cell.sweep,
                value=cell.value,
                setup=cell.setup.name,
                montage=getattr(setup, "montage", cell.setup.name),
                n_channels=len(runner.prepared.info["ch_names"]),
                source_space=_source_space(runner.prepared),
                snr_db=cell.snr_db,
                n_sources=cell.n_sources,
                extent_mm=float(2 * np.mean(batch.sigma_mm[i])),
                sample=i,
                method=method,
            )
            am = method in AM_METHODS or method not in METHODS  # PIUNet's labelled models give Am too
            row.update(score_map(estimates[method][i], batch.true_grid[i], pos, am))
            if method in PEER_METHODS:  # amplitudes without orientation
                row["wcos"] = np.nan
            row["seconds"] = seconds[method]
            rows.append(row)
    return rows


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
@fill_doc
def finetune_benefit(
    models: dict[str, object],
    forward: mne.Forward,
    inverse_operator: mne.minimum_norm.InverseOperator,
    snrs=(0.0, 10.0, 20.0, 30.0),
    n_sources=(1, 3, 5, 10),
    n_per_cell: int = 20,
    seed: int = FINETUNE_BENEFIT_SEED,
    lambda2: float = DEFAULT_LAMBDA2,
    single: bool = False,
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
    %(lambda2)s
    single : bool
        Score single maps (the centre sample alone) instead of time courses.
    %(verbose)s

    Returns
    -------
    rows : list of dict
        :func:`score_methods` rows; PIUNet rows carry the model's label as ``method``.
    """
    first = next(iter(models.values()))
    prepared = prepare_user_setup(forward, inverse_operator, first.grid, lambda2, name="user")
    cells = [
        Cell("evaluation", f"SNR {snr:g} dB, {k} sources", prepared, snr, k)
        for snr in snrs
        for k in n_sources
    ]
    return score_methods(models, cells, n_per_cell, seed, lambda2, ("eLORETA", "PIUNet"), single)


# --------------------------------------------------------------------------------------------------


# ------------------------------------------------------------ the grid's floor of peak error
#: The peaks :func:`peak_floor` locates in every sample, each against the true source.
PEAK_FLOOR_MAPS = ("truth on the grid", "eLORETA on its sources", "eLORETA on the grid", "PIUNet")


@fill_doc
def peak_floor(
    piu,
    setups,
    snrs=(5.0, 20.0),
    n_per_cell: int = 20,
    seed: int = PEAK_FLOOR_SEED,
    lambda2: float = DEFAULT_LAMBDA2,
) -> list[dict]:
    """Peak localisation error against the true source, before and after the move onto the grid.

    The evaluation scores maps on the grid, against the truth moved there, so
    its peak errors leave out the grid's own floor: how far the 8 mm grid puts
    the truth's peak from the true source. Here every peak is measured from
    the true source on the setup's own source space (the largest moment of a
    single source): the truth moved onto the grid (the floor), eLORETA on its
    own sources and on the grid, and PIUNet as :meth:`~mne_piunet.PIUNetInverse.apply`
    gives it (with its data-fit step).

    Parameters
    ----------
    piu : PIUNetInverse
        The model (its grid and temporal window).
    setups : sequence of HeadSetup
        The setups.
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
    rows = []
    for setup in setups:
        runner = MethodRunner(prepare_setup(setup, piu.grid, lambda2=lambda2), ("PIUNet",))
        prepared = runner.prepared
        for snr in snrs:
            batch = simulate(
                prepared,
                n_per_cell,
                rng,
                SourcePrior(instantaneous=0.0),
                snr_db=snr,
                n_sources=1,
                window=EVAL_WINDOW,
            )
            est = runner.piunet(piu, batch.sensor_window, batch.window_s)
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
