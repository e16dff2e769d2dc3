"""Drop-in correctness: every kind of inverse an MNE user has, results in MNE's form.

Each test compares with MNE's own ``apply_inverse*`` output where one exists:
times, vertices, subject and the number of estimates.
"""

import mne
import numpy as np
import pytest

from mne_piunet.anatomy import make_cortex_src, make_template_forward, montage_info

MONTAGE = "biosemi64"


def _noise_cov(info, seed=0):
    """A noise covariance estimated from spatially correlated noise, as a real one is."""
    rng = np.random.default_rng(seed)
    n = len(info["ch_names"])
    mixing = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    raw = mne.io.RawArray(mixing @ rng.standard_normal((n, 2000)) * 1e-6, info, verbose=False)
    return mne.compute_raw_covariance(raw, verbose=False)


def _assert_like_mne(stcs, mne_stcs, piu):
    """Same number of estimates, times and subject as MNE's; PIUNet's grid vertices."""
    assert len(stcs) == len(mne_stcs)
    for ours, theirs in zip(stcs, mne_stcs):
        np.testing.assert_allclose(ours.times, theirs.times)
        assert ours.subject == "fsaverage"
        np.testing.assert_array_equal(ours.vertices[0], piu.src[0]["vertno"])
        assert np.all(np.isfinite(ours.data)) and ours.data.max() > 0


@pytest.fixture(scope="module")
def info():
    return montage_info(MONTAGE)


@pytest.fixture(scope="module")
def evoked(info):
    rng = np.random.default_rng(1)
    return mne.EvokedArray(rng.standard_normal((len(info["ch_names"]), 6)) * 1e-6, info, tmin=-0.01)


@pytest.fixture(scope="module")
def loose_inverse(info, surface_setup):
    """MNE's default cortical inverse: loose 0.2, depth 0.8, an estimated noise covariance."""
    fwd = make_template_forward(MONTAGE, make_cortex_src())  # cached by surface_setup
    return mne.minimum_norm.make_inverse_operator(info, fwd, _noise_cov(info), loose=0.2, depth=0.8)


def test_loose_cortical_inverse(piu, evoked, loose_inverse):
    stc = piu.apply(evoked, loose_inverse, 1 / 9)
    vec = piu.apply(evoked, loose_inverse, 1 / 9, pick_ori="vector")
    ref = mne.minimum_norm.apply_inverse(evoked, loose_inverse, 1 / 9, "eLORETA", verbose=False)
    _assert_like_mne([stc, vec], [ref, ref], piu)
    np.testing.assert_allclose(np.linalg.norm(vec.data, axis=1), stc.data, rtol=1e-6)


def test_sphere_model_volume_source_space(piu, info, evoked, caplog):
    """MNE's quick set-up: a sphere fitted to the scalp is larger than the template brain."""
    sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
    src = mne.setup_volume_source_space(pos=10.0, sphere=sphere, exclude=10.0, mindist=5.0, verbose=False)
    fwd = mne.make_forward_solution(info, None, src, sphere, meg=False, verbose=False)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, _noise_cov(info), loose=1.0, verbose=False)
    with caplog.at_level("INFO", logger="mne"):
        stc = piu.apply(evoked, inv, 1 / 9, verbose="info")
    assert "outside the template brain" in caplog.text and "nearest brain voxels" in caplog.text
    _assert_like_mne([stc], [mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA")], piu)


@pytest.fixture(scope="module")
def discrete_inverse(info, grid):
    """A fixed-orientation inverse on a discrete source space (every 7th grid point)."""
    rr = grid.pos[::7]
    nn = rr - rr.mean(0)
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    src = mne.setup_volume_source_space("fsaverage", pos=dict(rr=rr, nn=nn), verbose=False)
    fwd = make_template_forward(MONTAGE, src)
    fwd = mne.convert_forward_solution(fwd, surf_ori=True, verbose=False)
    return mne.minimum_norm.make_inverse_operator(info, fwd, _noise_cov(info), fixed=True, verbose=False)


def test_discrete_fixed_inverse_and_refine_takes_its_orientations(
    piu, piu_network_only, evoked, discrete_inverse
):
    inv = discrete_inverse
    assert inv["src"][0]["type"] == "discrete"
    stc = piu.apply(evoked, inv, 1 / 9)
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    _assert_like_mne([stc], [stc_e], piu)
    # a scalar estimate on a discrete source space: orientations from the inverse ...
    np.testing.assert_allclose(piu.refine(stc_e, inv).data, stc.data, rtol=1e-6)
    explicit = piu.refine(stc_e, inv["src"], mri_head_t=inv["mri_head_t"], normals=inv["source_nn"])
    np.testing.assert_allclose(explicit.data, piu_network_only.refine(stc_e, inv).data, rtol=1e-6)
    # ... and a message that says how to pass them when they are missing
    with pytest.raises(ValueError, match=r"pass the inverse operator as src.*source_nn"):
        piu.refine(stc_e, inv["src"], mri_head_t=inv["mri_head_t"])


def _every_nth_vertex(src, n):
    """A coarser copy of a surface source space (a forward on 20,484 vertices takes a minute)."""
    src = src.copy()
    for s in src:
        s["vertno"] = s["vertno"][::n]
        s["inuse"] = np.isin(np.arange(s["np"]), s["vertno"]).astype(int)
        s["nuse"] = len(s["vertno"])
    return src


def test_mixed_source_space(piu, info, evoked, grid):
    surf = _every_nth_vertex(make_cortex_src(), 10)
    vol = mne.setup_volume_source_space(
        "fsaverage",
        pos=dict(rr=grid.pos[::40], nn=np.tile([0.0, 0.0, 1.0], (len(grid.pos[::40]), 1))),
        verbose=False,
    )
    fwd = make_template_forward(MONTAGE, surf + vol)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, _noise_cov(info), loose=1.0, verbose=False)
    stc = piu.apply(evoked, inv, 1 / 9)
    _assert_like_mne([stc], [mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA")], piu)


# ------------------------------------------------------------ Epochs and Raw
@pytest.fixture(scope="module")
def raw(volume_setup):
    """8 s of noise starting at first_samp 250 (1 s), so raw.times differ from sample times."""
    info = volume_setup.info
    rng = np.random.default_rng(2)
    data = rng.standard_normal((len(info["ch_names"]), 2000)) * 1e-6
    data[5, 1445:1455] = 1e-2  # one artefact, for epoch rejection
    return mne.io.RawArray(data, info, first_samp=250, verbose=False)


def _epochs(raw, **kwargs):
    events = np.array([[raw.first_samp + s, 0, 1] for s in (100, 500, 1450, 1800)])
    return mne.Epochs(raw, events, tmin=-0.02, tmax=0.02, baseline=None, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def prepared_volume_inverse(volume_setup):
    """eLORETA's weights once for the module (a free volume inverse takes ~10 s)."""
    inv = volume_setup.inverse_operator
    return mne.minimum_norm.prepare_inverse_operator(inv, 1, 1 / 9, "eLORETA", verbose=False)


@pytest.mark.parametrize("preload", [False, True])
def test_epochs_not_preloaded_and_dropped(piu, prepared_volume_inverse, raw, preload):
    from mne_piunet import apply_piunet_epochs

    inv = prepared_volume_inverse
    epochs = _epochs(raw, preload=preload, reject=dict(eeg=1e-3))  # drops the artefact's epoch
    ref = mne.minimum_norm.apply_inverse_epochs(epochs, inv, 1 / 9, "eLORETA", prepared=True, verbose=False)
    assert len(ref) == 3  # MNE dropped one
    stcs = piu.apply_epochs(epochs, inv, 1 / 9, prepared=True)
    _assert_like_mne(stcs, ref, piu)
    functional = apply_piunet_epochs(
        epochs, inv, 1 / 9, prepared=True, weights=piu.weights_path, device="cpu", precision="float32"
    )
    for a, b in zip(functional, stcs):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-4 * np.abs(b.data).max())


def test_raw_times_follow_mne_with_first_samp(piu, prepared_volume_inverse, raw):
    from mne_piunet import apply_piunet_raw

    inv = prepared_volume_inverse
    ref = mne.minimum_norm.apply_inverse_raw(
        raw, inv, 1 / 9, "eLORETA", start=10, stop=40, prepared=True, verbose=False
    )
    stc = piu.apply_raw(raw, inv, 1 / 9, start=10, stop=40, buffer_size=12, prepared=True)
    assert stc.tmin == pytest.approx(ref.tmin) == pytest.approx(raw.times[10])
    _assert_like_mne([stc], [ref], piu)
    chunks = piu.apply_raw(
        raw, inv, 1 / 9, start=10, stop=40, buffer_size=12, prepared=True, return_generator=True
    )
    chunks = list(chunks)
    assert [c.shape[-1] for c in chunks] == [12, 12, 6]
    np.testing.assert_allclose(np.concatenate([c.times for c in chunks]), ref.times)
    np.testing.assert_allclose(np.concatenate([c.data for c in chunks], axis=-1), stc.data, rtol=1e-6)
    functional = apply_piunet_raw(
        raw,
        inv,
        1 / 9,
        start=10,
        stop=40,
        prepared=True,
        weights=piu.weights_path,
        device="cpu",
        precision="float32",
    )
    np.testing.assert_allclose(functional.times, ref.times)


# ------------------------------------------------------------ functional API and cache
def test_functional_api_takes_every_keyword(simulated_evoked, piu, volume_setup):
    from mne_piunet import apply_piunet

    evoked, _ = simulated_evoked(volume_setup, n_times=3)
    inv = volume_setup.inverse_operator
    ref = piu.apply(evoked, inv, 1 / 9, mni_transform=np.eye(4), subjects_dir=piu.subjects_dir)
    out = apply_piunet(
        evoked,
        inv,
        1 / 9,
        mni_transform=np.eye(4),
        subjects_dir=piu.subjects_dir,
        weights=piu.weights_path,
        device="cpu",
        batch_size=2,
        precision="float32",
    )
    # another batch size runs other convolution kernels: equal to fp32 round-off, not bit for bit
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-3, atol=1e-4 * ref.data.max())
    with pytest.raises(ValueError, match="'precision' parameter. Allowed values are 'auto', 'float32'"):
        apply_piunet(evoked, inv, 1 / 9, weights=piu.weights_path, precision="half")


def test_operator_cache_hits_and_misses(simulated_evoked, piu, volume_setup):
    inv = volume_setup.inverse_operator
    piu._operators.clear()
    evoked, _ = simulated_evoked(volume_setup, n_times=2)
    piu.apply(evoked, inv, 1 / 9)
    first = dict(piu._operators)
    piu.apply(evoked, inv, 1 / 9)  # same source space and transform: a hit
    assert piu._operators.keys() == first.keys()
    shifted = np.eye(4)
    shifted[:3, 3] = [0.002, 0.0, 0.0]
    piu.apply(evoked, inv, 1 / 9, mni_transform=shifted)  # a changed transform: a miss
    assert len(piu._operators) == 2
