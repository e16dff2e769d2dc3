"""Held-out time courses, scored for several weight files on the same samples.

Usage::

    python docs/scripts/temporal_eval.py OUT.csv WEIGHTS [WEIGHTS ...] [--n 10] [--seed 1234] [--sensors] [--single]

Every sample is a time course of 21 points over 80 ms at 250 Hz
(:data:`mne_piunet.bench.evaluation.EVAL_WINDOW`), scored at its centre, on
the held-out EEG setups of ``mne-piunet evaluate`` at 0-30 dB and 1-10
sources (with ``--sensors``, also its sensor-type cells: MEG, MEG+EEG and
OPM on held-out arrays). A model with a temporal context takes it from the
window; one without refines the centre alone. With ``--single`` every model
refines the centre alone (a temporal model with its instantaneous context, as
for ``refine`` of one map). Prints mean NEMD per cell for eLORETA and each
model, and each model's change against the first weights.
"""

import argparse
import csv
from collections import defaultdict

import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.bench.evaluation import (
    HELD_OUT_SETUPS,
    SNRS_DB,
    evaluation_cells,
    score_methods,
    sensor_cells,
)
from mne_piunet.utils._defaults import N_SOURCES_SWEEP


def _centre_alone(predict):
    """``predict_grid`` on each window's centre map alone."""
    return lambda x0, windows: predict(x0[windows[:, windows.shape[1] // 2]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sensors", action="store_true", help="add the sensor-type cells")
    parser.add_argument("--single", action="store_true", help="refine the centre map alone")
    args = parser.parse_args()
    rows = []
    for weights in args.weights:
        piu = PIUNetInverse(weights)
        if args.single:  # each sample's centre map alone: an instantaneous context
            piu.predict_grid = _centre_alone(piu.predict_grid)
        cells = evaluation_cells(HELD_OUT_SETUPS, SNRS_DB, N_SOURCES_SWEEP)
        if args.sensors:
            cells += sensor_cells(piu.grid)
        for row in score_methods(
            piu, cells, args.n, args.seed, methods=("eLORETA", "PIUNet"), verbose="error"
        ):
            rows.append(dict(row, weights=weights))
    with open(args.out, "w", newline="") as fid:
        writer = csv.DictWriter(fid, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    groups = defaultdict(list)
    for r in rows:
        if r["method"] == "eLORETA" and r["weights"] != args.weights[0]:
            continue  # the same samples: eLORETA once
        method = "eLORETA" if r["method"] == "eLORETA" else r["weights"]
        label = r["value"].split(",")[0] if r["sweep"] == "sensors" else r["setup"]
        groups[(label, float(r["snr_db"]), int(r["n_sources"]), method)].append(float(r["nemd"]))
    methods = ["eLORETA"] + args.weights
    print(
        "| setup | SNR | sources | "
        + " | ".join(methods)
        + " | "
        + " | ".join(f"{w} vs {args.weights[0]}" for w in args.weights[1:])
        + " |"
    )
    for key in sorted({k[:3] for k in groups}):
        means = [np.nanmean(groups[key + (m,)]) for m in methods]
        changes = [f"{100 * (m / means[1] - 1):+.0f} %" for m in means[2:]]
        print(f"| {key[0]} | {key[1]:g} | {key[2]} | " + " | ".join(f"{m:.3f}" for m in means) + " | "
              + " | ".join(changes) + " |")  # fmt: skip
    print("\nPooled over setups and sources, per SNR:")
    for snr in sorted({k[1] for k in groups}):
        means = [
            np.nanmean(sum((v for k, v in groups.items() if k[1] == snr and k[3] == m), [])) for m in methods
        ]
        changes = [f"{100 * (m / means[1] - 1):+.1f} %" for m in means[2:]]
        print(
            f"  {snr:g} dB: "
            + ", ".join(f"{name} {m:.3f}" for name, m in zip(methods, means))
            + "; "
            + ", ".join(changes)
        )


if __name__ == "__main__":
    main()
