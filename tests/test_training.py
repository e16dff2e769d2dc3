"""Training smoke test: a tiny model on a few dozen steps learns something."""

import json
import re

import numpy as np
import pytest
import torch


def _curve(fname):
    return json.loads(fname.with_suffix(".json").read_text())["curve"]


def _tiny_config(**kwargs):
    from mne_piunet.train.training import TrainConfig

    return TrainConfig(
        **dict(
            dict(
                train_setups=[dict(montage="easycap-M10")],
                val_setups=[dict(montage="biosemi64", source_space="surface")],
                lambda2=[1 / 9],
                prior=dict(max_sources=2, sigma_mm=[8.0, 20.0]),
                network=dict(width=8, levels=2, heads=2, groups=4),
                batch_size=8,
                lr=1e-3,
                warmup_steps=5,
                max_steps=60,
                val_size=8,
                val_every_steps=20,
                threads=2,
                device="cpu",
            ),
            **kwargs,
        )
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, volume_setup, surface_setup):
    """One 60-step run of a tiny model, shared by the tests below (which copy it before changing it)."""
    from mne_piunet.train.training import train

    out = tmp_path_factory.mktemp("tiny_run")
    return out, train(_tiny_config(), out)


def test_tiny_training_learns_and_exports_its_best(tiny_run):
    """The training contract; which step validates best depends on the CPU's rounding, so it is not tested."""
    out, best = tiny_run
    assert best == out / "best.pt"
    assert "val NEMD" in (out / "train.log").read_text()
    # final (the last checkpoint's export) holds the whole curve: every validation step
    final = _curve(out / "final.pt")
    assert [c["step"] for c in final] == [20, 40, 60]
    assert all(np.isfinite(c["val_nemd"]) for c in final)
    assert final[-1]["loss"] < final[0]["loss"]  # it learns
    # best is the export at the lowest validation NEMD, so its curve ends there
    best_curve = _curve(best)
    assert best_curve == final[: len(best_curve)]
    assert best_curve[-1]["val_nemd"] == min(c["val_nemd"] for c in final)
    assert json.loads(best.with_suffix(".json").read_text())["provenance"]["steps"] == best_curve[-1]["step"]
    # the latest checkpoint's weights are exported too, for a run cut short
    assert json.loads((out / "latest.json").read_text())["provenance"]["steps"] == 60


def test_resume_continues_the_checkpoint(tiny_run, tmp_path):
    import shutil

    from mne_piunet.train.training import train

    src, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    final = _curve(out / "final.pt")
    train(_tiny_config(max_steps=65), out)
    assert "resumed at step 60" in (out / "train.log").read_text()
    resumed = _curve(out / "final.pt")
    assert resumed[:-1] == final and resumed[-1]["step"] == 65
    assert json.loads((out / "final.json").read_text())["provenance"]["steps"] == 65
    best_curve = _curve(out / "best.pt")
    assert best_curve == resumed[: len(best_curve)]


def test_fine_tune_records_its_initial_weights(tiny_run, tmp_path):
    """Fine-tuning (here with the transport term) records the weights it started from."""
    from mne_piunet._cache import file_sha256
    from mne_piunet.train.training import train

    src, _ = tiny_run
    train(_tiny_config(max_steps=2, transport_weight=1.0), tmp_path / "ft", init=src / "final.pt")
    ft = json.loads((tmp_path / "ft" / "final.json").read_text())
    init = ft["provenance"]["init"]
    assert (init["file"], init["sha256"]) == ("final.pt", file_sha256(src / "final.pt"))
    # the fine-tune's curve starts with the initial weights' score on its validation set
    assert ft["curve"][0]["step"] == 0 and ft["curve"][0]["val_nemd"] == init["val_nemd"]
    assert np.isfinite(init["val_nemd"])


def test_temporal_training_starts_at_its_init_and_learns_the_context(tiny_run, tmp_path):
    """A network with context, from weights without: step 0 scores as they do; its own rate moves the context."""
    from mne_piunet.network import load_network
    from mne_piunet.train.training import make_validation_set, train, validation_nemd

    src, _ = tiny_run
    network = dict(width=8, levels=2, heads=2, groups=4, context="power", window_s=0.04, window_points=5)
    config = _tiny_config(max_steps=4, val_every_steps=2, network=network, context_lr=1e-2)
    out = tmp_path / "temporal"
    train(config, out, init=src / "final.pt")
    meta = json.loads((out / "final.json").read_text())
    assert meta["config"]["context"] == "power" and meta["config"]["in_channels"] == 4
    # step 0 is the initial weights', on the temporal validation set
    start = load_network(src / "final.pt")
    val = make_validation_set(config, _grid(config))
    assert meta["curve"][0]["step"] == 0
    assert meta["curve"][0]["val_nemd"] == pytest.approx(
        validation_nemd(start.network, val, _grid(config)), rel=1e-4
    )
    assert val["windows"].shape == (config.val_size, 5)
    # the context's convolution left zero
    assert load_network(out / "final.pt").network.context_stem.weight.abs().max() > 0


@pytest.mark.parametrize("correction_width", [0, 4], ids=["shared", "correction"])
def test_residual_training_starts_at_its_init_and_trains_the_second_pass(
    tiny_run, tmp_path, monkeypatch, correction_width
):
    """A residual pass grown from weights without: step 0 scores as they do; every other step is a second pass."""
    from mne_piunet.network import load_network
    from mne_piunet.train import training
    from mne_piunet.train.training import make_validation_set, train, validation_nemd

    second_passes, real = [], training.residual_inputs
    monkeypatch.setattr(
        training, "residual_inputs", lambda inputs, *a: second_passes.append(len(inputs)) or real(inputs, *a)
    )
    src, _ = tiny_run
    network = dict(
        width=8, levels=2, heads=2, groups=4, residual_pass=True, correction_width=correction_width
    )
    config = _tiny_config(max_steps=4, val_every_steps=2, network=network, context_lr=1e-2, data_workers=1)
    out = tmp_path / "residual"
    train(config, out, init=src / "final.pt")
    assert second_passes == [config.batch_size] * 2  # steps 2 and 4 of 4, on the network's own first pass
    assert "simulating in 1 worker process(es)" in (out / "train.log").read_text()
    meta = json.loads((out / "final.json").read_text())
    assert meta["config"]["residual_pass"] and meta["config"]["in_channels"] == 6
    # step 0 is the initial weights' (a grown network computes what they do in both passes)
    val = make_validation_set(config, _grid(config))
    assert val["resolution"] is not None
    start = load_network(src / "final.pt").network
    assert meta["curve"][0]["val_nemd"] == pytest.approx(validation_nemd(start, val, _grid(config)), rel=1e-4)
    trained = load_network(out / "final.pt").network
    if correction_width:  # the correction network left zero; the first pass's network never sees the residual
        assert trained.context_stem is None
        assert trained.correction.out[-1].weight.abs().max() > 0
    else:  # the residual channels' convolution left zero
        assert trained.context_stem.weight.abs().max() > 0


def _grid(config):
    from mne_piunet.grid import get_grid

    return get_grid(config.grid_spacing_mm, config.grid_mindist_mm)


def test_simulation_in_worker_processes_and_bf16_steps(tiny_run, tmp_path):
    """The GPU recipe's path, on the CPU: data from worker processes, bf16 autocast, a wall-clock budget."""
    from mne_piunet.network import load_network
    from mne_piunet.train.training import train

    src, _ = tiny_run
    config = _tiny_config(
        max_steps=10**6,
        max_minutes=0.1,
        data_workers=2,
        precision="bfloat16",
        checkpoint_every_s=1.0,
        val_every_steps=10**6,
    )
    train(config, tmp_path / "gpu", init=src / "final.pt")
    log = (tmp_path / "gpu" / "train.log").read_text()
    assert "simulating in 2 worker process(es)" in log and "bfloat16" in log
    assert "time budget of 0.1 min reached" in log
    latest = load_network(tmp_path / "gpu" / "latest.pt")  # rewritten at every checkpoint
    final = json.loads((tmp_path / "gpu" / "final.json").read_text())
    assert latest.meta["provenance"]["steps"] == final["provenance"]["steps"] > 0


def test_sigterm_stops_the_run_cleanly(tiny_run, tmp_path, monkeypatch):
    """A plain kill (the background mode's stop) finishes the step, validates, checkpoints and exports."""
    import os
    import signal

    from mne_piunet.train import training

    src, _ = tiny_run
    step = training._train_step
    calls = []

    def step_then_kill(run):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(run)

    monkeypatch.setattr(training, "_train_step", step_then_kill)
    before = signal.getsignal(signal.SIGTERM)
    training.train(_tiny_config(max_steps=1000), tmp_path / "stop", init=src / "final.pt")
    log = (tmp_path / "stop" / "train.log").read_text()
    assert "stopped on request" in log
    assert json.loads((tmp_path / "stop" / "final.json").read_text())["provenance"]["steps"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored


def test_relative_loss():
    from mne_piunet.train.losses import relative_loss

    target = torch.zeros(2, 3, 4, 4, 4)
    target[0, 0, 1, 1, 1] = 2.0
    target[1, 2, 2, 2, 2] = -1.0
    zero = torch.zeros_like(target)
    for norms in (("l1",), ("l2",), ("l1", "l2")):
        for scales in ((1,), (1, 2, 4)):
            assert relative_loss(zero, target, scales, norms).item() == pytest.approx(1.0)
            assert relative_loss(target, target, scales, norms).item() == 0.0
    assert relative_loss(2 * target, target).item() == pytest.approx(1.0)
    assert relative_loss(2 * target, target, norms=("l2",)).item() == pytest.approx(1.0)
    # one voxel off: zero credit at full resolution, some after pooling
    shifted = torch.roll(target, 1, dims=-1)
    assert relative_loss(shifted, target).item() == pytest.approx(2.0)
    assert relative_loss(shifted, target, scales=(1, 2, 4)).item() < 2.0


def test_shape_amplitude_and_distill_losses():
    from mne_piunet.network import UNet3d, UNetConfig
    from mne_piunet.train.losses import distill_loss, relative_loss, shape_amplitude_loss

    torch.manual_seed(0)
    target = torch.randn(2, 3, 8, 8, 8)
    shape = torch.randn(2, 3, 8, 8, 8)
    log_ratio, target_log_ratio = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])
    loss = shape_amplitude_loss(shape, log_ratio, target, target_log_ratio, amplitude_weight=0.1)
    assert loss.item() == pytest.approx(relative_loss(shape, target).item() + 0.1 * 0.25)
    # a student identical to its teacher is (to bf16 round-off) at zero distillation loss
    net = UNet3d(UNetConfig(width=8, levels=2, heads=2, groups=4), torch.ones(8, 8, 8, dtype=torch.bool))
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    inputs = torch.randn(2, 3, 8, 8, 8)
    with torch.no_grad():
        student, student_log_ratio = net(inputs)
    assert distill_loss(net, inputs, student, student_log_ratio).item() < 0.1
    assert distill_loss(net, inputs, torch.zeros_like(student), student_log_ratio).item() == pytest.approx(
        1.0
    )


def test_blend_interpolates_weights_and_records_inputs(tmp_path, tiny_weights, grid, capsys):
    from mne_piunet._cache import file_sha256
    from mne_piunet.cli import main
    from mne_piunet.grid import grid_meta
    from mne_piunet.network import UNet3d, UNetConfig, load_network, save_network

    first = load_network(tiny_weights).network
    second = UNet3d(first.config, torch.from_numpy(grid.mask))
    second.load_state_dict(
        {k: v + 1.0 if v.is_floating_point() else v for k, v in first.state_dict().items()}
    )
    second_file = save_network(second, tmp_path / "second.pt", dict(grid=grid_meta(grid)))
    out = tmp_path / "blend.pt"
    assert main(["blend", str(tiny_weights), str(second_file), "--alpha", "0.25", "--out", str(out)]) == 0
    blended = load_network(out).network
    for name, value in blended.named_parameters():
        torch.testing.assert_close(value, dict(first.named_parameters())[name] + 0.25)
    torch.testing.assert_close(blended.mask, first.mask)  # buffers are not blended
    blend = load_network(out).meta["provenance"]["blend"]
    assert blend["alpha"] == 0.25 and blend["second"]["sha256"] == file_sha256(second_file)
    # the command reports bad input with the library's message and status 2, no traceback
    with pytest.raises(SystemExit) as exc:
        main(["blend", str(tiny_weights), str(second_file), "--alpha", "1.5", "--out", str(out)])
    assert exc.value.code == 2 and "alpha must be in [0, 1]" in capsys.readouterr().err
    other = UNet3d(UNetConfig(width=8, levels=2, heads=1, groups=4), torch.from_numpy(grid.mask))
    other_file = save_network(other, tmp_path / "other.pt", dict(grid=grid_meta(grid)))
    with pytest.raises(SystemExit):
        main(["blend", str(tiny_weights), str(other_file), "--alpha", "0.5", "--out", str(out)])
    assert re.search("config differs.*its own fine-tune", capsys.readouterr().err)


def test_blend_takes_weights_written_before_a_config_field_existed(tmp_path, tiny_weights):
    """A weights file whose config lacks fields added since (their defaults) blends with a fresh save of itself."""
    from mne_piunet.network import load_network, save_network
    from mne_piunet.train.training import blend_weights

    old = load_network(tiny_weights)
    resaved = save_network(old.network, tmp_path / "resaved.pt", dict(old.meta))
    older = save_network(old.network, tmp_path / "older.pt", dict(old.meta))
    meta_file = older.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    for field in ("residual_pass", "correction_width"):
        del meta["config"][field]
    meta_file.write_text(json.dumps(meta))
    out = blend_weights(older, resaved, 0.5, tmp_path / "blend.pt")
    torch.testing.assert_close(load_network(out).network.state_dict(), old.network.state_dict())


def test_validate_compares_weights_per_number_of_sources(tmp_path, tiny_weights, volume_setup, capsys):
    from dataclasses import asdict

    from mne_piunet.cli import main
    from mne_piunet.train.training import TrainConfig, validate_by_sources

    config = TrainConfig(val_setups=[dict(montage="easycap-M10")], lambda2=[1 / 9])
    res = validate_by_sources([tiny_weights], config, n_sources=(1, 3), n_per_setup=2)
    assert set(res) == {"eLORETA", str(tiny_weights)}
    for by_k in res.values():
        assert set(by_k) == {1, 3} and all(0 < v < 3 for v in by_k.values())
    # the same seed gives the same samples, so eLORETA's figures repeat exactly
    again = validate_by_sources([tiny_weights], config, n_sources=(1, 3), n_per_setup=2)
    assert again["eLORETA"] == res["eLORETA"]
    (tmp_path / "c.json").write_text(json.dumps(asdict(config)))
    main(
        [
            "validate",
            str(tiny_weights),
            "--config",
            str(tmp_path / "c.json"),
            "--sources",
            "1",
            "3",
            "--n",
            "2",
        ]
    )
    table = capsys.readouterr().out
    assert f"| {tiny_weights} |" in table and "| eLORETA |" in table and "ratio 3" in table


def _blob(grid, centre, sigma=0.01):
    """(n_src, 3) moments of a Gaussian blob of x-oriented dipoles."""
    amp = np.exp(-np.sum((grid.pos - centre) ** 2, axis=1) / (2 * sigma**2))
    return np.outer(amp, [1.0, 0.0, 0.0])


def test_transport_loss_tracks_nemd_and_its_gradient_moves_mass(grid):
    from mne_piunet.metrics import coarse_nemd
    from mne_piunet.train.losses import TransportLoss

    loss = TransportLoss(torch.from_numpy(grid.mask))
    centre = grid.pos[np.argmin(np.linalg.norm(grid.pos - grid.pos.mean(0), axis=1))]
    truth = _blob(grid, centre)
    dense = {
        shift: torch.from_numpy(grid.to_dense(_blob(grid, centre + [shift, 0, 0])[None])).float()
        for shift in (0.0, 0.02, 0.05)
    }
    values = {shift: loss(x, dense[0.0]).item() for shift, x in dense.items()}
    assert abs(values[0.0]) < 0.02  # debiased: a map is no distance from itself
    assert values[0.0] < values[0.02] < values[0.05]
    for shift in (0.02, 0.05):  # the same scale as NEMD on (differently aligned) 24 mm cells
        exact = coarse_nemd(_blob(grid, centre + [shift, 0, 0]), truth, grid.pos, cell=0.024)
        assert values[shift] == pytest.approx(exact, abs=0.15)
    # following its gradient carries a uniform map's mass to the truth
    logits = torch.zeros_like(dense[0.0], requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    mask = torch.from_numpy(grid.mask)
    start = loss(torch.ones_like(logits) * mask, dense[0.0]).item()
    for _ in range(40):
        opt.zero_grad()
        value = loss(logits.exp() * mask, dense[0.0])
        value.backward()
        opt.step()
    assert value.item() < 0.3 * start


def test_bundled_configs_reproduce_the_shipped_weights():
    from dataclasses import asdict

    from mne_piunet.network import load_network
    from mne_piunet.train.training import BUNDLED_CONFIGS, TrainConfig, read_config

    configs = {name: read_config(name) for name in BUNDLED_CONFIGS}
    stage1, stage2, distilled, robust, balanced, continued, gpu, meg, temporal = (
        configs[n]
        for n in ("train", "finetune", "distill", "robust", "balanced", "continue", "gpu", "meg", "temporal")
    )
    assert stage1.transport_weight == 0 and stage2.transport_weight > 0
    assert stage1.network == stage2.network  # stage 2 fine-tuned stage 1's network
    assert distilled.teacher and distilled.distill_weight > 0  # stage 3 distilled stage 2
    # stages 4 and 5 fine-tune stage 3's network, without a teacher
    assert distilled.network == robust.network == balanced.network
    assert not robust.teacher and not balanced.teacher
    assert robust.train_setups == balanced.train_setups and robust.prior != balanced.prior
    # stage 6 continues stage 5 on its setups and prior, from its network
    assert continued.train_setups == balanced.train_setups
    assert continued.prior == balanced.prior and continued.network == balanced.network
    # stage 7 adds MEG, MEG+EEG and OPM setups to stage 6's
    assert meg.train_setups[: len(continued.train_setups)] == continued.train_setups
    assert any(s.get("meg") for s in meg.train_setups) and any(s.get("meg") for s in meg.val_setups)
    assert meg.prior == continued.prior and meg.network == continued.network
    # stage 8 gives stage 7's network a temporal context, on stage 7's setups with time courses
    assert temporal.train_setups == meg.train_setups and temporal.val_setups == meg.val_setups
    assert temporal.network == {**meg.network, "context": "power", "window_s": 0.08, "window_points": 9}
    assert temporal.prior == {**meg.prior, "instantaneous": 0.1} and temporal.context_lr > temporal.lr
    # the residual pass's A/B run and stage 9 (9a, then 9b annealing it, 9c and 9d polishing it at lower
    # rates with other seeds): stage 8's network with the pass, on stage 8's setups and prior
    residual, shared, anneal = configs["residual"], configs["residual-shared"], configs["residual-anneal"]
    polish, polish2 = configs["residual-polish"], configs["residual-polish-2"]
    stage9 = (shared, anneal, polish, polish2)
    assert all(c.network == {**temporal.network, "residual_pass": True} == residual.network for c in stage9)
    assert all(c.train_setups == temporal.train_setups and c.prior == temporal.prior for c in stage9)
    assert residual.train_setups == temporal.train_setups
    assert shared.lr > anneal.lr > polish.lr > polish2.lr and len({c.seed for c in stage9}) == 4
    # the GPU recipe trains the shipped network (stage 9's) on stage 8's data and prior
    assert gpu.train_setups == temporal.train_setups and gpu.val_setups == temporal.val_setups
    assert gpu.prior == temporal.prior and gpu.network == shared.network
    assert gpu.device == "cuda" and gpu.data_workers > 0 and continued.data_workers == 0
    meta = load_network().meta
    # the shipped file is stage 9d: trained with the bundled config, from weights whose sha256 it names
    assert json.loads(json.dumps(asdict(TrainConfig(**meta["train_config"])))) == json.loads(
        json.dumps(asdict(polish2))
    )
    assert len(meta["provenance"]["init"]["sha256"]) == 64
    expected = {**polish2.network, "in_channels": 7, "out_channels": 3, "correction_width": 0}
    assert expected == meta["config"]


def test_peak_loss_measures_the_peak_offset(grid):
    from mne_piunet.train.losses import PeakLoss

    mask = torch.from_numpy(grid.mask)
    loss = PeakLoss(mask, temperature=0.01)
    # a voxel whose neighbours 3 steps away along the first axis are in the brain too
    inside = np.argwhere(grid.mask)
    centre = next(
        v
        for v in inside[len(inside) // 2 :]
        if grid.mask[v[0] + 3, v[1], v[2]] and grid.mask[v[0] - 3, v[1], v[2]]
    )
    target = torch.zeros((1, 3) + grid.shape)
    target[0, 0, centre[0], centre[1], centre[2]] = 1.0
    assert loss(target, target).item() < 1e-3  # the soft peak of a point is the point
    shifted = torch.roll(target, shifts=2, dims=2)  # two voxels along the first grid axis
    assert loss(shifted, target).item() == pytest.approx(2.0, abs=1e-3)
    # at a warmer temperature every voxel weighs in: the gradient reaches the map
    pred = shifted.clone().requires_grad_(True)
    PeakLoss(mask, temperature=0.5)(pred + 0.5 * target, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_background_training_stops_cleanly_on_kill(tmp_path, tiny_run, capsys):
    """``mne-piunet train --background``: a detached run that a plain kill stops with its weights exported."""
    import os
    import signal
    import time
    from dataclasses import asdict

    from mne_piunet.cli import main

    src, _ = tiny_run
    config = tmp_path / "c.json"
    config.write_text(json.dumps(asdict(_tiny_config(max_steps=10**6, threads=1))))
    out = tmp_path / "bg"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--init",
                str(src / "final.pt"),
                "--out",
                str(out),
                "--background",
            ]
        )
        == 0
    )
    pid = int((out / "train.pid").read_text())
    try:
        assert f"kill {pid}" in capsys.readouterr().out
        deadline = time.time() + 900  # a guard against a hung child, not a speed requirement
        while "step 0 (initial weights)" not in _text(out / "train.log"):
            assert time.time() < deadline, _text(out / "train.out")
            time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        while not (out / "final.json").exists():
            assert time.time() < deadline, _text(out / "train.out")
            time.sleep(0.5)
        assert "stopped on request" in _text(out / "train.log")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # it has exited unless an assertion above failed
        except ProcessLookupError:
            pass


def _text(fname):
    return fname.read_text() if fname.exists() else ""
