"""The method comparison: kernels, sparse solvers, the ``benchmark`` command and its old module."""

import csv

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


def test_sparse_solvers_explain_a_focal_source(volume_setup, piu):
    from mne_piunet.bench.evaluation import MethodRunner, score_map
    from mne_piunet.simulation import simulate

    batch = simulate(volume_setup, 1, np.random.default_rng(3), snr_db=30.0, n_sources=1, sigma_mm=(4.0, 4.0))
    runner = MethodRunner(volume_setup, methods=("eLORETA", "MxNE", "Gamma-MAP"))
    estimates, seconds = runner.estimate(batch, piu)
    assert set(estimates) == set(seconds) == {"eLORETA", "MxNE", "Gamma-MAP"}
    clean = batch.true.reshape(1, -1) @ volume_setup.leadfield.T
    noise_var = np.var(batch.sensor - clean, axis=1)
    for i, true in enumerate(batch.true):
        true_peak = true[np.argmax(np.linalg.norm(true, axis=1))]
        for method in ("MxNE", "Gamma-MAP"):
            est = runner.sparse(method, batch.sensor[i][:, None], noise_var[i])
            # back in place (vertex mapping) and in the MRI frame (rotation): it explains the data
            residual = batch.sensor[i] - volume_setup.leadfield @ est.ravel()
            assert np.linalg.norm(residual) < 0.3 * np.linalg.norm(batch.sensor[i]), method
            peak = est[np.argmax(np.linalg.norm(est, axis=1))]
            assert abs(peak @ true_peak) > 0.9 * np.linalg.norm(peak) * np.linalg.norm(true_peak), method
        # Gamma-MAP finds a near-point source at 30 dB exactly (MxNE's shrinkage biases it outwards)
        scores = score_map(estimates["Gamma-MAP"][i], batch.true_grid[i], piu.grid.pos, am=True)
        assert not scores["empty"] and scores["ple"] < 10


def test_sparse_solvers_and_peers_fit_the_window_and_score_its_centre(volume_setup, piu):
    """MxNE sees the sample's time course: a source on over the window is found at its centre."""
    from mne_piunet.bench.evaluation import EVAL_WINDOW, MethodRunner, score_map
    from mne_piunet.simulation import SourcePrior, simulate

    batch = simulate(
        volume_setup, 1, np.random.default_rng(4), SourcePrior(instantaneous=0.0), snr_db=5.0, n_sources=1,
        sigma_mm=(4.0, 4.0), window=EVAL_WINDOW,
    )  # fmt: skip
    methods = ("eLORETA", "MxNE")
    try:
        import invert  # noqa: F401

        methods += ("Flex-Champagne",)
    except ImportError:
        pass
    runner = MethodRunner(volume_setup, methods=methods)
    estimates, _ = runner.estimate(batch, piu)
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


def test_benchmark_quick_writes_scores_plots_and_summary(tiny_weights, tmp_path, capsys):
    from mne_piunet.bench.evaluation import AM_METHODS, BENCHMARK_METHODS, benchmark_cells
    from mne_piunet.cli import main

    # Gamma-MAP, by far the slowest solver, has its own test above
    methods = [m for m in BENCHMARK_METHODS if m != "Gamma-MAP"]
    argv = ["benchmark", "--quick", "--n", "1", "--weights", str(tiny_weights), "--out", str(tmp_path)]
    assert main(argv + ["--methods", *methods]) == 0
    with open(tmp_path / "scores.csv") as fid:
        rows = list(csv.DictReader(fid))
    cells = benchmark_cells(quick=True)
    assert len(rows) == len(cells) * len(methods)
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
    import matplotlib.pyplot as plt

    for name in ("benchmark_nemd.png", "benchmark_surface.png", "benchmark_volume.png"):
        image = plt.imread(tmp_path / name)  # drawn, whatever the fonts: not blank
        assert min(image.shape[:2]) > 200 and image[..., :3].std() > 0.05
    summary = (tmp_path / "summary.md").read_text()
    assert summary.strip() in capsys.readouterr().out
    assert "mne-piunet benchmark --quick --n 1 --seed 0" in summary
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


def test_preset_cells_cover_loose_and_sparse_montages(grid):
    from mne_piunet.bench.evaluation import preset_cells

    cells = preset_cells(grid, quick=True)
    assert {c.sweep for c in cells} == {"preset"}
    loose = [c for c in cells if c.setup.loose]
    assert loose and all(c.setup.source_space == "surface" and c.snr_db == 10.0 for c in loose)
    sparse = [c for c in cells if "32 channels" in c.value]
    assert len(mne.channels.make_standard_montage(sparse[0].setup.montage).ch_names) <= 33


def test_peak_floor_is_zero_where_the_sources_are_the_grid(piu, capsys, monkeypatch):
    """On the grid as source space the move onto the grid costs nothing, and eLORETA's peaks agree."""
    from mne_piunet.bench import evaluation
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

    monkeypatch.setattr(evaluation, "HELD_OUT_SETUPS", (HeadSetup("easycap-M10"),))
    assert main(["peak-floor", "--weights", str(piu.weights_path), "--n", "2", "--snrs", "20"]) == 0
    assert "| easycap-M10" in capsys.readouterr().out


def test_data_fit_ab_scores_each_variant_on_the_same_samples(tiny_weights, capsys, monkeypatch):
    from mne_piunet.bench import evaluation
    from mne_piunet.bench.evaluation import DATA_FIT_VARIANTS, data_fit_ab
    from mne_piunet.cli import main
    from mne_piunet.simulation import HeadSetup

    setup = HeadSetup("easycap-M10")
    rows = data_fit_ab(tiny_weights, (setup,), snrs=(20.0,), n_sources=(1,), n_per_cell=2)
    assert len(rows) == 2 * len(DATA_FIT_VARIANTS)
    by = {v[0]: [r["nemd"] for r in rows if r["variant"] == v[0]] for v in DATA_FIT_VARIANTS}
    assert all(0 <= x < 2 for values in by.values() for x in values)
    assert by["network alone"] != by["data fit"]  # the step changes the maps
    monkeypatch.setattr(evaluation, "HELD_OUT_SETUPS", (setup,))
    assert (
        main(["data-fit-ab", "--weights", str(tiny_weights), "--n", "1", "--snrs", "20", "--sources", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| network alone | data fit | data fit / rank |" in out and "| pooled | all | 1 |" in out
