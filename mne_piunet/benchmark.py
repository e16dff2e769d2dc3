"""Evaluation and benchmarks: PIUNet against eLORETA and MNE's other inverses.

``run_evaluation`` is the model card's eLORETA-vs-PIUNet evaluation;
``run_benchmark`` (``mne-piunet benchmark``) compares every method of MNE
(MNE, dSPM, sLORETA, eLORETA, MxNE, Gamma-MAP) with PIUNet in sweeps.

Every method is scored on the 8 mm grid: the truth and eLORETA are moved onto
it with the same mass-conserving operator that feeds the network, so all
methods share one support. NEMD is exact EMD (POT) after summing the maps into
16 mm cubes (~500 cells): on the full 4,000-point grid one exact EMD with a
diffuse truth takes seconds, too slow for sweeps of hundreds of samples.
PLE is the distance between the map's peak and the truth's peak (meaningful
for one source; for several it is the error of the strongest one).
"""

from __future__ import annotations

import csv
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import mne
import numpy as np
from mne.utils import ProgressBar, logger, verbose

from .anatomy import make_template_forward
from .metrics import coarse_nemd, nmse, peak_localisation_error, spatial_dispersion, weighted_cosine_distance
from .simulation import (
    HeadSetup,
    PreparedSetup,
    SimulatedBatch,
    SourcePrior,
    linear_kernel,
    prepare_setup,
    simulate,
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


def score(est: np.ndarray, true: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    """NEMD, PLE (mm), weighted cosine distance and amplitude calibration of one grid map.

    ``peak_ratio`` and ``mass_ratio`` compare the estimate's largest and
    summed moment norms (Am) with the truth's: 1 is a calibrated amplitude.
    """
    est_norm, true_norm = np.linalg.norm(est, axis=-1), np.linalg.norm(true, axis=-1)
    return dict(
        _shape_scores(est, true, pos),
        peak_ratio=est_norm.max() / true_norm.max(),
        mass_ratio=est_norm.sum() / true_norm.sum(),
    )


def _shape_scores(est: np.ndarray, true: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    """NEMD (16 mm cells), PLE (mm) and weighted cosine distance: shared by evaluation and benchmark."""
    return dict(
        nemd=coarse_nemd(est, true, pos),
        ple=peak_localisation_error(est, true, pos),
        wcos=weighted_cosine_distance(est, true),
    )


def evaluate(
    piu,
    setups=HELD_OUT_SETUPS,
    snrs=SNRS_DB,
    n_sources=N_SOURCES,
    n_per_cell: int = 10,
    seed: int = 1234,
    lambda2: float = 1.0 / 9.0,
    prior: SourcePrior = SourcePrior(),
) -> list[dict]:
    """Score eLORETA and PIUNet on simulated data, one row per sample and method.

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
        Source extents (cortical patches on surface setups, blobs on volume).

    Returns
    -------
    rows : list of dict
    """
    rows = []
    rng = np.random.default_rng(seed)
    pos = piu.grid.pos
    for setup in setups:
        prepared = prepare_setup(setup, piu.grid, lambda2=lambda2)
        cells = [(s, k) for s in snrs for k in n_sources]
        for snr, k in ProgressBar(cells, mesg=f"Evaluating {setup.name}"):
            batch = simulate(prepared, n_per_cell, rng, prior, snr_db=snr, n_sources=k)
            t0 = time.perf_counter()
            refined = piu.predict_grid(batch.eloreta_grid)
            dt = (time.perf_counter() - t0) / n_per_cell
            for i in range(n_per_cell):
                for method, est in (("eLORETA", batch.eloreta_grid[i]), ("PIUNet", refined[i])):
                    row = dict(
                        setup=setup.name,
                        source_space=setup.source_space,
                        snr_db=snr,
                        n_sources=k,
                        sample=i,
                        method=method,
                    )
                    row.update(score(est, batch.true_grid[i], pos))
                    row["network_s"] = dt if method == "PIUNet" else 0.0
                    rows.append(row)
    return rows


def summarise(
    rows: list[dict], by=("source_space", "snr_db", "n_sources"), metrics=("nemd", "ple", "wcos")
) -> list[dict]:
    """Mean of each metric per group and method, with PIUNet/eLORETA NEMD ratio."""
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = tuple(r[b] for b in by)
        for m in metrics:
            groups[key][f"{r['method']}:{m}"].append(r[m])
    out = []
    for key in sorted(groups):
        vals = {k: float(np.nanmean(v)) for k, v in groups[key].items()}
        row = dict(zip(by, key), **vals)
        row["nemd_ratio"] = row["PIUNet:nemd"] / row["eLORETA:nemd"]
        out.append(row)
    return out


def markdown_table(summary: list[dict], by=("source_space", "snr_db", "n_sources")) -> str:
    """A Markdown table of :func:`summarise`'s output."""
    cols = list(by) + [
        "eLORETA:nemd", "PIUNet:nemd", "nemd_ratio", "eLORETA:ple", "PIUNet:ple", "eLORETA:wcos", "PIUNet:wcos",
    ]  # fmt: skip
    head = [
        "source space",
        "SNR dB",
        "sources",
        "NEMD eLORETA",
        "NEMD PIUNet",
        "ratio",
        "PLE eLORETA (mm)",
        "PLE PIUNet (mm)",
        "wcos eLORETA",
        "wcos PIUNet",
    ]
    head = head[: len(by)] + head[3:] if len(by) < 3 else head
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) and c not in by else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], fname: str | Path) -> Path:
    """Write per-sample rows to CSV."""
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    with open(fname, "w", newline="") as fid:
        writer = csv.DictWriter(fid, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return fname


def run_evaluation(piu, out: str | Path | None = None, quick: bool = False, seed: int = 1234) -> str:
    """The model card's evaluation: in-distribution and held-out tables (Markdown)."""
    n = 3 if quick else 10
    snrs = (10.0, 20.0) if quick else SNRS_DB
    ks = (1, 3) if quick else N_SOURCES
    logger.info("In-distribution: volume, free orientation, 1 source, SNR 20 dB")
    ind = evaluate(piu, (IN_DISTRIBUTION_SETUP,), (20.0,), (1,), n_per_cell=2 * n, seed=seed)
    held = evaluate(piu, HELD_OUT_SETUPS, snrs, ks, n_per_cell=n, seed=seed + 1)
    text = [
        f"Seed {seed}, {n} samples per cell ({2 * n} in distribution); sources drawn from {asdict(SourcePrior())}.",
        "",
        "In distribution (" + IN_DISTRIBUTION_SETUP.name + ", 1 source, SNR 20 dB):",
        "",
        markdown_table(summarise(ind, by=("source_space",)), by=("source_space",)),
        "",
        "Held out (" + ", ".join(s.name for s in HELD_OUT_SETUPS) + "), per SNR and number of sources:",
        "",
        markdown_table(summarise(held)),
    ]
    text += [
        "",
        "Amplitude calibration on the held-out samples (median [25th, 75th percentile]; 1 = calibrated):",
        "",
    ]
    text += ["| method | peak moment / true peak | summed moment / true sum |", "|---|---|---|"]
    for method in ("eLORETA", "PIUNet"):
        cells = []
        for key in ("peak_ratio", "mass_ratio"):
            q = np.percentile([r[key] for r in held if r["method"] == method], [50, 25, 75])
            cells.append(f"{q[0]:.2g} [{q[1]:.2g}, {q[2]:.2g}]")
        text.append(f"| {method} | " + " | ".join(cells) + " |")
    if out is not None:
        write_csv(ind + held, Path(out) / "evaluation.csv")
    return "\n".join(text)


# --------------------------------------------------------------------------------------------------
# ``mne-piunet benchmark``: PIUNet beside MNE's linear and sparse inverses

LINEAR_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
SPARSE_METHODS = ("MxNE", "Gamma-MAP")
METHODS = LINEAR_METHODS + ("PIUNet",) + SPARSE_METHODS
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
SWEEP_LABELS = dict(
    snr_db="SNR (dB)", n_sources="number of sources", extent_mm="source extent (2 sigma, mm)",
    montage="montage", head="head model",
)  # fmt: skip
METRIC_LABELS = dict(
    nemd="NEMD", ple="peak localisation error (mm)", sd="spatial dispersion (mm)",
    wcos="weighted cosine distance", nmse="NMSE",
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One condition of the benchmark: a setup and the source/noise parameters varied by a sweep."""

    sweep: str
    value: float | str
    setup: HeadSetup
    snr_db: float = BASE_SNR_DB
    n_sources: int = BASE_N_SOURCES
    sigma_mm: tuple[float, float] = BASE_SIGMA_MM


def benchmark_cells(quick: bool = False) -> list[Cell]:
    """The sweeps: SNR, number of sources and extent on both source spaces; montages and heads.

    Each sweep varies one factor around the base condition (SNR 10 dB, one
    source, extent log-uniform over 2 sigma = 10-80 mm) on easycap-M43 with the
    template BEM at skull conductivity 0.0113 S/m: a montage and a skull
    conductivity the bundled model never saw. ``quick`` keeps two values per
    sweep on a sphere head (no BEM to build), for smoke runs.
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
    for m in montages:
        n_chan = len(mne.channels.make_standard_montage(m).ch_names)
        cells.append(
            Cell("montage", f"{m} ({n_chan} ch)", HeadSetup(m, "bem", BENCH_CONDUCTIVITY, "surface"))
        )
    for skull in skulls:
        cond = (BENCH_CONDUCTIVITY[0], skull, BENCH_CONDUCTIVITY[2])
        cells.append(
            Cell("head", f"BEM, skull {skull:g} S/m", HeadSetup(BENCH_MONTAGE, "bem", cond, "surface"))
        )
    if skulls:
        cells.append(
            Cell("head", "4-layer sphere", HeadSetup(BENCH_MONTAGE, "sphere", source_space="surface"))
        )
    return cells


class MethodRunner:
    """All methods of the benchmark on one prepared setup, each on the same sensor data.

    Linear methods apply their ``apply_inverse`` kernel (computed once, as MNE
    does for every time point); PIUNet refines the eLORETA estimate; MxNE and
    Gamma-MAP run per sample with the sample's true (white) noise covariance,
    as a well-estimated baseline covariance would give them.
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
        """Every method's estimate on the grid (n, n_grid, 3) and its seconds per sample."""
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
        for method in SPARSE_METHODS:
            if method not in self.methods:
                continue
            t0 = time.perf_counter()
            est = np.stack([self.sparse(method, batch.sensor[i], noise_var[i]) for i in range(n)])
            seconds[method] = (time.perf_counter() - t0) / n
            estimates[method] = prep.grid_values(est)
        return estimates, seconds

    def sparse(self, method: str, sensor: np.ndarray, noise_var: float) -> np.ndarray:
        """MxNE or Gamma-MAP on one sample, as (n_src, 3) MRI-frame moments or (n_src,) amplitudes."""
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
        src = self.forward["src"]
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


def score_all(est: np.ndarray, true: np.ndarray, pos: np.ndarray, am: bool) -> dict[str, float]:
    """The benchmark's metrics of one grid map (NaN for an all-zero estimate, NMSE only in Am)."""
    if not np.any(est):
        return dict(nemd=np.nan, ple=np.nan, sd=np.nan, wcos=np.nan, nmse=np.nan, empty=True)
    return dict(
        _shape_scores(est, true, pos),
        sd=spatial_dispersion(est, true, pos),
        nmse=nmse(est, true) if am else np.nan,
        empty=False,
    )


@verbose
def run_benchmark(
    piu,
    cells: list[Cell] | None = None,
    n_per_cell: int = 8,
    seed: int = 0,
    lambda2: float = 1.0 / 9.0,
    methods: tuple[str, ...] = METHODS,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """Score every method on the same simulated samples of every cell.

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
        One row per sample and method: the cell, the sample's extent, scores
        (mm for ``ple`` and ``sd``) and seconds per sample.
    """
    cells = benchmark_cells() if cells is None else cells
    rng = np.random.default_rng(seed)
    runners: dict[HeadSetup, MethodRunner] = {}
    pos = piu.grid.pos
    rows = []
    for cell in ProgressBar(cells, mesg="Benchmark"):
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
        for i in range(n_per_cell):
            for method in methods:
                row = dict(
                    sweep=cell.sweep, value=cell.value, setup=cell.setup.name, montage=cell.setup.montage,
                    n_channels=len(runner.prepared.info["ch_names"]), source_space=cell.setup.source_space,
                    snr_db=cell.snr_db, n_sources=cell.n_sources,
                    extent_mm=float(2 * np.mean(batch.sigma_mm[i])), sample=i, method=method,
                )  # fmt: skip
                row.update(score_all(estimates[method][i], batch.true_grid[i], pos, method in AM_METHODS))
                row["seconds"] = seconds[method]
                rows.append(row)
    return rows


def _median_iqr(values) -> tuple[float, float, float]:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return (np.nan,) * 3
    lo, med, hi = np.percentile(values, [25, 50, 75])
    return med, lo, hi


def _groups(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def plot_benchmark(rows: list[dict], out: str | Path) -> list[Path]:
    """PNG plots: each metric against SNR, number of sources and extent, one line per method.

    Lines are medians over the cell's samples, bands the interquartile range.
    ``benchmark_nemd.png`` (NEMD, one row per source space) is the main plot;
    ``benchmark_<space>.png`` shows all metrics of one source space.
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = [s for s in ("snr_db", "n_sources", "extent_mm") if any(r["sweep"] == s for r in rows)]
    spaces = sorted({r["source_space"] for r in rows if r["sweep"] in sweeps})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    colours = dict(zip(METHODS, plt.get_cmap("tab10").colors))

    def panel(ax, space, sweep, metric):
        cell_rows = [r for r in rows if r["sweep"] == sweep and r["source_space"] == space]
        for method in methods:
            by_value = _groups([r for r in cell_rows if r["method"] == method], "value")
            xs = sorted(v for (v,) in by_value)
            stats = np.array([_median_iqr([r[metric] for r in by_value[(x,)]]) for x in xs])
            if not len(xs) or np.all(np.isnan(stats[:, 0])):
                continue
            lw = 2.5 if method == "PIUNet" else 1.2
            ax.plot(xs, stats[:, 0], "o-", color=colours[method], lw=lw, ms=3, label=method)
            ax.fill_between(xs, stats[:, 1], stats[:, 2], color=colours[method], alpha=0.12, lw=0)
        if sweep != "snr_db":
            ax.set_xscale("log")
            ax.set_xticks(sorted({r["value"] for r in cell_rows}))
            ax.xaxis.set_major_formatter(plt.ScalarFormatter())
            ax.minorticks_off()
        ax.set_xlabel(SWEEP_LABELS[sweep])
        ax.grid(alpha=0.3)

    written = []
    fig, axes = plt.subplots(
        len(spaces), len(sweeps), figsize=(4 * len(sweeps), 3.2 * len(spaces)), squeeze=False
    )
    for i, space in enumerate(spaces):
        for j, sweep in enumerate(sweeps):
            panel(axes[i, j], space, sweep, "nemd")
        axes[i, 0].set_ylabel(f"NEMD, {_space_label(space)}")
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle("NEMD (lower is better): median and interquartile range")
    fig.tight_layout()
    written.append(out / "benchmark_nemd.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    metrics = ("nemd", "ple", "sd", "wcos", "nmse")
    for space in spaces:
        fig, axes = plt.subplots(len(metrics), len(sweeps), figsize=(4 * len(sweeps), 2.8 * len(metrics)),
                                 squeeze=False)  # fmt: skip
        for i, metric in enumerate(metrics):
            for j, sweep in enumerate(sweeps):
                panel(axes[i, j], space, sweep, metric)
                if metric == "nmse":  # sparse solvers' NMSE is orders of magnitude above the others'
                    axes[i, j].set_yscale("log")
            axes[i, 0].set_ylabel(METRIC_LABELS[metric])
        axes[0, -1].legend(fontsize=7, loc="best")
        fig.suptitle(f"All metrics, {_space_label(space)} (median, interquartile range)")
        fig.tight_layout()
        written.append(out / f"benchmark_{space}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def _space_label(space: str) -> str:
    return "cortex, fixed orientation" if space == "surface" else "volume, free orientation"


def benchmark_summary(rows: list[dict], header: str = "") -> str:
    """Markdown: NEMD per condition and method (best in bold), then every metric pooled per method."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [header, ""] if header else []
    lines += [
        "NEMD per condition (median over the cell's samples; lower is better; best in bold):",
        "",
        "| source space | sweep | value | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    groups = _groups(rows, "source_space", "sweep", "value")
    order = {s: i for i, s in enumerate(SWEEP_LABELS)}
    for key in sorted(
        groups, key=lambda k: (order[k[1]], k[0], str(k[2]) if isinstance(k[2], str) else k[2])
    ):
        meds = {m: _median_iqr([r["nemd"] for r in groups[key] if r["method"] == m])[0] for m in methods}
        best = np.nanmin(list(meds.values()))
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in meds.values()]
        value = f"{key[2]:g}" if isinstance(key[2], float) else str(key[2])
        lines.append(
            f"| {_space_label(key[0])} | {SWEEP_LABELS[key[1]]} | {value} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "All samples pooled, per source space (median [interquartile range]; NMSE only for outputs in Am;",
        "seconds per sample exclude the one-off kernel computation of the linear methods):",
        "",
        "| source space | method | NEMD | PLE (mm) | SD (mm) | wcos | NMSE | s/sample | empty maps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (space, method), group in sorted(_groups(rows, "source_space", "method").items(),
                                         key=lambda kv: (kv[0][0], methods.index(kv[0][1]))):  # fmt: skip
        cells = []
        for metric, fmt in (("nemd", ".2f"), ("ple", ".0f"), ("sd", ".0f"), ("wcos", ".2f"), ("nmse", ".2f")):
            med, lo, hi = _median_iqr([r[metric] for r in group])
            cells.append("n/a" if np.isnan(med) else f"{med:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")
        secs = np.median([r["seconds"] for r in group])
        empty = sum(r["empty"] for r in group)
        cells += [f"{secs:.2g}", f"{empty}/{len(group)}"]
        lines.append(f"| {_space_label(space)} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark_header(n_per_cell: int, seed: int, quick: bool, elapsed_s: float) -> str:
    """Date, machine and the command that reproduces a benchmark run."""
    import datetime
    import os
    import platform

    import torch

    command = "mne-piunet benchmark" + (" --quick" if quick else "") + f" --n {n_per_cell} --seed {seed}"
    return (
        f"`{command}` on {datetime.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, mne {mne.__version__}; {elapsed_s / 60:.1f} min. {n_per_cell} samples per "
        f"cell; MxNE alpha {MXNE_ALPHA:g} %, Gamma-MAP alpha {GAMMA_MAP_ALPHA:g}, lambda2 1/9 for the linear "
        "methods. All maps are scored on PIUNet's 8 mm grid; NEMD on 16 mm cells."
    )
