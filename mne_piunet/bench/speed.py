"""Speed benchmark: PIUNet's milliseconds per map and per call beside eLORETA, apply_raw's memory.

``mne-piunet bench-speed`` prints, in one run:

1. milliseconds per map of ``apply_epochs`` end to end, in fp32 and the default precision;
2. ``apply_inverse(method="eLORETA")`` and ``piu.apply`` on a 1-s evoked, and their ratio;
3. ``apply_inverse_epochs`` and ``piu.apply_epochs`` on 1-s epochs, and their ratio;
4. ``apply_raw`` on minutes of data: wall time and peak memory beyond the output;

plus the network's forward cost by level (:func:`profile_forward`). A linear
kernel costs almost nothing per time point, so per-call ratios depend on the
inverse's size: eLORETA's own cost is fitting its weights.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import mne
import numpy as np
import torch

from ..anatomy import montage_info
from ..grid import SourceGrid, get_grid
from ..inference import dtype_name, network_inputs, uses_channels_last
from ..network import UNet3d
from ..simulation import HeadSetup, prepare_setup, simulate
from ..utils._defaults import DEFAULT_LAMBDA2


def _seconds(func: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def _consume(estimates: Iterable) -> None:
    """Run a generator to its end without keeping what it yields."""
    for _ in estimates:
        pass


def _status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` (Linux): VmRSS now, VmHWM the peak since the last reset."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise KeyError(field)


def _measure_peak_mb(func: Callable[[], object]) -> tuple[object, float]:
    """Run ``func``; return its result and the resident memory it added at its peak (MB).

    On Linux the kernel's peak counter is reset first (``clear_refs``), so the
    peak is this call's; elsewhere it is the growth of the process's all-time peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fid:
            fid.write("5")
        before, field = _status_mb("VmRSS"), "VmHWM"
    except OSError:
        before, field = _max_rss_mb(), None
    result = func()
    peak = _status_mb(field) if field else _max_rss_mb()
    return result, peak - before


def _max_rss_mb() -> float:
    """The process's all-time peak resident memory (MB); NaN where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _random_inputs(grid: SourceGrid, n: int, network: UNet3d, seed: int = 0) -> torch.Tensor:
    """Random maps as the network sees them, each with a window of random maps as its context."""
    n_points = max(network.config.window_points, 1)
    x0 = np.random.default_rng(seed).standard_normal((n * n_points, grid.n_sources, 3))
    windows = np.arange(n * n_points).reshape(n, n_points)
    x = torch.from_numpy(network_inputs(grid, x0, windows, network.config)[0])
    return x.to(memory_format=torch.channels_last_3d) if uses_channels_last(network, x.device) else x


@torch.inference_mode()
def forward_ms_per_map(
    network: UNet3d,
    grid: SourceGrid,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 16,
    n_batches: int = 8,
) -> float:
    """The network's forward cost alone, in ms per map (after one warm-up batch).

    Parameters
    ----------
    network : UNet3d
        The network, on the CPU (:func:`mne_piunet.inference.prepare_network`).
    grid : SourceGrid
        Its grid; the inputs are random maps on it.
    dtype : torch.dtype
        Autocast precision; float32 runs without autocast.
    batch_size : int
        Maps per forward pass.
    n_batches : int
        Timed forward passes.

    Returns
    -------
    ms_per_map : float
        Wall time per map, in milliseconds.
    """
    x = _random_inputs(grid, batch_size, network)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        network(x)
        seconds = _seconds(lambda: [network(x) for _ in range(n_batches)])
    return 1e3 * seconds / (n_batches * batch_size)


@torch.inference_mode()
def profile_forward(
    network: UNet3d,
    grid: SourceGrid,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 16,
    n_batches: int = 4,
) -> dict[str, float]:
    """ms per map spent in each top-level part of the U-Net (stem, each level down and up, middle, out).

    Timed with forward hooks around each child module, so the parts add up to
    the forward pass minus the folding, masking and skip concatenations.

    Parameters
    ----------
    network : UNet3d
        The network, on the CPU (:func:`mne_piunet.inference.prepare_network`).
    grid : SourceGrid
        Its grid; the inputs are random maps on it.
    dtype : torch.dtype
        Autocast precision; float32 runs without autocast.
    batch_size : int
        Maps per forward pass.
    n_batches : int
        Timed forward passes (after one warm-up pass).

    Returns
    -------
    ms_per_map : dict of str to float
        Milliseconds per map of each part: ``"stem"``, ``"down i"``,
        ``"pool i"``, ``"middle"``, ``"up i"`` and ``"out"``.
    """
    parts = {"stem": network.stem, "middle": network.middle, "out": network.out}
    parts.update({f"down {i}": m for i, m in enumerate(network.down)})
    parts.update({f"pool {i}": m for i, m in enumerate(network.pool)})
    parts.update({f"up {len(network.up) - 1 - i}": m for i, m in enumerate(network.up)})
    totals = dict.fromkeys(parts, 0.0)
    starts: dict[str, float] = {}
    hooks = []
    for name, module in parts.items():
        hooks.append(
            module.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter()))
        )
        hooks.append(
            module.register_forward_hook(
                lambda m, a, o, n=name: totals.__setitem__(n, totals[n] + time.perf_counter() - starts[n])
            )
        )
    x = _random_inputs(grid, batch_size, network)
    try:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            network(x)
            for name in totals:
                totals[name] = 0.0
            for _ in range(n_batches):
                network(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: 1e3 * t / (n_batches * batch_size) for name, t in totals.items()}


def bench_generation(
    montage: str = "biosemi64",
    n: int = 4096,
    batch: int = 256,
    seed: int = 0,
    spaces: tuple[str, ...] = ("volume", "surface"),
) -> dict[str, float]:
    """Samples per second of the simulation engine (sources -> sensors -> eLORETA -> grid).

    Volume (the grid, free orientation) and cortical (fsaverage5, fixed)
    setups on the template BEM; the forward and kernel are built beforehand.

    Parameters
    ----------
    montage : str
        Built-in montage of the simulated EEG.
    n : int
        Samples timed per setup (rounded down to whole batches).
    batch : int
        Samples per :func:`mne_piunet.simulation.simulate` call.
    seed : int
        Seed of the simulated sources and noise.
    spaces : tuple of str
        The source spaces to time: ``"volume"`` and/or ``"surface"``.

    Returns
    -------
    samples_per_s : dict of str to float
        Samples per second for each of ``spaces``.
    """
    grid = get_grid()
    rates = {}
    batch = min(batch, n)
    for space in spaces:
        prepared = prepare_setup(HeadSetup(montage, source_space=space), grid)
        rng = np.random.default_rng(seed)
        simulate(prepared, batch, rng)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n // batch):
            simulate(prepared, batch, rng)
        rates[space] = (n // batch) * batch / (time.perf_counter() - t0)
    return rates


#: The candidate architectures: the first bundled U-Net, narrower ones,
#: and space-to-depth ("s2d") ones that run the U-Net on 16 mm (10 x 12 x 10).
FRONTIER = {
    "width 16, 3 levels (first bundled)": dict(width=16, levels=3),
    "width 12, 3 levels": dict(width=12, levels=3, groups=4),
    "width 8, 3 levels": dict(width=8, levels=3, groups=4),
    "s2d, width 32, 2 levels": dict(width=32, levels=2, space_to_depth=2),
    "s2d, width 24, 2 levels": dict(width=24, levels=2, space_to_depth=2),
    "s2d, width 16, 2 levels": dict(width=16, levels=2, space_to_depth=2),
}


def frontier_costs(grid: SourceGrid, dtypes: tuple = (torch.float32, torch.bfloat16)) -> dict[str, dict]:
    """Parameters and forward ms per map (batch 16) of each :data:`FRONTIER` candidate, untrained.

    Parameters
    ----------
    grid : SourceGrid
        The grid the candidates are built for.
    dtypes : tuple of torch.dtype
        Precisions to time each candidate in (:func:`forward_ms_per_map`).

    Returns
    -------
    costs : dict of str to dict
        Per candidate name: ``"parameters"`` (count) and the forward ms per map
        under each dtype's name (e.g. ``"float32"``, ``"bfloat16"``).
    """
    from ..inference import prepare_network
    from ..network import UNetConfig

    out = {}
    for name, kwargs in FRONTIER.items():
        net = prepare_network(UNet3d(UNetConfig(**kwargs), torch.from_numpy(grid.mask)), torch.device("cpu"))
        out[name] = dict(parameters=sum(p.numel() for p in net.parameters()))
        for dtype in dtypes:
            out[name][dtype_name(dtype)] = forward_ms_per_map(net, grid, dtype)
    return out


def bench_speed(
    weights=None,
    montage: str = "biosemi64",
    sfreq: float = 250.0,
    n_epochs: int = 200,
    raw_minutes: float = 10.0,
    seed: int = 0,
    first_call: bool = False,
) -> dict[str, float]:
    """Wall times of eLORETA and PIUNet on the fsaverage5 cortex inverse (fixed orientation).

    Parameters
    ----------
    weights : path | None
        PIUNet weights; None for the bundled ones.
    montage : str
        Built-in montage of the simulated data.
    sfreq : float
        Sampling rate (Hz); the evoked and each epoch last 1 s.
    n_epochs : int
        Epochs for the per-call comparison; a quarter of them for the fp32 run.
    raw_minutes : float
        Length of the Raw for ``apply_raw`` (0 to skip).
    seed : int
        Seed of the simulated data.
    first_call : bool
        Also time a first and a second ``apply`` of a fresh model on a loose
        (0.2) fsaverage5 inverse, MNE's default: the first fits eLORETA's
        weights, the second takes the prepared operator from the cache.

    Returns
    -------
    figures : dict
        Seconds per call, ms per map, ratios to eLORETA and apply_raw's memory.
    """
    from ..inverse import PIUNetInverse

    piu = PIUNetInverse(weights)
    piu32 = PIUNetInverse(weights, precision="float32")
    prepared = prepare_setup(HeadSetup(montage, source_space="surface"), piu.grid)
    info = montage_info(montage, sfreq)
    inv = prepared.inverse_operator
    rng = np.random.default_rng(seed)
    n = int(round(sfreq))
    evoked = mne.EvokedArray(simulate(prepared, n, rng).sensor.T, info, nave=1, verbose=False)
    for p in (piu, piu32):
        p.apply(evoked, inv, DEFAULT_LAMBDA2)  # warm-up: operator cache, torch kernels
    out: dict[str, float] = dict(precision=dtype_name(piu.dtype), threads=torch.get_num_threads())
    if raw_minutes:
        out.update(_bench_raw(piu, inv, info, raw_minutes, rng))
    out.update(_bench_evoked(piu, evoked, inv))
    data = rng.standard_normal((n_epochs, len(info["ch_names"]), n)) * 1e-6
    out.update(_bench_epochs(piu, piu32, mne.EpochsArray(data, info, verbose=False), inv))
    out["forward_ms_per_map"] = forward_ms_per_map(piu.network, piu.grid, piu.dtype)
    out["forward_ms_per_map_fp32"] = forward_ms_per_map(piu.network, piu.grid)
    if first_call:
        loose = prepare_setup(HeadSetup(montage, source_space="surface", loose=0.2), piu.grid)
        out.update(_bench_first_call(weights, evoked, loose.inverse_operator))
    return out


# The timed calls below pass verbose=False: logging is not part of what they time.
def _bench_raw(piu, inv, info: mne.Info, raw_minutes: float, rng: np.random.Generator) -> dict[str, float]:
    """``apply_raw`` on minutes of noise: seconds, output MB and peak memory beyond the output (MB)."""
    n_times = int(raw_minutes * 60 * info["sfreq"])
    raw = mne.io.RawArray(rng.standard_normal((len(info["ch_names"]), n_times)) * 1e-6, info, verbose=False)
    t0 = time.perf_counter()
    stc, added = _measure_peak_mb(lambda: piu.apply_raw(raw, inv, DEFAULT_LAMBDA2, verbose=False))
    out = dict(raw_s=time.perf_counter() - t0, raw_output_mb=stc.data.nbytes / 2**20)
    out["raw_peak_beyond_output_mb"] = added - out["raw_output_mb"]
    return out  # the estimate and the Raw are freed here, before the next benchmarks


def _bench_evoked(piu, evoked: mne.Evoked, inv) -> dict[str, float]:
    """Seconds of ``apply_inverse(method="eLORETA")`` and ``piu.apply`` on one evoked, and their ratio."""
    out = dict(
        evoked_eloreta_s=_seconds(
            lambda: mne.minimum_norm.apply_inverse(evoked, inv, DEFAULT_LAMBDA2, "eLORETA", verbose=False)
        ),
        evoked_piunet_s=_seconds(lambda: piu.apply(evoked, inv, DEFAULT_LAMBDA2)),
    )
    out["evoked_ratio"] = out["evoked_piunet_s"] / out["evoked_eloreta_s"]
    return out


def _bench_first_call(weights, evoked: mne.Evoked, inv) -> dict[str, float]:
    """Seconds of a fresh model's first and second ``apply`` on ``inv``, and of MNE's eLORETA on it."""
    from ..inverse import PIUNetInverse

    piu = PIUNetInverse(weights)
    return dict(
        first_call_s=_seconds(lambda: piu.apply(evoked, inv, DEFAULT_LAMBDA2, verbose=False)),
        second_call_s=_seconds(lambda: piu.apply(evoked, inv, DEFAULT_LAMBDA2, verbose=False)),
        loose_eloreta_s=_seconds(
            lambda: mne.minimum_norm.apply_inverse(evoked, inv, DEFAULT_LAMBDA2, "eLORETA", verbose=False)
        ),
    )


def _bench_epochs(piu, piu32, epochs: mne.BaseEpochs, inv) -> dict[str, float]:
    """Seconds of eLORETA and PIUNet on all epochs, their ratio, and PIUNet's ms per map (fp32 on a quarter)."""
    n_times = len(epochs.times)
    # generators, each estimate dropped once made: MNE's 200 fsaverage5 estimates alone are 8 GB
    out = dict(
        epochs_eloreta_s=_seconds(
            lambda: _consume(
                mne.minimum_norm.apply_inverse_epochs(
                    epochs, inv, DEFAULT_LAMBDA2, "eLORETA", return_generator=True, verbose=False
                )
            )
        ),
        epochs_piunet_s=_seconds(
            lambda: _consume(piu.apply_epochs(epochs, inv, DEFAULT_LAMBDA2, return_generator=True))
        ),
    )
    out["epochs_ratio"] = out["epochs_piunet_s"] / out["epochs_eloreta_s"]
    out["epochs_ms_per_map"] = 1e3 * out["epochs_piunet_s"] / (len(epochs) * n_times)
    quarter = epochs[: max(1, len(epochs) // 4)]
    seconds = _seconds(
        lambda: _consume(piu32.apply_epochs(quarter, inv, DEFAULT_LAMBDA2, return_generator=True))
    )
    out["epochs_ms_per_map_fp32"] = 1e3 * seconds / (len(quarter) * n_times)
    return out
