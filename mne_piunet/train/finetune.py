"""Fine-tuning on your own head model: the bundled weights adapted to one forward and inverse.

:func:`fine_tune` simulates from the user's forward model, noise covariance and
eLORETA (:func:`~mne_piunet.simulation.prepare_user_setup`), trains from the
bundled (or given) weights with the loop of :mod:`mne_piunet.train.training` for a
wall-clock budget, keeps a seeded slice of the simulations for validation, and
writes weights only if, on fresh samples, they are better than the weights it
started from overall and worse in no group of number of sources, SNR band and
mode of use (time courses with their window, and single maps).
The written weights record which forward and inverse they were tuned on
(:func:`forward_fingerprint`, :func:`inverse_fingerprint`), so applying them to
another inverse logs a warning.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mne
import numpy as np
import torch
from mne.utils import logger, verbose, warn

from .._cache import file_sha256
from ..grid import DEFAULT_MINDIST_MM, grid_from_meta
from ..inference import predict_maps, prepare_network
from ..metrics import coarse_nemd
from ..network import ModelBundle, bundled_weights_path, load_network, save_network
from ..simulation import SourcePrior, music_scan, network_window, prepare_user_setup, simulate
from ..simulation.seeds import ACCEPTANCE_SEED_OFFSET
from ..utils._checks import check_positive, ensure_int, validate_type
from ..utils._defaults import DEFAULT_LAMBDA2
from ..utils._fingerprint import forward_fingerprint, inverse_fingerprint
from .training import TrainConfig, train

__all__ = ["FINE_TUNE_SETTINGS", "acceptance_groups", "fine_tune"]

#: What a fine-tune changes in the starting weights' training config. A lower
#: learning rate than training's (1e-3) and no cosine decay (the budget is in
#: minutes, not steps): the weights move towards one head without forgetting.
FINE_TUNE_SETTINGS = dict(
    lr=2e-4,
    context_lr=None,
    warmup_steps=20,
    max_steps=10**9,
    val_size=64,
    val_every_steps=100,
    checkpoint_every_s=120.0,
    teacher=None,
    distill_weight=0.0,
    batch_size=16,
    data_workers=0,
)
#: The fine-tune's ``coloured_noise`` (:class:`~mne_piunet.simulation.SourcePrior`):
#: about half the samples carry the inverse's own noise covariance, the rest white noise.
FINE_TUNE_COLOURED_NOISE = 0.5
#: The least share of the fine-tune's samples with an instantaneous context (a
#: single map, as ``refine`` of one map or data shorter than the window give):
#: the starting weights' own share when larger. Tuned on windows alone, the
#: weights learn to lean on the context and lose on single maps.
FINE_TUNE_INSTANTANEOUS = 0.3
#: Its groups: numbers of simultaneous sources, SNR bands (dB), and how the
#: model is applied: to time courses (each map with its window) and to single
#: maps (an instantaneous context). A mean over the training prior lets a gain
#: at many sources hide a loss at one, the common case, and a gain on windows
#: hide a loss on single maps, so the tuned weights must not be worse in any group.
ACCEPTANCE_N_SOURCES = (1, 3, 10)
ACCEPTANCE_SNR_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0))
ACCEPTANCE_MODES = ("window", "single map")
#: Samples per group, scored by both networks (paired); both modes score the same samples.
ACCEPTANCE_PER_GROUP = 24
#: A group counts as worse when its mean paired NEMD difference exceeds this
#: many standard errors of that mean (the check's own noise) ...
ACCEPTANCE_SE = 2.0
#: ... or exceeds this NEMD, however noisy the group: a loss this large is
#: refused even where the samples cannot tell it from noise.
ACCEPTANCE_MAX_LOSS = 0.02


def _read_inputs(inverse_operator, forward) -> tuple:
    """The inverse and forward objects, read when paths are given, and their files' sha256."""
    files = {}
    if isinstance(inverse_operator, (str, Path)):
        files["inverse"] = dict(file=Path(inverse_operator).name, sha256=file_sha256(inverse_operator))
        inverse_operator = mne.minimum_norm.read_inverse_operator(inverse_operator)
    if isinstance(forward, (str, Path)):
        files["forward"] = dict(file=Path(forward).name, sha256=file_sha256(forward))
        forward = mne.read_forward_solution(forward)
    return inverse_operator, forward, files


def _check_arguments(
    inverse_operator, forward, out, minutes, weights, lambda2, run_dir, overwrite, seed, threads
) -> tuple[Path, int, int | None]:
    """:func:`fine_tune`'s argument checks, before any work: ``out`` as a Path, ``seed`` and ``threads`` as ints."""
    validate_type(
        inverse_operator,
        (mne.minimum_norm.InverseOperator, "path-like"),
        "inverse_operator",
        "mne.minimum_norm.InverseOperator or path-like",
        fix="Pass the operator or its -inv.fif file.",
    )
    validate_type(
        forward,
        (mne.Forward, "path-like"),
        "forward",
        "mne.Forward or path-like",
        fix="Pass the forward solution or its -fwd.fif file.",
    )
    validate_type(out, "path-like", "out")
    check_positive(minutes, "minutes", "the wall-clock budget of the fine-tune")
    validate_type(weights, ("path-like", None), "weights")
    check_positive(lambda2, "lambda2", "e.g. 1 / SNR**2 = 1/9")
    validate_type(run_dir, ("path-like", None), "run_dir")
    validate_type(overwrite, bool, "overwrite")
    seed = ensure_int(seed, "seed", "an int")
    if threads is not None:
        threads = ensure_int(threads, "threads", "a positive integer or None", minimum=1)
    out = Path(out)
    if out.suffix != ".pt":
        raise ValueError(f"out must name a .pt weights file (its JSON is written beside it), got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} exists; pass overwrite=True (--overwrite) to replace it, or choose another name"
        )
    return out, seed, threads


def _fine_tune_config(
    start_meta: dict, minutes: float, seed: int, device: str, threads: int | None
) -> TrainConfig:
    """The starting weights' training config with :data:`FINE_TUNE_SETTINGS` applied.

    The network and grid are the starting weights' own, whatever their config says.
    """
    base = {
        k: v for k, v in start_meta.get("train_config", {}).items() if k in TrainConfig.__dataclass_fields__
    }
    prior = dict(base.get("prior", {}), coloured_noise=FINE_TUNE_COLOURED_NOISE)
    prior["instantaneous"] = max(float(prior.get("instantaneous", 0.0)), FINE_TUNE_INSTANTANEOUS)
    grid = start_meta["grid"]
    return TrainConfig(
        **dict(
            base,
            **FINE_TUNE_SETTINGS,
            prior=prior,
            train_setups=[],
            val_setups=[],
            max_minutes=float(minutes),
            seed=seed,
            device=device,
            threads=threads,
            network=start_meta["config"],
            grid_spacing_mm=grid["spacing_mm"],
            grid_mindist_mm=grid.get("mindist_mm", DEFAULT_MINDIST_MM),
        )
    )


@verbose
def fine_tune(
    inverse_operator: mne.minimum_norm.InverseOperator | str | Path,
    forward: mne.Forward | str | Path,
    *,
    out: str | Path,
    minutes: float = 30.0,
    weights: str | Path | None = None,
    lambda2: float = DEFAULT_LAMBDA2,
    mni_transform: mne.transforms.Transform | np.ndarray | None = None,
    subjects_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    verbose: bool | str | int | None = None,
) -> Path | None:
    """Fine-tune PIUNet weights on simulations from your own forward model and inverse.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator | path-like
        Your inverse operator (or its ``-inv.fif``), fixed, loose or free.
    forward : mne.Forward | path-like
        The forward it was made from (or its ``-fwd.fif``): EEG, MEG or both.
    out : path-like
        The tuned weights' ``.pt`` file; its JSON is written beside it.
    minutes : float
        Wall-clock budget of the training (validation included). Calling
        again with the same ``run_dir`` and a larger budget resumes.
    weights : path-like | None
        Weights to start from (default: the bundled ones).
    lambda2 : float
        eLORETA's regularisation, as you will apply it.
    mni_transform, subjects_dir
        How your subject's MRI maps to MNI, as for
        :class:`~mne_piunet.PIUNetInverse` (not needed for fsaverage or
        head-only models).
    run_dir : path-like | None
        Folder of the run's log, checkpoint (resume) and candidates
        (default: ``out`` without its suffix, plus ``_run``).
    overwrite : bool
        Replace ``out`` if it exists.
    seed : int
        Seed of the simulations.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    threads : int | None
        CPU threads of the training (default: torch's).
    %(verbose)s

    Returns
    -------
    out : pathlib.Path | None
        ``out``, or None when, on fresh samples of your setup, the tuned
        weights were not better than the starting ones on average, or worse
        in some group of :func:`acceptance_groups` (sources x SNR band x
        windows or single maps) by more than twice its standard error or by
        more than 0.02 NEMD (a warning lists the groups and marks the losing
        ones; nothing is written).
    """
    out, seed, threads = _check_arguments(
        inverse_operator, forward, out, minutes, weights, lambda2, run_dir, overwrite, seed, threads
    )
    inverse_operator, forward, files = _read_inputs(inverse_operator, forward)
    weights = bundled_weights_path() if weights is None else Path(weights)
    start = load_network(weights)
    grid = grid_from_meta(start.grid)
    logger.info("Preparing simulations from your forward and inverse")
    prepared = prepare_user_setup(
        forward,
        inverse_operator,
        grid,
        lambda2,
        mni_transform=mni_transform,
        subjects_dir=subjects_dir,
        name=f"user:{out.stem}",
    )
    config = _fine_tune_config(start.meta, minutes, seed, device, threads)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.stem + "_run")
    tuned_on = dict(
        name=prepared.name,
        forward_sha256=forward_fingerprint(forward),
        inverse_sha256=inverse_fingerprint(inverse_operator),
        files=files,
        lambda2=float(lambda2),
        n_channels=len(prepared.info["ch_names"]),
        n_sources=prepared.n_sources,
        orientation="free or loose" if prepared.free else "fixed",
    )
    # the setup's name follows the output file, so another output can resume the same run
    _claim_run_dir(
        run_dir, dict(tuned_on, files=None, name=None, start_sha256=start.meta["sha256"], seed=seed)
    )
    # validation draws from the same setup on a seed stream apart from training's
    best = train(config, run_dir, init=weights, setups=([prepared], [prepared]))
    tuned = load_network(best)
    logger.info("Scoring the starting and tuned weights on fresh samples of your setup")
    groups = acceptance_groups(
        prepare_network(start.network, torch.device("cpu")),
        prepare_network(tuned.network, torch.device("cpu")),
        grid,
        prepared,
        config.seed + ACCEPTANCE_SEED_OFFSET,
        SourcePrior(**config.prior),
    )
    return _write_if_better(tuned, out, tuned_on, weights.name, run_dir, groups)


def _claim_run_dir(run_dir: Path, stamp: dict) -> None:
    """Refuse to resume a run folder that holds a fine-tune of other models, weights or seed."""
    fname = run_dir / "fine_tune.json"
    if fname.exists():
        previous = json.loads(fname.read_text())
        if previous != json.loads(json.dumps(stamp)):
            differs = sorted(k for k in stamp if previous.get(k) != json.loads(json.dumps(stamp))[k])
            raise ValueError(
                f"{run_dir} holds a fine-tune of other inputs ({', '.join(differs)} differ), so it cannot be "
                "resumed; pass another run_dir (--run-dir) or delete that folder."
            )
    elif (run_dir / "checkpoint.pt").exists():
        raise ValueError(
            f"{run_dir} holds a training run that is not a fine-tune; pass another run_dir (--run-dir)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    fname.write_text(json.dumps(stamp, indent=1))


def acceptance_groups(
    start, tuned, grid, prepared, seed: int, prior: SourcePrior, per_group: int | None = None
) -> list[dict]:
    """Paired NEMD of two networks on fresh samples of one setup, per sources, SNR band and mode.

    Each sample is a time course over the networks' window. It is scored
    twice: its centre map refined with the window as context (``"window"``:
    Evoked, Epochs, Raw), and the centre map alone, with an instantaneous
    context (``"single map"``: ``refine`` of one map, data shorter than the
    window).

    Parameters
    ----------
    start, tuned : UNet3d
        The starting and the fine-tuned network.
    grid : SourceGrid
        Their grid.
    prepared : PreparedSetup
        The user's setup.
    seed : int
        Seed of the samples (a stream none of the training saw).
    prior : SourcePrior
        The fine-tune's prior (extents, coloured noise); the number of
        sources and the SNR are set per group, and every sample has its
        window (no instantaneous ones).
    per_group : int | None
        Samples per group; None: the module's ``ACCEPTANCE_PER_GROUP`` (24),
        read at the call.

    Returns
    -------
    groups : list of dict
        Per group: ``n_sources``, ``snr_db`` (the band), ``mode``, ``start``
        and ``tuned`` (mean NEMD), ``diff`` (their mean paired difference)
        and ``se`` (its standard error).
    """
    per_group = ACCEPTANCE_PER_GROUP if per_group is None else per_group
    rng = np.random.default_rng(seed)
    groups = []
    for k in ACCEPTANCE_N_SOURCES:
        for band in ACCEPTANCE_SNR_BANDS:
            batch = simulate(
                prepared,
                per_group,
                rng,
                replace(prior, snr_db=band, instantaneous=0.0),
                n_sources=k,
                window=network_window(start.config),
                music=start.config.scans_data,
            )
            inputs = {
                "window": (*batch.network_maps(start.config), batch.window_fit),
                "single map": (
                    batch.eloreta_grid,
                    np.arange(len(batch.eloreta_grid))[:, None],
                    music_scan(prepared, batch.sensor[:, None]) if start.config.scans_data else None,
                ),
            }
            resolution = prepared.resolution if start.config.residual_pass else None
            for mode in ACCEPTANCE_MODES:
                x0, windows, fit = inputs[mode]
                scores = {
                    name: np.array(
                        [
                            coarse_nemd(e, t, grid.pos)
                            for e, t in zip(
                                predict_maps(net, grid, x0, windows, fit=fit, resolution=resolution),
                                batch.true_grid,
                            )
                        ]
                    )
                    for name, net in (("start", start), ("tuned", tuned))
                }
                diff = scores["tuned"] - scores["start"]
                groups.append(
                    dict(
                        n_sources=k,
                        snr_db=list(band),
                        mode=mode,
                        start=float(np.nanmean(scores["start"])),
                        tuned=float(np.nanmean(scores["tuned"])),
                        diff=float(np.nanmean(diff)),
                        se=float(np.nanstd(diff, ddof=1) / np.sqrt(np.isfinite(diff).sum())),
                    )
                )
    return groups


def _is_worse(group: dict) -> bool:
    """Whether a group's loss exceeds its noise (:data:`ACCEPTANCE_SE`) or :data:`ACCEPTANCE_MAX_LOSS`."""
    noise = ACCEPTANCE_SE * group["se"]
    limit = min(noise, ACCEPTANCE_MAX_LOSS) if np.isfinite(noise) else ACCEPTANCE_MAX_LOSS
    return group["diff"] > limit and group["diff"] > 0


def _acceptance(groups: list[dict]) -> tuple[bool, str]:
    """Whether tuned weights are better overall and worse in no group; a report that marks the losing groups."""
    lines = [
        f"  {g['n_sources']:>2} source(s), {g['snr_db'][0]:.0f}-{g['snr_db'][1]:.0f} dB, "
        f"{g.get('mode', 'window')}: NEMD {g['start']:.3f} -> {g['tuned']:.3f} "
        f"({g['diff']:+.3f} +/- {g['se']:.3f}){'  WORSE' if _is_worse(g) else ''}"
        for g in groups
    ]
    worse = [g for g in groups if _is_worse(g)]
    better = float(np.mean([g["diff"] for g in groups])) < 0
    return better and not worse, "\n".join(lines)


def _write_if_better(
    tuned: ModelBundle, out: Path, tuned_on: dict, start_name: str, run_dir: Path, groups
) -> Path | None:
    """Write a run's best weights (loaded) to ``out`` with ``tuned_on``, if they pass :func:`_acceptance`.

    ``groups`` are both networks' scores on the same fresh samples
    (:func:`acceptance_groups`); they are logged either way.
    """
    accepted, report = _acceptance(groups)
    if not accepted:
        warn(
            f"The fine-tuned weights are not better than {start_name} on your setup on average, or are worse in a group of "
            f"fresh samples (NEMD, starting -> tuned, mean paired difference +/- its standard error):\n"
            f"{report}\n{out} was not written. Train longer (a larger minutes= resumes from {run_dir}) "
            "or keep the starting weights."
        )
        return None
    keep = {k: v for k, v in tuned.meta.items() if k not in ("config", "sha256", "format_version")}
    # the setups were the user's own forward and inverse (``tuned_on``), which no HeadSetup
    # dict describes: the stored config says so with empty lists, as train() read it
    keep["train_config"] = dict(keep["train_config"], train_setups=[], val_setups=[])
    tuned_on = dict(tuned_on, acceptance=groups)
    save_network(tuned.network, out, dict(keep, tuned_on=tuned_on))
    logger.info(f"Fine-tuned weights written to {out}; NEMD on fresh samples, starting -> tuned:\n{report}")
    return out
