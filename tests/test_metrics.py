"""Tests for mne_piunet.metrics."""

# License: BSD-3-Clause

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mne_piunet.metrics import (
    _emd,
    _uniform_reference_emd,
    evaluate,
    nemd,
    nmse,
    peak_localisation_error,
    spatial_dispersion,
    weighted_cosine_distance,
)

STEP = 0.005  # 5 mm grid


def _grid(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Regular n**3 grid (metres) and its integer indices."""
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return idx * STEP, idx


def _blob(idx: np.ndarray, center, radius: int = 2, sigma: float = 1.0) -> np.ndarray:
    """Truncated Gaussian on integer offsets, so translations are exact."""
    d2 = np.sum((idx - np.asarray(center)) ** 2, axis=1)
    return np.where(d2 <= radius**2, np.exp(-d2 / (2 * sigma**2)), 0.0)


@pytest.fixture(scope="module")
def small_case():
    rng = np.random.default_rng(0)
    pos = rng.uniform(-0.07, 0.07, (200, 3))
    true = np.zeros((200, 3))
    true[rng.choice(200, 15, replace=False)] = rng.normal(size=(15, 3))
    return pos, true, rng


def test_identical_maps(small_case):
    """Identical maps are perfect under every metric."""
    pos, true, _ = small_case
    res = evaluate(true, true, pos)
    assert set(res) == {"nemd", "ple", "sd", "wcos", "nmse"}
    assert res["nemd"] == pytest.approx(0, abs=1e-12)
    assert res["nmse"] == 0
    assert res["wcos"] == pytest.approx(0, abs=1e-12)
    assert res["ple"] == 0
    # Sources below the 50 % threshold are not true locations, so SD > 0.
    assert res["sd"] > 0


def test_uniform_estimate_gives_one(small_case):
    """A uniform estimate is the NEMD reference, for scalars and vectors."""
    pos, true, _ = small_case
    assert nemd(np.ones(len(pos)), true, pos) == pytest.approx(1, abs=1e-9)
    vec = np.tile([0.0, 3.0, -4.0], (len(pos), 1))
    assert nemd(vec, true, pos) == pytest.approx(1, abs=1e-9)


def test_point_masses_emd_is_distance():
    """Two point masses d apart are d apart in EMD."""
    pos = np.array([[0.0, 0, 0], [0.03, 0.04, 0], [0.01, 0, 0]])
    est, true = np.array([2.0, 0, 0]), np.array([0, 5.0, 0])
    assert _emd(est, pos, true, pos) == pytest.approx(0.05, rel=1e-12)
    ref = _uniform_reference_emd(pos, true, pos)
    # Uniform thirds travel 0.05, 0 and sqrt(0.02**2 + 0.04**2) to the truth.
    assert ref == pytest.approx((0.05 + np.hypot(0.02, 0.04)) / 3, rel=1e-12)
    assert nemd(est, true, pos) * ref == pytest.approx(0.05, rel=1e-12)


def test_shifted_blob():
    """A translated blob has PLE = shift and EMD = shift."""
    pos, idx = _grid(10)
    true = _blob(idx, (3, 4, 4))
    for shift in ([2, 0, 0], [1, 2, 0]):
        est = _blob(idx, np.array([3, 4, 4]) + shift)
        d = STEP * np.linalg.norm(shift)
        ref = _uniform_reference_emd(pos, true, pos)
        assert peak_localisation_error(est, true, pos) == pytest.approx(d * 1e3)
        assert nemd(est, true, pos) == pytest.approx(d / ref, rel=1e-9)
    assert 0 < d / ref < 1


def test_scale_invariance():
    """NEMD ignores the scale, NMSE does not."""
    pos, idx = _grid(6)
    true = _blob(idx, (2, 2, 3))
    assert nemd(2 * true, true, pos) == pytest.approx(0, abs=1e-12)
    assert nmse(2 * true, true) == pytest.approx(1)
    assert nmse(np.zeros_like(true), true) == pytest.approx(1)
    assert weighted_cosine_distance(2 * true, true) == pytest.approx(0)


def test_weighted_cosine_distance():
    """Opposite moments give 2, orthogonal 1, and weights follow |true|."""
    rng = np.random.default_rng(1)
    true = rng.normal(size=(50, 3))
    assert weighted_cosine_distance(-3 * true, true) == pytest.approx(2)
    ortho = np.cross(true, rng.normal(size=(50, 3)))
    assert weighted_cosine_distance(ortho, true) == pytest.approx(1)
    assert weighted_cosine_distance(np.zeros_like(true), true) == pytest.approx(1)
    # Scalars: sign agreement weighted by |true|.
    true_s = np.array([3.0, -1.0, 0.0, 0.0])
    est_s = np.array([0.5, 2.0, 7.0, 0.0])  # right, wrong, unweighted
    assert weighted_cosine_distance(est_s, true_s) == pytest.approx(1 - (3 - 1) / 4)
    assert weighted_cosine_distance(-true_s, true_s) == pytest.approx(2)


def test_different_true_positions():
    """Truth on its own (sparse, shifted) positions."""
    pos, idx = _grid(8)
    est = _blob(idx, (3, 3, 3), radius=1)
    shift = np.array([0.0, 0.0, 0.004])
    true_pos = pos[est > 0] + shift  # truth: the same blob, moved 4 mm
    true = est[est > 0]
    assert peak_localisation_error(est, true, pos, true_pos) == pytest.approx(4)
    ref = _uniform_reference_emd(pos, true, true_pos)
    assert nemd(est, true, pos, true_pos) == pytest.approx(0.004 / ref, rel=1e-9)
    res = evaluate(est, true, pos, true_pos)
    assert np.isnan(res["nmse"]) and np.isnan(res["wcos"])
    assert res["ple"] == pytest.approx(4)
    # Identical positions passed explicitly count as the same positions.
    res = evaluate(est, est, pos, pos.copy(), metrics=("nmse", "wcos"))
    assert res == {"nmse": 0.0, "wcos": pytest.approx(0)}


def test_spatial_dispersion():
    """SD is 0 for a point at the truth and d for a point d away."""
    pos, idx = _grid(6)
    true = _blob(idx, (2, 2, 2))
    est = np.zeros(len(pos))
    est[np.flatnonzero((idx == [2, 2, 2]).all(1))] = 4.0
    assert spatial_dispersion(est, true, pos) == 0
    # Only the centre passes the 50 % threshold (neighbours are exp(-1/2)
    # > 0.5, so use a sharper blob).
    true = _blob(idx, (2, 2, 2), sigma=0.5)
    est = np.zeros(len(pos))
    est[np.flatnonzero((idx == [5, 2, 2]).all(1))] = -1.0
    assert spatial_dispersion(est, true, pos) == pytest.approx(15)
    # Two equal points at 0 and 15 mm: sqrt((0 + 15**2) / 2).
    est[np.flatnonzero((idx == [2, 2, 2]).all(1))] = 1.0
    assert spatial_dispersion(est, true, pos) == pytest.approx(15 / np.sqrt(2))


def test_dropping_zero_mass_is_exact():
    """Dropping zero-mass points matches the full-problem EMD."""
    import ot

    rng = np.random.default_rng(2)
    pos = rng.uniform(-0.05, 0.05, (60, 3))
    a = np.where(rng.random(60) < 0.5, rng.random(60), 0.0)
    b = np.where(rng.random(60) < 0.2, rng.random(60), 0.0)
    full = ot.emd2(a / a.sum(), b / b.sum(), cdist(pos, pos))
    assert _emd(a, pos, b, pos) == pytest.approx(full, rel=1e-10)
    assert 0 < full


def test_undefined_estimate_gives_nan():
    """All-zero estimates have no mass or peak: nan, not an error."""
    pos, idx = _grid(4)
    true = _blob(idx, (1, 1, 1))
    zero = np.zeros(len(pos))
    assert np.isnan(nemd(zero, true, pos))
    assert np.isnan(peak_localisation_error(zero, true, pos))
    assert np.isnan(spatial_dispersion(zero, true, pos))


def test_bad_input():
    """Invalid input raises ValueError naming the problem."""
    pos, idx = _grid(4)
    true = _blob(idx, (1, 1, 1))
    est = true.copy()
    with pytest.raises(ValueError, match="all zeros"):
        nemd(est, np.zeros_like(true), pos)
    with pytest.raises(ValueError, match="all zeros"):
        nmse(est, np.zeros_like(true))
    bad = est.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        nemd(bad, true, pos)
    with pytest.raises(ValueError, match="NaN or inf"):
        weighted_cosine_distance(est, np.where(true > 0, np.inf, 0))
    with pytest.raises(ValueError, match="same shape"):
        nmse(est[:-1], true)
    with pytest.raises(ValueError, match="same shape"):
        weighted_cosine_distance(np.tile(est[:, None], 3), true)
    with pytest.raises(ValueError, match="pos has 63 positions"):
        peak_localisation_error(est, true, pos[:-1])
    with pytest.raises(ValueError, match="true_pos has 64 positions"):
        spatial_dispersion(est, true[:-1], pos, pos)
    with pytest.raises(ValueError, match=r"shape \(n_src,\) or \(n_src, 3\)"):
        nemd(np.ones((len(pos), 2)), true, pos)
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate(est, true, pos, metrics=("emd",))


def test_missing_pot_message(monkeypatch):
    """In an environment missing POT, NEMD says how to install it; other metrics still work."""
    import sys

    monkeypatch.setitem(sys.modules, "ot", None)
    pos, idx = _grid(3)
    true = _blob(idx, (1, 1, 1))
    with pytest.raises(ImportError, match=r"pip install 'POT>=0.9'"):
        nemd(true, true, pos)
    assert peak_localisation_error(true, true, pos) == 0
