"""What fine-tuning buys on a head and montage the bundled model never saw (the model card's table).

``python docs/scripts/bench_finetune.py OUT_DIR [MINUTES ...] [--weights W] [--threads N]
[--montage M] [--conductivity B S C] [--fixed] [--single]``

1. Builds a user-style forward and loose (``--fixed``: fixed) inverse
   (:func:`mne_piunet.bench.evaluation.user_style_models`: by default easycap-M43
   digitised with 5 mm of jitter, BEM conductivities 0.33/0.0066/0.33), and
   writes both to ``OUT_DIR`` and reads them back, as a user's files would be.
2. Fine-tunes the weights for each budget in ``MINUTES`` (default 10 30), the
   later budgets resuming the same run (``OUT_DIR/run``), so 30 minutes costs
   30, not 40.
3. Scores eLORETA, the starting weights and every tuned model on the same
   samples (:func:`mne_piunet.bench.evaluation.finetune_benefit`, seed 4321, apart
   from the fine-tune's streams) and prints NEMD and peak localisation error
   per SNR and number of sources, then pooled over each. With ``--single`` every
   model is scored twice on the same samples: with its temporal window, and on the
   centre map alone ("single map", an instantaneous context).
"""

import argparse
import time
from pathlib import Path

import mne

from mne_piunet import PIUNetInverse
from mne_piunet.bench.evaluation import USER_STYLE_HEAD, finetune_benefit, user_style_models
from mne_piunet.bench.report import methods_table, write_csv
from mne_piunet.train.finetune import fine_tune


def _centre_alone(predict):
    """``predict_grid`` on each window's centre map alone (an instantaneous context)."""
    return lambda x0, windows: predict(x0[windows[:, windows.shape[1] // 2]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("minutes", type=float, nargs="*", default=[10.0, 30.0])
    parser.add_argument("--weights", default=None, help="weights to start from (default: bundled)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n", type=int, default=20, help="samples per cell")
    parser.add_argument("--montage", default=USER_STYLE_HEAD["montage"])
    parser.add_argument("--conductivity", type=float, nargs=3, default=USER_STYLE_HEAD["conductivity"])
    parser.add_argument(
        "--fixed", action="store_true", help="a fixed-orientation inverse (default loose 0.2)"
    )
    parser.add_argument("--single", action="store_true", help="also score each model on single maps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fwd_file, inv_file = args.out / "user-fwd.fif", args.out / "user-inv.fif"
    if not inv_file.exists():
        fwd, inv = user_style_models(
            args.montage, tuple(args.conductivity), loose="fixed" if args.fixed else 0.2
        )
        mne.write_forward_solution(fwd_file, fwd, overwrite=True)
        mne.minimum_norm.write_inverse_operator(inv_file, inv, overwrite=True)
    fwd, inv = mne.read_forward_solution(fwd_file), mne.minimum_norm.read_inverse_operator(inv_file)
    print(
        f"User-style head: {args.montage}, conductivity {args.conductivity}; "
        f"{'fixed' if args.fixed else 'loose 0.2'} cortical inverse"
    )
    start = PIUNetInverse(args.weights, precision="float32")
    models = {"start": start}
    for minutes in sorted(args.minutes):
        t0 = time.time()
        out = fine_tune(
            inv_file, fwd_file, out=args.out / f"tuned_{minutes:g}min.pt", minutes=minutes,
            weights=start.weights_path, run_dir=args.out / "run", overwrite=True, threads=args.threads,
        )  # fmt: skip
        print(f"fine-tune to {minutes:g} min: {'refused' if out is None else out} ({time.time() - t0:.0f} s)")
        if out is not None:
            models[f"tuned {minutes:g} min"] = PIUNetInverse(out, precision="float32")
    if args.single:
        for label in list(models):
            alone = PIUNetInverse(models[label].weights_path, precision="float32")
            alone.predict_grid = _centre_alone(alone.predict_grid)
            models[f"{label} (single map)"] = alone
    rows = finetune_benefit(models, fwd, inv, n_per_cell=args.n)
    write_csv(rows, args.out / "finetune_benefit.csv")
    print(methods_table(rows))
    for by in (("snr_db",), ("n_sources",)):
        print()
        print(methods_table(rows, by=by))


if __name__ == "__main__":
    main()
