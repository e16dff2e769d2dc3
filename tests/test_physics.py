"""The physics in an inverse operator: its gain against MNE's forward, residuals against MNE's definition."""

import mne
import numpy as np
import pytest

from mne_piunet.physics import (
    explained_variance,
    grid_to_source,
    predict_whitened,
    source_components,
    whitened_gain,
)


def _whitener(inv, nave=1):
    prepared = mne.minimum_norm.prepare_inverse_operator(inv, nave, 1 / 9, "MNE", verbose=False)
    return prepared, prepared["whitener"] @ prepared["proj"]


@pytest.mark.parametrize("name", ["free volume", "fixed cortex", "loose cortex"])
def test_whitened_gain_is_mnes_forward_whitened_and_projected(operators, name):
    info, _, inv, used = operators[name]
    picks = [used["sol"]["row_names"].index(c) for c in inv["noise_cov"].ch_names]
    _, white = _whitener(inv)
    expected = white @ used["sol"]["data"][picks]
    gain = whitened_gain(inv)
    assert gain.shape == expected.shape
    np.testing.assert_allclose(gain, expected, atol=1e-8 * np.abs(expected).max())
    # the same product without forming the gain, and the noise of nave-averaged data
    x = np.random.default_rng(0).standard_normal((gain.shape[1], 3)) * 1e-9
    np.testing.assert_allclose(predict_whitened(inv, x), gain @ x, rtol=1e-6, atol=1e-12)
    _, white4 = _whitener(inv, nave=4)
    np.testing.assert_allclose(
        predict_whitened(inv, x, nave=4),
        white4 @ used["sol"]["data"][picks] @ x,
        rtol=1e-6,
        atol=1e-6 * np.abs(gain @ x).max(),
    )


def test_eloreta_of_the_predicted_data_is_mnes_estimate_of_the_sources(operators):
    """apply_inverse of gain @ x equals MNE's estimate of the data x produces (apply_forward)."""
    info, fwd, inv, _ = operators["free volume"]
    n_src = fwd["nsource"]
    rng = np.random.default_rng(1)
    x = np.zeros((n_src, 3, 2))
    x[rng.choice(n_src, 3, replace=False)] = rng.standard_normal((3, 3, 2)) * 1e-8
    stc = mne.VolVectorSourceEstimate(x, [s["vertno"] for s in fwd["src"]], 0.0, 0.01)
    produced = mne.apply_forward(fwd, stc, info, verbose=False)
    produced.set_eeg_reference(projection=True, verbose=False)
    prepared, _ = _whitener(inv)
    predicted = produced.copy()
    predicted.data = prepared["colorer"] @ predict_whitened(inv, x.reshape(3 * n_src, 2))
    a, b = (
        mne.minimum_norm.apply_inverse(e, inv, 1 / 9, "MNE", verbose=False).data
        for e in (produced, predicted)
    )
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())


def test_grid_to_source_hands_each_grid_moment_back_whole(grid, operators):
    from mne_piunet.grid import to_template_space

    inv = operators["fixed cortex"][2]
    src = inv["src"]
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    affine, _ = to_template_space(src, mri_head_t=inv["mri_head_t"])
    to_grid = grid.resampler(mne.transforms.apply_trans(affine, rr))
    back = grid_to_source(to_grid)
    assert back.shape == (len(rr), grid.n_sources)
    sums = np.asarray(back.sum(axis=0)).ravel()
    reached = np.asarray(to_grid.sum(axis=1)).ravel() > 0
    np.testing.assert_allclose(sums[reached], 1.0, rtol=1e-6)
    assert np.all(sums[~reached] == 0) and (~reached).any()  # white matter: no cortical source
    # moment vectors: onto fixed orientations they give each normal's projection
    vectors = np.zeros((grid.n_sources, 3, 1))
    vectors[np.flatnonzero(reached)[0]] = [[1e-9], [0.0], [0.0]]
    nn = operators["fixed cortex"][2]["source_nn"]
    comps = source_components(vectors, back, np.eye(3), nn)
    np.testing.assert_allclose(
        comps[:, 0], 1e-9 * (back[:, np.flatnonzero(reached)[0]].toarray().ravel() * nn[:, 0])
    )


def test_explained_variance_is_mnes():
    data = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert explained_variance(data, data) == pytest.approx(100.0)
    assert explained_variance(data, 0 * data) == pytest.approx(0.0)
    assert explained_variance(data, 2 * data) == pytest.approx(0.0)
    assert explained_variance(data, -data) == pytest.approx(-300.0)


def test_return_residual_is_the_data_minus_the_estimates_forward(piu, operators):
    """MNE's definition: the residual is the data minus the projected forward of the estimate."""
    info, fwd, inv, _ = operators["loose cortex"]
    rng = np.random.default_rng(2)
    evoked = mne.EvokedArray(rng.standard_normal((len(info["ch_names"]), 3)) * 1e-6, info, nave=4)
    before = evoked.data.copy()
    with mne.utils.catch_logging() as log:
        stc, residual = piu.apply(evoked, inv, 1 / 9, pick_ori="vector", return_residual=True, verbose=True)
    assert "explains" in log.getvalue()
    np.testing.assert_array_equal(evoked.data, before)  # the caller's evoked is untouched
    assert isinstance(residual, mne.Evoked) and residual.data.shape == evoked.data.shape
    # the estimate back on the inverse's sources, then MNE's own forward
    op, rot, *_ = piu._inverse_geometry(inv, None, None, None)
    comps = source_components(stc.data, grid_to_source(op), rot, inv["source_nn"])
    moments = mne.VectorSourceEstimate(
        np.einsum("ipj,ipt->ijt", inv["source_nn"].reshape(-1, 3, 3), comps.reshape(-1, 3, 3)),
        [s["vertno"] for s in fwd["src"]],
        0.0,
        1.0,
    )
    predicted = mne.apply_forward(fwd, moments, info, verbose=False).data
    projected = predicted - predicted.mean(axis=0)  # the average reference projector, EEG alone
    np.testing.assert_allclose(residual.data, evoked.data - projected, atol=1e-6 * np.abs(evoked.data).max())
    assert np.abs(projected).max() > 1e-3 * np.abs(evoked.data).max()  # the prediction is not empty


def test_residual_needs_the_unprepared_operator(piu, operators):
    info, _, inv, _ = operators["free volume"]
    evoked = mne.EvokedArray(np.full((len(info["ch_names"]), 1), 1e-6), info)
    prepared = mne.minimum_norm.prepare_inverse_operator(inv, 1, 1 / 9, "eLORETA", verbose=False)
    with pytest.raises(ValueError, match="prepared for eLORETA.*prepared=False"):
        piu.apply(evoked, prepared, 1 / 9, prepared=True, return_residual=True)
    piu.apply(evoked, prepared, 1 / 9, prepared=True)  # without the residual it works


def test_a_single_grid_dipole_fits_its_own_data_best(grid, operators):
    """A noise-free dipole at a grid point: its fit there is 1, and its neighbourhood's weight peaks there."""
    from mne_piunet.grid import to_template_space
    from mne_piunet.physics import (
        grid_dipole_bases,
        grid_fields,
        local_fit_weights,
        signal_subspace,
        subspace_fit,
        window_fit_weights,
    )

    _, _, inv, _ = operators["free volume"]
    affine, rot = to_template_space(inv["src"], mri_head_t=inv["mri_head_t"])
    rr = mne.transforms.apply_trans(affine, np.concatenate([s["rr"][s["vertno"]] for s in inv["src"]]))
    back = grid_to_source(grid.resampler(rr))
    fields = grid_fields(inv, back, rot)
    bases = grid_dipole_bases(fields)
    assert bases.shape[:2] == (grid.n_sources, whitened_gain(inv).shape[0])
    gram = np.einsum("gwk,gwl->gkl", bases, bases)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-8)
    g = 1234
    moment = np.zeros((grid.n_sources, 3, 1))
    moment[g] = [[2e-9], [-1e-9], [0.5e-9]]
    data_w = predict_whitened(inv, source_components(moment, back, rot, inv["source_nn"]))
    fit = subspace_fit(bases, signal_subspace(data_w))[None]  # the map's own data: a rank-1 subspace
    assert fit[0, g] == pytest.approx(1.0) and fit.max() == pytest.approx(1.0) and fit.min() >= 0
    # fields whitened for another nave (a scale) span the same subspaces: the same fit
    np.testing.assert_allclose(
        subspace_fit(grid_dipole_bases(3.7 * fields), signal_subspace(data_w)), fit[0], atol=1e-10
    )
    weights = local_fit_weights(fit, grid, 4.0)
    assert weights[0, g] == pytest.approx(1.0) and weights.max() <= 1 + 1e-12
    np.testing.assert_array_equal(local_fit_weights(fit, grid, 0.0)[fit > 0], 1.0)  # power 0: unchanged
    # a window of one source's time course is a rank-1 subspace too, with the single map's fits
    window = data_w * np.array([[0.2, 1.0, -0.5, 0.7]])
    basis = signal_subspace(window)
    assert basis.shape[1] == 1
    np.testing.assert_allclose(subspace_fit(bases, basis), fit[0], atol=1e-10)
    # the weights ignore the data's sign and scale
    windows = np.array([[0, 1, 2], [1, 2, 3]])
    np.testing.assert_allclose(
        window_fit_weights(bases, -1e-6 * window, windows, grid),
        window_fit_weights(bases, window, windows, grid),
    )
    # a window of two sources is a rank-2 subspace: rank scaling halves its sharpness, by default
    other = np.zeros_like(moment)
    other[g + 300] = [[0.0], [1e-9], [1e-9]]
    other_w = predict_whitened(inv, source_components(other, back, rot, inv["source_nn"]))
    two = data_w * np.array([[0.2, 1.0, -0.5, 0.7]]) + other_w * np.array([[1.0, -0.3, 0.4, 0.1]])
    assert signal_subspace(two).shape[1] == 2
    windows = np.array([[0, 1, 2, 3]])
    scaled = window_fit_weights(bases, two, windows, grid)
    np.testing.assert_array_equal(window_fit_weights(bases, two, windows, grid, rank_scaled=True), scaled)
    np.testing.assert_allclose(
        window_fit_weights(bases, two, windows, grid, rank_scaled=False) ** 0.5, scaled
    )
    with pytest.raises(TypeError, match="rank_scaled must be an instance of bool"):
        window_fit_weights(bases, two, windows, grid, rank_scaled=1)


def test_physics_checks_its_arguments(operators):
    from mne_piunet.physics import check_unweighted, local_fit_weights, signal_subspace, whiten

    _, _, inv, _ = operators["free volume"]
    with pytest.raises(TypeError, match="inverse_operator must be an instance of .*make_inverse"):
        check_unweighted(dict(inv))
    with pytest.raises(ValueError, match="prepared_inverse is not prepared.*prepare_inverse_operator"):
        whiten(inv, np.zeros((len(inv["noise_cov"].ch_names), 1)))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        signal_subspace(np.eye(3), threshold=0)
    with pytest.raises(TypeError, match="reach must be a number of grid steps"):
        local_fit_weights(np.zeros((1, 3)), None, 4.0, reach=1.5)


@pytest.mark.parametrize("name", ["free volume", "fixed cortex", "loose cortex"])
def test_kernel_prediction_is_the_gain_times_mnes_kernel(operators, name):
    """What an eLORETA estimate predicts, per channel: the gain times MNE's own kernel."""
    from mne_piunet.physics import along_orientations, kernel_prediction
    from mne_piunet.simulation.setups import inverse_kernel

    info, _, inv, _ = operators[name]
    kernel = inverse_kernel(inv, info, 1 / 9)  # apply_inverse of the identity, in the inverse's frame
    predictor = kernel_prediction(inv, kernel)
    n_src = inv["nsource"]
    values = kernel if name == "fixed cortex" else kernel.reshape(n_src, 3, -1)
    expected = whitened_gain(inv) @ along_orientations(values, inv["source_nn"])
    np.testing.assert_allclose(predictor, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())
    # so it predicts any data's eLORETA fit as the estimate itself does
    data = np.random.default_rng(3).standard_normal((len(info["ch_names"]), 4))
    stc_data = (kernel @ data).reshape(values.shape[:-1] + (4,))
    np.testing.assert_allclose(
        predictor @ data,
        predict_whitened(inv, along_orientations(stc_data, inv["source_nn"])),
        rtol=1e-8,
        atol=1e-10 * np.abs(predictor @ data).max(),
    )


def test_music_spectrum_peaks_where_the_fit_does():
    from mne_piunet.physics import music_spectrum

    fit = np.array([[0.2, 0.9, 0.99, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    spectrum = music_spectrum(fit)
    assert spectrum.dtype == np.float32 and spectrum[0].argmax() == 2 and spectrum[0, 2] == 1.0
    # monotone in the fit and steep near a perfect fit: 0.9 is ten times further from 1 than 0.99
    assert np.all(np.diff(spectrum[0][np.argsort(fit[0])]) >= 0)
    assert spectrum[0, 1] == pytest.approx(0.1, rel=1e-5)
    assert spectrum[0, 4] == 0 and not spectrum[1].any()  # unreached points, and a map of no fit
    assert np.isfinite(music_spectrum(np.ones((1, 3)))).all()
