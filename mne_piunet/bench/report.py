"""Reports of evaluation runs: Markdown tables, CSV files and figures.

The rows are those of :mod:`mne_piunet.bench.evaluation` (one per sample and
method). :func:`summarise` is the one path from rows to per-group statistics;
:func:`markdown_table` (the model card's eLORETA-vs-PIUNet tables) and
:func:`benchmark_summary` (``mne-piunet benchmark``) lay them out.

Figures are :class:`matplotlib.figure.Figure` objects, written with
``fig.savefig``: nothing here touches pyplot's global state or backend.
"""

# License: BSD-3-Clause

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..simulation import SourcePrior
from ..utils._defaults import DEFAULT_LAMBDA2
from ..utils._docs import fill_doc
from .evaluation import BENCHMARK_METHODS, GAMMA_MAP_ALPHA, METHODS, MXNE_ALPHA
from .experiments import EXPERIMENTS, HEADLINE, HELD_OUT_SETUPS, IN_DISTRIBUTION_SETUP, run_experiment

__all__ = (
    "benchmark_header",
    "benchmark_summary",
    "markdown_table",
    "model_card_tables",
    "plot_benchmark",
    "profile_summary",
    "headline_report",
    "machine",
    "run_evaluation",
    "speed_summary",
    "steadiness_table",
    "summarise",
    "validation_table",
    "write_benchmark",
    "write_csv",
    "peak_floor_table",
)

SWEEP_LABELS = dict(
    snr_db="SNR (dB)",
    n_sources="number of sources",
    extent_mm="source extent (2 sigma, mm)",
    montage="montage",
    head="head model",
    sensors="sensors",
)
METRIC_LABELS = dict(
    nemd="NEMD",
    ple="peak localisation error (mm)",
    sd="spatial dispersion (mm)",
    wcos="weighted cosine distance",
    nmse="NMSE",
)
#: Columns and headings of :func:`markdown_table` after the grouping columns.
_TABLE_COLUMNS = {
    "eLORETA:nemd": "NEMD eLORETA",
    "PIUNet:nemd": "NEMD PIUNet",
    "nemd_ratio": "ratio",
    "eLORETA:ple": "PLE eLORETA (mm)",
    "PIUNet:ple": "PLE PIUNet (mm)",
    "eLORETA:wcos": "wcos eLORETA",
    "PIUNet:wcos": "wcos PIUNet",
}
_BY_HEADINGS = dict(source_space="source space", snr_db="SNR dB", n_sources="sources", value="condition")


# --------------------------------------------------------------------------------------------------
# Statistics of rows


def _median_iqr(values) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile of the finite values (NaN if none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return (np.nan,) * 3
    lo, med, hi = np.percentile(values, [25, 50, 75])
    return med, lo, hi


def _groups(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys``, in order of first appearance."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


_STATS: dict[str, Callable] = dict(
    mean=lambda v: float(np.nanmean(v)), median=lambda v: float(_median_iqr(v)[0])
)


def _methods(rows: list[dict]) -> list[str]:
    """The methods of the rows, in :data:`~mne_piunet.bench.evaluation.METHODS` order."""
    present = dict.fromkeys(r["method"] for r in rows)  # in order of appearance
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def summarise(
    rows: list[dict],
    by: Sequence[str] = ("source_space", "snr_db", "n_sources"),
    metrics: Sequence[str] = ("nemd", "ple", "wcos"),
    stat: str = "mean",
) -> list[dict]:
    """Statistic of each metric per group and method.

    Parameters
    ----------
    rows : list of dict
        Rows of :mod:`mne_piunet.bench.evaluation`.
    by : sequence of str
        The grouping columns.
    metrics : sequence of str
        The metrics.
    stat : "mean" | "median"
        The statistic (NaNs ignored).

    Returns
    -------
    summary : list of dict
        One dict per group, sorted by group: the ``by`` columns, then
        ``"<method>:<metric>"``, and ``nemd_ratio`` (PIUNet's NEMD over
        eLORETA's) when both methods and NEMD are there.
    """
    summary = []
    for key, group in sorted(_groups(rows, *by).items(), key=lambda kv: kv[0]):
        row = dict(zip(by, key))
        for method in _methods(group):
            for m in metrics:
                row[f"{method}:{m}"] = _STATS[stat]([r[m] for r in group if r["method"] == method])
        if {"PIUNet:nemd", "eLORETA:nemd"} <= set(row):
            row["nemd_ratio"] = row["PIUNet:nemd"] / row["eLORETA:nemd"]
        summary.append(row)
    return summary


# --------------------------------------------------------------------------------------------------
# Tables


def markdown_table(summary: list[dict], by: Sequence[str] = ("source_space", "snr_db", "n_sources")) -> str:
    """A Markdown table of :func:`summarise`'s output: eLORETA beside PIUNet.

    Parameters
    ----------
    summary : list of dict
        The output of :func:`summarise` with its default metrics.
    by : sequence of str
        The grouping columns it was computed with.

    Returns
    -------
    table : str
        NEMD, their ratio, PLE and weighted cosine distance per group.
    """
    head = [_BY_HEADINGS.get(b, b) for b in by] + list(_TABLE_COLUMNS.values())
    body = [[_text(r[b]) for b in by] + [f"{r[c]:.3g}" for c in _TABLE_COLUMNS] for r in summary]
    return _markdown(head, body)


def methods_table(
    rows: list[dict], by: Sequence[str] = ("snr_db", "n_sources"), metrics: Sequence[str] = ("nemd", "ple")
) -> str:
    """A Markdown table with one column per method and metric (any number of methods).

    Parameters
    ----------
    rows : list of dict
        Rows of :mod:`mne_piunet.bench.evaluation` (e.g. of :func:`~mne_piunet.bench.evaluation.finetune_benefit`).
    by : sequence of str
        The grouping columns.
    metrics : sequence of str
        The metrics, each a block of method columns (means, NaNs ignored).

    Returns
    -------
    table : str
        One line per group.
    """
    methods = _methods(rows)
    summary = summarise(rows, by=by, metrics=metrics)
    columns = [(m, method) for m in metrics for method in methods]
    head = [_BY_HEADINGS.get(b, b) for b in by] + [f"{m.upper()} {method}" for m, method in columns]
    body = [
        [_text(r[b]) for b in by] + [f"{r[f'{method}:{m}']:.3g}" for m, method in columns] for r in summary
    ]
    return _markdown(head, body)


def _count(n: int, noun: str) -> str:
    """``"1 torch thread"``, ``"2 torch threads"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _text(value) -> str:
    """A grouping column's value as a table shows it: ``20`` for 20.0 dB."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _markdown(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table of a heading row and body rows of cell texts."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def _calibration_table(rows: list[dict]) -> list[str]:
    """Median and quartiles of the amplitude ratios per method."""
    lines = ["| method | peak moment / true peak | summed moment / true sum |", "|---|---|---|"]
    for method in _methods(rows):
        cells = []
        for key in ("peak_ratio", "mass_ratio"):
            q = np.percentile([r[key] for r in rows if r["method"] == method], [50, 25, 75])
            cells.append(f"{q[0]:.2g} [{q[1]:.2g}, {q[2]:.2g}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


#: How the held-out cells are pooled for comparisons between models and precisions.
_POOLINGS = (("source_space",), ("source_space", "n_sources"), ("source_space", "snr_db"))


def model_card_tables(in_distribution: list[dict], held_out: list[dict], seed: int) -> str:
    """The model card's tables (Markdown) of the in-distribution and held-out experiments' rows.

    Parameters
    ----------
    in_distribution, held_out : list of dict
        The two sets of rows.
    seed : int
        The seed they were simulated with.

    Returns
    -------
    text : str
        In-distribution and held-out NEMD, PLE and wcos, then amplitude calibration.
    """
    n = len({r["sample"] for r in held_out})
    by_space = ("source_space",)
    return "\n".join(
        [
            f"Seed {seed}, {n} samples per cell ({2 * n} in distribution); "
            f"sources drawn from {asdict(SourcePrior())}.",
            "",
            "In distribution (" + IN_DISTRIBUTION_SETUP.name + ", 1 source, SNR 20 dB):",
            "",
            markdown_table(summarise(in_distribution, by=by_space), by=by_space),
            "",
            "Held out (" + ", ".join(s.name for s in HELD_OUT_SETUPS) + "), per SNR and number of sources:",
            "",
            markdown_table(summarise(held_out)),
            "",
            "Held out, pooled (means over the other factor; the rows compared between models):",
            "",
            *(markdown_table(summarise(held_out, by=by), by=by) + "\n" for by in _POOLINGS),
            "Amplitude calibration on the held-out samples (median [25th, 75th percentile]; 1 = calibrated):",
            "",
            *_calibration_table(held_out),
        ]
    )


def _space_label(space: str) -> str:
    labels = {"surface": "cortex, fixed orientation", "surface (loose)": "cortex, loose orientation"}
    return labels.get(space, "volume, free orientation")


def _sweep_order(key: tuple) -> tuple:
    """Sort key of (source space, sweep, value): sweeps in :data:`SWEEP_LABELS` order."""
    space, sweep, value = key
    return list(SWEEP_LABELS).index(sweep), space, value


def _nemd_by_condition(rows: list[dict], methods: list[str]) -> list[str]:
    """Median NEMD per condition and method, the best in bold."""
    lines = [
        "NEMD per condition (median over the cell's samples; lower is better; best in bold):",
        "",
        "| source space | sweep | value | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    summary = summarise(rows, by=("source_space", "sweep", "value"), metrics=("nemd",), stat="median")
    for r in sorted(summary, key=lambda r: _sweep_order((r["source_space"], r["sweep"], r["value"]))):
        meds = [r[f"{m}:nemd"] for m in methods]
        best = np.nanmin(meds)
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in meds]
        value = f"{r['value']:g}" if isinstance(r["value"], float) else str(r["value"])
        sweep = SWEEP_LABELS[r["sweep"]]
        lines.append(f"| {_space_label(r['source_space'])} | {sweep} | {value} | " + " | ".join(cells) + " |")
    return lines


def _pooled(rows: list[dict], methods: list[str]) -> list[str]:
    """Every metric pooled per source space and method: median [interquartile range]."""
    lines = [
        "All samples pooled, per source space (median [interquartile range]; NMSE only for outputs in Am;",
        "seconds per sample exclude the one-off kernel computation of the linear methods):",
        "",
        "| source space | method | NEMD | PLE (mm) | SD (mm) | wcos | NMSE | s/sample | empty maps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = _groups(rows, "source_space", "method")
    for space, method in sorted(groups, key=lambda k: (k[0], methods.index(k[1]))):
        group, cells = groups[(space, method)], []
        for metric, fmt in (("nemd", ".2f"), ("ple", ".0f"), ("sd", ".0f"), ("wcos", ".2f"), ("nmse", ".2f")):
            med, lo, hi = _median_iqr([r[metric] for r in group])
            cells.append("n/a" if np.isnan(med) else f"{med:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")
        secs = np.median([r["seconds"] for r in group])
        cells += [f"{secs:.2g}", f"{sum(r['empty'] for r in group)}/{len(group)}"]
        lines.append(f"| {_space_label(space)} | {method} | " + " | ".join(cells) + " |")
    return lines


def benchmark_summary(rows: list[dict], header: str = "") -> str:
    """The benchmark's Markdown summary.

    Parameters
    ----------
    rows : list of dict
        Rows of the ``benchmark`` experiment (:func:`~mne_piunet.bench.experiments.run_experiment`).
    header : str
        A first paragraph (see :func:`benchmark_header`).

    Returns
    -------
    summary : str
        NEMD per condition and method (best in bold), then every metric pooled
        per source space and method.
    """
    methods = _methods(rows)
    lines = [header, ""] if header else []
    return "\n".join(lines + _nemd_by_condition(rows, methods) + [""] + _pooled(rows, methods))


def benchmark_header(
    n_per_cell: int, quick: bool, elapsed_s: float, methods: tuple[str, ...] = BENCHMARK_METHODS
) -> str:
    """Date, machine and the command that reproduces a benchmark run.

    Parameters
    ----------
    n_per_cell : int
        Samples per cell.
    quick : bool
        Whether it was a ``--quick`` run.
    elapsed_s : float
        Its duration (s).
    methods : tuple of str
        Its methods (named in the command unless the default).

    Returns
    -------
    header : str
        One paragraph.
    """
    command = "mne-piunet benchmark" + (" --quick" if quick else "") + f" --n {n_per_cell}"
    if tuple(methods) != BENCHMARK_METHODS:
        command += " --methods " + " ".join(methods)
    sure = " (MxNE-SURE: mixed_norm's default, alpha by SURE)" if "MxNE-SURE" in methods else ""
    return (
        f"`{command}` on {machine()['date']}: {machine()['machine']}; {elapsed_s / 60:.1f} min. {n_per_cell} samples per "
        f"cell; MxNE alpha {MXNE_ALPHA:g} %{sure}, Gamma-MAP alpha {GAMMA_MAP_ALPHA:g}, lambda2 1/{1 / DEFAULT_LAMBDA2:.0f} for the linear "
        "methods. Every sample is a time course of 80 ms at 250 Hz scored at its centre (PIUNet's context and MxNE's "
        "and the peers' fit come from it). All maps are scored on PIUNet's 8 mm grid; NEMD on 16 mm cells."
    )


def validation_table(results: dict[str, dict[int, float]]) -> str:
    """Markdown table of :func:`mne_piunet.train.training.validate_by_sources`' mean NEMD.

    Parameters
    ----------
    results : dict
        Mean NEMD per weights (and ``"eLORETA"``) and number of sources.

    Returns
    -------
    table : str
        NEMD per number of sources, then its ratio to eLORETA's.
    """
    ks = list(results["eLORETA"])
    lines = [
        "| weights | "
        + " | ".join(f"{k} src" for k in ks)
        + " | "
        + " | ".join(f"ratio {k}" for k in ks)
        + " |",
        "|---|" + "---|" * 2 * len(ks),
    ]
    for name, by_k in results.items():
        ratios = [by_k[k] / results["eLORETA"][k] for k in ks]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{by_k[k]:.3f}" for k in ks)
            + " | "
            + " | ".join(f"{r:.2f}" for r in ratios)
            + " |"
        )
    return "\n".join(lines)


def speed_summary(res: dict, montage: str, n_epochs: int, raw_minutes: float) -> str:
    """The text of ``mne-piunet bench-speed``.

    Parameters
    ----------
    res : dict
        The output of :func:`mne_piunet.bench.speed.bench_speed`.
    montage : str
        Its montage.
    n_epochs : int
        Its number of epochs.
    raw_minutes : float
        Its Raw's length (min).

    Returns
    -------
    text : str
        Times per map and per call, eLORETA beside PIUNet; apply_raw's memory.
    """
    import platform

    p = res["precision"]
    lines = [
        f"{platform.machine()}, {_count(res['threads'], 'torch thread')}, default precision {p}",
        f"{montage} at 250 Hz, fsaverage5 cortex inverse (fixed orientation):",
        f"  apply_epochs end to end: {res['epochs_ms_per_map']:.2f} ms per map ({p}), "
        f"{res['epochs_ms_per_map_fp32']:.2f} ms (float32)",
        f"  network forward alone: {res['forward_ms_per_map']:.2f} ms per map ({p}), "
        f"{res['forward_ms_per_map_fp32']:.2f} ms (float32)",
        f"  1-s evoked: apply_inverse eLORETA {res['evoked_eloreta_s']:.2f} s | PIUNet apply "
        f"{res['evoked_piunet_s']:.2f} s | ratio {res['evoked_ratio']:.2f}",
        f"  {n_epochs} epochs of 1 s: apply_inverse_epochs eLORETA {res['epochs_eloreta_s']:.1f} s | "
        f"PIUNet apply_epochs {res['epochs_piunet_s']:.1f} s | ratio {res['epochs_ratio']:.2f}",
    ]
    if "first_call_s" in res:
        lines.append(
            f"  loose (0.2) cortex inverse, 1-s evoked: PIUNet's first apply {res['first_call_s']:.1f} s (MNE's "
            f"eLORETA weight fit), second {res['second_call_s']:.1f} s (prepared operator cached) | "
            f"apply_inverse eLORETA {res['loose_eloreta_s']:.1f} s"
        )
    if "raw_s" in res:
        lines.append(
            f"  apply_raw on {raw_minutes:g} min: {res['raw_s']:.0f} s, peak memory beyond the output "
            f"{res['raw_peak_beyond_output_mb']:.0f} MB (output {res['raw_output_mb']:.0f} MB)"
        )
    return "\n".join(lines)


def profile_summary(times_ms: dict[str, float], precision: str) -> str:
    """The text of ``mne-piunet bench-speed --profile``.

    Parameters
    ----------
    times_ms : dict of str to float
        The output of :func:`mne_piunet.bench.speed.profile_forward`.
    precision : str
        The network's arithmetic.

    Returns
    -------
    text : str
        Milliseconds per map of each part of the forward pass.
    """
    lines = [f"forward pass by part, ms per map ({precision}, batch 16):"]
    return "\n".join(lines + [f"  {name:8s} {ms:6.2f}" for name, ms in times_ms.items()])


# --------------------------------------------------------------------------------------------------
# Files


def machine() -> dict[str, str]:
    """Today's date (UTC) and a description of this machine and its libraries, for a report's header.

    Returns
    -------
    machine : dict of str to str
        ``date`` (ISO, UTC) and ``machine`` (architecture, cores, torch
        threads and the versions of mne-piunet, torch and mne).
    """
    import datetime
    import os
    import platform

    import mne
    import torch

    from .. import __version__

    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, {_count(torch.get_num_threads(), 'torch thread')}, "
        f"mne-piunet {__version__}, torch {torch.__version__}, mne {mne.__version__}",
    )


def write_csv(rows: list[dict], fname: str | Path) -> Path:
    """Write rows to CSV.

    Parameters
    ----------
    rows : list of dict
        Rows with the same keys (the first row's give the columns).
    fname : path-like
        The file; its folder is created.

    Returns
    -------
    fname : Path
        The file written.
    """
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    with open(fname, "w", newline="") as fid:
        writer = csv.DictWriter(fid, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return fname


def write_benchmark(rows: list[dict], out: str | Path, header: str = "") -> tuple[str, list[Path]]:
    """Write a benchmark's ``scores.csv``, ``summary.md`` and plots.

    Parameters
    ----------
    rows : list of dict
        Rows of the ``benchmark`` experiment (:func:`~mne_piunet.bench.experiments.run_experiment`).
    out : path-like
        The folder.
    header : str
        The summary's first paragraph (see :func:`benchmark_header`).

    Returns
    -------
    summary : str
        The Markdown summary (:func:`benchmark_summary`).
    written : list of Path
        ``scores.csv``, ``summary.md``, then the plots.
    """
    out = Path(out)
    summary = benchmark_summary(rows, header)
    written = [write_csv(rows, out / "scores.csv"), out / "summary.md"]
    written[1].write_text(summary + "\n")
    return summary, written + plot_benchmark(rows, out)


@fill_doc
def run_evaluation(weights=None, out: str | Path | None = None, quick: bool = False) -> str:
    """Run the model card's evaluation and report it.

    Parameters
    ----------
    %(weights)s
    out : path-like | None
        Folder for ``evaluation.csv`` (every sample's scores); ``None`` writes nothing.
    quick : bool
        A smoke run (:meth:`~mne_piunet.bench.experiments.CellGroup.quick`, 3 samples per cell).

    Returns
    -------
    text : str
        The Markdown tables of :func:`model_card_tables`, then the presets and sensor types.
    """
    n = 3 if quick else None
    rows = {
        name: run_experiment(name, weights, n, quick)
        for name in ("in-distribution", "held-out", "presets", "sensors")
    }
    if out is not None:
        write_csv([r for part in rows.values() for r in part], Path(out) / "evaluation.csv")
    lines = [model_card_tables(rows["in-distribution"], rows["held-out"], EXPERIMENTS["held-out"].seed)]
    for name in ("presets", "sensors"):
        by = EXPERIMENTS[name].table
        lines += [
            "",
            _experiment_heading(name, rows[name]),
            "",
            markdown_table(summarise(rows[name], by=by), by=by),
        ]
    return "\n".join(lines)


def _experiment_heading(name: str, rows: list[dict]) -> str:
    """``<title> (seed <s>, <n> samples per cell):``."""
    experiment = EXPERIMENTS[name]
    return (
        f"{experiment.title} (seed {experiment.seed}, {len({r['sample'] for r in rows})} samples per cell):"
    )


#: The pooled rows of each headline experiment's table: the numbers of sources over all SNRs,
#: and single sources at 5-20 dB, the most common case.
_HEADLINE_POOLS = (("n_sources",), ("source_space", "n_sources"))


@fill_doc
def headline_report(
    weights=None,
    n_per_cell: int | None = None,
    quick: bool = False,
    out: str | Path | None = None,
    real_data: str | Path | None = None,
) -> tuple[str, dict]:
    """The headline evaluation of a model: every experiment of :data:`~mne_piunet.bench.experiments.HEADLINE`.

    Held-out time courses and single maps, the sensor types and the
    benchmark beside every method of MNE, each scored as a user meets it
    (:meth:`~mne_piunet.PIUNetInverse.apply`), dated and with the machine and
    the weights' sha256.

    Parameters
    ----------
    %(weights)s
    n_per_cell : int | None
        Samples per cell; None: each experiment's own.
    quick : bool
        A smoke run (:meth:`~mne_piunet.bench.experiments.CellGroup.quick`).
    out : path-like | None
        Folder for ``headline.md``, ``headline.json`` and ``scores.csv``; None writes nothing.
    real_data : path-like | None
        A folder with MNE's test evoked (``test-ave.fif.gz``, ``test-cov.fif``):
        adds the peak's steadiness on its real MEG
        (:func:`~mne_piunet.bench.real_data.visual_steadiness`).

    Returns
    -------
    text : str
        The report (Markdown).
    data : dict
        ``meta`` (date, machine, command, weights and their sha256, wall
        time) and, per experiment, its ``tables`` (Markdown) and ``pooled``
        means per method.
    """
    import time

    from .._cache import file_sha256
    from ..network import bundled_weights_path

    t0 = time.perf_counter()
    path = Path(bundled_weights_path() if weights is None else weights)
    command = "mne-piunet report" + ("" if weights is None else f" --weights {weights}")
    command += ("" if n_per_cell is None else f" --n {n_per_cell}") + (" --quick" if quick else "")
    command += "" if real_data is None else f" --real-data {real_data}"
    data: dict = dict(
        meta=dict(machine(), command=command, weights=path.name, weights_sha256=file_sha256(path))
    )
    lines, all_rows = [], []
    for name in HEADLINE:
        experiment = EXPERIMENTS[name]
        rows = run_experiment(name, weights, n_per_cell, quick, verbose="error")
        all_rows += [dict(r, experiment=name) for r in rows]
        tables = [methods_table(rows, by=experiment.table)]
        if "n_sources" in experiment.table:  # pooled over SNRs, and the common case alone
            tables += [methods_table(rows, by=pool) for pool in _HEADLINE_POOLS]
        single = [r for r in rows if r["n_sources"] == 1 and 5.0 <= r["snr_db"] <= 20.0]
        if single and "n_sources" in experiment.table:
            tables.append("One source at 5-20 dB:\n\n" + methods_table(single, by=("source_space",)))
        data[name] = dict(title=experiment.title, tables=tables, pooled=_pooled_means(rows))
        lines += [
            f"## {experiment.title}",
            "",
            _experiment_heading(name, rows),
            "",
            *(t + "\n" for t in tables),
        ]
    if real_data is not None:
        from ..inverse import PIUNetInverse
        from .real_data import visual_steadiness

        rows = visual_steadiness(real_data, PIUNetInverse(weights))
        data["real-meg"] = dict(title=_REAL_MEG_TITLE, rows=rows)
        lines += [f"## {_REAL_MEG_TITLE}", "", steadiness_table(rows), ""]
    meta = data["meta"]
    meta["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    head = [
        f"# Headline evaluation of {meta['weights']}",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['minutes']} min): {meta['machine']}. Weights sha256 "
        f"`{meta['weights_sha256']}`. Mean NEMD (16 mm cells; lower is better) and mean peak localisation error "
        "(PLE, mm) on the 8 mm grid; PIUNet as `PIUNetInverse.apply` gives it, data-fit step included.",
        "",
    ]
    text = "\n".join(head + lines)
    if out is not None:
        out = Path(out)
        write_csv(all_rows, out / "scores.csv")
        (out / "headline.md").write_text(text)
        (out / "headline.json").write_text(json.dumps(data, indent=1) + "\n")
    return text, data


_REAL_MEG_TITLE = "Real MEG: the P100 of MNE's test evoked (visual conditions), 85-115 ms"


def steadiness_table(rows: list[dict]) -> str:
    """Markdown table of :func:`~mne_piunet.bench.real_data.visual_steadiness`'s rows.

    Parameters
    ----------
    rows : list of dict
        Its rows.

    Returns
    -------
    table : str
        Per method and data (whole evoked, or cropped to the window first):
        each condition's median peak jump between consecutive samples (mm),
        their mean, and each window-mean peak (template MRI mm; * where it is
        not in the contralateral occipital lobe).
    """
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    head = ["method", "data", *(f"jump {c} (mm)" for c in conditions), "mean jump (mm)"]
    head += [f"mean peak {c}" for c in conditions]
    body = []
    for (method, data), group in _groups(rows, "method", "data").items():
        jumps = [r["median_jump_mm"] for r in group]
        peaks = [
            f"{tuple(int(v) for v in r['mean_peak_mm'])}{'' if r['contralateral'] else ' *'}" for r in group
        ]
        body.append([method, data, *(f"{j:.1f}" for j in jumps), f"{np.mean(jumps):.1f}", *peaks])
    return _markdown(head, body)


def _pooled_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean NEMD and PLE per method over all the rows."""
    return {
        method: {
            m: round(float(np.nanmean([r[m] for r in rows if r["method"] == method])), 4)
            for m in ("nemd", "ple")
        }
        for method in _methods(rows)
    }


# --------------------------------------------------------------------------------------------------
# Figures


def _panel(ax, rows: list[dict], methods: list[str], sweep: str, metric: str) -> None:
    """One metric against one sweep's values: a median line and an interquartile band per method."""
    from matplotlib import colormaps
    from matplotlib.ticker import ScalarFormatter

    # one tab10 colour per method as before MxNE-SURE existed; MxNE-SURE takes MxNE's lighter shade
    methods_before = [m for m in METHODS if m != "MxNE-SURE"]
    colours = dict(zip(methods_before, colormaps["tab10"].colors))
    colours["MxNE-SURE"] = colormaps["tab20"].colors[2 * methods_before.index("MxNE") + 1]
    for method in methods:
        by_value = _groups([r for r in rows if r["method"] == method], "value")
        xs = sorted(v for (v,) in by_value)
        stats = np.array([_median_iqr([r[metric] for r in by_value[(x,)]]) for x in xs])
        if not len(xs) or np.all(np.isnan(stats[:, 0])):
            continue
        lw = 2.5 if method == "PIUNet" else 1.2
        ax.plot(xs, stats[:, 0], "o-", color=colours[method], lw=lw, ms=3, label=method)
        ax.fill_between(xs, stats[:, 1], stats[:, 2], color=colours[method], alpha=0.12, lw=0)
    if sweep != "snr_db":
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["value"] for r in rows}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.minorticks_off()
    ax.set_xlabel(SWEEP_LABELS[sweep])
    ax.grid(alpha=0.3)


def _sweep_rows(rows: list[dict], space: str, sweep: str) -> list[dict]:
    return [r for r in rows if r["sweep"] == sweep and r["source_space"] == space]


def _nemd_figure(rows: list[dict], spaces: list[str], sweeps: list[str], methods: list[str]) -> Figure:
    """NEMD against every sweep, one row of panels per source space."""
    fig = Figure(figsize=(4 * len(sweeps), 3.2 * len(spaces)))
    axes = fig.subplots(len(spaces), len(sweeps), squeeze=False)
    for i, space in enumerate(spaces):
        for j, sweep in enumerate(sweeps):
            _panel(axes[i, j], _sweep_rows(rows, space, sweep), methods, sweep, "nemd")
        axes[i, 0].set_ylabel(f"NEMD, {_space_label(space)}")
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle("NEMD (lower is better): median and interquartile range")
    fig.tight_layout()
    return fig


def _metrics_figure(rows: list[dict], space: str, sweeps: list[str], methods: list[str]) -> Figure:
    """Every metric against every sweep on one source space."""
    fig = Figure(figsize=(4 * len(sweeps), 2.8 * len(METRIC_LABELS)))
    axes = fig.subplots(len(METRIC_LABELS), len(sweeps), squeeze=False)
    for i, metric in enumerate(METRIC_LABELS):
        for j, sweep in enumerate(sweeps):
            _panel(axes[i, j], _sweep_rows(rows, space, sweep), methods, sweep, metric)
            if metric == "nmse":  # sparse solvers' NMSE is orders of magnitude above the others'
                axes[i, j].set_yscale("log")
        axes[i, 0].set_ylabel(METRIC_LABELS[metric])
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle(f"All metrics, {_space_label(space)} (median, interquartile range)")
    fig.tight_layout()
    return fig


def plot_benchmark(rows: list[dict], out: str | Path) -> list[Path]:
    """PNG plots: each metric against SNR, number of sources and extent, one line per method.

    Parameters
    ----------
    rows : list of dict
        Rows of the ``benchmark`` experiment (:func:`~mne_piunet.bench.experiments.run_experiment`).
    out : path-like
        The folder.

    Returns
    -------
    written : list of Path
        ``benchmark_nemd.png`` (NEMD, one row per source space), the main
        plot, then ``benchmark_<space>.png`` (all metrics of one source
        space). Lines are medians over the cell's samples, bands the
        interquartile range.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = [s for s in ("snr_db", "n_sources", "extent_mm") if any(r["sweep"] == s for r in rows)]
    spaces = sorted({r["source_space"] for r in rows if r["sweep"] in sweeps})
    methods = _methods(rows)
    figures = {"benchmark_nemd.png": _nemd_figure(rows, spaces, sweeps, methods)}
    figures.update({f"benchmark_{s}.png": _metrics_figure(rows, s, sweeps, methods) for s in spaces})
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100)
    return [out / name for name in figures]


def frontier_summary(costs: dict[str, dict]) -> str:
    """Markdown table of :func:`mne_piunet.bench.speed.frontier_costs`: parameters and forward ms per map.

    Parameters
    ----------
    costs : dict
        Candidate name -> ``parameters`` and ms per map per precision.

    Returns
    -------
    table : str
        One row per candidate.
    """
    precisions = [k for k in next(iter(costs.values())) if k != "parameters"]
    lines = [
        "Forward pass alone, untrained candidates, batch 16 (ms per map):",
        "",
        "| candidate | parameters | " + " | ".join(precisions) + " |",
        "|---|---|" + "---|" * len(precisions),
    ]
    for name, row in costs.items():
        lines.append(
            f"| {name} | {row['parameters']:,} | " + " | ".join(f"{row[p]:.2f}" for p in precisions) + " |"
        )
    return "\n".join(lines)


def peak_floor_table(rows: list[dict], maps: Sequence[str]) -> str:
    """Markdown table of :func:`mne_piunet.bench.evaluation.peak_floor`: median [IQR] peak error per cell.

    Parameters
    ----------
    rows : list of dict
        Its rows.
    maps : sequence of str
        The maps, in column order.

    Returns
    -------
    table : str
        One row per setup and SNR, one column per map (mm).
    """
    cells = defaultdict(list)
    for r in rows:
        cells[(r["setup"], r["snr_db"], r["map"])].append(r["error_mm"])
    lines = ["| setup | SNR dB | " + " | ".join(maps) + " |", "|---|---|" + "---|" * len(maps)]
    for setup, snr in dict.fromkeys((r["setup"], r["snr_db"]) for r in rows):
        stats = [np.percentile(cells[(setup, snr, m)], [50, 25, 75]) for m in maps]
        lines.append(
            f"| {setup} | {snr:g} | " + " | ".join(f"{a:.1f} [{b:.1f}, {c:.1f}]" for a, b, c in stats) + " |"
        )
    return "\n".join(lines)
