"""Temporal context: windows in seconds, context channels, and the MNE paths that hand them over."""

import mne
import numpy as np
import pytest
import torch

from mne_piunet.inference import (
    context_maps,
    context_margin,
    context_windows,
    predict_maps,
    step_average,
    step_kernel,
)
from mne_piunet.network import UNet3d, UNetConfig, load_network, load_weights

#: A window of 5 points over 20 ms: 2 samples either side at the test data's 250 Hz.
WINDOW = dict(window_s=0.02, window_points=5)


@pytest.fixture(scope="module")
def temporal_weights(grid, tmp_path_factory):
    """An untrained tiny network with the subspace context, saved like the bundled weights."""
    from mne_piunet.grid import grid_meta
    from mne_piunet.network import save_network

    torch.manual_seed(1)
    config = UNetConfig(width=8, levels=2, heads=2, groups=4, context="subspace", **WINDOW)
    net = UNet3d(config, torch.from_numpy(grid.mask))
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    torch.nn.init.normal_(net.context_stem.weight, std=0.05)  # it starts at zero: make it matter
    return save_network(net, tmp_path_factory.mktemp("temporal") / "temporal.pt", dict(grid=grid_meta(grid)))


@pytest.fixture(scope="module")
def tpiu(temporal_weights):
    from mne_piunet import PIUNetInverse

    return PIUNetInverse(temporal_weights, device="cpu", precision="float32")


@pytest.fixture(scope="module")
def time_course(volume_setup):
    """An Evoked of 40 samples at 250 Hz from one source with a 10 Hz burst, and its inverse."""
    from mne_piunet.simulation import simulate_demo_evoked

    evoked, _ = simulate_demo_evoked(volume_setup, snr_db=5.0, seed=2)
    return evoked.crop(0.1, 0.256), volume_setup.inverse_operator


def test_windows_are_defined_in_seconds_and_clamped_to_the_data():
    config = UNetConfig(context="power", window_s=0.08, window_points=9)
    for sfreq in (100.0, 250.0, 1000.0):
        win = context_windows(500, sfreq, config)
        assert win.shape == (500, 9)
        np.testing.assert_array_equal(win[:, 4], np.arange(500))  # the centre is the time point
        # the window spans 80 ms at any rate (to the nearest sample)
        span = (win[250, -1] - win[250, 0]) / sfreq
        assert span == pytest.approx(0.08, abs=1 / sfreq)
        assert win.min() == 0 and win.max() == 499  # edge samples repeat, none outside
        assert context_margin(sfreq, config) == win[250, -1] - 250
    # data exactly one window long keep it, whatever the rounding of seconds to samples
    for window_s, n_points in ((0.06, 11), (0.12, 21), (0.08, 9)):
        exact = UNetConfig(context="power", window_s=window_s, window_points=n_points)
        win = context_windows(n_points, (n_points - 1) / window_s, exact)
        np.testing.assert_array_equal(win[n_points // 2], np.arange(n_points))
    # an estimate without a sampling rate (MNE reads tstep=0 from .w files): instantaneous
    np.testing.assert_array_equal(context_windows(3, 0.0, config), np.repeat(np.arange(3)[:, None], 9, 1))
    # shorter than the window, or a single map: an instantaneous context
    np.testing.assert_array_equal(context_windows(5, 250.0, config), np.repeat(np.arange(5)[:, None], 9, 1))
    np.testing.assert_array_equal(context_windows(1, 250.0, config), np.zeros((1, 9), int))
    # a network without context refines each map alone
    np.testing.assert_array_equal(context_windows(4, 250.0, UNetConfig()), np.arange(4)[:, None])
    with pytest.raises(ValueError, match="odd window_points"):
        UNetConfig(context="power", window_s=0.08, window_points=4)
    with pytest.raises(ValueError, match="in_channels=9"):
        UNetConfig(context="subspace", window_s=0.08, window_points=9, in_channels=3)


def test_data_faster_than_the_network_step_are_averaged_over_one_step():
    config = UNetConfig(context="power", window_s=0.08, window_points=9)  # a 10 ms step
    # at the network's own rate or slower, without a rate, or without a context: the identity
    for sfreq, cfg in ((100.0, config), (60.0, config), (0.0, config), (1000.0, UNetConfig())):
        np.testing.assert_array_equal(step_kernel(sfreq, cfg), [1.0])
        data = np.random.default_rng(0).standard_normal((3, 50))
        assert step_average(data, sfreq, cfg) is data
    # at its own rate whatever the step's round-off (12 ms / 10 steps at 10 / 0.012 Hz is 1 + 2e-16 samples)
    odd = UNetConfig(context="power", window_s=0.012, window_points=11)
    np.testing.assert_array_equal(step_kernel(10 / 0.012, odd), [1.0])
    # a boxcar 10 ms wide sampled at 1 kHz covers 9 samples and half of the two beyond
    np.testing.assert_allclose(step_kernel(1000.0, config), np.r_[0.5, np.ones(9), 0.5] / 10)
    for sfreq in (120.0, 250.0, 600.615, 1000.0):
        kernel = step_kernel(sfreq, config)
        assert kernel.sum() == pytest.approx(1.0) and len(kernel) % 2 == 1
        np.testing.assert_allclose(kernel, kernel[::-1])
        # its spread is that of a 10 ms boxcar (variance step^2 / 12), not more, at any rate
        offsets = (np.arange(len(kernel)) - len(kernel) // 2) / sfreq
        assert np.sqrt(kernel @ offsets**2) <= 0.01 / np.sqrt(12) + 0.5 / sfreq
    # 1 kHz: an oscillation of one period per step averages away, a ramp and a constant stay
    t = np.arange(400) / 1000.0
    hum = np.sin(2 * np.pi * 100 * t)
    inner = slice(5, -5)
    np.testing.assert_allclose(step_average(hum, 1000.0, config)[inner], 0.0, atol=1e-12)
    np.testing.assert_allclose(step_average(t, 1000.0, config)[inner], t[inner], atol=1e-12)
    np.testing.assert_allclose(step_average(np.full(400, 3.0), 1000.0, config), 3.0)  # edges too
    # integers are averaged as floats; along any axis, in the data's float dtype
    np.testing.assert_allclose(step_average(np.full(400, 3), 1000.0, config), 3.0)
    block = np.random.default_rng(1).standard_normal((4, 400, 2)).astype(np.float32)
    along = step_average(block, 1000.0, config, axis=1)
    assert along.dtype == np.float32
    np.testing.assert_allclose(
        along, np.moveaxis(step_average(np.moveaxis(block, 1, -1), 1000.0, config), -1, 1), rtol=1e-6
    )


def test_apply_sees_the_data_averaged_over_the_network_step(tpiu, time_course):
    """Noise faster than the network's step (here 5 ms) never reaches it: an oscillation of one period
    per step leaves the map where data are whole steps from the edges, though eLORETA's changes."""
    evoked, inv = time_course
    fast = evoked.copy().resample(1000.0, verbose=False)  # a 5-sample step
    hum = fast.copy()
    pattern = np.random.default_rng(3).standard_normal(len(hum.ch_names))
    hum.data += 2 * np.abs(fast.data).max() * np.outer(pattern, np.sin(2 * np.pi * 200 * hum.times))
    ref, hummed = (tpiu.apply(e, inv, 1 / 9).data for e in (fast, hum))
    reach = context_margin(1000.0, tpiu.network.config) + len(step_kernel(1000.0, tpiu.network.config)) // 2
    inner = slice(reach, -reach)
    np.testing.assert_allclose(hummed[:, inner], ref[:, inner], rtol=1e-4, atol=1e-5 * ref.max())
    el_ref, el_hum = (mne.minimum_norm.apply_inverse(e, inv, 1 / 9, "eLORETA").data for e in (fast, hum))
    assert np.abs(el_hum - el_ref)[:, inner].max() > 0.5 * np.abs(el_ref).max()


@pytest.mark.parametrize("context", ["power", "subspace"])
def test_context_ignores_polarity_and_scale_and_a_repeated_map_is_the_map(context):
    rng = np.random.default_rng(0)
    window = rng.standard_normal((3, 5, 40, 3))
    channels = context_maps(window, context)
    assert channels.shape == (3, 40, 1 if context == "power" else 6) and channels.dtype == np.float32
    np.testing.assert_array_equal(context_maps(-window, context), channels)
    np.testing.assert_allclose(context_maps(1e-12 * window, context), channels, rtol=1e-5, atol=1e-6)
    # the channels differ between windows that differ over time
    assert not np.allclose(context_maps(window[:, [0, 0, 2, 4, 4]], context), channels)
    repeated = np.repeat(window[:, 2:3], 5, axis=1)
    norm = np.linalg.norm(window[:, 2], axis=-1)
    if context == "power":  # the RMS amplitude of one map is its amplitude
        np.testing.assert_allclose(
            context_maps(repeated, context)[..., 0], norm / norm.max(1, keepdims=True), rtol=1e-5
        )
    else:  # one map spans one dimension: the second principal map is zero
        lead = context_maps(repeated, context)
        assert not lead[..., 3:].any()
        np.testing.assert_allclose(
            np.abs(lead[..., :3]), np.abs(window[:, 2]) / norm.max(1)[:, None, None], rtol=1e-5
        )
    assert not context_maps(np.zeros((1, 5, 40, 3)), context).any()


def test_a_widened_network_starts_as_the_network_it_came_from(grid):
    """New input channels start at zero: step 0 of a temporal model is the model it started from."""
    torch.manual_seed(2)
    base = dict(width=8, levels=2, heads=2, groups=4, space_to_depth=2)  # folded, like the bundled model
    old = UNet3d(UNetConfig(**base), torch.from_numpy(grid.mask)).eval()
    torch.nn.init.normal_(old.out[-1].weight, std=0.05)
    config = UNetConfig(**base, context="subspace", **WINDOW)
    new = UNet3d(config, torch.from_numpy(grid.mask))
    load_weights(new, old.state_dict())
    new.eval()
    x0 = np.random.default_rng(1).standard_normal((12, grid.n_sources, 3)).astype(np.float32)
    windows = context_windows(12, 250.0, config)
    np.testing.assert_array_equal(predict_maps(new, grid, x0, windows), predict_maps(old, grid, x0))
    assert new.context_stem.weight.shape[1] == 6 * 2**3 and not new.context_stem.weight.any()
    # any other mismatch is refused
    with pytest.raises(RuntimeError, match="size mismatch|Missing|Unexpected"):
        load_weights(
            UNet3d(UNetConfig(**dict(base, width=16)), torch.from_numpy(grid.mask)), old.state_dict()
        )


def test_context_changes_the_estimate_and_each_sample_keeps_its_own(grid, temporal_weights):
    net = load_network(temporal_weights).network
    x0 = np.random.default_rng(2).standard_normal((10, grid.n_sources, 3)).astype(np.float32)
    windows = context_windows(10, 250.0, net.config)
    with_context = predict_maps(net, grid, x0, windows, batch_size=3)
    alone = predict_maps(net, grid, x0, batch_size=3)  # every map with an instantaneous context
    assert np.abs(with_context - alone).max() > 0.05 * np.abs(alone).max()
    # batch size does not matter (to fp32 round-off: other batches run other convolution
    # kernels), and a map's estimate depends on its window only
    tol = dict(rtol=1e-3, atol=1e-3 * np.abs(with_context).max())
    np.testing.assert_allclose(predict_maps(net, grid, x0, windows, batch_size=10), with_context, **tol)
    np.testing.assert_allclose(predict_maps(net, grid, x0[:6], windows[3:4]), with_context[3:4], **tol)
    # a window of one repeated map is the instantaneous context
    np.testing.assert_allclose(
        predict_maps(net, grid, x0, np.repeat(np.arange(10)[:, None], 5, 1), batch_size=3),
        alone,
        rtol=1e-5,
        atol=1e-7,
    )


def test_evoked_epochs_and_raw_hand_over_the_same_windows(tpiu, time_course):
    evoked, inv = time_course
    ref = tpiu.apply(evoked, inv, 1 / 9)
    assert ref.data.shape == (tpiu.grid.n_sources, len(evoked.times))
    np.testing.assert_allclose(ref.times, mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA").times)
    # refine of the whole estimate uses the same windows; of one time point, an instantaneous one
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector")
    np.testing.assert_allclose(tpiu.refine(stc_e, inv).data, ref.data, rtol=1e-5, atol=1e-6 * ref.data.max())
    single = tpiu.refine(stc_e.copy().crop(stc_e.times[10], stc_e.times[10]), inv)
    assert np.abs(single.data[:, 0] - ref.data[:, 10]).max() > 0.05 * ref.data[:, 10].max()
    # raw: the same windows, whatever the chunks (they overlap by the window)
    raw = mne.io.RawArray(evoked.data, evoked.info, verbose=False)
    whole = tpiu.apply_raw(raw, inv, 1 / 9, buffer_size=len(raw.times)).data
    np.testing.assert_allclose(whole, ref.data, rtol=1e-4, atol=1e-5 * ref.data.max())
    for buffer_size in (1, 3, 7):
        chunked = tpiu.apply_raw(raw, inv, 1 / 9, buffer_size=buffer_size).data
        np.testing.assert_allclose(chunked, whole, rtol=1e-3, atol=1e-4 * whole.max())
    # start/stop localise the span as if cropped
    part = tpiu.apply_raw(raw, inv, 1 / 9, start=5, stop=25, buffer_size=4)
    cropped = tpiu.apply(evoked.copy().crop(evoked.times[5], evoked.times[24]), inv, 1 / 9)
    np.testing.assert_allclose(part.data, cropped.data, rtol=1e-3, atol=1e-4 * whole.max())
    # epochs: each epoch's windows stay within the epoch, however many are batched together
    halves = np.stack([evoked.data[:, :20], evoked.data[:, 20:]])
    epochs = mne.EpochsArray(halves, evoked.info, verbose=False)
    stcs = tpiu.apply_epochs(epochs, inv, 1 / 9)
    for k, stc in enumerate(stcs):
        alone = tpiu.apply(mne.EvokedArray(halves[k], evoked.info, nave=1), inv, 1 / 9)
        np.testing.assert_allclose(stc.data, alone.data, rtol=1e-3, atol=1e-4 * alone.data.max())
    # the epoch boundary is not bridged: the first half's last map differs from the whole's
    assert np.abs(stcs[0].data[:, -1] - ref.data[:, 19]).max() > 0.05 * ref.data[:, 19].max()


def test_temporal_estimate_is_odd_and_ignores_channel_order(tpiu, time_course):
    evoked, inv = time_course
    ref = tpiu.apply(evoked, inv, 1 / 9, pick_ori="vector").data
    flipped = evoked.copy()
    flipped.data *= -1
    np.testing.assert_allclose(
        tpiu.apply(flipped, inv, 1 / 9, pick_ori="vector").data,
        -ref,
        rtol=1e-5,
        atol=1e-7 * np.abs(ref).max(),
    )
    shuffled = evoked.copy().reorder_channels(evoked.ch_names[::-1])
    np.testing.assert_allclose(
        tpiu.apply(shuffled, inv, 1 / 9, pick_ori="vector").data,
        ref,
        rtol=1e-3,
        atol=1e-5 * np.abs(ref).max(),
    )


def test_simulated_windows_are_time_courses_of_their_own_sources(volume_setup, grid):
    from mne_piunet.simulation import SourcePrior, simulate

    prior = SourcePrior(instantaneous=0.0, max_sources=3)
    batch = simulate(volume_setup, 6, np.random.default_rng(5), prior, window=(0.04, 5), snr_db=10.0)
    assert batch.sensor_window.shape == (6, 5, len(volume_setup.info["ch_names"]))
    assert batch.eloreta_window_grid.shape == (6, 5, grid.n_sources, 3)
    # the centre is the sample: its sensors, eLORETA and truth
    np.testing.assert_array_equal(batch.sensor_window[:, 2], batch.sensor)
    np.testing.assert_allclose(batch.eloreta_window_grid[:, 2], batch.eloreta_grid)
    np.testing.assert_allclose(
        (batch.sensor @ volume_setup.kernel.T).reshape(batch.true.shape), batch.eloreta, rtol=1e-10
    )
    assert np.linalg.norm(batch.true_grid, axis=-1).max(axis=1).min() > 0  # no sample is empty at its centre
    # the window changes over time, and its noise is independent over time
    assert not np.allclose(batch.sensor_window[:, 0], batch.sensor_window[:, 4])
    # each sample's windows are its own rows: unrelated samples are never one another's context
    config = UNetConfig(context="power", window_s=0.04, window_points=5)
    x0, windows = batch.network_maps(config)
    assert x0.shape == (30, grid.n_sources, 3)
    np.testing.assert_array_equal(windows // 5, np.repeat(np.arange(6)[:, None], 5, 1))
    # a recording at another rate picks its nearest samples: 9 points over 40 ms at 200 Hz
    other = simulate(volume_setup, 2, np.random.default_rng(6), prior, window=(0.04, 9))
    np.testing.assert_array_equal(other.network_maps(config)[1], [[0, 2, 4, 6, 8], [9, 11, 13, 15, 17]])
    # instantaneous chunks repeat the centre
    inst = simulate(
        volume_setup, 2, np.random.default_rng(7), SourcePrior(instantaneous=1.0), window=(0.04, 5)
    )
    np.testing.assert_array_equal(inst.sensor_window, np.repeat(inst.sensor[:, None], 5, axis=1))


def test_time_courses_are_active_at_the_centre_and_partly_correlated():
    from mne_piunet.simulation import source_time_courses

    rng = np.random.default_rng(0)
    owner = np.repeat(np.arange(400), rng.integers(1, 4, 400))
    times = np.linspace(-0.04, 0.04, 9)
    courses = source_time_courses(owner, times, rng)
    assert courses.shape == (len(owner), 9)
    np.testing.assert_allclose(np.abs(courses).max(axis=1), 1.0)
    first = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    assert np.abs(courses[first, 4]).min() > 0.3  # the map refined is never empty
    assert np.ptp(courses, axis=1).mean() > 0.3  # they change over the window
    others = np.setdiff1d(np.arange(len(owner)), first)
    lead = courses[first[owner[others]]]
    corr = [abs(np.corrcoef(a, b)[0, 1]) for a, b in zip(courses[others], lead)]
    assert 0.2 < np.mean(corr) < 0.9  # partly correlated with their sample's first source


def test_window_noise_reaches_the_requested_snr_at_the_centre():
    from mne_piunet.simulation import add_noise

    rng = np.random.default_rng(0)
    clean = rng.standard_normal((200, 7, 32)) * np.linspace(0.2, 1.0, 7)[None, :, None]
    noisy = add_noise(clean, np.full(200, 6.0), rng)
    noise = noisy - clean
    ref = lambda d: d - d.mean(-1, keepdims=True)  # noqa: E731 (EEG average reference)
    # the SNR of the map refined: the centre's signal over the window's (stationary) noise level
    snr = 10 * np.log10(ref(clean[:, 3]).var(-1) / ref(noise).var(-1).mean(-1))
    np.testing.assert_allclose(snr, 6.0, atol=1e-9)
    # independent over time: the noise of two time points is uncorrelated
    assert abs(np.corrcoef(noise[:, 0].ravel(), noise[:, 6].ravel())[0, 1]) < 0.05


def test_music_context_starts_as_power_and_scans_as_apply_does(volume_setup, grid, tmp_path):
    """'power-music': the power network it grows from at step 0; the simulated scan is apply's."""
    from mne_piunet import PIUNetInverse
    from mne_piunet.grid import grid_meta
    from mne_piunet.inference import network_inputs
    from mne_piunet.network import save_network
    from mne_piunet.physics import music_spectrum
    from mne_piunet.simulation import SourcePrior, simulate

    torch.manual_seed(3)
    base = dict(width=8, levels=2, heads=2, groups=4, space_to_depth=2, **WINDOW)
    power = UNet3d(UNetConfig(**base, context="power"), torch.from_numpy(grid.mask)).eval()
    torch.nn.init.normal_(power.out[-1].weight, std=0.05)
    torch.nn.init.normal_(power.context_stem.weight, std=0.05)
    config = UNetConfig(**base, context="power-music")
    music = UNet3d(config, torch.from_numpy(grid.mask))
    load_weights(music, power.state_dict())
    music.eval()
    # the power channels' stem is kept, the scan's starts at zero
    torch.testing.assert_close(music.context_stem.weight[:, :8], power.context_stem.weight)
    assert not music.context_stem.weight[:, 8:].any()
    batch = simulate(
        volume_setup,
        3,
        np.random.default_rng(8),
        SourcePrior(instantaneous=0.0),
        window=(0.02, 5),
        music=True,
    )
    x0, windows = batch.network_maps(config)
    assert batch.window_fit.shape == (3, grid.n_sources) and batch.window_fit.max() <= 1 + 1e-9
    # equal to round-off: the stems sum 8 and 16 input channels, which another CPU may order differently
    expected = predict_maps(power, grid, x0, windows)
    np.testing.assert_allclose(
        predict_maps(music, grid, x0, windows, fit=batch.window_fit),
        expected,
        rtol=1e-5,
        atol=1e-6 * np.abs(expected).max(),
    )
    # the scan is the context's second channel; without one it is zero
    inputs, _ = network_inputs(grid, x0, windows, config, batch.window_fit)
    np.testing.assert_array_equal(
        inputs[:, 4].reshape(3, -1)[:, grid.flat_index], music_spectrum(batch.window_fit)
    )
    assert not network_inputs(grid, x0, windows, config)[0][:, 4].any()
    # apply scans each window of a recording as the simulation scanned its samples
    torch.nn.init.normal_(music.context_stem.weight, std=0.05)
    path = save_network(music, tmp_path / "music.pt", dict(grid=grid_meta(grid)))
    piu = PIUNetInverse(path, device="cpu", precision="float32")
    info = volume_setup.info.copy()
    with info._unlock():
        info["sfreq"] = 200.0  # 5 points over 20 ms
    import mne_piunet.inverse as inverse

    scans, real = [], inverse._window_scan
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inverse, "_window_scan", lambda *a: scans.append(real(*a)) or scans[-1])
        for window in batch.sensor_window:
            evoked = mne.EvokedArray(window.T, info, tmin=-0.01, nave=1)
            piu.apply(evoked, volume_setup.inverse_operator, volume_setup.lambda2, verbose=False)
    np.testing.assert_allclose([fit[2] for fit, _ in scans], batch.window_fit, atol=1e-6)
