"""Inference: eLORETA maps on the grid in, PIUNet maps in Am out (the one path).

The inverse, training's validation and the evaluation all call
:func:`predict_maps`, so the scaling convention (divide each map by its signed
largest moment norm, predict shape and peak ratio, multiply back) and the speed
choices (precision, batch size, memory layout) live here and nowhere else.

bf16 autocast halves the U-Net's cost where the CPU computes bf16 natively;
elsewhere bf16 is emulated and slower than fp32, so "auto" keeps fp32 there.
Small batches suit a CPU's caches, large ones a GPU (the model card measures
both).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import numpy as np
import torch

from .grid import SourceGrid
from .network import UNet3d

#: Precisions :func:`resolve_precision` accepts.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: Maps per network call: small batches stay in a CPU's caches, a GPU wants large ones.
DEFAULT_BATCH = {"cpu": 16, "cuda": 256}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16)."""
    if platform.system() != "Linux":
        return False  # no cheap, reliable check elsewhere: fp32 is the safe default
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``precision`` on ``device`` (float32: no autocast).

    ``"auto"`` is bf16 on a CPU with native bf16, fp32 on other CPUs, and bf16
    (or fp16 where bf16 is unsupported) on CUDA.

    Parameters
    ----------
    precision : "auto" | "float32" | "bfloat16" | "float16"
        The requested arithmetic.
    device : torch.device
        Where the network runs.

    Returns
    -------
    dtype : torch.dtype
        The autocast dtype.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if precision == "float16" and device.type == "cpu":
        raise ValueError('precision="float16" is for CUDA; on the CPU use "bfloat16" or "float32"')
    return getattr(torch, precision)


def default_batch_size(device: torch.device) -> int:
    """Maps per network call on ``device`` (see :data:`DEFAULT_BATCH`).

    Parameters
    ----------
    device : torch.device
        Where the network runs.

    Returns
    -------
    batch_size : int
        Maps per call.
    """
    return DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cpu"])


#: Weights of the moment components in :func:`canonical_sign`'s statistic: distinct,
#: so that no common dipole orientation (e.g. along a diagonal) cancels it.
_SIGN_WEIGHTS = np.array([1.0, 2.0, 4.0])


def canonical_sign(x0: np.ndarray) -> np.ndarray:
    """The sign that makes each map's weighted sum of cubed moment components positive.

    A source's place does not change when the data change sign, so the
    estimate must be odd: ``out(-x) == -out(x)``. Each map is flipped to this
    canonical sign before the network and flipped back after, which makes
    the estimate exactly odd at no cost. The cube keeps the sign of the
    strongest lobe; the statistic is odd, so ``canonical_sign(-x) ==
    -canonical_sign(x)`` wherever it is not zero.

    Parameters
    ----------
    x0 : array, shape (n, n_grid_sources, 3)
        Moment vectors; each map is scaled by its largest absolute value
        first, so neither tiny nor huge amplitudes under- or overflow.

    Returns
    -------
    sign : array of float, shape (n,)
        +1 or -1 (+1 for a map whose statistic is exactly zero).
    """
    return _sign_of(_unit_maps(x0)[1])


def _unit_maps(x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each map's largest absolute value (float64) and the map divided by it."""
    peak = np.abs(x0).max(axis=(1, 2), initial=0.0).astype(np.float64)
    return peak, x0 / np.where(peak > 0, peak, 1.0)[:, None, None]


def _sign_of(unit: np.ndarray) -> np.ndarray:
    """:func:`canonical_sign` of maps already divided by their largest absolute value."""
    stat = np.einsum("nij,j->n", unit.astype(np.float64) ** 3, _SIGN_WEIGHTS)
    return np.where(stat < 0, -1.0, 1.0)


def normalise_inputs(grid: SourceGrid, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each eLORETA map by its signed largest moment norm and scatter it onto the grid tensor.

    The divisor carries the map's :func:`canonical_sign`, so the network only
    ever sees maps of one polarity and multiplying its output back by the
    divisor restores the data's sign. Norms are taken after dividing by the
    largest absolute value, in float64: maps of 1e-20 would underflow in
    float32 squares.

    Parameters
    ----------
    grid : SourceGrid
        The network's grid.
    x0 : array, shape (n, n_grid_sources, 3)
        eLORETA moment vectors on the grid.

    Returns
    -------
    inputs : array of float32, shape (n, 3, ``*grid.shape``)
        The normalised maps (all zeros for an all-zero map).
    scale : array of float64, shape (n,)
        The divisors: each map's largest moment norm times its canonical
        sign, 0 for an all-zero map.
    """
    peak, unit = _unit_maps(x0)
    norm = np.sqrt(np.einsum("nij,nij->ni", unit, unit, dtype=np.float64).max(axis=-1, initial=0.0))
    scale = peak * norm * _sign_of(unit)
    safe = np.where(scale != 0, scale, 1.0)
    return grid.to_dense((x0 / safe[:, None, None]).astype(np.float32)), scale


def uses_channels_last(network: UNet3d, device: torch.device) -> bool:
    """Whether the CPU layout channels_last is faster for this network.

    It speeds up the plain U-Net's 3-D convolutions on the CPU; a
    space-to-depth network folds its input into a new contiguous tensor
    first, and runs faster without it (the model card measures both).

    Parameters
    ----------
    network : UNet3d
        The network.
    device : torch.device
        Where it runs.

    Returns
    -------
    channels_last : bool
        True to use ``torch.channels_last_3d``.
    """
    return device.type == "cpu" and network.config.space_to_depth == 1


def prepare_network(network: UNet3d, device: torch.device) -> UNet3d:
    """Move a network to ``device`` in eval mode and the fastest memory layout.

    Parameters
    ----------
    network : UNet3d
        The network.
    device : torch.device
        Where it will run.

    Returns
    -------
    network : UNet3d
        The same network, moved.
    """
    network = network.to(device).eval()
    if uses_channels_last(network, device):
        network = network.to(memory_format=torch.channels_last_3d)
    return network


@torch.inference_mode()
def predict_maps(
    network: UNet3d,
    grid: SourceGrid,
    x0: np.ndarray,
    *,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
) -> np.ndarray:
    """PIUNet estimates of eLORETA maps on the grid.

    Parameters
    ----------
    network : UNet3d
        The network (see :func:`prepare_network`); its device is used.
    grid : SourceGrid
        The grid it was trained on.
    x0 : array, shape (n, n_grid_sources, 3)
        eLORETA moment vectors on the grid, one map per time point or sample.
    dtype : torch.dtype
        Autocast precision (:func:`resolve_precision`); float32 runs without autocast.
    batch_size : int | None
        Maps per network call; None for :func:`default_batch_size`.

    Returns
    -------
    estimate : array of float32, shape (n, n_grid_sources, 3)
        Moment vectors in Am, float32 (finer than the network's own
        precision): each map is divided by its signed largest moment norm
        (:func:`normalise_inputs`) before the
        network, which predicts the map's shape and its peak relative to the
        input's; the product is multiplied back by the divisor.
    """
    device = next(network.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    out = np.empty(x0.shape, np.float32)
    channels_last = uses_channels_last(network, device)
    for start in range(0, len(x0), batch_size):
        stop = min(start + batch_size, len(x0))
        dense, scale = normalise_inputs(grid, x0[start:stop])
        x = torch.from_numpy(dense).to(device)
        if channels_last:
            x = x.to(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = network.estimate(x)
        # scale 0 (an all-zero map, flat data) makes the estimate zero, not the network's bias
        out[start:stop] = grid.from_dense(pred.float().cpu().numpy()) * scale[:, None, None]
    return out
