"""The command line: demo, apply and evaluation, with an untrained network."""

from functools import partial

import mne
import numpy as np
import pytest


def test_demo_writes_figure_and_reports_errors(tiny_weights, tmp_path, capsys):
    from mne_piunet.cli import main

    fig = tmp_path / "demo.png"
    assert main(["demo", "--weights", str(tiny_weights), "-o", str(fig), "--montage", "easycap-M10"]) == 0
    import matplotlib.pyplot as plt

    image = plt.imread(fig)  # a real figure of the four maps, whatever the fonts: not blank
    assert min(image.shape[:2]) > 200 and image[..., :3].std() > 0.05
    out = capsys.readouterr().out
    for method in ("dSPM", "sLORETA", "eLORETA", "PIUNet"):
        assert f"{method}" in out and "localisation error" in out


def test_apply_writes_volume_stc(simulated_evoked, tiny_weights, volume_setup, tmp_path):
    from mne_piunet.cli import main

    evoked, _ = simulated_evoked(volume_setup, n_times=3)
    evoked.save(tmp_path / "x-ave.fif")
    mne.minimum_norm.write_inverse_operator(
        tmp_path / "x-inv.fif", volume_setup.inverse_operator, verbose=False
    )
    main(
        [
            "apply",
            str(tmp_path / "x-ave.fif"),
            str(tmp_path / "x-inv.fif"),
            "-o",
            str(tmp_path / "out"),
            "--weights",
            str(tiny_weights),
            "--device",
            "cpu",
        ]
    )
    stc = mne.read_source_estimate(tmp_path / "out-vl.stc")
    assert isinstance(stc, mne.VolSourceEstimate) and stc.data.shape[1] == 3
    assert np.all(np.isfinite(stc.data)) and stc.data.max() > 0


def test_apply_names_its_output_refuses_to_overwrite_and_writes_vectors(
    simulated_evoked, tiny_weights, volume_setup, tmp_path, capsys
):
    from mne_piunet.cli import main

    evoked, _ = simulated_evoked(volume_setup, n_times=2)
    evoked.save(tmp_path / "x-ave.fif")
    mne.minimum_norm.write_inverse_operator(
        tmp_path / "x-inv.fif", volume_setup.inverse_operator, verbose=False
    )
    args = [
        "apply",
        str(tmp_path / "x-ave.fif"),
        str(tmp_path / "x-inv.fif"),
        "--weights",
        str(tiny_weights),
        "--device",
        "cpu",
    ]
    assert main([*args, "-o", str(tmp_path / "res.stc")]) == 0
    assert f"Wrote {tmp_path / 'res-vl.stc'} " in capsys.readouterr().out  # the file MNE really wrote
    assert (tmp_path / "res-vl.stc").is_file()
    with pytest.raises(SystemExit) as exit_:
        main([*args, "-o", str(tmp_path / "res")])
    assert exit_.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "res"), "--overwrite"]) == 0
    assert main([*args, "-o", str(tmp_path / "vec"), "--pick-ori", "vector"]) == 0
    vec = mne.read_source_estimate(tmp_path / "vec-vl.h5")
    assert isinstance(vec, mne.VolVectorSourceEstimate) and vec.data.shape[1:] == (3, 2)


def test_apply_asks_for_a_condition_and_lists_them(
    simulated_evoked, tiny_weights, volume_setup, tmp_path, capsys
):
    from mne_piunet.cli import main

    evoked, _ = simulated_evoked(volume_setup, n_times=2)
    a, b = evoked.copy(), evoked.copy()
    a.comment, b.comment = "left", "right"
    mne.write_evokeds(tmp_path / "two-ave.fif", [a, b])
    mne.minimum_norm.write_inverse_operator(
        tmp_path / "x-inv.fif", volume_setup.inverse_operator, verbose=False
    )
    ave, inv = str(tmp_path / "two-ave.fif"), str(tmp_path / "x-inv.fif")
    base = ["--weights", str(tiny_weights), "--device", "cpu", "-o", str(tmp_path / "o")]
    for extra, message in (
        ([], "holds 2 conditions (0: 'left', 1: 'right'): pick one with --condition"),
        (["--condition", "7"], "--condition 7 is out of range"),
        (["--condition", "up"], "no condition 'up'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["apply", ave, inv, *base, *extra])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # swapped arguments: the first is not an evoked file
        main(["apply", inv, ave, *base])
    assert "is not an evoked file" in capsys.readouterr().err
    assert main(["apply", ave, inv, *base, "--condition", "right"]) == 0


def test_version_and_cache_commands(tmp_path, monkeypatch, capsys):
    import importlib.metadata

    from mne_piunet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mne-piunet {importlib.metadata.version('mne-piunet')}"
    monkeypatch.setenv("MNE_PIUNET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "fwd").mkdir(parents=True)
    (tmp_path / "cache" / "fwd" / "a-fwd.fif").write_bytes(b"x" * 3_000_000)
    (tmp_path / "cache" / "notes.txt").write_text("the user's, not the cache's")
    assert main(["cache"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'cache'}: 3 MB")
    assert main(["cache", "--clear"]) == 0
    assert "Removed 3 MB" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["notes.txt"]  # only the cache's own entries
    # a cache folder that cannot be made names the variable and the fix
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MNE_PIUNET_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(SystemExit) as exit_:
        main(["cache"])
    assert exit_.value.code == 2 and "MNE_PIUNET_CACHE" in capsys.readouterr().err


def test_apply_bad_input_names_the_fix(simulated_evoked, tiny_weights, volume_setup, tmp_path, capsys):
    from mne_piunet.anatomy import make_template_forward
    from mne_piunet.cli import build_parser, main

    evoked, _ = simulated_evoked(volume_setup, n_times=3)
    evoked.save(tmp_path / "x-ave.fif")
    fwd = make_template_forward("easycap-M10", volume_setup.src)  # cached by volume_setup
    mne.write_forward_solution(tmp_path / "x-fwd.fif", fwd)
    with pytest.raises(SystemExit) as exit_:
        main(["apply", str(tmp_path / "x-ave.fif"), str(tmp_path / "x-fwd.fif"), "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "is not an inverse operator file" in err and "Traceback" not in err
    # --baseline takes None, as MNE's baseline does
    args = build_parser().parse_args(
        ["apply", "a-ave.fif", "a-inv.fif", "-o", "x", "--baseline", "None", "0"]
    )
    assert args.baseline == [None, 0.0]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["apply", "a-ave.fif", "a-inv.fif", "-o", "x", "--baseline", "soon", "0"])


def test_every_command_has_a_handler():
    from mne_piunet.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    from mne_piunet.cli import DEVELOPER_COMMANDS, USER_COMMANDS

    assert list(commands) == [*USER_COMMANDS, *DEVELOPER_COMMANDS]  # users' first
    for name, sub in commands.items():  # every option is explained, in plain text
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            assert "``" not in action.help
    assert "``" not in parser.format_help() and "developers" in parser.format_help()
    args = parser.parse_args(["benchmark", "--quick", "--methods", "eLORETA", "PIUNet"])
    assert args.func.__name__ == "_benchmark" and args.methods == ["eLORETA", "PIUNet"] and args.n is None
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--methods", "LCMV"])


def test_demo_evoked_has_the_requested_snr(volume_setup):
    from mne_piunet.simulation import DEMO_SOURCE_POS, simulate_demo_evoked

    evoked, centre = simulate_demo_evoked(volume_setup, snr_db=10.0, seed=1)
    assert np.linalg.norm(centre - DEMO_SOURCE_POS) < 0.01
    clean, _ = simulate_demo_evoked(volume_setup, snr_db=300.0, seed=1)
    peak = np.argmax(np.abs(clean.data).max(axis=0))
    signal, noise = clean.data[:, peak], evoked.data - clean.data
    ratio = (signal - signal.mean()).std() / noise.std(axis=0).mean()
    assert ratio**2 == pytest.approx(10.0, rel=0.05)


def test_fine_tune_command(tiny_weights, volume_setup, tmp_path, monkeypatch, capsys, small_fine_tune):
    from mne_piunet.anatomy import make_template_forward
    from mne_piunet.cli import main
    from mne_piunet.train.finetune import FINE_TUNE_SETTINGS

    fwd = make_template_forward("easycap-M10", volume_setup.src)
    mne.write_forward_solution(tmp_path / "s-fwd.fif", fwd)
    mne.minimum_norm.write_inverse_operator(tmp_path / "s-inv.fif", volume_setup.inverse_operator)
    args = [
        "fine-tune",
        "--fwd",
        str(tmp_path / "s-fwd.fif"),
        "--inv",
        str(tmp_path / "s-inv.fif"),
        "--weights",
        str(tiny_weights),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    # bad input: a clean message and status 2, no traceback
    (tmp_path / "exists.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", str(tmp_path / "exists.pt")])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "-o", str(tmp_path / "t.pt"), "--minutes", "0"])
    assert "minutes must be > 0" in capsys.readouterr().err
    # weights that cannot move validate no better: status 1 and nothing written
    monkeypatch.setitem(FINE_TUNE_SETTINGS, "lr", 0.0)
    with pytest.warns(RuntimeWarning, match="not better than .* on average, or are worse in a group"):
        assert main([*args, "-o", str(tmp_path / "t.pt"), "--minutes", "0.05"]) == 1
    assert "nothing was written" in capsys.readouterr().out and not (tmp_path / "t.pt").exists()


def test_bench_data_and_bench_speed_commands(volume_setup, surface_setup, capsys, monkeypatch):
    from mne_piunet.bench import speed
    from mne_piunet.cli import main

    assert main(["bench-data", "--montage", "easycap-M10", "--spaces", "volume", "--samples", "64"]) == 0
    rate = capsys.readouterr().out.strip()
    assert rate.startswith("easycap-M10 volume: ") and rate.endswith(" samples/s")
    assert float(rate.split(": ")[1].split()[0].replace(",", "")) > 0
    # the command's wiring and summary (every figure is checked in test_speed): 1-s data at 50 Hz, not 250,
    # and the network's forward alone timed on one batch of 2 maps, not 8 of 16
    bench_speed = speed.bench_speed
    monkeypatch.setattr(
        speed, "bench_speed", lambda *args, **kwargs: bench_speed(*args, **kwargs, sfreq=50.0)
    )
    monkeypatch.setattr(
        speed, "forward_ms_per_map", partial(speed.forward_ms_per_map, batch_size=2, n_batches=1)
    )
    assert main(["bench-speed", "--epochs", "1", "--raw-minutes", "0.02"]) == 0
    out = capsys.readouterr().out
    for row in ("apply_epochs", "apply_raw", "apply_inverse", "1 epochs of 1 s"):
        assert row in out


def test_evaluate_command_end_to_end(tiny_weights, tmp_path, monkeypatch, capsys):
    """The code behind the model card's tables, on one cached held-out setup instead of the real ones."""
    from mne_piunet.bench import experiments, report
    from mne_piunet.bench.experiments import CellGroup, Experiment
    from mne_piunet.bench.report import markdown_table, summarise
    from mne_piunet.cli import main
    from mne_piunet.simulation import HeadSetup

    setup = HeadSetup("easycap-M10")
    # one cell each (--quick: 3 samples per cell)
    tiny = {
        name: Experiment(name, (CellGroup(sweep, (("volume", setup),), (10.0,), (1,)),), seed=1)
        for name, sweep in (
            ("in-distribution", "evaluation"),
            ("held-out", "evaluation"),
            ("presets", "preset"),
            ("sensors", "sensors"),
        )
    }
    for module in (experiments, report):
        monkeypatch.setattr(module, "EXPERIMENTS", tiny)
    assert main(["evaluate", "--quick", "--weights", str(tiny_weights), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "In distribution" in out
        and "Held out" in out
        and "presets (seed 1" in out
        and "sensors (seed 1" in out
    )
    import csv

    rows = list(csv.DictReader(open(tmp_path / "evaluation.csv")))
    assert {r["method"] for r in rows} == {"eLORETA", "PIUNet"}
    assert len(rows) == len(tiny) * 3 * 2  # experiments x samples x methods
    assert all(0 <= float(r["nemd"]) < 2 for r in rows)
    summary = summarise(
        [dict(r, nemd=float(r["nemd"]), ple=float(r["ple"]), wcos=float(r["wcos"])) for r in rows]
    )
    assert summary[0]["nemd_ratio"] == pytest.approx(summary[0]["PIUNet:nemd"] / summary[0]["eLORETA:nemd"])
    assert "NEMD PIUNet" in markdown_table(summary)
