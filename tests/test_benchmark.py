"""The method comparison: kernels, sparse solvers, the ``benchmark`` command and its old module."""

import csv
import json
from dataclasses import replace

import mne
import numpy as np
import pytest


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA"])
def test_linear_kernel_is_apply_inverse(simulated_evoked, volume_setup, method):
    from mne_piunet.simulation import linear_kernel

    evoked, batch = simulated_evoked(volume_setup, n_times=2)
    stc = mne.minimum_norm.apply_inverse(
        evoked, volume_setup.inverse_operator, volume_setup.lambda2, method, pick_ori="vector", verbose=False
    )
    expected = np.einsum("sct,mc->tsm", stc.data, volume_setup.head_to_mri)  # head -> MRI frame
    got = (batch.sensor @ linear_kernel(volume_setup, method).T).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_sparse_solvers_explain_a_focal_source(volume_setup, piu, monkeypatch):
    from mne_piunet.bench.evaluation import MXNE_ALPHA, MethodRunner, score_map
    from mne_piunet.simulation import simulate

    mxne_calls, mixed_norm = [], mne.inverse_sparse.mixed_norm

    def recorded_mixed_norm(*args, **kwargs):
        mxne_calls.append(kwargs)
        return mixed_norm(*args, **kwargs)

    monkeypatch.setattr(mne.inverse_sparse, "mixed_norm", recorded_mixed_norm)

    batch = simulate(volume_setup, 1, np.random.default_rng(3), snr_db=30.0, n_sources=1, sigma_mm=(4.0, 4.0))
    sparse_methods = ("MxNE", "MxNE-SURE", "Gamma-MAP")
    runner = MethodRunner(volume_setup, methods=("eLORETA",) + sparse_methods)
    solved, sparse = {}, runner.sparse  # each solver's output within estimate (each solved once)

    def recorded(method, sensor, noise_var):
        solved[method] = (sensor, noise_var, sparse(method, sensor, noise_var))
        return solved[method][-1]

    runner.sparse = recorded
    estimates, seconds = runner.estimate(batch, {"PIUNet": piu})
    assert set(estimates) == set(seconds) == {"eLORETA", *sparse_methods} == set(solved) | {"eLORETA"}
    sample, true = batch.sensor[0], batch.true[0]
    noise_var = np.var(sample - volume_setup.leadfield @ true.ravel())
    true_peak = true[np.argmax(np.linalg.norm(true, axis=1))]
    for method in sparse_methods:
        sensor, var, est = solved[method]
        # the sample's one time point (no window simulated) and its white noise variance
        np.testing.assert_array_equal(sensor, sample[:, None])
        np.testing.assert_allclose(var, noise_var, rtol=1e-10)
        # what estimate scores is this solution, on the grid
        np.testing.assert_allclose(estimates[method], volume_setup.grid_values(est[None]), rtol=1e-12)
        # back in place (vertex mapping) and in the MRI frame (rotation): it explains the data
        residual = sample - volume_setup.leadfield @ est.ravel()
        assert np.linalg.norm(residual) < 0.3 * np.linalg.norm(sample), method
        peak = est[np.argmax(np.linalg.norm(est, axis=1))]
        assert abs(peak @ true_peak) > 0.9 * np.linalg.norm(peak) * np.linalg.norm(true_peak), method
    # MxNE at the examples' alpha, MxNE-SURE at mixed_norm's own search, seeded (its draws are random)
    assert sorted(str(call["alpha"]) for call in mxne_calls) == sorted([str(MXNE_ALPHA), "sure"])
    sure = next(call for call in mxne_calls if call["alpha"] == "sure")
    assert sure.get("random_state", sure.get("rng")) is not None
    # Gamma-MAP finds a near-point source at 30 dB exactly (MxNE's shrinkage biases it outwards)
    scores = score_map(estimates["Gamma-MAP"][0], batch.true_grid[0], piu.grid.pos, am=True)
    assert not scores["empty"] and scores["ple"] < 10


def test_sparse_solvers_and_peers_fit_the_window_and_score_its_centre(volume_setup, piu):
    """MxNE sees the sample's time course: a source on over the window is found at its centre."""
    from mne_piunet.bench.evaluation import EVAL_WINDOW, MethodRunner, score_map
    from mne_piunet.simulation import SourcePrior, simulate

    batch = simulate(
        volume_setup,
        1,
        np.random.default_rng(4),
        SourcePrior(instantaneous=0.0),
        snr_db=5.0,
        n_sources=1,
        sigma_mm=(4.0, 4.0),
        window=EVAL_WINDOW,
    )
    methods = ("eLORETA", "MxNE")
    try:
        import invert  # noqa: F401

        methods += ("Flex-Champagne",)
    except ImportError:
        pass
    runner = MethodRunner(volume_setup, methods=methods)
    estimates, _ = runner.estimate(batch, {"PIUNet": piu})
    for method in methods[1:]:
        scores = score_map(estimates[method][0], batch.true_grid[0], piu.grid.pos)
        assert not scores["empty"] and scores["ple"] < 20, method


def test_peers_without_invertmeeg_name_the_extra(volume_setup, monkeypatch):
    import builtins

    from mne_piunet.bench.evaluation import MethodRunner

    real_import = builtins.__import__

    def no_invert(name, *args, **kwargs):
        if name == "invert" or name.startswith("invert."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_invert)
    with pytest.raises(ImportError, match=r"mne-piunet\[peers\]"):
        MethodRunner(volume_setup, methods=("eLORETA", "Champagne"))


def test_unknown_method_is_refused(volume_setup):
    from mne_piunet.bench.evaluation import MethodRunner

    with pytest.raises(ValueError, match="Unknown methods.*LCMV"):
        MethodRunner(volume_setup, methods=("eLORETA", "LCMV"))


def test_benchmark_writes_scores_plots_and_summary(tiny_weights, tmp_path, capsys, monkeypatch):
    from mne_piunet.bench import experiments
    from mne_piunet.bench.evaluation import AM_METHODS, BENCHMARK_METHODS
    from mne_piunet.bench.experiments import CellGroup
    from mne_piunet.cli import main
    from mne_piunet.simulation import HeadSetup

    # the benchmark's sweeps on sphere heads (no BEM to build); Gamma-MAP, by far the slowest solver,
    # has its own test above
    spaces = tuple((s, HeadSetup("easycap-M43", "sphere", source_space=s)) for s in ("surface", "volume"))
    groups = (
        CellGroup("snr_db", spaces, (0.0, 20.0)),
        CellGroup("n_sources", spaces, n_sources=(1, 3)),
        CellGroup("extent_mm", spaces, extents_mm=(10.0, 40.0)),
    )
    benchmark = replace(experiments.EXPERIMENTS["benchmark"], groups=groups)
    monkeypatch.setitem(experiments.EXPERIMENTS, "benchmark", benchmark)
    methods = [m for m in BENCHMARK_METHODS if m != "Gamma-MAP"]
    argv = ["benchmark", "--n", "1", "--weights", str(tiny_weights), "--out", str(tmp_path)]
    assert main(argv + ["--methods", *methods]) == 0
    with open(tmp_path / "scores.csv") as fid:
        rows = list(csv.DictReader(fid))
    assert len(rows) == len(benchmark.cells()) * len(methods) == 12 * len(methods)
    assert {r["method"] for r in rows} == set(methods)
    assert {r["sweep"] for r in rows} == {"snr_db", "n_sources", "extent_mm"}
    for r in rows:
        # every method saw the same sample: same cell, same extent
        assert float(r["extent_mm"]) > 0
        assert np.isnan(float(r["nmse"])) == (r["method"] not in AM_METHODS)
        if r["empty"] == "False":
            assert 0 <= float(r["nemd"]) < 3 and float(r["ple"]) >= 0
    extents = {(r["setup"], r["sweep"], r["value"]): r["extent_mm"] for r in rows if r["method"] == "MNE"}
    assert all(extents[(r["setup"], r["sweep"], r["value"])] == r["extent_mm"] for r in rows)
    sweep_extents = sorted({round(float(r["extent_mm"]), 6) for r in rows if r["sweep"] == "extent_mm"})
    assert sweep_extents == [10.0, 40.0]  # each extent cell's sources have that extent (2 sigma)
    import matplotlib.pyplot as plt

    for name in ("benchmark_nemd.png", "benchmark_surface.png", "benchmark_volume.png"):
        image = plt.imread(tmp_path / name)  # drawn, whatever the fonts: not blank
        assert min(image.shape[:2]) > 200 and image[..., :3].std() > 0.05
    summary = (tmp_path / "summary.md").read_text()
    assert summary.strip() in capsys.readouterr().out
    assert "mne-piunet benchmark --n 1 --methods" in summary
    for method in methods:
        assert f"| {method} |" in summary


def test_score_map_of_an_empty_map():
    from mne_piunet.bench.evaluation import score_map

    pos = np.random.default_rng(0).uniform(-0.05, 0.05, (50, 3))
    true = np.zeros((50, 3))
    true[3] = (0, 0, 1e-8)
    scores = score_map(np.zeros((50, 3)), true, pos, am=True)
    assert scores["empty"] and np.isnan(scores["nemd"]) and scores["peak_ratio"] == 0
    scores = score_map(2 * true, true, pos, am=False)
    assert not scores["empty"] and scores["ple"] == 0 and np.isnan(scores["nmse"])
    assert np.isnan(scores["peak_ratio"]) and np.isnan(scores["mass_ratio"])


def test_data_and_inverse_from_different_heads(volume_setup, grid):
    """The paper setting's mechanism: the leadfield from one forward, eLORETA from another's inverse."""
    from mne_piunet.anatomy import make_template_forward
    from mne_piunet.simulation import prepare_user_setup, simulate

    sphere_fwd = make_template_forward("easycap-M10", grid.src, head="sphere")
    mixed = prepare_user_setup(
        sphere_fwd, volume_setup.inverse_operator, grid, name="sphere data, BEM inverse"
    )
    # equal up to the rounding of the head -> MRI rotation (polar decomposition vs as stored)
    scale = np.abs(volume_setup.kernel).max()
    np.testing.assert_allclose(mixed.kernel, volume_setup.kernel, rtol=1e-5, atol=1e-6 * scale)
    assert np.linalg.norm(mixed.leadfield - volume_setup.leadfield) > 0.05 * np.linalg.norm(
        volume_setup.leadfield
    )
    # the same sources give other sensor data, hence another eLORETA map
    a = simulate(mixed, 2, np.random.default_rng(0), snr_db=30.0)
    b = simulate(volume_setup, 2, np.random.default_rng(0), snr_db=30.0)
    np.testing.assert_allclose(a.true, b.true, rtol=1e-6, atol=1e-6 * np.abs(b.true).max())
    assert np.linalg.norm(a.eloreta - b.eloreta) > 0.05 * np.linalg.norm(b.eloreta)


def test_experiments_expand_to_their_cells():
    from mne_piunet.bench.experiments import EXPERIMENTS, HEADLINE, MismatchSetup

    assert set(HEADLINE) <= set(EXPERIMENTS)
    held = EXPERIMENTS["held-out"].cells()
    assert len(held) == 2 * 5 * 5 and {c.sweep for c in held} == {"evaluation"}
    assert held[0].value == "SNR 0 dB, 1 sources" and held[-1].value == "SNR 30 dB, 10 sources"
    assert EXPERIMENTS["single-maps"].single and not EXPERIMENTS["held-out"].single
    presets = EXPERIMENTS["presets"].cells()
    loose = [c for c in presets if getattr(c.setup, "loose", 0)]
    assert loose and all(c.setup.source_space == "surface" and c.snr_db == 10.0 for c in loose)
    sparse = [c for c in presets if c.value == "32 channels"]
    assert len(mne.channels.make_standard_montage(sparse[0].setup.montage).ch_names) <= 33
    paper = [c for c in presets if isinstance(c.setup, MismatchSetup)]
    assert {c.setup.spacing_mm for c in paper} == {7.0} and {c.n_sources for c in paper} == {1, 3}
    # one factor per benchmark sweep, around one source at 10 dB
    bench = EXPERIMENTS["benchmark"].cells()
    snr = [c for c in bench if c.sweep == "snr_db"]
    assert [c.value for c in snr[:5]] == [0.0, 5.0, 10.0, 20.0, 30.0] and {c.n_sources for c in snr} == {1}
    assert {c.snr_db for c in bench if c.sweep != "snr_db"} == {10.0}
    # the peak comparison: one source at 5 and 20 dB on held-out arrays, MxNE at both alphas
    peaks = EXPERIMENTS["peaks"]
    assert {(c.n_sources, c.snr_db) for c in peaks.cells()} == {(1, 5.0), (1, 20.0)}
    labels = {c.value for c in peaks.cells()}
    assert len(labels) == 5 and {"MEG (kit157)", "OPM (flux120)", "biosemi128/bem0.0113/volume"} <= labels
    assert {"MxNE", "MxNE-SURE", "PIUNet"} <= set(peaks.methods) and not peaks.single
    # a quick run keeps each group's first setup and extreme values
    quick = EXPERIMENTS["held-out"].cells(quick=True)
    assert [(c.snr_db, c.n_sources) for c in quick] == [(0.0, 1), (0.0, 10), (30.0, 1), (30.0, 10)]


def test_validation_setups_come_from_the_validation_list():
    """The data-fit design's validation setups are two of ``eeg-meg-val``'s, as written out before."""
    from dataclasses import asdict

    from mne_piunet.bench.experiments import EXPERIMENTS, VALIDATION_SETUPS
    from mne_piunet.simulation import SETUP_LISTS, HeadSetup

    expected = (
        HeadSetup("mgh60", "bem", (0.332, 0.0113, 0.332), "volume"),
        HeadSetup("GSN-HydroCel-64_1.0", "bem", (0.332, 0.0113, 0.332), "surface"),
    )
    assert len(VALIDATION_SETUPS) == len(expected)
    for got, want in zip(VALIDATION_SETUPS, expected):
        assert type(got) is HeadSetup
        assert asdict(got) == asdict(want)  # field by field, conductivity a tuple as written
        assert isinstance(got.conductivity, tuple)
    listed = [HeadSetup(**dict(k, conductivity=tuple(k["conductivity"]))) for k in SETUP_LISTS["eeg-meg-val"]]
    assert all(setup in listed for setup in VALIDATION_SETUPS)
    # the experiment the design is chosen with runs on them, in this order
    cells = EXPERIMENTS["data-fit-validation"].cells()
    in_order = []
    for cell in cells:
        if cell.setup not in in_order:
            in_order.append(cell.setup)
    assert in_order == list(expected)


def test_mismatch_setup_takes_data_and_inverse_from_two_heads(grid):
    from mne_piunet.bench.evaluation import MismatchSetup, prepare_mismatch
    from mne_piunet.simulation import HeadSetup, prepare_setup

    data = HeadSetup("easycap-M10")
    inverse = HeadSetup("easycap-M10", "sphere")  # cached by the test above
    prepared, forward = prepare_mismatch(MismatchSetup(data, inverse), grid)
    same_data = prepare_setup(data, grid)
    scale = np.abs(same_data.leadfield).max()
    np.testing.assert_allclose(prepared.leadfield, same_data.leadfield, rtol=1e-4, atol=1e-5 * scale)
    assert not np.allclose(forward["sol"]["data"], same_data.leadfield)  # MxNE fits the inverse's head
    assert prepared.name.endswith(", inverse sphere")
    assert MismatchSetup(data, data).name.endswith(", inverse bem 0.3/0.006/0.3")


def test_peak_floor_is_zero_where_the_sources_are_the_grid(piu, capsys, monkeypatch):
    """On the grid as source space the move onto the grid costs nothing, and eLORETA's peaks agree."""
    from mne_piunet.bench import experiments
    from mne_piunet.bench.evaluation import PEAK_FLOOR_MAPS, peak_floor
    from mne_piunet.bench.report import peak_floor_table
    from mne_piunet.simulation import HeadSetup

    rows = peak_floor(piu, setups=(HeadSetup("easycap-M10"),), snrs=(20.0,), n_per_cell=3)
    assert len(rows) == 3 * len(PEAK_FLOOR_MAPS)
    by_map = {m: [r["error_mm"] for r in rows if r["map"] == m] for m in PEAK_FLOOR_MAPS}
    assert max(by_map["truth on the grid"]) < 1e-6  # round-off of the frames alone
    np.testing.assert_allclose(by_map["eLORETA on its sources"], by_map["eLORETA on the grid"], atol=1e-6)
    assert all(e >= 0 for errors in by_map.values() for e in errors)
    table = peak_floor_table(rows, PEAK_FLOOR_MAPS)
    assert table.count("\n") == 2 and "| 0.0 [0.0, 0.0] |" in table
    # the command prints the same table
    from mne_piunet.cli import main

    monkeypatch.setattr(experiments, "HELD_OUT_SETUPS", (HeadSetup("easycap-M10"),))
    assert main(["peak-floor", "--weights", str(piu.weights_path), "--n", "2", "--snrs", "20"]) == 0
    assert "| easycap-M10" in capsys.readouterr().out


def test_variants_score_the_same_samples_as_a_user_applies_them(tiny_weights, capsys, monkeypatch):
    """Each PIUNet variant on the same samples, through apply; the network alone is what predict_grid gives."""
    from mne_piunet.bench import experiments
    from mne_piunet.bench.experiments import CellGroup, Experiment, run_experiment
    from mne_piunet.cli import main
    from mne_piunet.simulation import HeadSetup

    setup = HeadSetup("easycap-M10")
    experiment = Experiment(
        "data fit",
        (CellGroup("evaluation", (("v", setup),), (20.0,), (3,)),),
        seed=5,
        methods=("PIUNet",),
        n_per_cell=2,
        variants=(("network alone", dict(data_fit=False)), ("data fit", {})),
    )
    rows = run_experiment(experiment, tiny_weights)
    assert len(rows) == 1 * 2 * 2  # cells x samples x variants
    by = {v: [r for r in rows if r["method"] == v] for v in ("network alone", "data fit")}
    assert [r["extent_mm"] for r in by["network alone"]] == [r["extent_mm"] for r in by["data fit"]]
    assert all(0 <= r["nemd"] < 2 for r in rows)
    assert [r["nemd"] for r in by["network alone"]] != [r["nemd"] for r in by["data fit"]]
    monkeypatch.setitem(experiments.EXPERIMENTS, "data-fit", experiment)
    assert main(["experiment", "data-fit", "--weights", str(tiny_weights), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "NEMD network alone | NEMD data fit" in out and f"| {setup.name} | 20 | 3 |" in out


def test_runner_applies_piunet_as_predict_grid_sees_the_window(volume_setup, piu):
    """The benchmark's path (an Evoked of the window, apply) gives the maps the simulation's inputs give."""
    from mne_piunet import PIUNetInverse
    from mne_piunet.bench.evaluation import EVAL_WINDOW, MethodRunner
    from mne_piunet.simulation import SourcePrior, simulate

    batch = simulate(
        volume_setup, 3, np.random.default_rng(3), SourcePrior(instantaneous=0.0), window=EVAL_WINDOW
    )
    runner = MethodRunner(volume_setup, ("PIUNet",))
    alone = PIUNetInverse(piu.weights_path, device="cpu", precision="float32", data_fit=False)
    via_apply = runner.piunet(alone, batch.sensor_window, batch.window_s)
    direct = alone.predict_grid(*batch.network_maps(alone.network.config))
    np.testing.assert_allclose(via_apply, direct, rtol=1e-3, atol=1e-3 * np.abs(direct).max())
    single = runner.piunet(
        alone, batch.sensor[:, None], batch.window_s
    )  # one time point: an instantaneous context
    np.testing.assert_allclose(
        single, alone.predict_grid(batch.eloreta_grid), rtol=1e-3, atol=1e-3 * np.abs(direct).max()
    )


def test_runner_refines_the_centre_that_apply_gives(volume_setup, piu, monkeypatch):
    """The benchmark refines only the scored centre, with the data-fit step: apply's centre column."""
    from mne_piunet.bench.evaluation import EVAL_WINDOW, MethodRunner
    from mne_piunet.simulation import SourcePrior, simulate

    batch = simulate(
        volume_setup, 1, np.random.default_rng(7), SourcePrior(instantaneous=0.0), window=EVAL_WINDOW
    )
    # the session's model (its eLORETA preparations cached), one map per network call, so that apply's
    # 21 maps and the centre alone run the same arithmetic: batches of 21 and of 1 differ by float32
    # round-off (about 2e-5 of the network's peak on CPU)
    monkeypatch.setattr(piu, "batch_size", 1)
    assert piu.data_fit
    runner = MethodRunner(volume_setup, ("PIUNet",))
    centre_only = runner.piunet(piu, batch.sensor_window, batch.window_s)
    n_times = batch.sensor_window.shape[1]
    centre = n_times // 2
    info = volume_setup.info.copy()
    with info._unlock():
        info["sfreq"] = (n_times - 1) / batch.window_s
    evoked = mne.EvokedArray(batch.sensor_window[0].T, info, tmin=-centre / info["sfreq"], verbose=False)
    stc = piu.apply(
        evoked, volume_setup.inverse_operator, volume_setup.lambda2, pick_ori="vector", verbose=False
    )
    assert stc.data.shape[-1] == n_times and stc.times[centre] == 0
    via_apply = stc.data[:, :, centre]
    assert centre_only.shape == (1,) + via_apply.shape == (1, piu.grid.n_sources, 3)
    scale = np.abs(via_apply).max()
    assert scale > 0
    np.testing.assert_allclose(centre_only[0], via_apply, rtol=1e-5, atol=1e-6 * scale)
    # the data-fit step is part of what is compared: without it the map differs
    monkeypatch.setattr(piu, "data_fit", False)
    network_only = runner.piunet(piu, batch.sensor_window, batch.window_s)
    assert np.abs(network_only - centre_only).max() > 1e-3 * scale


def test_headline_report_is_dated_and_names_its_weights(tiny_weights, tmp_path, monkeypatch):
    from mne_piunet._cache import file_sha256
    from mne_piunet.bench import experiments, report
    from mne_piunet.bench.experiments import CellGroup, Experiment

    group = CellGroup("evaluation", (("v", experiments.HeadSetup("easycap-M10")),), (10.0,), (1,))
    tiny = {name: Experiment(name, (group,), seed=1, n_per_cell=1) for name in ("a", "b")}
    monkeypatch.setattr(report, "EXPERIMENTS", tiny)
    monkeypatch.setattr(report, "HEADLINE", ("a", "b"))
    monkeypatch.setattr(experiments, "EXPERIMENTS", tiny)
    text, data = report.headline_report(tiny_weights, out=tmp_path)
    meta = json.loads((tmp_path / "headline.json").read_text())["meta"]
    assert meta["weights_sha256"] == file_sha256(tiny_weights) and meta["command"].startswith(
        "mne-piunet report"
    )
    assert meta["date"] in text and meta["machine"] in text
    assert (tmp_path / "headline.md").read_text() == text and text.count("## ") == 2
    assert set(data["a"]["pooled"]) == {"eLORETA", "PIUNet"}
    assert "One source at 5-20 dB" in data["a"]["tables"][-1]


def test_peak_steadiness_measures_mne_peaks_and_piunet_alike(simulated_evoked, volume_setup, piu):
    """Peaks per sample of MNE's own dSPM; a linear method's peaks do not depend on cropping first."""
    from mne_piunet.bench.real_data import peak_steadiness
    from mne_piunet.bench.report import steadiness_table

    evoked, _ = simulated_evoked(volume_setup, n_times=6, seed=4)
    evoked.comment = "sim"
    window = (evoked.times[1], evoked.times[4])
    inv = volume_setup.inverse_operator
    rows = peak_steadiness(evoked, inv, piu, window, methods=("dSPM", "PIUNet"))
    assert [(r["data"], r["method"]) for r in rows] == [
        ("whole evoked", "dSPM"),
        ("whole evoked", "PIUNet"),
        ("crop", "dSPM"),
        ("crop", "PIUNet"),
    ]
    stc = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "dSPM", verbose=False).crop(*window)
    pos = np.concatenate([s["rr"][v] for s, v in zip(inv["src"], stc.vertices)])
    peaks = pos[np.argmax(np.abs(stc.data), axis=0)]
    jump = 1e3 * np.median(np.linalg.norm(np.diff(peaks, axis=0), axis=1))
    assert rows[0]["median_jump_mm"] == pytest.approx(jump) == rows[2]["median_jump_mm"]
    assert rows[0]["mean_peak_mm"] == rows[2]["mean_peak_mm"]
    assert all(r["median_jump_mm"] >= 0 for r in rows)
    table = steadiness_table([dict(r, contralateral=True) for r in rows])
    assert table.count("\n") == 5 and "| PIUNet | crop |" in table
