"""Sensor types on held-out arrays and heads, and the held-out EEG rows, for one or more weight files.

Usage::

    python docs/scripts/sensor_eval.py OUT.csv WEIGHTS [WEIGHTS ...] [--n 10] [--seed 1234]

Every model is scored on the same samples: the sensor-type cells of
``mne-piunet evaluate`` (:func:`mne_piunet.bench.evaluation.sensor_cells`:
EEG, MEG and MEG+EEG with data from another head model than the inverse, and
the held-out OPM layout) and the held-out EEG setups at 1, 3 and 5 sources.
Prints NEMD (mean) and peak error per cell, eLORETA beside each model.
"""

import argparse
import csv
from collections import defaultdict

import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.bench.evaluation import HELD_OUT_SETUPS, evaluation_cells, score_methods, sensor_cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    rows = []
    for weights in args.weights:
        piu = PIUNetInverse(weights)
        cells = sensor_cells(piu.grid) + evaluation_cells(HELD_OUT_SETUPS, (0.0, 10.0, 20.0), (1, 3, 5))
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
        method = "eLORETA" if r["method"] == "eLORETA" else r["weights"]
        if r["method"] == "eLORETA" and r["weights"] != args.weights[0]:
            continue
        label = r["value"] if r["sweep"] == "sensors" else f"EEG held out: {r['setup']}"
        groups[(label, float(r["snr_db"]), int(r["n_sources"]), method)].append((r["nemd"], r["ple"]))
    methods = ["eLORETA"] + args.weights
    print("| cells | SNR | sources | " + " | ".join(f"NEMD {m} | PLE {m}" for m in methods) + " |")
    for key in sorted({k[:3] for k in groups}):
        cells = []
        for m in methods:
            scores = np.array(groups[key + (m,)], float)
            cells += [f"{np.nanmean(scores[:, 0]):.3f}", f"{np.nanmean(scores[:, 1]):.1f}"]
        print(f"| {key[0]} | {key[1]:g} | {key[2]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
