"""Evaluation of PIUNet against eLORETA on held-out heads and montages.

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
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from mne.utils import ProgressBar, logger

from .metrics import coarse_nemd, peak_localisation_error, weighted_cosine_distance
from .simulation import HeadSetup, SourcePrior, prepare_setup, simulate

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
        nemd=coarse_nemd(est, true, pos),
        ple=peak_localisation_error(est, true, pos),
        wcos=weighted_cosine_distance(est, true),
        peak_ratio=est_norm.max() / true_norm.max(),
        mass_ratio=est_norm.sum() / true_norm.sum(),
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


def bench_generation(
    montage: str = "biosemi64", n: int = 4096, batch: int = 256, seed: int = 0
) -> dict[str, float]:
    """Samples per second of the simulation engine (sources -> sensors -> eLORETA -> grid).

    Volume (the grid, free orientation) and cortical (fsaverage5, fixed)
    setups on the template BEM; the forward and kernel are built beforehand.
    """
    from .grid import get_grid

    grid = get_grid()
    rates = {}
    for space in ("volume", "surface"):
        prepared = prepare_setup(HeadSetup(montage, source_space=space), grid)
        rng = np.random.default_rng(seed)
        simulate(prepared, batch, rng)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n // batch):
            simulate(prepared, batch, rng)
        rates[space] = (n // batch) * batch / (time.perf_counter() - t0)
    return rates


def bench_speed(
    piu, montage: str = "biosemi64", sfreq: float = 250.0, raw_minutes: float = 10.0, seed: int = 0
) -> dict[str, float]:
    """Wall time of eLORETA and PIUNet on a 1-s evoked, and apply_raw's peak memory.

    Peak memory is the process's resident-set high-water mark increase during
    ``apply_raw`` on ``raw_minutes`` of data (Linux ``ru_maxrss``), measured in
    a fresh subprocess-free way: the raw run is last, so earlier peaks are lower.
    """
    import resource

    import mne

    prepared = prepare_setup(HeadSetup(montage, source_space="surface"), piu.grid)
    info = prepared.info.copy()
    with info._unlock():
        info["sfreq"] = sfreq
    rng = np.random.default_rng(seed)
    n = int(sfreq)
    batch = simulate(prepared, n, rng)
    evoked = mne.EvokedArray(batch.sensor.T, info, nave=1, verbose=False)
    inv = prepared.inverse_operator
    piu.apply(evoked, inv, 1 / 9)  # warm-up: operator cache, torch kernels
    t0 = time.perf_counter()
    mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    t_elo = time.perf_counter() - t0
    t0 = time.perf_counter()
    piu.apply(evoked, inv, 1 / 9)
    t_piu = time.perf_counter() - t0
    out = dict(eloreta_s=t_elo, piunet_s=t_piu, ratio=t_piu / t_elo)
    if raw_minutes:
        n_raw = int(raw_minutes * 60 * sfreq)
        data = rng.standard_normal((len(info["ch_names"]), n_raw)).astype(np.float64) * 1e-6
        raw = mne.io.RawArray(data, info, verbose=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        stc = piu.apply_raw(raw, inv, 1 / 9)
        out["raw_s"] = time.perf_counter() - t0
        out["raw_peak_rss_increase_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        out["raw_input_mb"] = data.nbytes / 2**20
        out["raw_output_mb"] = stc.data.nbytes / 2**20
    return out
