"""Inference: eLORETA maps on the grid in, PIUNet maps in Am out (the one path).

The inverse, training's validation and the evaluation all call
:func:`predict_maps`, so the scaling convention (divide each map by its signed
largest moment norm, predict shape and peak ratio, multiply back), the
temporal context (:func:`context_windows` picks each map's window in seconds,
:func:`context_maps` turns it into input channels), the residual pass
(:func:`residual_inputs`: what the first pass's map leaves unexplained of the
data, through the inverse's :class:`GridResolution`) and the speed choices
(precision, batch size, memory layout) live here and nowhere else.

bf16 autocast halves the U-Net's cost where the CPU computes bf16 natively;
elsewhere bf16 is emulated and slower than fp32, so "auto" keeps fp32 there.
Small batches suit a CPU's caches, large ones a GPU (the model card measures
both).
"""

from __future__ import annotations

import functools
import platform
import threading
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d

from .grid import SourceGrid
from .network import UNet3d, UNetConfig
from .physics import music_spectrum
from .utils._checks import check_option

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


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype as :data:`PRECISIONS` name it (``torch.bfloat16`` -> ``"bfloat16"``).

    Parameters
    ----------
    dtype : torch.dtype
        The dtype.

    Returns
    -------
    name : str
    """
    return str(dtype).removeprefix("torch.")


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
        check_option("precision", precision, PRECISIONS)
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


def context_windows(
    n_times: int, sfreq: float, config: UNetConfig, rows: np.ndarray | None = None
) -> np.ndarray:
    """For each time point, the samples its temporal context is made of.

    The window spans ``config.window_s`` seconds centred on the time point;
    ``config.window_points`` evenly spaced times in it are rounded to the
    nearest sample and clamped to the data (edge samples repeat), so a
    window means the same at any sampling rate. Data shorter than the
    window (a single map, a short epoch) give every time point an
    instantaneous context: its window repeats it.

    Parameters
    ----------
    n_times : int
        Time points of the data (of the whole recording: a chunk's windows
        reach into its neighbours, so chunks give what one pass would).
    sfreq : float
        Their sampling rate (Hz); 0 for an estimate without one (a single
        map, or MNE's ``tstep=0``): an instantaneous context.
    config : UNetConfig
        The network's window.
    rows : array of int | None
        The time points to give windows to (default: all).

    Returns
    -------
    windows : array of int, shape (len(rows), window_points)
        Sample indices; row ``i``'s centre column is ``rows[i]``. One column
        for a network without context.
    """
    rows = np.arange(n_times) if rows is None else np.asarray(rows, np.int64)
    if config.context == "none":
        return rows[:, None]
    # in whole samples, so that a window exactly as long as the data is not lost to rounding
    if not sfreq > 0 or n_times - 1 < 2 * context_margin(sfreq, config):
        return np.repeat(rows[:, None], config.window_points, axis=1)
    half = config.window_s / 2
    offsets = np.rint(np.linspace(-half, half, config.window_points) * sfreq).astype(np.int64)
    return np.clip(rows[:, None] + offsets[None], 0, n_times - 1)


def step_kernel(sfreq: float, config: UNetConfig) -> np.ndarray:
    """Weights of the average over one of the network's time steps, centred on a sample.

    The network learnt its maps and their context ``window_s / (window_points
    - 1)`` seconds apart (10 ms): data at that rate. Data sampled faster carry
    noise at frequencies it never met, and picking its context's points from
    them without a low-pass aliases that noise into the context. The kernel
    is a boxcar one step wide, sampled at ``sfreq`` (its end samples weighted
    by the part of them it covers), so an average with it is the data at the
    network's rate; at that rate or slower, or without a context, it is the
    identity.

    Parameters
    ----------
    sfreq : float
        The data's sampling rate (Hz); 0 for an estimate without one.
    config : UNetConfig
        The network's window.

    Returns
    -------
    kernel : array, shape (n_taps,)
        Symmetric (``n_taps`` odd), summing to 1; ``[1.]`` for the identity.
    """
    if config.context == "none" or not sfreq > 0:
        return np.ones(1)
    width = config.window_s / (config.window_points - 1) * sfreq  # one step, in samples
    if width <= 1 + 1e-9:  # at the network's own rate, whatever the round-off of the step
        return np.ones(1)
    half = int(np.ceil(width / 2 - 0.5))
    k = np.arange(-half, half + 1)
    weights = np.clip(np.minimum(k + 0.5, width / 2) - np.maximum(k - 0.5, -width / 2), 0.0, 1.0)
    return weights / weights.sum()


def step_average(data: np.ndarray, sfreq: float, config: UNetConfig, axis: int = -1) -> np.ndarray:
    """Each time point's data averaged over one network time step around it (:func:`step_kernel`).

    Every input of the network (each map, its context's points and the
    data-fit step's scan) is taken from data averaged so, which makes data
    sampled faster than the network's step look like the data it learnt
    from; the estimate keeps every time point. At the data's edges the
    average is over the samples there are. Linear in the data, so it
    commutes with eLORETA.

    Parameters
    ----------
    data : array
        Time along ``axis``; one segment (an evoked, an epoch, a stretch of
        a recording), never several end to end.
    sfreq : float
        Its sampling rate (Hz); 0 for an estimate without one.
    config : UNetConfig
        The network's window.
    axis : int
        The time axis.

    Returns
    -------
    averaged : array
        ``data`` itself where the kernel is the identity, else a new array of its shape and dtype.
    """
    kernel = step_kernel(sfreq, config)
    if len(kernel) == 1:
        return data
    dtype = np.result_type(data, np.float32)  # float32 stays float32, integers become floats
    total = correlate1d(np.asarray(data, dtype), kernel.astype(dtype), axis=axis, mode="constant")
    # the weights inside the data at each time point: 1 but within half a kernel of an edge
    covered = correlate1d(np.ones(data.shape[axis]), kernel, mode="constant")
    shape = [1] * data.ndim
    shape[axis] = -1
    total /= covered.reshape(shape).astype(dtype)
    return total


def context_margin(sfreq: float, config: UNetConfig) -> int:
    """Samples a window reaches on either side of its centre (0 without context).

    Parameters
    ----------
    sfreq : float
        The sampling rate (Hz).
    config : UNetConfig
        The network's window.

    Returns
    -------
    margin : int
        How far a window reaches (chunks of a recording overlap by this and
        half a :func:`step_kernel` more).
    """
    if config.context == "none" or not sfreq > 0:
        return 0
    return int(np.rint(config.window_s / 2 * sfreq))


def context_maps(window: np.ndarray, context: str) -> np.ndarray:
    """The temporal-context input channels of each window of maps.

    ``"power"``: the RMS moment norm of each voxel over the window. It tells
    where activity was around the map, whatever its polarity. ``"subspace"``:
    the window's two leading principal maps (moment vectors), the second
    scaled by its singular value relative to the first. They span the
    data's signal subspace, as MUSIC and Champagne use it. Each is
    flipped to its :func:`canonical_sign`, so the channels do not depend on
    the data's polarity, and zeroed where its singular value is below 1e-3
    of the first (a window of one repeated map has one).

    Parameters
    ----------
    window : array, shape (n, window_points, n_grid, 3)
        Each output map's window of eLORETA maps on the grid.
    context : "power" | "subspace"
        The context (:attr:`~mne_piunet.network.UNetConfig.context`).

    Returns
    -------
    channels : array of float32, shape (n, n_grid, n_channels)
        Peaking at 1 (all zero for an all-zero window).
    """
    n, n_points = window.shape[:2]
    # scaled by the window's largest value first, so neither tiny nor huge data under/overflow
    peak = np.abs(window).max(axis=(1, 2, 3), initial=0.0)
    unit = window / np.where(peak > 0, peak, 1.0)[:, None, None, None]
    if context == "power":  # values in [-1, 1]: float32 squares are exact enough, and fast
        rms = np.sqrt(np.einsum("ntgj,ntgj->ng", unit, unit) / n_points)
        top = rms.max(axis=1, initial=0.0)
        return (rms / np.where(top > 0, top, 1.0)[:, None])[..., None].astype(np.float32)
    flat = unit.reshape(n, n_points, -1).astype(np.float64)
    eig, vec = np.linalg.eigh(flat @ np.swapaxes(flat, 1, 2))  # (n, T, T) Gram matrices, ascending
    lead = vec[:, :, ::-1][:, :, :2]  # (n, T, 2)
    maps = np.einsum("ntk,ntg->nkg", lead, flat).reshape(n, 2, -1, 3)  # norms: the singular values
    sv = np.sqrt(np.clip(eig[:, ::-1][:, :2], 0.0, None))
    maps[sv < 1e-3 * sv[:, :1]] = 0.0
    top = np.sqrt(np.einsum("ngj,ngj->ng", maps[:, 0], maps[:, 0]).max(axis=1, initial=0.0))
    maps /= np.where(top > 0, top, 1.0)[:, None, None, None]
    signs = np.stack([_sign_of(_unit_maps(maps[:, k])[1]) for k in range(2)], axis=1)
    maps *= signs[:, :, None, None]
    return np.moveaxis(maps, 1, 2).reshape(n, maps.shape[2], 6).astype(np.float32)


def network_inputs(
    grid: SourceGrid,
    x0: np.ndarray,
    windows: np.ndarray | None,
    config: UNetConfig,
    fit: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The network's input tensors for some maps: each map normalised, its context, its residual channels.

    Parameters
    ----------
    grid : SourceGrid
        The network's grid.
    x0 : array, shape (n_maps, n_grid, 3)
        eLORETA moment vectors on the grid.
    windows : array of int, shape (n, n_points)
        Each output's window of rows of ``x0`` (the centre column is the
        map refined). One column is an instantaneous context: the map
        stands for its whole window.
    config : UNetConfig
        The network's context.
    fit : array, shape (n, n_grid) | None
        Each output's MUSIC scan of its window's data
        (:func:`mne_piunet.physics.window_subspace_fit`), which the
        ``"power-music"`` context takes as its second channel
        (:func:`mne_piunet.physics.music_spectrum`). None: that channel is
        zero (no inverse operator to scan with), and other contexts ignore it.

    Returns
    -------
    inputs : array of float32, shape (n, in_channels, ``*grid.shape``)
        The centre maps normalised by :func:`normalise_inputs`, then the
        :func:`context_maps` channels, then (``residual_pass``) the centre
        maps again: the first pass's residual channels, the residual of an
        empty estimate (:func:`residual_inputs` fills them for the second).
    scale : array of float64, shape (n,)
        The centre maps' divisors.
    """
    dense, scale = normalise_inputs(grid, x0[windows[:, windows.shape[1] // 2]])
    parts = [dense]
    if config.context != "none":
        parts.append(_context_dense(grid, x0, windows, config, fit))
    if config.residual_pass:
        parts.append(dense)
    return (np.concatenate(parts, axis=1) if len(parts) > 1 else dense), scale


def _context_dense(
    grid: SourceGrid, x0: np.ndarray, windows: np.ndarray, config: UNetConfig, fit
) -> np.ndarray:
    """The context channels of :func:`network_inputs` on the dense grid, (n, n_context, ``*grid.shape``)."""
    if windows.shape[1] == 1:
        windows = np.repeat(windows, config.window_points, axis=1)
    channels = context_maps(x0[windows], "power" if config.scans_data else config.context)
    if config.scans_data:
        music = np.zeros(channels.shape[:2], np.float32) if fit is None else music_spectrum(fit)
        channels = np.concatenate([channels, music[..., None]], axis=-1)
    n_ctx = channels.shape[-1]
    flat = np.zeros((len(windows), n_ctx, int(np.prod(grid.shape))), np.float32)
    flat[:, :, grid.flat_index] = np.swapaxes(channels, 1, 2)
    return flat.reshape(len(flat), n_ctx, *grid.shape)


class GridResolution:
    """A linear inverse's resolution on the grid: the estimate, on the grid, of the data a grid map produces.

    ``R m = K W G m``: the grid map's moments go onto the inverse's sources
    and through its whitened gain (``fields``,
    :func:`mne_piunet.physics.grid_fields`), and the imaging kernel of
    whitened data (:func:`mne_piunet.physics.whitened_kernel`), moved onto the
    grid (``kernel``), estimates them. Applied to torch tensors on any
    device, in float32.

    Parameters
    ----------
    kernel : array, shape (n_white, n_grid, 3)
        Each whitened channel's column of the kernel, as moment vectors on the grid.
    fields : array, shape (n_white, n_grid, 3)
        Each grid moment's whitened field.
    """

    def __init__(self, kernel: np.ndarray, fields: np.ndarray):
        if kernel.shape != fields.shape or kernel.ndim != 3 or kernel.shape[2] != 3:
            raise ValueError(
                f"kernel and fields need the same shape (n_white, n_grid, 3), got {kernel.shape} and {fields.shape}"
            )
        n_white = len(kernel)
        cpu = (
            torch.from_numpy(np.ascontiguousarray(kernel.reshape(n_white, -1).T, np.float32)),
            torch.from_numpy(np.ascontiguousarray(fields.reshape(n_white, -1), np.float32)),
        )
        # one copy per device, made once (a cached operator may serve several threads and devices)
        self._on = {torch.device("cpu"): cpu}
        self._lock = threading.Lock()

    def __call__(self, maps: torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """``R`` of each map.

        Parameters
        ----------
        maps : torch.Tensor, shape (n, n_grid, 3)
            Moment vectors on the grid.
        rows : array of int | None
            Ignored (one inverse for every map): the signature of :class:`PerSampleResolution`.

        Returns
        -------
        estimate : torch.Tensor of float32, shape (n, n_grid, 3)
            On the maps' device.
        """
        with self._lock:
            if maps.device not in self._on:
                self._on[maps.device] = tuple(t.to(maps.device) for t in self._on[torch.device("cpu")])
            kernel, fields = self._on[maps.device]
        flat = maps.reshape(len(maps), -1).float()
        return ((flat @ fields.T) @ kernel.T).reshape(maps.shape)


class PerSampleResolution:
    """Resolutions of several inverses, one per map (simulated samples from several setups).

    Parameters
    ----------
    resolutions : list or dict of GridResolution
        By setup index.
    index : array of int, shape (n_maps,)
        Each map's setup, as a key of ``resolutions``.
    """

    def __init__(self, resolutions, index: np.ndarray):
        self.resolutions, self.index = resolutions, np.asarray(index)

    def __call__(self, maps: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """``R`` of each map with its own setup's resolution.

        Parameters
        ----------
        maps : torch.Tensor, shape (n, n_grid, 3)
            Moment vectors on the grid.
        rows : array of int, shape (n,)
            The maps' rows of ``index``.

        Returns
        -------
        estimate : torch.Tensor of float32, shape (n, n_grid, 3)
        """
        which = self.index[rows]
        out = torch.empty_like(maps, dtype=torch.float32)
        for k in np.unique(which):
            sel = torch.as_tensor(np.flatnonzero(which == k), device=maps.device)
            out[sel] = self.resolutions[k](maps[sel])
        return out


def residual_inputs(
    inputs: torch.Tensor, estimate: torch.Tensor, grid: SourceGrid, resolution, rows: np.ndarray
) -> torch.Tensor:
    """The second pass's inputs: the last three channels hold the eLORETA map of the first pass's residual.

    The first pass's map ``m`` predicts data; eLORETA of the data minus that
    prediction is ``x0 - a R m`` (``R``: ``resolution``), with ``x0`` the
    input map (channels 0-2) and ``a`` the scale that best fits ``R m`` to
    ``x0`` (least squares), so the network's amplitude does not count, only
    what its map leaves unexplained. All in the input's units, so neither the
    data's scale nor its polarity changes the result.

    Parameters
    ----------
    inputs : torch.Tensor, shape (n, in_channels, ``*grid.shape``)
        The first pass's inputs (:func:`network_inputs`).
    estimate : torch.Tensor, shape (n, 3, ``*grid.shape``)
        The first pass's maps, in the input's units (:meth:`UNet3d.scale` of its output).
    grid : SourceGrid
        The network's grid.
    resolution : callable
        ``resolution(maps, rows)``: :class:`GridResolution` or :class:`PerSampleResolution`.
    rows : array of int, shape (n,)
        The maps' rows, for a per-sample resolution.

    Returns
    -------
    inputs : torch.Tensor
        A copy of ``inputs`` with the residual channels replaced.
    """
    n = len(inputs)
    index = torch.as_tensor(grid.flat_index, device=inputs.device)
    x0 = inputs[:, :3].float().reshape(n, 3, -1)[:, :, index].transpose(1, 2)  # (n, n_grid, 3)
    m = estimate.float().reshape(n, 3, -1)[:, :, index].transpose(1, 2)
    rm = resolution(m, rows)
    alpha = (x0 * rm).sum(dim=(1, 2)) / (rm * rm).sum(dim=(1, 2)).clamp_min(torch.finfo(torch.float32).tiny)
    residual = torch.zeros(n, 3, inputs[0, 0].numel(), device=inputs.device)
    residual[:, :, index] = (x0 - alpha[:, None, None] * rm).transpose(1, 2)
    out = inputs.clone()
    out[:, -3:] = residual.reshape(n, 3, *inputs.shape[2:]).to(inputs.dtype)
    return out


@torch.inference_mode()
def predict_maps(
    network: UNet3d,
    grid: SourceGrid,
    x0: np.ndarray,
    windows: np.ndarray | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    fit: np.ndarray | None = None,
    resolution=None,
) -> np.ndarray:
    """PIUNet estimates of eLORETA maps on the grid.

    Parameters
    ----------
    network : UNet3d
        The network (see :func:`prepare_network`); its device is used.
    grid : SourceGrid
        The grid it was trained on.
    x0 : array, shape (n_maps, n_grid_sources, 3)
        eLORETA moment vectors on the grid: time points of one recording, or
        independent samples.
    windows : array of int, shape (n, window_points) | None
        Each estimate's temporal context as rows of ``x0``
        (:func:`context_windows`; the centre column is the map refined).
        None: every map of ``x0`` alone, with an instantaneous context, as
        independent samples need. Ignored by a network without context.
    dtype : torch.dtype
        Autocast precision (:func:`resolve_precision`); float32 runs without autocast.
    batch_size : int | None
        Maps per network call; None for :func:`default_batch_size`.
    fit : array, shape (n, n_grid) | None
        Each estimate's MUSIC scan (:func:`network_inputs`).
    resolution : GridResolution | PerSampleResolution | None
        The inverse's resolution on the grid, for a network with a residual
        pass (:func:`residual_inputs`; rows are the estimates' indices).
        None: the first pass alone (no inverse operator to predict data with).

    Returns
    -------
    estimate : array of float32, shape (n, n_grid_sources, 3)
        Moment vectors in Am, float32 (finer than the network's own
        precision): each map is divided by its signed largest moment norm
        (:func:`normalise_inputs`) before the network, which predicts the
        map's shape and its peak relative to the input's; the product is
        multiplied back by the divisor.
    """
    device = next(network.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    config = network.config
    if windows is None:
        windows = np.arange(len(x0))[:, None]
    elif config.context == "none":
        windows = windows[:, windows.shape[1] // 2, None]
    out = np.empty((len(windows),) + x0.shape[1:], np.float32)
    channels_last = uses_channels_last(network, device)
    for start in range(0, len(windows), batch_size):
        stop = min(start + batch_size, len(windows))
        dense, scale = network_inputs(
            grid, x0, windows[start:stop], config, None if fit is None else fit[start:stop]
        )
        x = torch.from_numpy(dense).to(device)
        if channels_last:
            x = x.to(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            first = network(x)
        pred = network.scale(*first)
        if config.residual_pass and resolution is not None:
            x = residual_inputs(x, pred, grid, resolution, np.arange(start, stop))
            if channels_last:
                x = x.to(memory_format=torch.channels_last_3d)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                pred = network.estimate(x, first)
        # scale 0 (an all-zero map, flat data) makes the estimate zero, not the network's bias
        out[start:stop] = grid.from_dense(pred.float().cpu().numpy()) * scale[:, None, None]
    return out
