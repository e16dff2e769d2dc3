"""The source grid: a real volume source space, dense mapping, resampling."""

import mne
import numpy as np
import pytest

from mne_piunet.grid import TENSOR_MULTIPLE, make_grid_src, to_template_space


def test_grid_is_a_real_volume_source_space(grid):
    src = grid.src
    assert src.kind == "volume" and src[0]["type"] == "vol"
    assert src[0]["mri_file"].endswith("T1.mgz") and src[0]["interpolator"] is not None
    assert grid.spacing == pytest.approx(0.008)
    assert all(s % TENSOR_MULTIPLE == 0 for s in grid.shape)
    # fills the template brain: ~150 x 185 x 150 mm, a few thousand sources
    assert 2500 < grid.n_sources < 6000
    extent = np.ptp(grid.pos, axis=0)
    assert np.all(extent > 0.12) and np.all(extent < 0.2)


def test_dense_round_trip_and_positions(grid):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, grid.n_sources, 3))
    dense = grid.to_dense(values)
    assert dense.shape == (2, 3) + grid.shape
    np.testing.assert_array_equal(grid.from_dense(dense), values)
    assert np.count_nonzero(dense[0, 0]) == grid.n_sources  # nothing outside the mask
    np.testing.assert_allclose(grid.origin + grid.ijk * grid.spacing, grid.pos, atol=1e-6)
    assert grid.mask.sum() == grid.n_sources
    with pytest.raises(ValueError, match="Expected"):
        grid.to_dense(values[:, :10])


def test_resampler_identity_on_grid_and_mass_conserving(grid):
    op = grid.resampler(grid.pos)
    assert op.shape == (grid.n_sources, grid.n_sources)
    np.testing.assert_allclose(op.toarray(), np.eye(grid.n_sources), atol=1e-12)
    # a source half-way between two grid points splits between them
    k = grid.n_sources // 2
    pos = grid.pos[k] + [grid.spacing / 2, 0, 0]
    col = grid.resampler(pos[None]).toarray()[:, 0]
    assert col.sum() == pytest.approx(1.0)
    nz = np.flatnonzero(col)
    assert len(nz) == 2 and np.allclose(col[nz], 0.5)
    np.testing.assert_allclose(grid.pos[nz].mean(axis=0), pos, atol=1e-6)
    # random points in the brain: columns sum to 1 and the centre of mass is kept
    pts = grid.pos[::50] + np.random.default_rng(1).uniform(-0.003, 0.003, (len(grid.pos[::50]), 3))
    op = grid.resampler(pts)
    np.testing.assert_allclose(np.asarray(op.sum(axis=0)).ravel(), 1.0)
    interior = np.asarray((op > 0).sum(axis=0)).ravel() == 8
    com = (op.T @ grid.pos) / np.asarray(op.sum(axis=0)).T
    np.testing.assert_allclose(com[interior], pts[interior], atol=1e-6)


def test_resampler_rejects_far_sources(grid):
    with pytest.raises(ValueError, match="outside the template brain.*metres"):
        grid.resampler(np.array([[0.0, 0.0, 0.5]]))


def test_spacing_out_of_range():
    with pytest.raises(ValueError, match=r"within \[4.0, 12.0\] mm"):
        make_grid_src(spacing=20)


def test_to_template_space_frames(grid):
    from mne_piunet.anatomy import template_trans

    trans = template_trans()
    # grid in MRI coordinates (fsaverage): identity
    affine, rot = to_template_space(grid.src)
    np.testing.assert_allclose(affine, np.eye(4))
    # head coordinates with the inverse's MRI transform
    src = grid.src.copy()
    src._transform_to("head", mne.transforms.invert_transform(trans))
    affine, rot = to_template_space(src, mri_head_t=trans)
    back = mne.transforms.apply_trans(affine, src[0]["rr"][src[0]["vertno"]])
    np.testing.assert_allclose(back, grid.pos, atol=1e-9)
    # head-only model: falls back to the template transform
    affine2, _ = to_template_space(src, mri_head_t=None)
    np.testing.assert_allclose(affine2, affine, atol=1e-9)
    # another subject needs a way to MNI
    src[0]["subject_his_id"] = "sub-01"
    with pytest.raises(ValueError, match="talairach.*mni_transform"):
        to_template_space(src, mri_head_t=trans, subjects_dir="/nonexistent")
    scale = np.diag([1.1, 0.9, 1.0, 1.0])
    affine3, rot3 = to_template_space(src, mri_head_t=trans, mni_transform=scale)
    np.testing.assert_allclose(affine3, scale @ affine, atol=1e-12)
    np.testing.assert_allclose(rot3 @ rot3.T, np.eye(3), atol=1e-12)
