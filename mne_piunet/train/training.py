"""Training runs: the loop, its checkpoints and resume, validation and weight export.

``mne-piunet train --config CONFIG --out DIR`` runs :func:`train`. Data are drawn
by :class:`~mne_piunet.simulation.SimulationEngine` over the configured
(domain-randomised) setups and scored by the losses of
:mod:`mne_piunet.train.losses`; a fixed validation set from *held-out* setups is
scored by NEMD on a coarsened grid. The loop checkpoints every few minutes and
resumes from ``DIR/checkpoint.pt``; ``export`` writes package-ready weights.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from mne.utils import logger

from .._cache import file_sha256
from ..grid import DEFAULT_MINDIST_MM, DEFAULT_SPACING_MM, SourceGrid, get_grid, grid_from_meta, grid_meta
from ..inference import cpu_has_native_bf16, predict_maps, prepare_network, residual_inputs
from ..metrics import coarse_nemd
from ..network import (
    UNet3d,
    UNetConfig,
    bundled_weights_path,
    load_network,
    load_weights,
    resolve_device,
    save_network,
)
from ..simulation import (
    HeadSetup,
    PreparedSetup,
    SimulationEngine,
    SourcePrior,
    batch_fits,
    batch_maps,
    batch_resolution,
    network_window,
    prepare_setup,
    sample_resolution,
    setup_list,
    simulate,
)
from ..simulation.seeds import BY_SOURCES_SEED, VAL_SEED_OFFSET
from ..utils._checks import check_option
from ..utils._defaults import DEFAULT_LAMBDA2, N_SOURCES_SWEEP
from .losses import PeakLoss, TransportLoss, distill_loss, shape_amplitude_loss

__all__ = [
    "TrainConfig",
    "BUNDLED_CONFIGS",
    "SimulatedBatches",
    "blend_weights",
    "bundled_config",
    "export_checkpoint",
    "read_config",
    "make_validation_set",
    "mean_coarse_nemd",
    "train",
    "train_dtype",
    "validate_by_sources",
    "validation_nemd",
]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored with the weights).

    Parameters
    ----------
    train_setups : list of dict | str
        :class:`~mne_piunet.simulation.HeadSetup` keyword arguments, one dict
        per setup training draws from (domain randomisation), or the name of
        one of :data:`~mne_piunet.simulation.SETUP_LISTS` (such as
        ``"eeg-meg-train"``), which the config holds as that list.
    val_setups : list of dict | str
        The same for the held-out setups of the validation set.
    lambda2 : list of float
        eLORETA's regularisation: training setup ``i`` uses
        ``lambda2[i % len(lambda2)]``, the validation setups ``lambda2[0]``.
    prior : dict
        Keyword arguments of the :class:`~mne_piunet.simulation.SourcePrior`.
    network : dict
        Keyword arguments of the :class:`~mne_piunet.network.UNetConfig`.
    grid_spacing_mm : float
        The grid's spacing (mm), as for :func:`~mne_piunet.grid.get_grid`.
    grid_mindist_mm : float
        The grid points' minimum distance from the inner skull (mm).
    batch_size : int
        Samples per optimiser step (per rank under ``torchrun``).
    amplitude_weight : float
        Weight of the log peak ratio term
        (:func:`~mne_piunet.train.losses.shape_amplitude_loss`).
    loss_scales : list of int
        Average-pooling factors of :func:`~mne_piunet.train.losses.relative_loss`.
    loss_norms : list of str
        ``"l1"`` and/or ``"l2"``.
    transport_weight : float
        Weight of the :class:`~mne_piunet.train.losses.TransportLoss` term (0: none).
    peak_weight : float
        Weight of the :class:`~mne_piunet.train.losses.PeakLoss` term (0: none).
    peak_temperature : float
        Its softmax temperature.
    teacher : str | None
        Weights to distil from (a ``.pt`` path, or ``"bundled"``): the student
        also matches the teacher's shape and log peak ratio on every training
        batch (:func:`~mne_piunet.train.losses.distill_loss`), weighted by
        ``distill_weight``. How a cheaper architecture inherits the bundled
        model's CPU-hours instead of starting over.
    distill_weight : float
        Weight of the distillation term.
    lr : float
        AdamW's learning rate after the warm-up.
    context_lr : float | None
        The learning rate of the parts a network grows on trained weights:
        the temporal context's input convolution
        (:attr:`~mne_piunet.network.UNet3d.context_stem`) and the residual
        pass's correction network
        (:class:`~mne_piunet.network.ResidualCorrection`); None: ``lr``.
        They start at zero, and a higher rate lets them catch up with the
        rest of the network.
    weight_decay : float
        AdamW's weight decay.
    warmup_steps : int
        Steps of the linear learning-rate warm-up.
    max_steps : int
        Length of the run; the cosine decay of the learning rate ends there.
    max_minutes : float | None
        Wall-clock budget (min): the run stops when it is spent, whatever
        ``max_steps``.
    val_size : int
        Samples in the fixed validation set.
    val_every_steps : int
        Steps between validations.
    checkpoint_every_s : float
        Seconds between checkpoints.
    seed : int
        Seed of the initial weights and the training draws; the validation
        set's stream is seeded apart from it.
    threads : int | None
        CPU threads of torch (None: torch's default).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    data_workers : int
        Processes that simulate training batches while the network steps (a
        :class:`torch.utils.data.DataLoader` over the setups; 0: simulate in
        the training process, between steps). On a machine with a GPU the
        simulation is what limits the throughput, so give it the spare cores.
    precision : "auto" | "float32" | "bfloat16"
        Arithmetic of the network's forward and backward pass (autocast);
        weights, optimiser state and every loss stay float32. ``"auto"`` is
        bf16 on CUDA devices that support it and on CPUs that compute bf16
        natively (:func:`~mne_piunet.inference.cpu_has_native_bf16`), float32
        elsewhere, where emulated bf16 is slower.
    """

    train_setups: list[dict] = field(default_factory=lambda: [dict(montage="easycap-M10")])
    val_setups: list[dict] = field(
        default_factory=lambda: [dict(montage="biosemi64", source_space="surface")]
    )
    lambda2: list[float] = field(default_factory=lambda: [DEFAULT_LAMBDA2])
    prior: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)
    grid_spacing_mm: float = DEFAULT_SPACING_MM
    grid_mindist_mm: float = DEFAULT_MINDIST_MM
    batch_size: int = 16
    amplitude_weight: float = 0.1
    loss_scales: list[int] = field(default_factory=lambda: [1])
    loss_norms: list[str] = field(default_factory=lambda: ["l1"])
    transport_weight: float = 0.0
    peak_weight: float = 0.0
    peak_temperature: float = 0.05
    # weights to distil from (a .pt path, or "bundled"): see the Parameters above
    teacher: str | None = None
    distill_weight: float = 0.0
    lr: float = 1e-3
    context_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    max_steps: int = 4000
    max_minutes: float | None = None
    val_size: int = 64
    val_every_steps: int = 250
    checkpoint_every_s: float = 300.0
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    data_workers: int = 0
    precision: str = "auto"

    def __post_init__(self):
        # a setup list's name stands for the list itself, so the config (and the
        # weights that store it) always holds the setups
        for name in ("train_setups", "val_setups"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, setup_list(getattr(self, name)))

    @classmethod
    def from_json(cls, fname: str | Path) -> TrainConfig:
        """Read a config from a JSON file of its fields.

        Parameters
        ----------
        fname : path-like
            The JSON file: an object of :class:`TrainConfig` fields, and
            optionally ``"parent"``, the name of a bundled config
            (:data:`BUNDLED_CONFIGS`) whose fields it starts from. A key the
            file sets replaces the parent's value whole (a ``prior`` or
            ``network`` dict too); keys that neither sets keep their defaults;
            unknown keys raise a ValueError. ``train_setups`` and
            ``val_setups`` may name one of
            :data:`~mne_piunet.simulation.SETUP_LISTS` instead of listing
            the setups.

        Returns
        -------
        config : TrainConfig
            The config, its parents and setup-list names resolved.
        """
        return cls(**_config_fields(Path(fname)))


#: The training configs shipped in ``weights/``, by name: the stages behind the
#: bundled weights (model card; ``residual-shared``, ``residual-anneal``,
#: ``residual-polish`` and ``residual-polish-2`` are stage 9, the shipped one;
#: ``residual-polish-2`` also continues the bundled weights on the CPU),
#: ``residual`` (the residual pass's first A/B run) and ``gpu`` (stage 9's
#: network on stage 8's data on a CUDA device, simulating in worker processes).
#: Each but ``train`` names the config it starts from (``"parent"``: the stage
#: before, ``temporal`` for ``gpu``) and holds only what it changes; their setups
#: are named :data:`~mne_piunet.simulation.SETUP_LISTS`.
BUNDLED_CONFIGS = (
    "train",
    "finetune",
    "distill",
    "robust",
    "balanced",
    "continue",
    "gpu",
    "meg",
    "temporal",
    "residual",
    "residual-shared",
    "residual-anneal",
    "residual-polish",
    "residual-polish-2",
)


def bundled_config(name: str = "train") -> Path:
    """The path of a training config shipped with the package.

    Parameters
    ----------
    name : str
        One of :data:`BUNDLED_CONFIGS`; ``"train"`` is the first stage's
        (training from scratch).

    Returns
    -------
    path : pathlib.Path
        ``weights/<name>_config.json``.
    """
    if name not in BUNDLED_CONFIGS:
        raise ValueError(f"No bundled training config {name!r}: choose one of {', '.join(BUNDLED_CONFIGS)}")
    return Path(str(files("mne_piunet") / "weights" / f"{name}_config.json"))


def _config_fields(fname: Path, children: tuple[str, ...] = ()) -> dict:
    """The fields of a JSON config file, its ``"parent"`` chain resolved (not its setup-list names)."""
    data = json.loads(fname.read_text())
    if not isinstance(data, dict):
        raise ValueError(
            f"A training config is a JSON object of TrainConfig fields; {fname} holds {type(data).__name__}"
        )
    unknown = set(data) - set(TrainConfig.__dataclass_fields__) - {"parent"}
    if unknown:
        raise ValueError(f"Unknown training config keys {sorted(unknown)} in {fname}")
    parent = data.pop("parent", None)
    if parent is None:
        return data
    if parent not in BUNDLED_CONFIGS:
        raise ValueError(
            f"Unknown parent config {parent!r} in {fname}: a parent is a bundled config, "
            f"one of {', '.join(BUNDLED_CONFIGS)}"
        )
    if parent in children:
        raise ValueError(f"The parent configs of {fname} form a loop: {' -> '.join((*children, parent))}")
    return {**_config_fields(bundled_config(parent), (*children, parent)), **data}


def read_config(config: str | Path) -> TrainConfig:
    """A training config from a bundled name (:data:`BUNDLED_CONFIGS`) or a JSON file.

    A config file may start from a bundled config (``"parent": "continue"``)
    and hold only what it changes, and may name a setup list
    (``"train_setups": "eeg-meg-train"``); see :meth:`TrainConfig.from_json`.

    Parameters
    ----------
    config : str | path-like
        A name such as ``"continue"``, or a path.

    Returns
    -------
    config : TrainConfig
        The config.
    """
    if isinstance(config, str) and config in BUNDLED_CONFIGS:
        return TrainConfig.from_json(bundled_config(config))
    if not Path(config).is_file():
        raise FileNotFoundError(
            f"No training config file {config}: pass a JSON file or one of {', '.join(BUNDLED_CONFIGS)}"
        )
    return TrainConfig.from_json(config)


# ------------------------------------------------------------- validation
def make_validation_set(
    config: TrainConfig, grid: SourceGrid, setups: list[PreparedSetup] | None = None
) -> dict:
    """Fixed validation samples from the held-out setups (seeded).

    Parameters
    ----------
    config : TrainConfig
        Its ``val_setups`` (unless ``setups`` is given), ``prior``, ``val_size`` and ``seed``.
    grid : SourceGrid
        The network's grid.
    setups : list of PreparedSetup | None
        Prepared setups to draw from instead of the config's (a fine-tune's
        user setup, drawn from a seed stream apart from training's).

    Returns
    -------
    val : dict
        ``maps`` (n_maps, n_grid, 3) and ``windows`` (n, n_points), the
        eLORETA maps the network sees (:func:`~mne_piunet.simulation.batch_maps`:
        each sample its own time course when the network has a temporal
        context), ``fit``, their MUSIC scans (:func:`~mne_piunet.simulation.batch_fits`;
        None unless the context needs them), ``resolution``, their setups' resolutions
        (:func:`~mne_piunet.simulation.batch_resolution`; None without a residual pass),
        ``eloreta`` and ``truth``, the centre maps and the truth on
        the grid, (n, n_grid, 3), and ``eloreta_nemd``, eLORETA's mean coarse
        NEMD on them.
    """
    prior = SourcePrior(**config.prior)
    setups = _val_setups(config, grid) if setups is None else setups
    network = UNetConfig(**config.network)
    engine = SimulationEngine(setups, grid, prior, seed=config.seed + VAL_SEED_OFFSET, network=network)
    chunks = engine.sample(config.val_size)
    maps, windows = batch_maps(chunks, network)
    x0 = np.concatenate([c.eloreta_grid for c in chunks])
    x = np.concatenate([c.true_grid for c in chunks])
    return dict(
        maps=maps,
        windows=windows,
        fit=batch_fits(chunks, network),
        resolution=batch_resolution(chunks, setups, network),
        eloreta=x0,
        truth=x,
        eloreta_nemd=mean_coarse_nemd(x0, x, grid),
    )


def _val_setups(config: TrainConfig, grid: SourceGrid) -> list:
    """The config's validation setups, prepared (eLORETA at the first lambda2)."""
    return [prepare_setup(HeadSetup.from_dict(s), grid, lambda2=config.lambda2[0]) for s in config.val_setups]


def mean_coarse_nemd(est: np.ndarray, truth: np.ndarray, grid: SourceGrid) -> float:
    """Mean NEMD on 16 mm cells of (n, n_grid, 3) maps against their truths.

    Parameters
    ----------
    est : array, shape (n, n_grid, 3)
        Estimated moment vectors on the grid.
    truth : array, shape (n, n_grid, 3)
        The true moment vectors.
    grid : SourceGrid
        The network's grid.

    Returns
    -------
    nemd : float
        The mean of :func:`~mne_piunet.metrics.coarse_nemd` over the samples
        (NaNs ignored).
    """
    return float(np.nanmean([coarse_nemd(e, t, grid.pos) for e, t in zip(est, truth)]))


def validation_nemd(network: UNet3d, val: dict, grid: SourceGrid) -> float:
    """Mean coarse NEMD of the network on one validation set (fp32).

    Parameters
    ----------
    network : UNet3d
        The network; it is put in eval mode.
    val : dict
        A validation set from :func:`make_validation_set`.
    grid : SourceGrid
        The network's grid.

    Returns
    -------
    nemd : float
        Mean NEMD on 16 mm cells (:func:`mean_coarse_nemd`).
    """
    network.eval()
    est = predict_maps(
        network, grid, val["maps"], val["windows"], fit=val.get("fit"), resolution=val.get("resolution")
    )
    return mean_coarse_nemd(est, val["truth"], grid)


# ------------------------------------------------------------ the training run
def _load_teacher(config: TrainConfig, device: torch.device) -> UNet3d | None:
    if not config.teacher:
        return None
    teacher = load_network(None if config.teacher == "bundled" else config.teacher, device).network
    return teacher.requires_grad_(False).eval()


def _loss_kwargs(config: TrainConfig) -> dict:
    """Keyword arguments of :func:`~mne_piunet.train.losses.shape_amplitude_loss` for a run."""
    return dict(
        scales=tuple(config.loss_scales),
        norms=tuple(config.loss_norms),
        amplitude_weight=config.amplitude_weight,
    )


def train_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a training step (float32: no autocast).

    Unlike inference, ``"auto"`` never picks float16, which would need loss
    scaling; bf16 keeps float32's exponent range, so no scaler is needed.

    Parameters
    ----------
    precision : "auto" | "float32" | "bfloat16"
        The requested arithmetic (:attr:`TrainConfig.precision`).
    device : torch.device
        Where the network trains.

    Returns
    -------
    dtype : torch.dtype
        ``torch.bfloat16`` or ``torch.float32``.
    """
    if precision not in ("auto", "float32", "bfloat16"):
        check_option("precision", precision, ("auto", "float32", "bfloat16"), fix="Training runs in these.")
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = device.type == "cpu" and cpu_has_native_bf16()
        return torch.bfloat16 if native else torch.float32
    return getattr(torch, precision)


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ------------------------------------------------------------ distributed runs
@dataclass(frozen=True)
class _Ranks:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only one that validates, logs and writes files."""
        return self.rank == 0


def _init_ranks(device: torch.device) -> _Ranks:
    """Join the process group ``torchrun`` describes: gloo on CPUs, NCCL on GPUs.

    Alone (no ``WORLD_SIZE`` > 1 in the environment) there is no group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        # rank 0 alone builds the on-disk cache while the others wait at a barrier:
        # from a cold cache that takes longer than the default 10 (NCCL) or 30 (gloo) min
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return _Ranks(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def _broadcast_flag(flag: bool, ranks: _Ranks, device: torch.device) -> bool:
    """Rank 0's value of ``flag`` on every rank (a time budget must stop all ranks at one step)."""
    if ranks.world == 1:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([int(flag)], device=device)  # NCCL broadcasts device tensors only
    dist.broadcast(tensor, 0)
    return bool(tensor.item())


def _check_ranks_agree(run: _Run) -> None:
    """Gather every rank's weight checksum; rank 0 logs that they agree, or raises."""
    if run.ranks.world == 1:
        return
    import torch.distributed as dist

    checksum = float(sum(p.detach().double().sum().item() for p in run.network.parameters()))
    gathered = [None] * run.ranks.world
    dist.all_gather_object(gathered, checksum)
    if max(gathered) - min(gathered) > 1e-9 * max(1.0, abs(checksum)):
        raise RuntimeError(f"The ranks' weights diverged: checksums {gathered}")
    run.log(f"weights agree on all {run.ranks.world} ranks (checksum {checksum:.12g})")


class SimulatedBatches(torch.utils.data.IterableDataset):
    """An endless stream of training batches, each drawn by its worker's own :class:`SimulationEngine`.

    Worker ``w`` of rank ``r`` draws from the seed stream ``[seed, r, start_step, w]``,
    so workers, ranks and resumed runs never repeat one another's samples.

    Parameters
    ----------
    setups : list of PreparedSetup
        The training setups.
    grid : SourceGrid
        The network's grid.
    prior : SourcePrior
        The source and noise distribution.
    seed : list of int
        The stream's seed, without the worker index.
    batch_size : int
        Samples per batch.
    network : UNetConfig
        The network the batches are for (its temporal context).
    """

    def __init__(self, setups, grid, prior, seed: list[int], batch_size: int, network: UNetConfig):
        super().__init__()
        self.setups, self.grid, self.prior, self.seed, self.batch_size = setups, grid, prior, seed, batch_size
        self.network = network

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:  # in a worker process
            torch.set_num_threads(1)  # each worker simulates on one core; the network has the rest
            # a signal to the whole process group stops the run, not its workers mid-batch:
            # the main process finishes its step and ends them
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        engine = SimulationEngine(
            self.setups,
            self.grid,
            self.prior,
            seed=[*self.seed, 0 if info is None else info.id],
            network=self.network,
        )
        while True:
            inputs, targets, meta = engine.batch(self.batch_size)
            yield inputs, targets, meta["log_ratio"], meta["setup"]


@dataclass
class _Run:
    """The live objects of one training run, and its resumable ``state``.

    ``state`` (step, elapsed seconds, best validation NEMD, curve) is saved in
    every checkpoint with the network, optimiser, scheduler and both RNGs.
    """

    config: TrainConfig
    out: Path
    device: torch.device
    grid: SourceGrid
    network: UNet3d
    model: torch.nn.Module  # the network, or its DistributedDataParallel wrapper under torchrun
    ranks: _Ranks
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    transport: TransportLoss | None
    teacher: UNet3d | None
    peak: PeakLoss | None = None
    engine: SimulationEngine | None = None
    val: dict | None = None
    meta: dict = field(default_factory=dict)
    state: dict = field(default_factory=lambda: dict(step=0, elapsed=0.0, best=float("inf"), curve=[]))
    t_start: float = 0.0
    dtype: torch.dtype = torch.float32  # autocast dtype of the training step (train_dtype)
    batches: object = None  # the DataLoader's iterator when config.data_workers > 0
    stop: threading.Event = field(default_factory=threading.Event)  # set by SIGTERM/SIGINT (_stop_on_signals)

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"

    def log(self, message: str) -> None:
        """Log a line and append it to ``train.log`` (rank 0 only)."""
        if not self.ranks.main:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        logger.info(line)
        with open(self.out / "train.log", "a") as fid:
            fid.write(line + "\n")


def _train_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a CPU training step runs faster in the channels_last layout.

    In float32 it speeds up the 3-D convolutions' backward pass; in bf16
    autocast the contiguous layout is faster (the model card's step profile).
    """
    return device.type == "cpu" and dtype == torch.float32


def _make_network(
    config: TrainConfig, grid: SourceGrid, device: torch.device, init, channels_last: bool
) -> UNet3d:
    """A fresh network (seeded by the caller), or one loaded from ``init``."""
    network = UNet3d(UNetConfig(**config.network), torch.from_numpy(grid.mask)).to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    if init is not None:  # a network without temporal context starts one with it at its own map
        load_weights(network, torch.load(init, map_location=device, weights_only=True))
    return network


def _make_transport(config: TrainConfig, grid: SourceGrid, device: torch.device) -> TransportLoss | None:
    if not config.transport_weight:
        return None
    torch.set_flush_denormal(True)  # the transport term's exp() underflows; denormals are slow on CPU
    return TransportLoss(torch.from_numpy(grid.mask)).to(device)


def _start_run(config: TrainConfig, out: Path, init) -> _Run:
    """Network, losses and optimiser, in the order that fixes the torch RNG's draws."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    ranks = _init_ranks(device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    dtype = train_dtype(config.precision, device)
    network = _make_network(config, grid, device, init, _train_channels_last(device, dtype))
    model = network
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # The only buffer is the brain mask, built identically on every rank, so nothing
        # is broadcast; torch 2.13 deprecates broadcast_buffers but its replacement
        # still syncs at init, which a channels_last (1, 1, D, H, W) mask cannot.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # a correction network sits out its first-pass steps, and the first pass's network
            # its second-pass steps
            model = DistributedDataParallel(
                network,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=network.correction is not None,
            )
    transport = _make_transport(config, grid, device)
    peak = (
        PeakLoss(torch.from_numpy(grid.mask), config.peak_temperature).to(device)
        if config.peak_weight
        else None
    )
    teacher = _load_teacher(config, device)
    grown = [m for m in (network.context_stem, network.correction) if m is not None]
    new = [p for m in grown for p in m.parameters()]
    groups = [dict(params=[p for p in network.parameters() if all(p is not c for c in new)])]
    if new:
        groups.append(dict(params=new, lr=config.lr if config.context_lr is None else config.context_lr))
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    run = _Run(config, out, device, grid, network, model, ranks, opt, sched, transport, teacher, peak)
    run.dtype = dtype
    return run


def _prepare_data(run: _Run, setups: tuple[list, list] | None) -> None:
    """The training engine over the train setups and (rank 0) the fixed validation set.

    Each rank draws its own samples: rank 0 from ``config.seed`` (as a run
    alone does), rank r from the stream ``[config.seed, r]``.
    """
    config, ranks = run.config, run.ranks
    if setups is None:
        if not config.train_setups or not config.val_setups:
            raise ValueError(
                "The training config has no train_setups or no val_setups. A fine-tune's stored config "
                "has none, since it trained on a user's forward and inverse (its weights' tuned_on): "
                "fine-tune again with mne_piunet.train.finetune.fine_tune, or list HeadSetup dicts in the config."
            )
        if not ranks.main:  # rank 0 fills the on-disk cache first; the others then read it
            _barrier(ranks)
        run.log(
            f"preparing {len(config.train_setups)} training and {len(config.val_setups)} validation setups"
        )
        train_setups = [
            prepare_setup(HeadSetup.from_dict(s), run.grid, lambda2=config.lambda2[i % len(config.lambda2)])
            for i, s in enumerate(config.train_setups)
        ]
        val_setups = _val_setups(config, run.grid) if ranks.main else None
        if ranks.main:
            _barrier(ranks)
    else:
        train_setups, val_setups = setups
    seed = config.seed if ranks.main else [config.seed, ranks.rank]
    run.engine = SimulationEngine(
        train_setups, run.grid, SourcePrior(**config.prior), seed=seed, network=run.network.config
    )
    if ranks.main:
        run.val = make_validation_set(config, run.grid, val_setups)


def _barrier(ranks: _Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _resume(run: _Run) -> None:
    """Restore the network, optimiser, scheduler, RNGs and state from the run's checkpoint."""
    if not run.checkpoint.exists():
        return
    saved = torch.load(run.checkpoint, map_location=run.device, weights_only=False)
    run.network.load_state_dict(saved["network"])
    run.opt.load_state_dict(saved["opt"])
    run.sched.load_state_dict(saved["sched"])
    run.state = saved["state"]
    if run.ranks.main and saved["rng"] is not None:
        run.engine.rng.bit_generator.state = saved["rng"]
    else:  # only rank 0's inline stream is saved; the others restart theirs from the step
        run.engine.rng = np.random.default_rng([run.config.seed, run.ranks.rank, run.state["step"]])
    torch.set_rng_state(saved["torch_rng"].cpu())  # map_location moved it to the run's device
    run.log(f"resumed at step {run.state['step']}")


def _save_checkpoint(run: _Run) -> None:
    """Write the resume state (written aside, then renamed: a crash never leaves half a file)."""
    if not run.ranks.main:
        return
    tmp = run.out / "checkpoint.tmp"
    # with worker processes the engines live there: a resumed run reseeds them from its step
    rng = run.engine.rng.bit_generator.state if run.batches is None else None
    torch.save(
        dict(
            network=run.network.state_dict(),
            opt=run.opt.state_dict(),
            sched=run.sched.state_dict(),
            rng=rng,
            torch_rng=torch.get_rng_state(),
            state=run.state,
        ),
        tmp,
    )
    tmp.replace(run.checkpoint)
    # usable weights at every checkpoint: a run cut short (a lent GPU's time running out) keeps them;
    # written aside and renamed, so a kill mid-write leaves the previous ones
    meta = dict(run.meta, provenance=_provenance(run), curve=run.state["curve"])
    written = save_network(run.network, run.out / "latest.tmp.pt", meta)
    written.replace(run.out / "latest.pt")
    written.with_suffix(".json").replace(run.out / "latest.json")


def _provenance(run: _Run) -> dict:
    """The run's provenance at its current step: steps, samples, minutes."""
    state = run.state
    return dict(
        run.meta.get("provenance", {}),
        steps=state["step"],
        samples=state["step"] * run.config.batch_size * run.ranks.world,
        minutes=round(state["elapsed"] / 60, 1),
    )


def _run_meta(run: _Run, init) -> dict:
    """What the exported weights record: grid, config and provenance (hardware, init, teacher)."""
    config = run.config
    meta = dict(
        grid=grid_meta(run.grid),
        train_config=asdict(config),
        provenance=dict(hardware=f"{platform.machine()} {run.device}", torch=torch.__version__),
    )
    if init is not None:  # a fine-tune is reproducible only from the weights it started from
        meta["provenance"]["init"] = dict(file=Path(init).name, sha256=file_sha256(init))
    if run.teacher is not None:
        teacher_file = bundled_weights_path() if config.teacher == "bundled" else Path(config.teacher)
        meta["provenance"]["teacher"] = dict(file=teacher_file.name, sha256=file_sha256(teacher_file))
    return meta


def _start_workers(run: _Run) -> None:
    """The DataLoader of :class:`SimulatedBatches` when the config asks for worker processes."""
    config = run.config
    if not config.data_workers:
        return
    stream = SimulatedBatches(
        run.engine.setups,
        run.grid,
        run.engine.prior,
        [config.seed, run.ranks.rank, run.state["step"]],
        config.batch_size,
        run.network.config,
    )
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=config.data_workers,
        prefetch_factor=4,
        pin_memory=run.device.type == "cuda",
        persistent_workers=True,
    )
    run.batches = iter(loader)
    run.log(f"simulating in {config.data_workers} worker process(es)")


def _next_batch(run: _Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Inputs, targets and log peak ratios of the next batch, on the run's device, and each sample's setup."""
    if run.batches is not None:
        inputs, targets, log_ratio, setups = next(run.batches)
    else:
        inputs, targets, meta = run.engine.batch(run.config.batch_size)
        log_ratio, setups = meta["log_ratio"], meta["setup"]
    non_blocking = run.device.type == "cuda"
    return (
        *(t.to(run.device, non_blocking=non_blocking) for t in (inputs, targets, log_ratio)),
        list(setups),
    )


def _residual_batch(
    run: _Run, inputs: torch.Tensor, setups: list[str]
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A batch's second-pass inputs, and the network's first pass (no gradient) whose residual they hold.

    The unrolled pass trains on what the network itself leaves unexplained;
    the first pass is not differentiated through (the first pass's network
    trains on the other steps).
    """
    with torch.no_grad():
        first = _forward(run, inputs)
    resolution = sample_resolution(run.engine.setups, setups)
    second = residual_inputs(inputs, run.network.scale(*first), run.grid, resolution, np.arange(len(inputs)))
    return second, first


def _forward(run: _Run, inputs: torch.Tensor, first=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's shape and log peak ratio, in the run's layout and autocast precision.

    ``first``: the first pass's, when ``inputs`` are a second pass's (:meth:`UNet3d.forward`).
    """
    if _train_channels_last(run.device, run.dtype):
        inputs = inputs.to(memory_format=torch.channels_last_3d)
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype != torch.float32):
        return run.model(inputs, first)


def _loss(run: _Run, inputs, shape, pred_log_ratio, targets, log_ratio) -> torch.Tensor:
    """The configured loss of one batch, in float32 (the transport term's Sinkhorn included)."""
    config = run.config
    loss = shape_amplitude_loss(shape, pred_log_ratio, targets, log_ratio, **_loss_kwargs(config))
    if run.transport is not None:
        loss = loss + config.transport_weight * run.transport(shape, targets)
    if run.peak is not None:
        loss = loss + config.peak_weight * run.peak(shape, targets)
    if run.teacher is not None:
        loss = loss + config.distill_weight * distill_loss(
            run.teacher, inputs, shape, pred_log_ratio, **_loss_kwargs(config)
        )
    return loss


def _optimise(run: _Run, loss: torch.Tensor) -> None:
    """Backward pass, gradient clipping and one AdamW and scheduler step."""
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.network.parameters(), 1.0)
    run.opt.step()
    run.sched.step()


def _train_step(run: _Run) -> tuple[float, int]:
    """One optimiser step on a fresh batch; return its loss and number of samples."""
    run.network.train()
    inputs, targets, log_ratio, setups = _next_batch(run)
    first = None
    if run.network.config.residual_pass and run.state["step"] % 2:  # every other step trains the second pass
        inputs, first = _residual_batch(run, inputs, setups)
    shape, pred_log_ratio = _forward(run, inputs, first)
    loss = _loss(run, inputs, shape, pred_log_ratio, targets, log_ratio)
    _optimise(run, loss)
    run.state["step"] += 1
    return loss.item(), len(inputs)


@dataclass
class _Window:
    """Training loss and throughput since the last validation."""

    samples: int = 0
    t0: float = field(default_factory=time.time)
    loss_sum: float = 0.0
    n_steps: int = 0

    def add(self, loss: float, samples: int) -> None:
        self.samples += samples
        self.loss_sum += loss
        self.n_steps += 1


def _validate_and_keep_best(run: _Run, window: _Window) -> None:
    """Score the validation set, extend the curve and log; export ``best.pt`` on a new best."""
    step, state, val = run.state["step"], run.state, run.val
    nemd = validation_nemd(run.network, val, run.grid)
    rate = window.samples / (time.time() - window.t0)
    state["elapsed"] = time.time() - run.t_start
    loss = window.loss_sum / window.n_steps
    state["curve"].append(dict(step=step, minutes=state["elapsed"] / 60, loss=loss, val_nemd=nemd))
    run.log(
        f"step {step} loss {loss:.4g} val NEMD {nemd:.3f} "
        f"(eLORETA {val['eloreta_nemd']:.3f}) lr {run.sched.get_last_lr()[0]:.2e} {rate:.1f} samples/s"
    )
    if nemd < state["best"]:
        state["best"] = nemd
        provenance = dict(_provenance(run), val_nemd=nemd, val_eloreta_nemd=val["eloreta_nemd"])
        save_network(
            run.network, run.out / "best.pt", dict(run.meta, provenance=provenance, curve=state["curve"])
        )


def _loop(run: _Run) -> None:
    """Step until ``max_steps`` or the time budget: validate on schedule, checkpoint on time."""
    config, state = run.config, run.state
    t_last_ckpt = time.time()
    run.t_start = time.time() - state["elapsed"]
    window = _Window()
    while state["step"] < config.max_steps:
        over = bool(config.max_minutes) and (time.time() - run.t_start) / 60 > config.max_minutes
        if _broadcast_flag(over or run.stop.is_set(), run.ranks, run.device):
            run.log(
                "stopped on request"
                if run.stop.is_set()
                else f"time budget of {config.max_minutes} min reached"
            )
            if run.ranks.main and window.n_steps:  # score the last weights too
                _validate_and_keep_best(run, window)
            break
        window.add(*_train_step(run))
        step = state["step"]
        if run.ranks.main and (step % config.val_every_steps == 0 or step == config.max_steps):
            _validate_and_keep_best(run, window)
            window = _Window()
        if time.time() - t_last_ckpt > config.checkpoint_every_s:
            state["elapsed"] = time.time() - run.t_start
            _save_checkpoint(run)
            t_last_ckpt = time.time()
    state["elapsed"] = time.time() - run.t_start
    _save_checkpoint(run)


def train(
    config: TrainConfig,
    out: str | Path,
    init: str | Path | None = None,
    *,
    setups: tuple[list[PreparedSetup], list[PreparedSetup]] | None = None,
) -> Path:
    """Train (or resume) a PIUNet; return the path of the best checkpoint's export.

    Under ``torchrun --nproc_per_node N`` the run is data-parallel
    (DistributedDataParallel; gloo on CPUs, NCCL on GPUs): every rank draws
    ``config.batch_size`` samples from its own seed stream, so a step sees
    ``N * batch_size`` samples; rank 0 alone validates, logs and writes files.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    out : path
        Output folder: ``train.log``, ``checkpoint.pt`` (resume state),
        ``best.pt``/``best.json`` (exported weights of the best validation NEMD)
        and ``final.pt``/``final.json`` (the last checkpoint's export).
    init : path | None
        Weights (``.pt`` from :func:`~mne_piunet.network.save_network`) to
        fine-tune from instead of a random start. Their validation NEMD is
        the curve's first point and ``provenance["init"]["val_nemd"]``.
    setups : tuple of (list of PreparedSetup, list of PreparedSetup) | None
        Prepared training and validation setups to use instead of the config's
        (:func:`mne_piunet.train.finetune.fine_tune` passes a user's own).

    Returns
    -------
    best : pathlib.Path
        ``out / "best.pt"``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _stop_on_signals() as stop:  # from the start: a kill during set-up still ends cleanly
        run = _start_run(config, out, init)
        run.stop = stop
        _prepare_data(run, setups)
        _resume(run)
        run.meta = _run_meta(run, init)
        if run.ranks.main:
            n_params = sum(p.numel() for p in run.network.parameters())
            run.log(
                f"device {run.device} x {run.ranks.world}, {str(run.dtype)[6:]}, "
                f"{torch.get_num_threads()} threads, {n_params:,} parameters, "
                f"grid {run.grid.shape}, eLORETA validation NEMD {run.val['eloreta_nemd']:.3f}"
            )
            _validate_init(run, init)
        run.state["world"] = run.ranks.world  # samples per step = world * batch_size
        _start_workers(run)
        _loop(run)
    _check_ranks_agree(run)
    if run.ranks.main:
        if not (out / "best.pt").exists():
            save_network(run.network, out / "best.pt", dict(run.meta, curve=run.state["curve"]))
        export_checkpoint(out)
    if run.ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out / "best.pt"


@contextlib.contextmanager
def _stop_on_signals():
    """An event that SIGTERM or SIGINT (``kill PID``, Ctrl-C) set: the run then ends after its step.

    The loop checks it before every step, then validates, checkpoints and
    exports; the previous handlers are restored on leaving.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _validate_init(run: _Run, init) -> None:
    """Score the initial weights once, so the curve starts where the fine-tune did."""
    if init is None:
        return
    if run.state["step"] == 0:
        nemd = validation_nemd(run.network, run.val, run.grid)
        run.state["init_val_nemd"] = nemd
        run.state["curve"].append(dict(step=0, minutes=0.0, loss=None, val_nemd=nemd))
        run.log(f"step 0 (initial weights) val NEMD {nemd:.3f}")
    run.meta["provenance"]["init"]["val_nemd"] = run.state.get("init_val_nemd")


def export_checkpoint(run: str | Path, fname: str | Path | None = None) -> Path:
    """Export a run's last checkpoint as package-ready weights (``final.pt`` + JSON).

    The configuration and grid come from the run's ``best.json``; provenance
    records the checkpoint's step, samples and wall time.

    Parameters
    ----------
    run : path-like
        The run's output folder (``best.json`` and ``checkpoint.pt``).
    fname : path-like | None
        The weights file to write (default: ``run / "final.pt"``).

    Returns
    -------
    fname : pathlib.Path
        The weights file written.
    """
    run = Path(run)
    meta = json.loads((run / "best.json").read_text())
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = saved["state"]
    grid = grid_from_meta(meta["grid"])
    network = UNet3d(UNetConfig(**meta["config"]), torch.from_numpy(grid.mask))
    network.load_state_dict(saved["network"])
    batch = meta["train_config"]["batch_size"]
    provenance = dict(
        meta.get("provenance", {}),
        steps=state["step"],
        samples=state["step"] * batch * state.get("world", 1),
        minutes=round(state["elapsed"] / 60, 1),
        val_nemd=state["curve"][-1]["val_nemd"] if state["curve"] else None,
    )
    keep = {k: v for k, v in meta.items() if k not in ("config", "sha256", "format_version")}
    return save_network(
        network, fname or run / "final.pt", dict(keep, provenance=provenance, curve=state["curve"])
    )


def blend_weights(first: str | Path, second: str | Path, alpha: float, out: str | Path) -> Path:
    """Interpolate two weight files of one network: ``(1 - alpha) * first + alpha * second``.

    Fine-tuning on many-source data trades single-source sharpness for
    many-source robustness. Interpolating the weights before and after the
    fine-tune (as WiSE-FT does, Wortsman et al., CVPR 2022) moves along that
    trade-off without retraining; pick ``alpha`` on validation setups.

    Parameters
    ----------
    first, second : path
        Weight files (``.pt`` with their JSON) of the same architecture and grid.
    alpha : float
        Weight of ``second``, in [0, 1].
    out : path
        The blended weights' file; its JSON records both inputs' sha256 and alpha.

    Returns
    -------
    out : pathlib.Path
        The weights file written.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, b = load_network(first), load_network(second)
    # the configs as dataclasses: a file written before a field existed holds its default
    for key, (va, vb) in dict(
        config=(a.network.config, b.network.config), grid=(a.meta["grid"], b.meta["grid"])
    ).items():
        if va != vb:
            raise ValueError(
                f"Cannot blend {first} and {second}: their {key} differs ({va} vs {vb}); "
                "blend only a model and its own fine-tune"
            )
    sa, sb = a.network.state_dict(), b.network.state_dict()
    params = {name for name, _ in a.network.named_parameters()}  # buffers (the brain mask) stay the first's
    a.network.load_state_dict({k: torch.lerp(sa[k], sb[k], alpha) if k in params else sa[k] for k in sa})
    keep = {k: v for k, v in b.meta.items() if k not in ("config", "sha256", "format_version", "provenance")}
    sources = [
        dict(file=Path(f).name, sha256=m.meta["sha256"], provenance=m.meta.get("provenance"))
        for f, m in ((first, a), (second, b))
    ]
    provenance = dict(blend=dict(alpha=alpha, first=sources[0], second=sources[1]))
    return save_network(a.network, out, dict(keep, provenance=provenance))


def validate_by_sources(
    weights: list[str | Path],
    config: TrainConfig,
    n_sources: tuple[int, ...] = N_SOURCES_SWEEP,
    n_per_setup: int = 12,
    seed: int = BY_SOURCES_SEED,
) -> dict[str, dict[int, float]]:
    """Mean coarse NEMD per number of sources on the config's *validation* setups.

    This is how the bundled blend's ``alpha`` was chosen: every candidate and
    eLORETA (key ``"eLORETA"``) see the same samples, ``n_per_setup`` per
    validation setup and number of sources, SNR uniform over the prior's range.
    When a candidate has a temporal context, every sample is a time course
    over its window (the same window for all such candidates); a candidate
    without one refines the centre map alone.

    Parameters
    ----------
    weights : list of path-like
        The candidate weight files.
    config : TrainConfig
        Its ``val_setups`` (eLORETA at ``lambda2[0]``), ``prior`` and grid.
    n_sources : tuple of int
        The numbers of simultaneous sources to score.
    n_per_setup : int
        Samples per validation setup and number of sources.
    seed : int
        Seed of the samples, apart from training's and the validation set's
        (:data:`~mne_piunet.simulation.seeds.BY_SOURCES_SEED`).

    Returns
    -------
    nemd : dict of dict
        ``nemd[name][k]``: mean coarse NEMD with ``k`` sources, for ``name``
        ``"eLORETA"`` and each weight file (as ``str``).
    """
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    setups = _val_setups(config, grid)
    networks = {str(w): prepare_network(load_network(w).network, torch.device("cpu")) for w in weights}
    windows = {network_window(net.config) for net in networks.values()} - {None}
    if len(windows) > 1:
        raise ValueError(f"The candidates' temporal windows differ ({sorted(windows)}): compare them apart")
    window = windows.pop() if windows else None
    music = any(net.config.scans_data for net in networks.values())
    rng = np.random.default_rng(seed)
    prior = SourcePrior(**config.prior)
    out: dict[str, dict[int, float]] = {name: {} for name in ["eLORETA", *networks]}
    for k in n_sources:
        batches = [
            simulate(s, n_per_setup, rng, prior, n_sources=k, window=window, music=music) for s in setups
        ]
        x0 = np.concatenate([b.eloreta_grid for b in batches])
        x = np.concatenate([b.true_grid for b in batches])
        maps = {"eLORETA": x0} | {
            name: predict_maps(
                net,
                grid,
                *batch_maps(batches, net.config),
                fit=batch_fits(batches, net.config),
                resolution=batch_resolution(batches, setups, net.config),
            )
            for name, net in networks.items()
        }
        for name, est in maps.items():
            out[name][k] = mean_coarse_nemd(est, x, grid)
    return out
