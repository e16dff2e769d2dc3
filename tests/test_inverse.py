"""PIUNetInverse: the MNE-facing contract and its errors (an untrained network)."""

import warnings

import mne
import numpy as np
import pytest


@pytest.fixture(scope="module")
def volume_case(simulated_evoked, volume_setup):
    evoked, batch = simulated_evoked(volume_setup)
    return evoked, volume_setup.inverse_operator, batch


@pytest.fixture(scope="module")
def surface_case(simulated_evoked, surface_setup):
    evoked, batch = simulated_evoked(surface_setup, seed=1)
    return evoked, surface_setup.inverse_operator, batch


def test_apply_returns_standard_volume_estimates(piu, volume_case, tmp_path):
    evoked, inv, _ = volume_case
    stc = piu.apply(evoked, inv, 1 / 9)
    vec = piu.apply(evoked, inv, 1 / 9, pick_ori="vector")
    assert isinstance(stc, mne.VolSourceEstimate) and isinstance(vec, mne.VolVectorSourceEstimate)
    assert stc.data.shape == (piu.grid.n_sources, len(evoked.times))
    np.testing.assert_array_equal(stc.vertices[0], piu.src[0]["vertno"])
    np.testing.assert_allclose(np.linalg.norm(vec.data, axis=1), stc.data, rtol=1e-6)
    assert stc.tmin == evoked.tmin and stc.tstep == pytest.approx(1 / evoked.info["sfreq"])
    assert stc.subject == "fsaverage" and np.all(np.isfinite(stc.data)) and stc.data.max() > 0
    # deterministic
    np.testing.assert_array_equal(piu.apply(evoked, inv, 1 / 9).data, stc.data)
    # standard MNE tools accept it
    vertex, _ = stc.get_peak()
    assert vertex in piu.src[0]["vertno"]
    stc.save(tmp_path / "piu", overwrite=True)
    back = mne.read_source_estimate(tmp_path / "piu-vl.stc")
    np.testing.assert_allclose(back.data, stc.data, rtol=1e-5)
    img = stc.as_volume(piu.src, mri_resolution=False)
    assert img.shape[:3] == tuple(piu.src[0]["shape"])[::-1] or np.prod(img.shape[:3]) == np.prod(
        piu.src[0]["shape"]
    )


def test_refine_matches_apply_and_functional_api(piu, piu_network_only, volume_case, tiny_weights):
    from mne_piunet import apply_piunet

    evoked, inv, _ = volume_case
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    refined = piu.refine(stc_e, inv)  # with its inverse: the data-fit step too
    np.testing.assert_allclose(refined.data, piu.apply(evoked, inv, 1 / 9).data, rtol=1e-6)
    functional = apply_piunet(evoked, inv, 1 / 9, weights=tiny_weights, device="cpu", precision="float32")
    np.testing.assert_allclose(functional.data, refined.data, rtol=1e-6)
    # a source space alone has no gain: the network's map, as without the step
    alone = piu.refine(stc_e, inv["src"], mri_head_t=inv["mri_head_t"])
    np.testing.assert_allclose(alone.data, piu_network_only.apply(evoked, inv, 1 / 9).data, rtol=1e-6)
    assert not np.allclose(alone.data, refined.data, rtol=1e-3, atol=0)  # the step changes the map


def test_fixed_surface_inverse(piu_network_only, surface_case):
    piu = piu_network_only  # refine of a scalar estimate on a source space alone: no data fit
    evoked, inv, _ = surface_case
    stc = piu.apply(evoked, inv, 1 / 9, pick_ori="vector")
    assert stc.data.shape == (piu.grid.n_sources, 3, len(evoked.times))
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    refined = piu.refine(
        stc_e, inv["src"], mri_head_t=inv["mri_head_t"], normals=inv["source_nn"], pick_ori="vector"
    )
    np.testing.assert_allclose(refined.data, stc.data, rtol=1e-6)


def test_scaling_is_per_time_point_and_linear(piu, volume_case):
    evoked, inv, _ = volume_case
    a = piu.apply(evoked, inv, 1 / 9).data
    scaled = evoked.copy()
    scaled.data *= 1e3
    np.testing.assert_allclose(piu.apply(scaled, inv, 1 / 9).data, 1e3 * a, rtol=1e-4)


def test_epochs_and_raw(piu, volume_case):
    evoked, inv, _ = volume_case
    info = evoked.info
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, len(info["ch_names"]), 4)) * 1e-6
    epochs = mne.EpochsArray(data, info, verbose=False)
    stcs = piu.apply_epochs(epochs, inv, 1 / 9)
    assert len(stcs) == 3 and all(isinstance(s, mne.VolSourceEstimate) for s in stcs)
    gen = piu.apply_epochs(epochs, inv, 1 / 9, return_generator=True)
    assert not isinstance(gen, list)
    np.testing.assert_allclose(next(iter(gen)).data, stcs[0].data, rtol=1e-6)
    # one epoch through apply (nave=1 as in apply_epochs) gives the same map
    ev0 = mne.EvokedArray(data[0], info, nave=1)
    # epochs are refined together, so in other batches: equal to fp32 round-off
    np.testing.assert_allclose(piu.apply(ev0, inv, 1 / 9).data, stcs[0].data, rtol=1e-3)
    raw = mne.io.RawArray(np.concatenate(list(data), axis=1), info, verbose=False)
    stc = piu.apply_raw(raw, inv, 1 / 9, buffer_size=5)  # chunks that straddle epochs
    # raw output is float32
    np.testing.assert_allclose(
        stc.data[:, :4], stcs[0].data, rtol=1e-4, atol=1e-5 * np.abs(stcs[0].data).max()
    )
    part = piu.apply_raw(raw, inv, 1 / 9, start=2, stop=7, pick_ori="vector")
    assert part.data.shape == (piu.grid.n_sources, 3, 5)
    assert part.tmin == pytest.approx(raw.times[2])


def test_apply_raw_reads_each_chunk_once_and_checks_it(piu, volume_case, monkeypatch):
    evoked, inv, _ = volume_case
    rng = np.random.default_rng(3)
    raw = mne.io.RawArray(rng.standard_normal((len(evoked.ch_names), 12)) * 1e-6, evoked.info, verbose=False)
    reads = []
    getitem = raw._getitem  # what raw[...] and raw.get_data() both call

    def counting_getitem(item, *args, **kwargs):
        reads.append(item)
        return getitem(item, *args, **kwargs)

    monkeypatch.setattr(raw, "_getitem", counting_getitem)
    piu.apply_raw(raw, inv, 1 / 9, buffer_size=5)
    assert len(reads) == 3  # 12 samples in chunks of 5: each read once
    raw._data[3, 7] = np.nan  # in the second chunk
    with pytest.raises(ValueError, match="contain 1 NaN or infinite"):
        piu.apply_raw(raw, inv, 1 / 9, buffer_size=5)
    raw._data[4, 11] = np.inf  # and in the last chunk, streamed
    chunks = piu.apply_raw(raw, inv, 1 / 9, start=10, buffer_size=5, return_generator=True)
    with pytest.raises(ValueError, match="contain 1 NaN or infinite"):
        list(chunks)


def test_refine_errors(piu, volume_case):
    evoked, inv, _ = volume_case
    vec = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    src, trans = inv["src"], inv["mri_head_t"]
    # signed components, as a fixed-orientation estimate has them
    signed = mne.VolSourceEstimate(vec.data[:, 0], vec.vertices, vec.tmin, vec.tstep)
    with pytest.raises(TypeError, match="stc must be an instance of SourceEstimate, .*apply_inverse"):
        piu.refine(vec.data, src, mri_head_t=trans)
    with pytest.raises(ValueError, match="needs its source orientations"):
        piu.refine(signed, src, mri_head_t=trans)
    with pytest.raises(ValueError, match=r"normals must have shape \(\d+, 3\)"):
        piu.refine(signed, src, mri_head_t=trans, normals=np.ones((2, 3)))
    part = mne.VolVectorSourceEstimate(vec.data[:10], [vec.vertices[0][:10]], vec.tmin, vec.tstep)
    with pytest.raises(ValueError, match="stc has 10 sources but src has"):
        piu.refine(part, src, mri_head_t=trans)
    nan = vec.copy()
    nan.data[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        piu.refine(nan, inv)


def test_refine_refuses_what_cannot_be_an_eloreta_estimate_of_the_source_space(piu, volume_case):
    evoked, inv, _ = volume_case
    vec = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    # amplitudes (pick_ori=None) of a free/loose inverse are norms, not signed components
    amp = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    with pytest.raises(ValueError, match='free or loose orientations.*pick_ori="vector"'):
        piu.refine(amp, inv)
    with pytest.raises(ValueError, match="no negative values.*moment norms"):
        piu.refine(amp, inv["src"], mri_head_t=inv["mri_head_t"], normals=inv["source_nn"][::3])
    # the same number of sources, other vertices
    shifted = vec.copy()
    shifted.vertices = [vec.vertices[0] + 1]
    with pytest.raises(ValueError, match="stc.vertices differ from the source space"):
        piu.refine(shifted, inv)
    # dSPM's unitless values are not Am
    dspm = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "dSPM", pick_ori="vector", verbose=False)
    with pytest.raises(ValueError, match="far above any brain source in Am.*eLORETA"):
        piu.refine(dspm, inv)
    np.testing.assert_allclose(piu.refine(vec, inv).data, piu.apply(evoked, inv, 1 / 9).data, rtol=1e-6)


def test_estimate_is_odd_in_the_data(piu, volume_case, surface_case):
    for evoked, inv, _ in (volume_case, surface_case):
        flipped = evoked.copy()
        flipped.data *= -1
        vec = piu.apply(evoked, inv, 1 / 9, pick_ori="vector").data
        np.testing.assert_allclose(piu.apply(flipped, inv, 1 / 9, pick_ori="vector").data, -vec, rtol=1e-6)
        np.testing.assert_allclose(
            piu.apply(flipped, inv, 1 / 9).data, piu.apply(evoked, inv, 1 / 9).data, rtol=1e-6
        )


def test_tiny_data_give_the_same_map_scaled(piu, volume_case):
    """1e-20 V data: float32 squared norms would underflow to an all-zero map."""
    evoked, inv, _ = volume_case
    tiny = evoked.copy()
    tiny.data *= 1e-15  # ~1e-20 V
    a = piu.apply(evoked, inv, 1 / 9).data
    b = piu.apply(tiny, inv, 1 / 9).data
    assert b.max() > 0
    np.testing.assert_allclose(b * 1e15, a, rtol=1e-3, atol=1e-4 * a.max())


def test_apply_raw_bounds_follow_samples_and_never_return_unwritten_memory(piu, volume_case):
    evoked, inv, _ = volume_case
    rng = np.random.default_rng(4)
    raw = mne.io.RawArray(rng.standard_normal((len(evoked.ch_names), 25)) * 1e-6, evoked.info, verbose=False)
    for start, stop in ((-5, None), (-5, 20), (0, -1)):
        with pytest.raises(ValueError, match="is negative: pass sample indices from 0"):
            piu.apply_raw(raw, inv, 1 / 9, start=start, stop=stop)
    with pytest.raises(ValueError, match="past the end of the data"):
        piu.apply_raw(raw, inv, 1 / 9, start=25)
    for bad in (1.5, True):  # bools are refused, as for every integer argument
        with pytest.raises(TypeError, match="start must be an integer sample index or None"):
            piu.apply_raw(raw, inv, 1 / 9, start=bad)
    with pytest.raises(ValueError, match="buffer_size must be a positive integer"):
        piu.apply_raw(raw, inv, 1 / 9, buffer_size=0)
    with pytest.raises(TypeError, match="buffer_size must be a positive integer"):
        piu.apply_raw(raw, inv, 1 / 9, buffer_size=True)
    # stop past the end is clipped, as slicing does; every value is written and finite
    tail = piu.apply_raw(raw, inv, 1 / 9, start=20, stop=100, buffer_size=3)
    mne_tail = mne.minimum_norm.apply_inverse_raw(
        raw, inv, 1 / 9, "eLORETA", start=20, stop=100, verbose=False
    )
    assert tail.data.shape[1] == len(mne_tail.times) == 5 and tail.tmin == pytest.approx(mne_tail.tmin)
    whole = piu.apply_raw(raw, inv, 1 / 9).data[:, 20:]  # other chunks: equal to fp32 round-off
    np.testing.assert_allclose(tail.data, whole, rtol=1e-4, atol=1e-5 * whole.max())
    assert np.all(np.isfinite(tail.data))


def test_nan_in_a_channel_bad_only_in_the_data_is_refused(piu, volume_case):
    """MNE's inverse uses the inverse's channels whatever the data mark bad."""
    evoked, inv, _ = volume_case
    bad = evoked.copy()
    name = bad.ch_names[3]
    bad.info["bads"] = [name]
    bad.data[3, 1] = np.nan
    with pytest.raises(ValueError, match=f"channel\\(s\\) {name}.*marked bad in the data, but the inverse"):
        piu.apply(bad, inv, 1 / 9)
    raw = mne.io.RawArray(np.nan_to_num(bad.data), bad.info, verbose=False)
    raw._data[3, 1] = np.nan
    with pytest.raises(ValueError, match="marked bad in the data"):
        piu.apply_raw(raw, inv, 1 / 9)
    epochs = mne.EpochsArray(bad.data[None], bad.info, verbose=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        piu.apply_epochs(epochs, inv, 1 / 9)


def test_functional_cache_follows_the_file_and_is_bounded(tmp_path, tiny_weights, volume_case, grid):
    import shutil

    import torch

    from mne_piunet import apply_piunet
    from mne_piunet import inverse as inverse_module
    from mne_piunet.grid import grid_meta
    from mne_piunet.network import UNet3d, UNetConfig, save_network

    evoked, inv, _ = volume_case
    path = tmp_path / "w.pt"
    shutil.copy(tiny_weights, path)
    shutil.copy(tiny_weights.with_suffix(".json"), path.with_suffix(".json"))
    kwargs = dict(weights=path, device="cpu", precision="float32")
    first = apply_piunet(evoked, inv, 1 / 9, **kwargs).data
    torch.manual_seed(1)
    other = UNet3d(UNetConfig(width=8, levels=2, heads=2, groups=4), torch.from_numpy(grid.mask))
    torch.nn.init.normal_(other.out[-1].weight, std=0.05)
    save_network(other, path, dict(grid=grid_meta(grid)))  # rewritten in place, as overwrite=True does
    second = apply_piunet(evoked, inv, 1 / 9, **kwargs).data
    assert np.abs(second - first).max() > 0.01 * np.abs(first).max()  # the new network, not the cached one
    for batch_size in range(1, 7):
        apply_piunet(evoked, inv, 1 / 9, batch_size=batch_size, **kwargs)
    assert len(inverse_module._DEFAULT) <= inverse_module._DEFAULT_SIZE


def test_epochs_and_raw_refuse_label_and_time_func(piu, volume_case):
    evoked, inv, _ = volume_case
    raw = mne.io.RawArray(evoked.data, evoked.info, verbose=False)
    epochs = mne.EpochsArray(evoked.data[None], evoked.info, verbose=False)
    with pytest.raises(ValueError, match="time_func is not supported"):
        piu.apply_raw(raw, inv, 1 / 9, time_func=lambda x: x)
    for call in (
        lambda: piu.apply_raw(raw, inv, 1 / 9, label=object()),
        lambda: piu.apply_epochs(epochs, inv, 1 / 9, label=object()),
    ):
        with pytest.raises(ValueError, match="label is not supported"):
            call()


# ------------------------------------------------------------ bad input
def test_bad_inputs(piu, volume_case, volume_setup):
    evoked, inv, _ = volume_case
    with pytest.raises(TypeError, match="InverseOperator.*make_inverse_operator"):
        piu.apply(evoked, volume_setup.to_grid, 1 / 9)
    for lam in (0, -1.0):
        with pytest.raises(ValueError, match="lambda2 must be > 0"):
            piu.apply(evoked, inv, lam)
    for lam in ("1/9", True):
        with pytest.raises(TypeError, match="lambda2 must be an instance of int or float"):
            piu.apply(evoked, inv, lam)
    with pytest.raises(ValueError, match="'pick_ori' parameter. Allowed values are None and 'vector'"):
        piu.apply(evoked, inv, 1 / 9, pick_ori="normal")
    with pytest.raises(ValueError, match="'method' parameter. The only allowed value is 'eLORETA'.*apply"):
        piu.apply(evoked, inv, 1 / 9, method="dSPM")
    with pytest.raises(TypeError, match="prepared must be an instance of bool"):
        piu.apply(evoked, inv, 1 / 9, prepared="yes")
    with pytest.raises(ValueError, match="label is not supported"):
        piu.apply(evoked, inv, 1 / 9, label=object())
    complex_data = evoked.copy()
    complex_data.data = complex_data.data * (1 + 1j)
    with pytest.raises(ValueError, match="complex values.*real and imaginary parts separately"):
        piu.apply(complex_data, inv, 1 / 9)
    complex_stc = mne.minimum_norm.apply_inverse(
        evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False
    )
    complex_stc.data = complex_stc.data * 1j
    with pytest.raises(ValueError, match="complex values"):
        piu.refine(complex_stc, inv, pick_ori="vector")
    info = evoked.info
    rng = np.random.default_rng(0)
    epochs = mne.EpochsArray(rng.standard_normal((2, len(info["ch_names"]), 30)) * 1e-6, info, verbose=False)
    raw = mne.io.RawArray(rng.standard_normal((len(info["ch_names"]), 30)) * 1e-6, info, verbose=False)
    epochs.apply_hilbert(verbose=False)  # how users get complex data
    raw.apply_hilbert(verbose=False)
    for call in (lambda: piu.apply_epochs(epochs, inv, 1 / 9), lambda: piu.apply_raw(raw, inv, 1 / 9)):
        with pytest.raises(ValueError, match="complex values"):
            call()
    nan = evoked.copy()
    nan.data[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        piu.apply(nan, inv, 1 / 9)
    missing = evoked.copy().drop_channels(evoked.ch_names[:2])
    with pytest.raises(ValueError, match="2 channel.*missing from the data"):
        piu.apply(missing, inv, 1 / 9)
    empty = mne.EvokedArray(np.zeros((len(evoked.ch_names), 0)), evoked.info)
    with pytest.raises(ValueError, match="no samples"):
        piu.apply(empty, inv, 1 / 9)
    with pytest.raises(TypeError, match="evoked must be an instance of Evoked"):
        piu.apply(evoked.data, inv, 1 / 9)
    with pytest.raises(TypeError, match="src must be an instance of SourceSpaces or InverseOperator"):
        piu.refine(complex_stc, None)


def test_demo_checks_its_arguments(piu):
    from mne_piunet.demo import demo_summary, localise_demo

    with pytest.raises(TypeError, match="piu must be an instance of PIUNetInverse"):
        localise_demo(object())
    with pytest.raises(TypeError, match="montage must be an instance of str.*built-in MNE montage"):
        localise_demo(piu, montage=64)
    with pytest.raises(ValueError, match="lambda2 must be > 0"):
        localise_demo(piu, lambda2=0.0)
    with pytest.raises(TypeError, match="result must be an instance of DemoResult.*localise_demo"):
        demo_summary({})


def test_batch_size_is_a_positive_integer(tiny_weights):
    from mne_piunet import PIUNetInverse

    for bad, error in ((True, TypeError), (2.5, TypeError), ("4", TypeError), (0, ValueError)):
        with pytest.raises(error, match="batch_size must be a positive integer or None"):
            PIUNetInverse(tiny_weights, device="cpu", batch_size=bad)
    assert PIUNetInverse(tiny_weights, device="cpu", batch_size=np.int64(3)).batch_size == 3


def test_sources_in_millimetres_are_refused(piu, volume_case):
    evoked, inv, _ = volume_case
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    src = inv["src"].copy()
    src[0]["rr"] = src[0]["rr"] * 1e3
    with pytest.raises(ValueError, match="millimetres"):
        piu.refine(stc_e, src, mri_head_t=inv["mri_head_t"])


def test_weights_are_checked(tiny_weights, tmp_path):
    import shutil

    from mne_piunet import PIUNetInverse

    bad = tmp_path / "bad.pt"
    shutil.copy(tiny_weights, bad)
    shutil.copy(tiny_weights.with_suffix(".json"), bad.with_suffix(".json"))
    with open(bad, "r+b") as fid:
        fid.seek(200)
        fid.write(b"\x00" * 16)
    with pytest.raises(ValueError, match="corrupted.*sha256"):
        PIUNetInverse(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        PIUNetInverse(tmp_path / "nothing.pt")


@pytest.mark.parametrize("mode", ["stat_map", "glass_brain"])
def test_stc_plot_renders_offline(piu, mode):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = piu.grid.pos
    data = np.exp(-np.sum((pos - [-0.05, -0.02, 0.0]) ** 2, axis=1) / (2 * 0.01**2))[:, None] * [1.0, 0.5]
    stc = mne.VolSourceEstimate(data, piu.grid.vertices, 0.0, 0.01, subject="fsaverage")
    fig = stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode=mode, initial_time=0.0, show=False)
    assert fig.axes  # rendered
    plt.close("all")


def test_channel_order_and_raw_chunking_do_not_change_the_estimate(piu, volume_case):
    evoked, inv, _ = volume_case
    names = list(evoked.ch_names)
    shuffled = evoked.copy().reorder_channels(names[::-1])
    ref = piu.apply(evoked, inv, 1 / 9).data
    np.testing.assert_allclose(piu.apply(shuffled, inv, 1 / 9).data, ref, rtol=1e-5, atol=1e-6 * ref.max())
    raw = mne.io.RawArray(evoked.data, evoked.info, verbose=False)
    whole = piu.apply_raw(raw, inv, 1 / 9, buffer_size=len(raw.times)).data
    for buffer_size in (1, 2, 3):
        chunked = piu.apply_raw(raw, inv, 1 / 9, buffer_size=buffer_size).data
        # other chunks are other network batches, which run other convolution kernels: fp32 round-off
        np.testing.assert_allclose(chunked, whole, rtol=1e-3, atol=1e-4 * whole.max())


def test_repeated_calls_reuse_the_prepared_operator_and_match_a_fresh_call(
    piu, tiny_weights, volume_case, monkeypatch
):
    """MNE's eLORETA fit runs once per inverse, nave, lambda2 and options; results equal a fresh model's."""
    from mne_piunet import PIUNetInverse

    evoked, inv, _ = volume_case
    fits = []
    prepare = mne.minimum_norm.prepare_inverse_operator
    monkeypatch.setattr(
        mne.minimum_norm, "prepare_inverse_operator", lambda *a, **k: fits.append(a[1:3]) or prepare(*a, **k)
    )
    fresh = PIUNetInverse(tiny_weights, device="cpu", precision="float32")
    first = fresh.apply(evoked, inv, 1 / 9).data
    np.testing.assert_array_equal(fresh.apply(evoked, inv, 1 / 9).data, first)
    assert len(fits) == 1
    fresh.apply_epochs(mne.EpochsArray(evoked.data[None], evoked.info, verbose=False), inv, 1 / 9)
    assert len(fits) == 1  # epochs of nave 1, as the evoked: the same preparation
    fresh.apply(evoked, inv, 1 / 4)
    averaged = evoked.copy()
    averaged.nave = 7
    fresh.apply(averaged, inv, 1 / 9)
    grand = evoked.copy()
    grand.nave = 7.4  # combine_evoked and grand averages give fractional naves: their own preparation
    fresh.apply(grand, inv, 1 / 9)
    assert [f[0] for f in fits] == [1, 1, 7, 7.4] and [f[1] for f in fits] == [1 / 9, 1 / 4, 1 / 9, 1 / 9]
    # an operator changed in place is prepared anew, never taken from the cache
    changed = inv.copy()
    fresh.apply(evoked, changed, 1 / 9)
    changed["noise_cov"]["data"] = changed["noise_cov"]["data"] * 4
    n = len(fits)
    fresh.apply(evoked, changed, 1 / 9)
    assert len(fits) == n + 1
    assert len(fresh._prepared) <= 2  # bounded


def test_threads_sharing_a_model_and_an_operator_get_the_serial_result(tiny_weights, volume_case):
    """MNE's own preparation briefly sets the operator's src to None; PIUNet never lets another thread see it."""
    from concurrent.futures import ThreadPoolExecutor

    from mne_piunet import PIUNetInverse

    evoked, inv, _ = volume_case
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inv.items() if k != "src"}
    shared = PIUNetInverse(tiny_weights, device="cpu", precision="float32")
    serial = PIUNetInverse(tiny_weights, device="cpu", precision="float32").apply(evoked, inv, 1 / 9).data
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda lam: shared.apply(evoked, inv, lam).data, [1 / 9] * 4 + [1 / 4] * 2))
    for data in results[:4]:
        np.testing.assert_allclose(data, serial, rtol=1e-6, atol=1e-6 * np.abs(serial).max())
    assert inv["src"] is not None and set(before) | {"src"} == set(inv)
    assert "colorer" not in inv  # the caller's operator is never prepared in place


def test_short_data_are_warned_and_name_the_fix(volume_case):
    from mne_piunet import PIUNetInverse

    evoked, inv, _ = volume_case
    bundled = PIUNetInverse(device="cpu", precision="float32")  # a network with a temporal context
    short = evoked.copy().crop(0, 2 / evoked.info["sfreq"])
    with pytest.warns(
        RuntimeWarning, match="shorter than PIUNet's 80 ms temporal context.*crop the estimate afterwards"
    ):
        bundled.apply(short, inv, 1 / 9)
    long = mne.EvokedArray(
        np.repeat(evoked.data[:, :1], 30, axis=1), evoked.info, tmin=0.0
    )  # 30 samples at 250 Hz: 116 ms
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundled.apply(long, inv, 1 / 9)


# ------------------------------------------------------------ docs and the data fit's switch
def _documented(doc: str) -> list[str]:
    """The parameter names a numpydoc Parameters section documents, in order."""
    section = doc.split("Parameters\n")[1].split("Returns\n")[0]
    lines = [line.strip() for line in section.splitlines() if " : " in line and not line.startswith(" " * 8)]
    return [name.strip() for line in lines for name in line.split(" : ")[0].split(",")]


@pytest.mark.parametrize("method", ["apply", "apply_epochs", "apply_raw"])
def test_mirrors_document_the_methods_parameters_from_the_same_entries(method):
    """Each mirror's docs are composed from the docdict entries its method's are: no text is parsed."""
    import inspect

    from mne_piunet import PIUNetInverse, inverse

    mirror = getattr(inverse, {"apply": "apply_piunet"}.get(method, method.replace("apply", "apply_piunet")))
    meth = getattr(PIUNetInverse, method)
    for func, skip in ((meth, {"self"}), (mirror, set())):
        doc = inspect.cleandoc(func.__doc__)
        assert "%(" not in doc
        # every parameter of the signature, documented once, in the signature's order
        assert _documented(doc) == [p for p in inspect.signature(func).parameters if p not in skip]
    network = ["weights", "device", "batch_size", "precision", "data_fit"]
    mirror_doc, meth_doc = inspect.cleandoc(mirror.__doc__), inspect.cleandoc(meth.__doc__)
    assert _documented(mirror_doc) == _documented(meth_doc)[:-1] + network + ["verbose"]
    # the same text: the method's parameters and returns are in the mirror's docs word for word
    for section in ("Parameters\n----------\n", "Returns\n-------\n"):
        text = meth_doc.split(section)[1].split("\n\n")[0].split("\nverbose :")[0]
        assert text in mirror_doc


def test_the_class_takes_its_parameter_docs_from_the_docdict():
    from mne_piunet import PIUNetInverse
    from mne_piunet.utils._docs import docdict

    doc = PIUNetInverse.__doc__
    for name in ("weights", "device", "batch_size", "precision", "data_fit"):
        first, *rest = docdict[name].strip("\n").splitlines()
        assert first in doc and all(line.strip() in doc for line in rest), name
    assert "%(" not in doc


def test_rank_scaling_is_a_private_switch_of_the_instance(piu, volume_case, monkeypatch):
    """``_fit_rank_scaled = False`` on one instance (the benchmark's A/B) reaches its data fit, no other's."""
    import copy

    from mne_piunet import PIUNetInverse
    from mne_piunet import inverse as inverse_module

    evoked, inv, _ = volume_case
    seen = []
    fit = inverse_module.fit_weights
    monkeypatch.setattr(
        inverse_module, "fit_weights", lambda *a, **k: seen.append(k["rank_scaled"]) or fit(*a, **k)
    )
    flat = copy.copy(piu)
    flat._fit_rank_scaled = False
    default = piu.apply(evoked, inv, 1 / 9).data
    flat.apply(evoked, inv, 1 / 9)
    assert seen == [True, False]
    assert PIUNetInverse._fit_rank_scaled is True and piu._fit_rank_scaled is True
    np.testing.assert_array_equal(piu.apply(evoked, inv, 1 / 9).data, default)
