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


def _outward(grid, dist, quantile=0.98):
    """Points ``dist`` (m) beyond the grid's outermost points, along rays from the centroid."""
    centre = grid.pos.mean(0)
    radial = np.linalg.norm(grid.pos - centre, axis=1)
    edge = grid.pos[radial > np.quantile(radial, quantile)]
    direction = (edge - centre) / np.linalg.norm(edge - centre, axis=1, keepdims=True)
    return edge + dist * direction


def test_resampler_snaps_a_few_far_sources(grid, caplog):
    """A sphere model larger than the brain: a few sources 2-3 cm out go to the nearest voxels."""
    from mne.utils import use_log_level

    far = _outward(grid, 0.025)[:20]
    pos = np.concatenate([grid.pos, far])
    with use_log_level("info"), caplog.at_level("INFO", logger="mne"):
        op = grid.resampler(pos)
    assert "20 source(s) lie up to" in caplog.text and "nearest brain voxels" in caplog.text
    nearest = np.argmin(np.linalg.norm(grid.pos[:, None] - far[None], axis=2), axis=0)
    cols = op[:, len(grid.pos) :].toarray()
    np.testing.assert_array_equal(cols.argmax(0), nearest)
    np.testing.assert_allclose(cols.sum(0), 1.0)


@pytest.mark.parametrize(
    "case, match",
    [
        ("shifted", "of 200 source.*not in the frame"),  # most sources out: a frame mistake
        ("one_very_far", "farthest 8[0-9] mm"),  # beyond any head model
        ("millimetres", "millimetres"),
    ],
)
def test_resampler_refuses_frame_and_unit_mistakes(grid, case, match):
    inside = grid.pos[:20]
    pos = {
        "shifted": np.concatenate([inside, _outward(grid, 0.03, quantile=0.8)[:180]]),
        "one_very_far": np.concatenate([grid.pos, _outward(grid, 0.085)[:1]]),
        "millimetres": grid.pos * 1e3,
    }[case]
    with pytest.raises(ValueError, match=match):
        grid.resampler(pos)


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


def test_mri_head_t_either_direction_and_checked(grid):
    from mne_piunet.anatomy import template_trans

    head_mri = template_trans()
    src = grid.src.copy()
    src._transform_to("head", mne.transforms.invert_transform(head_mri))
    # an inverse's own mri_head_t (MRI -> head) works as well as its inverse
    affine, _ = to_template_space(src, mri_head_t=head_mri)
    affine_inv, _ = to_template_space(src, mri_head_t=mne.transforms.invert_transform(head_mri))
    np.testing.assert_allclose(affine_inv, affine, atol=1e-12)
    with pytest.raises(ValueError, match="between head and MRI coordinates, got MEG device -> head"):
        to_template_space(src, mri_head_t=mne.transforms.Transform("meg", "head"))
    with pytest.raises(TypeError, match="mri_head_t must be an mne.transforms.Transform"):
        to_template_space(src, mri_head_t=np.eye(4))
