"""Training: on-the-fly simulation, L1 loss, checkpoints, resume, export.

``mne-piunet train --config CONFIG --out DIR`` runs :func:`train`. Data are drawn
by :class:`~mne_piunet.simulation.SimulationEngine` over the configured
(domain-randomised) setups; a fixed validation set from *held-out* setups is
scored by NEMD on a coarsened grid. The loop checkpoints every few minutes and
resumes from ``DIR/checkpoint.pt``; ``export`` writes package-ready weights.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from mne.utils import logger
from torch.nn import functional as F

from .grid import DEFAULT_MINDIST_MM, DEFAULT_SPACING_MM, SourceGrid, get_grid, grid_meta
from .inference import predict_maps, prepare_network
from .metrics import coarse_nemd
from .network import (
    UNet3d,
    UNetConfig,
    bundled_weights_path,
    file_sha256,
    load_network,
    resolve_device,
    save_network,
)
from .simulation import HeadSetup, SimulationEngine, SourcePrior, prepare_setup, simulate


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored with the weights)."""

    train_setups: list[dict] = field(default_factory=lambda: [dict(montage="easycap-M10")])
    val_setups: list[dict] = field(
        default_factory=lambda: [dict(montage="biosemi64", source_space="surface")]
    )
    lambda2: list[float] = field(default_factory=lambda: [1.0 / 9.0])
    prior: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)
    grid_spacing_mm: float = DEFAULT_SPACING_MM
    grid_mindist_mm: float = DEFAULT_MINDIST_MM
    batch_size: int = 16
    amplitude_weight: float = 0.1
    loss_scales: list[int] = field(default_factory=lambda: [1])
    loss_norms: list[str] = field(default_factory=lambda: ["l1"])
    transport_weight: float = 0.0
    #: Weights to distil from (a ``.pt`` path, or ``"bundled"``): the student also
    #: matches the teacher's shape and log peak ratio on every training batch,
    #: weighted by ``distill_weight``. How a cheaper architecture inherits the
    #: bundled model's CPU-hours instead of starting over.
    teacher: str | None = None
    distill_weight: float = 0.0
    lr: float = 1e-3
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

    @classmethod
    def from_json(cls, fname: str | Path) -> TrainConfig:
        data = json.loads(Path(fname).read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown training config keys {sorted(unknown)} in {fname}")
        return cls(**data)


def default_config_path() -> Path:
    """The bundled config of the shipped model's first stage (training from scratch)."""
    return Path(str(files("mne_piunet") / "weights" / "train_config.json"))


def finetune_config_path() -> Path:
    """The bundled config of the shipped model's second stage (fine-tuning, transport term)."""
    return Path(str(files("mne_piunet") / "weights" / "finetune_config.json"))


def make_validation_set(config: TrainConfig, grid: SourceGrid) -> dict:
    """Fixed validation samples from the held-out setups (seeded)."""
    prior = SourcePrior(**config.prior)
    engine = SimulationEngine(_val_setups(config, grid), grid, prior, seed=config.seed + 10_000)
    chunks = engine.sample(config.val_size)
    x0 = np.concatenate([c.eloreta_grid for c in chunks])
    x = np.concatenate([c.true_grid for c in chunks])
    return dict(eloreta=x0, truth=x, eloreta_nemd=mean_coarse_nemd(x0, x, grid))


def _val_setups(config: TrainConfig, grid: SourceGrid) -> list:
    """The config's validation setups, prepared (eLORETA at the first lambda2)."""
    return [
        prepare_setup(HeadSetup(**_setup_kwargs(s)), grid, lambda2=config.lambda2[0])
        for s in config.val_setups
    ]


def mean_coarse_nemd(est: np.ndarray, truth: np.ndarray, grid: SourceGrid) -> float:
    """Mean NEMD on 16 mm cells of (n, n_grid, 3) maps against their truths."""
    return float(np.nanmean([coarse_nemd(e, t, grid.pos) for e, t in zip(est, truth)]))


def _setup_kwargs(spec: dict) -> dict:
    spec = dict(spec)
    if "conductivity" in spec:
        spec["conductivity"] = tuple(spec["conductivity"])
    return spec


def validate(network: UNet3d, val: dict, grid: SourceGrid) -> float:
    """Mean coarse NEMD of the network on the validation set (fp32)."""
    network.eval()
    return mean_coarse_nemd(predict_maps(network, grid, val["eloreta"]), val["truth"], grid)


def relative_loss(
    pred: torch.Tensor, target: torch.Tensor, scales: tuple[int, ...] = (1,), norms: tuple[str, ...] = ("l1",)
) -> torch.Tensor:
    """L1 and/or L2 in source space relative to the target's norm, averaged over scales.

    Each term is per sample relative to the target's norm, so focal and diffuse
    maps weigh the same (the all-zero map scores 1 per term). L1 is what the
    paper's ablation favours, but from the all-zero start it settles on
    near-zero maps (the median of an uncertain posterior is 0) and leaves them
    slowly; adding L2 (the posterior mean) keeps mass where sources may be.
    With ``scales=(1, 2, 4)`` the maps are also compared after average pooling
    by 2 and 4 voxels: mass put near the right place earns credit, as it does
    in the earth mover's distance.
    """
    losses = []
    for s in scales:
        p = F.avg_pool3d(pred, s) if s > 1 else pred
        t = F.avg_pool3d(target, s) if s > 1 else target
        dims = tuple(range(1, t.ndim))
        for norm in norms:
            power = {"l1": 1, "l2": 2}[norm]
            err = (p - t).abs().pow(power).sum(dims)
            losses.append((err / t.abs().pow(power).sum(dims).clamp_min(1e-12)).mean())
    return torch.stack(losses).mean()


class TransportLoss(torch.nn.Module):
    """A differentiable stand-in for NEMD: a Sinkhorn divergence on coarse cells.

    The relative L1/L2 loss rewards dropping a source the network is unsure
    of (its median is zero), while NEMD must then carry that source's mass
    across the head. This term scores what NEMD scores: both maps' moment
    magnitudes are summed into ``pool``-voxel cubes (24 mm on the 8 mm grid:
    225 cells, 0.2-0.3 s per batch of 16 here; 635 cells of 16 mm cost ~20x), normalised
    to unit mass and compared by the debiased entropic transport cost
    (Euclidean ground distance, blur ``blur`` cells), divided by the truth's
    cost from the uniform map. For Gaussian blobs (sigma 1-2.5 cm) shifted by
    1-5 cm it is within 0.12 of the exact EMD ratio on the same cells.

    Potentials come from log-domain Sinkhorn iterations without autograd, with
    the blur annealed from the head's diameter; at convergence the gradient of
    the divergence with respect to the estimate's masses is the difference of
    its potentials, so one inner product carries it (the envelope theorem).
    """

    def __init__(self, mask: torch.Tensor, pool: int = 3, blur: float = 0.1, n_iter: int = 20):
        super().__init__()
        coarse = F.max_pool3d(mask.float()[None, None], pool, ceil_mode=True)[0, 0] > 0
        self.pool = pool
        self.register_buffer("index", torch.nonzero(coarse.flatten()).ravel())
        cells = torch.nonzero(coarse).float()
        self.register_buffer("cost", torch.cdist(cells, cells))
        # blur annealed from the head's diameter down to ``blur`` (cells), fixed per grid
        self.blurs = np.geomspace(float(self.cost.max()), blur, n_iter).tolist()
        n = len(cells)
        self.register_buffer("uniform", torch.full((n,), 1.0 / n))
        self.self_cost_uniform = float((self.uniform * self._self_cost(self.uniform[None])).sum())

    def masses(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-mass coarse magnitude maps, shape (n, n_cells), of (n, 3, *grid)."""
        magnitude = x.float().pow(2).sum(1, keepdim=True).add(1e-12).sqrt()
        cells = F.avg_pool3d(magnitude, self.pool, ceil_mode=True).flatten(1)[:, self.index]
        return cells / cells.sum(1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def _potentials(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_a, log_b = a.clamp_min(1e-30).log(), b.clamp_min(1e-30).log()
        f, g = torch.zeros_like(a), torch.zeros_like(b)
        for eps in self.blurs:
            c = self.cost / eps
            f = -eps * torch.logsumexp(log_b[:, None, :] + g[:, None, :] / eps - c, dim=2)
            # g from the new f: a consistent pair, whose dual value is the cost
            g = -eps * torch.logsumexp(log_a[:, :, None] + f[:, :, None] / eps - c, dim=1)
        return f, g

    def _self_cost(self, a: torch.Tensor) -> torch.Tensor:
        """OT(a, a) / 2 as (potential per cell); its inner product with ``a`` is the value."""
        f, g = self._potentials(a, a)
        return (f + g) / 2  # f and g may differ by a constant; their mean is symmetric

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self.masses(pred), self.masses(target)
        f_ab, g_ab = self._potentials(a, b)
        h_aa, h_bb = self._self_cost(a), self._self_cost(b)
        # debiased S(a, b) = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2: the inner products
        # with the potentials carry the value and, at convergence, the gradient in a
        divergence = (a * (f_ab - h_aa)).sum(1) + (b * (g_ab - h_bb)).sum(1)
        with torch.no_grad():
            u = self.uniform.expand_as(b)
            f_ub, g_ub = self._potentials(u, b)
            reference = (u * f_ub).sum(1) + (b * (g_ub - h_bb)).sum(1) - self.self_cost_uniform
        return (divergence / reference.clamp_min(1e-6)).mean()


def _load_teacher(config: TrainConfig, device: torch.device) -> UNet3d | None:
    if not config.teacher:
        return None
    teacher = load_network(None if config.teacher == "bundled" else config.teacher, device).network
    return teacher.requires_grad_(False).eval()


def _distill_loss(
    teacher: UNet3d, inputs: torch.Tensor, shape: torch.Tensor, log_ratio: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """The student's loss against the teacher's outputs, in the units of the truth's loss."""
    # bf16 halves the teacher's cost; its ~1e-2 relative error is far below the
    # student's, and on CPUs without native bf16 autocast only costs time.
    with torch.no_grad(), torch.autocast(inputs.device.type, dtype=torch.bfloat16):
        t_shape, t_log_ratio = teacher(inputs)
    loss = relative_loss(shape.float(), t_shape.float(), tuple(config.loss_scales), tuple(config.loss_norms))
    return loss + config.amplitude_weight * (log_ratio.float() - t_log_ratio.float()).abs().mean()


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _log(out: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    logger.info(line)
    with open(out / "train.log", "a") as fid:
        fid.write(line + "\n")


def train(config: TrainConfig, out: str | Path, init: str | Path | None = None) -> Path:
    """Train (or resume) a PIUNet; return the path of the best checkpoint's export.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    out : path
        Output folder: ``train.log``, ``checkpoint.pt`` (resume state),
        ``best.pt``/``best.json`` (exported weights of the best validation NEMD).
    init : path | None
        Weights (``.pt`` from :func:`~mne_piunet.network.save_network`) to
        fine-tune from instead of a random start.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    network = UNet3d(UNetConfig(**config.network), torch.from_numpy(grid.mask)).to(device)
    if device.type == "cpu":
        # channels_last is ~20% faster for 3-D convolutions on this kind of CPU
        network = network.to(memory_format=torch.channels_last_3d)
    if init is not None:
        state = torch.load(init, map_location=device, weights_only=True)
        network.load_state_dict(state)
    transport = None
    if config.transport_weight:
        torch.set_flush_denormal(True)  # the transport term's exp() underflows; denormals are slow on CPU
        transport = TransportLoss(torch.from_numpy(grid.mask)).to(device)
    teacher = _load_teacher(config, device)
    opt = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))

    _log(out, f"preparing {len(config.train_setups)} training and {len(config.val_setups)} validation setups")
    prior = SourcePrior(**config.prior)
    setups = [
        prepare_setup(HeadSetup(**_setup_kwargs(s)), grid, lambda2=config.lambda2[i % len(config.lambda2)])
        for i, s in enumerate(config.train_setups)
    ]
    engine = SimulationEngine(setups, grid, prior, seed=config.seed)
    val = make_validation_set(config, grid)
    state = dict(step=0, elapsed=0.0, best=float("inf"), curve=[])
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        network.load_state_dict(saved["network"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        engine.rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        _log(out, f"resumed at step {state['step']}")
    _log(out, f"device {device}, {sum(p.numel() for p in network.parameters()):,} parameters, "
              f"grid {grid.shape}, eLORETA validation NEMD {val['eloreta_nemd']:.3f}")  # fmt: skip

    def save_checkpoint():
        torch.save(
            dict(network=network.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                 rng=engine.rng.bit_generator.state, torch_rng=torch.get_rng_state(), state=state),
            out / "checkpoint.tmp",
        )  # fmt: skip
        (out / "checkpoint.tmp").replace(ckpt)

    meta = dict(
        grid=grid_meta(grid), train_config=asdict(config),
        provenance=dict(hardware=f"{platform.machine()} {device}", torch=torch.__version__),
    )  # fmt: skip
    if init is not None:  # a fine-tune is reproducible only from the weights it started from
        meta["provenance"]["init"] = dict(file=Path(init).name, sha256=file_sha256(init))
    if teacher is not None:
        teacher_file = bundled_weights_path() if config.teacher == "bundled" else Path(config.teacher)
        meta["provenance"]["teacher"] = dict(file=teacher_file.name, sha256=file_sha256(teacher_file))
    t_last_ckpt = time.time()
    t_start = time.time() - state["elapsed"]
    samples, t_window, loss_sum, n_window = 0, time.time(), 0.0, 0
    while state["step"] < config.max_steps:
        if config.max_minutes and (time.time() - t_start) / 60 > config.max_minutes:
            _log(out, f"time budget of {config.max_minutes} min reached")
            break
        network.train()
        inputs, targets, batch_meta = engine.batch(config.batch_size)
        inputs, targets = inputs.to(device), targets.to(device)
        log_ratio = batch_meta["log_ratio"].to(device)
        if device.type == "cpu":
            inputs = inputs.to(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            shape, pred_log_ratio = network(inputs)
        loss = relative_loss(shape.float(), targets, tuple(config.loss_scales), tuple(config.loss_norms))
        loss = loss + config.amplitude_weight * (pred_log_ratio.float() - log_ratio).abs().mean()
        if transport is not None:
            loss = loss + config.transport_weight * transport(shape, targets)
        if teacher is not None:
            loss = loss + config.distill_weight * _distill_loss(
                teacher, inputs, shape, pred_log_ratio, config
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        opt.step()
        sched.step()
        state["step"] += 1
        samples += len(inputs)
        loss_sum += loss.item()
        n_window += 1
        step = state["step"]
        if step % config.val_every_steps == 0 or step == config.max_steps:
            nemd = validate(network, val, grid)
            rate = samples / (time.time() - t_window)
            state["elapsed"] = time.time() - t_start
            state["curve"].append(
                dict(
                    step=step,
                    minutes=state["elapsed"] / 60,
                    loss=loss_sum / n_window,
                    val_nemd=nemd,
                )
            )
            _log(out, f"step {step} loss {loss_sum / n_window:.4g} val NEMD {nemd:.3f} "
                      f"(eLORETA {val['eloreta_nemd']:.3f}) lr {sched.get_last_lr()[0]:.2e} {rate:.1f} samples/s")  # fmt: skip
            if nemd < state["best"]:
                state["best"] = nemd
                provenance = dict(meta["provenance"], steps=step, samples=step * config.batch_size,
                                  minutes=round(state["elapsed"] / 60, 1), val_nemd=nemd,
                                  val_eloreta_nemd=val["eloreta_nemd"])  # fmt: skip
                save_network(
                    network, out / "best.pt", dict(meta, provenance=provenance, curve=state["curve"])
                )
            samples, t_window, loss_sum, n_window = 0, time.time(), 0.0, 0
        if time.time() - t_last_ckpt > config.checkpoint_every_s:
            state["elapsed"] = time.time() - t_start
            save_checkpoint()
            t_last_ckpt = time.time()
    state["elapsed"] = time.time() - t_start
    save_checkpoint()
    if not (out / "best.pt").exists():
        save_network(network, out / "best.pt", dict(meta, curve=state["curve"]))
    export_checkpoint(out)
    return out / "best.pt"


def export_checkpoint(run: str | Path, fname: str | Path | None = None) -> Path:
    """Export a run's last checkpoint as package-ready weights (``final.pt`` + JSON).

    The configuration and grid come from the run's ``best.json``; provenance
    records the checkpoint's step, samples and wall time.
    """
    run = Path(run)
    meta = json.loads((run / "best.json").read_text())
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = saved["state"]
    grid = get_grid(meta["grid"]["spacing_mm"], meta["grid"].get("mindist_mm", DEFAULT_MINDIST_MM))
    network = UNet3d(UNetConfig(**meta["config"]), torch.from_numpy(grid.mask))
    network.load_state_dict(saved["network"])
    batch = meta["train_config"]["batch_size"]
    provenance = dict(
        meta.get("provenance", {}), steps=state["step"], samples=state["step"] * batch,
        minutes=round(state["elapsed"] / 60, 1), val_nemd=state["curve"][-1]["val_nemd"] if state["curve"] else None,
    )  # fmt: skip
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
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, b = load_network(first), load_network(second)
    for key in ("config", "grid"):
        if a.meta[key] != b.meta[key]:
            raise ValueError(
                f"Cannot blend {first} and {second}: their {key} differs ({a.meta[key]} vs {b.meta[key]}); "
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
    n_sources: tuple[int, ...] = (1, 2, 3, 5, 10),
    n_per_setup: int = 12,
    seed: int = 20_000,
) -> dict[str, dict[int, float]]:
    """Mean coarse NEMD per number of sources on the config's *validation* setups.

    This is how the bundled blend's ``alpha`` was chosen: every candidate and
    eLORETA (key ``"eLORETA"``) see the same samples, ``n_per_setup`` per
    validation setup and number of sources, SNR uniform over the prior's range.
    """
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    setups = _val_setups(config, grid)
    networks = {str(w): prepare_network(load_network(w).network, torch.device("cpu")) for w in weights}
    rng = np.random.default_rng(seed)
    prior = SourcePrior(**config.prior)
    out: dict[str, dict[int, float]] = {name: {} for name in ["eLORETA", *networks]}
    for k in n_sources:
        batches = [simulate(s, n_per_setup, rng, prior, n_sources=k) for s in setups]
        x0 = np.concatenate([b.eloreta_grid for b in batches])
        x = np.concatenate([b.true_grid for b in batches])
        maps = {"eLORETA": x0, **{name: predict_maps(net, grid, x0) for name, net in networks.items()}}
        for name, est in maps.items():
            out[name][k] = mean_coarse_nemd(est, x, grid)
    return out
