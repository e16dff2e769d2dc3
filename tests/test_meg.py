"""MEG, MEG+EEG and OPM: sensor arrays, simulation, and the drop-in against MNE's own output."""

import mne
import numpy as np
import pytest

from mne_piunet import sensors
from mne_piunet.simulation import HeadSetup, add_noise, prepare_setup, setup_forward, setup_info


@pytest.fixture(scope="session")
def coarse_grid():
    """A 12 mm template grid: a volume source space a third the size of the network's, for speed.

    PIUNet resamples any source space onto its own grid, so inverses on it are
    as good a test of the drop-in as the network's own.
    """
    from mne_piunet.grid import get_grid

    return get_grid(12.0)


@pytest.fixture(scope="session")
def meg_setup(coarse_grid):
    """Neuromag 306 on the single-shell BEM, volume sources, three environmental projectors."""
    return prepare_setup(HeadSetup(None, conductivity=(0.3,), meg="neuromag306", n_projectors=3), coarse_grid)


@pytest.fixture(scope="session")
def meg_eeg_setup(coarse_grid):
    """CTF 151 with biosemi32 EEG on the 3-layer BEM, volume sources."""
    return prepare_setup(HeadSetup("biosemi32", meg="ctf151", pose_mm=2.0, jitter_seed=4), coarse_grid)


# ------------------------------------------------------------------ arrays
@pytest.mark.parametrize(
    "name, n_chan, types",
    [
        ("neuromag306", 306, {"mag", "grad"}),
        ("ctf275", 274, {"mag"}),
        ("ctf151", 151, {"mag"}),
        ("kit157", 157, {"mag"}),
        ("flux120", 120, {"mag"}),
        ("opm40", 40, {"mag"}),
        ("opm40-dual", 80, {"mag"}),
    ],
)
def test_meg_arrays_sit_around_the_template_head(name, n_chan, types):
    info = sensors.meg_array_info(name)
    assert len(info["ch_names"]) == n_chan == len(set(info["ch_names"]))
    assert set(info.get_channel_types()) == types
    scalp = sensors._covered_scalp()[0]
    dev_head = info["dev_head_t"]["trans"]
    gap = sensors._min_gap(scalp, sensors._sensor_positions(info), dev_head)
    if sensors._on_scalp(name):  # on the scalp: a few mm off it
        assert sensors.OPM_OFFSET[0] - 1e-3 <= gap <= sensors.OPM_OFFSET[1] + 1e-3
    else:  # in a helmet: never through it, never far from the nearest sensor
        assert sensors.SQUID_MIN_GAP <= gap <= 0.03
    # every sensor looks away from the head (normals outward, within 60 degrees of radial)
    pos = mne.transforms.apply_trans(dev_head, sensors._sensor_positions(info))
    ez = np.array([ch["loc"][9:12] for ch in info["chs"]]) @ dev_head[:3, :3].T
    radial = pos - [0.0, 0.0, 0.04]
    cos = np.einsum("ij,ij->i", ez, radial) / np.linalg.norm(radial, axis=1)
    if name.endswith("-dual") or name == "flux120":
        assert np.sum(cos > 0.5) == len(cos) // (2 if name.endswith("-dual") else 3)  # one radial per sensor
    elif name != "neuromag306":  # the planar gradiometers' normals are their magnetometers'
        assert np.all(cos > 0.5)


def test_head_pose_is_seeded_and_bounded():
    nominal = sensors.meg_array_info("ctf275")["dev_head_t"]["trans"]
    a = sensors.meg_array_info("ctf275", pose_mm=4.0, seed=1)["dev_head_t"]["trans"]
    b = sensors.meg_array_info("ctf275", pose_mm=4.0, seed=1)["dev_head_t"]["trans"]
    c = sensors.meg_array_info("ctf275", pose_mm=4.0, seed=2)["dev_head_t"]["trans"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, nominal)
    # rotation stays a rotation, the move a few mm
    np.testing.assert_allclose(a[:3, :3] @ a[:3, :3].T, np.eye(3), atol=1e-12)
    assert 1e-4 < np.linalg.norm(a[:3, 3] - nominal[:3, 3]) < 0.05
    # opm layouts: seeded, and different seeds are different caps
    p1, p2 = (sensors._sensor_positions(sensors.meg_array_info("opm32", seed=s)) for s in (1, 2))
    assert not np.allclose(p1, p2)
    np.testing.assert_array_equal(p1, sensors._sensor_positions(sensors.meg_array_info("opm32", seed=1)))


def test_meg_array_names_are_checked():
    for bad in ("vectorview", "opm4", "opm-dual", 306):
        with pytest.raises(ValueError, match="Unknown MEG array"):
            sensors.check_meg_array(bad)
    with pytest.raises(ValueError, match="needs sensors"):
        HeadSetup(None)
    with pytest.raises(ValueError, match="set meg="):
        HeadSetup("biosemi32", pose_mm=2.0)
    with pytest.raises(ValueError, match="moves with the head"):
        sensors.meg_array_info("opm32", pose_mm=2.0)
    with pytest.raises(ValueError, match="ask for n <= 5"):
        sensors.environmental_projectors(sensors.meg_array_info("ctf151"), 8)
    with pytest.raises(ValueError, match="cannot compute EEG"):
        setup_forward(HeadSetup("biosemi32", conductivity=(0.3,)), None)


def test_environmental_projectors_remove_distant_fields():
    info = sensors.meg_array_info("neuromag306")
    projs = sensors.environmental_projectors(info, 8)
    vecs = np.array([p["data"]["data"][0] for p in projs])
    np.testing.assert_allclose(vecs @ vecs.T, np.eye(len(projs)), atol=1e-10)
    # a homogeneous field seen by the magnetometers lies in the projectors' span
    mags = np.array([ch["coil_type"] in sensors._MAGNETOMETERS for ch in info["chs"]])
    field = np.array([ch["loc"][9:12] @ [0.2, -0.5, 1.0] for ch in info["chs"]]) * mags
    raw = mne.io.RawArray(field[:, None] * 1e-12, info, verbose=False)
    raw.add_proj(sensors.environmental_projectors(info, 3)).apply_proj(verbose=False)
    assert np.abs(raw.get_data()).max() < 1e-9 * np.abs(field).max() * 1e-12
    with pytest.raises(ValueError, match="1 to 8"):
        sensors.environmental_projectors(info, 9)


# ------------------------------------------------------------------ simulation
def test_snr_is_measured_in_noise_units_across_channel_types(meg_eeg_setup):
    """With T, T/m-free axial coils and V together, the requested SNR holds in whitened units."""
    prep = meg_eeg_setup
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((400, len(prep.info["ch_names"]))) * prep.channel_std * 3.0
    noisy = add_noise(clean, np.full(400, 10.0), rng, channel_std=prep.channel_std, eeg=prep.eeg)
    noise = (noisy - clean) / prep.channel_std
    signal = clean / prep.channel_std
    for data in (noise, signal):
        data[:, prep.eeg] -= data[:, prep.eeg].mean(axis=1, keepdims=True)
    ratio = 10 * np.log10((signal.std(axis=1) / noise.std(axis=1)) ** 2)
    np.testing.assert_allclose(ratio, 10.0, atol=1e-9)
    # every channel type carries noise in proportion to its own level
    for kind in ("mag", "eeg"):
        picks = [i for i, t in enumerate(prep.info.get_channel_types()) if t == kind]
        assert 0.7 < noise[:, picks].std() / noise.std() < 1.3


def test_meg_kernel_is_mnes_eloreta(simulated_evoked, meg_setup):
    """The engine's input equals MNE's apply_inverse on the same MEG data, projectors included."""
    evoked, batch = simulated_evoked(meg_setup, n_times=3)
    assert len(evoked.info["projs"]) == 3
    stc = mne.minimum_norm.apply_inverse(
        evoked, meg_setup.inverse_operator, meg_setup.lambda2, "eLORETA", pick_ori="vector", verbose=False
    )
    ours = batch.eloreta @ np.linalg.inv(meg_setup.head_to_mri).T  # back to the head frame
    np.testing.assert_allclose(ours, np.moveaxis(stc.data, -1, 0), rtol=1e-5, atol=1e-6 * np.abs(ours).max())


# ------------------------------------------------------------------ the drop-in
def _like_mne(ours, theirs, piu):
    np.testing.assert_allclose(ours.times, theirs.times)
    assert ours.subject == "fsaverage"
    np.testing.assert_array_equal(ours.vertices[0], piu.src[0]["vertno"])
    assert np.all(np.isfinite(ours.data)) and ours.data.max() > 0


@pytest.mark.parametrize("which", ["meg", "meg+eeg"])
def test_apply_matches_mne_on_meg(simulated_evoked, piu, meg_setup, meg_eeg_setup, which):
    prep = meg_setup if which == "meg" else meg_eeg_setup
    evoked, _ = simulated_evoked(prep, n_times=4)
    inv = prep.inverse_operator
    ref = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    stc = piu.apply(evoked, inv, 1 / 9)
    _like_mne(stc, ref, piu)
    # a map never depends on the data's polarity or channel order
    flipped = evoked.copy()
    flipped.data *= -1
    vec, vec_flipped = (piu.apply(e, inv, 1 / 9, pick_ori="vector") for e in (evoked, flipped))
    np.testing.assert_allclose(vec_flipped.data, -vec.data, rtol=1e-6, atol=1e-9 * np.abs(vec.data).max())
    order = evoked.ch_names[::-1]
    reordered = evoked.copy().reorder_channels(order)
    np.testing.assert_allclose(piu.apply(reordered, inv, 1 / 9).data, stc.data, rtol=1e-5, atol=1e-12)
    # Epochs and Raw, as MNE's own
    epochs = mne.EpochsArray(np.stack([evoked.data, 0.5 * evoked.data]), evoked.info, tmin=0.0, verbose=False)
    ours = piu.apply_epochs(epochs, inv, 1 / 9)
    theirs = mne.minimum_norm.apply_inverse_epochs(epochs, inv, 1 / 9, "eLORETA", verbose=False)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _like_mne(a, b, piu)
    raw = mne.io.RawArray(np.tile(evoked.data, 3), evoked.info, verbose=False)
    _like_mne(
        piu.apply_raw(raw, inv, 1 / 9, buffer_size=5),
        mne.minimum_norm.apply_inverse_raw(raw, inv, 1 / 9, "eLORETA", verbose=False),
        piu,
    )


@pytest.mark.parametrize("meg", ["grad", "mag"])
def test_gradiometer_or_magnetometer_only_inverses(simulated_evoked, piu, coarse_grid, meg_setup, meg):
    """A Vectorview user's inverse of one coil type runs, and refines MNE's own eLORETA."""
    info = mne.pick_info(meg_setup.info, mne.pick_types(meg_setup.info, meg=meg))
    setup = meg_setup.spec
    fwd = mne.pick_channels_forward(
        setup_forward(setup, coarse_grid.src, setup_info(setup)), info["ch_names"]
    )
    inv = mne.minimum_norm.make_inverse_operator(
        info, fwd, mne.make_ad_hoc_cov(info), loose=1.0, verbose=False
    )
    evoked, _ = simulated_evoked(meg_setup, n_times=2)
    evoked.pick(info["ch_names"])
    stc = piu.apply(evoked, inv, 1 / 9)
    vec = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    _like_mne(stc, vec, piu)
    np.testing.assert_allclose(piu.refine(vec, inv).data, stc.data, rtol=1e-5, atol=1e-6 * stc.data.max())


def test_other_sensor_types_are_refused(simulated_evoked, piu, volume_setup):
    evoked, _ = simulated_evoked(volume_setup, n_times=1)
    inv = volume_setup.inverse_operator.copy()
    inv["info"] = mne.create_info(inv["info"]["ch_names"], evoked.info["sfreq"], "seeg")
    with pytest.raises(ValueError, match="seeg channels: PIUNet refines inverses of EEG, MEG"):
        piu.apply(evoked, inv, 1 / 9)


def test_fine_tune_setup_from_a_meg_forward(coarse_grid, meg_setup):
    """A user's MEG forward and inverse make a training setup whose kernel is MNE's eLORETA."""
    from mne_piunet.simulation import prepare_user_setup

    setup = meg_setup.spec
    fwd = setup_forward(setup, coarse_grid.src, setup_info(setup))
    user = prepare_user_setup(fwd, meg_setup.inverse_operator, coarse_grid)
    # eLORETA's weights are iterated to MNE's tolerance on each computation
    np.testing.assert_allclose(
        user.kernel, meg_setup.kernel, rtol=1e-4, atol=1e-5 * np.abs(user.kernel).max()
    )
    np.testing.assert_allclose(
        user.leadfield, meg_setup.leadfield, rtol=1e-5, atol=1e-5 * np.abs(user.leadfield).max()
    )
    assert user.channel_std is not None and not user.eeg.any()


def test_evaluation_arrays_are_held_out_of_training():
    """The benchmark's sensor sweep and the evaluation's sensor cells use arrays no training config saw."""
    from mne_piunet.bench.experiments import EXPERIMENTS, HELD_OUT_MEG, HELD_OUT_OPM, MismatchSetup
    from mne_piunet.train.training import BUNDLED_CONFIGS, read_config

    seen = {s.get("meg") for name in BUNDLED_CONFIGS for s in read_config(name).train_setups}
    assert "neuromag306" in seen and HELD_OUT_MEG not in seen and HELD_OUT_OPM not in seen
    for name in ("benchmark", "sensors"):
        sweep = [c for c in EXPERIMENTS[name].cells() if c.sweep == "sensors"]
        assert list(dict.fromkeys(c.value.split()[0] for c in sweep)) == ["EEG", "MEG", "MEG+EEG", "OPM"]
        data = [c.setup.data if isinstance(c.setup, MismatchSetup) else c.setup for c in sweep]
        assert {s.meg for s in data} == {None, HELD_OUT_MEG, HELD_OUT_OPM}
