"""The physics of a user's inverse operator: its whitened gain, maps back onto its sources, predicted data.

An :class:`mne.minimum_norm.InverseOperator` holds the SVD of the whitened,
projected and source-weighted gain, ``W P G R^(1/2) = U S V^T``
(``eigen_fields`` = U^T, ``sing`` = S, ``eigen_leads`` = V, ``source_cov`` =
R), so the forward model it was made from is in hand without asking the user
for it: ``W P G = U S V^T R^(-1/2)``, in the inverse's own source basis (one
column per fixed orientation, or three per source along ``source_nn``). With
it a PIUNet map, moved from the template grid back onto the inverse's sources
(:func:`grid_to_source`), predicts the data it explains
(:func:`predict_whitened`), and so gives MNE's residual and explained variance.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = [
    "explained_variance", "grid_to_source", "predict_whitened", "source_components", "whitened_gain",
    "whiten",
]  # fmt: skip


def _check_unweighted(inverse_operator) -> None:
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
    _check_unweighted(inverse_operator)
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
    components : array, shape (n_components, n_times)
        Source amplitudes along the inverse's orientations
        (:func:`source_components`), in Am.
    nave : float | None
        As for :func:`whitened_gain`.

    Returns
    -------
    data : array, shape (n_white, n_times)
        The whitened data they predict.
    """
    _check_unweighted(inverse_operator)
    scaled = components / np.sqrt(inverse_operator["source_cov"]["data"])[:, None]
    inner = inverse_operator["eigen_leads"]["data"].T @ scaled
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
    n_src = back.shape[0]
    per_source = len(source_nn) // n_src
    # template frame -> the source space's frame (rotation is orthogonal), then onto each orientation
    moved = np.stack([back @ grid_vectors[:, k, :] for k in range(3)], axis=1)  # (n_src, 3, n_times)
    local = np.einsum("kj,ikt->ijt", rotation, moved)
    nn = np.asarray(source_nn, float).reshape(n_src, per_source, 3)
    return np.einsum("ipj,ijt->ipt", nn, local).reshape(n_src * per_source, -1)
