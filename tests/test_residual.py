"""The residual pass: eLORETA's resolution on the grid, the second pass's inputs, and networks grown into it."""

import copy
from dataclasses import replace

import mne
import numpy as np
import pytest
import torch

from mne_piunet import inference
from mne_piunet.inference import (
    GridResolution,
    PerSampleResolution,
    context_windows,
    network_inputs,
    predict_maps,
    residual_inputs,
)
from mne_piunet.network import UNet3d, UNetConfig, load_weights, save_network
from mne_piunet.physics import along_orientations, grid_to_source, to_source_frame, whiten, whitened_kernel

LAMBDA2 = 1 / 9


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretrained network without a residual pass, in float32.

    The bundled weights without a residual channels' stem (a network of its
    own, not the bundled one's first pass, which sees its input map there);
    for bundled weights without a residual pass, a copy of them.
    """
    from mne_piunet import PIUNetInverse

    bundled = PIUNetInverse(device="cpu", precision="float32")
    config = bundled.network.config
    plain = UNet3d(
        replace(config, residual_pass=False, in_channels=None, correction_width=0),
        bundled.network.mask[0, 0] > 0,
    )
    state = {k: v for k, v in bundled.bundle.network.state_dict().items() if not k.startswith("correction.")}
    fold = config.space_to_depth**3
    state["context_stem.weight"] = state["context_stem.weight"][:, : plain.n_context * fold]
    plain.load_state_dict(state)
    path = save_network(plain, tmp_path_factory.mktemp("plain") / "plain.pt", dict(bundled.bundle.meta))
    return PIUNetInverse(path, device="cpu", precision="float32")


@pytest.fixture(scope="module")
def grown(pretrained, tmp_path_factory):
    """The pretrained network grown into a residual pass (its new channels at zero), saved and loaded."""
    from mne_piunet import PIUNetInverse

    config = replace(pretrained.network.config, residual_pass=True, in_channels=None)
    net = UNet3d(config, pretrained.network.mask[0, 0] > 0)
    load_weights(net, pretrained.bundle.network.state_dict())
    path = save_network(net, tmp_path_factory.mktemp("residual") / "grown.pt", dict(pretrained.bundle.meta))
    return PIUNetInverse(path, device="cpu", precision="float32")


def _free_volume_evoked(operators, seed):
    """An Evoked of one free dipole (5 points at 50 Hz: no short-data warning) with noise, and its inverse."""
    info, fwd, inv, _ = operators["free volume"]
    rng = np.random.default_rng(seed)
    moments = np.zeros((fwd["nsource"], 3, 5))
    moments[rng.integers(fwd["nsource"])] = np.outer(rng.standard_normal(3), [0.2, 0.6, 1.0, 0.6, 0.2]) * 1e-8
    stc = mne.VolVectorSourceEstimate(moments, [s["vertno"] for s in fwd["src"]], 0.0, 0.02)
    evoked = mne.apply_forward(fwd, stc, info, verbose=False)
    evoked.set_eeg_reference(projection=True, verbose=False)
    evoked.data += 0.1 * np.abs(evoked.data).max() * rng.standard_normal(evoked.data.shape)
    return evoked, inv


@pytest.fixture(scope="module")
def eloreta_free(operators, grown):
    """The free volume inverse prepared for eLORETA at nave 1, as apply prepares it (tens of seconds)."""
    return grown._prepared_eloreta(operators["free volume"][2], 1.0, LAMBDA2, None)


def test_one_inverse_computes_its_grid_fields_once(grown, operators, eloreta_free, monkeypatch):
    """The data fit's bases and the residual pass's resolution share the grid dipoles' fields."""
    from mne_piunet import PIUNetInverse
    from mne_piunet import inverse as inverse_module

    calls, real = [], inverse_module.grid_fields
    monkeypatch.setattr(
        inverse_module, "grid_fields", lambda *a, **k: calls.append(k["nave"]) or real(*a, **k)
    )
    fresh = PIUNetInverse(grown.weights_path, device="cpu", precision="float32")
    assert fresh.data_fit and fresh.network.config.residual_pass
    inv = operators["free volume"][2]
    *_, fit, resolution = fresh._inverse_geometry(inv, eloreta_free, None, None)
    assert fit is not None and resolution is not None and calls == [eloreta_free["nave"]]
    fresh._inverse_geometry(inv, eloreta_free, None, None)
    assert len(calls) == 1  # both cached


def _ori(inv):
    return None if len(inv["source_nn"]) == inv["nsource"] else "vector"


@pytest.mark.parametrize(
    "name, method",
    [("free volume", "MNE"), ("fixed cortex", "MNE"), ("loose cortex", "MNE"), ("free volume", "eLORETA")],
)
def test_whitened_kernel_of_whitened_data_is_mnes_estimate(operators, eloreta_free, name, method):
    """whitened_kernel @ whiten is apply_inverse's estimate, in components and as vectors."""
    info, _, inv, _ = operators[name]
    nave = 1 if method == "eLORETA" else 4
    data = np.random.default_rng(0).standard_normal((len(info["ch_names"]), 3)) * 1e-6
    evoked = mne.EvokedArray(data, info, nave=nave, verbose=False)
    if method == "eLORETA":
        prepared = eloreta_free
    else:
        prepared = mne.minimum_norm.prepare_inverse_operator(inv, nave, LAMBDA2, method, verbose=False)
    assert inv["noise_cov"].ch_names == info["ch_names"]  # whiten takes the inverse's channel order
    stc = mne.minimum_norm.apply_inverse(
        evoked, prepared, LAMBDA2, method, pick_ori=_ori(inv), prepared=True, verbose=False
    )
    kernel = whitened_kernel(prepared)
    assert kernel.shape[0] == len(inv["source_nn"])
    got = kernel @ whiten(prepared, evoked.data)
    expected = along_orientations(stc.data, inv["source_nn"])
    tol = dict(rtol=1e-7, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(got, expected, **tol)
    np.testing.assert_allclose(to_source_frame(got, inv["source_nn"], inv["nsource"]), stc.data, **tol)


def test_whitened_kernel_needs_a_prepared_operator(operators):
    inv = operators["free volume"][2]
    with pytest.raises(ValueError, match="not prepared.*prepare_inverse_operator"):
        whitened_kernel(inv)
    with pytest.raises(TypeError, match="prepared_inverse must be an instance of"):
        whitened_kernel(dict(inv))


@pytest.mark.parametrize("name", ["free volume", "fixed cortex", "loose cortex"])
def test_to_source_frame_undoes_along_orientations(operators, name):
    inv = operators[name][2]
    nn, n_src = inv["source_nn"], inv["nsource"]
    rng = np.random.default_rng(1)
    fixed = len(nn) == n_src
    values = rng.standard_normal((n_src, 2) if fixed else (n_src, 3, 2))
    components = along_orientations(values, nn)
    if fixed:  # amplitudes along fixed orientations are the components themselves
        np.testing.assert_array_equal(to_source_frame(components, nn, n_src), values)
    else:  # and the other way round: an orthonormal frame per source
        np.testing.assert_allclose(to_source_frame(components, nn, n_src), values, atol=1e-12)
        np.testing.assert_allclose(
            along_orientations(to_source_frame(components, nn, n_src), nn), components, atol=1e-12
        )
    with pytest.raises(ValueError, match="one row per orientation"):
        to_source_frame(components[:-1], nn, n_src)
    with pytest.raises(ValueError, match="one row per orientation"):
        to_source_frame(components, nn, n_src + 1)


@pytest.mark.parametrize(
    "name, method", [("free volume", "eLORETA"), ("fixed cortex", "MNE"), ("loose cortex", "MNE")]
)
def test_resolution_is_mnes_estimate_of_the_data_a_grid_map_makes(
    grid, operators, pretrained, grown, eloreta_free, name, method
):
    """R m is MNE's estimate of the data (apply_forward) of a grid map's moments, moved onto the grid as apply moves it.

    apply builds R with eLORETA's kernel; R is the same product for any
    linear kernel, so the cortex inverses use MNE's (eLORETA takes minutes there).
    """
    from mne_piunet.inverse import _lazy_grid_fields, _onto_grid

    info, fwd, inv, _ = operators[name]
    if method == "eLORETA":
        prepared = eloreta_free
        op, rot, normals, _, resolution = grown._inverse_geometry(inv, prepared, None, None)
        fields = _lazy_grid_fields(inv, op, rot, prepared["nave"])
        assert grown._resolution(inv, prepared, op, rot, normals, fields) is resolution  # cached
        # no residual pass: no resolution
        assert pretrained._resolution(inv, prepared, op, rot, normals, fields) is None
    else:
        # and averaged data: the kernel and the fields are whitened for the same nave
        prepared = mne.minimum_norm.prepare_inverse_operator(inv, 4, LAMBDA2, method, verbose=False)
        op, rot = grown._operator(inv["src"], inv["mri_head_t"], None, None)
        normals = inv["source_nn"] if name == "fixed cortex" else None
        resolution = grown._resolution(inv, prepared, op, rot, normals, _lazy_grid_fields(inv, op, rot, 4))
    assert isinstance(resolution, GridResolution)
    back = grid_to_source(op)
    reached = np.flatnonzero(np.asarray(back.sum(axis=0)).ravel() > 0)  # grid points with sources
    rng = np.random.default_rng(2)
    maps = np.zeros((3, grid.n_sources, 3))
    maps[0, rng.choice(reached)] = rng.standard_normal(3)  # one dipole
    maps[1, rng.choice(reached, 3, replace=False)] = rng.standard_normal((3, 3))  # three
    maps[2] = 0.1 * rng.standard_normal((grid.n_sources, 3))  # everywhere
    maps *= 1e-8  # Am
    # the map's moments on the inverse's sources, in their frame (rot: source -> template frame)
    moved = np.stack([back @ maps[:, :, k].T for k in range(3)], axis=1)  # (n_src, 3, n)
    moments = np.einsum("kj,ikt->ijt", rot.astype(np.float64), moved)
    if name == "fixed cortex":  # a fixed inverse's sources have their normals' components alone
        nn = inv["source_nn"]
        moments = nn[:, :, None] * np.einsum("ij,ijt->it", nn, moments)[:, None]
    kind = mne.VolVectorSourceEstimate if name == "free volume" else mne.VectorSourceEstimate
    stc = kind(moments, [s["vertno"] for s in fwd["src"]], 0.0, 0.01)
    produced = mne.apply_forward(fwd, stc, info, verbose=False)
    produced.set_eeg_reference(projection=True, verbose=False)
    produced.nave = prepared["nave"]
    estimate = mne.minimum_norm.apply_inverse(
        produced, prepared, LAMBDA2, method, pick_ori=_ori(inv), prepared=True, verbose=False
    )
    expected = np.moveaxis(_onto_grid(estimate.data.astype(np.float32), op, rot, normals), 1, 0)
    got = resolution(torch.from_numpy(maps.astype(np.float32)))
    assert got.dtype == torch.float32 and got.shape == maps.shape
    for g, e in zip(got.numpy(), expected):
        assert np.abs(e).max() > 0
        np.testing.assert_allclose(g, e, atol=1e-5 * np.abs(e).max())


@pytest.mark.parametrize("setup", ["volume_setup", "surface_setup"])
def test_simulated_resolution_is_the_kernel_times_the_leadfield(request, grid, setup):
    """PreparedSetup.resolution: the setup's own eLORETA kernel of its leadfield's data, on the grid."""
    p = request.getfixturevalue(setup)
    rng = np.random.default_rng(3)
    maps = np.zeros((2, grid.n_sources, 3))
    maps[0, rng.integers(grid.n_sources)] = rng.standard_normal(3)
    maps[1] = 0.1 * rng.standard_normal((grid.n_sources, 3))
    back = grid_to_source(p.to_grid)
    moved = np.stack([back @ maps[:, :, k].T for k in range(3)], axis=-1)  # (n_src, n, 3)
    if p.free:  # moment vectors in the template MRI frame, source by source
        sources = np.moveaxis(moved, 1, 2).reshape(-1, len(maps))
    else:  # amplitudes along the normals
        sources = np.einsum("ik,itk->it", p.normals, moved)
    estimate = p.kernel @ (p.leadfield @ sources)  # (n_components, n)
    expected = p.grid_values(
        np.moveaxis(estimate.reshape(p.n_sources, 3, -1), -1, 0) if p.free else estimate.T
    )
    got = p.resolution(torch.from_numpy(maps.astype(np.float32))).numpy()
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5 * np.abs(e).max())
        assert np.abs(e).max() > 0


def test_grid_resolution_is_the_kernel_of_the_fields(grid):
    """R m = K (F m), checked on small random arrays; mismatched shapes are refused."""
    rng = np.random.default_rng(4)
    kernel, fields = rng.standard_normal((2, 5, 7, 3))
    maps = rng.standard_normal((2, 7, 3))
    expected = np.einsum("wgk,nw->ngk", kernel, np.einsum("wgk,ngk->nw", fields, maps))
    got = GridResolution(kernel, fields)(torch.from_numpy(maps.astype(np.float32)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="same shape"):
        GridResolution(kernel, fields[:, :6])
    with pytest.raises(ValueError, match="same shape"):
        GridResolution(kernel[..., :2], fields[..., :2])


def _identity(maps, rows=None):
    return maps


def _dense(grid, rng, n, channels):
    """Random float32 values inside the brain, zero outside: (n, channels, *grid.shape)."""
    flat = np.zeros((n, channels, int(np.prod(grid.shape))), np.float32)
    flat[:, :, grid.flat_index] = rng.standard_normal((n, channels, grid.n_sources))
    return torch.from_numpy(flat.reshape(n, channels, *grid.shape))


def test_residual_inputs_are_what_the_estimate_leaves_unexplained(grid, volume_setup):
    """x0 - a R m: empty and perfect estimates, the estimate's scale and sign, and the inputs untouched."""
    rng = np.random.default_rng(5)
    inputs = _dense(grid, rng, 3, 7)  # the map, a context channel, the residual channels (stale)
    estimate = _dense(grid, rng, 3, 3)
    before, est_before = inputs.clone(), estimate.clone()
    rows = np.arange(3)
    x0 = inputs[:, :3]
    # an empty estimate explains nothing: the residual is the input map, all else the inputs'
    out = residual_inputs(inputs, torch.zeros_like(estimate), grid, _identity, rows)
    torch.testing.assert_close(out[:, -3:], x0, rtol=0, atol=0)
    torch.testing.assert_close(out[:, :-3], inputs[:, :-3], rtol=0, atol=0)
    # an estimate whose R is a multiple of the input map explains all of it
    out = residual_inputs(inputs, 2 * x0, grid, _identity, rows)
    assert out[:, -3:].abs().max() <= 1e-6 * x0.abs().max()
    # through eLORETA's resolution: the residual is orthogonal to R m (least squares) and inside the brain
    resolution = volume_setup.resolution
    out = residual_inputs(inputs, estimate, grid, resolution, rows)
    m = np.ascontiguousarray(grid.from_dense(estimate.numpy()))
    rm = grid.to_dense(resolution(torch.from_numpy(m)).numpy())
    residual = out[:, -3:].numpy()
    for r, fit, x in zip(residual, rm, x0.numpy()):
        assert abs((r * fit).sum()) <= 1e-4 * np.linalg.norm(r) * np.linalg.norm(fit)
        assert np.linalg.norm(r - x) > 1e-3 * np.linalg.norm(x)  # the estimate does explain some
    assert not residual[:, :, ~grid.mask].any()
    # neither the estimate's scale nor its polarity counts; the inputs' polarity flips the residual
    tol = dict(rtol=1e-4, atol=1e-5 * np.abs(residual).max())
    np.testing.assert_allclose(
        residual_inputs(inputs, -3 * estimate, grid, resolution, rows).numpy(), out.numpy(), **tol
    )
    np.testing.assert_allclose(
        residual_inputs(-inputs, estimate, grid, resolution, rows)[:, -3:].numpy(), -residual, **tol
    )
    # the caller's tensors are untouched
    assert torch.equal(inputs, before) and torch.equal(estimate, est_before)


def test_each_sample_gets_its_own_setups_resolution(grid):
    """PerSampleResolution: map i of a call with rows r uses resolutions[index[r[i]]]."""
    other = lambda maps: -2 * maps.roll(1, dims=1)  # noqa: E731
    per = PerSampleResolution({0: _identity, 1: other}, np.array([1, 0, 1, 0]))
    maps = torch.randn(3, grid.n_sources, 3)
    out = per(maps, np.array([2, 1, 0]))
    torch.testing.assert_close(out[0], other(maps[:1])[0])
    torch.testing.assert_close(out[1], maps[1])
    torch.testing.assert_close(out[2], other(maps[2:])[0])


def test_residual_pass_adds_three_input_channels_last(grid):
    power = dict(context="power", window_s=0.08, window_points=9)
    assert UNetConfig().in_channels == 3 and UNetConfig(residual_pass=True).in_channels == 6
    assert UNetConfig(**power).in_channels == 4 and UNetConfig(residual_pass=True, **power).in_channels == 7
    with pytest.raises(ValueError, match="residual_pass=True needs in_channels=6"):
        UNetConfig(residual_pass=True, in_channels=3)
    with pytest.raises(ValueError, match="residual_pass=False needs in_channels=4"):
        UNetConfig(in_channels=7, **power)
    # the first pass's residual channels: the centre map again (the residual of an empty estimate)
    config = UNetConfig(residual_pass=True, **power)
    x0 = np.random.default_rng(6).standard_normal((5, grid.n_sources, 3))
    windows = context_windows(5, 250.0, config)
    inputs, scale = network_inputs(grid, x0, windows, config)
    plain, plain_scale = network_inputs(grid, x0, windows, UNetConfig(**power))
    assert inputs.shape == (5, 7) + grid.shape
    np.testing.assert_array_equal(inputs[:, :4], plain)
    np.testing.assert_array_equal(inputs[:, 4:], inputs[:, :3])
    np.testing.assert_array_equal(scale, plain_scale)


def test_simulated_samples_get_their_setups_resolutions(grid, volume_setup, surface_setup):
    from mne_piunet.simulation import batch_resolution, sample_resolution, simulate

    setups = [volume_setup, surface_setup]
    with pytest.raises(ValueError, match="not among the given ones.*nowhere"):
        sample_resolution(setups, [volume_setup.name, "nowhere"])
    twin = copy.copy(volume_setup)
    twin.lambda2 = volume_setup.lambda2 / 2  # a name does not tell these two apart
    with pytest.raises(ValueError, match="Two setups are named"):
        sample_resolution([volume_setup, twin], [volume_setup.name])
    chunks = [
        simulate(surface_setup, 2, np.random.default_rng(7), n_sources=1),
        simulate(volume_setup, 1, np.random.default_rng(8), n_sources=1),
    ]
    assert batch_resolution(chunks, setups, None) is None
    assert batch_resolution(chunks, setups, UNetConfig()) is None  # no residual pass
    per = batch_resolution(chunks, setups, UNetConfig(residual_pass=True))
    np.testing.assert_array_equal(per.index, [1, 1, 0])
    maps = torch.randn(2, grid.n_sources, 3)
    out = per(maps, np.array([2, 0]))
    torch.testing.assert_close(out[:1], volume_setup.resolution(maps[:1]))
    torch.testing.assert_close(out[1:], surface_setup.resolution(maps[1:]))


def _spy_on_residual_inputs(monkeypatch) -> list:
    """Record the batch size of every second pass predict_maps runs."""
    calls, real = [], inference.residual_inputs
    monkeypatch.setattr(
        inference, "residual_inputs", lambda inputs, *a: calls.append(len(inputs)) or real(inputs, *a)
    )
    return calls


@pytest.fixture(scope="module")
def maps_and_windows(grid, pretrained):
    """Four random maps and their windows for the pretrained network's 'power' context."""
    x0 = np.random.default_rng(9).standard_normal((4, grid.n_sources, 3)).astype(np.float32)
    return x0, context_windows(4, 250.0, pretrained.network.config)


def test_a_grown_network_starts_as_the_network_it_came_from(
    grid, operators, pretrained, grown, eloreta_free, volume_setup, maps_and_windows, monkeypatch
):
    """At step 0 the grown network computes the pretrained one's maps, in both passes and through apply."""
    config = grown.network.config
    assert config.residual_pass and config.in_channels == pretrained.network.config.in_channels + 3
    fold = config.space_to_depth**3
    stem = grown.network.context_stem.weight
    torch.testing.assert_close(stem[:, : -3 * fold], pretrained.network.context_stem.weight, rtol=0, atol=0)
    assert stem.shape[1] == (config.in_channels - 3) * fold and not stem[:, -3 * fold :].any()
    x0, windows = maps_and_windows
    expected = predict_maps(pretrained.network, grid, x0, windows)
    calls = _spy_on_residual_inputs(monkeypatch)
    tol = dict(rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    for resolution in (None, volume_setup.resolution):
        np.testing.assert_allclose(
            predict_maps(grown.network, grid, x0, windows, resolution=resolution), expected, **tol
        )
    assert calls == [4]  # the second pass ran, once, where a resolution was given
    # apply: the resolution comes from the user's inverse (5 points at 50 Hz: no short-data warning)
    evoked, inv = _free_volume_evoked(operators, seed=10)
    # the two share eLORETA's preparation (tens of seconds; grown's is made by eloreta_free)
    monkeypatch.setattr(pretrained, "_prepared", grown._prepared)
    calls.clear()
    expected_apply = pretrained.apply(evoked, inv, LAMBDA2, pick_ori="vector", verbose=False).data
    assert calls == []
    refined = grown.apply(evoked, inv, LAMBDA2, pick_ori="vector", verbose=False).data
    assert calls == [5]
    np.testing.assert_allclose(refined, expected_apply, rtol=1e-5, atol=1e-6 * np.abs(expected_apply).max())
    # an operator the caller prepared for eLORETA has no gain to rebuild: the first pass alone, and a warning
    calls.clear()
    with pytest.warns(RuntimeWarning, match="residual pass is skipped"):
        grown.apply(evoked, eloreta_free, LAMBDA2, prepared=True, pick_ori="vector", verbose=False)
    assert calls == []


def test_refine_runs_the_residual_pass_with_the_estimates_lambda2(
    grown, operators, eloreta_free, tmp_path, monkeypatch
):
    """refine of an eLORETA estimate with its inverse and lambda2 is apply; without lambda2, a warning and the first pass."""
    from mne_piunet import PIUNetInverse

    net = copy.deepcopy(grown.network)
    fold = net.config.space_to_depth**3
    torch.manual_seed(12)
    with torch.no_grad():  # a residual stem that matters, as a trained one does
        torch.nn.init.normal_(net.context_stem.weight[:, -3 * fold :], std=0.05)
    piu = PIUNetInverse(
        save_network(net, tmp_path / "trained.pt", dict(grown.bundle.meta)), precision="float32"
    )
    monkeypatch.setattr(piu, "_prepared", grown._prepared)  # eLORETA's preparation (nave 1) is eloreta_free's
    evoked, inv = _free_volume_evoked(operators, seed=13)
    # apply prepares eLORETA at nave 4, refine at nave 1: the resolution's scale does not count
    evoked.nave = 4
    applied = piu.apply(evoked, inv, LAMBDA2, pick_ori="vector", verbose=False).data
    eloreta = mne.minimum_norm.apply_inverse(
        evoked, inv, LAMBDA2, "eLORETA", pick_ori="vector", verbose=False
    )
    tol = dict(rtol=1e-5, atol=1e-6 * np.abs(applied).max())
    np.testing.assert_allclose(
        piu.refine(eloreta, inv, lambda2=LAMBDA2, pick_ori="vector").data, applied, **tol
    )
    with pytest.warns(RuntimeWarning, match="residual pass, which needs the lambda2"):
        first = piu.refine(eloreta, inv, pick_ori="vector").data
    assert np.abs(first - applied).max() > 5e-3 * np.abs(applied).max()
    # an operator prepared for eLORETA has no gain to rebuild: the first pass, and a warning that says why
    with pytest.warns(RuntimeWarning, match="prepared for eLORETA"):
        prepared = piu.refine(eloreta, eloreta_free, lambda2=LAMBDA2, pick_ori="vector").data
    assert np.abs(prepared - applied).max() > 5e-3 * np.abs(applied).max()
    with pytest.raises(ValueError, match="lambda2"):
        piu.refine(eloreta, inv, lambda2=-1.0)
    # a source space alone has no gain: lambda2 cannot be used, and a warning says so
    with pytest.warns(RuntimeWarning, match="lambda2 is unused"):
        piu.refine(eloreta, inv["src"], lambda2=LAMBDA2, mri_head_t=inv["mri_head_t"])
    # the estimate's eLORETA options reach the residual pass's kernel, as lambda2 does
    seen = []
    real = piu._prepared_eloreta
    monkeypatch.setattr(piu, "_prepared_eloreta", lambda *a: seen.append(a[1:]) or real(*a))
    piu.refine(eloreta, inv, lambda2=LAMBDA2, method_params=dict(max_iter=20))
    assert seen == [(1.0, LAMBDA2, dict(max_iter=20))]


def test_the_second_pass_sees_the_residual_once_its_stem_is_trained(
    grid, grown, volume_setup, surface_setup, maps_and_windows, monkeypatch
):
    """With a non-zero residual stem, a resolution changes the maps; without one the first pass is the answer."""
    net = copy.deepcopy(grown.network)
    fold = net.config.space_to_depth**3  # folded channels per input channel, channel-major
    torch.manual_seed(11)
    with torch.no_grad():
        torch.nn.init.normal_(net.context_stem.weight[:, -3 * fold :], std=0.05)
    x0, windows = maps_and_windows
    resolution = volume_setup.resolution
    calls = _spy_on_residual_inputs(monkeypatch)
    first = predict_maps(net, grid, x0, windows)
    assert calls == []  # resolution=None: the first pass alone
    second = predict_maps(net, grid, x0, windows, resolution=resolution)
    assert np.abs(second - first).max() > 5e-3 * np.abs(first).max()  # round-off: 1e-6
    # an empty prediction leaves the input map as the residual: the second pass repeats the first
    empty = lambda maps, rows: torch.zeros_like(maps)  # noqa: E731
    tol = dict(rtol=1e-5, atol=1e-6 * np.abs(first).max())
    np.testing.assert_allclose(predict_maps(net, grid, x0, windows, resolution=empty), first, **tol)
    # the second pass is the network on residual_inputs of its first
    inputs, scale = network_inputs(grid, x0, windows, net.config)
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        again = net.estimate(residual_inputs(x, net.estimate(x), grid, resolution, np.arange(len(x))))
    np.testing.assert_allclose(grid.from_dense(again.numpy()) * scale[:, None, None], second, **tol)
    # per-sample resolutions follow each map across batches (rows are the maps' own)
    other = predict_maps(net, grid, x0, windows, resolution=surface_setup.resolution)
    assert np.abs(other - second).max() > 5e-3 * np.abs(second).max()
    index = np.array([0, 1, 0, 1])  # the second batch (row 3) is not its first row's setup
    per = PerSampleResolution([resolution, surface_setup.resolution], index)
    mixed = predict_maps(net, grid, x0, windows, resolution=per, batch_size=3)
    expected = np.where(index[:, None, None] == 0, second, other)
    # to round-off: batches of 3 and 1 run other convolution kernels than one of 4
    np.testing.assert_allclose(mixed, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_a_correction_network_needs_the_residual_pass_and_a_width_of_whole_groups():
    assert (
        UNetConfig(residual_pass=True, correction_width=8).in_channels == 6
    )  # the same inputs as a shared pass
    for bad in (
        dict(correction_width=8),
        dict(residual_pass=True, correction_width=12),
        dict(residual_pass=True, correction_width=-8),
    ):
        with pytest.raises(ValueError, match="A correction network needs residual_pass=True"):
            UNetConfig(**bad)


def test_a_correction_network_starts_at_zero_and_corrects_the_first_pass(
    grid, pretrained, volume_setup, maps_and_windows, monkeypatch, tmp_path
):
    """Grown from pretrained weights it computes their maps; trained, it changes the second pass only."""
    from mne_piunet.network import load_network

    config = replace(pretrained.network.config, residual_pass=True, in_channels=None, correction_width=16)
    net = UNet3d(config, pretrained.network.mask[0, 0] > 0)
    torch.manual_seed(12)
    with torch.no_grad():  # whatever it held before, a correction the weights lack starts at zero
        for p in net.correction.parameters():
            p.normal_()
    load_weights(net, pretrained.bundle.network.state_dict())
    main = {k: v for k, v in net.state_dict().items() if not k.startswith("correction.")}
    torch.testing.assert_close(main, pretrained.bundle.network.state_dict(), rtol=0, atol=0)
    x0, windows = maps_and_windows
    expected = predict_maps(pretrained.network, grid, x0, windows)
    calls = _spy_on_residual_inputs(monkeypatch)
    tol = dict(rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(
        predict_maps(net, grid, x0, windows, resolution=volume_setup.resolution), expected, **tol
    )
    assert calls == [4]
    # a trained correction: the first pass is still the pretrained network's, the second is corrected
    with torch.no_grad():
        torch.nn.init.normal_(net.correction.out[-1].weight, std=0.05)
        net.correction.amplitude.bias.fill_(0.3)
    np.testing.assert_allclose(predict_maps(net, grid, x0, windows), expected, **tol)
    second = predict_maps(net, grid, x0, windows, resolution=volume_setup.resolution)
    assert np.abs(second - expected).max() > 5e-3 * np.abs(expected).max()
    # the second pass: predict_maps hands the correction the first pass's shape and peak ratio and its residual
    inputs, scale = network_inputs(grid, x0, windows, net.config)
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        shape, log_ratio = net(x)
        second_inputs = residual_inputs(
            x, net.scale(shape, log_ratio), grid, volume_setup.resolution, np.arange(4)
        )
        d_shape, d_log_ratio = net.correction(torch.cat([x[:, :3], shape, second_inputs[:, -3:]], dim=1))
        torch.testing.assert_close(d_log_ratio, torch.full((4,), 0.3))
        again = net.scale((shape + d_shape) * net.mask, log_ratio + d_log_ratio)
    np.testing.assert_allclose(grid.from_dense(again.numpy()) * scale[:, None, None], second, **tol)
    # inputs made for another config are refused, not silently cut
    with pytest.raises(ValueError, match="takes 7 input channels, got 4"):
        net(x[:, :4])
    # saved and loaded with its correction
    path = save_network(net, tmp_path / "corrected.pt", dict(pretrained.bundle.meta))
    loaded = load_network(path).network
    assert loaded.config.correction_width == 16
    torch.testing.assert_close(loaded.state_dict(), net.state_dict(), rtol=0, atol=0)
    # part of a correction network is a mismatch, not a fresh start
    state = {k: v for k, v in net.state_dict().items() if k != "correction.stem.weight"}
    with pytest.raises(RuntimeError, match="correction.stem.weight"):
        load_weights(UNet3d(config, pretrained.network.mask[0, 0] > 0), state)
