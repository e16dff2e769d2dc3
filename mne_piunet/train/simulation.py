"""Simulated EEG and MEG and their eLORETA estimates: training and evaluation data.

A :class:`HeadSetup` names one forward model (sensors x head model x source
space); :func:`prepare_setup` precomputes its leadfield and its eLORETA kernel
with MNE's own inverse machinery, so the engine's input equals
``apply_inverse(..., method="eLORETA", pick_ori="vector")`` on the same data.
:class:`SimulationEngine` draws vectorised, seeded batches over several setups
(domain randomisation): sources -> sensors (+ noise) -> eLORETA -> grid.

All vectors are in the template MRI frame (fsaverage surface RAS), the grid's.
"""

from __future__ import annotations

import zlib
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from functools import cached_property

import mne
import numpy as np
from mne.utils import logger, verbose
from scipy import sparse

from .._cache import cached
from ..anatomy import (
    DEFAULT_CONDUCTIVITY,
    _sensor_info_and_name,
    make_cortex_src,
    make_template_forward,
    montage_info,
    src_fingerprint,
)
from ..grid import SourceGrid, _head_to_mri, get_grid
from ..inference import context_windows, network_inputs
from ..network import UNetConfig
from ..utils._checks import check_forward, check_inverse_operator, has_free_orientation
from ..utils._defaults import DEFAULT_LAMBDA2


@dataclass(frozen=True)
class HeadSetup:
    """One forward model of the domain-randomised set.

    Parameters
    ----------
    montage : str | None
        Built-in MNE EEG montage name; None for MEG alone.
    head : "bem" | "sphere"
        Template BEM (three layers, or a single shell) or a fitted 4-layer
        sphere (EEG setups only).
    conductivity : tuple of float
        Brain, skull, scalp conductivity (S/m), or ``(brain,)`` for MEG's
        single-shell (inner skull) model; BEM only.
    source_space : "volume" | "surface"
        The grid itself with free orientations, or the fsaverage5 cortex with
        cortical-patch sources along the normals.
    loose : float
        Surface only: 0 for a fixed-orientation inverse, or the ``loose``
        value of a loose-orientation one (with ``depth=0.8``, MNE's defaults
        for surface source spaces: ``loose=0.2``).
    jitter_mm : float
        Standard deviation (mm, per coordinate) of a seeded displacement of
        every electrode, as real caps sit a few mm off their nominal places.
        MNE projects the displaced electrodes back onto the scalp.
    jitter_seed : int
        Seed of that displacement, and of the head's pose in a MEG helmet
        and of an ``opm<N>`` layout: setups that differ only in it are
        different caps, heads or layouts.
    meg : str | None
        A MEG array (:func:`~mne_piunet.sensors.check_meg_array`), alone or
        beside the EEG montage.
    pose_mm : float
        Standard deviation of the head's displacement from its seated
        position in the MEG helmet: mm of translation and degrees of
        rotation, per axis.
    n_projectors : int
        Environmental SSP projectors on the MEG channels (0 to 8), as MEG
        data from an empty-room recording carry.
    """

    montage: str | None
    head: str = "bem"
    conductivity: tuple[float, ...] = DEFAULT_CONDUCTIVITY
    source_space: str = "volume"
    loose: float = 0.0
    jitter_mm: float = 0.0
    jitter_seed: int = 0
    meg: str | None = None
    pose_mm: float = 0.0
    n_projectors: int = 0

    def __post_init__(self):
        if self.source_space not in ("volume", "surface"):
            raise ValueError(f'source_space must be "volume" or "surface", got {self.source_space!r}')
        if not 0.0 <= self.loose <= 1.0 or (self.loose and self.source_space != "surface"):
            raise ValueError(
                f"loose must be in [0, 1] and is for surface source spaces only, got {self.loose!r} "
                f"on a {self.source_space} source space (volume setups are always free)"
            )
        if self.jitter_mm < 0 or self.pose_mm < 0:
            raise ValueError(f"jitter_mm and pose_mm must be >= 0, got {self.jitter_mm!r}, {self.pose_mm!r}")
        if self.montage is None and self.meg is None:
            raise ValueError("A setup needs sensors: an EEG montage, a MEG array (meg=...), or both")
        if self.meg is None and (self.pose_mm or self.n_projectors):
            raise ValueError("pose_mm and n_projectors describe a MEG array; set meg=...")
        if not 0 <= self.n_projectors <= 8:
            raise ValueError(f"n_projectors must be 0 to 8, got {self.n_projectors!r}")

    @property
    def name(self) -> str:
        """``sensors/head/source_space`` (plus ``/loose``, ``/jitter`` and MEG parts when set), as in logs."""
        if self.head == "sphere":
            head = "sphere"
        elif len(self.conductivity) == 1:
            head = "bem1shell"
        else:
            head = f"bem{self.conductivity[1]:g}"
        sensors = "+".join(s for s in (self.meg, self.montage) if s)
        name = f"{sensors}/{head}/{self.source_space}"
        if self.loose:
            name += f"/loose{self.loose:g}"
        if self.jitter_mm:
            name += f"/jitter{self.jitter_mm:g}mm-{self.jitter_seed}"
        if self.pose_mm or (self.meg and self.meg.startswith("opm")):
            name += f"/pose{self.pose_mm:g}-{self.jitter_seed}"
        if self.n_projectors:
            name += f"/ssp{self.n_projectors}"
        return name

    def cache_key(self) -> dict:
        """The fields that tell setups apart in cache keys (MEG ones only when set)."""
        key = asdict(self)
        for name in ("meg", "pose_mm", "n_projectors"):
            if not key[name]:
                del key[name]
        return key


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


@dataclass
class PreparedSetup:
    """A forward model with its leadfield, eLORETA kernel and grid operator.

    Made from a :class:`HeadSetup` by :func:`prepare_setup`, or from a user's
    own forward and inverse by :func:`prepare_user_setup`. Moments and
    positions are in the template MRI frame (the grid's).

    Parameters
    ----------
    spec : HeadSetup | str
        What it was prepared from: a template setup, or a user setup's name.
    info : mne.Info
        Measurement info of the setup's channels, in the order of the kernel's columns.
    inverse_operator : mne.minimum_norm.InverseOperator
        The inverse the kernel was computed from.
    lambda2 : float
        eLORETA's regularisation.
    pos : array, shape (n_src, 3)
        Source positions (m).
    normals : array, shape (n_src, 3) | None
        Cortical normals of patch sources (surface source spaces and fixed
        inverses), None for the blobs of a volume source space.
    leadfield : array, shape (n_chan, 3 * n_src) or (n_chan, n_src)
        Takes moment vectors (free or loose orientation) or amplitudes along
        the normals (fixed orientation).
    kernel : array, shape (3 * n_src, n_chan) or (n_src, n_chan)
        eLORETA's imaging kernel, laid out as the transposed leadfield.
    to_grid : scipy.sparse.csr_matrix, shape (n_grid, n_src)
        Resamples source values onto the grid
        (:meth:`~mne_piunet.grid.SourceGrid.resampler`).
    hemi_of : array of int, shape (n_src,) | None
        The source space (hemisphere) each patch source is in, None for blobs.
    head_to_mri : array, shape (3, 3)
        Rotation of moment vectors from the forward's head frame into the
        template MRI frame.
    src : mne.SourceSpaces | None
        The source space the leadfield was computed on.
    noise_cov : array, shape (n_chan, n_chan) | None
        Sensor covariance of coloured noise (``coloured_noise`` of :class:`SourcePrior`).
    channel_std : array, shape (n_chan,) | None
        Each channel's noise level in the inverse's noise model (the square
        root of its covariance's diagonal): white noise has these stds, and
        SNRs are measured on data divided by them, so channels in T, T/m and
        V weigh alike. None: all equal (EEG).
    """

    spec: HeadSetup | str  # a HeadSetup, or a user setup's name
    info: mne.Info
    inverse_operator: mne.minimum_norm.InverseOperator
    lambda2: float
    pos: np.ndarray  # (n_src, 3) m, MRI frame
    normals: np.ndarray | None  # (n_src, 3) cortical normals (patch sources), None for blobs
    leadfield: np.ndarray  # (n_chan, n_src * 3) free or loose, (n_chan, n_src) fixed
    kernel: np.ndarray  # transpose-shaped to leadfield
    to_grid: sparse.csr_matrix  # (n_grid, n_src)
    hemi_of: np.ndarray | None = None  # which hemisphere (source space) each patch source is in
    head_to_mri: np.ndarray = field(default_factory=lambda: np.eye(3))  # rotation of moments
    src: mne.SourceSpaces | None = None  # the source space the leadfield was computed on
    noise_cov: np.ndarray | None = None  # (n_chan, n_chan) coloured sensor noise, see SourcePrior
    channel_std: np.ndarray | None = None  # (n_chan,) noise level per channel, see add_noise

    @cached_property
    def eeg(self) -> np.ndarray:
        """Boolean mask of the EEG channels (average-referenced when SNRs are measured)."""
        return np.array([mne.channel_type(self.info, k) == "eeg" for k in range(len(self.info["ch_names"]))])

    @property
    def name(self) -> str:
        """The setup's name: a user setup's own, or :attr:`HeadSetup.name`."""
        return self.spec if isinstance(self.spec, str) else self.spec.name

    @cached_property
    def on_grid(self) -> bool:
        """True when the sources are the grid's own (the operator is the identity)."""
        return self.to_grid.shape[0] == self.to_grid.shape[1] == self.to_grid.nnz and np.allclose(
            self.to_grid.diagonal(), 1.0
        )

    @property
    def free(self) -> bool:
        """True when leadfield, estimates and sources are moment vectors (free or loose)."""
        return self.leadfield.shape[1] == 3 * self.n_sources

    @property
    def n_sources(self) -> int:
        """Number of sources of the forward model (``len(pos)``)."""
        return len(self.pos)

    def grid_values(self, values: np.ndarray) -> np.ndarray:
        """Resample source values onto the grid.

        Parameters
        ----------
        values : array, shape (n, n_src, 3) or (n, n_src)
            MRI-frame moment vectors, or amplitudes along the normals (fixed
            orientation), which become moment vectors first.

        Returns
        -------
        grid_values : array, shape (n, n_grid, 3)
            Moment vectors on the grid (``values`` itself when the sources
            are the grid's own).
        """
        if values.ndim == 2:
            values = values[..., None] * self.normals[None]
        if self.on_grid:
            return values
        n, n_src, _ = values.shape
        flat = np.moveaxis(values, 1, 0).reshape(n_src, n * 3)
        return np.moveaxis((self.to_grid @ flat).reshape(-1, n, 3), 0, 1)


def inverse_kernel(
    inverse_operator: mne.minimum_norm.InverseOperator,
    info: mne.Info,
    lambda2: float,
    method: str = "eLORETA",
    method_params: dict | None = None,
) -> np.ndarray:
    """The imaging kernel of a linear method exactly as ``apply_inverse`` applies it.

    ``apply_inverse`` is linear in the data for MNE, dSPM, sLORETA and
    eLORETA (noise normalisation is a fixed per-source scaling), so applying
    it to the identity (one "time point" per channel) returns the kernel's
    columns.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        The inverse operator (free, loose or fixed orientation).
    info : mne.Info
        Measurement info of the inverse's channels, with a sampling rate (an
        evoked is made from it); its channels are the kernel's columns.
    lambda2 : float
        The regularisation.
    method : str
        ``"MNE"``, ``"dSPM"``, ``"sLORETA"`` or ``"eLORETA"``.
    method_params : dict | None
        As for :func:`mne.minimum_norm.apply_inverse` (eLORETA's options).

    Returns
    -------
    kernel : array, shape (n_src * 3, n_chan) or (n_src, n_chan)
        Head-frame vectors (free orientation) or signed amplitudes (fixed).
    """
    n_chan = len(info["ch_names"])
    evoked = mne.EvokedArray(np.eye(n_chan), info, tmin=0.0, nave=1)
    free = has_free_orientation(inverse_operator)
    logger.info(f"Computing the {method} kernel")
    stc = mne.minimum_norm.apply_inverse(
        evoked, inverse_operator, lambda2, method, pick_ori="vector" if free else None,
        method_params=method_params,
    )  # fmt: skip
    return stc.data.reshape(-1, n_chan)


def _rotate_blocks(mat: np.ndarray, rot: np.ndarray, axis: int) -> np.ndarray:
    """Apply a 3x3 rotation to the xyz blocks of ``mat`` along ``axis``."""
    mat = np.moveaxis(mat, axis, -1)
    shape = mat.shape
    out = (mat.reshape(shape[:-1] + (-1, 3)) @ rot.T).reshape(shape)
    return np.moveaxis(out, -1, axis)


def linear_kernel(prepared: PreparedSetup, method: str) -> np.ndarray:
    """The kernel of MNE, dSPM, sLORETA or eLORETA on a setup's inverse.

    Parameters
    ----------
    prepared : PreparedSetup
        The setup whose inverse operator, info and ``lambda2`` are used.
    method : str
        ``"MNE"``, ``"dSPM"``, ``"sLORETA"`` or ``"eLORETA"`` (the setup's
        own kernel, not recomputed).

    Returns
    -------
    kernel : array, shape (3 * n_src, n_chan) or (n_src, n_chan)
        Laid out like ``prepared.kernel``: MRI-frame moments for free or loose
        orientation, signed amplitudes along the normals for fixed orientation.
    """
    if method == "eLORETA":
        return prepared.kernel
    kernel = inverse_kernel(prepared.inverse_operator, prepared.info, prepared.lambda2, method)
    return _rotate_blocks(kernel, prepared.head_to_mri, axis=0) if prepared.free else kernel


def jittered_info(montage: str, jitter_mm: float, seed: int) -> mne.Info:
    """EEG info of a built-in montage with every electrode displaced at random.

    Parameters
    ----------
    montage : str
        Built-in MNE montage name.
    jitter_mm : float
        Standard deviation of the displacement per coordinate (mm).
    seed : int
        Seed of the displacement.

    Returns
    -------
    info : mne.Info
        As :func:`~mne_piunet.anatomy.montage_info`, with moved electrodes.
    """
    info = montage_info(montage)
    mont = mne.channels.make_standard_montage(montage)
    pos = mont.get_positions()
    rng = np.random.default_rng(seed)
    ch_pos = {name: xyz + rng.normal(0.0, jitter_mm * 1e-3, 3) for name, xyz in pos["ch_pos"].items()}
    jittered = mne.channels.make_dig_montage(
        ch_pos, nasion=pos["nasion"], lpa=pos["lpa"], rpa=pos["rpa"], coord_frame=pos["coord_frame"]
    )
    info.set_montage(jittered)
    return info


def background_noise_cov(
    leadfield: np.ndarray,
    free: bool,
    n_dipoles: int,
    seed: int,
    *,
    channel_std: np.ndarray | None = None,
    eeg: np.ndarray | None = None,
) -> np.ndarray:
    """Sensor covariance of spontaneous brain activity plus 10 % sensor noise.

    ``n_dipoles`` independent dipoles at random sources (random orientations
    where the leadfield is free) of unit variance: their covariance is
    ``L_s L_s^T``. Spatially correlated noise like this is what a baseline
    covariance of real EEG or MEG looks like; the 10 % white part stands for
    the amplifier, electrode and SQUID or OPM noise. With several channel
    types, both parts are formed on channels divided by ``channel_std``, so
    each type carries its share.

    Parameters
    ----------
    leadfield : array, shape (n_chan, n_src) or (n_chan, 3 * n_src)
        The setup's leadfield.
    free : bool
        Whether the leadfield has three columns (x, y, z) per source.
    n_dipoles : int
        Number of background dipoles.
    seed : int
        Seed of their draw.
    channel_std : array, shape (n_chan,) | None
        Each channel's noise level (None: all equal).
    eeg : array of bool, shape (n_chan,) | None
        Which channels are EEG, average-referenced (None: all).

    Returns
    -------
    cov : array, shape (n_chan, n_chan)
        Trace-normalised covariance in the channels' units, EEG channels
        average-referenced.
    """
    rng = np.random.default_rng(seed)
    n_chan = len(leadfield)
    eeg = np.ones(n_chan, bool) if eeg is None else np.asarray(eeg, bool)
    std = np.ones(n_chan) if channel_std is None else np.asarray(channel_std, float)
    centre = np.eye(n_chan)
    if eeg.any():
        centre[np.ix_(eeg, eeg)] -= 1.0 / eeg.sum()  # average reference of the EEG channels (in V)
    lf = (centre @ leadfield) / std[:, None]
    idx = rng.integers(0, lf.shape[1] // 3 if free else lf.shape[1], n_dipoles)
    if free:
        ori = rng.standard_normal((n_dipoles, 3))
        ori /= np.linalg.norm(ori, axis=1, keepdims=True)
        cols = np.einsum("cdk,dk->cd", lf.reshape(n_chan, -1, 3)[:, idx], ori)
    else:
        cols = lf[:, idx]
    cov = cols @ cols.T
    cov /= np.trace(cov)
    white = centre @ np.diag(std**2) @ centre.T / std[:, None] / std[None]  # referenced white noise
    cov = (0.9 * cov + 0.1 * white / np.trace(white)) * std[:, None] * std[None]
    return cov / np.trace(cov)


#: Background dipoles of a template setup's coloured noise: enough that no few
#: sources dominate the covariance, few enough that it is not white.
N_BACKGROUND_DIPOLES = 200


def _template_kernel(setup: HeadSetup, inv, info, lambda2: float, src, custom_cov: bool) -> np.ndarray:
    if custom_cov:
        return inverse_kernel(inv, info, lambda2)
    # eLORETA's weights take tens of seconds on a cortex: cache the kernel
    key = dict(setup=setup.cache_key(), lambda2=float(lambda2), src=src_fingerprint(src))
    if setup.meg is not None:  # the array's geometry and projectors, as built now
        key["sensors"] = _sensor_info_and_name(info)[1]
        key["projs"] = [(p["desc"], np.round(p["data"]["data"], 8).tolist()) for p in info["projs"]]
    return cached(
        "kernel", key, ".npy", lambda: inverse_kernel(inv, info, lambda2), lambda f, k: np.save(f, k), np.load
    )


def setup_info(setup: HeadSetup) -> mne.Info:
    """Measurement info of a setup's sensors: its EEG montage, MEG array, or both.

    Parameters
    ----------
    setup : HeadSetup
        The setup.

    Returns
    -------
    info : mne.Info
        MEG channels first (device frame, ``dev_head_t`` seating the template
        head), then EEG with an average-reference projector; the MEG array's
        environmental projectors where ``n_projectors`` is set.
    """
    from ..sensors import meg_array_info

    eeg = None
    if setup.montage is not None:
        eeg = (
            jittered_info(setup.montage, setup.jitter_mm, setup.jitter_seed)
            if setup.jitter_mm
            else montage_info(setup.montage)
        )
    if setup.meg is None:
        return eeg
    meg = meg_array_info(
        setup.meg, pose_mm=setup.pose_mm, seed=setup.jitter_seed, n_projectors=setup.n_projectors,
        sfreq=250.0,
    )  # fmt: skip
    raw = mne.io.RawArray(np.zeros((len(meg["ch_names"]), 1)), meg, verbose=False)
    if eeg is not None:
        eeg_raw = mne.io.RawArray(np.zeros((len(eeg["ch_names"]), 1)), eeg, verbose=False)
        eeg_raw.del_proj()
        raw.add_channels([eeg_raw], force_update_info=True)
        raw.set_eeg_reference("average", projection=True, verbose=False)
    return raw.info


def setup_forward(setup: HeadSetup, src: mne.SourceSpaces, info: mne.Info | None = None) -> mne.Forward:
    """The free-orientation forward of a setup on ``src`` (cached).

    Parameters
    ----------
    setup : HeadSetup
        The setup.
    src : mne.SourceSpaces
        The source space (the grid's, or the fsaverage5 cortex).
    info : mne.Info | None
        Its :func:`setup_info`, when already made.

    Returns
    -------
    fwd : mne.Forward
        From :func:`~mne_piunet.anatomy.make_template_forward`.
    """
    plain_eeg = setup.meg is None and not setup.jitter_mm  # cached under the montage's name
    if not plain_eeg and info is None:
        info = setup_info(setup)
    return make_template_forward(
        setup.montage if plain_eeg else info, src, head=setup.head, conductivity=setup.conductivity
    )


@verbose
def prepare_setup(
    setup: HeadSetup,
    grid: SourceGrid | None = None,
    lambda2: float = DEFAULT_LAMBDA2,
    noise_cov: mne.Covariance | None = None,
    verbose: bool | str | int | None = None,
) -> PreparedSetup:
    """Precompute the leadfield, eLORETA kernel and grid operator of a setup.

    Parameters
    ----------
    setup : HeadSetup
        The template forward model.
    grid : SourceGrid | None
        The network's grid (default: :func:`~mne_piunet.grid.get_grid`).
    lambda2 : float
        eLORETA's regularisation.
    noise_cov : mne.Covariance | None
        The inverse's noise covariance (default: MNE's ad hoc covariance,
        per channel type).
    %(verbose)s

    Returns
    -------
    prepared : PreparedSetup
        Its ``noise_cov`` is the covariance of simulated background activity
        (:func:`background_noise_cov`), for coloured-noise samples.
    """
    grid = get_grid() if grid is None else grid
    src = grid.src if setup.source_space == "volume" else make_cortex_src()
    info = setup_info(setup)
    fwd = setup_forward(setup, src, info)
    custom_cov = noise_cov is not None
    if not custom_cov:
        noise_cov = mne.make_ad_hoc_cov(info, verbose=False)
    if setup.source_space == "volume":
        orientation = dict(loose=1.0, fixed=False)
    elif setup.loose:
        orientation = dict(loose=setup.loose, depth=0.8, fixed=False)  # MNE's surface defaults
    else:
        orientation = dict(loose=0.0, fixed=True)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, noise_cov, **orientation)
    kernel = _template_kernel(setup, inv, info, lambda2, src, custom_cov)
    # the forward lives in head coordinates, the grid in the template's MRI ones
    head_mri = _head_to_mri(fwd["mri_head_t"])["trans"]
    prepared = _prepared_from(setup, fwd, inv, info, lambda2, kernel, grid, src, head_mri, head_mri[:3, :3])
    prepared.channel_std = _channel_std(noise_cov, info["ch_names"])
    seed = zlib.crc32(setup.name.encode())  # one fixed background per setup
    prepared.noise_cov = background_noise_cov(
        prepared.leadfield, prepared.free, N_BACKGROUND_DIPOLES, seed,
        channel_std=prepared.channel_std, eeg=prepared.eeg,
    )  # fmt: skip
    return prepared


def _channel_std(noise_cov: mne.Covariance, names: list[str]) -> np.ndarray:
    """Square root of a covariance's diagonal, in ``names`` order."""
    order = [noise_cov.ch_names.index(n) for n in names]
    diag = noise_cov.data if noise_cov["diag"] else np.diag(noise_cov.data)
    return np.sqrt(np.asarray(diag, float)[order])


def _user_channels(forward: mne.Forward, inverse_operator) -> list[str]:
    """The inverse's channels, checked against the forward: EEG or MEG present, none missing."""
    names = list(inverse_operator["eigen_fields"]["col_names"])
    if not len(mne.pick_types(forward["info"], meg=True, eeg=True, ref_meg=False)):
        raise ValueError(
            "The forward has no EEG or MEG channels; compute it with mne.make_forward_solution(..., "
            "meg=True, eeg=True) on an info holding your channels."
        )
    missing = [n for n in names if n not in forward["info"]["ch_names"]]
    if missing:
        raise ValueError(
            f"The forward and inverse disagree: {len(missing)} of the inverse's {len(names)} channels "
            f"are not in the forward (e.g. {missing[:3]}). Pass the forward the inverse was made from."
        )
    return names


def _check_same_sources(forward: mne.Forward, inverse_operator) -> None:
    fwd_src, inv_src = forward["src"], inverse_operator["src"]
    same = len(fwd_src) == len(inv_src) and all(
        np.array_equal(a["vertno"], b["vertno"]) for a, b in zip(fwd_src, inv_src)
    )
    if not same:
        raise ValueError(
            "The forward and inverse disagree: their source spaces differ "
            f"({[s['nuse'] for s in fwd_src]} vs {[s['nuse'] for s in inv_src]} active sources). "
            "Pass the forward the inverse was made from."
        )


def _user_noise_cov(inverse_operator, names: list[str]) -> np.ndarray:
    """The inverse's noise covariance as a dense matrix in ``names`` order."""
    cov = inverse_operator["noise_cov"]
    order = [cov["names"].index(n) for n in names]
    data = np.diag(cov["data"]) if cov["diag"] else np.asarray(cov["data"])
    return data[np.ix_(order, order)]


def _measurement_info(fwd: mne.Forward, inverse_operator) -> tuple[mne.Info, np.ndarray | None]:
    """An info of the inverse's channels, as data the inverse applies to would have.

    An inverse's own info has no sampling rate, so an evoked cannot be made
    from it: the channels, their positions and the inverse's (active)
    projectors are copied into a new one. MNE applies an EEG inverse only to
    data with an average-reference projector; where the inverse was made
    without one, the user's data will carry it, applied, so the info gains it
    (active) and the average-reference matrix is returned, to be folded into
    the kernel. Otherwise the second value is None.
    """
    src_info = fwd["info"]
    types = [mne.channel_type(src_info, k) for k in range(len(src_info["ch_names"]))]
    info = mne.create_info(src_info["ch_names"], 1000.0, types)
    with info._unlock():  # coils, frames and units as the forward has them (MEG needs all)
        info["chs"] = deepcopy(src_info["chs"])
        info["dev_head_t"] = deepcopy(src_info["dev_head_t"])
        info["comps"] = deepcopy(inverse_operator["info"].get("comps", []))
        info._update_redundant()
    raw = mne.io.RawArray(np.zeros((len(types), 1)), info)
    if inverse_operator["projs"]:
        raw.add_proj(deepcopy(inverse_operator["projs"])).apply_proj()
    eeg = mne.pick_types(raw.info, meg=False, eeg=True)
    has_ref = any(p["desc"].lower().startswith("average eeg reference") for p in raw.info["projs"])
    if not len(eeg) or has_ref:
        return raw.info, None
    raw.set_eeg_reference("average", projection=True).apply_proj()
    reference = np.eye(len(types))
    reference[np.ix_(eeg, eeg)] -= 1.0 / len(eeg)
    return raw.info, reference


# Over 60 lines only for its numpydoc docstring; the body is 33.
@verbose
def prepare_user_setup(
    forward: mne.Forward,
    inverse_operator: mne.minimum_norm.InverseOperator,
    grid: SourceGrid | None = None,
    lambda2: float = DEFAULT_LAMBDA2,
    *,
    mni_transform: mne.transforms.Transform | np.ndarray | None = None,
    subjects_dir: str | None = None,
    name: str = "user",
    verbose: bool | str | int | None = None,
) -> PreparedSetup:
    """A training setup made from your own forward model and inverse operator.

    Sources are drawn on the forward's source space (cortical patches along
    the normals on a surface source space, blobs in a volume one); the eLORETA
    kernel is the one ``apply_inverse`` computes from the inverse; coloured
    noise (``coloured_noise`` of :class:`SourcePrior`) follows the inverse's noise
    covariance. Positions and moments are mapped to the template as
    :class:`~mne_piunet.PIUNetInverse` maps them.

    Parameters
    ----------
    forward : mne.Forward
        The forward the inverse was made from (EEG; free or fixed orientation).
    inverse_operator : mne.minimum_norm.InverseOperator
        The inverse operator (fixed, loose or free orientation).
    grid : SourceGrid | None
        The network's grid (default: :func:`~mne_piunet.grid.get_grid`).
    lambda2 : float
        eLORETA's regularisation.
    mni_transform : mne.transforms.Transform | array of shape (4, 4) | None
        The subject's MRI -> MNI transform (m), when not fsaverage and not
        readable from ``subjects_dir``.
    subjects_dir : path-like | None
        Where the subject's ``talairach.xfm`` is found.
    name : str
        The setup's name in logs.
    %(verbose)s

    Returns
    -------
    prepared : PreparedSetup
        Its ``setup`` is ``name``; its ``noise_cov`` the inverse's.
    """
    from ..grid import to_template_space

    check_forward(forward)
    check_inverse_operator(inverse_operator)
    grid = get_grid() if grid is None else grid
    names = _user_channels(forward, inverse_operator)
    _check_same_sources(forward, inverse_operator)
    fixed = not has_free_orientation(inverse_operator)
    if not fixed and not has_free_orientation(forward):
        raise ValueError(
            "The inverse has free or loose orientations but the forward is fixed; pass the free-orientation "
            "forward the inverse was made from."
        )
    fwd = mne.pick_channels_forward(forward, names, ordered=True)
    info, reference = _measurement_info(fwd, inverse_operator)
    kernel = inverse_kernel(inverse_operator, info, lambda2)
    if reference is not None:  # the inverse has no reference projector: the data are referenced first
        kernel = kernel @ reference
    affine, rot = to_template_space(
        fwd["src"],
        mri_head_t=inverse_operator["mri_head_t"],
        mni_transform=mni_transform,
        subjects_dir=subjects_dir,
    )
    prepared = _prepared_from(
        name, fwd, inverse_operator, info, lambda2, kernel, grid, fwd["src"], affine, rot
    )
    prepared.noise_cov = _user_noise_cov(inverse_operator, names)
    prepared.channel_std = np.sqrt(np.clip(np.diag(prepared.noise_cov), 0.0, None))
    zero = [n for n, v in zip(names, prepared.channel_std) if not v > 0]
    if zero:
        raise ValueError(
            f"The inverse's noise covariance is zero for {len(zero)} channel(s) ({', '.join(zero[:5])}): "
            "no noise level to simulate. Estimate it from data (mne.compute_covariance) or mark them bad."
        )
    return prepared


def _prepared_from(setup, fwd, inv, info, lambda2, kernel, grid, src, affine, rot) -> PreparedSetup:
    """A PreparedSetup from a forward, its inverse and kernel, in the template MRI frame.

    ``affine`` maps the forward's (head) frame to the template MRI frame, and
    ``rot`` rotates moments the same way.
    """
    pos = mne.transforms.apply_trans(affine, fwd["source_rr"])
    surface = all(s["type"] == "surf" for s in fwd["src"])
    fixed = not has_free_orientation(inv)
    normals, hemi_of = None, None
    if surface or fixed:  # patch sources along the normals (a fixed inverse has only those)
        surf_fwd = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=fixed, use_cps=True)
        normals = (surf_fwd["source_nn"] if fixed else surf_fwd["source_nn"][2::3]) @ rot.T
        hemi_of = np.concatenate([np.full(s["nuse"], i) for i, s in enumerate(fwd["src"])])
    if fixed:
        leadfield = surf_fwd["sol"]["data"]
    else:
        xyz = mne.convert_forward_solution(fwd, surf_ori=False, force_fixed=False)
        leadfield = _rotate_blocks(xyz["sol"]["data"], rot, axis=1)  # takes template-frame moments
        kernel = _rotate_blocks(kernel, rot, axis=0)  # returns template-frame moments
    return PreparedSetup(
        spec=setup, info=info, inverse_operator=inv, lambda2=lambda2, pos=pos,
        normals=normals, leadfield=np.asarray(leadfield, np.float64),
        kernel=np.asarray(kernel, np.float64), to_grid=grid.resampler(pos), hemi_of=hemi_of,
        head_to_mri=rot, src=src,
    )  # fmt: skip


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

    def network_maps(self, network: UNetConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The eLORETA maps and windows that :func:`~mne_piunet.inference.predict_maps` takes.

        Each sample is its own time course: its window's maps, never another
        sample's, are its context, picked as from a recording at the
        window's sampling rate (:func:`~mne_piunet.inference.context_windows`).

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
        centre = context_windows(n_points, (n_points - 1) / self.window_s, network, [n_points // 2])
        x0 = self.eloreta_window_grid.reshape(n * n_points, *self.eloreta_window_grid.shape[2:])
        return x0, centre + n_points * np.arange(n)[:, None]


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


# Over 60 lines only for its numpydoc docstring; the body is 27.
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
        clean, snr, rng, prepared.noise_cov if coloured else None,
        channel_std=prepared.channel_std, eeg=prepared.eeg,
    )  # fmt: skip
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
        setup=prepared.name, sensor=sensor, true=sources, eloreta=eloreta,
        true_grid=prepared.grid_values(sources), eloreta_grid=eloreta_grid,
        snr_db=snr, n_sources=counts, sigma_mm=sigmas,
        sensor_window=sensor_window, eloreta_window_grid=window_grid,
        window_s=0.0 if window is None else float(window[0]),
    )  # fmt: skip


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
                simulate(prepared, min(self.chunk, n - start), self.rng, self.prior, window=self.window)
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
    inputs, scale = network_inputs(grid, x0, windows, network)
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
