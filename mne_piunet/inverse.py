"""PIUNet as an MNE inverse: Evoked, Epochs and Raw in, volume source estimates out.

Data flow per call: MNE's own ``apply_inverse*`` with eLORETA on the user's
inverse operator -> moment vectors rotated and resampled (sparse, cached per
source space) onto the template grid -> :func:`mne_piunet.inference.predict_maps`,
each time point with the window of its own recording, epoch or estimate around
it (its temporal context: Raw's chunks overlap by half a window), batched over
time points (and across epochs) ->
:class:`mne.VolSourceEstimate` / :class:`mne.VolVectorSourceEstimate` on
:attr:`PIUNetInverse.src` (subject ``"fsaverage"``), in Am.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import mne
import numpy as np
from mne.minimum_norm import InverseOperator
from mne.utils import ProgressBar, logger, verbose, warn
from scipy import sparse

from ._cache import digest, file_sha256
from .anatomy import template_subjects_dir
from .grid import SourceGrid, grid_from_meta, grid_meta, to_template_space
from .inference import (
    PRECISIONS,
    GridResolution,
    context_margin,
    context_windows,
    dtype_name,
    predict_maps,
    prepare_network,
    resolve_precision,
    step_average,
    step_kernel,
)
from .network import bundled_weights_path, load_network, resolve_device
from .physics import (
    along_orientations,
    check_unweighted,
    explained_variance,
    fit_weights,
    grid_dipole_bases,
    grid_fields,
    grid_to_source,
    predict_whitened,
    source_components,
    to_source_frame,
    whiten,
    whitened_kernel,
    window_subspace_fit,
)
from .utils._checks import (
    as_affine,
    check_inverse_operator,
    check_option,
    check_positive,
    ensure_int,
    has_free_orientation,
    validate_type,
)
from .utils._defaults import DEFAULT_LAMBDA2
from .utils._docs import docdict, fill_doc
from .utils._fingerprint import inverse_fingerprint

#: Source estimate classes :meth:`PIUNetInverse.refine` accepts.
_STC_TYPES = (
    mne.SourceEstimate,
    mne.VectorSourceEstimate,
    mne.VolSourceEstimate,
    mne.VolVectorSourceEstimate,
    mne.MixedSourceEstimate,
    mne.MixedVectorSourceEstimate,
)
#: Time points refined per network pass when Epochs are batched together:
#: enough to fill the batches, small enough that a loose fsaverage5 eLORETA
#: chunk stays ~250 MB.
_EPOCHS_CHUNK = 512
#: Time points whose source components are formed at once (the data fit, the residual): a
#: loose fsaverage5 block is then ~30 MB.
_BLOCK = 64
#: Prepared eLORETA operators a PIUNetInverse keeps: a loose fsaverage5 one is
#: ~200 MB, and a session rarely alternates between more inverses than this.
_PREPARED_SIZE = 2


# ------------------------------------------------------------------ checks
#: Channel types whose eLORETA maps PIUNet was trained on, alone or together.
SUPPORTED_CHANNEL_TYPES = ("eeg", "mag", "grad")


def _check_inverse(inverse_operator) -> None:
    check_inverse_operator(inverse_operator)
    ch_types = set(inverse_operator["info"].get_channel_types())
    other = sorted(ch_types - set(SUPPORTED_CHANNEL_TYPES))
    if other or not ch_types:
        # The network learnt the resolution of scalp EEG and MEG eLORETA;
        # intracranial or other sensors see the brain in other ways.
        raise ValueError(
            f"The inverse operator has {', '.join(other) or 'no'} channels: PIUNet refines inverses "
            "of EEG, MEG (magnetometers, gradiometers or both) and MEG+EEG. Make the inverse from "
            "those channels (e.g. mne.pick_types(info, meg=True, eeg=True)), or use "
            "mne.minimum_norm.apply_inverse."
        )


def _check_method(method) -> None:
    check_option(
        "method",
        method,
        ("eLORETA",),
        fix="PIUNet refines eLORETA: use mne.minimum_norm.apply_inverse for other methods.",
    )


def _check_pick_ori(pick_ori) -> None:
    check_option(
        "pick_ori",
        pick_ori,
        (None, "vector"),
        fix='None gives amplitudes (VolSourceEstimate), "vector" moment vectors (VolVectorSourceEstimate).',
    )


def _check_label(label) -> None:
    if label is not None:
        raise ValueError(
            "label is not supported: PIUNet estimates the whole brain at once. "
            "Restrict the output afterwards, e.g. with stc.in_label() or by vertices."
        )


def _check_lambda2(lambda2) -> float:
    return check_positive(lambda2, "lambda2", "e.g. 1 / SNR**2 = 1/9")


def _check_real(data: np.ndarray, what: str) -> None:
    """Refuse complex values: PIUNet's maps are of real currents, and a cast would drop the imaginary part."""
    if np.iscomplexobj(data):
        raise ValueError(
            f"The {what} hold complex values (e.g. after a Hilbert transform): PIUNet localises real "
            "data and would otherwise drop the imaginary part. Apply it to the real and imaginary parts "
            "separately (inst.copy().apply_function(np.real) and np.imag), or to the analytic amplitude "
            "(raw.apply_hilbert(envelope=True))."
        )


def _check_data(inst, inverse_operator, data: np.ndarray | None = None) -> None:
    """Inverse channels present, data non-empty and finite."""
    needed = _used_channels(inverse_operator)
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
    _check_real(data, f"{type(inst).__name__} data")
    names = inst.info["ch_names"]
    used = _used_channels(inverse_operator)
    _check_finite(data[..., [names.index(c) for c in used], :], used, inst.info["bads"])


def _used_channels(inverse_operator) -> list[str]:
    """The channels the inverse's kernel multiplies, in its order.

    MNE picks these from the data by name, whether or not the data mark them
    bad, so each must hold finite values.
    """
    return list(inverse_operator["noise_cov"].ch_names)


def _check_finite(data: np.ndarray, names: list[str], data_bads: list[str]) -> None:
    """Raise, naming the channels, when ``data`` (channels on axis -2) holds NaN or inf."""
    bad = ~np.isfinite(data)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=tuple(i for i in range(data.ndim) if i != data.ndim - 2)))
    culprits = [names[r] for r in rows]
    listed = ", ".join(culprits[:5]) + (", ..." if len(culprits) > 5 else "")
    hint = ""
    marked = [c for c in culprits if c in data_bads]
    if marked:
        hint = (
            f" {', '.join(marked[:5])} {'is' if len(marked) == 1 else 'are'} marked bad in the data, "
            "but the inverse operator uses them: interpolate them (inst.interpolate_bads()) or make "
            "the inverse from an info where they are bad."
        )
    raise ValueError(
        f"The data contain {int(bad.sum())} NaN or infinite value(s) in channel(s) {listed}: fix or "
        "drop those channels/samples (e.g. raw.interpolate_bads(), epochs.drop_bad()) first." + hint
    )


def _finite_time_func(raw, inverse_operator) -> Callable[[np.ndarray], np.ndarray]:
    """A ``time_func`` for :func:`mne.minimum_norm.apply_inverse_raw`: :func:`_check_data`'s check.

    MNE passes it the chunk it has read (rows: the inverse's noise covariance
    channels) before applying the kernel, so the chunk is checked without
    reading it twice; it is returned unchanged.
    """
    used, bads = _used_channels(inverse_operator), list(raw.info["bads"])

    def check(data: np.ndarray) -> np.ndarray:
        _check_real(data, "Raw data")
        _check_finite(data, used, bads)
        return data

    return check


# ------------------------------------------------------------------ class
@fill_doc
class PIUNetInverse:
    """Learned refinement of eLORETA on a template volume grid (3D-PIUNet).

    Each time point is refined together with its temporal context: the
    eLORETA maps of a window around it, defined in seconds by the weights
    (``piu.network.config.window_s``, 80 ms for the bundled ones), so it
    means the same at any sampling rate. The network learnt maps one step of
    that window apart (10 ms), so data sampled faster are averaged over one
    step around each time point before it sees them
    (:func:`mne_piunet.inference.step_average`): noise faster than the step
    never reaches it, and every time point keeps its own map. Windows and
    averages stay within their recording, epoch or estimate; data shorter
    than the window give an instantaneous context.

    Parameters
    ----------
    %(network_params)s
    %(verbose)s

    Attributes
    ----------
    src : mne.SourceSpaces
        The output volume source space (fsaverage/MNI coordinates).
    subjects_dir : pathlib.Path
        Template subjects folder: ``stc.plot(piu.src, subjects_dir=piu.subjects_dir)``.
    dtype : torch.dtype
        The precision ``precision`` resolved to on this device.
    weights_path : pathlib.Path
        The weights file in use.
    """

    #: Whether the data fit divides each window's sharpness by its signal subspace's
    #: rank (:func:`mne_piunet.physics.window_fit_weights`'s ``rank_scaled``); the
    #: benchmark's A/B sets it to False on an instance.
    _fit_rank_scaled: bool = True

    @verbose
    def __init__(
        self,
        weights=None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        data_fit: bool = True,
        verbose=None,
    ):
        validate_type(weights, ("path-like", None), "weights")
        validate_type(data_fit, bool, "data_fit")
        check_option("precision", precision, PRECISIONS)
        if batch_size is not None:
            batch_size = ensure_int(batch_size, "batch_size", "a positive integer or None", minimum=1)
        self.data_fit = data_fit
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.weights_path = bundled_weights_path() if weights is None else Path(weights)
        self.bundle = load_network(self.weights_path, self.device)
        self.network = prepare_network(self.bundle.network, self.device)
        gm = self.bundle.grid
        self.grid: SourceGrid = grid_from_meta(gm)
        here = grid_meta(self.grid)
        if here["vertno_sha256"] != gm["vertno_sha256"] or here["shape"] != gm["shape"]:
            raise RuntimeError(
                "The template grid built here differs from the one the weights were trained on "
                f"({here['shape']} vs {gm['shape']}); clear the cache folder "
                "($MNE_PIUNET_CACHE, by default ~/.cache/mne-piunet) and retry."
            )
        self._operators: dict[str, tuple] = {}
        # prepared eLORETA operators, most recently used last (see _prepared_eloreta)
        # per inverse operator: prepared for eLORETA, and the data fit's grid dipole bases
        self._prepared = _OperatorCache(_PREPARED_SIZE)
        self._fit_bases = _OperatorCache(_PREPARED_SIZE)
        self._resolutions = _OperatorCache(_PREPARED_SIZE)
        logger.info(
            f"PIUNet: {sum(p.numel() for p in self.network.parameters()):,} parameters on "
            f"{self.device}, {dtype_name(self.dtype)}"
        )

    def __repr__(self) -> str:
        return (
            f"<PIUNetInverse | grid {self.grid.shape} ({self.grid.n_sources} sources), {self.device}, "
            f"{dtype_name(self.dtype)}>"
        )

    @property
    def src(self) -> mne.SourceSpaces:
        """The output volume source space (fsaverage/MNI coordinates)."""
        return self.grid.src

    @property
    def subjects_dir(self):
        """Template subjects folder: ``stc.plot(piu.src, subjects_dir=piu.subjects_dir)``."""
        return template_subjects_dir()

    @verbose
    @fill_doc
    def apply(
        self,
        evoked: mne.Evoked,
        inverse_operator: InverseOperator,
        lambda2: float = DEFAULT_LAMBDA2,
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
    ) -> mne.VolSourceEstimate | mne.VolVectorSourceEstimate:
        """PIUNet source estimate of an Evoked (mirrors :func:`mne.minimum_norm.apply_inverse`).

        Parameters
        ----------
        %(apply_params)s
        %(verbose)s

        Returns
        -------
        %(apply_returns)s
        """
        validate_type(evoked, mne.Evoked, "evoked", "Evoked")
        validate_type(return_residual, bool, "return_residual")
        lambda2 = self._setup_call(
            evoked, inverse_operator, lambda2, method, pick_ori, label, prepared, evoked.data
        )
        self._warn_short(len(evoked.times), evoked.info["sfreq"], "evoked")
        if return_residual:
            check_unweighted(inverse_operator)  # before any work, not after it
        refined, stc, inv, op, rot = self._apply_evoked(
            evoked, inverse_operator, lambda2, prepared, method_params, use_cps, mni_transform, subjects_dir
        )
        out = self._make_stc(refined, stc.tmin, stc.tstep, pick_ori)
        if return_residual:
            return out, _residual(evoked, inverse_operator, inv, refined, op, rot)
        if logger.isEnabledFor(logging.INFO) and not inverse_operator["eigen_leads_weighted"]:
            _residual(evoked, inverse_operator, inv, refined, op, rot)  # logs the explained variance
        return out

    @verbose
    @fill_doc
    def apply_epochs(
        self,
        epochs: mne.BaseEpochs,
        inverse_operator: InverseOperator,
        lambda2: float = DEFAULT_LAMBDA2,
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

        %(apply_epochs_notes)s

        Parameters
        ----------
        %(apply_epochs_params)s
        %(verbose)s

        Returns
        -------
        %(apply_epochs_returns)s
        """
        validate_type(epochs, mne.BaseEpochs, "epochs", "BaseEpochs")
        validate_type(return_generator, bool, "return_generator")
        lambda2 = self._setup_call(epochs, inverse_operator, lambda2, method, pick_ori, label, prepared)
        self._warn_short(len(epochs.times), epochs.info["sfreq"], "epochs")
        if epochs.preload:
            _check_real(epochs.get_data(copy=False), "Epochs data")
        inv = self._eloreta_inverse(inverse_operator, prepared, nave, lambda2, method_params)
        eloreta = mne.minimum_norm.apply_inverse_epochs(
            epochs,
            inv,
            lambda2,
            "eLORETA",
            nave=nave,
            pick_ori=_eloreta_ori(inv),
            return_generator=True,
            prepared=True,
            method_params=method_params,
            use_cps=use_cps,
        )
        geometry = self._inverse_geometry(inverse_operator, inv, mni_transform, subjects_dir)
        gen = self._refine_epochs(eloreta, geometry, pick_ori)
        if return_generator:
            return gen
        n = len(epochs.selection) if epochs.preload else None
        return list(ProgressBar(gen, max_value=n, mesg="PIUNet epochs")) if n else list(gen)

    @verbose
    @fill_doc
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
        return_generator: bool = False,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ):
        """PIUNet estimate of Raw data (mirrors :func:`mne.minimum_norm.apply_inverse_raw`).

        %(apply_raw_notes)s

        Parameters
        ----------
        %(apply_raw_params)s
        %(verbose)s

        Returns
        -------
        %(apply_raw_returns)s
        """
        validate_type(raw, mne.io.BaseRaw, "raw", "BaseRaw")
        if time_func is not None:
            raise ValueError("time_func is not supported: apply it to the returned estimate's data.")
        validate_type(return_generator, bool, "return_generator")
        lambda2 = self._setup_call(raw, inverse_operator, lambda2, method, pick_ori, label, prepared)
        span = _raw_span(raw, start, stop, buffer_size)
        self._warn_short(span[1] - span[0], raw.info["sfreq"], "Raw span")
        inv = self._eloreta_inverse(inverse_operator, prepared, nave, lambda2, method_params)
        geometry = self._inverse_geometry(inverse_operator, inv, mni_transform, subjects_dir)
        chunks = self._raw_chunks(raw, inv, lambda2, span, nave, method_params, use_cps, geometry)
        if return_generator:
            tstep = 1.0 / raw.info["sfreq"]
            return (self._make_stc(data, raw.times[s0], tstep, pick_ori) for s0, data in chunks)
        return self._raw_estimate(raw, chunks, span, pick_ori)

    @verbose
    @fill_doc
    def refine(
        self,
        stc,
        src,
        *,
        lambda2: float | None = None,
        method_params: dict | None = None,
        pick_ori: str | None = None,
        mri_head_t=None,
        normals: np.ndarray | None = None,
        mni_transform=None,
        subjects_dir=None,
        verbose=None,
    ):
        """Refine an eLORETA estimate you already have.

        Each time point is refined with its temporal context from the
        estimate's own time course (at ``1 / stc.tstep`` Hz, averaged over
        the network's step as :class:`PIUNetInverse` says); a single time
        point, or an estimate shorter than the window, gets an instantaneous
        context. With its inverse operator and the ``lambda2`` it was made
        with, the estimate is refined as :meth:`apply` refines it; weights
        with a residual pass need that ``lambda2`` (an estimate does not
        record it) and run their first pass alone, with a warning, without it.

        Parameters
        ----------
        stc : SourceEstimate | VectorSourceEstimate | VolSourceEstimate | ...
            eLORETA estimate: moment vectors (free or loose orientation,
            ``pick_ori="vector"``) or signed amplitudes of a fixed-orientation
            inverse (``pick_ori=None``).
        src : mne.SourceSpaces | mne.minimum_norm.InverseOperator
            The estimate's source space, or the inverse that made the estimate:
            then its ``mri_head_t`` and, for a fixed-orientation inverse, its
            source orientations (``source_nn``) are used.
        lambda2 : float | None
            The regularisation the estimate was made with (``1 / 9`` is
            MNE's default); with an inverse operator, the residual pass's
            eLORETA kernel is prepared with it (cached, as :meth:`apply`
            caches it). None: weights with a residual pass run their first
            pass alone. Unused with a source space alone (no gain: a warning
            for weights with a residual pass).
        %(method_params)s
            The estimate's, for the residual pass's kernel, as ``lambda2``.
        %(pick_ori)s
        mri_head_t : Transform | None
            Head <-> MRI transform when ``src`` is in head coordinates (an
            inverse operator's ``"mri_head_t"``).
        normals : array, shape (n_sources, 3) | None
            Orientations of a scalar estimate; default: the inverse's
            ``source_nn``, or a surface source space's normals.
        %(template_params)s
        %(verbose)s

        Returns
        -------
        stc : VolSourceEstimate | VolVectorSourceEstimate
            On :attr:`src`, in Am.
        """
        validate_type(
            stc, _STC_TYPES, "stc", fix="Make it with mne.minimum_norm.apply_inverse(..., 'eLORETA')."
        )
        validate_type(
            src,
            (mne.SourceSpaces, InverseOperator),
            "src",
            fix="Pass the estimate's source space (inverse_operator['src']) or the inverse that made it.",
        )
        _check_pick_ori(pick_ori)
        lambda2 = None if lambda2 is None else _check_lambda2(lambda2)
        _check_real(stc.data, "estimate's data")
        inv = src if isinstance(src, InverseOperator) else None
        if inv is None and lambda2 is not None and self.network.config.residual_pass:
            warn(
                "lambda2 is unused: the residual pass needs the inverse operator's gain, which a source space "
                "does not hold, so only the first pass runs. Pass refine(stc, inverse_operator, lambda2=...)."
            )
        if inv is not None:
            self._check_tuned_on(inv)
            src, mri_head_t, normals = _unpack_inverse(inv, stc, mri_head_t, normals)
        _validate_src(src)
        normals = _check_estimate(stc, src, normals)
        op, rot = self._operator(src, mri_head_t, mni_transform, subjects_dir)
        sfreq = 1.0 / stc.tstep if stc.tstep > 0 else 0.0
        self._warn_short(stc.shape[-1], sfreq, "estimate")
        windows = self.windows(stc.shape[-1], sfreq)
        fit = resolution = None
        if inv is not None:
            fields = _lazy_grid_fields(inv, op, rot, 1.0)  # the operator is prepared at nave=1 below
            fit = self._data_fit(inv, op, fields)
            resolution = self._refine_resolution(inv, lambda2, method_params, op, rot, normals, fields)
        data = step_average(stc.data, sfreq, self.network.config)
        refined = self._refine_array(data, op, rot, normals, fit, resolution, windows)
        return self._make_stc(refined, stc.tmin, stc.tstep, pick_ori)

    @verbose
    @fill_doc
    def fine_tune(
        self,
        inverse_operator: mne.minimum_norm.InverseOperator,
        forward: mne.Forward,
        *,
        out: str | Path,
        minutes: float = 30.0,
        verbose=None,
        **kwargs,
    ) -> PIUNetInverse:
        """Adapt these weights to your own forward model (see :func:`mne_piunet.train.finetune.fine_tune`).

        Parameters
        ----------
        inverse_operator : mne.minimum_norm.InverseOperator | path-like
            Your inverse operator.
        forward : mne.Forward | path-like
            The forward it was made from.
        out : path-like
            The tuned weights' ``.pt`` file.
        minutes : float
            Wall-clock budget.
        %(verbose)s
        **kwargs
            Further keywords of :func:`mne_piunet.train.finetune.fine_tune`
            (``lambda2``, ``mni_transform``, ``subjects_dir``, ``run_dir``,
            ``overwrite``, ``seed``, ``threads``).

        Returns
        -------
        tuned : PIUNetInverse
            A model with the tuned weights, on this one's device and precision;
            this model itself when the fine-tune's acceptance check refused the
            tuned weights (a warning lists its groups).
        """
        from .train.finetune import fine_tune

        written = fine_tune(
            inverse_operator,
            forward,
            out=out,
            minutes=minutes,
            weights=self.weights_path,
            device=str(self.device),
            **kwargs,
        )
        if written is None:
            return self
        return PIUNetInverse(
            written,
            device=str(self.device),
            batch_size=self.batch_size,
            precision=dtype_name(self.dtype),
            data_fit=self.data_fit,
        )

    # --------------------------------------------------------- for developers and the evaluation
    def predict_grid(
        self,
        x0: np.ndarray,
        windows: np.ndarray | None = None,
        fit: np.ndarray | None = None,
        resolution: GridResolution | None = None,
    ) -> np.ndarray:
        """Run the network on eLORETA maps already on the grid.

        Parameters
        ----------
        x0 : array, shape (n_maps, n_grid_sources, 3)
            eLORETA moment vectors on the grid (template frame): the time
            points of one recording, or independent samples. Maps of data
            sampled faster than the network's step are taken as given:
            average them first (:func:`mne_piunet.inference.step_average`)
            to see what :meth:`apply` sees.
        windows : array of int, shape (n, window_points) | None
            Each estimate's temporal context as rows of ``x0``
            (:func:`mne_piunet.inference.context_windows`); None: each map
            alone, with an instantaneous context.
        fit : array, shape (n, n_grid_sources) | None
            Each estimate's MUSIC scan, for a ``"power-music"`` context
            (:func:`mne_piunet.inference.network_inputs`).
        resolution : GridResolution | None
            The inverse's resolution on the grid, for a network with a
            residual pass (:func:`mne_piunet.inference.residual_inputs`).

        Returns
        -------
        estimate : array, shape (n, n_grid_sources, 3)
            PIUNet moment vectors in Am (:func:`mne_piunet.inference.predict_maps`).
        """
        return predict_maps(
            self.network,
            self.grid,
            x0,
            windows,
            dtype=self.dtype,
            batch_size=self.batch_size,
            fit=fit,
            resolution=resolution,
        )

    def windows(self, n_times: int, sfreq: float, rows: np.ndarray | None = None) -> np.ndarray:
        """The temporal context of each time point of data at ``sfreq``.

        Parameters
        ----------
        n_times : int
            Time points of the data.
        sfreq : float
            Their sampling rate (Hz).
        rows : array of int | None
            The time points to give windows to (default: all).

        Returns
        -------
        windows : array of int, shape (len(rows), window_points)
            Sample indices (:func:`mne_piunet.inference.context_windows`).
        """
        n_times = ensure_int(n_times, "n_times", "a number of time points")
        validate_type(sfreq, "numeric", "sfreq", "int or float")
        return context_windows(n_times, sfreq, self.network.config, rows)

    # --------------------------------------------------------- the work
    def _apply_evoked(
        self,
        evoked,
        inverse_operator,
        lambda2,
        prepared,
        method_params,
        use_cps,
        mni_transform,
        subjects_dir,
        rows=None,
    ) -> tuple:
        """:meth:`apply`'s work after its checks: (refined, eLORETA estimate, prepared inverse, op, rot).

        The eLORETA estimate is of the whole Evoked, so each window keeps its
        context; ``rows`` (array of int | None) are the time points refined
        (default: all), so ``refined`` (n_grid, 3, len(rows)) is those
        columns of :meth:`apply`'s vectors (to round-off: the network's
        batches differ). The prepared inverse, ``op`` and ``rot`` are what
        :func:`_residual` needs.
        """
        inv = self._eloreta_inverse(inverse_operator, prepared, evoked.nave, lambda2, method_params)
        stc = mne.minimum_norm.apply_inverse(
            evoked,
            inv,
            lambda2,
            "eLORETA",
            pick_ori=_eloreta_ori(inv),
            prepared=True,
            method_params=method_params,
            use_cps=use_cps,
            verbose=False,
        )
        geometry = self._inverse_geometry(inverse_operator, inv, mni_transform, subjects_dir)
        sfreq = evoked.info["sfreq"]
        windows = self.windows(len(evoked.times), sfreq, rows)
        refined = self._refine_array(step_average(stc.data, sfreq, self.network.config), *geometry, windows)
        return refined, stc, inv, *geometry[:2]

    def _refine_array(self, data, op, rot, normals, fit, resolution, windows: np.ndarray) -> np.ndarray:
        """(n_src, 3, n_times) vectors or (n_src, n_times) + normals -> (n_grid, 3, n_out).

        ``windows`` (n_out, window_points) are the time points of ``data`` each
        output refines (its centre column) and takes its context from. The
        network runs on all time points in batches. With ``fit``
        (:meth:`_data_fit`), each window's data are scanned
        (:func:`_window_scan`): a ``"power-music"`` network sees the scan, and
        the data-fit step weights each map towards the grid dipoles that best
        explain its window's data. With ``resolution``
        (:meth:`_resolution`), a network with a residual pass runs it.
        """
        grid = _onto_grid(data.astype(np.float32, copy=False), op, rot, normals)  # op and rot are float32
        scan = None if fit is None else _window_scan(fit, data, windows)
        music = None if scan is None or not self.network.config.scans_data else scan[0]
        # (n_grid, n_times, 3) -> (n_times, n_grid, 3), the maps predict_maps takes
        refined = self.predict_grid(np.moveaxis(grid, 1, 0), windows, fit=music, resolution=resolution)
        if scan is not None and self.data_fit:
            weights = fit_weights(*scan, self.grid, rank_scaled=self._fit_rank_scaled)
            refined *= weights[..., None].astype(refined.dtype)
        return np.moveaxis(refined, 0, 2)

    def _make_stc(self, data, tmin, tstep, pick_ori):
        """Grid vectors (n_grid, 3, n_times) as an estimate on :attr:`src`: the vectors or their norms."""
        kwargs = dict(vertices=self.grid.vertices, tmin=tmin, tstep=tstep, subject="fsaverage")
        if pick_ori == "vector":
            return mne.VolVectorSourceEstimate(data, **kwargs)
        return mne.VolSourceEstimate(_amplitudes(data), **kwargs)

    def _refine_epochs(self, eloreta: Iterator, geometry: tuple, pick_ori) -> Generator:
        """Refine eLORETA epochs in chunks of about :data:`_EPOCHS_CHUNK` time points."""
        pending: list = []
        for stc in eloreta:
            _check_real(stc.data, "Epochs data")
            if not np.all(np.isfinite(stc.data)):
                raise ValueError(
                    "An epoch contains NaN or infinite values: drop or fix it first (epochs.drop_bad())."
                )
            pending.append(stc)
            if sum(s.shape[-1] for s in pending) >= _EPOCHS_CHUNK:
                yield from self._refine_stcs(pending, geometry, pick_ori)
                pending = []
        yield from self._refine_stcs(pending, geometry, pick_ori)

    def _refine_stcs(self, stcs: list, geometry: tuple, pick_ori) -> Iterator:
        """Refine epochs together; each epoch's windows stay within the epoch."""
        if not stcs:
            return
        bounds = np.cumsum([0] + [s.shape[-1] for s in stcs])
        windows = np.concatenate(
            [t0 + self.windows(s.shape[-1], 1.0 / s.tstep) for s, t0 in zip(stcs, bounds[:-1])]
        )
        # each epoch averaged over the network's step alone, never across its neighbour's edge
        data = [step_average(s.data, 1.0 / s.tstep, self.network.config) for s in stcs]
        refined = self._refine_array(np.concatenate(data, axis=-1), *geometry, windows)
        for stc, t0, t1 in zip(stcs, bounds[:-1], bounds[1:]):
            yield self._make_stc(refined[..., t0:t1], stc.tmin, stc.tstep, pick_ori)

    def _raw_chunks(self, raw, inv, lambda2, span, nave, method_params, use_cps, geometry) -> Iterator:
        """(first sample, refined float32 vectors) per chunk of ``span = (start, stop, step)``.

        Each chunk's eLORETA estimate reaches :func:`~mne_piunet.inference.context_margin`
        samples, and half a :func:`~mne_piunet.inference.step_kernel` more,
        into its neighbours (within ``start``-``stop``: the span asked for is
        localised as if cropped), so its windows and their step averages are
        those of one pass over the span: the estimate does not change at chunk
        boundaries.
        """
        start, stop, step = span
        sfreq = raw.info["sfreq"]
        config = self.network.config
        margin = context_margin(sfreq, config) + len(step_kernel(sfreq, config)) // 2
        check = _finite_time_func(raw, inv)  # each chunk is read once, by MNE, and checked there
        for s0 in range(start, stop, step):
            s1 = min(s0 + step, stop)
            r0, r1 = max(start, s0 - margin), min(stop, s1 + margin)
            stc = mne.minimum_norm.apply_inverse_raw(
                raw,
                inv,
                lambda2,
                "eLORETA",
                start=r0,
                stop=r1,
                nave=nave,
                time_func=check,
                pick_ori=_eloreta_ori(inv),
                prepared=True,
                method_params=method_params,
                use_cps=use_cps,
            )
            windows = start + self.windows(stop - start, sfreq, np.arange(s0 - start, s1 - start)) - r0
            yield s0, self._refine_array(step_average(stc.data, sfreq, config), *geometry, windows)

    def _raw_estimate(self, raw, chunks: Iterator, span: tuple, pick_ori):
        """One float32 estimate of ``span = (start, stop, step)`` from its refined chunks."""
        start, stop, step = span
        shape = (self.grid.n_sources, 3) if pick_ori == "vector" else (self.grid.n_sources,)
        out = np.empty(shape + (stop - start,), np.float32)
        written = 0
        for s0, data in ProgressBar(chunks, max_value=len(range(start, stop, step)), mesg="PIUNet raw"):
            if s0 - start != written:
                raise RuntimeError(f"apply_raw's chunks are out of order at sample {s0}")
            out[..., written : written + data.shape[-1]] = data if pick_ori == "vector" else _amplitudes(data)
            written += data.shape[-1]
        if written != stop - start:  # never hand out memory that was not written
            raise RuntimeError(f"apply_raw refined {written} of {stop - start} samples")
        cls = mne.VolVectorSourceEstimate if pick_ori == "vector" else mne.VolSourceEstimate
        return cls(out, self.grid.vertices, raw.times[start], 1.0 / raw.info["sfreq"], subject="fsaverage")

    # --------------------------------------------------------- internals
    def _operator(self, src, mri_head_t, mni_transform, subjects_dir) -> tuple:
        """Cached (grid operator, rotation) for a source space and its transforms."""
        rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
        subject = src[0].get("subject_his_id")
        # the talairach transform read from subjects_dir is part of the mapping too
        ident = repr((src[0]["coord_frame"], subject, None if subjects_dir is None else str(subjects_dir)))
        transforms = [np.round(as_affine(t), 6) for t in (mri_head_t, mni_transform) if t is not None]
        key = digest(np.round(rr, 6), ident, *transforms)
        if key not in self._operators:
            affine, rot = to_template_space(
                src, mri_head_t=mri_head_t, mni_transform=mni_transform, subjects_dir=subjects_dir
            )
            pos = mne.transforms.apply_trans(affine, rr)
            # float32: the maps go to the network in float32 anyway, and half the bytes
            # make the per-time-point sparse products and reductions faster
            self._operators[key] = (self.grid.resampler(pos).astype(np.float32), rot.astype(np.float32))
        return self._operators[key]

    def _prepared_eloreta(self, inverse_operator, nave, lambda2, method_params):
        """The inverse prepared for eLORETA, from a cache keyed by the operator, ``nave``, ``lambda2`` and options.

        MNE's eLORETA weight fit takes up to a minute on a loose 20,484-source
        inverse, and it depends only on these, so repeated calls with the same
        inverse skip it. The caller's operator is never written to: MNE's
        ``prepare_inverse_operator`` briefly sets its ``src`` to None while it
        copies, so it is given a shallow copy, which makes calls from several
        threads on one operator safe (a lock keeps one preparation at a time).
        The key holds the operator's identity (a weak reference, so a new object
        at a recycled address is not mistaken for it) and a digest of its
        arrays, so an operator changed in place is prepared anew.
        """
        return self._prepared.get(
            inverse_operator,
            (float(nave), float(lambda2), repr(sorted((method_params or {}).items()))),
            lambda: mne.minimum_norm.prepare_inverse_operator(
                copy.copy(inverse_operator), nave, lambda2, "eLORETA", method_params, copy="non-src"
            ),
        )

    def _eloreta_inverse(self, inverse_operator, prepared, nave, lambda2, method_params):
        """The operator to hand MNE with ``prepared=True``: the caller's if prepared, else a cached one."""
        if prepared:
            return inverse_operator
        return self._prepared_eloreta(inverse_operator, nave, lambda2, method_params)

    def _warn_short(self, n_times: int, sfreq: float, what: str) -> None:
        """Warn when data are too short for the temporal context, naming the window and the fix."""
        config = self.network.config
        if config.context == "none" or (sfreq > 0 and n_times - 1 >= 2 * context_margin(sfreq, config)):
            return
        warn(
            f"The {what} {'has' if n_times == 1 else 'have'} {n_times} time point(s), shorter than "
            f"PIUNet's {config.window_s * 1e3:.0f} ms temporal context, so each map is refined without "
            "one (an instantaneous context, as for a single map). To keep the context, apply PIUNet to a "
            "longer span and crop the estimate afterwards (stc.crop(tmin, tmax))."
        )

    def _inverse_geometry(self, inv, prepared_inv, mni_transform, subjects_dir) -> tuple:
        """(operator, rotation, normals or None, data fit or None, resolution or None) of an inverse operator.

        ``prepared_inv`` is ``inv`` prepared for eLORETA at the data's ``nave``
        and ``lambda2``: its kernel is the resolution's (:meth:`_resolution`).
        """
        normals = None if has_free_orientation(inv) else inv["source_nn"]
        op, rot = self._operator(inv["src"], inv["mri_head_t"], mni_transform, subjects_dir)
        fields = _lazy_grid_fields(inv, op, rot, None if prepared_inv is None else prepared_inv["nave"])
        return (
            op,
            rot,
            normals,
            self._data_fit(inv, op, fields),
            self._resolution(inv, prepared_inv, op, rot, normals, fields),
        )

    def _resolution(self, inv, prepared_inv, op, rot, normals, fields) -> GridResolution | None:
        """eLORETA's resolution on the grid for a residual pass, cached per prepared operator; or None.

        None when the network has no residual pass, or when the operator's
        gain cannot be rebuilt (prepared for eLORETA by the caller: a warning
        says so, and the first pass alone runs). The key holds the prepared
        operator's regularisation too, which an operator re-prepared in place
        at another ``lambda2`` changes. ``fields``: :func:`_lazy_grid_fields`
        at the prepared operator's ``nave``.
        """
        if not self._runs_residual_pass(inv):
            return None

        def build():
            kernel = to_source_frame(whitened_kernel(prepared_inv), prepared_inv["source_nn"], inv["nsource"])
            kernel_grid = _onto_grid(kernel.astype(np.float32), op, rot, normals)  # (n_grid, n_white, 3)
            return GridResolution(np.moveaxis(kernel_grid, 1, 0), fields()), op

        # the value holds the grid operator itself, so its id in the key cannot be another's
        reginv = hashlib.sha256(np.ascontiguousarray(prepared_inv["reginv"]).tobytes()).hexdigest()
        return self._resolutions.get(prepared_inv, (id(op), reginv), build)[0]

    def _runs_residual_pass(self, inv) -> bool:
        """Whether the network has a residual pass that ``inv`` can run: its gain must be rebuildable (else a warning)."""
        if not self.network.config.residual_pass:
            return False
        if inv["eigen_leads_weighted"]:
            warn(
                "The inverse operator is prepared for eLORETA, so its gain cannot be rebuilt and the network's "
                "residual pass is skipped: the map is its first pass alone. Pass the operator as made or read "
                "(prepared=False); PIUNet caches the prepared one itself."
            )
            return False
        return True

    def _refine_resolution(
        self, inv, lambda2, method_params, op, rot, normals, fields
    ) -> GridResolution | None:
        """:meth:`refine`'s resolution for a residual pass: prepared at ``lambda2``, or None with a warning.

        The resolution's scale does not count (the residual's map is fitted
        to the input by least squares), so the operator is prepared at
        ``nave=1`` whatever the estimate's data were averaged over.
        """
        if not self._runs_residual_pass(inv):
            return None
        if lambda2 is None:
            warn(
                "These weights have a residual pass, which needs the lambda2 the estimate was made with: "
                "without it only their first pass runs, and the map differs from apply's. Pass "
                "refine(stc, inverse_operator, lambda2=...) (MNE's default is 1 / 9)."
            )
            return None
        prepared = self._prepared_eloreta(inv, 1.0, lambda2, method_params)
        return self._resolution(inv, prepared, op, rot, normals, fields)

    def _data_fit(self, inv, op, fields) -> tuple | None:
        """(inverse, grid dipole bases) to scan the data with, cached per operator and source space; or None.

        The data-fit step and a ``"power-music"`` network scan the data. None
        when neither does, or when the operator's gain cannot be rebuilt
        (prepared for eLORETA: a warning says so). ``fields``:
        :func:`_lazy_grid_fields` (at any ``nave``: the bases do not depend on it).
        """
        if not (self.data_fit or self.network.config.scans_data):
            return None
        if inv["eigen_leads_weighted"]:
            warn(
                "The inverse operator is prepared for eLORETA, so its gain cannot be rebuilt and the data-fit "
                "step is skipped: the map is the network's alone. Pass the operator as made or read "
                "(prepared=False); PIUNet caches the prepared one itself."
            )
            return None
        # the value holds the grid operator itself, so its id in the key cannot be another's
        bases, _ = self._fit_bases.get(inv, (id(op),), lambda: (grid_dipole_bases(fields()), op))
        return inv, bases

    def _check_tuned_on(self, inv) -> None:
        """Warn when weights fine-tuned on one inverse are applied with another."""
        tuned_on = self.bundle.meta.get("tuned_on")
        if tuned_on is None:  # the bundled weights: no cost
            return
        digest = inverse_fingerprint(inv)
        if digest != tuned_on["inverse_sha256"]:
            warn(
                f"The weights {self.weights_path.name} were fine-tuned on inverse "
                f"{tuned_on['inverse_sha256'][:12]} ({tuned_on['name']}), but this inverse is "
                f"{digest[:12]}: they may do worse than on their own inverse. Use them with the "
                "inverse they were tuned on, or the bundled weights (PIUNetInverse())."
            )

    def _setup_call(self, inst, inverse_operator, lambda2, method, pick_ori, label, prepared, data=None):
        """The checks every ``apply*`` makes, ``data`` (in memory) included; ``lambda2`` as a float."""
        _check_inverse(inverse_operator)
        self._check_tuned_on(inverse_operator)
        _check_method(method)
        _check_pick_ori(pick_ori)
        _check_label(label)
        lambda2 = _check_lambda2(lambda2)
        validate_type(prepared, bool, "prepared")
        _check_data(inst, inverse_operator, data)
        _validate_src(inverse_operator["src"])
        return lambda2


# ------------------------------------------------------------------ the work's helpers
def _lazy_grid_fields(inv, op, rot, nave: float | None) -> Callable[[], np.ndarray]:
    """:func:`~mne_piunet.physics.grid_fields` of an inverse on the grid, computed on the first call only.

    The data fit's bases and the residual pass's resolution both need the
    grid dipoles' fields, each only when its cache misses; one inverse's
    geometry computes them at most once for both.
    """
    return functools.cache(lambda: grid_fields(inv, grid_to_source(op), rot.astype(np.float64), nave=nave))


def _onto_grid(data: np.ndarray, op, rot: np.ndarray, normals) -> np.ndarray:
    """(n_src, 3, n_cols) moment vectors, or (n_src, n_cols) amplitudes along ``normals``, -> (n_grid, n_cols, 3).

    Rotation and resampling are sparse products per grid component, so no
    (n_src, 3, n_cols) temporary is made.
    """
    if data.ndim == 2:
        nn = (normals @ rot.T).astype(data.dtype)  # normals in the grid frame
        # fold each normal component into the sparse operator's columns
        # (O(nnz)) rather than scaling a dense (n_src, n_cols) copy per component
        return np.stack([(op @ sparse.diags(nn[:, k])) @ data for k in range(3)], axis=-1)
    moved = [op @ data[:, j, :] for j in range(3)]
    return np.stack([sum(rot[k, j] * moved[j] for j in range(3)) for k in range(3)], axis=-1)


def _window_scan(fit: tuple, data: np.ndarray, windows: np.ndarray) -> tuple:
    """Each output map's MUSIC scan and subspace rank, from what the eLORETA estimate predicts.

    The eLORETA estimate goes through the operator's own gain back to
    whitened data (:func:`mne_piunet.physics.predict_whitened`): that is all
    the data the network's input holds, so ``refine`` of an estimate and
    ``apply`` of its data weigh alike. Each map's scan is of the signal
    subspace of its window (:func:`mne_piunet.physics.window_subspace_fit`):
    the data-fit weights come from it, and a ``"power-music"`` network sees it.
    """
    inv, bases = fit
    # vectors in the source frame, or amplitudes along fixed orientations
    data_w = _predict_in_blocks(
        inv, data.shape[-1], lambda t: along_orientations(data[..., t], inv["source_nn"])
    )
    return window_subspace_fit(bases, data_w, windows)


def _predict_in_blocks(inverse_operator, n_times: int, components: Callable, nave=None) -> np.ndarray:
    """Whitened data predicted over ``n_times``, :data:`_BLOCK` time points at a time.

    ``components(slice)`` gives the source components of those time points
    only: those of a 20,484-source inverse over a whole recording are large.
    """
    blocks = [slice(t, min(t + _BLOCK, n_times)) for t in range(0, n_times, _BLOCK)]
    return np.concatenate(
        [predict_whitened(inverse_operator, components(b), nave=nave) for b in blocks], axis=1
    )


def _residual(evoked, inverse_operator, prepared, refined, op, rot) -> mne.Evoked:
    """The Evoked minus what ``refined`` (grid vectors) predicts through the operator's gain; logs the fit.

    The estimate goes back onto the inverse's sources with the adjoint of its
    resampling (:func:`mne_piunet.physics.grid_to_source`), through the gain
    rebuilt from the operator's SVD, and back to sensor units with the
    prepared operator's colourer, as MNE computes its own residual.
    """
    back, nn = grid_to_source(op), inverse_operator["source_nn"]
    predicted_w = _predict_in_blocks(
        inverse_operator,
        refined.shape[-1],
        lambda t: source_components(refined[..., t], back, rot, nn),
        nave=prepared["nave"],
    )
    sel = [evoked.ch_names.index(name) for name in _used_channels(prepared)]
    data_w = whiten(prepared, evoked.data[sel])
    logger.info(
        f"    PIUNet's estimate explains {explained_variance(data_w, predicted_w):5.1f}% of the whitened data's variance"
    )
    residual = evoked.copy()
    residual.data[sel] -= prepared["colorer"] @ predicted_w
    return residual


def _raw_span(raw, start, stop, buffer_size) -> tuple[int, int, int]:
    """apply_raw's ``(start, stop, step)`` in samples, ``stop`` clipped to the data.

    Negative or out-of-range bounds raise: MNE's ``apply_inverse_raw`` does
    not count them from the end either (it fails or returns the wrong span).
    """
    bounds = {}
    for name, value, default in (("start", start, 0), ("stop", stop, raw.n_times)):
        value = default if value is None else ensure_int(value, name, "an integer sample index or None")
        if value < 0:
            raise ValueError(
                f"{name}={value} is negative: pass sample indices from 0 to raw.n_times={raw.n_times}, "
                f"e.g. {name}=raw.n_times - {-value} or raw.time_as_index(seconds)[0]."
            )
        bounds[name] = value
    start, stop = bounds["start"], min(bounds["stop"], raw.n_times)
    if start >= raw.n_times:
        raise ValueError(f"start={start} is past the end of the data ({raw.n_times} samples).")
    if stop <= start:
        raise ValueError(f"Nothing to localise between start={start} and stop={stop} samples.")
    if buffer_size is not None:
        buffer_size = ensure_int(
            buffer_size, "buffer_size", "a positive integer (samples) or None", minimum=1
        )
    # 2 s chunks by default: a loose fsaverage5 eLORETA chunk at 250 Hz is then ~250 MB
    return start, stop, buffer_size or max(1, round(2 * raw.info["sfreq"]))


def _amplitudes(vectors: np.ndarray) -> np.ndarray:
    """Moment norms of (n_src, 3, n_times) vectors, float32, squared in float64.

    float32 squares underflow below about 1e-19 Am (data near 1e-20 V), which
    would turn a valid map into zeros.
    """
    return np.sqrt(np.einsum("ijk,ijk->ik", vectors, vectors, dtype=np.float64)).astype(np.float32)


class _OperatorCache:
    """Values computed from inverse operators, a few kept, least recently used first, safe across threads.

    A value is keyed by the operator's identity, a digest of its arrays (an
    operator changed in place is computed anew) and what else it depends on.
    Each entry holds a weak reference to its operator: a new object at a
    recycled address is never mistaken for it, and entries of operators that
    no longer exist are dropped. One value is built at a time (a lock).
    """

    def __init__(self, size: int):
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, inverse_operator, depends_on: tuple, build: Callable):
        """The value for ``inverse_operator`` and ``depends_on``, ``build()`` when it is not cached."""
        key = (id(inverse_operator), _operator_digest(inverse_operator), *depends_on)
        with self._lock:
            for dead in [k for k, entry in self._entries.items() if entry[0]() is None]:
                del self._entries[dead]
            entry = self._entries.get(key)
            if entry is None or entry[0]() is not inverse_operator:
                entry = self._entries[key] = (weakref.ref(inverse_operator), build())
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry[1]


def _operator_digest(inverse_operator) -> str:
    """sha256 of the arrays eLORETA's preparation reads from an operator (eigen leads subsampled).

    Cheap next to the preparation (a few ms on a 20,484-source inverse): a
    change in place to any of them gives another digest.
    """
    inv = inverse_operator
    leads = np.asarray(inv["eigen_leads"]["data"])
    step = max(1, len(leads) // 1024)
    return digest(
        inv["sing"],
        inv["eigen_fields"]["data"],
        inv["source_cov"]["data"],
        inv["noise_cov"]["data"],
        leads[::step],
        *[p["data"]["data"] for p in inv["projs"]],
        repr((inv["nave"], inv["eigen_leads_weighted"], list(inv["noise_cov"]["names"]))),
    )


def _eloreta_ori(inverse_operator) -> str | None:
    """eLORETA's pick_ori that keeps moment vectors: "vector" unless the inverse is fixed."""
    return "vector" if has_free_orientation(inverse_operator) else None


def _validate_src(src) -> None:
    kinds = {s["type"] for s in src}
    if not kinds <= {"surf", "vol", "discrete"}:
        raise ValueError(f"Unsupported source space type(s) {sorted(kinds)}")


def _unpack_inverse(inv, stc, mri_head_t, normals) -> tuple:
    """An inverse's source space, and its mri_head_t and fixed orientations where not given.

    A scalar estimate of a free or loose inverse holds moment norms
    (``pick_ori=None``), not signed components: it is refused.
    """
    free = has_free_orientation(inv)
    if free and stc.data.ndim == 2:
        raise ValueError(
            "This inverse operator has free or loose orientations, so a scalar estimate of it holds "
            "moment norms, which lose the sources' orientations: make the eLORETA estimate with "
            'pick_ori="vector" (or use piu.apply on the data).'
        )
    mri_head_t = inv["mri_head_t"] if mri_head_t is None else mri_head_t
    if normals is None and stc.data.ndim == 2:
        normals = inv["source_nn"]
    return inv["src"], mri_head_t, normals


#: The largest |value| (Am) an eLORETA estimate of brain data can plausibly hold;
#: brain sources are at most about 1e-7 Am, noise-normalised maps (dSPM,
#: sLORETA) are unitless numbers of order 1-100.
_MAX_PLAUSIBLE_AM = 1e-5


def _check_estimate(stc, src, normals) -> np.ndarray | None:
    """Check that an estimate can be an eLORETA estimate of ``src``; return the orientations a scalar one needs.

    A scalar estimate without ``normals`` on a surface source space takes the
    surface normals; a vector estimate's ``normals`` are returned as given (unused).
    """
    n_src = sum(len(v) for v in stc.vertices)
    if n_src != sum(s["nuse"] for s in src):
        raise ValueError(
            f"stc has {n_src} sources but src has {sum(s['nuse'] for s in src)}: pass the estimate's own source space"
        )
    if len(stc.vertices) != len(src) or not all(
        np.array_equal(v, s["vertno"]) for v, s in zip(stc.vertices, src)
    ):
        raise ValueError(
            "stc.vertices differ from the source space's vertices (another source space, or "
            "hemispheres in another order): pass the inverse operator or source space that made the estimate."
        )
    if not np.all(np.isfinite(stc.data)):
        raise ValueError("The estimate contains NaN or infinite values")
    peak = float(np.abs(stc.data).max(initial=0.0))
    if peak > _MAX_PLAUSIBLE_AM:
        raise ValueError(
            f"The estimate's largest value is {peak:.3g}, far above any brain source in Am: PIUNet refines "
            "eLORETA estimates (method='eLORETA') of data in SI units (V, T), not dSPM, sLORETA or "
            "noise-normalised maps. Make it with apply_inverse(..., method='eLORETA')."
        )
    if stc.data.ndim == 2 and stc.data.shape[0] > 1 and stc.data.min() >= 0 and peak > 0:
        raise ValueError(
            "The scalar estimate has no negative values, so it holds moment norms (pick_ori=None of a "
            "free or loose inverse), not signed amplitudes along fixed orientations: make it with "
            'pick_ori="vector", or pass a fixed-orientation estimate.'
        )
    if stc.data.ndim == 2 and normals is None:
        if any(s["type"] != "surf" for s in src):
            raise ValueError(
                "A scalar estimate on a volume or discrete source space needs its source "
                "orientations: pass the inverse operator as src (its source_nn is used), or "
                "normals=inverse_operator['source_nn'], or an eLORETA estimate made with "
                'pick_ori="vector".'
            )
        normals = np.concatenate([s["nn"][v] for s, v in zip(src, stc.vertices)])
    if stc.data.ndim == 2 and np.shape(normals) != (n_src, 3):
        raise ValueError(f"normals must have shape ({n_src}, 3), got {np.shape(normals)}")
    return normals


# --------------------------------------------------------- functional API
#: Networks the functional API keeps loaded, least recently used first.
_DEFAULT: OrderedDict[tuple, PIUNetInverse] = OrderedDict()
#: How many it keeps: a few weight files and settings, not one per call.
_DEFAULT_SIZE = 4
_DEFAULT_LOCK = threading.Lock()


def _default_inverse(weights, device, batch_size, precision, data_fit=True) -> PIUNetInverse:
    """One :class:`PIUNetInverse` per weights file *content* and network setting (an LRU cache).

    Keyed by the file's sha256, not its path, so weights rewritten in place
    (``fine_tune(..., overwrite=True)``) are loaded anew.
    """
    path = bundled_weights_path() if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}: pass weights=None for the bundled model.")
    key = (file_sha256(path), str(device), batch_size, precision, data_fit)
    with _DEFAULT_LOCK:  # threads share the cache: a lookup never meets another's eviction
        if key in _DEFAULT:
            _DEFAULT.move_to_end(key)
        else:
            _DEFAULT[key] = PIUNetInverse(
                path, device=device, batch_size=batch_size, precision=precision, data_fit=data_fit
            )
            while len(_DEFAULT) > _DEFAULT_SIZE:
                _DEFAULT.popitem(last=False)
        return _DEFAULT[key]


#: The network settings each functional mirror takes besides its method's parameters.
_NETWORK_DEFAULTS = dict(weights=None, device="auto", batch_size=None, precision="auto", data_fit=True)


def _functional_mirror(method_name: str, name: str, mne_name: str) -> Callable:
    """A function with the signature and docs of ``PIUNetInverse.<method_name>`` plus the network settings.

    Each MNE signature is then written once, on the method, and each text once,
    in the docdict (``<method_name>_params``, ``_returns`` and ``_notes``, which
    the method's docstring is made of too); the function runs the method on the
    process's cached model for those settings (:func:`_default_inverse`).
    """
    method = getattr(PIUNetInverse, method_name)

    def mirror(
        *args,
        weights=None,
        device="auto",
        batch_size=None,
        precision="auto",
        data_fit=True,
        verbose=None,
        **kwargs,
    ):
        piu = _default_inverse(weights, device, batch_size, precision, data_fit)
        return getattr(piu, method_name)(*args, verbose=verbose, **kwargs)

    signature = inspect.signature(method)
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [p for p in signature.parameters.values() if p.name not in ("self", "verbose")]
    params += [inspect.Parameter(k, keyword, default=v) for k, v in _NETWORK_DEFAULTS.items()]
    params.append(inspect.Parameter("verbose", keyword, default=None))
    mirror.__signature__ = signature.replace(parameters=params)
    mirror.__name__ = mirror.__qualname__ = name
    mirror.__module__ = __name__
    # from the docdict entries the method's docstring is made of, the network settings before verbose
    notes = f"%({method_name}_notes)s\n\n" if f"{method_name}_notes" in docdict else ""
    mirror.__doc__ = (
        f"Functional mirror of :func:`mne.minimum_norm.{mne_name}` for PIUNet.\n\n"
        "The network is loaded once per process, weights file and setting; see "
        f":meth:`PIUNetInverse.{method_name}`.\n\n{notes}"
        f"Parameters\n----------\n%({method_name}_params)s\n%(network_params)s\n%(verbose)s\n\n"
        f"Returns\n-------\n%({method_name}_returns)s\n"
    )
    return fill_doc(mirror)


apply_piunet = _functional_mirror("apply", "apply_piunet", "apply_inverse")
apply_piunet_epochs = _functional_mirror("apply_epochs", "apply_piunet_epochs", "apply_inverse_epochs")
apply_piunet_raw = _functional_mirror("apply_raw", "apply_piunet_raw", "apply_inverse_raw")
