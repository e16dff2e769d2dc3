"""Fine-tuning on a user's own forward and inverse: end to end, and every bad input."""

import json
import warnings

import mne
import numpy as np
import pytest

from mne_piunet.anatomy import make_template_forward, montage_info
from mne_piunet.train.finetune import (
    FINE_TUNE_SETTINGS,
    _acceptance,
    _write_if_better,
    fine_tune,
)
from mne_piunet.utils._fingerprint import forward_fingerprint, inverse_fingerprint


def _group(k, start, tuned, se, snr=(0.0, 10.0), mode="window"):
    return dict(n_sources=k, snr_db=list(snr), mode=mode, start=start, tuned=tuned, diff=tuned - start, se=se)


@pytest.fixture(scope="module")
def user_models(grid, volume_setup):
    """A user-style forward (the grid, easycap-M10, read back from disk) and its inverse."""
    fwd = make_template_forward("easycap-M10", grid.src)  # cached by volume_setup
    info = montage_info("easycap-M10")
    cov = mne.make_ad_hoc_cov(info, verbose=False)
    inv = mne.minimum_norm.make_inverse_operator(info, fwd, cov, loose=1.0, verbose=False)
    return fwd, inv


def test_fine_tune_end_to_end_records_what_it_was_tuned_on(
    tmp_path, user_models, tiny_weights, volume_setup, small_fine_tune
):
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
    if written is not None:  # whether a few steps help depends on the CPU: each outcome is checked
        groups = json.loads(out.with_suffix(".json").read_text())["tuned_on"]["acceptance"]
        assert len(groups) == 18 and _acceptance(groups)[0]
        assert {g["mode"] for g in groups} == {"window", "single map"}
    else:
        assert not out.exists()
    # the writing step, on the run's own best weights, with groups that pass
    from mne_piunet.network import load_network

    tuned_on = dict(
        name="user:tuned",
        forward_sha256=forward_fingerprint(fwd),
        inverse_sha256=inverse_fingerprint(inv),
        files={},
    )
    best = load_network(tmp_path / "tuned_run" / "best.pt")
    groups = [_group(1, 0.5, 0.4, 0.02), _group(3, 0.6, 0.59, 0.02)]
    out = _write_if_better(best, tmp_path / "final_tuned.pt", tuned_on, "tiny.pt", tmp_path, groups)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["tuned_on"]["acceptance"] == groups
    # its stored config names no HeadSetup, and training from it says why
    assert meta["train_config"]["train_setups"] == []
    from mne_piunet.train.training import TrainConfig, train

    with pytest.raises(ValueError, match="no train_setups.*fine-tune"):
        train(TrainConfig(**meta["train_config"]), tmp_path / "again")
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
        tuned.refine(
            mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector"),
            inv,
            pick_ori="vector",
        )
    assert not [w for w in caught if "fine-tuned on inverse" in str(w.message)]  # its own inverse
    assert stc.data.shape[1] == 2
    # a run folder of other inputs is not resumed
    with pytest.raises(ValueError, match="holds a fine-tune of other inputs"):
        fine_tune(
            inv,
            fwd,
            out=tmp_path / "other.pt",
            minutes=0.1,
            weights=tiny_weights,
            lambda2=0.5,
            run_dir=tmp_path / "tuned_run",
        )


def test_fine_tune_refuses_weights_no_better(
    tmp_path, user_models, tiny_weights, monkeypatch, small_fine_tune
):
    # with a zero learning rate the weights cannot move, so they validate exactly as before
    monkeypatch.setitem(FINE_TUNE_SETTINGS, "lr", 0.0)
    fwd, inv = user_models
    out = tmp_path / "tuned.pt"
    with pytest.warns(
        RuntimeWarning, match="not better than tiny.pt on your setup on average, or are worse in a group"
    ):
        written = fine_tune(inv, fwd, out=out, minutes=0.05, weights=tiny_weights, threads=1, device="cpu")
    assert written is None and not out.exists()


def test_acceptance_refuses_a_loss_in_any_group_that_an_average_hides(tmp_path, tiny_weights):
    """A gain at many sources must not hide a loss at one (the common case)."""
    from mne_piunet.network import load_network

    one_worse = [_group(1, 0.40, 0.49, 0.02), _group(10, 0.80, 0.60, 0.02), _group(3, 0.6, 0.55, 0.02)]
    assert float(np.mean([g["diff"] for g in one_worse])) < 0  # better on average
    accepted, report = _acceptance(one_worse)
    assert (
        not accepted
        and " 1 source(s), 0-10 dB, window: NEMD 0.400 -> 0.490 (+0.090 +/- 0.020)  WORSE" in report
    )
    # a difference within the check's noise is not a loss, up to 0.02 NEMD; a larger one is, however noisy
    assert _acceptance([_group(1, 0.40, 0.415, 0.02), _group(10, 0.80, 0.60, 0.02)])[0]
    assert not _acceptance([_group(1, 0.40, 0.43, 0.05), _group(10, 0.80, 0.60, 0.02)])[0]
    # a loss on single maps is a loss, whatever the windows gained
    single = [_group(1, 0.40, 0.30, 0.01), _group(1, 0.36, 0.43, 0.01, mode="single map")]
    accepted, report = _acceptance(single)
    assert not accepted and "single map: NEMD 0.360 -> 0.430 (+0.070 +/- 0.010)  WORSE" in report
    assert not _acceptance([_group(1, 0.40, 0.40, 0.0)])[0]  # no better: refused
    with pytest.warns(RuntimeWarning, match="1 source\\(s\\), 0-10 dB, window: .* WORSE"):
        assert (
            _write_if_better(load_network(tiny_weights), tmp_path / "x.pt", {}, "a.pt", tmp_path, one_worse)
            is None
        )
    assert not (tmp_path / "x.pt").exists()


def _rank_deficient_cov(info, seed=0):
    """A covariance like MNE's test-cov.fif after an average reference: rank n - 1, an eigenvalue of -2.4e-19."""
    n = len(info["ch_names"])
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.c_[np.ones(n), rng.standard_normal((n, n - 1))])  # first column: the reference
    eig = np.r_[-2.4e-19, np.geomspace(1e-11, 1e-13, n - 1)]
    data = (basis * eig) @ basis.T
    return mne.Covariance(data, info["ch_names"], info["bads"], info["projs"], nfree=200)


def test_noise_is_drawn_from_a_rank_deficient_covariance(user_models):
    from mne_piunet.simulation import add_noise, noise_colouring

    cov = _rank_deficient_cov(montage_info("easycap-M10")).data
    jitter = 1e-12 * np.trace(cov) * np.eye(len(cov))
    with pytest.raises(np.linalg.LinAlgError):  # what the Cholesky with a trace jitter did
        np.linalg.cholesky(cov + jitter)
    colouring = noise_colouring(cov)
    assert colouring.shape == (len(cov), len(cov) - 1)
    np.testing.assert_allclose(colouring @ colouring.T, cov, atol=1e-6 * np.abs(cov).max())
    noisy = add_noise(
        np.zeros((4, len(cov))) + 1e-6 * np.arange(len(cov)), np.full(4, 10.0), np.random.default_rng(1), cov
    )
    noise = noisy - 1e-6 * np.arange(len(cov))
    # the noise lies in the covariance's subspace: none along the average reference
    assert np.abs(noise.sum(axis=1)).max() < 1e-9 * np.abs(noise).sum(axis=1).max()


def test_fine_tune_with_a_rank_deficient_covariance_and_no_reference_projector(
    tmp_path, user_models, tiny_weights, small_fine_tune
):
    """Both crashed: numpy's Cholesky, then MNE's "average reference is mandatory"."""
    fwd, _ = user_models
    info = montage_info("easycap-M10")
    with info._unlock():
        info["projs"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE: no average reference in the info
        inv = mne.minimum_norm.make_inverse_operator(info, fwd, _rank_deficient_cov(info), loose=1.0)
    assert not inv["projs"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = fine_tune(
            inv, fwd, out=tmp_path / "t.pt", minutes=0.05, weights=tiny_weights, threads=1, device="cpu"
        )
    log = (tmp_path / "t_run" / "train.log").read_text()
    assert "step 0 (initial weights) val NEMD" in log
    assert written is not None or [w for w in caught if "worse in a group" in str(w.message)]


def test_user_setup_without_reference_projector_references_the_data_as_mne_requires(user_models, grid):
    from mne_piunet.simulation import prepare_user_setup

    fwd, _ = user_models
    info = montage_info("easycap-M10")
    with info._unlock():
        info["projs"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inv = mne.minimum_norm.make_inverse_operator(info, fwd, mne.make_ad_hoc_cov(info), loose=1.0)
    prepared = prepare_user_setup(fwd, inv, grid)
    x = np.random.default_rng(2).standard_normal((len(info["ch_names"]), 3)) * 1e-6
    # the user's data: average-referenced by the projector MNE demands, then the inverse applied
    assert prepared.info["ch_names"] == info["ch_names"]
    evoked = mne.EvokedArray(x, info).set_eeg_reference(projection=True).apply_proj()
    stc = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector")
    # the kernel's rows are MRI-frame moments, x y z per source
    expected = np.einsum("ij,sjt->sit", prepared.head_to_mri, stc.data)
    got = (prepared.kernel @ x).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_inverse_fingerprint_survives_reading_and_preparation(tmp_path, user_models):
    fwd, inv = user_models
    fname = tmp_path / "u-inv.fif"
    mne.minimum_norm.write_inverse_operator(fname, inv)
    read = mne.minimum_norm.read_inverse_operator(fname)
    prepared = mne.minimum_norm.prepare_inverse_operator(read, 3, 1 / 9, "eLORETA")
    digest = inverse_fingerprint(inv)
    assert inverse_fingerprint(read) == digest == inverse_fingerprint(prepared)
    info = montage_info("easycap-M10")
    rng = np.random.default_rng(3)
    cov = mne.compute_raw_covariance(
        mne.io.RawArray(rng.standard_normal((len(info["ch_names"]), 500)) * 1e-6, info)
    )
    other = mne.minimum_norm.make_inverse_operator(info, fwd, cov, loose=1.0)
    assert inverse_fingerprint(other) != digest  # another noise covariance
    deeper = mne.minimum_norm.make_inverse_operator(
        info, fwd, mne.make_ad_hoc_cov(info), loose=1.0, depth=3.0
    )
    assert inverse_fingerprint(deeper) != digest  # another depth prior


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
    # inverses read from disk and prepared ones are checked too
    inv_file = tmp_path / "other-inv.fif"
    mne.minimum_norm.write_inverse_operator(inv_file, inv)
    read = mne.minimum_norm.read_inverse_operator(inv_file)
    with pytest.warns(RuntimeWarning, match="fine-tuned on inverse"):
        tuned.apply(evoked, read)
    prepared = mne.minimum_norm.prepare_inverse_operator(read, 1, 1 / 9, "eLORETA")
    with pytest.warns(RuntimeWarning, match="fine-tuned on inverse"):
        tuned.apply(evoked, prepared, prepared=True)


def test_fine_tune_bad_inputs(tmp_path, user_models, surface_setup):
    fwd, inv = user_models
    with pytest.raises(ValueError, match="minutes must be > 0"):
        fine_tune(inv, fwd, out=tmp_path / "a.pt", minutes=0)
    with pytest.raises(ValueError, match="minutes must be > 0"):
        fine_tune(inv, fwd, out=tmp_path / "a.pt", minutes=-1.0)
    # types first, worded as MNE words them; bools are not numbers or integers
    for kwargs, error, match in (
        (dict(minutes=True), TypeError, "minutes must be an instance of int or float"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
        (dict(threads=0), ValueError, "threads must be a positive integer or None, got 0"),
        (dict(threads=True), TypeError, "threads must be a positive integer or None"),
        (dict(lambda2=0.0), ValueError, "lambda2 must be > 0"),
        (dict(overwrite="yes"), TypeError, "overwrite must be an instance of bool"),
    ):
        with pytest.raises(error, match=match):
            fine_tune(inv, fwd, out=tmp_path / "a.pt", **dict(dict(minutes=1), **kwargs))
    with pytest.raises(TypeError, match="forward must be an instance of mne.Forward or path-like"):
        fine_tune(inv, None, out=tmp_path / "a.pt", minutes=1)
    (tmp_path / "exists.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fine_tune(inv, fwd, out=tmp_path / "exists.pt", minutes=1)
    # a forward without EEG or MEG
    no_eeg = fwd.copy()
    for ch in no_eeg["info"]["chs"]:
        ch["kind"] = mne.io.constants.FIFF.FIFFV_MISC_CH
    with pytest.raises(ValueError, match="no EEG or MEG channels"):
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
def test_user_setup_input_is_what_the_inverse_feeds_the_network(piu_network_only, surface_setup, loose):
    """Training on a user setup sees exactly the maps PIUNetInverse.apply refines (loose and fixed)."""
    piu = piu_network_only  # the network's input and output, before the data-fit step
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


def test_piunet_inverse_fine_tune_returns_itself_when_refused(
    piu, tmp_path, user_models, monkeypatch, small_fine_tune
):
    """The method behind ``piu.fine_tune``: weights that cannot move are refused, and the model is kept."""
    monkeypatch.setitem(FINE_TUNE_SETTINGS, "lr", 0.0)
    fwd, inv = user_models
    with pytest.warns(RuntimeWarning, match="worse in a group"):
        tuned = piu.fine_tune(inv, fwd, out=tmp_path / "m.pt", minutes=0.05, threads=1)
    assert tuned is piu and not (tmp_path / "m.pt").exists()


def test_a_run_folder_resumes_under_another_output_name(tmp_path):
    """The claim compares the inputs, not the output's name (a 10-minute budget resumes a 4-minute run)."""
    from mne_piunet.train.finetune import _claim_run_dir

    stamp = dict(name=None, inverse_sha256="a" * 64, lambda2=1 / 9, seed=0)
    _claim_run_dir(tmp_path / "run", stamp)
    _claim_run_dir(tmp_path / "run", dict(stamp))  # the same inputs: resumed
    with pytest.raises(ValueError, match="holds a fine-tune of other inputs \\(lambda2 differ"):
        _claim_run_dir(tmp_path / "run", dict(stamp, lambda2=0.5))


def test_acceptance_scores_single_maps_where_a_tune_can_lose_them(grid, volume_setup, monkeypatch):
    """Weights that gain on windows and lose on single maps (the issue's fine-tune) are refused."""
    import torch

    import mne_piunet.train.finetune as finetune
    from mne_piunet.network import UNet3d, UNetConfig
    from mne_piunet.simulation import SourcePrior

    torch.manual_seed(0)
    config = UNetConfig(width=8, levels=2, heads=2, groups=4, context="power", window_s=0.08, window_points=5)
    start, tuned = (UNet3d(config, torch.from_numpy(grid.mask)).eval() for _ in range(2))

    def predict(net, grid_, x0, windows, fit=None, resolution=None):
        """Both networks' maps, off the truth by some voxels: the tuned one exact on windows, far off alone."""
        shift = 1 if net is start else (0 if windows.shape[1] > 1 else 40)
        return np.roll(truth, shift, axis=1)

    truth = None
    real_simulate = finetune.simulate

    def simulate(*args, **kwargs):
        nonlocal truth
        batch = real_simulate(*args, **kwargs)
        truth = batch.true_grid
        return batch

    monkeypatch.setattr(finetune, "predict_maps", predict)
    monkeypatch.setattr(finetune, "simulate", simulate)
    monkeypatch.setattr(finetune, "ACCEPTANCE_N_SOURCES", (1,))
    monkeypatch.setattr(finetune, "ACCEPTANCE_SNR_BANDS", ((10.0, 20.0),))
    groups = finetune.acceptance_groups(start, tuned, grid, volume_setup, 0, SourcePrior(), per_group=4)
    by_mode = {g["mode"]: g for g in groups}
    assert by_mode["window"]["diff"] < 0 < by_mode["single map"]["diff"]
    accepted, report = _acceptance(groups)
    assert not accepted and "single map" in report.split("WORSE")[0].splitlines()[-1]


def test_fine_tune_keeps_at_least_the_shipped_share_of_single_maps():
    """Tuned on windows alone, weights learn to lean on the context and lose on single maps."""
    from mne_piunet.network import bundled_weights_path, load_network
    from mne_piunet.train.finetune import FINE_TUNE_INSTANTANEOUS, _fine_tune_config

    meta = load_network(bundled_weights_path()).meta
    config = _fine_tune_config(meta, 1.0, 0, "cpu", 1)
    shipped = meta["train_config"]["prior"]["instantaneous"]
    assert config.prior["instantaneous"] == max(shipped, FINE_TUNE_INSTANTANEOUS) >= 0.3
    more = dict(
        meta,
        train_config=dict(meta["train_config"], prior=dict(meta["train_config"]["prior"], instantaneous=0.6)),
    )
    assert _fine_tune_config(more, 1.0, 0, "cpu", 1).prior["instantaneous"] == 0.6  # a larger share is kept


def test_bench_finetune_scores_the_start_and_every_accepted_tune(
    tmp_path, user_models, tiny_weights, monkeypatch, capsys
):
    """The command behind the model card's fine-tune table, on a cached volume setup instead of the cortex.

    fine_tune itself is tested above; here each budget's call stands in for it, accepting 1 min and refusing 2.
    """
    import csv
    import shutil

    from mne_piunet.bench import evaluation
    from mne_piunet.cli import main
    from mne_piunet.train import finetune

    def fake_fine_tune(inverse_operator, forward, *, out, minutes, weights, **kwargs):
        if minutes > 1:
            return None
        for suffix in (".pt", ".json"):
            shutil.copy(weights.with_suffix(suffix), out.with_suffix(suffix))
        return out

    benefit = evaluation.finetune_benefit

    def corners(*args, **kwargs):
        """The command's scoring on the corners of its default sweep (2 of its 4 SNRs and numbers of sources)."""
        assert len(args) == 3 and not {"snrs", "n_sources"} & set(kwargs)  # the command gives the defaults
        return benefit(*args, snrs=(0.0, 30.0), n_sources=(1, 10), **kwargs)

    monkeypatch.setattr(evaluation, "user_style_models", lambda *args, **kwargs: user_models)
    monkeypatch.setattr(evaluation, "finetune_benefit", corners)
    monkeypatch.setattr(finetune, "fine_tune", fake_fine_tune)
    argv = ["bench-finetune", str(tmp_path), "1", "2", "--weights", str(tiny_weights), "--n", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fine-tune to 1 min: " in out and "fine-tune to 2 min: refused" in out
    rows = list(csv.DictReader(open(tmp_path / "finetune_benefit.csv")))
    labels = ("eLORETA", "start", "tuned 1 min")
    assert {r["method"] for r in rows} == set(labels)
    assert len(rows) == 3 * 4  # methods x 2 SNRs x 2 numbers of sources
    assert {(float(r["snr_db"]), int(r["n_sources"])) for r in rows} == {(0, 1), (0, 10), (30, 1), (30, 10)}
    assert (tmp_path / "user-inv.fif").exists() and "NEMD tuned 1 min" in out
