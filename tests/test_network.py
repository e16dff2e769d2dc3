"""The 3-D U-Net and its weight files."""

import json

import pytest
import torch

from mne_piunet.network import UNet3d, UNetConfig, load_network, save_network


def _mask(shape=(8, 12, 8)):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[1:-1, 2:-2, 1:-1] = True
    return mask


def test_shapes_mask_and_zero_start():
    net = UNet3d(UNetConfig(width=8, levels=3, heads=2, groups=4), _mask())
    x = torch.randn(2, 3, 8, 12, 8)
    shape, log_ratio = net(x)
    assert shape.shape == x.shape and log_ratio.shape == (2,)
    # starts at the all-zero map with the default peak ratio
    assert torch.count_nonzero(shape) == 0
    torch.testing.assert_close(net.estimate(x), torch.zeros_like(x))
    # after a perturbation the output is non-zero inside the mask only
    with torch.no_grad():
        net.out[-1].bias.fill_(1.0)
    shape, _ = net(x)
    assert torch.all(shape[:, :, ~_mask()] == 0) and torch.all(shape[:, :, _mask()] != 0)
    # the estimate's peak is the amplitude head's, whatever the shape's own scale
    with torch.no_grad():
        est, log_ratio = net.estimate(x), net(x)[1]
    peak = torch.linalg.vector_norm(est, dim=1).amax(dim=(1, 2, 3))
    torch.testing.assert_close(peak, torch.exp(log_ratio))


def test_bad_config_and_grid():
    with pytest.raises(ValueError, match="multiple of groups"):
        UNetConfig(width=12, groups=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet3d(UNetConfig(width=8, levels=3, heads=2, groups=4), _mask((8, 10, 8)))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNet3d(UNetConfig(width=8, levels=2, heads=2, groups=4), _mask())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fname = save_network(net, tmp_path / "w.pt", dict(grid=dict(shape=[8, 12, 8])))
    meta = json.loads(fname.with_suffix(".json").read_text())
    assert meta["config"]["width"] == 8 and len(meta["sha256"]) == 64
    bundle = load_network(fname)
    # the weights come back bit for bit; the outputs to float32 round-off, as the
    # loaded copy may run other kernels (e.g. another memory layout)
    loaded = bundle.network.state_dict()
    assert loaded.keys() == net.state_dict().keys()
    for name, value in net.state_dict().items():
        assert torch.equal(loaded[name].cpu(), value), name
    x = torch.randn(1, 3, 8, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(bundle.network.estimate(x).cpu(), net.eval().estimate(x))
    # weights_only loading works on the file itself (no pickled code)
    state = torch.load(fname, weights_only=True)
    assert "mask" in state


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_fix():
    from mne_piunet.network import resolve_device

    with pytest.raises(ValueError, match='sees no CUDA device: use device="auto" or "cpu"'):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu:0")
    assert resolve_device("auto").type == "cpu"


def test_broken_weight_files_name_the_fix(tmp_path):
    import json

    from mne_piunet._cache import file_sha256
    from mne_piunet.network import load_network

    fname = save_network(
        UNet3d(UNetConfig(width=8, levels=2, heads=2, groups=4), _mask()), tmp_path / "w.pt", {"grid": {}}
    )
    meta_file = fname.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(meta_file.read_text()[:40])  # truncated
    with pytest.raises(ValueError, match="is not valid JSON.*reinstall"):
        load_network(fname)
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "grid"}))
    with pytest.raises(ValueError, match="lacks grid"):
        load_network(fname)
    # junk with a matching checksum: refused without ever suggesting weights_only=False
    fname.write_bytes(b"not a torch file at all" * 10)
    meta_file.write_text(json.dumps(dict(meta, sha256=file_sha256(fname))))
    with pytest.raises(ValueError, match="is not a PIUNet weights file") as err:
        load_network(fname)
    assert "weights_only=False" not in str(err.value)
