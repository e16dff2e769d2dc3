"""Simulated sources and noise: blobs and cortical patches, their time courses, noise at a given SNR.

All vectors are in the template MRI frame (fsaverage surface RAS), the grid's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .setups import PreparedSetup


@dataclass(frozen=True)
class SourcePrior:
    """Distribution of simulated sources and noise.

    ``n_sources`` is drawn from 1..``max_sources`` with probability proportional
    to ``1 / k**n_sources_decay`` (favouring few sources), the Gaussian extent
    sigma log-uniformly from ``sigma_mm``, and the SNR (dB, as in the paper:
    noise std = signal std / sqrt(10**(SNR/10))) uniformly from ``snr_db``.
    A fraction ``coloured_noise`` of the samples draws its noise from the
    setup's sensor covariance (``noise_cov`` of :class:`PreparedSetup`: background
    brain activity, or a user's noise covariance) instead of white noise.

    Parameters
    ----------
    max_sources : int
        Largest number of simultaneous sources in a sample.
    n_sources_decay : float
        Exponent of the ``1 / k**n_sources_decay`` probability of ``k`` sources.
    sigma_mm : tuple of float
        Range (mm) of a source's Gaussian extent, drawn log-uniformly.
    snr_db : tuple of float
        Range (dB) of a sample's SNR, drawn uniformly.
    coloured_noise : float
        Probability, in [0, 1], that a :func:`simulate` call (one chunk of
        samples, all alike) draws its noise from the setup's ``noise_cov``;
        with 0 (the default) no draw is made and the noise is white.
    instantaneous : float
        With a temporal window (:func:`simulate`'s ``window``): probability, in
        [0, 1], that a chunk's context is its centre map alone, as inference
        gives a single map or data shorter than the window, so the network
        stays good there too.
    """

    max_sources: int = 10
    n_sources_decay: float = 1.0
    sigma_mm: tuple[float, float] = (5.0, 40.0)
    snr_db: tuple[float, float] = (0.0, 30.0)
    coloured_noise: float = 0.0
    instantaneous: float = 0.1

    def __post_init__(self):
        for name in ("coloured_noise", "instantaneous"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} is a fraction of the samples, in [0, 1]; got {getattr(self, name)!r}"
                )


def blob_profiles(prepared: PreparedSetup, centres: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Unit-norm Gaussian profiles over a setup's sources, cut at 3 sigma.

    Cortical profiles stay within their centre's hemisphere.

    Parameters
    ----------
    prepared : PreparedSetup
        The setup.
    centres : array of int, shape (n_blobs,)
        Index of each blob's centre source.
    sigma : array, shape (n_blobs,)
        Each blob's Gaussian extent sigma (m).

    Returns
    -------
    profiles : array, shape (n_blobs, n_src)
        Non-negative, unit L2 norm.
    """
    # |c - p|^2 expanded: a matrix product instead of an (n_blobs, n_src, 3) temporary
    pos = prepared.pos
    d2 = (pos[centres] ** 2).sum(1)[:, None] + (pos**2).sum(1)[None] - 2 * pos[centres] @ pos.T
    sigma = np.asarray(sigma, float)[:, None]
    profile = np.exp(-d2 / (2 * sigma**2))
    profile[d2 > (3 * sigma) ** 2] = 0.0
    if prepared.hemi_of is not None:
        profile *= prepared.hemi_of[None] == prepared.hemi_of[centres][:, None]
    return profile / np.linalg.norm(profile, axis=1, keepdims=True)


def simulate_sources(
    prepared: PreparedSetup,
    n: int,
    rng: np.random.Generator,
    prior: SourcePrior = SourcePrior(),
    n_sources: int | None = None,
    sigma_mm: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Draw ``n`` source maps of Gaussian blobs (volume) or cortical patches.

    Each blob has unit L2 norm times an N(0, 1) amplitude (x 10 nAm); volume
    blobs have one random orientation, cortical patches follow the normals and
    stay within the centre's hemisphere (moment vectors along the normals
    where the leadfield is free, as for a loose inverse).

    Parameters
    ----------
    prepared : PreparedSetup
        The setup whose sources, normals and hemispheres are used.
    n : int
        Number of samples.
    rng : numpy.random.Generator
        The random generator.
    prior : SourcePrior
        Distribution of the number of sources and their extents.
    n_sources : int | None
        Every sample's number of sources, instead of the prior's draw.
    sigma_mm : tuple of float | None
        Range (mm) of the extents, instead of the prior's.

    Returns
    -------
    sources : array, shape (n, n_src, 3) or (n, n_src)
        Moment vectors (free or loose leadfield) or amplitudes (fixed).
    counts : array of int, shape (n,)
        Each sample's number of sources.
    sigmas : list of arrays
        Per sample, the extent (mm) of each source.
    """
    atoms, owner, counts, sigmas = source_atoms(prepared, n, rng, prior, n_sources, sigma_mm)
    sources = sparse.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n, len(owner)))
    return np.asarray(sources @ atoms.reshape(len(owner), -1)).reshape((n,) + atoms.shape[1:]), counts, sigmas


def source_atoms(
    prepared: PreparedSetup,
    n: int,
    rng: np.random.Generator,
    prior: SourcePrior = SourcePrior(),
    n_sources: int | None = None,
    sigma_mm: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """The single sources of :func:`simulate_sources`, before each sample sums its own.

    Parameters
    ----------
    prepared, n, rng, prior, n_sources, sigma_mm
        As for :func:`simulate_sources`.

    Returns
    -------
    atoms : array, shape (n_atoms, n_src, 3) or (n_atoms, n_src)
        Each source's moment vectors or amplitudes, its N(0, 1) x 10 nAm
        amplitude included.
    owner : array of int, shape (n_atoms,)
        The sample each source belongs to.
    counts, sigmas
        As for :func:`simulate_sources`.
    """
    if n_sources is None:
        k = np.arange(1, prior.max_sources + 1)
        p = 1.0 / k**prior.n_sources_decay
        counts = rng.choice(k, size=n, p=p / p.sum())
    else:
        counts = np.full(n, int(n_sources))
    lo, hi = sigma_mm if sigma_mm is not None else prior.sigma_mm
    total = int(counts.sum())
    centres = rng.integers(0, prepared.n_sources, total)
    sigma = np.exp(rng.uniform(np.log(lo), np.log(hi), total)) * 1e-3
    profile = 1e-8 * rng.standard_normal(total)[:, None] * blob_profiles(prepared, centres, sigma)
    owner = np.repeat(np.arange(n), counts)
    if prepared.normals is None:  # blobs: one random orientation each
        ori = rng.standard_normal((total, 3))
        ori /= np.linalg.norm(ori, axis=1, keepdims=True)
        atoms = profile[:, :, None] * ori[:, None, :]
    elif prepared.free:  # patches along the normals, as moments for a loose inverse's leadfield
        atoms = profile[:, :, None] * prepared.normals[None]
    else:  # patches along the normals: amplitudes
        atoms = profile
    sigmas = np.split(sigma * 1e3, np.cumsum(counts)[:-1])
    return atoms, owner, counts, sigmas


#: Kinds of source time course and their probabilities (:func:`source_time_courses`).
TIME_COURSES = {"erp": 0.5, "burst": 0.3, "pink": 0.2}


def source_time_courses(owner: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random time courses of sources over a window, partly correlated within a sample.

    Each source gets one of :data:`TIME_COURSES`: an ERP-like gamma-shaped
    bump (peak latency anywhere in the window, width 15-150 ms), an
    oscillatory burst (4-40 Hz under a Gaussian envelope of 10-100 ms sigma),
    or 1/f (pink to brown) background activity, each of either sign. Half of
    the sources have their course mixed with their sample's first source's
    (weight 0-0.7), so sources are partly correlated, as in real evoked
    responses. Each sample's first source is active at the window's centre
    (an ERP within a quarter width of its peak, or a burst near a crest), so
    the map refined is never empty. Each course peaks at 1 in absolute value.

    Parameters
    ----------
    owner : array of int, shape (n_atoms,)
        The sample each source belongs to (:func:`source_atoms`).
    times : array, shape (n_points,)
        The window's times (s), centred on 0.
    rng : numpy.random.Generator
        The random generator.

    Returns
    -------
    courses : array, shape (n_atoms, n_points)
        One time course per source.
    """
    n_atoms, span = len(owner), times[-1] - times[0]
    first = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]  # each sample's first source
    kind = rng.choice(len(TIME_COURSES), n_atoms, p=list(TIME_COURSES.values()))
    latency = rng.uniform(times[0], times[-1], n_atoms)
    width = np.exp(rng.uniform(np.log(0.015), np.log(0.15), n_atoms))
    phase = rng.uniform(0, 2 * np.pi, n_atoms)
    # the first source is active at the centre, the time point refined: an ERP near
    # its peak or a burst near a crest, never a map of nothing
    kind[first] = np.minimum(kind[first], 1)
    latency[first] = rng.uniform(-0.25, 0.25, len(first)) * width[first]
    phase[first] = rng.uniform(-np.pi / 4, np.pi / 4, len(first))
    # a gamma bump of shape k peaks at (k - 1) * theta after its onset
    shape_k = rng.uniform(2.0, 6.0, n_atoms)
    theta = width / (2 * np.sqrt(shape_k))
    lag = (times[None] - latency[:, None]) / theta[:, None] + (shape_k - 1)[:, None]
    bump = np.where(lag > 0, np.exp((shape_k[:, None] - 1) * np.log(np.maximum(lag, 1e-12)) - lag), 0.0)
    freq = np.exp(rng.uniform(np.log(4.0), np.log(40.0), n_atoms))
    envelope = np.exp(-((times[None] - latency[:, None]) ** 2) / (2 * (width[:, None] * 2 / 3) ** 2))
    burst = envelope * np.cos(2 * np.pi * freq[:, None] * times[None] + phase[:, None])
    # 1/f**beta over a span four times the window, its middle kept
    n_fft = 4 * len(times)
    f = np.fft.rfftfreq(n_fft, d=span / max(len(times) - 1, 1))
    beta = rng.uniform(1.0, 2.0, n_atoms)
    spectrum = rng.standard_normal((n_atoms, len(f))) + 1j * rng.standard_normal((n_atoms, len(f)))
    spectrum *= np.where(f > 0, np.maximum(f, 1e-12), np.inf)[None] ** (-beta[:, None] / 2)
    middle = (n_fft - len(times)) // 2
    pink = np.fft.irfft(spectrum, n_fft)[:, middle : middle + len(times)]
    courses = np.choose(kind[:, None], [bump, burst, pink]) * rng.choice([-1.0, 1.0], n_atoms)[:, None]
    courses /= np.maximum(np.abs(courses).max(axis=1, keepdims=True), 1e-12)
    lead = courses[np.repeat(first, np.diff(np.r_[first, n_atoms]))]
    mix = rng.uniform(0.0, 0.7, n_atoms) * (rng.random(n_atoms) < 0.5)
    courses = (1 - mix)[:, None] * courses + mix[:, None] * lead
    return courses / np.maximum(np.abs(courses).max(axis=1, keepdims=True), 1e-12)


def noise_colouring(noise_cov: np.ndarray) -> np.ndarray:
    """A matrix ``C`` with ``C @ C.T == noise_cov`` for a covariance of any rank.

    Real covariances are rank-deficient: an average reference or SSP
    projectors remove dimensions, and rounding leaves eigenvalues of about
    -1e-19 where a Cholesky factorisation fails. As MNE's whitener does, the
    eigendecomposition is used and eigenvalues below ``1e-12`` of the largest
    (numerically zero) are dropped, so noise drawn through ``C`` lies in the
    covariance's own subspace.

    Parameters
    ----------
    noise_cov : array, shape (n_chan, n_chan)
        A symmetric positive semi-definite covariance.

    Returns
    -------
    colouring : array, shape (n_chan, rank)
        ``noise = white @ colouring.T`` has covariance ``noise_cov`` for white
        ``(n, rank)`` draws.
    """
    eig, vec = np.linalg.eigh((noise_cov + noise_cov.T) / 2)
    keep = eig > 1e-12 * max(eig.max(), 0.0)
    if not keep.any():
        raise ValueError("The noise covariance is zero: it cannot colour noise")
    return vec[:, keep] * np.sqrt(eig[keep])


def add_noise(
    clean: np.ndarray,
    snr_db: np.ndarray,
    rng: np.random.Generator,
    noise_cov: np.ndarray | None = None,
    *,
    channel_std: np.ndarray | None = None,
    eeg: np.ndarray | None = None,
) -> np.ndarray:
    """Add sensor noise at the given SNR (dB) per sample.

    The signal and noise stds are taken over the channels divided by
    ``channel_std`` (the inverse's noise level, so MEG's T and T/m and EEG's
    V are comparable), EEG channels average-referenced. The noise is white
    with stds ``channel_std``, or drawn from ``noise_cov`` (n_chan, n_chan;
    any rank, see :func:`noise_colouring`), and rescaled.

    Parameters
    ----------
    clean : array, shape (n, n_chan) or (n, n_points, n_chan)
        Noise-free sensor data, one time point or one window per sample. A
        window's noise is independent over time and of one level; its SNR is
        that of the window's centre, the time point refined and scored.
    snr_db : float | array, shape (n,)
        SNR (dB) of each sample.
    rng : numpy.random.Generator
        The random generator.
    noise_cov : array, shape (n_chan, n_chan) | None
        Covariance of the noise (None: white).
    channel_std : array, shape (n_chan,) | None
        Each channel's noise level (None: all equal, as for EEG alone).
    eeg : array of bool, shape (n_chan,) | None
        Which channels are EEG (None: all).

    Returns
    -------
    noisy : array, shape of ``clean``
        ``clean`` plus the rescaled noise.
    """
    clean = np.asarray(clean)
    shape, n_chan = clean.shape, clean.shape[-1]
    clean = clean.reshape(len(clean), -1, n_chan)  # (n, n_points, n_chan)
    std = np.ones(n_chan) if channel_std is None else np.asarray(channel_std, float)
    eeg = np.ones(n_chan, bool) if eeg is None else np.asarray(eeg, bool)

    def spread(data):  # EEG average-referenced (in V), std over whitened channels, RMS over time
        if eeg.any():
            data = data.copy()
            data[..., eeg] -= data[..., eeg].mean(axis=-1, keepdims=True)
        return np.sqrt(((data / std).var(axis=-1)).mean(axis=-1))

    sig = spread(clean[:, clean.shape[1] // 2, None])
    if noise_cov is None:
        noise = rng.standard_normal(clean.shape) * std
    else:  # coloured in noise units: T, T/m and V differ by orders of magnitude
        colouring = noise_colouring(noise_cov / std[:, None] / std[None])
        noise = (rng.standard_normal(clean.shape[:2] + colouring.shape[1:]) @ colouring.T) * std
    scale = sig / np.sqrt(10 ** (np.asarray(snr_db) / 10)) / spread(noise)
    return (clean + noise * scale[:, None, None]).reshape(shape)
