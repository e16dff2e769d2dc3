"""The speed benchmark's parts that are cheap enough to test (figures themselves are not asserted)."""

import pytest
import torch

from mne_piunet.inference import prepare_network
from mne_piunet.network import UNet3d, UNetConfig
from mne_piunet.speed import forward_ms_per_map, profile_forward


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
