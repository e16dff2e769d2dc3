"""Fine-tuning on a user's own forward and inverse: end to end, and every bad input."""

import json
import warnings

import mne
import numpy as np
import pytest

from mne_piunet.anatomy import make_template_forward, montage_info
from mne_piunet.finetune import FINE_TUNE_SETTINGS, fine_tune, forward_fingerprint, inverse_fingerprint


@pytest.fixture(scope="module")
def user_models(grid, volume_setup):
    """A user-style forward (the grid, easycap-M10, read back from disk) and its inverse."""
    fwd = make_template_forward("easycap-M10", grid.src)  # cached by volume_setup
    info = montage_info("easycap-M10")
    cov = mne.make_ad_hoc_cov(info, verbose=False)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, cov, loose=1.0, verbose=False)
    return fwd, inv


def test_fine_tune_end_to_end_records_what_it_was_tuned_on(tmp_path, user_models, tiny_weights, volume_setup):
    from mne_piunet import PIUNetInverse

    fwd, inv = user_models
    fwd_file, inv_file = tmp_path / "sub-fwd.fif", tmp_path / "sub-inv.fif"
    mne.write_forward_solution(fwd_file, fwd)
    mne.minimum_norm.write_inverse_operator(inv_file, inv)
    out = tmp_path / "tuned.pt"
    written = fine_tune(
        inv_file, fwd_file, out=out, minutes=0.15, weights=tiny_weights, threads=1, device="cpu"
    )
    log = (tmp_path / "tuned_run" / "train.log").read_text()
    assert "step 0 (initial weights) val NEMD" in log and "time budget of 0.15 min reached" in log
    # whether a few steps helped depends on the CPU: the contract holds either way
    assert (written is None) != out.exists()
    # the writing step, on the run's own best weights with a better score than the start's
    from mne_piunet.finetune import _write_if_better
    from mne_piunet.network import load_network

    tuned_on = dict(
        name="user:tuned",
        forward_sha256=forward_fingerprint(fwd),
        inverse_sha256=inverse_fingerprint(inv),
        files={},
    )
    best = load_network(tmp_path / "tuned_run" / "best.pt")
    out = _write_if_better(best, tmp_path / "final_tuned.pt", tuned_on, "tiny.pt", tmp_path, 0.6, 0.5)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["tuned_on"]["val_nemd"] == dict(start=0.6, tuned=0.5)
    assert meta["tuned_on"]["inverse_sha256"] == inverse_fingerprint(
        mne.minimum_norm.read_inverse_operator(inv_file)
    )
    assert meta["tuned_on"]["forward_sha256"] == forward_fingerprint(mne.read_forward_solution(fwd_file))
    tuned = PIUNetInverse(out, device="cpu", precision="float32")
    info = volume_setup.info
    evoked = mne.EvokedArray(np.full((len(info["ch_names"]), 2), 1e-6), info)
    epochs = mne.EpochsArray(np.full((2, len(info["ch_names"]), 2), 1e-6), info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stc = tuned.apply(evoked, inv)
        tuned.apply_epochs(epochs, inv)  # eLORETA's preparation rewrites the inverse: checked before it
        tuned.refine(mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector"), inv,
                     pick_ori="vector")  # fmt: skip
    assert not [w for w in caught if "fine-tuned on inverse" in str(w.message)]  # its own inverse
    assert stc.data.shape[1] == 2
    # a run folder of other inputs is not resumed
    with pytest.raises(ValueError, match="holds a fine-tune of other inputs"):
        fine_tune(inv, fwd, out=tmp_path / "other.pt", minutes=0.1, weights=tiny_weights, lambda2=0.5,
                  run_dir=tmp_path / "tuned_run")  # fmt: skip


def test_fine_tune_refuses_weights_no_better(tmp_path, user_models, tiny_weights, monkeypatch):
    # with a zero learning rate the weights cannot move, so they validate exactly as before
    monkeypatch.setitem(FINE_TUNE_SETTINGS, "lr", 0.0)
    fwd, inv = user_models
    out = tmp_path / "tuned.pt"
    with pytest.warns(RuntimeWarning, match="do not validate better"):
        written = fine_tune(inv, fwd, out=out, minutes=0.05, weights=tiny_weights, threads=1, device="cpu")
    assert written is None and not out.exists()


def test_tuned_weights_warn_on_another_inverse(tmp_path, tiny_weights, user_models, volume_setup):
    from mne_piunet import PIUNetInverse
    from mne_piunet.network import load_network, save_network

    fwd, inv = user_models
    bundle = load_network(tiny_weights)
    meta = {k: v for k, v in bundle.meta.items() if k not in ("config", "sha256", "format_version")}
    fname = save_network(
        bundle.network,
        tmp_path / "t.pt",
        dict(meta, tuned_on=dict(name="user:other", inverse_sha256="0" * 64)),
    )
    tuned = PIUNetInverse(fname, device="cpu", precision="float32")
    evoked = mne.EvokedArray(np.zeros((len(volume_setup.info["ch_names"]), 1)) + 1e-6, volume_setup.info)
    with pytest.warns(RuntimeWarning, match="fine-tuned on inverse 000000000000 \\(user:other\\)"):
        tuned.apply(evoked, inv)


def test_fine_tune_bad_inputs(tmp_path, user_models, surface_setup):
    fwd, inv = user_models
    with pytest.raises(ValueError, match="minutes must be > 0"):
        fine_tune(inv, fwd, out=tmp_path / "a.pt", minutes=0)
    with pytest.raises(ValueError, match="minutes must be > 0"):
        fine_tune(inv, fwd, out=tmp_path / "a.pt", minutes=-1.0)
    (tmp_path / "exists.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fine_tune(inv, fwd, out=tmp_path / "exists.pt", minutes=1)
    # a forward without EEG
    no_eeg = fwd.copy()
    for ch in no_eeg["info"]["chs"]:
        ch["kind"] = mne.io.constants.FIFF.FIFFV_MISC_CH
    with pytest.raises(ValueError, match="no EEG channels"):
        fine_tune(inv, no_eeg, out=tmp_path / "b.pt", minutes=1)
    # a forward and inverse that disagree: channels, then source spaces
    other_montage = make_template_forward("biosemi64", fwd["src"])
    with pytest.raises(ValueError, match="disagree.*channels"):
        fine_tune(inv, other_montage, out=tmp_path / "c.pt", minutes=1)
    with pytest.raises(ValueError, match="disagree.*source spaces"):
        fine_tune(
            surface_setup.inverse_operator,
            make_template_forward("biosemi64", fwd["src"]),
            out=tmp_path / "d.pt",
            minutes=1,
        )


@pytest.mark.parametrize("loose", [0.2, 0.0])
def test_user_setup_input_is_what_the_inverse_feeds_the_network(piu, surface_setup, loose):
    """Training on a user setup sees exactly the maps PIUNetInverse.apply refines (loose and fixed)."""
    from mne_piunet.anatomy import make_cortex_src
    from mne_piunet.simulation import SourcePrior, prepare_user_setup, simulate

    info = montage_info("biosemi64")
    fwd = make_template_forward("biosemi64", make_cortex_src())  # cached by surface_setup
    rng = np.random.default_rng(0)
    n = len(info["ch_names"])
    mixing = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    cov = mne.compute_raw_covariance(mne.io.RawArray(mixing @ rng.standard_normal((n, 2000)) * 1e-6, info))
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, cov, loose=loose, depth=0.8, fixed=loose == 0)
    prepared = prepare_user_setup(fwd, inv, piu.grid)
    assert prepared.free == (loose > 0) and prepared.normals is not None
    order = [cov.ch_names.index(c) for c in prepared.info["ch_names"]]  # the leadfield's rows
    np.testing.assert_allclose(prepared.noise_cov, cov.data[np.ix_(order, order)], rtol=1e-6)
    batch = simulate(prepared, 3, rng, SourcePrior(coloured_noise=1.0))
    evoked = mne.EvokedArray(batch.sensor.T, prepared.info)
    stc = piu.apply(evoked, inv, 1 / 9, pick_ori="vector")
    expected = piu.predict_grid(batch.eloreta_grid.astype(np.float32))
    got = np.moveaxis(stc.data, 2, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
