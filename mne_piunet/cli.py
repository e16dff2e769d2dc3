"""The ``mne-piunet`` command: argument parsing and dispatch to the library.

Each subcommand has an ``_add_<command>`` function that declares its options
and a handler, set as ``func``, that calls the library and prints its report.
"""

# License: BSD-3-Clause

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .inference import PRECISIONS
from .utils._defaults import DEFAULT_LAMBDA2, N_SOURCES_SWEEP

DESCRIPTION = "``mne-piunet``: demo, apply, train, fine-tune, blend, validate, evaluate, benchmark, bench-data, bench-speed."


def _demo(args: argparse.Namespace) -> dict[str, float]:
    from . import PIUNetInverse
    from .evaluation import localise_demo
    from .report import demo_summary, plot_demo

    print("Building the offline template (cached after the first run) ...", flush=True)
    piu = PIUNetInverse(args.weights)
    result = localise_demo(piu, args.montage, args.snr)
    print(demo_summary(result))
    plot_demo(result, piu).savefig(args.out, dpi=90)
    print(f"Figure written to {args.out}")
    return result.errors


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="simulate a source on the template; compare dSPM, sLORETA, eLORETA, PIUNet"
    )
    p.add_argument("-o", "--out", default="piunet_demo.png", help="figure path")
    p.add_argument("--montage", default="biosemi64")
    p.add_argument("--snr", type=float, default=10.0, help="SNR in dB at the peak")
    p.add_argument("--weights", default=None)
    p.set_defaults(func=_demo)


def _apply(args: argparse.Namespace) -> None:
    import mne

    from . import PIUNetInverse

    baseline = tuple(args.baseline) if args.baseline else None
    evoked = mne.read_evokeds(args.evoked, condition=args.condition, baseline=baseline)
    inv = mne.minimum_norm.read_inverse_operator(args.inverse)
    piu = PIUNetInverse(args.weights, device=args.device, precision=args.precision)
    stc = piu.apply(evoked, inv, args.lambda2, pick_ori=args.pick_ori)
    stc.save(args.out, overwrite=True)
    print(f"Wrote {args.out} ({type(stc).__name__}, {stc.data.shape[0]} sources, {len(stc.times)} times)")


def _add_apply(sub) -> None:
    p = sub.add_parser("apply", help="PIUNet estimate of an evoked file, written as -vl.stc")
    p.add_argument("evoked", help="-ave.fif file")
    p.add_argument("inverse", help="-inv.fif file")
    p.add_argument("-o", "--out", required=True, help="output stem (writes OUT-vl.stc)")
    p.add_argument("--condition", default=0, type=lambda c: int(c) if c.isdigit() else c)
    p.add_argument("--baseline", nargs=2, type=float, default=None, metavar=("TMIN", "TMAX"))
    p.add_argument("--lambda2", type=float, default=DEFAULT_LAMBDA2)
    p.add_argument("--pick-ori", choices=["vector"], default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the network's arithmetic")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_apply)


def _train(args: argparse.Namespace) -> None:
    from .training import TrainConfig, default_config_path, train

    config = TrainConfig.from_json(args.config or default_config_path())
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    best = train(config, args.out, init=args.init)
    print(f"Best weights: {best}")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a model from a JSON config")
    p.add_argument("--config", default=None, help="JSON config (default: the one of the bundled model)")
    p.add_argument("--out", required=True, help="output folder (log, checkpoint, best.pt)")
    p.add_argument("--init", default=None, help="weights to fine-tune from")
    p.add_argument("--max-minutes", type=float, default=None)
    p.set_defaults(func=_train)


def _fine_tune(args: argparse.Namespace) -> int | None:
    from .finetune import fine_tune

    out = fine_tune(
        args.inv, args.fwd, out=args.out, minutes=args.minutes, weights=args.weights, lambda2=args.lambda2,
        subjects_dir=args.subjects_dir, run_dir=args.run_dir, overwrite=args.overwrite, seed=args.seed,
        device=args.device, threads=args.threads,
    )  # fmt: skip
    if out is None:
        print("The fine-tuned weights validated no better than the starting ones; nothing was written.")
        return 1
    print(f"Fine-tuned weights: {out} (use them with PIUNetInverse({str(out)!r}) and this inverse)")


def _add_fine_tune(sub) -> None:
    p = sub.add_parser("fine-tune", help="adapt the bundled model to your own forward model and inverse")
    p.add_argument("--fwd", required=True, help="-fwd.fif file (with EEG) the inverse was made from")
    p.add_argument("--inv", required=True, help="-inv.fif file")
    p.add_argument("-o", "--out", required=True, help="output .pt (its JSON is written beside it)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget; a larger one resumes")
    p.add_argument("--weights", default=None, help="weights to start from (default: the bundled ones)")
    p.add_argument("--lambda2", type=float, default=DEFAULT_LAMBDA2)
    p.add_argument("--subjects-dir", default=None, help="where the subject's talairach.xfm is found")
    p.add_argument(
        "--run-dir", default=None, help="log and checkpoint folder (default: OUT without .pt + _run)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_fine_tune)


def _blend(args: argparse.Namespace) -> None:
    from .training import blend_weights

    out = blend_weights(args.first, args.second, args.alpha, args.out)
    print(
        f"Wrote {out} and {out.with_suffix('.json')}: "
        f"(1 - {args.alpha:g}) x {args.first} + {args.alpha:g} x {args.second}"
    )


def _add_blend(sub) -> None:
    p = sub.add_parser("blend", help="interpolate a model's weights with those of its fine-tune")
    p.add_argument("first", help="weights (.pt) before fine-tuning")
    p.add_argument("second", help="weights (.pt) after fine-tuning")
    p.add_argument("--alpha", type=float, required=True, help="weight of SECOND, in [0, 1]")
    p.add_argument("--out", required=True, help="output .pt (its JSON is written beside it)")
    p.set_defaults(func=_blend)


def _validate(args: argparse.Namespace) -> None:
    from .report import validation_table
    from .training import TrainConfig, default_config_path, validate_by_sources

    config = TrainConfig.from_json(args.config or default_config_path())
    seed = {} if args.seed is None else dict(seed=args.seed)
    res = validate_by_sources(args.weights, config, tuple(args.sources), n_per_setup=args.n, **seed)
    print(
        f"Mean NEMD (16 mm cells) on the validation setups, {args.n} samples per setup and number of sources"
    )
    print(validation_table(res))


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="NEMD per number of sources on a config's validation setups")
    p.add_argument("weights", nargs="+", help="weight files (.pt) to compare")
    p.add_argument("--config", default=None, help="JSON config whose val_setups and prior to use")
    p.add_argument("--sources", type=int, nargs="+", default=list(N_SOURCES_SWEEP))
    p.add_argument("--n", type=int, default=12, help="samples per validation setup and number of sources")
    p.add_argument("--seed", type=int, default=None, help="default: a stream apart from training's")
    p.set_defaults(func=_validate)


def _evaluate(args: argparse.Namespace) -> None:
    from . import PIUNetInverse
    from .report import run_evaluation

    piu = PIUNetInverse(args.weights, precision=args.precision)
    print(run_evaluation(piu, out=args.out, quick=args.quick, seed=args.seed))


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="eLORETA vs PIUNet on held-out heads and montages")
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the network's arithmetic")
    p.add_argument("--quick", action="store_true", help="a small sweep (minutes)")
    p.add_argument("--out", default=None, help="folder for evaluation.csv")
    p.add_argument("--seed", type=int, default=1234)
    p.set_defaults(func=_evaluate)


def _benchmark(args: argparse.Namespace) -> None:
    import time

    from . import PIUNetInverse
    from .evaluation import benchmark_cells, run_benchmark
    from .report import benchmark_header, write_benchmark

    n = args.n if args.n is not None else (2 if args.quick else 10)
    t0 = time.perf_counter()
    piu = PIUNetInverse(args.weights)
    cells = benchmark_cells(args.quick)
    rows = run_benchmark(piu, cells, n_per_cell=n, seed=args.seed, methods=tuple(args.methods))
    header = benchmark_header(n, args.seed, args.quick, time.perf_counter() - t0)
    summary, written = write_benchmark(rows, args.out, header)
    print(summary)
    print(f"\nWrote {written[0]}, {written[1]} and " + ", ".join(str(p) for p in written[2:]))


def _add_benchmark(sub) -> None:
    from .evaluation import METHODS

    p = sub.add_parser(
        "benchmark", help="MNE, dSPM, sLORETA, eLORETA, MxNE, Gamma-MAP and PIUNet on the same simulations"
    )
    p.add_argument(
        "--quick", action="store_true", help="two values per sweep, sphere head: a smoke run (minutes)"
    )
    p.add_argument("--out", default="piunet-benchmark", help="folder for scores.csv, summary.md and plots")
    p.add_argument("--n", type=int, default=None, help="samples per condition (default 10; 2 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    p.add_argument("--weights", default=None)
    p.set_defaults(func=_benchmark)


def _bench_data(args: argparse.Namespace) -> None:
    from .speed import bench_generation

    for space, rate in bench_generation(args.montage).items():
        print(f"{args.montage} {space}: {rate:,.0f} samples/s")


def _add_bench_data(sub) -> None:
    p = sub.add_parser("bench-data", help="samples per second of the simulation engine")
    p.add_argument("--montage", default="biosemi64")
    p.set_defaults(func=_bench_data)


def _bench_speed(args: argparse.Namespace) -> None:
    from .report import profile_summary, speed_summary
    from .speed import bench_speed, profile_forward

    res = bench_speed(args.weights, args.montage, n_epochs=args.epochs, raw_minutes=args.raw_minutes)
    print(speed_summary(res, args.montage, args.epochs, args.raw_minutes))
    if args.frontier:
        from .grid import get_grid
        from .report import frontier_summary
        from .speed import frontier_costs

        print(frontier_summary(frontier_costs(get_grid())))
    if args.profile:
        from . import PIUNetInverse

        piu = PIUNetInverse(args.weights)
        print(profile_summary(profile_forward(piu.network, piu.grid, piu.dtype), res["precision"]))


def _add_bench_speed(sub) -> None:
    p = sub.add_parser("bench-speed", help="eLORETA vs PIUNet run time; apply_raw memory")
    p.add_argument("--montage", default="biosemi64")
    p.add_argument(
        "--raw-minutes", type=float, default=10.0, help="length of the Raw for apply_raw (0: skip)"
    )
    p.add_argument("--epochs", type=int, default=200, help="number of 1-s epochs")
    p.add_argument("--profile", action="store_true", help="also time the network's forward pass by part")
    p.add_argument(
        "--frontier", action="store_true", help="also time the candidate architectures' forward pass"
    )
    p.add_argument("--weights", default=None)
    p.set_defaults(func=_bench_speed)


_SUBCOMMANDS = (
    _add_demo, _add_apply, _add_train, _add_fine_tune, _add_blend, _add_validate, _add_evaluate, _add_benchmark,
    _add_bench_data, _add_bench_speed,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``mne-piunet`` argument parser.

    Returns
    -------
    parser : argparse.ArgumentParser
        One subcommand per command; each sets ``func``, its handler.
    """
    parser = argparse.ArgumentParser(prog="mne-piunet", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mne-piunet`` command.

    Parameters
    ----------
    argv : list of str | None
        The arguments; ``None`` means ``sys.argv[1:]``.

    Returns
    -------
    code : int
        The exit status: 0, or 1 when a command did not do its job (a
        fine-tune whose weights validated no better). Bad input exits with
        status 2 and the library's message.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)  # demo returns its errors (for the deprecated demo()); others None or 1
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        # bad input: the library's message names the problem and the fix; no traceback
        parser.exit(2, f"mne-piunet {args.command}: error: {exc}\n")
    return code if isinstance(code, int) else 0


# --------------------------------------------------------------------------------------------------
# Deprecated names, kept for one release


def _legacy_demo(
    out: str | Path = "piunet_demo.png", montage: str = "biosemi64", snr_db: float = 10.0, weights=None
) -> dict[str, float]:
    """The old ``demo`` function: ``mne-piunet demo`` with these options; returns the errors (mm)."""
    return _demo(argparse.Namespace(out=out, montage=montage, snr=snr_db, weights=weights))


_DEPRECATED = {
    "simulate_demo_evoked": "mne_piunet.simulation.simulate_demo_evoked",
    "DEMO_SOURCE_POS": "mne_piunet.simulation.DEMO_SOURCE_POS",
    "demo": "mne_piunet.evaluation.localise_demo and mne_piunet.report.plot_demo",
}


def __getattr__(name: str):
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"mne_piunet.cli.{name} is deprecated and will be removed in mne-piunet 0.3; "
        f"use {_DEPRECATED[name]} instead.",
        FutureWarning,
        stacklevel=2,
    )
    if name == "demo":
        return _legacy_demo
    from . import simulation

    return getattr(simulation, name)


if __name__ == "__main__":
    sys.exit(main())
