"""Simulated EEG and eLORETA estimates: training and evaluation data.

A :class:`HeadSetup` names one forward model (montage x head model x source
space); :func:`prepare_setup` precomputes its leadfield and its eLORETA kernel
with MNE's own inverse machinery, so the engine's input equals
``apply_inverse(..., method="eLORETA", pick_ori="vector")`` on the same data.
:class:`SimulationEngine` draws vectorised, seeded batches over several setups
(domain randomisation): sources -> sensors (+ noise) -> eLORETA -> grid.

All vectors are in the template MRI frame (fsaverage surface RAS), the grid's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import mne
import numpy as np
from mne.utils import logger, verbose
from scipy import sparse

from ._cache import cached
from .anatomy import (
    DEFAULT_CONDUCTIVITY,
    make_cortex_src,
    make_template_forward,
    montage_info,
    src_fingerprint,
)
from .grid import SourceGrid, get_grid
from .inference import normalise_inputs


@dataclass(frozen=True)
class HeadSetup:
    """One forward model of the domain-randomised set.

    Parameters
    ----------
    montage : str
        Built-in MNE montage name.
    head : "bem" | "sphere"
        Template 3-layer BEM or a fitted 4-layer sphere.
    conductivity : tuple of float
        Brain, skull, scalp conductivity (S/m), BEM only.
    source_space : "volume" | "surface"
        The grid itself with free orientations, or the fsaverage5 cortex with
        fixed (normal) orientations and cortical-patch sources.
    """

    montage: str
    head: str = "bem"
    conductivity: tuple[float, float, float] = DEFAULT_CONDUCTIVITY
    source_space: str = "volume"

    @property
    def name(self) -> str:
        head = "sphere" if self.head == "sphere" else f"bem{self.conductivity[1]:g}"
        return f"{self.montage}/{head}/{self.source_space}"


@dataclass(frozen=True)
class SourcePrior:
    """Distribution of simulated sources and noise.

    ``n_sources`` is drawn from 1..``max_sources`` with probability proportional
    to ``1 / k**n_sources_decay`` (favouring few sources), the Gaussian extent
    sigma log-uniformly from ``sigma_mm``, and the SNR (dB, as in the paper:
    noise std = signal std / sqrt(10**(SNR/10))) uniformly from ``snr_db``.
    """

    max_sources: int = 10
    n_sources_decay: float = 1.0
    sigma_mm: tuple[float, float] = (5.0, 40.0)
    snr_db: tuple[float, float] = (0.0, 30.0)


@dataclass
class PreparedSetup:
    """A :class:`HeadSetup` with its leadfield, eLORETA kernel and grid operator."""

    setup: HeadSetup
    info: mne.Info
    inverse_operator: mne.minimum_norm.InverseOperator
    lambda2: float
    pos: np.ndarray  # (n_src, 3) m, MRI frame
    normals: np.ndarray | None  # (n_src, 3) for fixed orientation, else None
    leadfield: np.ndarray  # (n_chan, n_src * 3) free or (n_chan, n_src) fixed
    kernel: np.ndarray  # transpose-shaped to leadfield
    to_grid: sparse.csr_matrix  # (n_grid, n_src)
    hemi_of: np.ndarray | None = None  # hemisphere of each cortical source
    head_to_mri: np.ndarray = field(default_factory=lambda: np.eye(3))  # rotation of moments
    src: mne.SourceSpaces | None = None  # the source space the leadfield was computed on

    @cached_property
    def on_grid(self) -> bool:
        """True when the sources are the grid's own (the operator is the identity)."""
        return self.to_grid.shape[0] == self.to_grid.shape[1] == self.to_grid.nnz and np.allclose(
            self.to_grid.diagonal(), 1.0
        )

    @property
    def free(self) -> bool:
        return self.normals is None

    @property
    def n_sources(self) -> int:
        return len(self.pos)

    def grid_values(self, values: np.ndarray) -> np.ndarray:
        """(n, n_src, 3) MRI-frame moments, or fixed (n, n_src) amplitudes -> (n, n_grid, 3)."""
        if not self.free:
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

    Returns
    -------
    kernel : array, shape (n_src * 3, n_chan) or (n_src, n_chan)
        Head-frame vectors (free orientation) or signed amplitudes (fixed).
    """
    n_chan = len(info["ch_names"])
    evoked = mne.EvokedArray(np.eye(n_chan), info, tmin=0.0, nave=1, verbose=False)
    free = inverse_operator["source_ori"] == mne.io.constants.FIFF.FIFFV_MNE_FREE_ORI
    logger.info(f"Computing the {method} kernel")
    stc = mne.minimum_norm.apply_inverse(
        evoked, inverse_operator, lambda2, method, pick_ori="vector" if free else None,
        method_params=method_params, verbose=False,
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

    Laid out like ``prepared.kernel``: MRI-frame moments for free orientation,
    signed amplitudes along the normals for fixed orientation.
    """
    if method == "eLORETA":
        return prepared.kernel
    kernel = inverse_kernel(prepared.inverse_operator, prepared.info, prepared.lambda2, method)
    return _rotate_blocks(kernel, prepared.head_to_mri, axis=0) if prepared.free else kernel


@verbose
def prepare_setup(
    setup: HeadSetup,
    grid: SourceGrid | None = None,
    lambda2: float = 1.0 / 9.0,
    noise_cov: mne.Covariance | None = None,
    verbose: bool | str | int | None = None,
) -> PreparedSetup:
    """Precompute the leadfield, eLORETA kernel and grid operator of a setup."""
    grid = get_grid() if grid is None else grid
    if setup.source_space not in ("volume", "surface"):
        raise ValueError(f'source_space must be "volume" or "surface", got {setup.source_space!r}')
    src = grid.src if setup.source_space == "volume" else make_cortex_src()
    fwd = make_template_forward(setup.montage, src, head=setup.head, conductivity=setup.conductivity)
    info = montage_info(setup.montage)
    custom_cov = noise_cov is not None
    if not custom_cov:
        noise_cov = mne.make_ad_hoc_cov(info, verbose=False)
    fixed = setup.source_space == "surface"
    inv = mne.minimum_norm.make_inverse_operator(
        info, fwd, noise_cov, loose=0.0 if fixed else 1.0, fixed=fixed, verbose=False
    )
    if custom_cov:
        kernel = inverse_kernel(inv, info, lambda2)
    else:  # eLORETA's weights take tens of seconds on a cortex: cache the kernel
        kernel = cached(
            "kernel", dict(setup=asdict(setup), lambda2=float(lambda2), src=src_fingerprint(src)), ".npy",
            lambda: inverse_kernel(inv, info, lambda2), lambda f, k: np.save(f, k), np.load,
        )  # fmt: skip
    # Forward and inverse live in head coordinates; the grid in MRI coordinates.
    head_mri = (
        fwd["mri_head_t"]["trans"]
        if fwd["mri_head_t"]["from"] == 4
        else np.linalg.inv(fwd["mri_head_t"]["trans"])
    )
    rot = head_mri[:3, :3]  # head -> MRI rotation
    pos = mne.transforms.apply_trans(head_mri, fwd["source_rr"])
    if fixed:
        fwd = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True, use_cps=True, verbose=False)
        leadfield = fwd["sol"]["data"]
        normals = fwd["source_nn"] @ rot.T
        hemi_of = np.concatenate([np.full(s["nuse"], i) for i, s in enumerate(fwd["src"])])
    else:
        leadfield = _rotate_blocks(fwd["sol"]["data"], rot, axis=1)  # takes MRI-frame moments
        kernel = _rotate_blocks(kernel, rot, axis=0)  # returns MRI-frame moments
        normals, hemi_of = None, None
    return PreparedSetup(
        setup=setup, info=info, inverse_operator=inv, lambda2=lambda2, pos=pos,
        normals=normals, leadfield=np.asarray(leadfield, np.float64),
        kernel=np.asarray(kernel, np.float64), to_grid=grid.resampler(pos), hemi_of=hemi_of,
        head_to_mri=rot, src=src,
    )  # fmt: skip


@dataclass
class SimulatedBatch:
    """A batch of simulated samples from one setup.

    ``true`` and ``eloreta`` live on the setup's own sources: (n, n_src, 3)
    moment vectors (Am, MRI frame) for volume setups, (n, n_src) signed
    amplitudes along the normals for cortical ones. ``true_grid`` and
    ``eloreta_grid`` are both resampled onto the grid, (n, n_grid, 3).
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
    stay within the centre's hemisphere.

    Returns
    -------
    sources : array, shape (n, n_src, 3) or (n, n_src)
    counts : array of int, shape (n,)
    sigmas : list of arrays
        Per sample, the extent (mm) of each source.
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
    # |c - p|^2 expanded: a matrix product instead of an (n_blobs, n_src, 3) temporary
    pos = prepared.pos
    d2 = (pos[centres] ** 2).sum(1)[:, None] + (pos**2).sum(1)[None] - 2 * pos[centres] @ pos.T
    profile = np.exp(-d2 / (2 * sigma[:, None] ** 2))
    profile[d2 > (3 * sigma[:, None]) ** 2] = 0.0
    if prepared.hemi_of is not None:
        profile *= prepared.hemi_of[None] == prepared.hemi_of[centres][:, None]
    profile *= 1e-8 * rng.standard_normal(total)[:, None] / np.linalg.norm(profile, axis=1, keepdims=True)
    # each sample sums its own blobs: a sparse (n, n_blobs) matrix times the profiles
    owner = np.repeat(np.arange(n), counts)
    if prepared.free:
        ori = rng.standard_normal((total, 3))
        ori /= np.linalg.norm(ori, axis=1, keepdims=True)
        sources = np.empty((n, prepared.n_sources, 3))
        for k in range(3):
            weights = sparse.csr_matrix((ori[:, k], (owner, np.arange(total))), shape=(n, total))
            sources[:, :, k] = weights @ profile
    else:
        sources = sparse.csr_matrix((np.ones(total), (owner, np.arange(total))), shape=(n, total)) @ profile
    sigmas = np.split(sigma * 1e3, np.cumsum(counts)[:-1])
    return np.asarray(sources), counts, sigmas


def add_noise(
    clean: np.ndarray,
    snr_db: np.ndarray,
    rng: np.random.Generator,
    noise_cov: np.ndarray | None = None,
) -> np.ndarray:
    """Add sensor noise at the given SNR (dB) per sample.

    The signal std is taken over average-referenced channels; the noise is
    white, or drawn from ``noise_cov`` (n_chan, n_chan) and rescaled.
    """
    clean = np.asarray(clean)
    sig = (clean - clean.mean(axis=1, keepdims=True)).std(axis=1)
    if noise_cov is None:
        noise = rng.standard_normal(clean.shape)
    else:
        noise = (
            rng.standard_normal(clean.shape)
            @ np.linalg.cholesky(noise_cov + 1e-12 * np.eye(len(noise_cov)) * np.trace(noise_cov)).T
        )
    noise_std = (noise - noise.mean(axis=1, keepdims=True)).std(axis=1)
    scale = sig / np.sqrt(10 ** (np.asarray(snr_db) / 10)) / noise_std
    return clean + noise * scale[:, None]


def simulate(
    prepared: PreparedSetup,
    n: int,
    rng: np.random.Generator,
    prior: SourcePrior = SourcePrior(),
    *,
    snr_db: float | None = None,
    n_sources: int | None = None,
    sigma_mm: tuple[float, float] | None = None,
) -> SimulatedBatch:
    """Simulate ``n`` samples: sources, noisy sensors and eLORETA, native and on the grid."""
    sources, counts, sigmas = simulate_sources(prepared, n, rng, prior, n_sources, sigma_mm)
    flat = sources.reshape(n, -1)
    clean = flat @ prepared.leadfield.T
    snr = np.full(n, float(snr_db)) if snr_db is not None else rng.uniform(*prior.snr_db, n)
    sensor = add_noise(clean, snr, rng)
    eloreta = (sensor @ prepared.kernel.T).reshape(sources.shape)
    return SimulatedBatch(
        setup=prepared.setup.name, sensor=sensor, true=sources, eloreta=eloreta,
        true_grid=prepared.grid_values(sources), eloreta_grid=prepared.grid_values(eloreta),
        snr_db=snr, n_sources=counts, sigma_mm=sigmas,
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
    """

    def __init__(
        self,
        setups: list[PreparedSetup],
        grid: SourceGrid,
        prior: SourcePrior = SourcePrior(),
        seed: int = 0,
        chunk: int = 8,
    ):
        if not setups:
            raise ValueError("SimulationEngine needs at least one prepared setup")
        self.setups, self.grid, self.prior, self.chunk = setups, grid, prior, chunk
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> list[SimulatedBatch]:
        """``n`` samples as a list of per-setup :class:`SimulatedBatch` chunks."""
        out = []
        for start in range(0, n, self.chunk):
            prepared = self.setups[self.rng.integers(len(self.setups))]
            out.append(simulate(prepared, min(self.chunk, n - start), self.rng, self.prior))
        return out

    def batch(self, n: int, dtype=None) -> tuple:
        """A training batch: dense, max-normalised tensors and metadata.

        Returns
        -------
        inputs, targets : torch.Tensor, shape (n, 3, *grid.shape)
            eLORETA and the truth on the grid, normalised by
            :func:`normalised_dense`.
        meta : dict
            ``scale``, ``log_ratio`` (tensor, the amplitude target),
            ``snr_db``, ``n_sources``, ``setup``.
        """
        import torch

        chunks = self.sample(n)
        x0 = np.concatenate([c.eloreta_grid for c in chunks])
        x = np.concatenate([c.true_grid for c in chunks])
        inputs, targets, scale, ratio = normalised_dense(self.grid, x0, x)
        meta = dict(
            scale=scale,
            log_ratio=torch.from_numpy(np.log(ratio)).to(torch.float32),
            snr_db=np.concatenate([c.snr_db for c in chunks]),
            n_sources=np.concatenate([c.n_sources for c in chunks]),
            setup=sum(([c.setup] * len(c.snr_db) for c in chunks), []),
        )
        dtype = torch.float32 if dtype is None else dtype
        return torch.from_numpy(inputs).to(dtype), torch.from_numpy(targets).to(dtype), meta


def normalised_dense(
    grid: SourceGrid, x0: np.ndarray, x: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Normalise eLORETA (and truth) maps and scatter them onto the grid tensor.

    Each eLORETA map is divided by its largest moment norm (``scale``). The
    truth is divided by the same number and then by its own peak norm
    (``ratio``, the amplitude the network predicts as ``log(ratio)``), so the
    target shape peaks at 1 like the input. ``truth = target * ratio * scale``.

    Returns
    -------
    inputs, targets : array, shape (n, 3, *grid.shape)
    scale, ratio : array, shape (n,)
    """
    inputs, scale = normalise_inputs(grid, x0)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero map keeps its (zero) truth
    if x is None:
        return inputs, None, scale, None
    ratio = np.linalg.norm(x, axis=-1).max(axis=-1) / scale
    ratio = np.where(ratio > 0, ratio, 1.0)
    targets = grid.to_dense((x / (scale * ratio)[:, None, None]).astype(np.float32))
    return inputs, targets, scale, ratio
