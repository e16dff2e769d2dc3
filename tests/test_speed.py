"""The speed benchmark's parts that are cheap enough to test (figures themselves are not asserted)."""

import numpy as np
import pytest
import torch

from mne_piunet.inference import prepare_network
from mne_piunet.network import UNet3d, UNetConfig
from mne_piunet.speed import bench_speed, forward_ms_per_map, profile_forward


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


def test_bench_speed_reports_every_figure(grid):
    res = bench_speed(None, n_epochs=4, raw_minutes=0.05, sfreq=100.0)  # the bundled, fast network
    assert list(res) == [
        "precision", "threads", "raw_s", "raw_output_mb", "raw_peak_beyond_output_mb",
        "evoked_eloreta_s", "evoked_piunet_s", "evoked_ratio",
        "epochs_eloreta_s", "epochs_piunet_s", "epochs_ratio", "epochs_ms_per_map", "epochs_ms_per_map_fp32",
        "forward_ms_per_map", "forward_ms_per_map_fp32",
    ]  # fmt: skip
    assert res["raw_output_mb"] == pytest.approx(grid.n_sources * 300 * 4 / 2**20)  # float32 amplitudes
    times = {k: v for k, v in res.items() if k not in ("precision", "raw_peak_beyond_output_mb")}
    assert all(np.isfinite(v) and v > 0 for v in times.values())
