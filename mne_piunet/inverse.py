"""PIUNet as an MNE inverse: Evoked, Epochs and Raw in, volume source estimates out.

Data flow per call: MNE's own ``apply_inverse*`` with eLORETA on the user's
inverse operator -> moment vectors rotated and resampled (sparse, cached per
source space) onto the template grid -> the bundled 3-D U-Net, batched over time
points -> :class:`mne.VolSourceEstimate` / :class:`mne.VolVectorSourceEstimate`
on :attr:`PIUNetInverse.src` (subject ``"fsaverage"``).

Amplitudes: each time point's grid input is divided by its largest moment norm,
the network predicts the source map in those units (it was trained with the
truth divided by the same number), and its output is multiplied back, so the
estimate is in Am like the simulated sources the network learnt from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterable

import mne
import numpy as np
from mne.io.constants import FIFF
from mne.minimum_norm import InverseOperator
from mne.utils import ProgressBar, logger, verbose, warn

from .anatomy import template_subjects_dir
from .grid import DEFAULT_MINDIST_MM, SourceGrid, get_grid, grid_meta, to_template_space
from .simulation import normalised_dense

_TORCH_HINT = (
    "PIUNet needs PyTorch. Install the CPU build with "
    "`pip install torch --index-url https://download.pytorch.org/whl/cpu` "
    "(or follow https://pytorch.org/get-started/locally/ for CUDA)."
)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(_TORCH_HINT) from None
    return torch


# ------------------------------------------------------------------ checks
def _check_inverse(inverse_operator) -> None:
    if not isinstance(inverse_operator, InverseOperator):
        raise TypeError(
            f"inverse_operator must be an mne.minimum_norm.InverseOperator, got "
            f"{type(inverse_operator).__name__}. Make one with "
            "mne.minimum_norm.make_inverse_operator(info, forward, noise_cov)."
        )
    ch_types = inverse_operator["info"].get_channel_types()
    if "eeg" not in ch_types:
        # The network learnt EEG eLORETA resolution kernels; MEG's (blind to
        # radial sources) differ, so a MEG-only map would be silently wrong.
        raise ValueError(
            "The inverse operator has no EEG channels. PIUNet was trained on EEG "
            "eLORETA estimates only; use mne.minimum_norm.apply_inverse for MEG."
        )
    if set(ch_types) - {"eeg"}:
        warn("The inverse operator combines EEG with other sensors; PIUNet was trained on EEG-only eLORETA.")


def _check_args(lambda2, method, pick_ori, label=None, return_residual=False) -> float:
    if method != "eLORETA":
        raise ValueError(
            f"PIUNet refines eLORETA: method must be 'eLORETA', got {method!r}. "
            "Use mne.minimum_norm.apply_inverse for other methods."
        )
    if pick_ori not in (None, "vector"):
        raise ValueError(f'pick_ori must be None (amplitudes) or "vector" (moment vectors), got {pick_ori!r}')
    if label is not None:
        raise ValueError(
            "label is not supported: PIUNet estimates the whole brain at once. "
            "Restrict the output afterwards, e.g. with stc.in_label() or by vertices."
        )
    if return_residual:
        raise ValueError("return_residual is not supported by PIUNet (its estimate has no linear residual).")
    try:
        lambda2 = float(lambda2)
    except (TypeError, ValueError):
        raise TypeError(f"lambda2 must be a positive number, got {lambda2!r}") from None
    if not np.isfinite(lambda2) or lambda2 <= 0:
        raise ValueError(f"lambda2 must be > 0 (e.g. 1 / SNR**2 = 1/9), got {lambda2}")
    return lambda2


def _check_data(inst, inverse_operator, data: np.ndarray | None = None) -> None:
    """Inverse channels present, data non-empty and finite."""
    inv_info = inverse_operator["info"]
    needed = [c for c in inv_info["ch_names"] if c not in inv_info["bads"]]
    have = set(inst.info["ch_names"])
    missing = [c for c in needed if c not in have]
    if missing:
        raise ValueError(
            f"{len(missing)} channel(s) of the inverse operator are missing from the data "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}). Interpolate "
            "them, mark them bad before making the inverse, or make the inverse from this data's info."
        )
    if data is None:
        return
    if data.size == 0:
        raise ValueError(f"The {type(inst).__name__} has no samples: nothing to localise.")
    picks = [inst.info["ch_names"].index(c) for c in needed if c not in inst.info["bads"]]
    bad = ~np.isfinite(data[..., picks, :]) if data.ndim == 3 else ~np.isfinite(data[picks])
    if bad.any():
        raise ValueError(
            f"The data contain {int(bad.sum())} NaN or infinite value(s): fix or drop "
            "those channels/samples (e.g. raw.interpolate_bads(), epochs.drop_bad()) first."
        )


# ------------------------------------------------------------------ class
class PIUNetInverse:
    """Learned refinement of eLORETA on a template volume grid (3D-PIUNet).

    Parameters
    ----------
    weights : path | None
        Weights written by :func:`mne_piunet.network.save_network`; None for
        the pretrained weights bundled with the package.
    device : "auto" | str
        Torch device; "auto" picks CUDA when available, else the CPU.
    batch_size : int
        Time points per network call (memory vs speed).
    %(verbose)s

    Attributes
    ----------
    src : mne.SourceSpaces
        The output volume source space (fsaverage/MNI coordinates).
    subjects_dir : pathlib.Path
        Template subjects folder: ``stc.plot(piu.src, subjects_dir=piu.subjects_dir)``.
    """

    @verbose
    def __init__(self, weights=None, *, device: str = "auto", batch_size: int = 64, verbose=None):
        torch = _import_torch()
        from .network import load_network, resolve_device

        self.device = resolve_device(device)
        self.bundle = load_network(weights, self.device)
        if self.device.type == "cpu":  # ~20 % faster 3-D convolutions on CPU
            self.bundle.network.to(memory_format=torch.channels_last_3d)
        gm = self.bundle.grid
        self.grid: SourceGrid = get_grid(gm["spacing_mm"], gm.get("mindist_mm", DEFAULT_MINDIST_MM))
        here = grid_meta(self.grid)
        if here["vertno_sha256"] != gm["vertno_sha256"] or here["shape"] != gm["shape"]:
            raise RuntimeError(
                "The template grid built here differs from the one the weights were trained on "
                f"({here['shape']} vs {gm['shape']}); clear the cache folder "
                "(mne_piunet.anatomy.cache_dir()) and retry."
            )
        self.batch_size = int(batch_size)
        self._torch = torch
        self._operators: dict[str, tuple] = {}
        logger.info(
            f"PIUNet: {sum(p.numel() for p in self.bundle.network.parameters()):,} parameters on {self.device}"
        )

    def __repr__(self) -> str:
        return f"<PIUNetInverse | grid {self.grid.shape} ({self.grid.n_sources} sources), {self.device}>"

    @property
    def src(self) -> mne.SourceSpaces:
        return self.grid.src

    @property
    def subjects_dir(self):
        return template_subjects_dir()

    # --------------------------------------------------------- core
    def _operator(self, src, mri_head_t, mni_transform, subjects_dir):
        """Cached (grid operator, rotation) for a source space."""
        rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
        key = hashlib.sha256(np.round(rr, 6).tobytes() + repr((src[0]["coord_frame"], src._subject)).encode())
        if mri_head_t is not None:
            key.update(np.round(mri_head_t["trans"], 6).tobytes())
        if mni_transform is not None:
            key.update(
                np.round(np.asarray(getattr(mni_transform, "trans", mni_transform), float), 6).tobytes()
            )
        key = key.hexdigest()
        if key not in self._operators:
            if np.median(np.linalg.norm(rr, axis=1)) > 1.0:
                raise ValueError(
                    "Source positions are more than 1 m from the origin: are they in millimetres? "
                    "MNE source spaces are in metres."
                )
            affine, rot = to_template_space(
                src, mri_head_t=mri_head_t, mni_transform=mni_transform, subjects_dir=subjects_dir
            )
            pos = mne.transforms.apply_trans(affine, rr)
            self._operators[key] = (self.grid.resampler(pos), rot)
        return self._operators[key]

    def _refine_array(self, data, op, rot, normals=None) -> np.ndarray:
        """(n_src, 3, n_times) vectors or (n_src, n_times) + normals -> (n_grid, 3, n_times).

        Rotation and resampling are applied per grid component as sparse
        products, so no (n_src, 3, n_times) temporary is made.
        """
        if data.ndim == 2:
            if normals is None:
                raise ValueError("Scalar estimates need source normals to become vectors")
            nn = normals @ rot.T  # normals in the grid frame
            grid = np.stack([op @ (data * nn[:, [k]]) for k in range(3)], axis=1)
        else:
            moved = [op @ data[:, j, :] for j in range(3)]
            grid = np.stack([sum(rot[k, j] * moved[j] for j in range(3)) for k in range(3)], axis=1)
        return np.moveaxis(self.predict_grid(np.moveaxis(grid, 2, 0)), 0, 2)

    def predict_grid(self, x0: np.ndarray) -> np.ndarray:
        """Run the network on eLORETA maps already on the grid.

        Parameters
        ----------
        x0 : array, shape (n, n_grid_sources, 3)
            eLORETA moment vectors on the grid (template frame), one map per
            time point or sample.

        Returns
        -------
        estimate : array, shape (n, n_grid_sources, 3)
            PIUNet moment vectors in Am: each map is divided by its largest
            moment norm before the network, which predicts the source map's
            shape and its peak relative to the input's; the product is
            multiplied back by the divisor.
        """
        torch = self._torch
        out = np.empty(x0.shape, np.float64)
        with torch.inference_mode():
            for start in range(0, len(x0), self.batch_size):
                dense, _, scale, _ = normalised_dense(self.grid, x0[start : start + self.batch_size])
                x = torch.from_numpy(dense).to(self.device)
                if self.device.type == "cpu":
                    x = x.to(memory_format=torch.channels_last_3d)
                pred = self.bundle.network.estimate(x).cpu().numpy()
                out[start : start + self.batch_size] = self.grid.from_dense(pred) * scale[:, None, None]
        return out

    def _make_stc(self, data, tmin, tstep, pick_ori):
        kwargs = dict(vertices=self.grid.vertices, tmin=tmin, tstep=tstep, subject="fsaverage")
        if pick_ori == "vector":
            return mne.VolVectorSourceEstimate(data, **kwargs)
        return mne.VolSourceEstimate(np.linalg.norm(data, axis=1), **kwargs)

    @verbose
    def refine(
        self,
        stc,
        src: mne.SourceSpaces,
        *,
        pick_ori: str | None = None,
        mri_head_t=None,
        normals: np.ndarray | None = None,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ):
        """Refine an eLORETA estimate you already have.

        Parameters
        ----------
        stc : SourceEstimate | VectorSourceEstimate | VolSourceEstimate | ...
            eLORETA estimate: a vector estimate (free/loose orientation,
            ``pick_ori="vector"``) or signed amplitudes of a fixed-orientation
            inverse (``pick_ori=None``), on ``src``.
        src : mne.SourceSpaces
            The estimate's source space, e.g. ``inverse_operator["src"]``.
        pick_ori : None | "vector"
            Output amplitudes or moment vectors.
        mri_head_t : Transform | None
            Head <-> MRI transform when ``src`` is in head coordinates (an
            inverse operator's ``"mri_head_t"``).
        normals : array, shape (n_sources, 3) | None
            Orientations of a scalar estimate; default: the source space normals.
        mni_transform : Transform | array | None
            Subject MRI (m) -> MNI (m) affine for a subject other than fsaverage.
        subjects_dir : path | None
            Where to find a subject's talairach transform.
        %(verbose)s

        Returns
        -------
        stc : VolSourceEstimate | VolVectorSourceEstimate
            On :attr:`src`, in Am.
        """
        _check_args(1.0, "eLORETA", pick_ori)
        if not isinstance(stc, mne.source_estimate._BaseSourceEstimate):
            raise TypeError(f"stc must be a source estimate, got {type(stc).__name__}")
        _validate_src(src)
        n_src = sum(len(v) for v in stc.vertices)
        if n_src != sum(s["nuse"] for s in src):
            raise ValueError(
                f"stc has {n_src} sources but src has {sum(s['nuse'] for s in src)}: pass the estimate's own source space"
            )
        data = stc.data
        if data.ndim == 2 and normals is None:
            if any(s["type"] != "surf" for s in src):
                raise ValueError(
                    "A scalar volume estimate has lost its orientations: compute eLORETA with "
                    'pick_ori="vector" and pass that estimate.'
                )
            normals = np.concatenate([s["nn"][v] for s, v in zip(src, stc.vertices)])
        if not np.all(np.isfinite(data)):
            raise ValueError("The estimate contains NaN or infinite values")
        op, rot = self._operator(src, mri_head_t, mni_transform, subjects_dir)
        return self._make_stc(self._refine_array(data, op, rot, normals), stc.tmin, stc.tstep, pick_ori)

    def _refine_inverse_stc(self, stc, inv, pick_ori, mni_transform, subjects_dir):
        normals = None if inv["source_ori"] == FIFF.FIFFV_MNE_FREE_ORI else inv["source_nn"]
        op, rot = self._operator(inv["src"], inv["mri_head_t"], mni_transform, subjects_dir)
        return self._make_stc(self._refine_array(stc.data, op, rot, normals), stc.tmin, stc.tstep, pick_ori)

    def _eloreta_ori(self, inverse_operator) -> str | None:
        return "vector" if inverse_operator["source_ori"] == FIFF.FIFFV_MNE_FREE_ORI else None

    def _setup_call(self, inst, inverse_operator, lambda2, method, pick_ori, label, return_residual, data):
        _check_inverse(inverse_operator)
        lambda2 = _check_args(lambda2, method, pick_ori, label, return_residual)
        _check_data(inst, inverse_operator, data)
        _validate_src(inverse_operator["src"])
        return lambda2

    # --------------------------------------------------------- MNE-style API
    @verbose
    def apply(
        self,
        evoked: mne.Evoked,
        inverse_operator: InverseOperator,
        lambda2: float = 1.0 / 9.0,
        method: str = "eLORETA",
        pick_ori: str | None = None,
        prepared: bool = False,
        label=None,
        method_params: dict | None = None,
        return_residual: bool = False,
        use_cps: bool = True,
        *,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ):
        """PIUNet source estimate of an Evoked (mirrors :func:`mne.minimum_norm.apply_inverse`).

        Parameters
        ----------
        evoked : mne.Evoked
            EEG evoked data (average reference projector as for any inverse).
        inverse_operator : InverseOperator
            Any EEG inverse: surface, volume, discrete or mixed source space;
            fixed, loose or free orientation; fsaverage, another subject (mapped
            to MNI by its talairach transform) or a head-only sphere model.
        lambda2 : float
            Regularisation of the eLORETA step.
        method : "eLORETA"
            The only method PIUNet refines.
        pick_ori : None | "vector"
            None: amplitudes (:class:`mne.VolSourceEstimate`); "vector":
            moment vectors (:class:`mne.VolVectorSourceEstimate`).
        prepared, method_params, use_cps
            As for :func:`mne.minimum_norm.apply_inverse`; ``method_params``
            passes eLORETA options.
        label, return_residual
            Not supported (raise): PIUNet estimates the whole brain.
        mni_transform : Transform | array | None
            Subject MRI -> MNI affine (m) for a subject without talairach file.
        subjects_dir : path | None
            Subjects folder holding the inverse's subject (for its talairach transform).
        %(verbose)s

        Returns
        -------
        stc : mne.VolSourceEstimate | mne.VolVectorSourceEstimate
            On :attr:`src` (subject "fsaverage"), in Am.
        """
        _validate_inst(evoked, mne.Evoked, "evoked")
        lambda2 = self._setup_call(
            evoked, inverse_operator, lambda2, method, pick_ori, label, return_residual, evoked.data
        )
        stc = mne.minimum_norm.apply_inverse(
            evoked, inverse_operator, lambda2, "eLORETA", pick_ori=self._eloreta_ori(inverse_operator),
            prepared=prepared, method_params=method_params, use_cps=use_cps, verbose=False,
        )  # fmt: skip
        return self._refine_inverse_stc(stc, inverse_operator, pick_ori, mni_transform, subjects_dir)

    @verbose
    def apply_epochs(
        self,
        epochs: mne.BaseEpochs,
        inverse_operator: InverseOperator,
        lambda2: float = 1.0 / 9.0,
        method: str = "eLORETA",
        label=None,
        nave: int = 1,
        pick_ori: str | None = None,
        return_generator: bool = False,
        prepared: bool = False,
        method_params: dict | None = None,
        use_cps: bool = True,
        *,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ) -> list | Generator:
        """PIUNet estimates of Epochs (mirrors :func:`mne.minimum_norm.apply_inverse_epochs`).

        Epochs are processed one at a time: memory is bounded by one epoch's
        estimate; ``return_generator=True`` streams them.

        Returns
        -------
        stcs : list | generator of VolSourceEstimate | VolVectorSourceEstimate
        """
        _validate_inst(epochs, mne.BaseEpochs, "epochs")
        lambda2 = self._setup_call(epochs, inverse_operator, lambda2, method, pick_ori, label, False, None)
        if not prepared:
            inverse_operator = mne.minimum_norm.prepare_inverse_operator(
                inverse_operator, nave, lambda2, "eLORETA", method_params, use_cps, verbose=False
            )
        gen = self._epochs_gen(
            epochs,
            inverse_operator,
            lambda2,
            nave,
            pick_ori,
            method_params,
            use_cps,
            mni_transform,
            subjects_dir,
        )
        if return_generator:
            return gen
        n = len(epochs.selection) if epochs.preload else None
        return list(ProgressBar(gen, max_value=n, mesg="PIUNet epochs")) if n else list(gen)

    def _epochs_gen(
        self, epochs, inv, lambda2, nave, pick_ori, method_params, use_cps, mni_transform, subjects_dir
    ):
        stcs = mne.minimum_norm.apply_inverse_epochs(
            epochs, inv, lambda2, "eLORETA", nave=nave, pick_ori=self._eloreta_ori(inv),
            return_generator=True, prepared=True, method_params=method_params, use_cps=use_cps, verbose=False,
        )  # fmt: skip
        for stc in stcs:
            if not np.all(np.isfinite(stc.data)):
                raise ValueError(
                    "An epoch contains NaN or infinite values: drop or fix it first (epochs.drop_bad())."
                )
            yield self._refine_inverse_stc(stc, inv, pick_ori, mni_transform, subjects_dir)

    @verbose
    def apply_raw(
        self,
        raw: mne.io.BaseRaw,
        inverse_operator: InverseOperator,
        lambda2: float,
        method: str = "eLORETA",
        label=None,
        start: int | None = None,
        stop: int | None = None,
        nave: int = 1,
        time_func=None,
        pick_ori: str | None = None,
        buffer_size: int | None = None,
        prepared: bool = False,
        method_params: dict | None = None,
        use_cps: bool = True,
        *,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ):
        """PIUNet estimate of Raw data (mirrors :func:`mne.minimum_norm.apply_inverse_raw`).

        The data are processed in chunks of ``buffer_size`` samples (default:
        2 s) with a progress bar; the eLORETA estimate of only one chunk is in
        memory at a time, and the output is float32.

        Returns
        -------
        stc : VolSourceEstimate | VolVectorSourceEstimate
        """
        _validate_inst(raw, mne.io.BaseRaw, "raw")
        if time_func is not None:
            raise ValueError("time_func is not supported: apply it to the returned estimate's data.")
        lambda2 = self._setup_call(raw, inverse_operator, lambda2, method, pick_ori, label, False, None)
        start = 0 if start is None else int(start)
        stop = raw.n_times if stop is None else min(int(stop), raw.n_times)
        if stop <= start:
            raise ValueError(f"Nothing to localise between start={start} and stop={stop} samples.")
        if not prepared:
            inverse_operator = mne.minimum_norm.prepare_inverse_operator(
                inverse_operator, nave, lambda2, "eLORETA", method_params, use_cps, verbose=False
            )
        # 2 s chunks: a loose cortical eLORETA chunk is then ~250 MB
        step = int(buffer_size or round(2 * raw.info["sfreq"]))
        out = np.empty((self.grid.n_sources, 3, stop - start), np.float32)
        for s0 in ProgressBar(range(start, stop, step), mesg="PIUNet raw"):
            s1 = min(s0 + step, stop)
            _check_data(raw, inverse_operator, raw.get_data(start=s0, stop=s1))
            stc = mne.minimum_norm.apply_inverse_raw(
                raw, inverse_operator, lambda2, "eLORETA", start=s0, stop=s1, nave=nave,
                pick_ori=self._eloreta_ori(inverse_operator), prepared=True,
                method_params=method_params, use_cps=use_cps, verbose=False,
            )  # fmt: skip
            out[:, :, s0 - start : s1 - start] = self._refine_inverse_stc(
                stc, inverse_operator, "vector", mni_transform, subjects_dir
            ).data
        tmin = raw.times[start] + raw.first_time if hasattr(raw, "first_time") else raw.times[start]
        tstep = 1.0 / raw.info["sfreq"]
        if pick_ori == "vector":
            return self._make_stc(out, tmin, tstep, "vector")
        amp = np.linalg.norm(out, axis=1)
        del out
        return mne.VolSourceEstimate(amp, self.grid.vertices, tmin, tstep, subject="fsaverage")


def _validate_inst(inst, kind, name):
    if not isinstance(inst, kind):
        raise TypeError(f"{name} must be an instance of {kind.__name__}, got {type(inst).__name__}")


def _validate_src(src) -> None:
    kinds = {s["type"] for s in src}
    if not kinds <= {"surf", "vol", "discrete"}:
        raise ValueError(f"Unsupported source space type(s) {sorted(kinds)}")


# --------------------------------------------------------- functional API
_DEFAULT: dict[tuple, PIUNetInverse] = {}


def _default_inverse(weights, device) -> PIUNetInverse:
    key = (None if weights is None else str(weights), device)
    if key not in _DEFAULT:
        _DEFAULT[key] = PIUNetInverse(weights, device=device)
    return _DEFAULT[key]


@verbose
def apply_piunet(
    evoked,
    inverse_operator,
    lambda2: float = 1.0 / 9.0,
    method: str = "eLORETA",
    pick_ori: str | None = None,
    prepared: bool = False,
    label=None,
    method_params: dict | None = None,
    return_residual: bool = False,
    use_cps: bool = True,
    *,
    weights=None,
    device: str = "auto",
    verbose=None,
):
    """Functional mirror of :func:`mne.minimum_norm.apply_inverse` for PIUNet.

    See :meth:`PIUNetInverse.apply`; ``weights`` and ``device`` select the
    network (the bundled one by default, loaded once per process).
    """
    return _default_inverse(weights, device).apply(
        evoked,
        inverse_operator,
        lambda2,
        method,
        pick_ori,
        prepared,
        label,
        method_params,
        return_residual,
        use_cps,
    )


@verbose
def apply_piunet_epochs(
    epochs,
    inverse_operator,
    lambda2: float = 1.0 / 9.0,
    method: str = "eLORETA",
    label=None,
    nave: int = 1,
    pick_ori: str | None = None,
    return_generator: bool = False,
    prepared: bool = False,
    method_params: dict | None = None,
    use_cps: bool = True,
    *,
    weights=None,
    device: str = "auto",
    verbose=None,
) -> list | Iterable:
    """Functional mirror of :func:`mne.minimum_norm.apply_inverse_epochs` (see :meth:`PIUNetInverse.apply_epochs`)."""
    return _default_inverse(weights, device).apply_epochs(
        epochs,
        inverse_operator,
        lambda2,
        method,
        label,
        nave,
        pick_ori,
        return_generator,
        prepared,
        method_params,
        use_cps,
    )


@verbose
def apply_piunet_raw(
    raw,
    inverse_operator,
    lambda2: float,
    method: str = "eLORETA",
    label=None,
    start: int | None = None,
    stop: int | None = None,
    nave: int = 1,
    time_func=None,
    pick_ori: str | None = None,
    buffer_size: int | None = None,
    prepared: bool = False,
    method_params: dict | None = None,
    use_cps: bool = True,
    *,
    weights=None,
    device: str = "auto",
    verbose=None,
):
    """Functional mirror of :func:`mne.minimum_norm.apply_inverse_raw` (see :meth:`PIUNetInverse.apply_raw`)."""
    return _default_inverse(weights, device).apply_raw(
        raw, inverse_operator, lambda2, method, label, start, stop, nave, time_func, pick_ori,
        buffer_size, prepared, method_params, use_cps,
    )  # fmt: skip
