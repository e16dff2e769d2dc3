"""The speed benchmark's parts that are cheap enough to test (figures themselves are not asserted)."""

from functools import partial

import numpy as np
import pytest
import torch

from mne_piunet.bench.speed import bench_speed, forward_ms_per_map, profile_forward
from mne_piunet.inference import prepare_network
from mne_piunet.network import UNet3d, UNetConfig


@pytest.fixture(scope="module")
def network(grid):
    net = UNet3d(
        UNetConfig(width=8, levels=2, heads=2, groups=4, space_to_depth=2), torch.from_numpy(grid.mask)
    )
    return prepare_network(net, torch.device("cpu"))


def test_profile_covers_every_part_of_the_forward_pass(network, grid):
    parts = profile_forward(network, grid, batch_size=2, n_batches=1)
    assert list(parts) == ["stem", "middle", "out", "down 0", "down 1", "pool 0", "up 1", "up 0"]
    assert all(ms > 0 for ms in parts.values())
    assert forward_ms_per_map(network, grid, batch_size=2, n_batches=1) > 0


def test_bench_speed_reports_every_figure(grid, monkeypatch):
    from mne_piunet.bench import speed

    # the forward pass alone timed on one batch of 2 maps (not 8 of 16): a figure all the same
    monkeypatch.setattr(speed, "forward_ms_per_map", partial(forward_ms_per_map, batch_size=2, n_batches=1))
    res = bench_speed(None, n_epochs=4, raw_minutes=0.05, sfreq=100.0)  # the bundled, fast network
    assert list(res) == [
        "precision",
        "threads",
        "raw_s",
        "raw_output_mb",
        "raw_peak_beyond_output_mb",
        "evoked_eloreta_s",
        "evoked_piunet_s",
        "evoked_ratio",
        "epochs_eloreta_s",
        "epochs_piunet_s",
        "epochs_ratio",
        "epochs_ms_per_map",
        "epochs_ms_per_map_fp32",
        "forward_ms_per_map",
        "forward_ms_per_map_fp32",
    ]
    assert res["raw_output_mb"] == pytest.approx(grid.n_sources * 300 * 4 / 2**20)  # float32 amplitudes
    times = {k: v for k, v in res.items() if k not in ("precision", "raw_peak_beyond_output_mb")}
    assert all(np.isfinite(v) and v > 0 for v in times.values())


def test_peak_memory_without_the_resource_module(monkeypatch):
    """``resource`` is Unix-only: the memory figure is NaN elsewhere, and the benchmark still runs."""
    import sys

    from mne_piunet.bench import speed

    assert speed._max_rss_mb() > 0
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource now raises ImportError
    assert np.isnan(speed._max_rss_mb())


def _tiny_train_config():
    from mne_piunet.train.training import TrainConfig

    return TrainConfig(
        train_setups=[dict(montage="easycap-M10")],
        val_setups=[dict(montage="easycap-M10")],
        prior=dict(max_sources=2, coloured_noise=0.5),
        network=dict(width=8, levels=2, heads=2, groups=4),
        batch_size=4,
        transport_weight=1.0,
        threads=1,
        device="cpu",
    )


def test_bench_training_times_each_variant(volume_setup):
    from mne_piunet.train.throughput import bench_training

    variants = (
        dict(threads=1, precision="float32", data_workers=0),
        dict(threads=1, precision="bfloat16", data_workers=1),
    )
    rows = bench_training(_tiny_train_config(), n_steps=2, variants=variants)
    assert [{k: r[k] for k in variants[0]} for r in rows] == list(variants)
    assert all(np.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in rows)


def test_train_step_profile_covers_every_part(volume_setup):
    from mne_piunet.train.throughput import profile_train_step

    ms = profile_train_step(_tiny_train_config(), n_steps=2)
    parts = [k for k in ms if k != "total"]
    assert parts == ["simulation", "dense tensors", "forward", "losses", "backward + AdamW"]
    assert all(ms[k] > 0 for k in parts) and ms["total"] == pytest.approx(sum(ms[k] for k in parts))
