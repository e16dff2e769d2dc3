"""The physics of a user's inverse operator: its whitened gain, maps back onto its sources, predicted data.

An :class:`mne.minimum_norm.InverseOperator` holds the SVD of the whitened,
projected and source-weighted gain, ``W P G R^(1/2) = U S V^T``
(``eigen_fields`` = U^T, ``sing`` = S, ``eigen_leads`` = V, ``source_cov`` =
R), so the forward model it was made from is in hand without asking the user
for it: ``W P G = U S V^T R^(-1/2)``, in the inverse's own source basis (one
column per fixed orientation, or three per source along ``source_nn``). With
it a PIUNet map, moved from the template grid back onto the inverse's sources
(:func:`grid_to_source`), predicts the data it explains
(:func:`predict_whitened`), and so gives MNE's residual and explained variance;
with the prepared operator's kernel of whitened data (:func:`whitened_kernel`)
and every grid dipole's fields (:func:`grid_fields`), eLORETA's estimate of
that residual, which a network's residual pass sees.
"""

from __future__ import annotations

import mne
import numpy as np
from scipy import sparse

from .utils._checks import check_inverse_operator, check_positive, ensure_int, validate_type

__all__ = [
    "along_orientations",
    "check_unweighted",
    "explained_variance",
    "fit_weights",
    "grid_dipole_bases",
    "grid_fields",
    "grid_to_source",
    "kernel_prediction",
    "local_fit_weights",
    "music_spectrum",
    "predict_whitened",
    "signal_subspace",
    "source_components",
    "subspace_fit",
    "to_source_frame",
    "whitened_gain",
    "whitened_kernel",
    "whiten",
    "window_fit_weights",
    "window_subspace_fit",
    "DATA_FIT_POWER",
]


#: Sharpness of the data-fit weighting (:func:`local_fit_weights`), picked on the
#: validation setups (never on held-out ones): the largest that was worse in no
#: cell there (the model card's data-fit A/B).
DATA_FIT_POWER = 4.0


def check_unweighted(inverse_operator) -> None:
    """Raise, naming the fix, when an operator's gain cannot be rebuilt (prepared for eLORETA).

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        The operator.
    """
    check_inverse_operator(inverse_operator)
    if inverse_operator["eigen_leads_weighted"]:
        # eLORETA's preparation folds its fitted source weights (3 x 3 blocks for free
        # orientations) into the eigen leads and keeps them nowhere else
        raise ValueError(
            "This inverse operator was prepared for eLORETA (its eigen leads are weighted), so its gain "
            "cannot be rebuilt from it: pass the operator as made or read "
            "(mne.minimum_norm.make_inverse_operator or read_inverse_operator), with prepared=False."
        )


def _nave_scale(inverse_operator, nave: float | None) -> float:
    """Factor from the operator's whitening (its ``nave``) to that of data averaged over ``nave``."""
    return 1.0 if nave is None else float(np.sqrt(nave / inverse_operator["nave"]))


def whitened_gain(inverse_operator, nave: float | None = None) -> np.ndarray:
    """The whitened, projected gain matrix an inverse operator was made from.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        As made or read (not prepared for eLORETA).
    nave : float | None
        Averages of the data it is to predict (their noise is that of the
        operator's covariance over ``nave``); None: the operator's own.

    Returns
    -------
    gain : array, shape (n_white, n_components)
        ``W P G`` in the inverse's source basis: ``n_components`` is the
        number of sources (fixed orientation) or three times it, along
        ``inverse_operator["source_nn"]``; ``n_white`` is the rank of the
        noise covariance. Dense: for large source spaces prefer
        :func:`predict_whitened`, which never forms it.
    """
    check_unweighted(inverse_operator)
    u_s = inverse_operator["eigen_fields"]["data"].T * inverse_operator["sing"]
    leads = inverse_operator["eigen_leads"]["data"] / np.sqrt(inverse_operator["source_cov"]["data"])[:, None]
    return _nave_scale(inverse_operator, nave) * (u_s @ leads.T)


def predict_whitened(inverse_operator, components: np.ndarray, nave: float | None = None) -> np.ndarray:
    """Whitened data predicted by sources in the inverse's basis: :func:`whitened_gain` ``@ components``.

    Computed through the operator's SVD, without forming the gain.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        As made or read (not prepared for eLORETA).
    components : array or sparse matrix, shape (n_components, n_times)
        Source amplitudes along the inverse's orientations
        (:func:`source_components`), in Am.
    nave : float | None
        As for :func:`whitened_gain`.

    Returns
    -------
    data : array, shape (n_white, n_times)
        The whitened data they predict.
    """
    check_unweighted(inverse_operator)
    inv_std = 1.0 / np.sqrt(inverse_operator["source_cov"]["data"])
    if sparse.issparse(components):  # (leads^T @ (D @ C)) as (C^T @ D @ leads)^T: never densify C
        inner = np.asarray((sparse.diags(inv_std) @ components).T @ inverse_operator["eigen_leads"]["data"]).T
    else:
        inner = inverse_operator["eigen_leads"]["data"].T @ (components * inv_std[:, None])
    fields = inverse_operator["eigen_fields"]["data"].T
    return _nave_scale(inverse_operator, nave) * (fields @ (inverse_operator["sing"][:, None] * inner))


def whiten(prepared_inverse, data: np.ndarray) -> np.ndarray:
    """Whitened, projected data, as MNE's inverse sees them: ``whitener @ proj @ data``.

    Parameters
    ----------
    prepared_inverse : mne.minimum_norm.InverseOperator
        Prepared (:func:`mne.minimum_norm.prepare_inverse_operator`) for
        the data's ``nave``.
    data : array, shape (n_channels, n_times)
        Sensor data on the inverse's channels, in its order.

    Returns
    -------
    data_w : array, shape (n_white, n_times)
    """
    validate_type(prepared_inverse, mne.minimum_norm.InverseOperator, "prepared_inverse", "InverseOperator")
    if "whitener" not in prepared_inverse:
        raise ValueError(
            "prepared_inverse is not prepared: prepare it with "
            "mne.minimum_norm.prepare_inverse_operator(inverse_operator, nave, lambda2, method)."
        )
    return prepared_inverse["whitener"] @ (prepared_inverse["proj"] @ data)


def explained_variance(data_w: np.ndarray, predicted_w: np.ndarray) -> float:
    """Percentage of the whitened data's power that a prediction explains (MNE's definition).

    ``100 * (1 - |data - predicted|^2 / |data|^2)``, as MNE's ``apply_inverse``
    logs it: negative when the prediction is further from the data than zero.

    Parameters
    ----------
    data_w, predicted_w : array, shape (n_white, n_times)
        Whitened data and prediction.

    Returns
    -------
    percent : float
    """
    power = float(np.sum(np.abs(data_w) ** 2))
    if power == 0:
        return float("nan")
    return 100.0 * (1.0 - float(np.sum(np.abs(data_w - predicted_w) ** 2)) / power)


def grid_to_source(resampler: sparse.spmatrix) -> sparse.csr_matrix:
    """The map from the template grid back onto a source space: the adjoint of its resampling.

    :meth:`mne_piunet.grid.SourceGrid.resampler` spreads each source over the
    corners of its grid cell (every column sums to 1). Its transpose, with
    each grid point's column normalised, hands a grid point's moment back to
    the sources that were spread onto it, in the same proportions: the total
    moment is conserved, and a grid point no source reaches (white matter
    under a cortical source space) maps to nothing.

    Parameters
    ----------
    resampler : sparse matrix, shape (n_grid, n_src)
        Sources -> grid.

    Returns
    -------
    back : scipy.sparse.csr_matrix, shape (n_src, n_grid)
        Grid -> sources; every column sums to 1 or 0.
    """
    resampler = sparse.csr_matrix(resampler)
    reach = np.asarray(resampler.sum(axis=1)).ravel()
    inv_reach = np.divide(1.0, reach, out=np.zeros_like(reach), where=reach > 0)
    return sparse.csr_matrix(resampler.T @ sparse.diags(inv_reach))


def along_orientations(values: np.ndarray, source_nn: np.ndarray) -> np.ndarray:
    """Source values as amplitudes along an inverse's orientations, its source basis.

    Parameters
    ----------
    values : array, shape (n_src, 3, n_times) or (n_src, n_times)
        Moment vectors in the source space's frame (an estimate of a free or
        loose inverse, ``pick_ori="vector"``), or amplitudes along fixed
        orientations, which are the components already.
    source_nn : array, shape (n_components, 3)
        The inverse's orientations: one per source (fixed) or three.

    Returns
    -------
    components : array, shape (n_components, n_times)
        What :func:`predict_whitened` takes (float64).
    """
    if values.ndim == 2:
        return values.astype(np.float64)
    n_src = values.shape[0]
    nn = np.asarray(source_nn, float).reshape(n_src, len(source_nn) // n_src, 3)
    return np.einsum("ipj,ijt->ipt", nn, values).reshape(len(source_nn), -1)


def source_components(
    grid_vectors: np.ndarray, back: sparse.spmatrix, rotation: np.ndarray, source_nn: np.ndarray
) -> np.ndarray:
    """Moment vectors on the grid as amplitudes along an inverse's source orientations.

    Parameters
    ----------
    grid_vectors : array, shape (n_grid, 3, n_times)
        Moment vectors in the template frame (a PIUNet estimate's data).
    back : sparse matrix, shape (n_src, n_grid)
        :func:`grid_to_source` of the source space's resampler.
    rotation : array, shape (3, 3)
        The source frame -> template frame rotation the resampling used.
    source_nn : array, shape (n_components, 3)
        The inverse's orientations: one per source (fixed) or three.

    Returns
    -------
    components : array, shape (n_components, n_times)
        What :func:`predict_whitened` takes.
    """
    # template frame -> the source space's frame (rotation is orthogonal), then onto each orientation
    moved = np.stack([back @ grid_vectors[:, k, :] for k in range(3)], axis=1)  # (n_src, 3, n_times)
    return along_orientations(np.einsum("kj,ikt->ijt", rotation, moved), source_nn)


def grid_fields(
    inverse_operator, back: sparse.spmatrix, rotation: np.ndarray, nave: float | None = None
) -> np.ndarray:
    """The whitened fields of a unit moment along each template axis at every grid point.

    A unit moment along template axis ``k`` at grid point ``g`` goes onto the
    inverse's sources with ``back`` (:func:`grid_to_source`) and the inverse's
    orientations, then through its gain (:func:`predict_whitened`, never
    forming the dense gain).

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        As made or read (not prepared for eLORETA).
    back : sparse matrix, shape (n_src, n_grid)
        :func:`grid_to_source` of the source space's resampler.
    rotation : array, shape (3, 3)
        The source frame -> template frame rotation the resampling used.
    nave : float | None
        As for :func:`whitened_gain`.

    Returns
    -------
    fields : array, shape (n_white, n_grid, 3)
        Zero where no source is reached (and, on a fixed cortex, along the
        axes its normals do not span).
    """
    back = sparse.csr_matrix(back)
    n_src = back.shape[0]
    nn = np.asarray(inverse_operator["source_nn"], float)
    repeated = back[np.repeat(np.arange(n_src), len(nn) // n_src)]  # (n_components, n_grid)
    return np.stack(
        [
            predict_whitened(inverse_operator, sparse.diags(nn @ rotation[k]) @ repeated, nave)
            for k in range(3)
        ],
        axis=-1,
    )


def grid_dipole_bases(fields: np.ndarray, rcond: float = 1e-3) -> np.ndarray:
    """For every grid point, an orthonormal basis of the whitened fields its dipole makes.

    The three :func:`grid_fields` of each grid point are orthonormalised
    (directions below ``rcond`` of its largest dropped: a fixed cortex sees
    fewer than three orientations at some points). The basis does not depend
    on the fields' scale, so fields whitened for any ``nave`` give it.

    Parameters
    ----------
    fields : array, shape (n_white, n_grid, 3)
        :func:`grid_fields`.
    rcond : float
        Relative singular value below which a direction is dropped.

    Returns
    -------
    bases : array, shape (n_grid, n_white, 3)
        Orthonormal columns (zero columns where dropped); zero where no source is reached.
    """
    rcond = check_positive(rcond, "rcond", "a relative singular value")
    u, sv, _ = np.linalg.svd(np.moveaxis(fields, 1, 0), full_matrices=False)  # per grid point
    keep = sv > rcond * np.maximum(sv[:, :1], np.finfo(float).tiny)
    return u * keep[:, None, :]


def whitened_kernel(prepared_inverse) -> np.ndarray:
    """The imaging kernel of a prepared inverse, acting on whitened data (:func:`whiten`).

    MNE's kernel is this times ``whitener @ proj`` (``_assemble_kernel``), so
    ``whitened_kernel(prepared) @ whiten(prepared, data)`` is MNE's estimate
    of ``data``, and applied to :func:`predict_whitened` of sources it gives
    the estimate of the data those sources would produce.

    Parameters
    ----------
    prepared_inverse : mne.minimum_norm.InverseOperator
        Prepared (:func:`mne.minimum_norm.prepare_inverse_operator`) for the
        method and ``nave`` of the estimates.

    Returns
    -------
    kernel : array, shape (n_components, n_white)
        One row per component along ``source_nn``: (n_src, n_white) for a
        fixed inverse, (3 * n_src, n_white) otherwise.
    """
    validate_type(prepared_inverse, mne.minimum_norm.InverseOperator, "prepared_inverse", "InverseOperator")
    if "reginv" not in prepared_inverse:
        raise ValueError(
            "prepared_inverse is not prepared: prepare it with "
            "mne.minimum_norm.prepare_inverse_operator(inverse_operator, nave, lambda2, method)."
        )
    kernel = prepared_inverse["eigen_leads"]["data"] @ (
        prepared_inverse["reginv"][:, None] * prepared_inverse["eigen_fields"]["data"]
    )
    if not prepared_inverse["eigen_leads_weighted"]:  # R^(1/2) not yet in the eigen leads
        kernel *= np.sqrt(prepared_inverse["source_cov"]["data"])[:, None]
    return kernel


def to_source_frame(components: np.ndarray, source_nn: np.ndarray, n_src: int) -> np.ndarray:
    """Components along an inverse's orientations as moment vectors (the inverse of :func:`along_orientations`).

    Parameters
    ----------
    components : array, shape (n_components, n_cols)
        One row per orientation of ``source_nn``.
    source_nn : array, shape (n_components, 3)
        The inverse's orientations: one per source (fixed) or three (an
        orthonormal frame per source: free or loose).
    n_src : int
        The number of sources (``inverse_operator["nsource"]``).

    Returns
    -------
    values : array, shape (n_src, 3, n_cols) or (n_src, n_cols)
        Moment vectors in the source space's frame (free or loose
        orientation), or the amplitudes along fixed orientations themselves.
    """
    nn = np.asarray(source_nn, float)
    if components.shape[0] != len(nn) or len(nn) not in (n_src, 3 * n_src):
        raise ValueError(
            f"Need one row per orientation of {n_src} sources ({len(nn)} orientations), got {components.shape[0]}"
        )
    if len(nn) == n_src:
        return components
    return np.einsum("ipj,ipt->ijt", nn.reshape(n_src, 3, 3), components.reshape(n_src, 3, -1))


def signal_subspace(window_w: np.ndarray, threshold: float = 4.0) -> np.ndarray:
    """The data's signal subspace over a window: its leading left singular vectors above the noise.

    The noise level is read from the window itself (the mean power of the
    weaker half of its components), so it needs no calibrated whitening; a
    component counts as signal when its power exceeds ``threshold`` times
    that. At least one component is kept.

    Parameters
    ----------
    window_w : array, shape (n_white, n_points)
        Whitened data over the window.
    threshold : float
        Power ratio to the noise level that makes a component signal.

    Returns
    -------
    basis : array, shape (n_white, r)
        Orthonormal columns.
    """
    threshold = check_positive(threshold, "threshold", "a power ratio to the noise")
    u, sv, _ = np.linalg.svd(window_w, full_matrices=False)
    power = sv**2
    # round-off floor: a window of one map repeated (an instantaneous context) has rank 1
    noise = max(power[len(power) // 2 :].mean() if len(power) > 1 else 0.0, 1e-12 * power[0])
    return u[:, : max(1, int(np.sum(power > threshold * noise)))]


def subspace_fit(bases: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Subspace correlation of a free dipole at every grid point with a signal subspace (MUSIC's).

    Parameters
    ----------
    bases : array, shape (n_grid, n_white, 3)
        :func:`grid_dipole_bases`.
    basis : array, shape (n_white, r)
        :func:`signal_subspace`.

    Returns
    -------
    fit : array, shape (n_grid,)
        In [0, 1]: the largest squared cosine between a dipole's fields and the subspace.
    """
    overlap = np.einsum("gwk,wr->grk", bases, basis)
    return np.linalg.eigvalsh(np.einsum("grk,grl->gkl", overlap, overlap))[:, -1]


def local_fit_weights(fit: np.ndarray, grid, power: float, reach: int = 1) -> np.ndarray:
    """Weights that move each blob of a map towards the grid point that best explains the data.

    Each grid point's dipole fit is divided by the best fit within ``reach``
    grid steps of it, and raised to ``power``: the best-fitting point of every
    neighbourhood keeps weight 1 and its neighbours lose weight as they
    explain less, so a map's blobs stay where they are, each sharpened
    towards its best-fitting point, and a weaker source is not suppressed by
    a stronger one elsewhere.

    Parameters
    ----------
    fit : array, shape (n_times, n_grid)
        Each map's :func:`subspace_fit`.
    grid : SourceGrid
        The grid (its dense layout gives the neighbourhoods).
    power : float | array, shape (n_times,)
        Sharpness, one for all maps or one each; 0 leaves maps unchanged.
    reach : int
        Neighbourhood half-width, in grid steps.

    Returns
    -------
    weights : array, shape (n_times, n_grid)
        In [0, 1].
    """
    reach = ensure_int(reach, "reach", "a number of grid steps >= 0", minimum=0)
    from scipy.ndimage import maximum_filter

    dense = np.zeros((len(fit),) + tuple(grid.shape))
    dense.reshape(len(fit), -1)[:, grid.flat_index] = fit
    local = maximum_filter(dense, size=(1,) + (2 * reach + 1,) * 3, mode="constant").reshape(len(fit), -1)
    best = local[:, grid.flat_index]
    ratio = np.divide(fit, best, out=np.zeros_like(fit), where=best > 0)
    return ratio ** np.reshape(power, (-1, 1))


def window_subspace_fit(bases: np.ndarray, data_w: np.ndarray, windows: np.ndarray) -> tuple:
    """Each output map's MUSIC scan: every grid dipole's fit to the signal subspace of its window.

    Parameters
    ----------
    bases : array, shape (n_grid, n_white, 3)
        :func:`grid_dipole_bases`.
    data_w : array, shape (n_white, n_times)
        Whitened data (or what an estimate predicts of them).
    windows : array of int, shape (n_out, n_points)
        Each output map's window, as columns of ``data_w`` (one column, or
        repeats of one, give that map's own data: a subspace of rank 1).

    Returns
    -------
    fit : array, shape (n_out, n_grid)
        :func:`subspace_fit` of each window's :func:`signal_subspace`.
    ranks : array of int, shape (n_out,)
        The rank of each window's signal subspace.
    """
    fit = np.empty((len(windows), bases.shape[0]))
    ranks = np.empty(len(windows), np.int64)
    for i, row in enumerate(windows):
        basis = signal_subspace(data_w[:, row])
        fit[i], ranks[i] = subspace_fit(bases, basis), basis.shape[1]
    return fit, ranks


def music_spectrum(fit: np.ndarray) -> np.ndarray:
    """MUSIC's pseudo-spectrum of subspace fits, ``1 / (1 - fit)``, each map peak-normalised.

    Where a dipole explains the subspace well the spectrum rises steeply, so
    the map peaks where the data put a source and is near zero elsewhere.

    Parameters
    ----------
    fit : array, shape (n, n_grid)
        Subspace fits in [0, 1] (:func:`window_subspace_fit`).

    Returns
    -------
    spectrum : array of float32, shape (n, n_grid)
        In [0, 1], 1 at each map's best fit (all zero where a map's fits are).
    """
    spectrum = 1.0 / (1.0 - np.clip(fit, 0.0, 1.0 - 1e-6))
    spectrum[fit <= 0] = 0.0  # grid points no source reaches
    top = spectrum.max(axis=1, initial=0.0, keepdims=True)
    return (spectrum / np.where(top > 0, top, 1.0)).astype(np.float32)


def kernel_prediction(inverse_operator, kernel: np.ndarray) -> np.ndarray:
    """The whitened data that an imaging kernel's estimate predicts, per channel: ``W P G K``.

    What the data-fit step sees of a recording is the whitened data its
    eLORETA estimate predicts; with the kernel, that is one matrix applied
    to the sensor data, which the simulation uses for its samples.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        As made or read (not prepared for eLORETA).
    kernel : array, shape (3 * n_src, n_chan) or (n_src, n_chan)
        The kernel in the inverse's own frame: moment vectors (free or loose
        orientation) or amplitudes along fixed orientations.

    Returns
    -------
    predictor : array, shape (n_white, n_chan)
        Whitened data predicted from sensor data.
    """
    nn = np.asarray(inverse_operator["source_nn"], float)
    n_src = inverse_operator["nsource"]
    values = kernel if len(nn) == len(kernel) == n_src else kernel.reshape(n_src, 3, -1)
    return predict_whitened(inverse_operator, along_orientations(values, nn))


def window_fit_weights(
    bases: np.ndarray,
    data_w: np.ndarray,
    windows: np.ndarray,
    grid,
    power: float = DATA_FIT_POWER,
    *,
    rank_scaled: bool = True,
) -> np.ndarray:
    """The data-fit weights of each output map, from the signal subspace of its own window.

    For each row of ``windows``: the signal subspace of those columns of
    ``data_w`` (:func:`signal_subspace`; one column, or repeats of one, give
    that map's own data), every grid dipole's subspace correlation with it
    (:func:`subspace_fit`), and :func:`local_fit_weights` at ``power`` over
    the subspace's rank (``rank_scaled``). The weights do not change with
    the data's sign or scale.

    Parameters
    ----------
    bases, data_w, windows : array
        As for :func:`window_subspace_fit`.
    grid : SourceGrid
        The grid.
    power : float
        Sharpness (:func:`local_fit_weights`).
    rank_scaled : bool
        Divide each window's sharpness by its signal subspace's rank: several
        sources share the fit (one sharpness for all lost more at 10 sources on
        the validation setups). False: ``power`` for every window.

    Returns
    -------
    weights : array, shape (n_out, n_grid)
    """
    power = check_positive(power, "power", "the sharpness of the weights", zero=True)
    validate_type(rank_scaled, bool, "rank_scaled")
    fit, ranks = window_subspace_fit(bases, data_w, windows)
    return fit_weights(fit, ranks, grid, power, rank_scaled=rank_scaled)


def fit_weights(
    fit: np.ndarray, ranks: np.ndarray, grid, power: float = DATA_FIT_POWER, *, rank_scaled: bool = True
) -> np.ndarray:
    """:func:`local_fit_weights` of window fits, at ``power`` over each subspace's rank (``rank_scaled``).

    Parameters
    ----------
    fit, ranks : array
        :func:`window_subspace_fit`.
    grid : SourceGrid
        The grid.
    power : float
        Sharpness (:func:`local_fit_weights`).
    rank_scaled : bool
        As for :func:`window_fit_weights`.

    Returns
    -------
    weights : array, shape (n_out, n_grid)
    """
    # a subspace of rank r spreads its sharpness over r sources
    return local_fit_weights(fit, grid, power / (np.asarray(ranks, float) if rank_scaled else 1.0))
