"""Fine-tuning on your own head model: the bundled weights adapted to one forward and inverse.

:func:`fine_tune` simulates from the user's forward model, noise covariance and
eLORETA (:func:`~mne_piunet.simulation.prepare_user_setup`), trains from the
bundled (or given) weights with the loop of :mod:`mne_piunet.training` for a
wall-clock budget, keeps a seeded slice of the simulations for validation, and
writes weights only if they validate better than the weights it started from.
The written weights record which forward and inverse they were tuned on
(:func:`forward_fingerprint`, :func:`inverse_fingerprint`), so applying them to
another inverse logs a warning.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import mne
import numpy as np
from mne.utils import logger, verbose, warn

from ._cache import file_sha256
from .grid import DEFAULT_MINDIST_MM, get_grid
from .network import ModelBundle, bundled_weights_path, load_network, save_network
from .simulation import prepare_user_setup
from .training import TrainConfig, make_validation_set, train, validation_nemd
from .utils._defaults import DEFAULT_LAMBDA2

__all__ = ["FINE_TUNE_SETTINGS", "fine_tune", "forward_fingerprint", "inverse_fingerprint"]

#: What a fine-tune changes in the starting weights' training config. A lower
#: learning rate than training's (1e-3) and no cosine decay (the budget is in
#: minutes, not steps): the weights move towards one head without forgetting.
FINE_TUNE_SETTINGS = dict(
    lr=2e-4, warmup_steps=20, max_steps=10**9, val_size=64, val_every_steps=100,
    checkpoint_every_s=120.0, teacher=None, distill_weight=0.0,
)  # fmt: skip
#: The fine-tune's ``coloured_noise`` (:class:`~mne_piunet.simulation.SourcePrior`):
#: about half the samples carry the inverse's own noise covariance, the rest white noise.
FINE_TUNE_COLOURED_NOISE = 0.5
#: The acceptance check's samples: a seed stream apart from training's (seed)
#: and validation's (seed + 10,000), and twice the validation set's size.
ACCEPTANCE_SEED_OFFSET = 20_000
ACCEPTANCE_SAMPLES = 128


def _digest(arrays: list[np.ndarray], names: list[str]) -> str:
    # float32: FIF files store these in single precision, so an object and its
    # written-and-read copy get one digest
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    h.update(repr(list(names)).encode())
    return h.hexdigest()


def forward_fingerprint(forward: mne.Forward) -> str:
    """sha256 of a forward's leadfield and channel names.

    Parameters
    ----------
    forward : mne.Forward
        The forward model.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    return _digest([forward["sol"]["data"]], forward["sol"]["row_names"])


def inverse_fingerprint(inverse_operator: mne.minimum_norm.InverseOperator) -> str:
    """sha256 of an inverse operator's eigen decomposition, source covariance and channels.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        The inverse.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    inv = inverse_operator
    arrays = [inv["eigen_fields"]["data"], inv["eigen_leads"]["data"], inv["sing"], inv["source_cov"]["data"]]
    return _digest(arrays, inv["eigen_fields"]["col_names"])


def _read_inputs(inverse_operator, forward) -> tuple:
    """The inverse and forward objects, read when paths are given, and their files' sha256."""
    files = {}
    if isinstance(inverse_operator, (str, Path)):
        files["inverse"] = dict(file=Path(inverse_operator).name, sha256=file_sha256(inverse_operator))
        inverse_operator = mne.minimum_norm.read_inverse_operator(inverse_operator, verbose=False)
    if isinstance(forward, (str, Path)):
        files["forward"] = dict(file=Path(forward).name, sha256=file_sha256(forward))
        forward = mne.read_forward_solution(forward, verbose=False)
    return inverse_operator, forward, files


def _check_budget_and_out(minutes, out, overwrite: bool) -> Path:
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float, np.integer, np.floating)):
        raise TypeError(f"minutes must be a number, got {type(minutes).__name__}")
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0 (the wall-clock budget of the fine-tune), got {minutes}")
    out = Path(out)
    if out.suffix != ".pt":
        raise ValueError(f"out must name a .pt weights file (its JSON is written beside it), got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} exists; pass overwrite=True (--overwrite) to replace it, or choose another name"
        )
    return out


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
    grid = start_meta["grid"]
    return TrainConfig(**dict(
        base, **FINE_TUNE_SETTINGS, prior=prior, train_setups=[], val_setups=[], max_minutes=float(minutes),
        seed=seed, device=device, threads=threads, network=start_meta["config"],
        grid_spacing_mm=grid["spacing_mm"], grid_mindist_mm=grid.get("mindist_mm", DEFAULT_MINDIST_MM),
    ))  # fmt: skip


# Over 60 lines only for its numpydoc docstring; the body is 21.
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
        The forward it was made from (or its ``-fwd.fif``), with EEG.
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
        ``out``, or None when the tuned weights did not validate better than
        the starting ones on your setup (a warning says so; nothing is written).
    """
    out = _check_budget_and_out(minutes, out, overwrite)
    inverse_operator, forward, files = _read_inputs(inverse_operator, forward)
    weights = bundled_weights_path() if weights is None else Path(weights)
    start = load_network(weights)
    grid = get_grid(start.grid["spacing_mm"], start.grid.get("mindist_mm", DEFAULT_MINDIST_MM))
    logger.info("Preparing simulations from your forward and inverse")
    prepared = prepare_user_setup(
        forward, inverse_operator, grid, lambda2, mni_transform=mni_transform, subjects_dir=subjects_dir,
        name=f"user:{out.stem}",
    )  # fmt: skip
    config = _fine_tune_config(start.meta, minutes, seed, device, threads)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.stem + "_run")
    tuned_on = dict(
        name=prepared.name, forward_sha256=forward_fingerprint(forward),
        inverse_sha256=inverse_fingerprint(inverse_operator), files=files, lambda2=float(lambda2),
        n_channels=len(prepared.info["ch_names"]), n_sources=prepared.n_sources,
        orientation="free or loose" if prepared.free else "fixed",
    )  # fmt: skip
    _claim_run_dir(run_dir, dict(tuned_on, files=None, start_sha256=start.meta["sha256"], seed=seed))
    # validation draws from the same setup on a seed stream apart from training's
    best = train(config, run_dir, init=weights, setups=([prepared], [prepared]))
    tuned = load_network(best)
    start_nemd, tuned_nemd = _acceptance_scores(start.network, tuned.network, config, grid, prepared)
    return _write_if_better(tuned, out, tuned_on, weights.name, run_dir, start_nemd, tuned_nemd)


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


def _acceptance_scores(start, tuned, config: TrainConfig, grid, prepared) -> tuple[float, float]:
    """Mean coarse NEMD of the starting and tuned networks on fresh samples of the user's setup.

    The run picked its best weights on its validation set, so scoring them
    there would favour them; these samples come from a third seed stream.
    """
    fresh = replace(config, seed=config.seed + ACCEPTANCE_SEED_OFFSET, val_size=ACCEPTANCE_SAMPLES)
    val = make_validation_set(fresh, grid, [prepared])
    return validation_nemd(start, val, grid), validation_nemd(tuned, val, grid)


def _write_if_better(
    tuned: ModelBundle,
    out: Path,
    tuned_on: dict,
    start_name: str,
    run_dir: Path,
    start_nemd: float,
    tuned_nemd: float,
) -> Path | None:
    """Write a run's best weights (loaded) to ``out`` with ``tuned_on``, if they beat the starting weights.

    ``start_nemd`` and ``tuned_nemd`` are both networks' scores on the same
    fresh samples (:func:`_acceptance_scores`).
    """
    if not tuned_nemd < start_nemd:
        warn(
            f"The fine-tuned weights do not validate better than {start_name} on your setup "
            f"(NEMD {tuned_nemd:.4f} vs {start_nemd:.4f} on fresh samples); {out} was not written. "
            f"Train longer (a larger minutes= resumes from {run_dir}) or keep the starting weights."
        )
        return None
    keep = {k: v for k, v in tuned.meta.items() if k not in ("config", "sha256", "format_version")}
    keep["train_config"] = dict(
        keep["train_config"], train_setups=[tuned_on["name"]], val_setups=[tuned_on["name"]]
    )
    tuned_on = dict(tuned_on, val_nemd=dict(start=start_nemd, tuned=tuned_nemd))
    save_network(tuned.network, out, dict(keep, tuned_on=tuned_on))
    logger.info(
        f"Fine-tuned weights written to {out}: NEMD {start_nemd:.3f} -> {tuned_nemd:.3f} on fresh samples"
    )
    return out
