"""Shared parameter docs: each parameter's text is written once, as in MNE's docdict.

:func:`fill_doc` fills the project's entries and MNE's own ``%(verbose)s``, so
it serves functions, methods (decorate *below* :func:`mne.utils.verbose`) and
classes alike. Entries composed of others (``network_params``, the methods'
``*_params`` blocks) let a method and its functional mirror share one text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mne.utils.docs import docdict as _mne_docdict

_F = TypeVar("_F", bound=Callable)

docdict: dict[str, str] = {}


def _compose(*names: str) -> str:
    """Entries one after another, as one entry."""
    return "\n" + "\n".join(docdict[name].strip("\n") for name in names)


docdict["verbose"] = _mne_docdict["verbose"]
docdict["inverse_operator"] = """
inverse_operator : mne.minimum_norm.InverseOperator
    Any EEG, MEG (magnetometers, gradiometers or both; OPMs) or MEG+EEG
    inverse: surface, volume, discrete or mixed source space; fixed, loose or
    free orientation; fsaverage, another subject (mapped to MNI by its
    talairach transform) or a sphere model."""
docdict["lambda2"] = """
lambda2 : float
    Regularisation of the eLORETA step (``1 / SNR ** 2``, e.g. ``1 / 9``)."""
docdict["method"] = """
method : "eLORETA"
    The only method PIUNet refines."""
docdict["pick_ori"] = """
pick_ori : None | "vector"
    None: amplitudes (:class:`mne.VolSourceEstimate`); ``"vector"``: moment
    vectors (:class:`mne.VolVectorSourceEstimate`)."""
docdict["label"] = """
label : None
    Not supported (raises): PIUNet estimates the whole brain at once; restrict
    the result afterwards, e.g. with ``stc.in_label``."""
docdict["nave"] = """
nave : int
    Number of averages, as for :func:`mne.minimum_norm.apply_inverse_epochs`."""
docdict["prepared"] = """
prepared : bool
    Whether ``inverse_operator`` is already prepared for eLORETA with this
    ``lambda2`` and ``nave`` (:func:`mne.minimum_norm.prepare_inverse_operator`)."""
docdict["return_generator"] = """
return_generator : bool
    Return a generator of estimates instead of a list."""
docdict["start_stop"] = """
start, stop : int | None
    First and last (exclusive) sample, relative to ``raw.first_samp``."""
docdict["time_func"] = """
time_func : None
    Not supported (raises): apply it to the estimate's data."""
docdict["buffer_size"] = """
buffer_size : int | None
    Samples per chunk; None for 2 s of data."""
docdict["method_params"] = """
method_params : dict | None
    eLORETA options, as for :func:`mne.minimum_norm.apply_inverse`."""
docdict["use_cps"] = """
use_cps : bool
    Whether to use cortical patch statistics for loose orientations, as in MNE."""
docdict["mni_transform"] = """
mni_transform : mne.transforms.Transform | array, shape (4, 4) | None
    Subject MRI (m) -> MNI (m) affine, for a subject other than fsaverage
    without a talairach transform in ``subjects_dir``."""
docdict["subjects_dir"] = """
subjects_dir : path-like | None
    Subjects folder holding the inverse's subject (for its talairach transform)."""
docdict["est_true_pos"] = """
est : array-like, shape (n_src,) | (n_src, 3)
    Estimated source amplitudes or moment vectors.
true : array-like, shape (n_true,) | (n_true, 3)
    True source amplitudes or moment vectors.
pos : array-like, shape (n_src, 3)
    Positions of the estimated sources, in metres.
true_pos : array-like, shape (n_true, 3) | None
    Positions of the true sources, in metres. ``None`` (default) means
    ``pos``."""
docdict["est_true"] = """
est : array-like, shape (n_src,) | (n_src, 3)
    Estimated source amplitudes or moment vectors.
true : array-like, shape (n_src,) | (n_src, 3)
    True source amplitudes or moment vectors, on the same positions and
    with the same shape as ``est``."""
docdict["weights"] = """
weights : path-like | None
    Weights written by :func:`mne_piunet.network.save_network`; None for the
    pretrained weights bundled with the package."""
docdict["device"] = """
device : "auto" | str
    Torch device; ``"auto"`` picks CUDA when available, else the CPU."""
docdict["batch_size"] = """
batch_size : int | None
    Maps (time points) per network call; None: 16 on the CPU, 256 on CUDA."""
docdict["precision"] = """
precision : "auto" | "float32" | "bfloat16" | "float16"
    Arithmetic of the network. ``"auto"``: bf16 on a CPU that computes it
    natively (AVX512-BF16 or AMX), fp32 on other CPUs, bf16 or fp16 on CUDA.
    Reduced precision moves the estimate by about a hundredth of its peak."""
docdict["data_fit"] = """
data_fit : bool
    Weight each map towards the grid dipoles that best explain its data (the
    signal subspace of its window, through the inverse operator's own gain;
    :func:`mne_piunet.physics.window_fit_weights`). False: the network's map
    alone, as :meth:`~mne_piunet.PIUNetInverse.refine` gives for an estimate
    without its inverse."""
docdict["network_params"] = _compose("weights", "device", "batch_size", "precision", "data_fit")
docdict["template_params"] = _compose("mni_transform", "subjects_dir")

# ---------------------------------------- PIUNetInverse.apply* and their functional mirrors
docdict["evoked"] = """
evoked : mne.Evoked
    EEG, MEG or MEG+EEG evoked data (EEG with an average reference
    projector, SSP projectors as the inverse has them, as for any inverse)."""
docdict["return_residual"] = """
return_residual : bool
    Also return the residual: the data minus what PIUNet's estimate
    predicts through the inverse operator's own gain, as MNE's
    ``apply_inverse`` returns it (the explained variance is logged
    either way, at ``verbose="info"``). Needs the operator as made or
    read, not prepared for eLORETA."""
docdict["apply_params"] = _compose(
    "evoked",
    "inverse_operator",
    "lambda2",
    "method",
    "pick_ori",
    "prepared",
    "label",
    "method_params",
    "return_residual",
    "use_cps",
    "template_params",
)
docdict["apply_returns"] = """
stc : mne.VolSourceEstimate | mne.VolVectorSourceEstimate
    On :attr:`PIUNetInverse.src <mne_piunet.PIUNetInverse.src>` (subject
    "fsaverage"), in Am.
residual : mne.Evoked
    The residual (only with ``return_residual=True``), as MNE's: the
    inverse's channels minus the prediction, the others unchanged."""

docdict["apply_epochs_notes"] = """
eLORETA is prepared once; epochs are refined together in chunks of
about 512 time points, so short epochs fill the network's batches.
Memory is bounded by one chunk; ``return_generator=True`` streams the
estimates. Dropped epochs are skipped, as by MNE."""
docdict["epochs"] = """
epochs : mne.BaseEpochs
    EEG, MEG or MEG+EEG epochs, preloaded or not."""
docdict["apply_epochs_params"] = _compose(
    "epochs",
    "inverse_operator",
    "lambda2",
    "method",
    "label",
    "nave",
    "pick_ori",
    "return_generator",
    "prepared",
    "method_params",
    "use_cps",
    "template_params",
)
docdict["apply_epochs_returns"] = """
stcs : list | generator of VolSourceEstimate | VolVectorSourceEstimate
    One estimate per epoch."""

docdict["apply_raw_notes"] = """
The data are processed in chunks of ``buffer_size`` samples with a
progress bar: only one chunk's eLORETA estimate is in memory at a time,
and the output is float32. Chunks overlap by half the network's
temporal window, so the estimate is the same however the data are
chunked; the span from ``start`` to ``stop`` is localised as if
cropped. Times follow MNE's convention: ``stc.tmin == raw.times[start]``."""
docdict["raw"] = """
raw : mne.io.BaseRaw
    EEG, MEG or MEG+EEG data, preloaded or not."""
docdict["return_generator_chunks"] = """
return_generator : bool
    Return a generator of estimates, one per chunk, instead of one
    estimate: for recordings whose estimate does not fit in memory (10
    minutes at 250 Hz are 2.4 GB of float32 amplitudes, 3x that as
    vectors). Write each chunk where it belongs, e.g. into a
    :class:`numpy.memmap`."""
docdict["apply_raw_params"] = _compose(
    "raw",
    "inverse_operator",
    "lambda2",
    "method",
    "label",
    "start_stop",
    "nave",
    "time_func",
    "pick_ori",
    "buffer_size",
    "prepared",
    "method_params",
    "use_cps",
    "return_generator_chunks",
    "template_params",
)
docdict["apply_raw_returns"] = """
stc : VolSourceEstimate | VolVectorSourceEstimate | generator
    The estimate, or a generator of consecutive estimates."""

_indented: dict[int, dict[str, str]] = {}


def fill_doc(func: _F) -> _F:
    """Fill ``%(name)s`` entries of ``func``'s docstring from :data:`docdict`.

    Parameters
    ----------
    func : callable
        A function or method whose docstring holds ``%(name)s`` entries.

    Returns
    -------
    func : callable
        The same object, its docstring filled in (indented as the docstring is).
    """
    doc = func.__doc__
    if not doc:
        return func
    lines = doc.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    if indent not in _indented:
        pad = " " * indent
        _indented[indent] = {
            name: text.strip("\n").replace("\n", "\n" + pad) for name, text in docdict.items()
        }
    try:
        func.__doc__ = doc % _indented[indent]
    except (KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(f"Error documenting {func.__qualname__}: {exc!r}") from None
    return func
