"""Evaluation metrics for EEG source estimates: one estimate scored against its truth.

These are the metrics used to benchmark 3D-PIUNet (Morik et al., "Enhancing
brain source reconstruction by initializing 3D neural networks with physical
inverse solutions", IEEE Transactions on Medical Imaging, 2025):

- **NEMD** (:func:`nemd`): earth mover's distance between the normalised
  amplitude distributions of estimate and truth, divided by the earth mover's
  distance between a *uniform* estimate and the truth. 0 means a perfect
  spatial match, 1 means "as good as knowing nothing". It ignores the
  global scale (and, for scalar maps, the sign) of the estimate.
- **NMSE** (:func:`nmse`): mean squared error normalised by the power of the
  truth; sensitive to scale.
- **Weighted cosine distance** (:func:`weighted_cosine_distance`): 1 minus the
  truth-amplitude-weighted cosine similarity of the per-source moments
  (orientation / sign agreement).
- **PLE** (:func:`peak_localisation_error`): distance between the peaks of
  estimate and truth.
- **SD** (:func:`spatial_dispersion`): spatial dispersion of the estimate
  around the true sources (Molins et al., NeuroImage 2008).

Conventions
-----------
A source estimate for one sample is an array of shape ``(n_src,)`` (scalar
amplitudes) or ``(n_src, 3)`` (moment vectors, whose magnitude is the L2 norm
over the last axis). Source positions are ``(n_src, 3)`` arrays in metres. The
truth may live on another set of positions (``true_pos``); by default it
shares ``pos``. Distances are returned in millimetres.
"""

# License: BSD-3-Clause

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .utils._docs import fill_doc

__all__ = (
    "METRICS",
    "evaluate",
    "nemd",
    "nmse",
    "peak_localisation_error",
    "spatial_dispersion",
    "weighted_cosine_distance",
)

#: Names accepted by :func:`evaluate`.
METRICS = ("nemd", "ple", "sd", "wcos", "nmse")

_NUM_ITER_MAX = 1_000_000
_M_TO_MM = 1e3


# -----------------------------------------------------------------------------
# Input validation


def _check_sources(x: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 3):
        raise ValueError(
            f"{name} must have shape (n_src,) or (n_src, 3), got shape "
            f"{x.shape}. Pass one sample at a time (loop over samples/times)."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; it needs at least one source.")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{name} contains NaN or inf values; replace or drop them "
            "(e.g. np.nan_to_num) before computing metrics."
        )
    return x


def _check_pos(pos: ArrayLike, n_src: int, name: str, src_name: str) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n_src, 3), got shape {pos.shape}.")
    if pos.shape[0] != n_src:
        raise ValueError(
            f"{name} has {pos.shape[0]} positions but {src_name} has {n_src} "
            f"sources; they must match (did you pass the wrong {name}?)."
        )
    if not np.all(np.isfinite(pos)):
        raise ValueError(f"{name} contains NaN or inf values.")
    return pos


def _magnitude(x: np.ndarray) -> np.ndarray:
    return np.abs(x) if x.ndim == 1 else np.linalg.norm(x, axis=-1)


def _check_truth_nonzero(true_mag: np.ndarray) -> None:
    if not np.any(true_mag > 0):
        raise ValueError(
            "true is all zeros, so the metric is undefined; skip samples without active sources."
        )


def _prepare(
    est: ArrayLike,
    true: ArrayLike,
    pos: ArrayLike,
    true_pos: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a location-based metric's inputs; return magnitudes + positions."""
    est = _check_sources(est, "est")
    true = _check_sources(true, "true")
    pos = _check_pos(pos, est.shape[0], "pos", "est")
    if true_pos is None:
        true_pos = _check_pos(pos, true.shape[0], "pos", "true")
    else:
        true_pos = _check_pos(true_pos, true.shape[0], "true_pos", "true")
    est_mag, true_mag = _magnitude(est), _magnitude(true)
    _check_truth_nonzero(true_mag)
    return est_mag, true_mag, pos, true_pos


def _prepare_same(est: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs of metrics that compare sources one to one."""
    est = _check_sources(est, "est")
    true = _check_sources(true, "true")
    if est.shape != true.shape:
        raise ValueError(
            f"est and true must have the same shape for this metric (same "
            f"source positions and orientation convention), got {est.shape} "
            f"and {true.shape}."
        )
    _check_truth_nonzero(_magnitude(true))
    return est, true


# -----------------------------------------------------------------------------
# Earth mover's distance


def _import_ot():
    # POT is a dependency, imported here rather than at the top because its
    # import takes ~1.5 s and only NEMD needs it.
    try:
        import ot
    except ImportError as exc:  # a broken environment: say which package
        raise ImportError("NEMD needs POT, a dependency of mne-piunet: pip install 'POT>=0.9'") from exc
    return ot


def _emd(a: np.ndarray, a_pos: np.ndarray, b: np.ndarray, b_pos: np.ndarray) -> float:
    """Exact EMD (in metres) between two non-negative mass vectors.

    Each mass vector is normalised to sum to one. Zero-mass points carry no
    flow in any transport plan, so dropping them gives the same optimum while
    shrinking the cost matrix (the truth is usually sparse).
    """
    ot = _import_ot()
    a_keep, b_keep = a > 0, b > 0
    a = a[a_keep].astype(np.float64)
    b = b[b_keep].astype(np.float64)
    a /= a.sum()
    b /= b.sum()
    cost = cdist(a_pos[a_keep], b_pos[b_keep])  # float64, C-contiguous
    for num_iter_max in (_NUM_ITER_MAX, 10 * _NUM_ITER_MAX):
        with warnings.catch_warnings():
            # We inspect the result code ourselves below.
            warnings.simplefilter("ignore", UserWarning)
            value, log = ot.emd2(a, b, cost, numItermax=num_iter_max, log=True)
        code = log["result_code"]
        if code != 3:  # 3 == numItermax reached: retry with more iterations
            break
    if code != 1:  # 1 == optimal
        raise RuntimeError(
            f"POT's network simplex did not reach the optimum ({log['warning']}, "
            f"result code {code}, numItermax={num_iter_max}) for a "
            f"{cost.shape[0]} x {cost.shape[1]} problem."
        )
    return float(value)


def _uniform_reference_emd(pos: np.ndarray, true_mag: np.ndarray, true_pos: np.ndarray) -> float:
    """EMD (in metres) between a uniform map over ``pos`` and the truth.

    Independent of the estimate, so callers evaluating several estimates of
    the same truth can compute it once.
    """
    return _emd(np.ones(len(pos)), pos, true_mag, true_pos)


@fill_doc
def nemd(
    est: ArrayLike,
    true: ArrayLike,
    pos: ArrayLike,
    true_pos: ArrayLike | None = None,
) -> float:
    """Normalised earth mover's distance between estimate and truth.

    The magnitudes of ``est`` and ``true`` are normalised to unit mass and the
    exact earth mover's distance (EMD) between them is computed with the
    Euclidean ground distance between source positions. It is divided by the
    EMD between a uniform distribution over ``pos`` and the truth.

    Parameters
    ----------
    %(est_true_pos)s

    Returns
    -------
    nemd : float
        0 for identical (up to a positive scale factor) maps, 1 for a uniform
        estimate; can exceed 1 for estimates worse than uniform. ``nan`` when
        ``est`` is all zeros (no mass to transport), or in the degenerate case
        where the uniform reference EMD is 0 (a single source at the true
        location).

    Notes
    -----
    Computed with POT's exact network simplex. Only the magnitudes are used, so
    the sign of scalar estimates and the orientation of vector estimates are
    ignored. Zero-amplitude sources are dropped before the cost
    matrix is built, so the cost scales with the number of *non-zero* sources
    on each side.
    """
    est_mag, true_mag, pos, true_pos = _prepare(est, true, pos, true_pos)
    _import_ot()  # fail early with the install hint
    if not np.any(est_mag > 0):
        return np.nan
    reference = _uniform_reference_emd(pos, true_mag, true_pos)
    if reference == 0:
        return np.nan
    return _emd(est_mag, pos, true_mag, true_pos) / reference


# -----------------------------------------------------------------------------
# Amplitude metrics (same positions)


@fill_doc
def nmse(est: ArrayLike, true: ArrayLike) -> float:
    """Normalised mean squared error.

    Parameters
    ----------
    %(est_true)s

    Returns
    -------
    nmse : float
        ``mean((true - est) ** 2) / mean(true ** 2)`` over all elements. 0 for a
        perfect estimate, 1 for an all-zero estimate.
    """
    est, true = _prepare_same(est, true)
    return float(np.mean((true - est) ** 2) / np.mean(true**2))


@fill_doc
def weighted_cosine_distance(est: ArrayLike, true: ArrayLike) -> float:
    """Truth-weighted cosine distance between estimated and true moments.

    Parameters
    ----------
    %(est_true)s

    Returns
    -------
    distance : float
        ``1 - sum_i w_i cos_i`` with weights ``w_i = |true_i| / sum_j |true_j|``.
        In [0, 2]: 0 when every true source is matched in direction, 1 for
        orthogonal (or all-zero) estimates, 2 for opposite ones.

    Notes
    -----
    For moment vectors, ``cos_i`` is the cosine of the angle between
    ``est_i`` and ``true_i`` (0 where ``est_i`` is zero). For scalar
    amplitudes, ``cos_i`` is the sign agreement ``sign(est_i) * sign(true_i)``.
    Scale is ignored; use :func:`nmse` for that.
    """
    est, true = _prepare_same(est, true)
    true_mag = _magnitude(true)
    weights = true_mag / true_mag.sum()
    if est.ndim == 1:
        cos = np.sign(est) * np.sign(true)
    else:
        denom = _magnitude(est) * true_mag
        dot = np.sum(est * true, axis=-1)
        nonzero = denom > 0
        cos = np.zeros(len(est))
        cos[nonzero] = dot[nonzero] / denom[nonzero]
        # Rounding can push |cos| slightly above 1.
        np.clip(cos, -1.0, 1.0, out=cos)
    return float(1.0 - np.sum(weights * cos))


# -----------------------------------------------------------------------------
# Localisation metrics


@fill_doc
def peak_localisation_error(
    est: ArrayLike,
    true: ArrayLike,
    pos: ArrayLike,
    true_pos: ArrayLike | None = None,
) -> float:
    """Distance between the estimated and the true peak.

    Parameters
    ----------
    %(est_true_pos)s

    Returns
    -------
    ple : float
        Distance in millimetres between the position of ``max |est|`` and that
        of ``max |true|`` (first index on ties). ``nan`` if ``est`` is all
        zeros (no peak).
    """
    est_mag, true_mag, pos, true_pos = _prepare(est, true, pos, true_pos)
    if not np.any(est_mag > 0):
        return np.nan
    delta = pos[np.argmax(est_mag)] - true_pos[np.argmax(true_mag)]
    return float(np.linalg.norm(delta) * _M_TO_MM)


@fill_doc
def spatial_dispersion(
    est: ArrayLike,
    true: ArrayLike,
    pos: ArrayLike,
    true_pos: ArrayLike | None = None,
) -> float:
    """Spatial dispersion of the estimate around the true sources.

    Parameters
    ----------
    %(est_true_pos)s

    Returns
    -------
    sd : float
        ``sqrt(sum_i d_i**2 |est_i|**2 / sum_i |est_i|**2)`` in millimetres,
        where ``d_i`` is the distance from estimated source ``i`` to the
        nearest true source location (Molins et al., 2008). ``nan`` if ``est``
        is all zeros.

    Notes
    -----
    The true source locations are the positions where
    ``|true| >= 0.5 * max |true|``, so that the weak tails of a smooth
    simulated patch do not count as sources.
    """
    est_mag, true_mag, pos, true_pos = _prepare(est, true, pos, true_pos)
    if not np.any(est_mag > 0):
        return np.nan
    true_locs = true_pos[true_mag >= 0.5 * true_mag.max()]
    dist, _ = cKDTree(true_locs).query(pos)
    power = est_mag**2
    return float(np.sqrt(np.sum(dist**2 * power) / np.sum(power)) * _M_TO_MM)


# -----------------------------------------------------------------------------
# Convenience


@fill_doc
def evaluate(
    est: ArrayLike,
    true: ArrayLike,
    pos: ArrayLike,
    true_pos: ArrayLike | None = None,
    *,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Compute several metrics for one sample.

    Parameters
    ----------
    %(est_true_pos)s
    metrics : sequence of str
        Which metrics to compute, among ``"nemd"`` (:func:`nemd`), ``"ple"``
        (:func:`peak_localisation_error`), ``"sd"``
        (:func:`spatial_dispersion`), ``"wcos"``
        (:func:`weighted_cosine_distance`) and ``"nmse"`` (:func:`nmse`).

    Returns
    -------
    results : dict of str to float
        The requested metrics, in the requested order. ``"nmse"`` and
        ``"wcos"`` compare sources one to one, so they are ``nan`` when
        ``true_pos`` differs from ``pos``.

    See Also
    --------
    mne_piunet.bench.evaluation.score_methods : Score whole inverse methods on simulated data.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {METRICS}.")
    same_pos = true_pos is None or (
        np.shape(true_pos) == np.shape(pos) and np.array_equal(np.asarray(true_pos), np.asarray(pos))
    )
    funcs = {
        "nemd": lambda: nemd(est, true, pos, true_pos),
        "ple": lambda: peak_localisation_error(est, true, pos, true_pos),
        "sd": lambda: spatial_dispersion(est, true, pos, true_pos),
        "wcos": lambda: weighted_cosine_distance(est, true) if same_pos else np.nan,
        "nmse": lambda: nmse(est, true) if same_pos else np.nan,
    }
    return {name: float(funcs[name]()) for name in metrics}


def coarse_nemd(est: ArrayLike, true: ArrayLike, pos: ArrayLike, cell: float = 0.016) -> float:
    """NEMD after summing both maps' magnitudes into cubes of ``cell`` metres.

    Exact EMD costs O(n^2) memory and more than O(n^2) time, which on the
    3,990-point template grid (:func:`mne_piunet.grid.get_grid`) is seconds per
    pair of diffuse maps. Its points fall into 743 cubes of 16 mm, about a
    hundred times cheaper, so validation and large evaluations stay
    affordable; both maps and the uniform reference share the coarse support.

    Parameters
    ----------
    est : array-like, shape (n_src,) | (n_src, 3)
        Estimated source amplitudes or moment vectors.
    true : array-like, shape (n_src,) | (n_src, 3)
        True source amplitudes or moment vectors, on the same positions.
    pos : array-like, shape (n_src, 3)
        Source positions, in metres.
    cell : float
        Edge of the cubes, in metres; each cube's mass sits at its centre.

    Returns
    -------
    nemd : float
        :func:`nemd` of the pooled maps (``nan`` as there).
    """
    pos = np.asarray(pos, float)
    key = np.floor(pos / cell).astype(int)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()

    def masses(x):
        return np.bincount(inv, _magnitude(_check_sources(x, "est")), len(uniq))

    return nemd(masses(est), masses(true), (uniq + 0.5) * cell)
