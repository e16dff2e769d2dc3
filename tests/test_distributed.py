"""Data-parallel training under torchrun: two CPU processes (gloo) for a few steps."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
@pytest.mark.parametrize(
    "residual",
    [{}, dict(residual_pass=True, correction_width=2)],
    ids=["plain", "correction network"],  # a correction network sits out every other step on each rank
)
def test_torchrun_two_cpu_ranks_agree(tmp_path, volume_setup, surface_setup, residual):
    # the fixtures fill the on-disk cache, so the ranks only read it
    config = dict(
        train_setups=[dict(montage="easycap-M10")],
        val_setups=[dict(montage="biosemi64", source_space="surface")],
        prior=dict(max_sources=2, sigma_mm=[8.0, 20.0]),
        network=dict(width=4, levels=2, heads=1, groups=2, **residual),
        batch_size=2,
        warmup_steps=1,
        max_steps=4,
        val_size=4,
        val_every_steps=2,
        threads=1,
        device="cpu",
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mne_piunet.cli",
        "train",
        "--config",
        str(tmp_path / "config.json"),
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    # rank 0 alone logs: one "preparing" line, and the gathered checksums agree
    assert log.count("preparing") == 1
    assert "weights agree on all 2 ranks" in log
    assert "device cpu x 2" in log
    final = json.loads((out / "final.json").read_text())
    assert final["provenance"]["steps"] == 4
    assert [c["step"] for c in final["curve"]] == [2, 4]
