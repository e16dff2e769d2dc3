"""ONNX Runtime against torch on the U-Net's forward pass (the fast-inference issue's exported-graph check).

Not part of the package: ``pip install onnxruntime onnx`` first, then
``python docs/scripts/bench_onnx.py [WEIGHTS] [THREADS]``. Prints ms per map
(batch 16) for torch fp32, torch bf16 autocast and ONNX Runtime fp32, and the
largest relative difference between ONNX Runtime's and torch's fp32 outputs.
"""

import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from mne_piunet.bench.speed import _random_inputs, forward_ms_per_map
from mne_piunet.inference import prepare_network
from mne_piunet.network import load_network


class _Estimate(torch.nn.Module):
    """The network's ``estimate`` as a module's forward, for the exporter."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network.estimate(x)


def main(weights=None, threads=1, batch=16, repeats=8):
    torch.set_num_threads(threads)
    bundle = load_network(weights)
    net = prepare_network(bundle.network, torch.device("cpu"))
    from mne_piunet.grid import get_grid

    grid = get_grid()
    x = _random_inputs(grid, batch, net).contiguous()
    fname = "piunet.onnx"
    torch.onnx.export(
        _Estimate(net), (x,), fname, input_names=["x"], output_names=["y"], dynamo=False, opset_version=17
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(fname, options, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    session.run(None, {"x": xn})
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = session.run(None, {"x": xn})[0]
    ms_ort = 1e3 * (time.perf_counter() - t0) / (repeats * batch)
    with torch.inference_mode():
        ref = net.estimate(x).numpy()
    diff = np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30)
    print(
        f"torch fp32 {forward_ms_per_map(net, grid):.2f} | torch bf16 {forward_ms_per_map(net, grid, torch.bfloat16):.2f}"
        f" | onnxruntime fp32 {ms_ort:.2f} ms per map (max relative difference {diff:.1e}), {threads} thread(s)"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
