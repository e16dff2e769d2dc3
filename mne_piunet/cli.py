"""``mne-piunet``: demo, apply, train, validate, blend, evaluate, benchmark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .inference import PRECISIONS

#: The demo's source: left superior temporal region (template MRI coordinates, m).
DEMO_SOURCE_POS = np.array([-0.052, -0.020, 0.006])


def simulate_demo_evoked(setup, snr_db: float = 10.0, sigma_mm: float = 10.0, seed: int = 0):
    """An Evoked from one Gaussian blob at :data:`DEMO_SOURCE_POS` with a 10 Hz burst.

    Returns the evoked and the true centre (m, template MRI coordinates).
    """
    import mne

    rng = np.random.default_rng(seed)
    centre = setup.pos[np.argmin(np.linalg.norm(setup.pos - DEMO_SOURCE_POS, axis=1))]
    d2 = np.sum((setup.pos - centre) ** 2, axis=1)
    profile = np.exp(-d2 / (2 * (sigma_mm * 1e-3) ** 2))
    ori = centre / np.linalg.norm(centre)  # roughly radial
    times = np.arange(0, 0.5, 1 / setup.info["sfreq"])
    course = 20e-9 * np.sin(2 * np.pi * 10 * times) * np.exp(-((times - 0.2) ** 2) / (2 * 0.06**2))
    moments = (profile[:, None] * ori[None]).reshape(-1) / np.linalg.norm(profile)
    clean = np.outer(setup.leadfield @ moments, course)
    # white noise whose level gives the requested SNR (paper's definition) at the peak
    peak = clean[:, np.argmax(np.abs(course))]
    noise_std = (peak - peak.mean()).std() / np.sqrt(10 ** (snr_db / 10))
    sensor = clean + rng.standard_normal(clean.shape) * noise_std
    evoked = mne.EvokedArray(sensor, setup.info, tmin=0.0, nave=1, verbose=False)
    return evoked, centre


def demo(
    out: str | Path = "piunet_demo.png", montage: str = "biosemi64", snr_db: float = 10.0, weights=None
) -> dict:
    """Simulate, localise with dSPM, sLORETA, eLORETA and PIUNet, plot, print errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mne
    from nilearn.plotting import plot_glass_brain

    from . import PIUNetInverse
    from .simulation import HeadSetup, prepare_setup

    print("Building the offline template (cached after the first run) ...", flush=True)
    piu = PIUNetInverse(weights)
    setup = prepare_setup(HeadSetup(montage), piu.grid)
    evoked, centre = simulate_demo_evoked(setup, snr_db)
    inv = setup.inverse_operator
    stcs = {
        m: mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, m, verbose=False)
        for m in ("dSPM", "sLORETA", "eLORETA")
    }
    stcs["PIUNet"] = piu.apply(evoked, inv, 1 / 9)
    # vertices of the free-orientation grid inverse are the grid's own (head frame -> template)
    pos = piu.grid.pos
    t_peak = evoked.times[np.argmax(np.sum(evoked.data**2, axis=0))]
    fig, axes = plt.subplots(len(stcs), 1, figsize=(8, 2.6 * len(stcs)))
    errors = {}
    print(
        f"True source at {np.round(centre * 1e3)} mm (MNI), SNR {snr_db} dB, {montage}; peak time {t_peak:.3f} s"
    )
    for ax, (name, stc) in zip(axes, stcs.items()):
        idx = stc.time_as_index(t_peak)[0]
        values = np.abs(stc.data[:, idx])
        errors[name] = float(np.linalg.norm(pos[np.argmax(values)] - centre) * 1e3)
        print(f"  {name:8s} localisation error {errors[name]:5.1f} mm")
        img = stc.copy().crop(t_peak, t_peak).as_volume(piu.src, mri_resolution=False)
        display = plot_glass_brain(
            img, axes=ax, display_mode="lyrz", title=f"{name}: {errors[name]:.0f} mm", cmap="hot",
            vmin=0, vmax=values.max(), threshold=0.25 * values.max(), plot_abs=True, symmetric_cbar=False, colorbar=False,
        )  # fmt: skip
        display.add_markers([centre * 1e3], marker_color="cyan", marker_size=40)
    fig.suptitle("Simulated source (cyan) and each method's map at the peak time")
    fig.savefig(out, dpi=90)
    print(f"Figure written to {out}")
    return errors


def _apply(args) -> None:
    import mne

    from . import PIUNetInverse

    evoked = mne.read_evokeds(
        args.evoked, condition=args.condition, baseline=tuple(args.baseline) if args.baseline else None
    )
    inv = mne.minimum_norm.read_inverse_operator(args.inverse)
    piu = PIUNetInverse(args.weights, device=args.device, precision=args.precision)
    stc = piu.apply(evoked, inv, args.lambda2, pick_ori=args.pick_ori)
    stc.save(args.out, overwrite=True)
    print(f"Wrote {args.out} ({type(stc).__name__}, {stc.data.shape[0]} sources, {len(stc.times)} times)")


def _train(args) -> None:
    from .training import TrainConfig, default_config_path, train

    config = TrainConfig.from_json(args.config or default_config_path())
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    best = train(config, args.out, init=args.init)
    print(f"Best weights: {best}")


def _blend(args) -> None:
    from .training import blend_weights

    out = blend_weights(args.first, args.second, args.alpha, args.out)
    print(
        f"Wrote {out} and {out.with_suffix('.json')}: (1 - {args.alpha:g}) x {args.first} + {args.alpha:g} x {args.second}"
    )


def _validate(args) -> None:
    from .training import TrainConfig, default_config_path, validate_by_sources

    config = TrainConfig.from_json(args.config or default_config_path())
    ks = tuple(args.sources)
    res = validate_by_sources(args.weights, config, ks, n_per_setup=args.n, seed=args.seed)
    print(
        f"Mean NEMD (16 mm cells) on the validation setups, {args.n} samples per setup and number of sources"
    )
    print(
        "| weights | "
        + " | ".join(f"{k} src" for k in ks)
        + " | "
        + " | ".join(f"ratio {k}" for k in ks)
        + " |"
    )
    print("|---|" + "---|" * 2 * len(ks))
    for name, by_k in res.items():
        ratios = [by_k[k] / res["eLORETA"][k] for k in ks]
        print(
            f"| {name} | "
            + " | ".join(f"{by_k[k]:.3f}" for k in ks)
            + " | "
            + " | ".join(f"{r:.2f}" for r in ratios)
            + " |"
        )


def _evaluate(args) -> None:
    from . import PIUNetInverse
    from .benchmark import run_evaluation

    piu = PIUNetInverse(args.weights, precision=args.precision)
    print(run_evaluation(piu, out=args.out, quick=args.quick, seed=args.seed))


def _benchmark(args) -> None:
    import time

    from . import PIUNetInverse
    from .benchmark import (
        benchmark_cells,
        benchmark_header,
        benchmark_summary,
        plot_benchmark,
        run_benchmark,
        write_csv,
    )

    n = args.n if args.n is not None else (2 if args.quick else 10)
    out = Path(args.out)
    t0 = time.perf_counter()
    piu = PIUNetInverse(args.weights)
    rows = run_benchmark(
        piu, benchmark_cells(args.quick), n_per_cell=n, seed=args.seed, methods=tuple(args.methods)
    )
    header = benchmark_header(n, args.seed, args.quick, time.perf_counter() - t0)
    summary = benchmark_summary(rows, header)
    write_csv(rows, out / "scores.csv")
    (out / "summary.md").write_text(summary + "\n")
    plots = plot_benchmark(rows, out)
    print(summary)
    print(f"\nWrote {out / 'scores.csv'}, {out / 'summary.md'} and " + ", ".join(str(p) for p in plots))


def _bench_speed(args) -> None:
    import platform

    from .speed import bench_speed, profile_forward

    res = bench_speed(args.weights, args.montage, n_epochs=args.epochs, raw_minutes=args.raw_minutes)
    print(f"{platform.machine()}, {res['threads']} torch threads, default precision {res['precision']}")
    print(f"{args.montage} at 250 Hz, fsaverage5 cortex inverse (fixed orientation):")
    print(
        f"  apply_epochs end to end: {res['epochs_ms_per_map']:.2f} ms per map ({res['precision']}), "
        f"{res['epochs_ms_per_map_fp32']:.2f} ms (float32)"
    )
    print(
        f"  network forward alone: {res['forward_ms_per_map']:.2f} ms per map ({res['precision']}), "
        f"{res['forward_ms_per_map_fp32']:.2f} ms (float32)"
    )
    print(
        f"  1-s evoked: apply_inverse eLORETA {res['evoked_eloreta_s']:.2f} s | PIUNet apply "
        f"{res['evoked_piunet_s']:.2f} s | ratio {res['evoked_ratio']:.2f}"
    )
    print(
        f"  {args.epochs} epochs of 1 s: apply_inverse_epochs eLORETA {res['epochs_eloreta_s']:.1f} s | "
        f"PIUNet apply_epochs {res['epochs_piunet_s']:.1f} s | ratio {res['epochs_ratio']:.2f}"
    )
    if "raw_s" in res:
        print(
            f"  apply_raw on {args.raw_minutes:g} min: {res['raw_s']:.0f} s, peak memory beyond the output "
            f"{res['raw_peak_beyond_output_mb']:.0f} MB (output {res['raw_output_mb']:.0f} MB)"
        )
    if args.profile:
        from . import PIUNetInverse

        piu = PIUNetInverse(args.weights)
        print(f"forward pass by part, ms per map ({res['precision']}, batch 16):")
        for name, ms in profile_forward(piu.network, piu.grid, piu.dtype).items():
            print(f"  {name:8s} {ms:6.2f}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mne-piunet`` command."""
    parser = argparse.ArgumentParser(prog="mne-piunet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo", help="simulate a source on the template; compare dSPM, sLORETA, eLORETA, PIUNet"
    )
    p.add_argument("-o", "--out", default="piunet_demo.png", help="figure path")
    p.add_argument("--montage", default="biosemi64")
    p.add_argument("--snr", type=float, default=10.0, help="SNR in dB at the peak")
    p.add_argument("--weights", default=None)

    p = sub.add_parser("apply", help="PIUNet estimate of an evoked file, written as -vl.stc")
    p.add_argument("evoked", help="-ave.fif file")
    p.add_argument("inverse", help="-inv.fif file")
    p.add_argument("-o", "--out", required=True, help="output stem (writes OUT-vl.stc)")
    p.add_argument("--condition", default=0, type=lambda c: int(c) if c.isdigit() else c)
    p.add_argument("--baseline", nargs=2, type=float, default=None, metavar=("TMIN", "TMAX"))
    p.add_argument("--lambda2", type=float, default=1 / 9)
    p.add_argument("--pick-ori", choices=["vector"], default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the network's arithmetic")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("train", help="train (or resume) a model from a JSON config")
    p.add_argument("--config", default=None, help="JSON config (default: the one of the bundled model)")
    p.add_argument("--out", required=True, help="output folder (log, checkpoint, best.pt)")
    p.add_argument("--init", default=None, help="weights to fine-tune from")
    p.add_argument("--max-minutes", type=float, default=None)

    p = sub.add_parser("blend", help="interpolate a model's weights with those of its fine-tune")
    p.add_argument("first", help="weights (.pt) before fine-tuning")
    p.add_argument("second", help="weights (.pt) after fine-tuning")
    p.add_argument("--alpha", type=float, required=True, help="weight of SECOND, in [0, 1]")
    p.add_argument("--out", required=True, help="output .pt (its JSON is written beside it)")

    p = sub.add_parser("validate", help="NEMD per number of sources on a config's validation setups")
    p.add_argument("weights", nargs="+", help="weight files (.pt) to compare")
    p.add_argument("--config", default=None, help="JSON config whose val_setups and prior to use")
    p.add_argument("--sources", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    p.add_argument("--n", type=int, default=12, help="samples per validation setup and number of sources")
    p.add_argument("--seed", type=int, default=20_000)

    p = sub.add_parser("evaluate", help="eLORETA vs PIUNet on held-out heads and montages")
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the network's arithmetic")
    p.add_argument("--quick", action="store_true", help="a small sweep (minutes)")
    p.add_argument("--out", default=None, help="folder for evaluation.csv")
    p.add_argument("--seed", type=int, default=1234)

    from .benchmark import METHODS

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

    p = sub.add_parser("bench-data", help="samples per second of the simulation engine")
    p.add_argument("--montage", default="biosemi64")

    p = sub.add_parser("bench-speed", help="eLORETA vs PIUNet run time; apply_raw memory")
    p.add_argument("--montage", default="biosemi64")
    p.add_argument(
        "--raw-minutes", type=float, default=10.0, help="length of the Raw for apply_raw (0: skip)"
    )
    p.add_argument("--epochs", type=int, default=200, help="number of 1-s epochs")
    p.add_argument("--profile", action="store_true", help="also time the network's forward pass by part")
    p.add_argument("--weights", default=None)

    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.montage, args.snr, args.weights)
    elif args.command == "apply":
        _apply(args)
    elif args.command == "train":
        _train(args)
    elif args.command == "validate":
        _validate(args)
    elif args.command == "blend":
        _blend(args)
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "benchmark":
        _benchmark(args)
    elif args.command == "bench-data":
        from .speed import bench_generation

        rates = bench_generation(args.montage)
        for space, rate in rates.items():
            print(f"{args.montage} {space}: {rate:,.0f} samples/s")
    elif args.command == "bench-speed":
        _bench_speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
