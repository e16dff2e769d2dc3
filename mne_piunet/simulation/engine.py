"""The simulation engine: sources -> sensors (+ noise) -> eLORETA -> grid, in seeded batches.

:func:`simulate` draws one setup's batch; :class:`SimulationEngine` draws
vectorised, seeded batches over several setups (domain randomisation);
:func:`simulate_demo_evoked` makes the demo's evoked response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mne
import numpy as np
from scipy import sparse

from ..grid import SourceGrid
from ..inference import PerSampleResolution, context_windows, network_inputs, step_average
from ..network import UNetConfig
from ..physics import window_subspace_fit
from .setups import PreparedSetup
from .sources import (
    SourcePrior,
    add_noise,
    blob_profiles,
    simulate_sources,
    source_atoms,
    source_time_courses,
)


@dataclass
class SimulatedBatch:
    """A batch of simulated samples from one setup.

    ``true`` and ``eloreta`` live on the setup's own sources: (n, n_src, 3)
    moment vectors (Am, MRI frame) where the leadfield is free or loose,
    (n, n_src) signed amplitudes along the normals where it is fixed.
    ``true_grid`` and ``eloreta_grid`` are both resampled onto the grid,
    (n, n_grid, 3).

    Parameters
    ----------
    setup : str
        The setup's name (:attr:`PreparedSetup.name`).
    sensor : array, shape (n, n_chan)
        Noisy sensor data, one time point per sample.
    true : array, shape (n, n_src, 3) or (n, n_src)
        The simulated sources.
    eloreta : array, shape (n, n_src, 3) or (n, n_src)
        eLORETA's estimates from ``sensor``.
    true_grid : array, shape (n, n_grid, 3)
        The sources on the grid.
    eloreta_grid : array, shape (n, n_grid, 3)
        The estimates on the grid.
    snr_db : array, shape (n,)
        Each sample's SNR (dB).
    n_sources : array of int, shape (n,)
        Each sample's number of sources.
    sigma_mm : list of array
        Per sample, the extent (mm) of each of its sources.
    sensor_window : array, shape (n, window_points, n_chan) | None
        With a temporal window: each sample's sensor data over its window
        (``sensor`` is its centre).
    eloreta_window_grid : array, shape (n, window_points, n_grid, 3) | None
        eLORETA on the grid over each sample's window (``eloreta_grid`` is
        its centre); the context the network sees.
    window_s : float
        The window's span (s): its points are ``window_s / (n_points - 1)`` apart.
    window_fit : array, shape (n, n_grid) | None
        Each sample's MUSIC scan of its window's data, as the data-fit step
        computes it for a recording (:func:`~mne_piunet.physics.window_subspace_fit`
        of what eLORETA predicts); made for a ``"power-music"`` context. Of
        the data as simulated: at the network's own rate (training,
        validation) that is what ``apply`` scans; of a faster window,
        ``apply`` scans its step average instead.
    """

    setup: str
    sensor: np.ndarray
    true: np.ndarray
    eloreta: np.ndarray
    true_grid: np.ndarray
    eloreta_grid: np.ndarray
    snr_db: np.ndarray
    n_sources: np.ndarray
    sigma_mm: list[np.ndarray] = field(default_factory=list)
    sensor_window: np.ndarray | None = None
    eloreta_window_grid: np.ndarray | None = None
    window_s: float = 0.0
    window_fit: np.ndarray | None = None

    def network_maps(self, network: UNetConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The eLORETA maps and windows that :func:`~mne_piunet.inference.predict_maps` takes.

        Each sample is its own time course: its window's maps, never another
        sample's, are its context, averaged over the network's time step and
        picked as from a recording at the window's sampling rate
        (:func:`~mne_piunet.inference.step_average`,
        :func:`~mne_piunet.inference.context_windows`).

        Parameters
        ----------
        network : UNetConfig | None
            The network's context; None or no context: the centre maps alone.

        Returns
        -------
        x0 : array, shape (n_maps, n_grid, 3)
            The window maps of all samples in a row (the centre maps without a window).
        windows : array of int, shape (n, n_points)
            Each sample's context as rows of ``x0`` (one column: the centre alone).
        """
        n = len(self.eloreta_grid)
        if self.eloreta_window_grid is None or network is None or network.context == "none":
            return self.eloreta_grid, np.arange(n)[:, None]
        n_points = self.eloreta_window_grid.shape[1]
        sfreq = (n_points - 1) / self.window_s
        centre = context_windows(n_points, sfreq, network, [n_points // 2])
        maps = step_average(self.eloreta_window_grid, sfreq, network, axis=1)  # as apply averages a recording
        x0 = maps.reshape(n * n_points, *maps.shape[2:])
        return x0, centre + n_points * np.arange(n)[:, None]


def simulate(
    prepared: PreparedSetup,
    n: int,
    rng: np.random.Generator,
    prior: SourcePrior = SourcePrior(),
    *,
    snr_db: float | None = None,
    n_sources: int | None = None,
    sigma_mm: tuple[float, float] | None = None,
    window: tuple[float, int] | None = None,
    music: bool = False,
) -> SimulatedBatch:
    """Simulate ``n`` samples: sources, noisy sensors and eLORETA, native and on the grid.

    Parameters
    ----------
    prepared : PreparedSetup
        The setup to simulate from.
    n : int
        Number of samples.
    rng : numpy.random.Generator
        The random generator.
    prior : SourcePrior
        Distribution of sources and noise. With ``prior.coloured_noise`` > 0
        and a setup ``noise_cov``, one draw decides whether all ``n`` samples
        get coloured or white noise.
    snr_db : float | None
        Every sample's SNR (dB), instead of the prior's draw.
    n_sources : int | None
        Every sample's number of sources, instead of the prior's draw.
    sigma_mm : tuple of float | None
        Range (mm) of the extents, instead of the prior's.
    window : (float, int) | None
        ``(window_s, window_points)``: each sample is a time course over a
        window of that many seconds and evenly spaced time points, its
        sources following :func:`source_time_courses`, its noise independent
        over time; the truth, ``sensor`` and ``eloreta`` are the window's
        centre. With probability ``prior.instantaneous`` (one draw for all
        ``n``) the window holds the centre alone, repeated. None: one time
        point per sample.
    music : bool
        Scan each window's data with the inverse's gain
        (:attr:`SimulatedBatch.window_fit`); needs ``window``.

    Returns
    -------
    batch : SimulatedBatch
        The samples.
    """
    if window is None:
        sources, counts, sigmas = simulate_sources(prepared, n, rng, prior, n_sources, sigma_mm)
        clean = sources.reshape(n, -1) @ prepared.leadfield.T
    else:
        atoms, owner, counts, sigmas = source_atoms(prepared, n, rng, prior, n_sources, sigma_mm)
        window_s, n_points = window
        courses = source_time_courses(owner, np.linspace(-window_s / 2, window_s / 2, n_points), rng)
        # each sample sums its own sources, weighted by their courses: sparse (n * n_points, n_atoms)
        rows = (owner[:, None] * n_points + np.arange(n_points)[None]).ravel()
        weights = sparse.csr_matrix(
            (courses.ravel(), (rows, np.repeat(np.arange(len(owner)), n_points))),
            shape=(n * n_points, len(owner)),
        )
        atom_sensors = atoms.reshape(len(owner), -1) @ prepared.leadfield.T
        clean = (weights @ atom_sensors).reshape(n, n_points, -1)
        centre = sparse.csr_matrix(weights[np.arange(n) * n_points + n_points // 2])
        sources = np.asarray(centre @ atoms.reshape(len(owner), -1)).reshape((n,) + atoms.shape[1:])
    snr = np.full(n, float(snr_db)) if snr_db is not None else rng.uniform(*prior.snr_db, n)
    # no draw when the prior has no coloured noise: seeded white-noise sets stay as they were
    coloured = (
        prior.coloured_noise > 0 and prepared.noise_cov is not None and rng.random() < prior.coloured_noise
    )
    sensor = add_noise(
        clean,
        snr,
        rng,
        prepared.noise_cov if coloured else None,
        channel_std=prepared.channel_std,
        eeg=prepared.eeg,
    )
    sensor_window = window_grid = None
    if window is not None:
        if prior.instantaneous > 0 and rng.random() < prior.instantaneous:
            sensor = np.repeat(sensor[:, n_points // 2 : n_points // 2 + 1], n_points, axis=1)
        sensor_window, sensor = sensor, sensor[:, n_points // 2]
        flat = (sensor_window.reshape(n * n_points, -1) @ prepared.kernel.T).reshape(
            (n * n_points,) + sources.shape[1:]
        )
        window_grid = prepared.grid_values(flat).reshape(n, n_points, -1, 3)
        eloreta = flat.reshape((n, n_points) + sources.shape[1:])[:, n_points // 2]
        eloreta_grid = window_grid[:, n_points // 2]
    else:
        eloreta = (sensor @ prepared.kernel.T).reshape(sources.shape)
        eloreta_grid = prepared.grid_values(eloreta)
    return SimulatedBatch(
        window_fit=music_scan(prepared, sensor_window) if music and sensor_window is not None else None,
        setup=prepared.name,
        sensor=sensor,
        true=sources,
        eloreta=eloreta,
        true_grid=prepared.grid_values(sources),
        eloreta_grid=eloreta_grid,
        snr_db=snr,
        n_sources=counts,
        sigma_mm=sigmas,
        sensor_window=sensor_window,
        eloreta_window_grid=window_grid,
        window_s=0.0 if window is None else float(window[0]),
    )


def music_scan(prepared: PreparedSetup, sensor_window: np.ndarray) -> np.ndarray:
    """Each sample's MUSIC scan of its window, as the data-fit step scans a recording's.

    The window's sensor data go to the whitened data their eLORETA estimate
    predicts (:attr:`PreparedSetup.fit_predictor`), and every grid dipole's
    fit to that window's signal subspace is taken
    (:func:`~mne_piunet.physics.window_subspace_fit`).

    Parameters
    ----------
    prepared : PreparedSetup
        The setup the data are from.
    sensor_window : array, shape (n, n_points, n_chan)
        Each sample's sensor data over its window (one point: a single map).

    Returns
    -------
    fit : array, shape (n, n_grid)
        In [0, 1].
    """
    predicted = sensor_window @ prepared.fit_predictor.T  # (n, n_points, n_white)
    every_point = np.arange(sensor_window.shape[1])[None]
    return np.concatenate([window_subspace_fit(prepared.fit_bases, p.T, every_point)[0] for p in predicted])


class SimulationEngine:
    """Seeded batches over several prepared setups (domain randomisation).

    Parameters
    ----------
    setups : list of PreparedSetup
        The forward models to draw from, uniformly.
    grid : SourceGrid
        The network's grid.
    prior : SourcePrior
        Source and noise distribution.
    seed : int
        Seed of the engine's random generator.
    chunk : int
        Samples drawn from one setup at a time (vectorised).
    network : UNetConfig | None
        The network the batches are for: with a temporal context, each
        sample is a time course over its window (:func:`simulate`) and the
        inputs carry the context channels. None: no context.
    """

    def __init__(
        self,
        setups: list[PreparedSetup],
        grid: SourceGrid,
        prior: SourcePrior = SourcePrior(),
        seed: int = 0,
        chunk: int = 8,
        network: UNetConfig | None = None,
    ):
        if not setups:
            raise ValueError("SimulationEngine needs at least one prepared setup")
        self.setups, self.grid, self.prior, self.chunk = setups, grid, prior, chunk
        self.network = UNetConfig() if network is None else network
        self.window = network_window(self.network)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> list[SimulatedBatch]:
        """``n`` samples as a list of per-setup :class:`SimulatedBatch` chunks.

        Parameters
        ----------
        n : int
            Number of samples.

        Returns
        -------
        chunks : list of SimulatedBatch
            Chunks of up to ``chunk`` samples, each from one setup drawn
            uniformly.
        """
        out = []
        for start in range(0, n, self.chunk):
            prepared = self.setups[self.rng.integers(len(self.setups))]
            out.append(
                simulate(
                    prepared,
                    min(self.chunk, n - start),
                    self.rng,
                    self.prior,
                    window=self.window,
                    music=self.network.scans_data,
                )
            )
        return out

    def batch(self, n: int, dtype=None) -> tuple:
        """A training batch: dense, max-normalised tensors and metadata.

        Parameters
        ----------
        n : int
            Number of samples (drawn by :meth:`sample`).
        dtype : torch.dtype | None
            The tensors' dtype (default: ``torch.float32``).

        Returns
        -------
        inputs : torch.Tensor, shape (n, in_channels, ``*grid.shape``)
            eLORETA on the grid and its context, normalised by
            :func:`normalised_dense`.
        targets : torch.Tensor, shape (n, 3, ``*grid.shape``)
            The truth on the grid, normalised alike.
        meta : dict
            ``scale``, ``log_ratio`` (tensor, the amplitude target),
            ``snr_db``, ``n_sources``, ``setup``.
        """
        import torch

        chunks = self.sample(n)
        inputs, targets, scale, ratio = normalised_dense(self.grid, chunks, self.network)
        meta = dict(
            scale=scale,
            log_ratio=torch.from_numpy(np.log(ratio)).to(torch.float32),
            snr_db=np.concatenate([c.snr_db for c in chunks]),
            n_sources=np.concatenate([c.n_sources for c in chunks]),
            setup=sum(([c.setup] * len(c.snr_db) for c in chunks), []),
        )
        dtype = torch.float32 if dtype is None else dtype
        return torch.from_numpy(inputs).to(dtype), torch.from_numpy(targets).to(dtype), meta


def network_window(network: UNetConfig) -> tuple[float, int] | None:
    """The ``window`` of :func:`simulate` that a network's inputs need (None: no context).

    Parameters
    ----------
    network : UNetConfig
        The network.

    Returns
    -------
    window : (float, int) | None
        ``(window_s, window_points)``.
    """
    return None if network.context == "none" else (network.window_s, network.window_points)


def batch_maps(chunks: list[SimulatedBatch], network: UNetConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """The maps and windows of several batches together (:meth:`SimulatedBatch.network_maps`).

    Parameters
    ----------
    chunks : list of SimulatedBatch
        The batches.
    network : UNetConfig | None
        The network's context.

    Returns
    -------
    x0 : array, shape (n_maps, n_grid, 3)
        Their maps in a row.
    windows : array of int, shape (n, n_points)
        Each sample's rows of ``x0``.
    """
    maps, windows, offset = [], [], 0
    for chunk in chunks:
        x0, idx = chunk.network_maps(network)
        maps.append(x0)
        windows.append(idx + offset)
        offset += len(x0)
    return np.concatenate(maps), np.concatenate(windows)


def batch_fits(chunks: list[SimulatedBatch], network: UNetConfig | None) -> np.ndarray | None:
    """The MUSIC scans of several batches together, for a ``"power-music"`` context (else None).

    Parameters
    ----------
    chunks : list of SimulatedBatch
        The batches (simulated with ``music=True``).
    network : UNetConfig | None
        The network's context.

    Returns
    -------
    fit : array, shape (n, n_grid) | None
        :attr:`SimulatedBatch.window_fit` in a row.
    """
    if network is None or not network.scans_data:
        return None
    if any(c.window_fit is None for c in chunks):
        raise ValueError("A 'power-music' context needs samples simulated with music=True.")
    return np.concatenate([c.window_fit for c in chunks])


def sample_resolution(setups: list[PreparedSetup], names: list[str]) -> PerSampleResolution:
    """Each sample's setup's resolution on the grid (:attr:`PreparedSetup.resolution`), for a residual pass.

    Parameters
    ----------
    setups : list of PreparedSetup
        The setups the samples were drawn from.
    names : list of str
        Each sample's setup (:attr:`SimulatedBatch.setup`).

    Returns
    -------
    resolution : PerSampleResolution
        Over the setups the samples use (the others are not built).
    """
    index_of = {}
    for i, prepared in enumerate(setups):
        if prepared.name in index_of:  # a sample names its setup: the names must tell them apart
            raise ValueError(
                f"Two setups are named {prepared.name!r}, so a sample's name does not say which one's "
                "resolution it needs: list each setup once (setups differing only in conductivity or "
                "lambda2 share a name)."
            )
        index_of[prepared.name] = i
    unknown = sorted(set(names) - set(index_of))
    if unknown:
        raise ValueError(f"Samples from setups not among the given ones: {unknown}")
    index = np.array([index_of[name] for name in names])
    return PerSampleResolution({i: setups[i].resolution for i in np.unique(index)}, index)


def batch_resolution(
    chunks: list[SimulatedBatch], setups: list[PreparedSetup], network: UNetConfig | None
) -> PerSampleResolution | None:
    """:func:`sample_resolution` of several batches in a row, for a network with a residual pass (else None)."""
    if network is None or not network.residual_pass:
        return None
    return sample_resolution(setups, [c.setup for c in chunks for _ in range(len(c.snr_db))])


def normalised_dense(
    grid: SourceGrid, chunks: list[SimulatedBatch], network: UNetConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalise simulated eLORETA maps (and their context) and the truth onto the grid tensor.

    Each eLORETA map is divided by its largest moment norm times its
    canonical sign (``scale``, :func:`~mne_piunet.inference.normalise_inputs`), so the
    truth flips with its input; the context channels follow
    (:func:`~mne_piunet.inference.network_inputs`). The
    truth is divided by the same number and then by its own peak norm
    (``ratio``, the amplitude the network predicts as ``log(ratio)``), so the
    target shape peaks at 1 like the input. ``truth = target * ratio * scale``.

    Parameters
    ----------
    grid : SourceGrid
        The network's grid.
    chunks : list of SimulatedBatch
        The samples.
    network : UNetConfig
        The network the inputs are for (its context).

    Returns
    -------
    inputs : array of float32, shape (n, in_channels, ``*grid.shape``)
        The normalised maps and their context.
    targets : array of float32, shape (n, 3, ``*grid.shape``)
        The normalised truths.
    scale, ratio : array, shape (n,)
        The divisors (an all-zero map's ``scale`` is 1).
    """
    x0, windows = batch_maps(chunks, network)
    inputs, scale = network_inputs(grid, x0, windows, network, batch_fits(chunks, network))
    scale = np.where(scale != 0, scale, 1.0)  # an all-zero map keeps its (zero) truth
    x = np.concatenate([c.true_grid for c in chunks])
    # the signed scale flips the truth with its input: the target's polarity follows the input's
    ratio = np.linalg.norm(x, axis=-1).max(axis=-1) / np.abs(scale)
    ratio = np.where(ratio > 0, ratio, 1.0)
    targets = grid.to_dense((x / (scale * ratio)[:, None, None]).astype(np.float32))
    return inputs, targets, scale, ratio


#: The demo's source: left superior temporal region (template MRI coordinates, m).
DEMO_SOURCE_POS = np.array([-0.052, -0.020, 0.006])


def simulate_demo_evoked(
    setup: PreparedSetup, snr_db: float = 10.0, sigma_mm: float = 10.0, seed: int = 0
) -> tuple[mne.EvokedArray, np.ndarray]:
    """An Evoked from one radial Gaussian blob at :data:`DEMO_SOURCE_POS` with a 10 Hz burst.

    Parameters
    ----------
    setup : PreparedSetup
        A volume setup (free orientation).
    snr_db : float
        SNR (dB) at the peak of the burst: white noise of the level that
        :func:`add_noise` gives the peak's map, at every time point.
    sigma_mm : float
        The blob's Gaussian extent sigma (mm).
    seed : int
        Seed of the noise.

    Returns
    -------
    evoked : mne.EvokedArray
        Half a second at the setup's sampling rate.
    centre : array, shape (3,)
        The true source position (m, template MRI coordinates).
    """
    rng = np.random.default_rng(seed)
    idx = int(np.argmin(np.linalg.norm(setup.pos - DEMO_SOURCE_POS, axis=1)))
    centre = setup.pos[idx]
    profile = blob_profiles(setup, np.array([idx]), np.array([sigma_mm * 1e-3]))[0]
    moments = (profile[:, None] * centre[None] / np.linalg.norm(centre)).reshape(-1)  # radial
    times = np.arange(0, 0.5, 1 / setup.info["sfreq"])
    course = 20e-9 * np.sin(2 * np.pi * 10 * times) * np.exp(-((times - 0.2) ** 2) / (2 * 0.06**2))
    clean = np.outer(setup.leadfield @ moments, course)
    peak = np.broadcast_to(clean[:, np.argmax(np.abs(course))], clean.T.shape)
    noise = (
        add_noise(peak, np.full(len(times), snr_db), rng, channel_std=setup.channel_std, eeg=setup.eeg) - peak
    )
    evoked = mne.EvokedArray(clean + noise.T, setup.info, tmin=0.0, nave=1)
    return evoked, centre
