"""The "mne-piunet" command: argument parsing and dispatch to the library.

Each subcommand has an "_add_<command>" function that declares its options
and a handler, set as "func", that calls the library and prints its report.
"""

# License: BSD-3-Clause

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._cache import CacheFolderError
from .inference import PRECISIONS
from .utils._defaults import DEFAULT_LAMBDA2, N_SOURCES_SWEEP

DESCRIPTION = "PIUNet, a learned EEG/MEG inverse for MNE-Python (3D-PIUNet)."
#: The commands' groups, as the top-level help lists them.
USER_COMMANDS = ("demo", "apply", "fine-tune", "cache")
DEVELOPER_COMMANDS = (
    "train",
    "validate",
    "blend",
    "report",
    "experiment",
    "evaluate",
    "benchmark",
    "bench-data",
    "bench-train",
    "bench-speed",
    "peak-floor",
    "bench-finetune",
)
EPILOG = (
    f"Commands for users: {', '.join(USER_COMMANDS)}.\n"
    f"Commands for the model's developers: {', '.join(DEVELOPER_COMMANDS)}.\n"
    "Run 'mne-piunet COMMAND --help' for a command's options."
)


def _demo(args: argparse.Namespace) -> None:
    from . import PIUNetInverse
    from .demo import demo_summary, localise_demo, plot_demo

    print("Building the offline template (cached after the first run) ...", flush=True)
    piu = PIUNetInverse(args.weights)
    result = localise_demo(piu, args.montage, args.snr)
    print(demo_summary(result))
    plot_demo(result, piu).savefig(args.out, dpi=90)
    print(f"Figure written to {args.out}")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="simulate a source on the template; compare dSPM, sLORETA, eLORETA, PIUNet"
    )
    p.add_argument("-o", "--out", default="piunet_demo.png", help="figure path")
    p.add_argument("--montage", default="biosemi64", help="an MNE built-in EEG montage")
    p.add_argument("--snr", type=float, default=10.0, help="SNR in dB at the peak")
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.set_defaults(func=_demo)


def _read_evoked(fname: str, condition, baseline):
    """The one Evoked a file holds, or the one "condition" names; errors list the file's conditions."""
    import mne

    try:
        evokeds = mne.read_evokeds(fname, baseline=baseline, verbose=False)
    except Exception as err:  # MNE raises ValueError, KeyError or OSError for a file of another kind
        raise ValueError(
            f"{fname} is not an evoked file ({type(err).__name__}: {err}). Pass an -ave.fif written by "
            "evoked.save or mne.write_evokeds first, then the -inv.fif (mne-piunet apply EVOKED INVERSE)."
        ) from None
    listing = ", ".join(f"{i}: {e.comment!r}" for i, e in enumerate(evokeds))
    if condition is None:
        if len(evokeds) > 1:
            raise ValueError(
                f"{fname} holds {len(evokeds)} conditions ({listing}): pick one with --condition "
                "(its index or its name)."
            )
        return evokeds[0]
    if isinstance(condition, int):
        if not 0 <= condition < len(evokeds):
            raise ValueError(f"--condition {condition} is out of range: {fname} holds {listing}.")
        return evokeds[condition]
    named = [e for e in evokeds if e.comment == condition]
    if not named:
        raise ValueError(f"{fname} has no condition {condition!r}: it holds {listing}.")
    return named[0]


def _read_inverse(fname: str):
    import mne

    try:
        return mne.minimum_norm.read_inverse_operator(fname, verbose=False)
    except Exception as err:  # MNE raises ValueError, KeyError or OSError for a file of another kind
        raise ValueError(
            f"{fname} is not an inverse operator file ({type(err).__name__}: {err}). Pass an -inv.fif "
            "written by mne.minimum_norm.write_inverse_operator (not a forward or covariance file), after "
            "the -ave.fif (mne-piunet apply EVOKED INVERSE)."
        ) from None


def _output_name(out: str, vector: bool) -> Path:
    """The file "stc.save(out)" writes: MNE adds "-vl.stc" ("-vl.h5" for vectors) to the stem."""
    stem = str(out)
    for ending in ("-vl.stc", "-vl.h5", ".stc", ".h5"):
        if stem.endswith(ending):
            stem = stem[: -len(ending)]
            break
    return Path(stem + ("-vl.h5" if vector else "-vl.stc"))


def _apply(args: argparse.Namespace) -> None:
    from . import PIUNetInverse

    vector = args.pick_ori == "vector"
    out = _output_name(args.out, vector)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or choose another -o.")
    baseline = tuple(args.baseline) if args.baseline else None
    evoked = _read_evoked(args.evoked, args.condition, baseline)
    inv = _read_inverse(args.inverse)
    piu = PIUNetInverse(args.weights, device=args.device, precision=args.precision)
    stc = piu.apply(evoked, inv, args.lambda2, pick_ori=args.pick_ori)
    written = stc.save(out, ftype="h5" if vector else "stc", overwrite=True, verbose=False)
    written = out if written is None else Path(written)
    print(f"Wrote {written} ({type(stc).__name__}, {stc.data.shape[0]} sources, {len(stc.times)} times)")


def _time_or_none(text: str) -> float | None:
    """A time in seconds, or None (written "None"), as MNE's "baseline" takes."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time in seconds or None, got {text!r}") from None


def _add_apply(sub) -> None:
    p = sub.add_parser("apply", help="PIUNet estimate of an evoked file, written as OUT-vl.stc")
    p.add_argument("evoked", help="-ave.fif file")
    p.add_argument("inverse", help="-inv.fif file")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="output stem: writes OUT-vl.stc (amplitudes) or OUT-vl.h5 (--pick-ori vector)",
    )
    p.add_argument(
        "--condition",
        default=None,
        type=lambda c: int(c) if c.isdigit() else c,
        help="the evoked to localise, by index or name (needed when the file holds several)",
    )
    p.add_argument(
        "--baseline",
        nargs=2,
        type=_time_or_none,
        default=None,
        metavar=("TMIN", "TMAX"),
        help="baseline interval (s); None for the start or the end of the data, e.g. --baseline None 0",
    )
    p.add_argument(
        "--lambda2", type=float, default=DEFAULT_LAMBDA2, help="eLORETA's regularisation (default 1/9)"
    )
    p.add_argument(
        "--pick-ori",
        choices=["vector"],
        default=None,
        help="write moment vectors (HDF5) instead of amplitudes",
    )
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the network's arithmetic")
    p.add_argument("--device", default="auto", help='"auto" (CUDA when available), "cpu" or "cuda"')
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_apply)


def _cache(args: argparse.Namespace) -> None:
    from ._cache import cache_dir, cache_size, clear_cache

    if args.clear:
        freed = clear_cache()
        print(f"Removed {freed / 1e6:.0f} MB from {cache_dir()}")
        return
    print(f"{cache_dir()}: {cache_size() / 1e6:.0f} MB (set MNE_PIUNET_CACHE to move it; --clear empties it)")


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="show where the template cache lives and its size, or clear it")
    p.add_argument("--clear", action="store_true", help="delete everything in it (rebuilt when needed)")
    p.set_defaults(func=_cache)


def _train(args: argparse.Namespace) -> None:
    from .network import bundled_weights_path
    from .train.training import read_config, train

    config = read_config(args.config or "train")
    for name in ("max_minutes", "device", "precision", "data_workers", "threads"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    init = bundled_weights_path() if args.init == "bundled" else args.init
    if args.background:
        return _train_in_background(args)
    best = train(config, args.out, init=init)
    print(f"Best weights: {best}")


def _train_in_background(args: argparse.Namespace) -> None:
    """Start the same "train" command as a detached process; print how to follow and stop it."""
    import subprocess

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # argparse accepts any prefix of an option: drop them all, or the child detaches again
    argv = [a for a in args.argv if not (a.startswith("--b") and "--background".startswith(a))]
    with open(out / "train.out", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mne_piunet.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (out / "train.pid").write_text(f"{proc.pid}\n")
    print(
        f"Training in the background, process {proc.pid}: log {out / 'train.log'} (output {out / 'train.out'}).\n"
        f"Stop it at any time with: kill {proc.pid}  (it finishes its step, validates and exports "
        f"{out / 'final.pt'}; {out / 'latest.pt'} is rewritten at every checkpoint). Run the same command "
        "again to resume."
    )


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a model from a JSON config")
    p.add_argument(
        "--config",
        default=None,
        help="JSON config, or a bundled one's name: train (default, from scratch), continue, gpu, ...",
    )
    p.add_argument("--out", required=True, help="output folder (log, checkpoints, latest.pt, best.pt)")
    p.add_argument("--init", default=None, help='weights to fine-tune from ("bundled": the shipped ones)')
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget (overrides the config)")
    p.add_argument("--device", default=None, help='"auto", "cpu" or "cuda" (overrides the config)')
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="arithmetic of the network's steps (overrides the config; auto: bf16 where native)",
    )
    p.add_argument(
        "--data-workers", type=int, default=None, help="simulation processes (overrides the config)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (overrides the config)")
    p.add_argument(
        "--background",
        action="store_true",
        help="detach: train in a background process that a plain kill stops cleanly",
    )
    p.set_defaults(func=_train)


def _fine_tune(args: argparse.Namespace) -> int | None:
    from .train.finetune import fine_tune

    out = fine_tune(
        args.inv,
        args.fwd,
        out=args.out,
        minutes=args.minutes,
        weights=args.weights,
        lambda2=args.lambda2,
        subjects_dir=args.subjects_dir,
        run_dir=args.run_dir,
        overwrite=args.overwrite,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    if out is None:
        print(
            "The fine-tuned weights failed the acceptance check (the warning lists its groups); nothing was written."
        )
        return 1
    print(f"Fine-tuned weights: {out} (use them with PIUNetInverse({str(out)!r}) and this inverse)")


def _add_fine_tune(sub) -> None:
    p = sub.add_parser("fine-tune", help="adapt the bundled model to your own forward model and inverse")
    p.add_argument("--fwd", required=True, help="-fwd.fif file (EEG, MEG or both) the inverse was made from")
    p.add_argument("--inv", required=True, help="-inv.fif file")
    p.add_argument("-o", "--out", required=True, help="output .pt (its JSON is written beside it)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget; a larger one resumes")
    p.add_argument("--weights", default=None, help="weights to start from (default: the bundled ones)")
    p.add_argument(
        "--lambda2", type=float, default=DEFAULT_LAMBDA2, help="eLORETA's regularisation (default 1/9)"
    )
    p.add_argument("--subjects-dir", default=None, help="where the subject's talairach.xfm is found")
    p.add_argument(
        "--run-dir", default=None, help="log and checkpoint folder (default: OUT without .pt + _run)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulations")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help='"auto" (CUDA when available), "cpu" or "cuda"')
    p.set_defaults(func=_fine_tune)


def _blend(args: argparse.Namespace) -> None:
    from .train.training import blend_weights

    out = blend_weights(args.first, args.second, args.alpha, args.out)
    print(
        f"Wrote {out} and {out.with_suffix('.json')}: "
        f"(1 - {args.alpha:g}) x {args.first} + {args.alpha:g} x {args.second}"
    )


def _bench_finetune(args: argparse.Namespace) -> None:
    import mne

    from . import PIUNetInverse
    from .bench.evaluation import finetune_benefit, user_style_models
    from .bench.report import methods_table, write_csv
    from .train.finetune import fine_tune

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fwd_file, inv_file = out / "user-fwd.fif", out / "user-inv.fif"
    if not inv_file.exists():  # written and read back, as a user's files are
        fwd, inv = user_style_models(
            args.montage, tuple(args.conductivity), loose="fixed" if args.fixed else 0.2
        )
        mne.write_forward_solution(fwd_file, fwd, overwrite=True)
        mne.minimum_norm.write_inverse_operator(inv_file, inv, overwrite=True)
    fwd, inv = mne.read_forward_solution(fwd_file), mne.minimum_norm.read_inverse_operator(inv_file)
    start = PIUNetInverse(args.weights, precision="float32")
    models = {"start": start}
    for minutes in sorted(args.minutes):  # each budget resumes the same run: 30 minutes cost 30, not 40
        tuned = fine_tune(
            inv_file,
            fwd_file,
            out=out / f"tuned_{minutes:g}min.pt",
            minutes=minutes,
            weights=start.weights_path,
            run_dir=out / "run",
            overwrite=True,
            threads=args.threads,
        )
        print(f"fine-tune to {minutes:g} min: {'refused' if tuned is None else tuned}")
        if tuned is not None:
            models[f"tuned {minutes:g} min"] = PIUNetInverse(tuned, precision="float32")
    rows = finetune_benefit(models, fwd, inv, n_per_cell=args.n)
    if args.single:
        single = finetune_benefit(models, fwd, inv, n_per_cell=args.n, single=True)
        rows += [dict(r, method=f"{r['method']} (single map)") for r in single]
    print(f"\nWrote {write_csv(rows, out / 'finetune_benefit.csv')}\n")
    for by in (("snr_db", "n_sources"), ("snr_db",), ("n_sources",)):
        print(methods_table(rows, by=by) + "\n")


def _add_bench_finetune(sub) -> None:
    from .bench.evaluation import USER_STYLE_HEAD

    p = sub.add_parser(
        "bench-finetune", help="what fine-tuning buys on a user-style head the bundled model never saw"
    )
    p.add_argument(
        "out", help="folder for the user's forward and inverse, the run, the tuned weights and scores"
    )
    p.add_argument(
        "minutes", type=float, nargs="*", default=[10.0, 30.0], help="fine-tune budgets (default 10 30)"
    )
    p.add_argument("--weights", default=None, help="weights to start from (default: the bundled model)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the fine-tune")
    p.add_argument("--n", type=int, default=20, help="samples per SNR and number of sources")
    p.add_argument("--montage", default=USER_STYLE_HEAD["montage"], help="the montage digitised with jitter")
    p.add_argument(
        "--conductivity",
        type=float,
        nargs=3,
        default=USER_STYLE_HEAD["conductivity"],
        metavar=("BRAIN", "SKULL", "SCALP"),
        help="the user's head model (S/m)",
    )
    p.add_argument("--fixed", action="store_true", help="a fixed-orientation inverse (default: loose 0.2)")
    p.add_argument("--single", action="store_true", help="also score every model on single maps")
    p.set_defaults(func=_bench_finetune)


def _add_blend(sub) -> None:
    p = sub.add_parser("blend", help="interpolate a model's weights with those of its fine-tune")
    p.add_argument("first", help="weights (.pt) before fine-tuning")
    p.add_argument("second", help="weights (.pt) after fine-tuning")
    p.add_argument("--alpha", type=float, required=True, help="weight of SECOND, in [0, 1]")
    p.add_argument("--out", required=True, help="output .pt (its JSON is written beside it)")
    p.set_defaults(func=_blend)


def _validate(args: argparse.Namespace) -> None:
    from .bench.report import validation_table
    from .train.training import read_config, validate_by_sources

    config = read_config(args.config or "train")
    seed = {} if args.seed is None else dict(seed=args.seed)
    res = validate_by_sources(args.weights, config, tuple(args.sources), n_per_setup=args.n, **seed)
    print(
        f"Mean NEMD (16 mm cells) on the validation setups, {args.n} samples per setup and number of sources"
    )
    print(validation_table(res))


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="NEMD per number of sources on a config's validation setups")
    p.add_argument("weights", nargs="+", help="weight files (.pt) to compare")
    p.add_argument(
        "--config",
        default=None,
        help="a bundled config's name or a JSON file whose val_setups and prior to use",
    )
    p.add_argument(
        "--sources", type=int, nargs="+", default=list(N_SOURCES_SWEEP), help="numbers of sources to score"
    )
    p.add_argument("--n", type=int, default=12, help="samples per validation setup and number of sources")
    p.add_argument("--seed", type=int, default=None, help="default: a stream apart from training's")
    p.set_defaults(func=_validate)


def _evaluate(args: argparse.Namespace) -> None:
    from .bench.report import run_evaluation

    print(run_evaluation(args.weights, out=args.out, quick=args.quick))


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="eLORETA vs PIUNet as the model card reports them")
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.add_argument("--quick", action="store_true", help="a small sweep (minutes)")
    p.add_argument("--out", default=None, help="folder for evaluation.csv")
    p.set_defaults(func=_evaluate)


def _report(args: argparse.Namespace) -> None:
    from .bench.report import headline_report

    text, _ = headline_report(args.weights, args.n, args.quick, args.out, args.real_data)
    print(text)
    print(f"\nWrote {Path(args.out) / 'headline.md'}, headline.json and scores.csv")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="the headline evaluation the README quotes: held-out heads, sensor types, benchmark"
    )
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.add_argument("--n", type=int, default=None, help="samples per cell (default: each experiment's own)")
    p.add_argument("--quick", action="store_true", help="a smoke run: one setup and two values per factor")
    p.add_argument(
        "--out", default="piunet-report", help="folder for headline.md, headline.json and scores.csv"
    )
    p.add_argument(
        "--real-data",
        default=None,
        metavar="DIR",
        help="folder with MNE's test-ave.fif.gz and test-cov.fif: adds the P100's steadiness on real MEG",
    )
    p.set_defaults(func=_report)


def _experiment(args: argparse.Namespace) -> None:
    from .bench.experiments import EXPERIMENTS, run_experiment
    from .bench.report import methods_table, write_csv

    rows = run_experiment(args.name, args.weights, args.n, args.quick, single=True if args.single else None)
    print(methods_table(rows, by=EXPERIMENTS[args.name].table))
    if args.out is not None:
        print(f"\nWrote {write_csv(rows, args.out)}")


def _add_experiment(sub) -> None:
    from .bench.experiments import EXPERIMENTS

    p = sub.add_parser(
        "experiment", help="one named experiment of the docs: mean NEMD and peak error per cell"
    )
    p.add_argument("name", choices=list(EXPERIMENTS), help="the experiment")
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.add_argument("--n", type=int, default=None, help="samples per cell (default: the experiment's own)")
    p.add_argument("--quick", action="store_true", help="a smoke run: one setup and two values per factor")
    p.add_argument("--single", action="store_true", help="score single maps, whatever the experiment says")
    p.add_argument("--out", default=None, help="CSV file for every sample's scores")
    p.set_defaults(func=_experiment)


def _benchmark(args: argparse.Namespace) -> None:
    import time

    from .bench.experiments import run_experiment
    from .bench.report import benchmark_header, write_benchmark

    n = args.n if args.n is not None else (2 if args.quick else 10)
    t0 = time.perf_counter()
    rows = run_experiment("benchmark", args.weights, n, args.quick, methods=tuple(args.methods))
    header = benchmark_header(n, args.quick, time.perf_counter() - t0, tuple(args.methods))
    summary, written = write_benchmark(rows, args.out, header)
    print(summary)
    print(f"\nWrote {written[0]}, {written[1]} and " + ", ".join(str(p) for p in written[2:]))


def _add_benchmark(sub) -> None:
    from .bench.evaluation import BENCHMARK_METHODS, METHODS

    p = sub.add_parser(
        "benchmark", help="MNE, dSPM, sLORETA, eLORETA, MxNE, Gamma-MAP and PIUNet on the same simulations"
    )
    p.add_argument(
        "--quick", action="store_true", help="two values per sweep, sphere head: a smoke run (minutes)"
    )
    p.add_argument("--out", default="piunet-benchmark", help="folder for scores.csv, summary.md and plots")
    p.add_argument("--n", type=int, default=None, help="samples per condition (default 10; 2 with --quick)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(BENCHMARK_METHODS),
        choices=METHODS,
        metavar="METHOD",
        help=f"of {', '.join(METHODS)} (default: {', '.join(BENCHMARK_METHODS)}; MxNE-SURE, MNE's default alpha search, is about 10x slower than MxNE; the peers need the [peers] extra)",
    )
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.set_defaults(func=_benchmark)


def _bench_data(args: argparse.Namespace) -> None:
    from .bench.speed import bench_generation

    for space, rate in bench_generation(args.montage, n=args.samples, spaces=tuple(args.spaces)).items():
        print(f"{args.montage} {space}: {rate:,.0f} samples/s")


def _add_bench_data(sub) -> None:
    p = sub.add_parser("bench-data", help="samples per second of the simulation engine")
    p.add_argument("--montage", default="biosemi64", help="an MNE built-in EEG montage")
    p.add_argument("--samples", type=int, default=4096, help="samples timed per source space")
    p.add_argument(
        "--spaces",
        nargs="+",
        choices=["volume", "surface"],
        default=["volume", "surface"],
        help="source spaces of the inverses timed",
    )
    p.set_defaults(func=_bench_data)


def _bench_train(args: argparse.Namespace) -> None:
    from .network import bundled_weights_path
    from .train.throughput import bench_training, profile_train_step
    from .train.training import read_config

    config = read_config(args.config)
    init = bundled_weights_path() if args.init == "bundled" else args.init
    print("| threads | precision | data workers | samples/s |\n| --- | --- | --- | --- |")
    for row in bench_training(config, init, n_steps=args.steps):
        print(
            f"| {row['threads']} | {row['precision']} | {row['data_workers']} | {row['samples_per_s']:.1f} |"
        )
    if args.profile:
        ms = profile_train_step(config, init, n_steps=args.steps)
        print(
            f"\nOne step of {config.batch_size} samples by part ({config.precision}, {config.threads} thread(s)), ms:"
        )
        print("| part | ms | share |\n| --- | --- | --- |")
        for part, value in ms.items():
            print(f"| {part} | {value:.1f} | {value / ms['total']:.0%} |")


def _add_bench_train(sub) -> None:
    p = sub.add_parser("bench-train", help="training samples per second: threads, precision, data workers")
    p.add_argument("--config", default="continue", help="a bundled config's name or a JSON file")
    p.add_argument("--init", default="bundled", help='weights to start from ("bundled": the shipped ones)')
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--profile", action="store_true", help="also time one step by part")
    p.set_defaults(func=_bench_train)


def _bench_speed(args: argparse.Namespace) -> None:
    from .bench.report import profile_summary, speed_summary
    from .bench.speed import bench_speed, profile_forward

    res = bench_speed(
        args.weights,
        args.montage,
        n_epochs=args.epochs,
        raw_minutes=args.raw_minutes,
        first_call=args.first_call,
    )
    print(speed_summary(res, args.montage, args.epochs, args.raw_minutes))
    if args.frontier:
        from .bench.report import frontier_summary
        from .bench.speed import frontier_costs
        from .grid import get_grid

        print(frontier_summary(frontier_costs(get_grid())))
    if args.profile:
        from . import PIUNetInverse

        piu = PIUNetInverse(args.weights)
        print(profile_summary(profile_forward(piu.network, piu.grid, piu.dtype), res["precision"]))


def _peak_floor(args: argparse.Namespace) -> None:
    from .bench.evaluation import PEAK_FLOOR_MAPS, peak_floor
    from .bench.experiments import HELD_OUT_SETUPS
    from .bench.report import peak_floor_table
    from .inverse import PIUNetInverse

    rows = peak_floor(PIUNetInverse(args.weights), HELD_OUT_SETUPS, tuple(args.snrs), args.n)
    print(peak_floor_table(rows, PEAK_FLOOR_MAPS))


def _add_peak_floor(sub) -> None:
    p = sub.add_parser(
        "peak-floor", help="peak error against the true source: the 8 mm grid's floor, eLORETA and PIUNet"
    )
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.add_argument("--snrs", type=float, nargs="+", default=[5.0, 20.0], help="SNRs (dB)")
    p.add_argument("--n", type=int, default=20, help="single-source time courses per setup and SNR")
    p.set_defaults(func=_peak_floor)


def _add_bench_speed(sub) -> None:
    p = sub.add_parser("bench-speed", help="eLORETA vs PIUNet run time; apply_raw memory")
    p.add_argument("--montage", default="biosemi64", help="an MNE built-in EEG montage")
    p.add_argument(
        "--raw-minutes", type=float, default=10.0, help="length of the Raw for apply_raw (0: skip)"
    )
    p.add_argument("--epochs", type=int, default=200, help="number of 1-s epochs")
    p.add_argument(
        "--first-call",
        action="store_true",
        help="also time a fresh model's first and second apply on a loose cortex inverse (eLORETA's fit, cached)",
    )
    p.add_argument("--profile", action="store_true", help="also time the network's forward pass by part")
    p.add_argument(
        "--frontier", action="store_true", help="also time the candidate architectures' forward pass"
    )
    p.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    p.set_defaults(func=_bench_speed)


_SUBCOMMANDS = (
    _add_demo,
    _add_apply,
    _add_fine_tune,
    _add_cache,  # users'
    _add_train,
    _add_validate,
    _add_blend,
    _add_report,
    _add_experiment,
    _add_evaluate,
    _add_benchmark,
    _add_bench_data,
    _add_bench_train,
    _add_bench_speed,
    _add_peak_floor,
    _add_bench_finetune,  # developers'
)


#: Commands whose progress is logged: they run at MNE's "info" level unless told otherwise.
_PROGRESS_COMMANDS = ("train", "fine-tune")


def build_parser() -> argparse.ArgumentParser:
    """The "mne-piunet" argument parser.

    Returns
    -------
    parser : argparse.ArgumentParser
        One subcommand per command; each sets "func", its handler.
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mne-piunet",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mne-piunet {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="MNE's logging level, which the library's messages share (default: info for train and "
        "fine-tune, which report their progress, warning for the others)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the "mne-piunet" command.

    Parameters
    ----------
    argv : list of str | None
        The arguments; "None" means "sys.argv[1:]".

    Returns
    -------
    code : int
        The exit status: 0, or 1 when a command did not do its job (a
        fine-tune whose weights its acceptance check refused). Bad input exits with
        status 2 and the library's message.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --background re-runs
    import mne

    level = args.log_level or ("info" if args.command in _PROGRESS_COMMANDS else "warning")
    try:
        with mne.utils.use_log_level(level):
            code = args.func(args)  # None, or 1 when a command did not do its job
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, CacheFolderError) as exc:
        # bad input: the library's message names the problem and the fix; no traceback
        parser.exit(2, f"mne-piunet {args.command}: error: {exc}\n")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
