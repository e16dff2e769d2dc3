"""Head setups: which sensors, head model and source space a simulation uses, prepared with MNE.

A :class:`HeadSetup` names one forward model (sensors x head model x source
space); :func:`prepare_setup` precomputes its leadfield and its eLORETA kernel
with MNE's own inverse machinery, so the engine's input equals
``apply_inverse(..., method="eLORETA", pick_ori="vector")`` on the same data;
:func:`prepare_user_setup` does the same from a user's own forward and inverse.
:data:`SETUP_LISTS` holds the named setup lists of the bundled training configs.

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
    make_cortex_src,
    make_template_forward,
    montage_info,
    sensor_info_and_name,
    src_fingerprint,
)
from ..grid import SourceGrid, get_grid, head_to_mri
from ..inference import GridResolution
from ..physics import grid_dipole_bases, grid_fields, grid_to_source, kernel_prediction
from ..utils._checks import check_forward, check_inverse_operator, check_option, has_free_orientation
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
            check_option("source_space", self.source_space, ("volume", "surface"))
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

    @classmethod
    def from_dict(cls, spec: dict) -> HeadSetup:
        """A setup from its JSON form (a config's or :data:`SETUP_LISTS`' keywords; lists become tuples).

        Parameters
        ----------
        spec : dict
            :class:`HeadSetup` keywords.

        Returns
        -------
        setup : HeadSetup
        """
        spec = dict(spec)
        if "conductivity" in spec:
            spec["conductivity"] = tuple(spec["conductivity"])
        return cls(**spec)

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
        """The fields that tell setups apart in cache keys (MEG ones only when set).

        Returns
        -------
        key : dict
            The setup's fields, without the MEG ones that are unset.
        """
        key = asdict(self)
        for name in ("meg", "pose_mm", "n_projectors"):
            if not key[name]:
                del key[name]
        return key


# ------------------------------------------------------------ named setup lists
# The setup lists of the bundled training configs (``weights/*_config.json``),
# written once: each is HeadSetup keyword dicts in the configs' JSON form.
# fmt: off
# Stages 1-3: nine EEG setups, four montages on the 3-layer BEM (skull 0.004-0.01 S/m) or a sphere.
_EEG_BASIC_TRAIN = (
    dict(montage="easycap-M10", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="volume"),
    dict(montage="easycap-M10", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="surface"),
    dict(montage="biosemi32", head="bem", conductivity=[0.3, 0.004, 0.3], source_space="volume"),
    dict(montage="biosemi32", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="surface"),
    dict(montage="GSN-HydroCel-128", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="volume"),
    dict(montage="GSN-HydroCel-128", head="bem", conductivity=[0.3, 0.004, 0.3], source_space="surface"),
    dict(montage="biosemi64", head="sphere", source_space="volume"),
    dict(montage="biosemi64", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="surface"),
    dict(montage="easycap-M10", head="sphere", source_space="surface"),
)
# Stages 4-6: fourteen EEG setups, seven montages of 16-128 channels, with loose and jittered-cap ones.
_EEG_TRAIN = (
    dict(montage="easycap-M10", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="volume"),
    dict(montage="easycap-M10", head="bem", conductivity=[0.3, 0.015, 0.3], source_space="surface", loose=0.2, jitter_mm=4.0, jitter_seed=1),
    dict(montage="biosemi32", head="bem", conductivity=[0.3, 0.004, 0.3], source_space="volume", jitter_mm=4.0, jitter_seed=2),
    dict(montage="biosemi32", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="surface"),
    dict(montage="biosemi32", head="bem", conductivity=[0.3, 0.015, 0.3], source_space="surface", loose=0.2),
    dict(montage="biosemi32", head="sphere", source_space="volume", jitter_mm=4.0, jitter_seed=3),
    dict(montage="GSN-HydroCel-128", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="volume"),
    dict(montage="GSN-HydroCel-128", head="bem", conductivity=[0.3, 0.004, 0.3], source_space="surface", loose=0.2),
    dict(montage="biosemi64", head="sphere", source_space="volume"),
    dict(montage="biosemi64", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="surface", jitter_mm=4.0, jitter_seed=4),
    dict(montage="easycap-M10", head="sphere", source_space="surface"),
    dict(montage="mgh70", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="surface", loose=0.2, jitter_mm=4.0, jitter_seed=5),
    dict(montage="brainproducts-RNP-BA-128", head="bem", conductivity=[0.3, 0.006, 0.3], source_space="volume"),
    dict(montage="biosemi16", head="bem", conductivity=[0.3, 0.01, 0.3], source_space="surface"),
)
# Stage 7's additions: MEG, MEG+EEG and OPM setups at several head poses, some with SSP projectors.
_MEG_TRAIN = (
    dict(montage=None, meg="neuromag306", conductivity=[0.3, 0.006, 0.3], source_space="volume", pose_mm=3.0, jitter_seed=1, n_projectors=3),
    dict(montage=None, meg="neuromag306", conductivity=[0.3], source_space="surface", pose_mm=3.0, jitter_seed=2),
    dict(montage=None, meg="neuromag306", conductivity=[0.3], source_space="surface", loose=0.2, pose_mm=3.0, jitter_seed=3, n_projectors=5),
    dict(montage=None, meg="ctf275", conductivity=[0.3], source_space="surface"),
    dict(montage=None, meg="ctf275", conductivity=[0.3, 0.006, 0.3], source_space="volume", pose_mm=3.0, jitter_seed=4),
    dict(montage=None, meg="opm64", conductivity=[0.3], source_space="surface", jitter_seed=5),
    dict(montage=None, meg="opm96-dual", conductivity=[0.3, 0.006, 0.3], source_space="volume", jitter_seed=6),
    dict(montage=None, meg="opm48", conductivity=[0.3], source_space="surface", loose=0.2, jitter_seed=7),
    dict(montage="easycap-M10", meg="neuromag306", conductivity=[0.3, 0.006, 0.3], source_space="surface", loose=0.2),
    dict(montage="biosemi64", meg="ctf275", conductivity=[0.3, 0.01, 0.3], source_space="volume", pose_mm=3.0, jitter_seed=8),
)
# Held out: montages and a skull conductivity (0.0113 S/m) that no training setup uses.
_EEG_BASIC_VAL = (
    dict(montage="GSN-HydroCel-64_1.0", head="bem", conductivity=[0.332, 0.0113, 0.332], source_space="surface"),
    dict(montage="mgh60", head="bem", conductivity=[0.332, 0.0113, 0.332], source_space="volume"),
)
# Stages 4-6 also validate on a loose-orientation inverse.
_EEG_VAL_LOOSE = (
    dict(montage="mgh60", head="bem", conductivity=[0.332, 0.0113, 0.332], source_space="surface", loose=0.2),
)
# Stage 7 also validates on MEG (another head pose and seed) and an OPM layout no training setup uses.
_MEG_VAL = (
    dict(montage=None, meg="neuromag306", conductivity=[0.3, 0.006, 0.3], source_space="surface", loose=0.2, pose_mm=3.0, jitter_seed=11, n_projectors=3),
    dict(montage=None, meg="opm72-dual", conductivity=[0.3], source_space="surface", jitter_seed=13),
)
# fmt: on

#: The named setup lists a training config's ``train_setups`` and ``val_setups``
#: may give instead of a list (``"train_setups": "eeg-meg-train"``): HeadSetup
#: keyword dicts in the configs' JSON form. ``eeg-basic`` are the setups of
#: stages 1-3 of the bundled weights, ``eeg`` of stages 4-6, ``eeg-meg`` of
#: stages 7-8 (the shipped weights' own). The ``-val`` lists are validation
#: setups apart from every training one (held-out montages, skull conductivity,
#: head pose and OPM layout).
SETUP_LISTS: dict[str, tuple[dict, ...]] = {
    "eeg-basic-train": _EEG_BASIC_TRAIN,
    "eeg-basic-val": _EEG_BASIC_VAL,
    "eeg-train": _EEG_TRAIN,
    "eeg-val": _EEG_BASIC_VAL + _EEG_VAL_LOOSE,
    "eeg-meg-train": _EEG_TRAIN + _MEG_TRAIN,
    "eeg-meg-val": _EEG_BASIC_VAL + _EEG_VAL_LOOSE + _MEG_VAL,
}


def setup_list(name: str) -> list[dict]:
    """A named setup list of :data:`SETUP_LISTS`, as a training config holds it.

    Parameters
    ----------
    name : str
        The list's name, such as ``"eeg-meg-train"``.

    Returns
    -------
    setups : list of dict
        A fresh copy of its HeadSetup keyword dicts (JSON form: conductivities
        are lists), so changing it leaves the named list as it is.
    """
    if name not in SETUP_LISTS:
        raise ValueError(
            f"Unknown setup list {name!r}: choose one of {', '.join(SETUP_LISTS)}, "
            "or give the setups as a list of HeadSetup keyword dicts"
        )
    return deepcopy(list(SETUP_LISTS[name]))


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

    @cached_property
    def fit_bases(self) -> np.ndarray:
        """For every grid dipole, an orthonormal basis of its whitened fields (:func:`~mne_piunet.physics.grid_dipole_bases`)."""
        return grid_dipole_bases(
            grid_fields(self.inverse_operator, grid_to_source(self.to_grid), self.head_to_mri)
        )

    @cached_property
    def fit_predictor(self) -> np.ndarray:
        """(n_white, n_chan): the whitened data the eLORETA estimate of sensor data predicts.

        What the data-fit step scans of a recording
        (:func:`~mne_piunet.physics.kernel_prediction` of the kernel in the
        inverse's own frame).
        """
        kernel = _rotate_blocks(self.kernel, self.head_to_mri.T, axis=0) if self.free else self.kernel
        return kernel_prediction(self.inverse_operator, kernel)

    @cached_property
    def resolution(self) -> GridResolution:
        """eLORETA's resolution on the grid through the inverse, for a residual pass.

        The same operator ``apply`` builds from a user's inverse
        (:class:`~mne_piunet.inference.GridResolution`): the inverse's
        whitened gain from the grid, and the kernel of whitened data, which
        is the kernel times MNE's colourer (its whitener's inverse on the
        noise's range, where the whitened gain lies).
        """
        prepared = mne.minimum_norm.prepare_inverse_operator(
            self.inverse_operator, 1, self.lambda2, "MNE", verbose=False
        )
        kernel = self.kernel @ prepared["colorer"]  # (n_components, n_white), the template MRI frame
        if self.free:
            kernel = kernel.reshape(self.n_sources, 3, -1)
        kernel_grid = self.grid_values(np.moveaxis(kernel, -1, 0))  # (n_white, n_grid, 3)
        fields = grid_fields(self.inverse_operator, grid_to_source(self.to_grid), self.head_to_mri, nave=1)
        return GridResolution(kernel_grid, fields)

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
        evoked,
        inverse_operator,
        lambda2,
        method,
        pick_ori="vector" if free else None,
        method_params=method_params,
    )
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
        key["sensors"] = sensor_info_and_name(info)[1]
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
        setup.meg,
        pose_mm=setup.pose_mm,
        seed=setup.jitter_seed,
        n_projectors=setup.n_projectors,
        sfreq=250.0,
    )
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
    head_mri = head_to_mri(fwd["mri_head_t"])["trans"]
    prepared = _prepared_from(setup, fwd, inv, info, lambda2, kernel, grid, src, head_mri, head_mri[:3, :3])
    prepared.channel_std = _channel_std(noise_cov, info["ch_names"])
    seed = zlib.crc32(setup.name.encode())  # one fixed background per setup
    prepared.noise_cov = background_noise_cov(
        prepared.leadfield,
        prepared.free,
        N_BACKGROUND_DIPOLES,
        seed,
        channel_std=prepared.channel_std,
        eeg=prepared.eeg,
    )
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
        spec=setup,
        info=info,
        inverse_operator=inv,
        lambda2=lambda2,
        pos=pos,
        normals=normals,
        leadfield=np.asarray(leadfield, np.float64),
        kernel=np.asarray(kernel, np.float64),
        to_grid=grid.resampler(pos),
        hemi_of=hemi_of,
        head_to_mri=rot,
        src=src,
    )
