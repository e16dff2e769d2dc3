"""The 3-D U-Net that refines an eLORETA estimate on the grid, and its weight files.

In the spirit of 3D-PIUNet's network (a diffusion-model U-Net): residual blocks
(GroupNorm, SiLU, 3x3x3 convolutions, 1x1x1 skip when the width changes),
multi-head self-attention at the coarsest level and in the middle, skip
connections, 3 input and 3 output channels (the moment vector per voxel), no
output activation, and a brain mask so voxels outside the brain stay zero.

This module knows nothing of MNE (torch only): the grid arrives as a mask tensor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._cache import file_sha256

#: Version of the network/config format; stored with the weights.
FORMAT_VERSION = 1
WEIGHTS_NAME = "piunet"


#: Extra input channels of each temporal context (:attr:`UNetConfig.context`).
CONTEXT_CHANNELS = {"none": 0, "power": 1, "subspace": 6, "power-music": 2}


@dataclass
class UNetConfig:
    """Architecture of :class:`UNet3d` (saved with the weights).

    Parameters
    ----------
    width : int
        Channels at the finest level, doubled at each coarser level; a
        multiple of ``groups``.
    levels : int
        Resolution levels (>= 2); each grid dimension must be divisible by
        ``space_to_depth * 2 ** (levels - 1)``.
    blocks : int
        Residual blocks per level, down and up.
    heads : int
        Attention heads at the coarsest level and in the middle.
    groups : int
        GroupNorm groups.
    in_channels : int | None
        Input channels: the map's moment vector (3), the context's
        (:data:`CONTEXT_CHANNELS`) and the residual pass's (3); None: that sum.
    out_channels : int
        Channels of the output map (3: a moment vector per voxel).
    space_to_depth : int
        ``f``: fold each ``f x f x f`` block of voxels into channels before the
        U-Net and unfold after it (:func:`fold_blocks`), so the U-Net runs on a
        grid ``f`` times coarser while still predicting every voxel. 2 cuts the
        cost about 4x (the model card's frontier table); 1 is the plain U-Net.
    context : "none" | "power" | "subspace" | "power-music"
        What the network sees of the time course around each map, besides the
        map itself (:data:`CONTEXT_CHANNELS` extra input channels, made by
        :func:`mne_piunet.inference.network_inputs`): nothing, the window's RMS
        amplitude per voxel, the window's two leading principal maps, or the
        RMS amplitude and the MUSIC scan of the window's data through the
        inverse operator's gain (:func:`mne_piunet.physics.music_spectrum`).
    window_s : float
        The window's length (s), centred on the map; defined in seconds so
        that it means the same at any sampling rate.
    window_points : int
        Time points sampled evenly over the window (odd: the centre is one).
    residual_pass : bool
        Run a second pass (the network again, or its correction network:
        ``correction_width``), which also sees the eLORETA map of
        what the first pass's map leaves unexplained of the data
        (:func:`mne_piunet.inference.residual_inputs`, through the inverse
        operator's gain and kernel). Three more input channels, last; in the
        first pass they hold the input map itself (the residual of an empty
        estimate), so a network grown from one without them starts as that
        network in both passes (:func:`load_weights`).
    correction_width : int
        Who runs the residual pass's second pass. 0: the same network (its
        stem sees the residual channels). > 0: a small correction network of
        this width (:class:`ResidualCorrection`), which sees the input map,
        the first pass's map and its residual and corrects the first pass's
        shape and peak ratio; the first pass's network then never sees the
        residual channels, and the correction starts at zero (a network
        grown from one without it starts as that network).
    """

    width: int = 16
    levels: int = 3
    blocks: int = 1
    heads: int = 4
    groups: int = 8
    in_channels: int | None = None
    out_channels: int = 3
    space_to_depth: int = 1
    context: str = "none"
    window_s: float = 0.0
    window_points: int = 1
    residual_pass: bool = False
    correction_width: int = 0

    @property
    def scans_data(self) -> bool:
        """Whether the network's input holds the MUSIC scan of the window's data (``"power-music"``)."""
        return self.context == "power-music"

    def __post_init__(self):
        if self.context not in CONTEXT_CHANNELS:
            raise ValueError(
                f"Invalid value for the 'context' parameter. Allowed values are {', '.join(map(repr, CONTEXT_CHANNELS))}, "
                f"but got {self.context!r} instead."
            )
        expected = 3 + CONTEXT_CHANNELS[self.context] + 3 * bool(self.residual_pass)
        if self.in_channels is None:
            self.in_channels = expected
        if self.in_channels != expected:
            raise ValueError(
                f"context={self.context!r} with residual_pass={self.residual_pass} needs in_channels={expected} "
                f"(the map's 3, the context's {CONTEXT_CHANNELS[self.context]} and the residual pass's "
                f"{3 * bool(self.residual_pass)}), got {self.in_channels}"
            )
        if self.context != "none" and (
            self.window_s <= 0 or self.window_points < 3 or self.window_points % 2 == 0
        ):
            raise ValueError(
                f"A temporal context needs window_s > 0 and an odd window_points >= 3, got "
                f"window_s={self.window_s}, window_points={self.window_points}"
            )
        if self.levels < 2 or self.width < self.groups or self.width % self.groups:
            raise ValueError(
                f"Need levels >= 2 and width a multiple of groups ({self.groups}); got "
                f"levels={self.levels}, width={self.width}"
            )
        if self.space_to_depth < 1:
            raise ValueError(f"space_to_depth must be >= 1, got {self.space_to_depth}")
        if self.correction_width and (
            not self.residual_pass or self.correction_width < 0 or self.correction_width % self.groups
        ):
            raise ValueError(
                f"A correction network needs residual_pass=True and a correction_width that is a positive multiple "
                f"of groups ({self.groups}); got residual_pass={self.residual_pass}, "
                f"correction_width={self.correction_width}"
            )


def fold_blocks(x: torch.Tensor, f: int) -> torch.Tensor:
    """Space-to-depth: (b, c, D, H, W) -> (b, c * f**3, D / f, H / f, W / f).

    Parameters
    ----------
    x : torch.Tensor, shape (b, c, D, H, W)
        Each of D, H and W divisible by ``f``.
    f : int
        Block size (1: ``x`` unchanged).

    Returns
    -------
    folded : torch.Tensor, shape (b, c * f**3, D / f, H / f, W / f)
        Each ``f x f x f`` block of voxels in channels.
    """
    if f == 1:
        return x
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // f, f, h // f, f, w // f, f).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * f**3, d // f, h // f, w // f)


def unfold_blocks(x: torch.Tensor, f: int) -> torch.Tensor:
    """Depth-to-space, the inverse of :func:`fold_blocks`.

    Parameters
    ----------
    x : torch.Tensor, shape (b, c * f**3, d, h, w)
        A folded tensor.
    f : int
        Block size (1: ``x`` unchanged).

    Returns
    -------
    unfolded : torch.Tensor, shape (b, c, d * f, h * f, w * f)
        The blocks back in space.
    """
    if f == 1:
        return x
    b, c, d, h, w = x.shape
    c //= f**3
    x = x.reshape(b, c, f, f, f, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * f, h * f, w * f)


class ResBlock(nn.Module):
    """Residual block: two GroupNorm-SiLU-3x3x3 convolutions, plus the input (1x1x1 conv if widths differ).

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    groups : int
        GroupNorm groups (at most ``c_in`` for the first norm).
    """

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(groups, c_in), c_in),
            nn.SiLU(),
            nn.Conv3d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
            nn.Conv3d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Attention(nn.Module):
    """Multi-head self-attention over all voxels (used where the grid is coarsest).

    Parameters
    ----------
    channels : int
        Input and output channels, a multiple of ``heads`` and ``groups``.
    heads : int
        Attention heads.
    groups : int
        GroupNorm groups.
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.proj = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, -1).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, *spatial))


class ResidualCorrection(nn.Module):
    """The residual pass's small correction network: a two-level U-Net without attention.

    It sees the input map, the first pass's map and the eLORETA map of that
    map's residual (9 channels, folded as the main network folds them) and
    returns a correction of the first pass's shape and of its log peak ratio.
    Both start at zero.

    Parameters
    ----------
    width : int
        Channels at the finer level (doubled at the coarser); a multiple of ``groups``.
    groups : int
        GroupNorm groups.
    space_to_depth : int
        The main network's block folding (:func:`fold_blocks`).
    """

    def __init__(self, width: int, groups: int, space_to_depth: int):
        super().__init__()
        self.space_to_depth = space_to_depth
        fold = space_to_depth**3
        self.stem = nn.Conv3d(9 * fold, width, 3, padding=1)
        self.down = ResBlock(width, width, groups)
        self.pool = nn.Conv3d(width, 2 * width, 3, stride=2, padding=1)
        self.middle = ResBlock(2 * width, 2 * width, groups)
        self.up = ResBlock(3 * width, width, groups)
        self.out = nn.Sequential(
            nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv3d(width, 3 * fold, 3, padding=1)
        )
        self.amplitude = nn.Linear(2 * width, 1)
        for layer in (self.out[-1], self.amplitude):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrections of the shape, ``(batch, 3, D, H, W)``, and of the log peak ratio, ``(batch,)``.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, 9, D, H, W)
            The input map, the first pass's shape and the residual's map.
        """
        f = self.space_to_depth
        skip = self.down(self.stem(fold_blocks(x, f)))
        h = self.middle(self.pool(skip))
        log_ratio = self.amplitude(h.float().mean(dim=(2, 3, 4)))[:, 0]
        h = F.interpolate(h, size=skip.shape[-3:], mode="nearest")
        return unfold_blocks(self.out(self.up(torch.cat([h, skip], dim=1))), f), log_ratio


class UNet3d(nn.Module):
    """3-D U-Net mapping eLORETA maps to moment maps, both ``(batch, 3, *grid.shape)``.

    The input is an eLORETA map divided by its largest moment norm. The network
    returns two things: the *shape* of the source map (peak norm about 1) and
    the log of the ratio between the map's peak and the input's peak, from the
    coarsest features. Splitting shape and amplitude keeps the L1 loss about where the
    sources are rather than about how strong they are.

    Parameters
    ----------
    config : UNetConfig
        Architecture.
    mask : torch.Tensor of bool, shape (D, H, W)
        True inside the brain; the output is zero elsewhere. Each grid dimension
        must be divisible by ``space_to_depth * 2 ** (levels - 1)``.
    """

    def __init__(self, config: UNetConfig, mask: torch.Tensor):
        super().__init__()
        self.config = config
        factor = config.space_to_depth * 2 ** (config.levels - 1)
        if any(s % factor for s in mask.shape):
            raise ValueError(f"Grid shape {tuple(mask.shape)} must be divisible by {factor}")
        self.register_buffer("mask", mask.to(torch.float32)[None, None], persistent=True)
        g, w = config.groups, config.width
        widths = [w * 2**i for i in range(config.levels)]
        fold = config.space_to_depth**3
        self.stem = nn.Conv3d(3 * fold, w, 3, padding=1)
        # the temporal context enters through its own convolution, added to the map's; it
        # starts at zero, so a network with context starts as the one without it
        # (load_weights), and training can give it its own learning rate
        # the residual channels reach the main network only when it runs the second pass itself
        n_context = config.in_channels - 3 - 3 * bool(config.correction_width)
        self.n_context = n_context
        self.context_stem = nn.Conv3d(n_context * fold, w, 3, padding=1, bias=False) if n_context else None
        if self.context_stem is not None:
            nn.init.zeros_(self.context_stem.weight)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c = w
        for i, cw in enumerate(widths):
            blocks = [ResBlock(c if j == 0 else cw, cw, g) for j in range(config.blocks)]
            if i == config.levels - 1:
                blocks.append(Attention(cw, config.heads, g))
            self.down.append(nn.Sequential(*blocks))
            c = cw
            if i < config.levels - 1:
                self.pool.append(nn.Conv3d(cw, cw, 3, stride=2, padding=1))
        self.middle = nn.Sequential(ResBlock(c, c, g), Attention(c, config.heads, g), ResBlock(c, c, g))
        self.up = nn.ModuleList()
        for i in reversed(range(config.levels)):
            cw = widths[i]
            blocks = [
                ResBlock((c if j == 0 else cw) + (cw if j == 0 else 0), cw, g) for j in range(config.blocks)
            ]
            self.up.append(nn.Sequential(*blocks))
            c = cw
        self.out = nn.Sequential(
            nn.GroupNorm(g, c), nn.SiLU(), nn.Conv3d(c, config.out_channels * fold, 3, padding=1)
        )
        # Start at the all-zero map (relative L1 = 1) rather than at random
        # noise spread over every voxel, which costs tens of times more.
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.amplitude = nn.Linear(widths[-1], 1)
        nn.init.zeros_(self.amplitude.weight)
        nn.init.constant_(self.amplitude.bias, 2.0)  # typical log peak ratio
        self.correction = (
            ResidualCorrection(config.correction_width, g, config.space_to_depth)
            if config.correction_width
            else None
        )

    def forward(
        self, x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the map's shape, ``(batch, 3, *grid.shape)``, and its log peak ratio, ``(batch,)``.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, in_channels, ``*grid.shape``)
            The inputs (:func:`mne_piunet.inference.network_inputs`).
        first : tuple of torch.Tensor | None
            The first pass's shape and log peak ratio, when ``x`` is a second
            pass's input (:func:`mne_piunet.inference.residual_inputs`): a
            correction network corrects them; a network without one ignores them.
        """
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"The network takes {self.config.in_channels} input channels, got {x.shape[1]}: make its inputs "
                "with mne_piunet.inference.network_inputs for its own config"
            )
        x = x * self.mask
        if self.correction is not None and first is not None:
            shape, log_ratio = first
            d_shape, d_log_ratio = self.correction(torch.cat([x[:, :3], shape.to(x.dtype), x[:, -3:]], dim=1))
            # in float32: a small amplitude correction is below bf16's step near the typical log ratio
            return (shape + d_shape) * self.mask, log_ratio.float() + d_log_ratio.float()
        f = self.config.space_to_depth
        h = self.stem(fold_blocks(x[:, :3], f))
        if self.context_stem is not None:
            h = h + self.context_stem(fold_blocks(x[:, 3 : 3 + self.n_context], f))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.middle(h)
        log_ratio = self.amplitude(h.float().mean(dim=(2, 3, 4)))[:, 0]
        for block, skip in zip(self.up, reversed(skips)):
            if h.shape[-3:] != skip.shape[-3:]:
                h = F.interpolate(h, size=skip.shape[-3:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return unfold_blocks(self.out(h), self.config.space_to_depth) * self.mask, log_ratio

    def estimate(
        self, x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The source map in input units: the shape, scaled to peak 1, times the predicted peak ratio.

        Where the sources' place is uncertain, the shape regresses towards a
        blurred, low-amplitude mean (its peak was a median 0.04 of the target's
        for the first bundled model), so its own scale is not an amplitude.
        Setting its peak to 1 makes the map's peak the amplitude head's
        estimate, which is trained for exactly that.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, in_channels, ``*grid.shape``)
            eLORETA maps, each divided by its largest moment norm, and their
            other input channels.
        first : tuple of torch.Tensor | None
            The first pass's shape and log peak ratio (see :meth:`forward`).

        Returns
        -------
        estimate : torch.Tensor of float32, shape (batch, 3, ``*grid.shape``)
            Moment maps in the input's units (multiply by each map's divisor
            for Am).
        """
        return self.scale(*self(x, first))

    @staticmethod
    def scale(shape: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
        """The source map in input units from the network's shape and log peak ratio (:meth:`estimate`)."""
        shape = shape.float()
        # the largest moment norm; square-sum-sqrt, since torch.linalg.vector_norm
        # over 3 channels is two orders of magnitude slower on the CPU
        peak = shape.square().sum(1).amax(dim=(1, 2, 3)).sqrt().clamp_min(1e-12)
        return shape * (torch.exp(log_ratio.float()) / peak)[:, None, None, None, None]


# ------------------------------------------------------------------ weights
def load_weights(network: UNet3d, state: dict) -> None:
    """Load a state dict, input channels the weights lack starting at zero.

    How a network with a temporal context starts from one without: its
    ``context_stem`` stays at zero, so at step 0 it computes exactly what the
    weights did, and training then learns to use the context. Channels added
    after the weights' (``"power"`` -> ``"power-music"``, or a residual pass)
    keep the weights' stem for their channels, the new ones at zero. A
    correction network the weights lack (:class:`ResidualCorrection`) starts
    at zero; only weights without a residual pass grow one (a shared
    network's residual channels have no place in it). Any other mismatch
    raises, as
    :meth:`torch.nn.Module.load_state_dict` does.

    Parameters
    ----------
    network : UNet3d
        The network to fill.
    state : dict
        A state dict of the same architecture, with or without a context
        stem or a correction network.
    """
    state = dict(state)
    stem = network.context_stem
    old = state.get("context_stem.weight")
    if stem is not None and old is not None and old.shape[1] < stem.weight.shape[1]:
        # channels added after the weights' (power -> power-music, a residual pass): the
        # weights' channels come first in the folded input, the new ones start at zero
        grown = torch.zeros_like(stem.weight)
        grown[:, : old.shape[1]] = old
        state["context_stem.weight"] = grown
    missing, unexpected = network.load_state_dict(state, strict=False)
    correction = [k for k in missing if k.startswith("correction.")]
    all_correction = network.correction is not None and len(correction) == len(
        network.correction.state_dict()
    )
    if (
        unexpected
        or (correction and not all_correction)
        or set(missing) - set(correction) - {"context_stem.weight"}
    ):
        network.load_state_dict(state)  # raises, naming the mismatched keys
    if "context_stem.weight" in missing:
        nn.init.zeros_(network.context_stem.weight)
    if correction:  # weights without a correction network: it starts at zero
        for layer in (network.correction.out[-1], network.correction.amplitude):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


@dataclass
class ModelBundle:
    """A network with everything needed to use it: grid, scaling, provenance.

    Parameters
    ----------
    network : UNet3d
        The network.
    meta : dict
        Its JSON metadata (:func:`save_network`): grid, config, training provenance.
    """

    network: UNet3d
    meta: dict = field(default_factory=dict)

    @property
    def grid(self) -> dict:
        """The grid the network was trained on (:func:`mne_piunet.grid.grid_meta`)."""
        return self.meta["grid"]


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device of a device name; ``"auto"``: CUDA when available, else CPU.

    Parameters
    ----------
    device : str | torch.device
        ``"auto"``, or anything :class:`torch.device` accepts.

    Returns
    -------
    device : torch.device
        The device.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f'device must be "auto", "cpu", "cuda" or "cuda:N", got {device!r}') from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ValueError(
            f"device={str(device)!r} was asked for, but torch ({torch.__version__}, {build}) sees no CUDA "
            'device: use device="auto" or "cpu", or install a CUDA build of torch on a machine with a GPU.'
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f'device must be "auto", "cpu" or "cuda", got {device!r}')
    return resolved


def bundled_weights_path() -> Path:
    """Path of the pretrained weights shipped in the package.

    Returns
    -------
    fname : pathlib.Path
        The ``.pt`` file; its JSON metadata sits next to it.
    """
    return Path(str(files("mne_piunet") / "weights" / f"{WEIGHTS_NAME}.pt"))


def save_network(network: UNet3d, fname: str | Path, meta: dict) -> Path:
    """Save a state dict (``torch.load(weights_only=True)``-safe) and its JSON.

    The JSON next to it (same stem) holds the network config, ``meta`` (grid,
    training provenance) and the weights file's sha256, checked at load.

    Parameters
    ----------
    network : UNet3d
        The network; its weights are written as float32 on the CPU.
    fname : path-like
        The ``.pt`` file to write (its folder is created).
    meta : dict
        JSON-serialisable metadata. :class:`mne_piunet.PIUNetInverse` needs its
        ``"grid"`` (:func:`mne_piunet.grid.grid_meta`).

    Returns
    -------
    fname : pathlib.Path
        The weights file written.
    """
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.state_dict().items()}
    torch.save(state, fname)
    info = dict(meta, format_version=FORMAT_VERSION, config=asdict(network.config), sha256=file_sha256(fname))
    fname.with_suffix(".json").write_text(json.dumps(info, indent=1, default=_json_default))
    return fname


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"Not JSON serialisable: {type(obj)}")


def load_network(fname: str | Path | None = None, device: str | torch.device = "cpu") -> ModelBundle:
    """Load weights and their JSON, verifying the sha256 first.

    Parameters
    ----------
    fname : path | None
        A ``.pt`` file written by :func:`save_network`; None for the bundled one.
    device : str | torch.device
        Where to put the network.

    Returns
    -------
    bundle : ModelBundle
        The network in eval mode and its metadata.
    """
    fname = bundled_weights_path() if fname is None else Path(fname)
    meta_fname = fname.with_suffix(".json")
    fix = "reinstall mne-piunet (pip install --force-reinstall mne-piunet) or pass a valid weights file"
    if not fname.is_file() or not meta_fname.is_file():
        raise FileNotFoundError(f"PIUNet weights {fname} or their {meta_fname.name} are missing: {fix}")
    try:
        meta = json.loads(meta_fname.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"The metadata {meta_fname} of weights {fname} is not valid JSON ({err}): {fix}"
        ) from None
    missing = [
        k
        for k in ("format_version", "config", "grid", "sha256")
        if not isinstance(meta, dict) or k not in meta
    ]
    if missing:
        raise ValueError(f"The metadata {meta_fname} of weights {fname} lacks {', '.join(missing)}: {fix}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"Weights {fname} have format {meta.get('format_version')}, this mne-piunet reads {FORMAT_VERSION}: {fix}"
        )
    digest = file_sha256(fname)
    if digest != meta.get("sha256"):
        raise ValueError(
            f"Weights {fname} are corrupted (sha256 {digest[:12]}... does not match {str(meta.get('sha256'))[:12]}...): {fix}"
        )
    not_weights = f"{fname} is not a PIUNet weights file written by save_network ({{}}): {fix}"
    try:
        # weights_only=True always: a file that needs more is never loaded
        state = torch.load(fname, map_location="cpu", weights_only=True)
        network = UNet3d(UNetConfig(**meta["config"]), state["mask"][0, 0] > 0.5)
        network.load_state_dict(state)
    except Exception as err:  # torch raises pickle, runtime, key and type errors for junk files
        reason = str(err).splitlines()[0] if "weights_only" not in str(err) else "not a plain state dict"
        raise ValueError(not_weights.format(f"{type(err).__name__}: {reason}")) from None
    return ModelBundle(network.to(device).eval(), meta)
