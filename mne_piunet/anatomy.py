"""The offline template head: surfaces, subjects folder, BEM and sphere models, forwards.

Everything here is built from files that MNE-Python and nilearn ship, so nothing
is downloaded at run or test time:

- scalp (``fsaverage-head.fif``) and inner skull (``fsaverage-inner_skull-bem.fif``)
  from ``mne/data/fsaverage``; an outer skull is synthesised between them;
- the MNI152 (ICBM 2009) T1 from nilearn, conformed to a FreeSurfer-style
  ``T1.mgz`` whose surface-RAS coordinates are MNI coordinates, so that volume
  plotting works with ``subjects_dir=template_subjects_dir()``;
- nilearn's fsaverage5 white-matter surfaces, for cortical source spaces.

Expensive results (BEM solutions, forwards) are cached on disk by
:func:`mne_piunet._cache.cached` under :func:`cache_dir`, keyed by every
parameter that changes them and by the installed MNE and nilearn versions,
whose code and data build them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mne
import numpy as np
from mne.utils import logger, verbose

from ._cache import CACHE_VERSION, _library_versions, cache_dir, cached, digest
from .utils._checks import check_option

TEMPLATE_SUBJECT = "fsaverage"
#: Brain, skull, scalp conductivities (S/m) of MNE's default 3-layer BEM.
DEFAULT_CONDUCTIVITY = (0.3, 0.006, 0.3)
#: Accepted (low, high) brain, skull, scalp conductivities (S/m). Brain and
#: scalp are ~0.3 S/m (MNE's defaults: 0.3 for the BEM, 0.33 for spheres),
#: allowed a factor ~3 either way. The skull's is 1/80 (Rush & Driscoll, 1968)
#: to 1/15 (Oostendorp et al., 2000) of the brain's, ~0.004-0.02 S/m (MNE's
#: 0.006 is 1/50), with headroom for deliberately extreme models. Beyond these a
#: value is more likely a unit slip than a head.
_CONDUCTIVITY_RANGES = ((0.1, 1.0), (0.001, 0.05), (0.1, 1.0))
_ICO_VERTICES = {2: 162, 3: 642, 4: 2562, 5: 10242}


def _mne_fsaverage_dir() -> Path:
    return Path(mne.__file__).parent / "data" / "fsaverage"


def _subjects_folder_name() -> str:
    """Name of the template subjects folder: the cache version and the library versions."""
    libs = "-".join(f"{name}{version}" for name, version in sorted(_library_versions().items()))
    return f"subjects-v{CACHE_VERSION}-{libs}"


# ---------------------------------------------------------------- surfaces
def _icosphere(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere by recursive subdivision (10 * 4**order + 2 vertices)."""
    t = (1 + 5**0.5) / 2
    rr = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        float,
    )  # fmt: skip
    tris = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
         [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
         [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]],
    )  # fmt: skip
    rr /= np.linalg.norm(rr, axis=1, keepdims=True)
    for _ in range(order):
        edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = rr[uniq].mean(axis=1)
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = len(rr) + inv.reshape(3, -1).T  # midpoints of edges 01, 12, 20
        a, b, c = tris.T
        tris = np.concatenate(
            [np.c_[a, m[:, 0], m[:, 2]], np.c_[b, m[:, 1], m[:, 0]], np.c_[c, m[:, 2], m[:, 1]], m]
        )
        rr = np.concatenate([rr, mid])
    return rr, tris


def _ray_radii(origin: np.ndarray, dirs: np.ndarray, rr: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distance from ``origin`` along each unit direction to the outermost hit.

    Vectorised Moller-Trumbore intersection; chunked to bound memory.
    """
    v0 = rr[tris[:, 0]]
    e1 = rr[tris[:, 1]] - v0
    e2 = rr[tris[:, 2]] - v0
    tvec = origin - v0
    qvec = np.cross(tvec, e1)
    out = np.full(len(dirs), np.nan)
    for start in range(0, len(dirs), 64):
        d = dirs[start : start + 64, None, :]
        pvec = np.cross(d, e2)
        det = np.einsum("tk,rtk->rt", e1, pvec)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            u = np.einsum("tk,rtk->rt", tvec, pvec) * inv
            v = np.einsum("rk,tk->rt", d[:, 0], qvec) * inv
            dist = np.einsum("tk,tk->t", e2, qvec)[None] * inv
        hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (dist > 0) & np.isfinite(dist)
        out[start : start + 64] = np.where(hit, dist, -np.inf).max(axis=1)
    if not np.all(np.isfinite(out)):
        raise RuntimeError("Surface is not star-shaped about the brain centre")
    return out


def _smooth_on_sphere(values: np.ndarray, dirs: np.ndarray, width: float) -> np.ndarray:
    weights = np.exp((dirs @ dirs.T - 1.0) / width**2)
    return weights @ values / weights.sum(axis=1)


def template_bem_surfaces(ico: int = 4) -> list[dict]:
    """Inner skull, synthesised outer skull and scalp of the fsaverage template.

    All three are remeshed radially on the same icosphere about the inner
    skull's centroid, so they are nested by construction. The skull is half the
    inner-skull-to-scalp gap, clipped to 2-7 mm, and never closer than 2 mm to
    the scalp.

    Parameters
    ----------
    ico : int
        Icosphere subdivision (4: 2,562 vertices per surface).

    Returns
    -------
    surfaces : list of dict
        ``rr`` (m, fsaverage MRI coordinates) and ``tris`` for the inner skull,
        outer skull and scalp, in that order.
    """
    if ico not in _ICO_VERTICES:
        check_option("ico", ico, sorted(_ICO_VERTICES))
    fs = _mne_fsaverage_dir()
    inner = mne.read_bem_surfaces(fs / "fsaverage-inner_skull-bem.fif")[0]
    scalp = mne.read_bem_surfaces(fs / "fsaverage-head.fif")[0]
    centre = inner["rr"].mean(axis=0)
    dirs, tris = _icosphere(ico)
    r_in = _ray_radii(centre, dirs, inner["rr"], inner["tris"])
    r_sc = _ray_radii(centre, dirs, scalp["rr"], scalp["tris"])
    # The fsaverage scalp folds at the nose and ears; smooth so the BEM has no
    # needle triangles, then restore the 2 mm minimum gaps.
    r_sc = np.maximum(_smooth_on_sphere(r_sc, dirs, 0.15), r_in + 0.006)
    skull = np.clip(0.5 * (r_sc - r_in), 0.002, 0.007)
    r_out = np.minimum(r_in + skull, r_sc - 0.002)
    return [dict(rr=centre + dirs * r[:, None], tris=tris.copy()) for r in (r_in, r_out, r_sc)]


# ---------------------------------------------------------- subjects folder
def _write_identity_talairach(fname: Path) -> None:
    fname.write_text(
        "MNI Transform File\n\nTransform_Type = Linear;\nLinear_Transform =\n"
        "1.0 0.0 0.0 0.0\n0.0 1.0 0.0 0.0\n0.0 0.0 1.0 0.0;\n"
    )


def _write_conformed_mni_t1(fname: Path) -> None:
    """MNI152 T1 resampled to a 256^3, 1 mm LIA volume centred on RAS 0.

    Centred on 0, FreeSurfer's surface RAS equals scanner RAS, i.e. MNI.
    """
    import nibabel as nib
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_img

    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])
    t1 = resample_img(
        load_mni152_template(resolution=1),
        target_affine=affine,
        target_shape=(256, 256, 256),
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    data = np.asarray(t1.get_fdata(), float)
    data = np.clip(255 * data / np.percentile(data[data > 0], 99.5), 0, 255)
    nib.save(nib.MGHImage(data.astype(np.uint8), affine), str(fname))


def _write_fsaverage5_white(surf_dir: Path) -> None:
    from nilearn.datasets import load_fsaverage

    mesh = load_fsaverage("fsaverage5")["white_matter"]
    for hemi, part in (("lh", mesh.parts["left"]), ("rh", mesh.parts["right"])):
        mne.write_surface(
            str(surf_dir / f"{hemi}.white"),
            np.asarray(part.coordinates, float),
            np.asarray(part.faces, int),
            overwrite=True,
        )


def template_subjects_dir() -> Path:
    """Template FreeSurfer subjects folder holding subject ``"fsaverage"``.

    It holds ``mri/T1.mgz`` (MNI152 in MNI coordinates), an identity
    ``mri/transforms/talairach.xfm``, the BEM surfaces of
    :func:`template_bem_surfaces` in ``bem/`` and fsaverage5 ``surf/?h.white``.
    Built once in the cache (per MNE and nilearn version, as they ship its
    files); pass it as ``subjects_dir=`` to MNE's plotting.

    Returns
    -------
    subjects_dir : pathlib.Path
        The folder holding subject ``"fsaverage"``.
    """
    root = cache_dir() / _subjects_folder_name()
    subj = root / TEMPLATE_SUBJECT
    done = subj / ".complete"
    if done.exists():
        return root
    logger.info(f"Building the template subjects folder in {root}")
    tmp = cache_dir() / f"{root.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tsubj = tmp / TEMPLATE_SUBJECT
    for sub in ("mri/transforms", "bem", "surf"):
        (tsubj / sub).mkdir(parents=True)
    _write_conformed_mni_t1(tsubj / "mri" / "T1.mgz")
    _write_identity_talairach(tsubj / "mri" / "transforms" / "talairach.xfm")
    for name, surf in zip(("inner_skull", "outer_skull", "outer_skin"), template_bem_surfaces()):
        mne.write_surface(str(tsubj / "bem" / f"{name}.surf"), surf["rr"] * 1e3, surf["tris"], overwrite=True)
    shutil.copy(_mne_fsaverage_dir() / "fsaverage-trans.fif", tsubj / "bem" / "fsaverage-trans.fif")
    _write_fsaverage5_white(tsubj / "surf")
    (tsubj / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def make_cortex_src() -> mne.SourceSpaces:
    """Fsaverage5 white-matter cortical source space (20,484 vertices), template MRI frame.

    Returns
    -------
    src : mne.SourceSpaces
        Two surface source spaces (left and right hemisphere), every vertex in
        use, in fsaverage MRI coordinates.
    """
    return mne.setup_source_space(
        TEMPLATE_SUBJECT, spacing="all", subjects_dir=template_subjects_dir(), add_dist=False
    )


@verbose
def make_template_inverse(
    info: mne.Info,
    noise_cov: mne.Covariance,
    *,
    src: mne.SourceSpaces | None = None,
    loose: float | str = "auto",
    depth: float | None = 0.8,
    conductivity: tuple[float, ...] | None = None,
    verbose: bool | str | int | None = None,
) -> mne.minimum_norm.InverseOperator:
    """An EEG, MEG or MEG+EEG inverse operator on the template head for your own data.

    The usual "M/EEG with a template MRI" approach: your digitised (or
    standard) electrode positions and your MEG sensors with their device ->
    head transform, the template BEM (cached forward) and the fsaverage5
    cortex or another template-space source space.

    Parameters
    ----------
    info : mne.Info
        Measurement info with EEG positions and an average reference
        projector, MEG channels, or both; its good EEG and MEG channels are used.
    noise_cov : mne.Covariance
        Noise covariance of the data.
    src : mne.SourceSpaces | None
        Source space in template MRI coordinates; None for the fsaverage5
        cortex (:func:`make_cortex_src`). ``PIUNetInverse().src`` gives a
        volume inverse on PIUNet's own grid.
    loose, depth
        As for :func:`mne.minimum_norm.make_inverse_operator`.
    conductivity : tuple of float | None
        The BEM's conductivities; None for MNE's defaults: a single shell
        (inner skull, 0.3 S/m) for MEG alone, three layers otherwise.
    %(verbose)s

    Returns
    -------
    inverse_operator : mne.minimum_norm.InverseOperator
    """
    src = make_cortex_src() if src is None else src
    picks = mne.pick_types(info, meg=True, eeg=True, ref_meg=False, exclude="bads")
    if not len(picks):
        raise ValueError("The info has no good EEG or MEG channels to make an inverse from")
    if conductivity is None:
        has_eeg = len(mne.pick_types(info, meg=False, eeg=True, exclude="bads"))
        conductivity = DEFAULT_CONDUCTIVITY if has_eeg else (0.3,)
    # the forward keeps MEG reference channels (CTF compensation); the inverse uses the good channels
    with_refs = mne.pick_info(info, mne.pick_types(info, meg=True, eeg=True, ref_meg=True, exclude="bads"))
    fwd = make_template_forward(with_refs, src, conductivity=conductivity)
    info = mne.pick_info(info, picks)
    return mne.minimum_norm.make_inverse_operator(info, fwd, noise_cov, loose=loose, depth=depth)


def template_trans() -> mne.transforms.Transform:
    """Head -> MRI transform of the fsaverage template.

    Returns
    -------
    trans : mne.transforms.Transform
        The head -> MRI transform MNE ships (``fsaverage-trans.fif``).
    """
    return mne.read_trans(_mne_fsaverage_dir() / "fsaverage-trans.fif")


# ------------------------------------------------------------ head models
def check_conductivity(conductivity: tuple[float, ...]) -> tuple[float, ...]:
    """Validate (brain, skull, scalp) conductivities, or a single-shell (brain,), in S/m.

    Parameters
    ----------
    conductivity : tuple of float
        Brain, skull and scalp conductivity in S/m, or the brain's alone for
        MEG's usual single-shell (inner skull) model. A value outside its
        plausible range (brain and scalp 0.1-1, skull 0.001-0.05) raises: it is
        more likely a unit slip than a head.

    Returns
    -------
    conductivity : tuple of float
        The values as Python floats.
    """
    cond = tuple(float(c) for c in np.atleast_1d(conductivity))
    if len(cond) not in (1, 3):
        raise ValueError(
            f"conductivity must be (brain, skull, scalp) in S/m, or (brain,) for a single-shell "
            f"model, got {conductivity!r}"
        )
    for name, value, (lo, hi) in zip(("brain", "skull", "scalp"), cond, _CONDUCTIVITY_RANGES):
        if not lo <= value <= hi:
            raise ValueError(f"{name} conductivity must be within [{lo}, {hi}] S/m, got {value}")
    return cond


@verbose
def make_template_bem(
    conductivity: tuple[float, ...] = DEFAULT_CONDUCTIVITY,
    ico: int = 4,
    verbose: bool | str | int | None = None,
) -> mne.bem.ConductorModel:
    """3-layer or single-shell BEM solution of the template head (cached on disk).

    Parameters
    ----------
    conductivity : tuple of float
        Brain, skull and scalp conductivity in S/m (3 layers), or the brain's
        alone: the single-shell (inner skull) model usual for MEG, which
        cannot compute EEG.
    ico : int
        Surface resolution (4: 2,562 vertices per surface, about 80 s to solve).
    %(verbose)s

    Returns
    -------
    bem : mne.bem.ConductorModel
        The BEM solution, in fsaverage MRI coordinates.
    """
    cond = check_conductivity(conductivity)
    subjects_dir = template_subjects_dir()

    def build():
        logger.info(f"Solving the template BEM for conductivity {cond} (once; cached)")
        # make_bem_model reads ico-4 surfaces from bem/; resample for other orders.
        if ico != 4:
            tmp = cache_dir() / f"bem-ico{ico}-subjects"
            (tmp / TEMPLATE_SUBJECT / "bem").mkdir(parents=True, exist_ok=True)
            for name, surf in zip(("inner_skull", "outer_skull", "outer_skin"), template_bem_surfaces(ico)):
                mne.write_surface(
                    str(tmp / TEMPLATE_SUBJECT / "bem" / f"{name}.surf"),
                    surf["rr"] * 1e3,
                    surf["tris"],
                    overwrite=True,
                )
            sdir = tmp
        else:
            sdir = subjects_dir
        model = mne.make_bem_model(TEMPLATE_SUBJECT, ico=None, conductivity=cond, subjects_dir=sdir)
        return mne.make_bem_solution(model)

    return cached(
        "bem",
        dict(conductivity=cond, ico=ico),
        "-sol.fif",
        build,
        lambda f, b: mne.write_bem_solution(f, b, overwrite=True),
        lambda f: mne.read_bem_solution(f),
    )


def make_template_sphere(
    info: mne.Info,
    *,
    avoid: np.ndarray | None = None,
    contain: np.ndarray | None = None,
    min_dist: float = 1e-3,
) -> mne.bem.ConductorModel:
    """4-layer sphere model fitted to the montage, in head coordinates.

    Parameters
    ----------
    info : mne.Info
        Measurement info with EEG positions (head coordinates).
    avoid : array, shape (n_sources, 3) | None
        Source positions (m, head coordinates). The centre is moved so none lies
        within ``min_dist`` of it: a source at the centre gives a NaN forward.
    contain : array, shape (n, 3) | None
        Points that must lie inside the brain layer; the radius grows to fit.
    min_dist : float
        Minimum source distance from the centre (m).

    Returns
    -------
    sphere : mne.bem.ConductorModel
    """
    sphere = mne.make_sphere_model("auto", "auto", info)
    r0 = np.array(sphere["r0"], float)
    radius = sphere.radius
    if avoid is not None:
        avoid = np.asarray(avoid, float)
        # Nudge the centre off-grid until no source is too close.
        step = np.array([0.37, 0.23, 0.29]) * min_dist
        while np.linalg.norm(avoid - r0, axis=1).min() < min_dist:
            r0 = r0 + step
    if contain is not None:
        # The brain layer's radius is 0.90 of the head's (MNE's relative_radii);
        # 0.89 puts the farthest point ~1 % inside it, not on its boundary.
        radius = max(radius, np.linalg.norm(np.asarray(contain) - r0, axis=1).max() / 0.89)
    return mne.make_sphere_model(r0, radius, None)


# ------------------------------------------------------------- montages
def builtin_montages() -> list[str]:
    """Names of the montages MNE ships.

    Returns
    -------
    names : list of str
        As :func:`mne.channels.get_builtin_montages`.
    """
    return list(mne.channels.get_builtin_montages())


def check_montage(montage: str) -> str:
    """Validate a built-in montage name.

    Parameters
    ----------
    montage : str
        A name from :func:`builtin_montages`.

    Returns
    -------
    montage : str
        The same name; an unknown one raises, listing the valid names.
    """
    names = builtin_montages()
    if not isinstance(montage, str) or montage not in names:
        raise ValueError(f"Unknown montage {montage!r}. Valid built-in montages are: {', '.join(names)}")
    return montage


def montage_info(montage: str, sfreq: float = 250.0) -> mne.Info:
    """EEG :class:`mne.Info` of a built-in montage with an average-reference projector.

    Parameters
    ----------
    montage : str
        A built-in montage name (:func:`builtin_montages`).
    sfreq : float
        Sampling rate (Hz).

    Returns
    -------
    info : mne.Info
        One EEG channel per electrode, positions set, average reference as a
        projector (as an inverse needs).
    """
    mont = mne.channels.make_standard_montage(check_montage(montage))
    info = mne.create_info(mont.ch_names, sfreq, "eeg")
    info.set_montage(mont)
    raw = mne.io.RawArray(np.zeros((len(mont.ch_names), 1)), info)
    raw.set_eeg_reference("average", projection=True)
    return raw.info


def src_fingerprint(src: mne.SourceSpaces) -> str:
    """Short hash of a source space's types, active positions and normals (cache keys).

    Parameters
    ----------
    src : mne.SourceSpaces
        Any source space.

    Returns
    -------
    fingerprint : str
        16 hex digits of a sha256 over the rounded positions and normals.
    """
    parts = [(s["type"], np.round(s["rr"][s["vertno"]], 7), np.round(s["nn"][s["vertno"]], 5)) for s in src]
    return digest(*[p for triple in parts for p in triple])[:16]


def sensor_info_and_name(montage: str | mne.Info) -> tuple[mne.Info, str]:
    """The sensors of a montage name or of a measurement info, and their name in cache keys.

    A measurement info is named by a hash of its channel names and positions
    (and, with MEG, its coil types and frames and its device -> head
    transform), so two recordings with one layout share their forward. MEG
    reference channels are kept, so that MNE applies CTF compensation.

    Parameters
    ----------
    montage : str | mne.Info
        A built-in MNE montage name, or a measurement info.

    Returns
    -------
    info : mne.Info
        The EEG and MEG sensors (MEG reference channels kept).
    name : str
        The montage's name, or ``"info-<hash>"`` for a measurement info.
    """
    if not isinstance(montage, mne.Info):
        return montage_info(montage), montage
    info = mne.pick_info(montage, mne.pick_types(montage, meg=True, eeg=True, ref_meg=True, exclude=()))
    meg = mne.pick_types(info, meg=True, eeg=False, ref_meg=True, exclude=())
    eeg = np.array([ch["loc"][:3] for ch in info["chs"] if ch["kind"] == mne.io.constants.FIFF.FIFFV_EEG_CH])
    parts = [np.round(eeg, 6), repr(info["ch_names"])]
    if len(meg):
        coils = np.array([np.r_[info["chs"][k]["coil_type"], info["chs"][k]["loc"][:12]] for k in meg])
        parts += [np.round(coils, 7), np.round(info["dev_head_t"]["trans"], 7)]
    return info, f"info-{digest(*parts)[:12]}"


def _template_head_model(
    info: mne.Info,
    src: mne.SourceSpaces,
    head: str,
    conductivity: tuple[float, float, float] | None,
    trans: mne.transforms.Transform,
) -> mne.bem.ConductorModel:
    """The template BEM, or a sphere fitted to the montage that holds every source."""
    if head == "sphere" and not len(mne.pick_types(info, meg=False, eeg=True)):
        raise ValueError(
            'head="sphere" fits a sphere to EEG electrodes; for MEG alone use head="bem" '
            "(three layers, or conductivity=(0.3,) for a single shell)"
        )
    if head == "bem":
        return make_template_bem(conductivity)
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    rr_head = mne.transforms.apply_trans(mne.transforms.invert_transform(trans), rr)
    # MNE tests sphere containment on MRI-frame positions against the
    # head-frame centre, so the brain layer must contain both.
    return make_template_sphere(info, avoid=rr_head, contain=np.concatenate([rr, rr_head]))


def _check_forward(fwd: mne.Forward, src: mne.SourceSpaces) -> mne.Forward:
    """Refuse a forward that dropped sources or holds non-finite values."""
    n_in, n_out = sum(s["nuse"] for s in src), fwd["nsource"]
    if n_out != n_in:
        raise RuntimeError(f"The forward dropped {n_in - n_out} of {n_in} sources outside the head model")
    if not np.all(np.isfinite(fwd["sol"]["data"])):
        raise RuntimeError("The forward has non-finite values (a source at a sphere's centre?)")
    return fwd


@verbose
def make_template_forward(
    montage: str | mne.Info,
    src: mne.SourceSpaces,
    *,
    head: str = "bem",
    conductivity: tuple[float, ...] = DEFAULT_CONDUCTIVITY,
    verbose: bool | str | int | None = None,
) -> mne.Forward:
    """EEG, MEG or MEG+EEG forward on the template head (cached).

    Parameters
    ----------
    montage : str | mne.Info
        A built-in MNE montage name, or a measurement info: your own EEG
        (digitised positions in head coordinates defined by the fiducials, as
        for any "EEG with a template MRI" analysis), MEG (with its device ->
        head transform; e.g. :func:`~mne_piunet.sensors.meg_array_info`) or both.
    src : mne.SourceSpaces
        Source space in fsaverage MRI coordinates.
    head : "bem" | "sphere"
        Template 3-layer BEM, or a sphere model fitted to the montage.
    conductivity : tuple of float
        Brain, skull, scalp conductivities, or the brain's alone for a
        single shell (MEG only; BEM only).
    %(verbose)s

    Returns
    -------
    fwd : mne.Forward
        Free-orientation forward; every source of ``src`` is kept.
    """
    info, name = sensor_info_and_name(montage)
    has_meg = bool(len(mne.pick_types(info, meg=True, eeg=False, ref_meg=False)))
    has_eeg = bool(len(mne.pick_types(info, meg=False, eeg=True)))
    if head not in ("bem", "sphere"):
        check_option("head", head, ("bem", "sphere"))
    cond = check_conductivity(conductivity) if head == "bem" else None
    if has_eeg and cond is not None and len(cond) == 1:
        raise ValueError(
            "A single-shell head model cannot compute EEG: pass three conductivities "
            "(brain, skull, scalp), or MEG channels alone"
        )
    trans = template_trans()

    def build():
        bem = _template_head_model(info, src, head, cond, trans)
        logger.info(f"Computing the {name} forward on the template {head} (once; cached)")
        fwd = mne.make_forward_solution(info, trans, src, bem, meg=has_meg, eeg=has_eeg, mindist=0.0)
        return _check_forward(fwd, src)

    return cached(
        "fwd",
        dict(montage=name, head=head, conductivity=cond, src=src_fingerprint(src)),
        "-fwd.fif",
        build,
        lambda f, fwd: mne.write_forward_solution(f, fwd, overwrite=True),
        lambda f: mne.read_forward_solution(f),
    )
