"""Simulation engine: exact eLORETA input, sources, noise, batches."""

import mne
import numpy as np
import pytest

from mne_piunet.simulation import SimulationEngine, SourcePrior, add_noise, simulate, simulate_sources


def _apply_eloreta(setup, sensor, pick_ori):
    evoked = mne.EvokedArray(sensor.T, setup.info, tmin=0.0, nave=1)
    return mne.minimum_norm.apply_inverse(
        evoked, setup.inverse_operator, setup.lambda2, "eLORETA", pick_ori=pick_ori, verbose=False
    )


def test_engine_input_equals_apply_inverse_volume(volume_setup):
    batch = simulate(volume_setup, 6, np.random.default_rng(0))
    stc = _apply_eloreta(volume_setup, batch.sensor, "vector")
    # MNE's vectors are in head coordinates; the engine's in the template MRI frame
    rot = np.linalg.inv(volume_setup.inverse_operator["mri_head_t"]["trans"])[:3, :3]
    expected = np.einsum("kc,sct->tsk", rot, stc.data)
    np.testing.assert_allclose(batch.eloreta, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    # on the grid itself the grid operator is the identity
    np.testing.assert_array_equal(batch.eloreta_grid, batch.eloreta)


def test_engine_input_equals_apply_inverse_surface(surface_setup):
    batch = simulate(surface_setup, 4, np.random.default_rng(1))
    stc = _apply_eloreta(surface_setup, batch.sensor, None)
    np.testing.assert_allclose(batch.eloreta, stc.data.T, rtol=1e-10, atol=1e-10 * np.abs(stc.data).max())
    assert batch.true_grid.shape == (4, surface_setup.to_grid.shape[0], 3)
    # mass of the moment vectors is conserved by the grid operator
    total = (batch.true[..., None] * surface_setup.normals).sum(axis=1)
    np.testing.assert_allclose(batch.true_grid.sum(axis=1), total, rtol=1e-9, atol=1e-20)


def test_sources_counts_extent_and_hemisphere(volume_setup, surface_setup):
    rng = np.random.default_rng(2)
    src, counts, sigmas = simulate_sources(volume_setup, 5, rng, n_sources=1, sigma_mm=(10, 10))
    assert src.shape == (5, volume_setup.n_sources, 3) and np.all(counts == 1)
    mag = np.linalg.norm(src, axis=-1)
    for m, s in zip(mag, sigmas):
        assert s == pytest.approx([10.0])
        peak = volume_setup.pos[np.argmax(m)]
        d = np.linalg.norm(volume_setup.pos - peak, axis=1)
        assert np.all(m[d > 0.0301] == 0)  # truncated at 3 sigma
        # one orientation per blob
        v = src[0][mag[0] > 0]
        assert np.linalg.matrix_rank(v, tol=1e-12 * np.abs(v).max()) == 1
    patches, _, _ = simulate_sources(surface_setup, 3, rng, n_sources=1, sigma_mm=(20, 20))
    for p in patches:
        assert len(np.unique(surface_setup.hemi_of[p != 0])) == 1
    counts = simulate_sources(volume_setup, 400, rng, SourcePrior(max_sources=5))[1]
    assert counts.min() == 1 and counts.max() == 5 and np.mean(counts == 1) > np.mean(counts == 5)


def test_noise_reaches_requested_snr():
    rng = np.random.default_rng(3)
    clean = rng.standard_normal((2000, 64)) * 3.0
    for snr in (0.0, 10.0, 30.0):
        noisy = add_noise(clean, np.full(2000, snr), rng)
        sig = (clean - clean.mean(1, keepdims=True)).std(1)
        noise = noisy - clean
        got = 10 * np.log10(sig**2 / (noise - noise.mean(1, keepdims=True)).std(1) ** 2)
        np.testing.assert_allclose(got, snr, atol=1e-9)
    cov = np.diag(np.linspace(1, 10, 64))
    noisy = add_noise(clean, np.full(2000, 10.0), rng, noise_cov=cov)
    noise = noisy - clean
    assert noise[:, -1].std() > 2.5 * noise[:, 0].std()  # coloured as asked


def test_engine_is_seeded_and_batches_are_normalised(volume_setup, surface_setup, grid):
    a = SimulationEngine([volume_setup, surface_setup], grid, seed=7, chunk=4)
    b = SimulationEngine([volume_setup, surface_setup], grid, seed=7, chunk=4)
    xa, ya, meta = a.batch(10)
    xb, yb, _ = b.batch(10)
    assert xa.shape == ya.shape == (10, 3) + grid.shape
    assert (xa == xb).all() and (ya == yb).all()
    norms = xa.norm(dim=1).flatten(1).amax(dim=1)
    np.testing.assert_allclose(norms.numpy(), 1.0, rtol=1e-6)
    assert len(meta["setup"]) == 10 and set(meta) >= {"scale", "snr_db", "n_sources"}
    assert not (a.batch(10)[0] == xa).all()  # the stream moves on


def test_loose_setup_matches_apply_inverse_and_sources_follow_normals(grid):
    from mne_piunet.simulation import HeadSetup, prepare_setup

    setup = prepare_setup(HeadSetup("biosemi64", source_space="surface", loose=0.2), grid)
    assert setup.free and setup.normals.shape == (setup.n_sources, 3)
    # MNE's loose inverse with its surface defaults
    assert setup.inverse_operator["source_ori"] == mne.io.constants.FIFF.FIFFV_MNE_FREE_ORI
    batch = simulate(setup, 3, np.random.default_rng(4), SourcePrior(max_sources=3))
    stc = _apply_eloreta(setup, batch.sensor, "vector")
    expected = np.einsum("kc,sct->tsk", setup.head_to_mri, stc.data)
    np.testing.assert_allclose(batch.eloreta, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # every simulated moment lies along its source's normal
    cross = np.cross(batch.true, setup.normals[None])
    assert np.abs(cross).max() < 1e-9 * np.abs(batch.true).max()
    with pytest.raises(ValueError, match="surface source spaces only"):
        HeadSetup("biosemi64", source_space="volume", loose=0.2)


def test_jittered_cap_moves_electrodes_and_changes_the_leadfield(grid):
    from mne_piunet.simulation import HeadSetup, jittered_info, prepare_setup

    nominal = jittered_info("biosemi32", 0.0, 0)
    moved = jittered_info("biosemi32", 4.0, 1)
    shift = np.linalg.norm(
        [a["loc"][:3] - b["loc"][:3] for a, b in zip(nominal["chs"], moved["chs"])], axis=1
    )
    assert 1.0 < np.median(shift) * 1e3 < 12.0  # a few mm, as asked (3-D sd of 4 mm)
    np.testing.assert_array_equal(moved["chs"][0]["loc"], jittered_info("biosemi32", 4.0, 1)["chs"][0]["loc"])
    a = prepare_setup(HeadSetup("biosemi32", jitter_mm=4.0, jitter_seed=1), grid)
    b = prepare_setup(HeadSetup("biosemi32"), grid)
    assert a.name != b.name and a.leadfield.shape == b.leadfield.shape
    assert np.linalg.norm(a.leadfield - b.leadfield) > 0.05 * np.linalg.norm(b.leadfield)


def test_coloured_noise_follows_the_setup_covariance(volume_setup):
    cov = volume_setup.noise_cov
    n = len(cov)
    assert cov.shape == (n, n) and np.allclose(cov, cov.T) and np.trace(cov) == pytest.approx(1.0)
    # spatially correlated: its largest eigenvalue far above white noise's 1 / (n - 1)
    # (average reference: one zero eigenvalue), yet no other eigenvalue is zero
    eig = np.linalg.eigvalsh(cov)
    assert eig[-1] > 5 / (n - 1) and abs(eig[0]) < 1e-12 and eig[1] > 1e-4 / n
    rng = np.random.default_rng(5)
    coloured = simulate(volume_setup, 400, rng, SourcePrior(coloured_noise=1.0), snr_db=0.0)
    white = simulate(volume_setup, 400, rng, SourcePrior(), snr_db=0.0)
    for batch, expect_coloured in ((coloured, True), (white, False)):
        clean = batch.true.reshape(400, -1) @ volume_setup.leadfield.T
        noise = batch.sensor - clean
        noise -= noise.mean(axis=1, keepdims=True)
        emp = noise.T @ noise
        corr_with_cov = np.corrcoef(emp.ravel(), cov.ravel())[0, 1]
        assert (corr_with_cov > 0.8) == expect_coloured


def test_training_targets_flip_with_their_inputs(volume_setup, grid):
    """The network sees one polarity; the target of a flipped map is the flipped truth's target."""
    from dataclasses import replace

    from mne_piunet.network import UNetConfig
    from mne_piunet.simulation import normalised_dense, simulate

    batch = simulate(volume_setup, 4, np.random.default_rng(0), window=(0.04, 5))
    flip = replace(
        batch,
        true_grid=-batch.true_grid,
        eloreta_grid=-batch.eloreta_grid,
        eloreta_window_grid=-batch.eloreta_window_grid,
    )
    for network in (UNetConfig(), UNetConfig(context="subspace", window_s=0.04, window_points=5)):
        inputs, targets, scale, ratio = normalised_dense(grid, [batch], network)
        flipped = normalised_dense(grid, [flip], network)
        np.testing.assert_array_equal(flipped[0], inputs)
        np.testing.assert_array_equal(flipped[1], targets)
        np.testing.assert_array_equal(flipped[2], -scale)
        np.testing.assert_array_equal(flipped[3], ratio)
        # and the truth is recovered from the target: truth = target * ratio * scale
        back = grid.from_dense(targets) * (ratio * scale)[:, None, None]
        x = batch.true_grid
        np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-6 * np.abs(x).max())
