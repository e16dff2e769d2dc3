"""MEG sensor arrays around the template head, built offline from what MNE ships.

Each array is an :class:`mne.Info` of MEG channels in device coordinates, with
a device -> head transform that seats the fsaverage head in it:

- ``neuromag306``, ``ctf275``, ``ctf151``: the canonical sensor definitions
  MNE ships (:func:`mne.channels.read_meg_canonical_info`), real geometry;
- ``kit157``: 157 KIT axial gradiometers spread over MNE's KIT helmet;
- ``flux120``: the layout of the Kernel Flux OPM helmet (the 40 module
  positions MNE ships, seen from the helmet's centre) on the template scalp,
  each a triaxial magnetometer: one radial and two tangential channels. The
  helmet itself is smaller than the template head, so its positions are
  carried onto the scalp along their directions;
- ``opm<N>`` and ``opm<N>-dual``: ``N`` on-scalp OPMs at a seeded layout,
  radial only or radial plus one tangential axis, as in home-built caps.

SQUID helmets are rigid, so the head sits where a subject puts it: as high as
it goes, centred, with a gap of about 2 cm between the scalp and the nearest
sensor (what MNE's test recording shows on the template scalp). A seeded
displacement of a few mm and degrees stands for how real heads differ in
position. On-scalp OPMs sit a few mm off the scalp along its normal.

SSP projectors like those of an empty-room recording (the fields of distant
sources: homogeneous fields and their first-order gradients) can be added
with :func:`environmental_projectors`.
"""

from __future__ import annotations

import json
import re
import zlib
from functools import lru_cache
from pathlib import Path

import mne
import numpy as np
from mne.io.constants import FIFF
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

#: Arrays with fixed geometry (``opm<N>`` layouts are made on request).
MEG_ARRAYS = ("neuromag306", "ctf275", "ctf151", "kit157", "flux120")

#: Scalp-to-nearest-sensor gap (m) of a seated head in a SQUID helmet.
SQUID_GAP = 0.020
#: The closest a displaced head may come to a SQUID sensor (m).
SQUID_MIN_GAP = 0.010
#: Offset (m) of an on-scalp OPM's sensitive volume from the scalp.
OPM_OFFSET = (0.006, 0.010)

_OPM_NAME = re.compile(r"^opm(\d+)(-dual)?$")
_COIL_OPM_QUSPIN = 8002  # QuSpin zero-field magnetometer, Gen2
_COIL_OPM_KERNEL = 8201  # Kernel OPM, Gen1
_COIL_KIT = FIFF.FIFFV_COIL_KIT_GRAD


def _mne_data() -> Path:
    return Path(mne.__file__).parent


def check_meg_array(name: str) -> str:
    """Validate a MEG array name.

    Parameters
    ----------
    name : str
        One of :data:`MEG_ARRAYS`, or ``opm<N>`` / ``opm<N>-dual`` with
        8 <= N <= 256 sensor positions.

    Returns
    -------
    name : str
        The same name; an unknown one raises, listing the valid names.
    """
    match = _OPM_NAME.match(name) if isinstance(name, str) else None
    if name in MEG_ARRAYS or (match and 8 <= int(match.group(1)) <= 256):
        return name
    raise ValueError(
        f"Unknown MEG array {name!r}. Valid arrays are {', '.join(MEG_ARRAYS)}, "
        "or opm<N> / opm<N>-dual with 8 <= N <= 256 on-scalp sensors"
    )


# ------------------------------------------------------------ geometry
def _on_scalp(name: str) -> bool:
    """OPM arrays sit on the scalp: their layout is made in head coordinates."""
    return name == "flux120" or bool(_OPM_NAME.match(name))


@lru_cache(maxsize=1)
def _scalp_tris() -> np.ndarray:
    from .anatomy import _mne_fsaverage_dir

    return mne.read_bem_surfaces(_mne_fsaverage_dir() / "fsaverage-head.fif", verbose=False)[0]["tris"]


@lru_cache(maxsize=1)
def _scalp_head() -> tuple[np.ndarray, np.ndarray]:
    """The template scalp (vertices and outward normals), head coordinates."""
    from .anatomy import _mne_fsaverage_dir, template_trans

    scalp = mne.read_bem_surfaces(_mne_fsaverage_dir() / "fsaverage-head.fif", verbose=False)[0]
    mri_head = np.linalg.inv(template_trans()["trans"])
    rr = mne.transforms.apply_trans(mri_head, scalp["rr"])
    nn = scalp["nn"] @ mri_head[:3, :3].T
    return rr, nn / np.linalg.norm(nn, axis=1, keepdims=True)


def _covered_scalp() -> tuple[np.ndarray, np.ndarray]:
    """Scalp vertices a helmet or cap covers: above the ears, off the face."""
    rr, nn = _scalp_head()
    keep = (rr[:, 2] > -0.01) & ~((rr[:, 1] > 0.06) & (rr[:, 2] < 0.05))
    return rr[keep], nn[keep]


def _farthest_points(points: np.ndarray, n: int, start: int) -> np.ndarray:
    """Indices of ``n`` points spread evenly by greedy farthest-point sampling."""
    chosen = [start]
    dist = np.linalg.norm(points - points[start], axis=1)
    for _ in range(n - 1):
        chosen.append(int(dist.argmax()))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def _tangents(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each normal and to each other."""
    helper = np.where(np.abs(normals[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    ex = np.cross(helper, normals)
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    return ex, np.cross(normals, ex)


def _channels_info(names, kinds, coils, pos, ez) -> mne.Info:
    """MEG channels at ``pos`` (device frame) with normals ``ez``."""
    info = mne.create_info(list(names), 1000.0, list(kinds))
    ex, ey = _tangents(ez)
    with info._unlock():
        for ch, coil, p, x, y, z in zip(info["chs"], coils, pos, ex, ey, ez):
            ch["coil_type"] = int(coil)
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
            ch["loc"][:12] = np.concatenate([p, x, y, z])
    return info


def _canonical(system: str) -> mne.Info:
    return mne.channels.read_meg_canonical_info(system, verbose=False)


def _helmet(name: str) -> tuple[np.ndarray, np.ndarray]:
    surf = mne.read_bem_surfaces(_mne_data() / "data" / "helmets" / f"{name}.fif.gz", verbose=False)[0]
    return surf["rr"], surf["nn"]


def _kit() -> mne.Info:
    """157 KIT axial gradiometers spread over the helmet's dome."""
    rr, nn = _helmet("KIT")
    centre = rr.mean(axis=0)
    outward = np.einsum("ij,ij->i", nn, rr - centre) > 0
    nn = np.where(outward[:, None], nn, -nn)  # the helmet's normals point out of the head
    dome = rr[:, 2] > np.percentile(rr[:, 2], 12)
    rr, nn = rr[dome], nn[dome]
    idx = _farthest_points(rr, 157, int(rr[:, 2].argmax()))
    names = [f"MEG {k + 1:03d}" for k in range(len(idx))]
    return _channels_info(names, ["mag"] * len(idx), [_COIL_KIT] * len(idx), rr[idx], nn[idx])


def _flux() -> mne.Info:
    """The Kernel Flux layout on the template scalp, each position a triaxial magnetometer."""
    from .anatomy import _ray_radii

    pos = json.loads((_mne_data() / "data" / "helmets" / "Kernel_Flux_ch_pos.txt").read_text())
    labels, rr = list(pos), np.array(list(pos.values()), float)
    dirs = rr - (rr.mean(axis=0) + [0.0, 0.0, -0.04])  # seen from a centre low in the helmet
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    scalp, _ = _scalp_head()
    tris = _scalp_tris()
    origin = np.array([0.0, 0.0, 0.04])  # about the template brain's centre, head coordinates
    on_scalp = origin + dirs * _ray_radii(origin, dirs, scalp, tris)[:, None]
    radial = on_scalp - origin
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    centre = on_scalp + OPM_OFFSET[1] * radial
    t1, t2 = _tangents(radial)
    names, pos3, ez = [], [], []
    for label, p, axes in zip(labels, centre, zip(radial, t1, t2)):
        for axis_name, axis in zip("ZXY", axes):
            names.append(f"{label}_b{axis_name}")
            pos3.append(p)
            ez.append(axis)
    return _channels_info(
        names, ["mag"] * len(names), [_COIL_OPM_KERNEL] * len(names), np.array(pos3), np.array(ez)
    )


def _opm_cap(n: int, dual: bool, seed: int) -> mne.Info:
    """``n`` on-scalp OPMs at a seeded layout, in head coordinates (identity transform)."""
    rng = np.random.default_rng(seed)
    rr, nn = _covered_scalp()
    idx = _farthest_points(rr, n, int(rng.integers(len(rr))))
    offset = rng.uniform(*OPM_OFFSET, n)[:, None]
    pos, normal = rr[idx] + offset * nn[idx], nn[idx]
    names, pos_all, ez = [], [], []
    tangent = _tangents(normal)[0]
    for k in range(n):
        for suffix, axis in (("Z", normal[k]), ("Y", tangent[k]))[: 2 if dual else 1]:
            names.append(f"OPM{k + 1:03d}_b{suffix}")
            pos_all.append(pos[k])
            ez.append(axis)
    coils = [_COIL_OPM_QUSPIN] * len(names)
    return _channels_info(names, ["mag"] * len(names), coils, np.array(pos_all), np.array(ez))


@lru_cache(maxsize=16)
def _device_array(name: str, seed: int) -> mne.Info:
    if name == "neuromag306":
        return _canonical("neuromag")
    if name in ("ctf275", "ctf151"):
        return _canonical(name)
    if name == "kit157":
        return _kit()
    if name == "flux120":
        return _flux()
    match = _OPM_NAME.match(name)
    return _opm_cap(int(match.group(1)), bool(match.group(2)), seed)


# ------------------------------------------------------------ head position
def _sensor_positions(info: mne.Info) -> np.ndarray:
    return np.array([ch["loc"][:3] for ch in info["chs"]])


def _min_gap(scalp: np.ndarray, sensors: np.ndarray, dev_head: np.ndarray) -> float:
    """Smallest scalp-to-sensor distance (m) with the head at ``dev_head``."""
    in_device = mne.transforms.apply_trans(np.linalg.inv(dev_head), scalp)
    return float(cKDTree(in_device).query(sensors)[0].min())


def _raise_until(scalp, sensors, dev_head: np.ndarray, gap: float) -> np.ndarray:
    """Move the head up (device z) until its nearest sensor is ``gap`` away."""
    lo, hi = -0.25, 0.25  # head-origin height in the device frame, m
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        trial = dev_head.copy()
        trial[:3, 3] = dev_head[:3, :3] @ [0.0, 0.0, -mid] + dev_head[:3, 3] * [1, 1, 0]
        if _min_gap(scalp, sensors, trial) > gap:
            lo = mid
        else:
            hi = mid
    trial = dev_head.copy()
    trial[:3, 3] = dev_head[:3, :3] @ [0.0, 0.0, -lo] + dev_head[:3, 3] * [1, 1, 0]
    return trial


def _seat_head(sensors: np.ndarray, gap: float) -> np.ndarray:
    """Device -> head transform with the head as high as it goes, centred, ``gap`` from the sensors."""
    scalp = _covered_scalp()[0][::4]
    best, best_height = None, -np.inf
    for x in np.linspace(-0.01, 0.01, 3):
        for y in np.linspace(-0.03, 0.03, 13):
            trial = np.eye(4)
            trial[:3, 3] = [-x, -y, 0.0]
            trial = _raise_until(scalp, sensors, trial, gap)
            height = -trial[2, 3]
            if height > best_height:
                best, best_height = trial, height
    return best


@lru_cache(maxsize=32)
def _seated(name: str, seed: int) -> np.ndarray:
    info = _device_array(name, seed)
    if _on_scalp(name):
        return np.eye(4)  # on-scalp: the layout is made in head coordinates
    return _seat_head(_sensor_positions(info), SQUID_GAP)


def _displaced(name: str, dev_head: np.ndarray, pose_mm: float, seed: int) -> np.ndarray:
    """``dev_head`` moved by a seeded translation (mm) and rotation (the same number in degrees)."""
    rng = np.random.default_rng(seed)
    moved = dev_head.copy()
    rot = Rotation.from_rotvec(np.deg2rad(rng.normal(0.0, pose_mm, 3))).as_matrix()
    moved[:3, :3] = rot @ dev_head[:3, :3]
    moved[:3, 3] = dev_head[:3, 3] + rng.normal(0.0, pose_mm * 1e-3, 3)
    if _on_scalp(name):
        return moved
    scalp = _covered_scalp()[0][::4]
    sensors = _sensor_positions(_device_array(name, 0))  # SQUID arrays have one layout
    if _min_gap(scalp, sensors, moved) < SQUID_MIN_GAP:  # a head cannot pass through the dewar
        moved = _raise_until(scalp, sensors, moved, SQUID_MIN_GAP)
    return moved


def environmental_projectors(info: mne.Info, n: int) -> list[mne.Projection]:
    """SSP projectors of distant (environmental) fields, as from an empty-room recording.

    The patterns are the sensors' responses to the three homogeneous fields
    and the five independent first-order gradients of a source-free field,
    orthonormalised in that order; the first ``n`` become projectors.

    Parameters
    ----------
    info : mne.Info
        Measurement info with MEG channels (device coordinates).
    n : int
        Number of projectors, 1 to 8.

    Returns
    -------
    projs : list of mne.Projection
        Inactive projectors over the MEG channels, named ``PCA-v1`` and on.
        An array that sees fewer than ``n`` independent patterns (axial
        gradiometers alone see no homogeneous field) raises.
    """
    if not 1 <= n <= 8:
        raise ValueError(f"n must be 1 to 8 environmental projectors, got {n!r}")
    picks = mne.pick_types(info, meg=True, ref_meg=False, exclude=())
    chs = [info["chs"][k] for k in picks]
    fields = [np.eye(3)[k] for k in range(3)]
    gradients = [np.diag([1.0, -1.0, 0.0]), np.diag([0.0, 1.0, -1.0])]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        g = np.zeros((3, 3))
        g[i, j] = g[j, i] = 1.0
        gradients.append(g)
    patterns = []
    for b in fields:  # homogeneous: magnetometers only (gradiometers cancel it)
        patterns.append([ch["loc"][9:12] @ b if ch["coil_type"] in _MAGNETOMETERS else 0.0 for ch in chs])
    for g in gradients:  # B(r) = G r: magnetometers see ez.G.r, planar gradiometers ez.G.ex
        patterns.append([_gradient_reading(ch, g) for ch in chs])
    patterns = np.array(patterns)
    patterns /= np.maximum(np.linalg.norm(patterns, axis=1, keepdims=True), 1e-30)
    basis = []
    for p in patterns:
        for q in basis:
            p = p - (p @ q) * q
        if np.linalg.norm(p) > 1e-6:
            basis.append(p / np.linalg.norm(p))
    if len(basis) < n:
        raise ValueError(
            f"The array's sensors see only {len(basis)} independent environmental field patterns "
            f"(axial gradiometers cancel homogeneous fields); ask for n <= {len(basis)} projectors"
        )
    names = [info["ch_names"][k] for k in picks]
    return [
        mne.Projection(
            data=dict(nrow=1, ncol=len(names), row_names=None, col_names=names, data=vec[None]),
            desc=f"PCA-v{k + 1}",
            kind=FIFF.FIFFV_PROJ_ITEM_FIELD,
            active=False,
            explained_var=None,
        )
        for k, vec in enumerate(basis[:n])
    ]


#: Coils that measure the field itself (magnetometers), not a gradient.
_MAGNETOMETERS = {3022, 3023, 3024, 3025, 4001, 2000, 7002, 8001, 8002, 8101, 8201}
_PLANAR = {3012, 3013, 3014, 3015}


def _gradient_reading(ch: dict, g: np.ndarray) -> float:
    pos, ex, ez = ch["loc"][:3], ch["loc"][3:6], ch["loc"][9:12]
    if ch["coil_type"] in _MAGNETOMETERS:
        return float(ez @ g @ pos)
    if ch["coil_type"] in _PLANAR:
        return float(ez @ g @ ex)
    return float(-0.05 * ez @ g @ ez)  # axial gradiometers with a 5 cm baseline


# ------------------------------------------------------------ public
def meg_array_info(
    name: str,
    *,
    pose_mm: float = 0.0,
    seed: int = 0,
    n_projectors: int = 0,
    sfreq: float = 250.0,
) -> mne.Info:
    """Measurement info of a MEG array with the template head seated in it.

    Parameters
    ----------
    name : str
        The array (:func:`check_meg_array`).
    pose_mm : float
        Standard deviation of the head's displacement from its seated
        position: translation in mm and rotation in degrees, per axis
        (helmets only: on-scalp OPMs move with the head).
    seed : int
        Seed of the displacement (and of an ``opm<N>`` layout).
    n_projectors : int
        Environmental SSP projectors to add (:func:`environmental_projectors`), inactive.
    sfreq : float
        Sampling rate (Hz).

    Returns
    -------
    info : mne.Info
        MEG channels in device coordinates, ``dev_head_t`` set.
    """
    check_meg_array(name)
    if pose_mm < 0:
        raise ValueError(f"pose_mm must be >= 0, got {pose_mm!r}")
    if pose_mm and _on_scalp(name):
        raise ValueError(
            f"{name} sits on the scalp and moves with the head: pose_mm is for helmets. "
            "Vary an on-scalp layout with seed instead."
        )
    layout_seed = seed if _OPM_NAME.match(name) else 0
    device = _device_array(name, layout_seed)
    dev_head = _seated(name, layout_seed).copy()  # never hand out the cached array
    if pose_mm:
        dev_head = _displaced(name, dev_head, pose_mm, zlib.crc32(f"{name}-{seed}".encode()))
    info = mne.create_info(device["ch_names"], sfreq, "mag")
    with info._unlock():
        info["chs"] = [dict(ch) for ch in device["chs"]]
        for ch in info["chs"]:
            ch["loc"] = ch["loc"].copy()
        info._update_redundant()
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_head)
        if n_projectors:
            info["projs"] = environmental_projectors(info, n_projectors)
    return info
