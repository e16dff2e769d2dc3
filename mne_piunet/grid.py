"""The network's source grid: the template volume grid, its tensor, and maps onto it.

The grid is a regular volume source space in fsaverage MRI (about MNI)
coordinates filling the template inner skull. It is a real MNE volume source
space built with the template ``T1.mgz``, so ``stc.plot(src, subjects_dir=...)``
and ``stc.as_volume(src)`` work offline.

Spacing: 8 mm (the paper uses 7 mm). On a 2-core CPU the U-Net's cost grows with
the voxel count; 8 mm gives a 20 x 24 x 20 tensor (9,600 voxels, 3,990 inside
the brain) against 24 x 28 x 24 at 7 mm, i.e. ~1.7x more training samples per
CPU hour, which matters more for the learned prior than the finer spacing.

:func:`to_template_space` gives the affine that takes another source space
(head or MRI frame, fsaverage or another subject) to the grid's frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mne
import numpy as np
from mne.utils import logger
from scipy import sparse

from ._cache import cached, digest
from .anatomy import TEMPLATE_SUBJECT, template_subjects_dir
from .utils._checks import as_affine
from .utils._docs import fill_doc

DEFAULT_SPACING_MM = 8.0
DEFAULT_MINDIST_MM = 3.0
#: A frame or unit mistake moves most sources out of the brain; a sphere model
#: fitted to the scalp leaves ~6 % of a 10 mm volume source space more than
#: 12 mm outside, so a quarter tells them apart.
MAX_FAR_FRACTION = 0.25
#: No source of a correctly placed head model lies this far (m) outside the
#: template brain: the scalp itself is ~15 mm beyond it.
MAX_SNAP_M = 0.05
_SPACING_RANGE_MM = (4.0, 12.0)
#: Tensor dimensions are multiples of this, so a 3-level U-Net halves them twice.
TENSOR_MULTIPLE = 4


def make_grid_src(
    spacing: float = DEFAULT_SPACING_MM, mindist: float = DEFAULT_MINDIST_MM
) -> mne.SourceSpaces:
    """Volume source space of the grid (cached on disk).

    Parameters
    ----------
    spacing : float
        Grid spacing in mm, within 4-12 mm.
    mindist : float
        Minimum distance of a grid point from the inner skull, in mm.

    Returns
    -------
    src : mne.SourceSpaces
        One volume source space (kind ``"volume"``) in fsaverage MRI coordinates.
    """
    lo, hi = _SPACING_RANGE_MM
    if not lo <= float(spacing) <= hi:
        raise ValueError(f"Grid spacing must be within [{lo}, {hi}] mm, got {spacing}")
    subjects_dir = template_subjects_dir()
    bem_dir = subjects_dir / TEMPLATE_SUBJECT / "bem"

    def build():
        logger.info(f"Building the {spacing} mm template grid (once; cached)")
        return mne.setup_volume_source_space(
            TEMPLATE_SUBJECT,
            pos=float(spacing),
            mri="T1.mgz",
            surface=str(bem_dir / "inner_skull.surf"),
            mindist=float(mindist),
            subjects_dir=subjects_dir,
        )

    def read(fname):
        src = mne.read_source_spaces(fname)
        # The MRI path is absolute: point it at this cache's template.
        src[0]["mri_file"] = str(subjects_dir / TEMPLATE_SUBJECT / "mri" / "T1.mgz")
        return src

    return cached(
        "src",
        dict(spacing=float(spacing), mindist=float(mindist), subjects=str(subjects_dir)),
        "-src.fif",
        build,
        lambda f, s: mne.write_source_spaces(f, s, overwrite=True),
        read,
    )


@dataclass
class SourceGrid:
    """The grid's active sources and the dense tensor the network sees.

    Parameters
    ----------
    src : mne.SourceSpaces
        A single volume source space (:func:`make_grid_src`).
    mindist : float
        Its minimum distance from the inner skull (mm), as built; stored with
        the weights (:func:`grid_meta`).

    Attributes
    ----------
    src : mne.SourceSpaces
        The volume source space (output source space of PIUNet).
    mindist : float
        Its minimum distance from the inner skull (mm), as built.
    pos : array, shape (n_sources, 3)
        Active source positions (m, fsaverage MRI coordinates).
    ijk : array, shape (n_sources, 3)
        Index of each active source in the dense tensor.
    shape : tuple of int
        Dense tensor shape (each a multiple of ``TENSOR_MULTIPLE``).
    origin : array, shape (3,)
        Position (m) of tensor index (0, 0, 0).
    spacing : float
        Spacing in m.
    """

    src: mne.SourceSpaces
    mindist: float = DEFAULT_MINDIST_MM
    pos: np.ndarray = field(init=False)
    ijk: np.ndarray = field(init=False)
    shape: tuple[int, int, int] = field(init=False)
    origin: np.ndarray = field(init=False)
    spacing: float = field(init=False)

    def __post_init__(self):
        s = self.src[0]
        if len(self.src) != 1 or s["type"] != "vol":
            raise ValueError("SourceGrid needs a single volume source space")
        self.pos = s["rr"][s["vertno"]]
        rr = s["rr"]
        self.spacing = float(np.min(np.abs(np.diff(np.unique(np.round(rr[:, 0], 6))))))
        lo = self.pos.min(axis=0)
        span = np.round((self.pos.max(axis=0) - lo) / self.spacing).astype(int) + 1
        shape = -(-span // TENSOR_MULTIPLE) * TENSOR_MULTIPLE
        pad = (shape - span) // 2
        self.origin = lo - pad * self.spacing
        self.ijk = np.round((self.pos - self.origin) / self.spacing).astype(int)
        self.shape = tuple(int(x) for x in shape)
        self._flat = np.ravel_multi_index(self.ijk.T, self.shape)
        self._lookup = np.full(int(np.prod(self.shape)), -1, int)
        self._lookup[self._flat] = np.arange(len(self.pos))

    @property
    def n_sources(self) -> int:
        """Number of active grid sources."""
        return len(self.pos)

    @property
    def vertices(self) -> list[np.ndarray]:
        """Vertices for a :class:`mne.VolSourceEstimate` on :attr:`src`."""
        return [self.src[0]["vertno"].copy()]

    @property
    def flat_index(self) -> np.ndarray:
        """Index of each active source in the flattened tensor (C order)."""
        return self._flat

    @property
    def mask(self) -> np.ndarray:
        """Boolean tensor, True inside the brain."""
        return (self._lookup >= 0).reshape(self.shape)

    def to_dense(self, values: np.ndarray) -> np.ndarray:
        """Scatter moment vectors onto a zero tensor of the grid's shape.

        Parameters
        ----------
        values : array, shape (..., n_sources, 3)
            Moment vectors at the active sources.

        Returns
        -------
        dense : array, shape (..., 3, ``*shape``)
            Same dtype; zero outside the brain.
        """
        values = np.asarray(values)
        if values.shape[-2:] != (self.n_sources, 3):
            raise ValueError(f"Expected (..., {self.n_sources}, 3) values, got {values.shape}")
        out = np.zeros(values.shape[:-2] + (3, int(np.prod(self.shape))), values.dtype)
        out[..., self._flat] = np.swapaxes(values, -1, -2)
        return out.reshape(values.shape[:-2] + (3,) + self.shape)

    def from_dense(self, dense: np.ndarray) -> np.ndarray:
        """Gather a dense tensor back to moment vectors at the active sources.

        The inverse of :meth:`to_dense` (voxels outside the brain are dropped).

        Parameters
        ----------
        dense : array, shape (..., 3, ``*shape``)
            A tensor of the grid's shape.

        Returns
        -------
        values : array, shape (..., n_sources, 3)
            Same dtype.
        """
        dense = np.asarray(dense)
        if dense.shape[-4:] != (3,) + self.shape:
            raise ValueError(f"Expected (..., 3, {self.shape}) tensor, got {dense.shape}")
        flat = dense.reshape(dense.shape[:-4] + (3, -1))[..., self._flat]
        return np.swapaxes(flat, -1, -2)

    def resampler(self, pos: np.ndarray, max_dist: float = 0.012) -> sparse.csr_matrix:
        """Sparse operator spreading sources at ``pos`` onto the grid.

        Each source is split trilinearly over the (active) corners of its grid
        cell, weights renormalised over active corners, so every column sums to
        1 (mass is conserved) and a source on a grid point maps to that point
        alone. A source with no active corner goes to its nearest active grid
        point, with a logged note when any lies more than ``max_dist`` (m)
        outside: a sphere fitted to the scalp holds sources up to ~3 cm beyond
        the template brain, and they belong to its nearest cortex.

        A frame or unit mistake is refused instead: positions in millimetres,
        more than :data:`MAX_FAR_FRACTION` of the sources beyond ``max_dist``,
        or any source beyond :data:`MAX_SNAP_M`.

        Parameters
        ----------
        pos : array, shape (n, 3)
            Source positions in fsaverage MRI coordinates (m).
        max_dist : float
            Distance (m) outside the grid's brain beyond which a source counts as far.

        Returns
        -------
        op : scipy.sparse.csr_matrix, shape (n_grid_sources, n)
        """
        pos = np.asarray(pos, float)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"pos must have shape (n, 3), got {pos.shape}")
        if np.median(np.linalg.norm(pos, axis=1)) > 1.0:
            raise ValueError(
                "Source positions are more than 1 m from the origin: are they in millimetres? "
                "MNE source spaces are in metres."
            )
        q = (pos - self.origin) / self.spacing
        # snap float32 round-off so a source on a grid point maps to it alone
        q = np.where(np.abs(q - np.round(q)) < 1e-4, np.round(q), q)
        base = np.floor(q).astype(int)
        frac = q - base
        corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, 8).T
        idx = base[:, None, :] + corners[None]  # (n, 8, 3)
        w = np.prod(np.where(corners[None], frac[:, None], 1 - frac[:, None]), axis=2)
        inside = np.all((idx >= 0) & (idx < np.array(self.shape)), axis=2)
        flat = np.ravel_multi_index(np.where(inside[..., None], idx, 0).transpose(2, 0, 1), self.shape)
        rows = np.where(inside, self._lookup[flat], -1)
        w = np.where(rows >= 0, w, 0.0)
        total = w.sum(axis=1)
        orphan = total < 1e-9
        if orphan.any():
            near = self._snap_outside(pos[orphan], len(pos), max_dist)
            rows[orphan, 0], w[orphan, 0], rows[orphan, 1:], w[orphan, 1:] = near, 1.0, -1, 0.0
            total[orphan] = 1.0
        w /= total[:, None]
        keep = (rows >= 0) & (w > 0)  # no explicit zeros: the identity stays the identity
        cols = np.broadcast_to(np.arange(len(pos))[:, None], rows.shape)
        return sparse.csr_matrix((w[keep], (rows[keep], cols[keep])), shape=(self.n_sources, len(pos)))

    def _snap_outside(self, pos: np.ndarray, n_total: int, max_dist: float) -> np.ndarray:
        """Nearest grid point of sources outside the grid's brain, or a frame/unit error."""
        from scipy.spatial import cKDTree

        dist, near = cKDTree(self.pos).query(pos)
        far = dist > max_dist
        if far.sum() > MAX_FAR_FRACTION * n_total or dist.max() > MAX_SNAP_M:
            raise ValueError(
                f"{int(far.sum())} of {n_total} source(s) lie more than {max_dist * 1e3:.0f} mm outside "
                f"the template brain (farthest {dist.max() * 1e3:.0f} mm): the source space is not in "
                "the frame PIUNet expects. Pass the inverse's own mri_head_t for head-coordinate "
                "sources, and mni_transform= (or subjects_dir= with the talairach transform) for a "
                "subject other than fsaverage."
            )
        if far.any():
            logger.info(
                f"    {int(far.sum())} source(s) lie up to {dist.max() * 1e3:.0f} mm outside the template "
                "brain (e.g. a sphere model larger than it): mapped to the nearest brain voxels"
            )
        return near


_GRIDS: dict[tuple[float, float], SourceGrid] = {}


def get_grid(spacing: float = DEFAULT_SPACING_MM, mindist: float = DEFAULT_MINDIST_MM) -> SourceGrid:
    """The template :class:`SourceGrid` (built once per process).

    Parameters
    ----------
    spacing : float
        Grid spacing in mm, within 4-12 mm.
    mindist : float
        Minimum distance of a grid point from the inner skull, in mm.

    Returns
    -------
    grid : SourceGrid
        The same object for every call with the same arguments.
    """
    key = (float(spacing), float(mindist))
    if key not in _GRIDS:
        _GRIDS[key] = SourceGrid(make_grid_src(spacing, mindist), float(mindist))
    return _GRIDS[key]


def grid_from_meta(meta: dict) -> SourceGrid:
    """The template grid a weights file's ``grid`` metadata (:func:`grid_meta`) describes.

    Parameters
    ----------
    meta : dict
        ``spacing_mm`` and, optionally, ``mindist_mm`` (older files: the default).

    Returns
    -------
    grid : SourceGrid
        As :func:`get_grid` builds it.
    """
    return get_grid(meta["spacing_mm"], meta.get("mindist_mm", DEFAULT_MINDIST_MM))


def grid_meta(grid: SourceGrid) -> dict:
    """What identifies a grid: stored with weights, checked at load.

    Parameters
    ----------
    grid : SourceGrid
        The grid.

    Returns
    -------
    meta : dict
        JSON-ready spacing and minimum distance (mm), tensor shape, number of
        sources, origin (m) and a sha256 of the active vertices.
    """
    vertno = np.ascontiguousarray(grid.src[0]["vertno"], np.int64)
    return dict(
        spacing_mm=round(grid.spacing * 1e3, 6),
        mindist_mm=grid.mindist,
        shape=list(grid.shape),
        n_sources=grid.n_sources,
        origin_m=[round(float(x), 6) for x in grid.origin],
        vertno_sha256=digest(vertno),
    )


def _polar_rotation(linear: np.ndarray) -> np.ndarray:
    """Nearest rotation to a 3x3 linear map (strips talairach scaling)."""
    u, _, vt = np.linalg.svd(linear)
    return u @ vt


def head_to_mri(trans: mne.transforms.Transform) -> mne.transforms.Transform:
    """The head -> MRI direction of a head <-> MRI transform (either way round).

    Parameters
    ----------
    trans : mne.transforms.Transform
        Head -> MRI or MRI -> head, as an inverse operator's ``mri_head_t``.

    Returns
    -------
    trans : mne.transforms.Transform
        Head -> MRI.
    """
    from mne.io.constants import FIFF

    if not isinstance(trans, mne.transforms.Transform):
        raise TypeError(f"mri_head_t must be an mne.transforms.Transform, got {type(trans).__name__}")
    head, mri = FIFF.FIFFV_COORD_HEAD, FIFF.FIFFV_COORD_MRI
    if (trans["from"], trans["to"]) == (head, mri):
        return trans
    if (trans["from"], trans["to"]) == (mri, head):
        return mne.transforms.invert_transform(trans)
    raise ValueError(
        f"mri_head_t must be a transform between head and MRI coordinates, got "
        f"{trans.from_str} -> {trans.to_str}"
    )


def _source_to_mri(
    src: mne.SourceSpaces, mri_head_t: mne.transforms.Transform | None
) -> tuple[np.ndarray, str | None]:
    """Affine from a source space's frame to its MRI frame, and the MRI's subject.

    A head-only model (no or identity MRI transform) uses the template's
    head -> MRI transform, so its MRI is the template's.
    """
    from mne.io.constants import FIFF

    from .anatomy import template_trans

    frame = src[0]["coord_frame"]
    subject = src[0].get("subject_his_id")
    if frame == FIFF.FIFFV_COORD_MRI:
        return np.eye(4), subject
    if frame != FIFF.FIFFV_COORD_HEAD:
        raise ValueError(f"Source space must be in head or MRI coordinates, got frame {frame}")
    trans = None if mri_head_t is None else head_to_mri(mri_head_t)
    if trans is None or np.allclose(trans["trans"], np.eye(4)):
        logger.info(
            "    Sources are in head coordinates with no MRI transform (e.g. a sphere "
            "model): using the template head -> MRI transform"
        )
        trans = template_trans()
        subject = TEMPLATE_SUBJECT
    return np.array(trans["trans"], float), subject


def _mri_to_mni(
    subject: str | None,
    mni_transform: mne.transforms.Transform | np.ndarray | None,
    subjects_dir: str | None,
) -> np.ndarray | None:
    """Affine from a subject's MRI frame to MNI (the template's), None when they are one."""
    if mni_transform is not None:
        return as_affine(mni_transform, "mni_transform (MRI m -> MNI m)")
    if subject in (None, TEMPLATE_SUBJECT):
        return None
    try:
        return mne.read_talxfm(subject, subjects_dir)["trans"]
    except Exception as exc:
        raise ValueError(
            f"The inverse is for subject {subject!r}, but PIUNet works in MNI space and "
            f"{subject!r}'s talairach transform could not be read ({exc}). Pass "
            f"subjects_dir= holding {subject}/mri/transforms/talairach.xfm, or "
            "mni_transform= (4x4, MRI m -> MNI m)."
        ) from None


@fill_doc
def to_template_space(
    src: mne.SourceSpaces,
    *,
    mri_head_t: mne.transforms.Transform | None = None,
    mni_transform: mne.transforms.Transform | np.ndarray | None = None,
    subjects_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Affine map from a source space's frame to the template (grid) frame.

    - fsaverage (or unnamed) sources in MRI coordinates map directly;
    - head-coordinate sources go to MRI through ``mri_head_t`` (the inverse's);
      a head-only model (no or identity MRI transform) uses the template's
      head -> MRI transform, with a logged note;
    - another subject's MRI coordinates go to MNI through ``mni_transform``
      (4x4, MRI m -> MNI m) or the subject's talairach transform found in
      ``subjects_dir``.

    Parameters
    ----------
    src : mne.SourceSpaces
        The source space, in head or MRI coordinates.
    mri_head_t : mne.transforms.Transform | None
        Head <-> MRI transform (either direction) for head-coordinate sources,
        e.g. an inverse operator's ``"mri_head_t"``.
    %(mni_transform)s
    subjects_dir : path-like | None
        Subjects folder holding the source space's subject (for its talairach
        transform).

    Returns
    -------
    affine : array, shape (4, 4)
        Source frame (m) -> template MRI frame (m).
    rotation : array, shape (3, 3)
        Rotation for moment vectors (the affine's linear part without scaling).
    """
    affine, subject = _source_to_mri(src, mri_head_t)
    mni = _mri_to_mni(subject, mni_transform, subjects_dir)
    if mni is not None:
        affine = mni @ affine
    return affine, _polar_rotation(affine[:3, :3])
