"""The one inference path: precision, batching, scaling, and the space-to-depth network."""

import numpy as np
import pytest
import torch

from mne_piunet import inference
from mne_piunet.inference import normalise_inputs, predict_maps, prepare_network, resolve_precision
from mne_piunet.network import UNet3d, UNetConfig, fold_blocks, unfold_blocks

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpu(monkeypatch, native):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("float32", CPU) == torch.float32
    assert resolve_precision("bfloat16", CPU) == torch.bfloat16


def test_bad_precision_names_the_choices():
    with pytest.raises(ValueError, match="Invalid value for the .precision. parameter.*float32"):
        resolve_precision("fp8", CPU)
    with pytest.raises(ValueError, match="float16.*CUDA"):
        resolve_precision("float16", CPU)


@pytest.fixture(scope="module")
def s2d_network(grid):
    torch.manual_seed(0)
    net = UNet3d(
        UNetConfig(width=8, levels=2, heads=2, groups=4, space_to_depth=2), torch.from_numpy(grid.mask)
    )
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    return prepare_network(net, CPU)


def test_fold_and_unfold_are_inverse_and_local():
    x = torch.randn(2, 3, 4, 6, 4)
    folded = fold_blocks(x, 2)
    assert folded.shape == (2, 24, 2, 3, 2)
    # channel block c of a coarse voxel holds exactly its 2x2x2 fine voxels
    torch.testing.assert_close(folded[1, 8:16, 1, 2, 0], x[1, 1, 2:4, 4:6, 0:2].reshape(-1))
    torch.testing.assert_close(unfold_blocks(folded, 2), x)


def test_space_to_depth_network_predicts_every_voxel(grid, s2d_network):
    x0 = np.random.default_rng(0).standard_normal((3, grid.n_sources, 3))
    dense, _ = normalise_inputs(grid, x0)
    shape, log_ratio = s2d_network(torch.from_numpy(dense))
    assert shape.shape == dense.shape and log_ratio.shape == (3,)
    outside = ~torch.from_numpy(grid.mask)
    assert torch.all(shape[:, :, outside] == 0)  # the brain mask holds at full resolution
    assert torch.count_nonzero(shape[:, :, ~outside]) > 0.9 * shape[:, :, ~outside].numel()
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet3d(UNetConfig(width=8, levels=3, groups=4, space_to_depth=2), torch.from_numpy(grid.mask))


def test_predict_maps_is_per_map_and_in_input_units(grid, s2d_network):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((5, grid.n_sources, 3))
    out = predict_maps(s2d_network, grid, x0, batch_size=2)
    assert out.shape == x0.shape and np.all(np.isfinite(out))
    # a map's estimate does not depend on its batch (to fp32 round-off of other kernels)
    alone = predict_maps(s2d_network, grid, x0[3:4], batch_size=1)
    np.testing.assert_allclose(alone[0], out[3], rtol=1e-3, atol=1e-4 * np.abs(out[3]).max())
    # the estimate scales with the input: the network sees each map divided by its peak
    scaled = predict_maps(s2d_network, grid, 1e-9 * x0, batch_size=2)
    np.testing.assert_allclose(scaled, 1e-9 * out, rtol=1e-4, atol=1e-13 * np.abs(out).max())
    # an all-zero map stays zero
    assert not predict_maps(s2d_network, grid, np.zeros((1, grid.n_sources, 3))).any()


def test_bf16_matches_fp32_to_its_precision(grid, s2d_network):
    x0 = np.random.default_rng(2).standard_normal((4, grid.n_sources, 3))
    fp32 = predict_maps(s2d_network, grid, x0)
    bf16 = predict_maps(s2d_network, grid, x0, dtype=torch.bfloat16)
    # bf16 keeps 8 bits of mantissa (relative error 2**-8 per operation)
    peak = np.abs(fp32).max(axis=(1, 2), keepdims=True)
    assert np.abs(bf16 - fp32).max() / peak.max() < 0.05


def test_estimate_is_exactly_odd_in_the_data(grid, s2d_network):
    """out(-x) == -out(x): a map's polarity never moves its sources (issue: sign symmetry)."""
    from mne_piunet.inference import canonical_sign, normalise_inputs

    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((6, grid.n_sources, 3))
    # the network alone is not odd, so the canonical sign is what makes the estimate odd
    dense = torch.from_numpy(normalise_inputs(grid, x0[:2])[0])
    with torch.inference_mode():
        assert not torch.allclose(s2d_network.estimate(-dense), -s2d_network.estimate(dense), atol=1e-3)
    np.testing.assert_array_equal(canonical_sign(-x0), -canonical_sign(x0))
    for dtype in (torch.float32, torch.bfloat16):
        out = predict_maps(s2d_network, grid, x0, dtype=dtype, batch_size=4)
        np.testing.assert_array_equal(predict_maps(s2d_network, grid, -x0, dtype=dtype, batch_size=4), -out)


def test_tiny_and_huge_maps_keep_their_shape(grid, s2d_network):
    """float32 squares of 1e-20 underflow: the norms are taken after scaling, in float64."""
    x0 = np.random.default_rng(6).standard_normal((2, grid.n_sources, 3)).astype(np.float32)
    out = predict_maps(s2d_network, grid, x0)
    for factor in (1e-22, 1e18):
        scaled = predict_maps(s2d_network, grid, (x0 * factor).astype(np.float32))
        assert np.abs(scaled).max() > 0
        np.testing.assert_allclose(scaled / factor, out, rtol=1e-4, atol=1e-5 * np.abs(out).max())
