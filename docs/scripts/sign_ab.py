"""The sign A/B of the model card: canonical sign against symmetrising, and the network's own asymmetry.

``python docs/scripts/sign_ab.py [WEIGHTS] [CONFIG]`` scores, on a training config's
*validation* setups (12 samples per setup and number of sources, seed 20,000, as
``mne-piunet validate``), three ways to run one set of weights:

- ``as trained``: each map divided by its unsigned peak norm, the network, multiplied back
  (the inference path before the sign fix; not odd in the data);
- ``canonical sign`` (shipped): each map divided by its *signed* peak norm
  (:func:`mne_piunet.inference.canonical_sign`), exactly odd at no cost;
- ``symmetrised``: ``(f(x) - f(-x)) / 2`` of the first, exactly odd at twice the cost.

It prints their NEMD per number of sources and, for ``as trained``, how far
``out(x)`` and ``-out(-x)`` differ (median relative L2, median and largest peak shift).
"""

import sys

import numpy as np
import torch

from mne_piunet.grid import get_grid
from mne_piunet.inference import predict_maps, prepare_network, resolve_precision
from mne_piunet.network import bundled_weights_path, load_network
from mne_piunet.simulation import SourcePrior, simulate
from mne_piunet.train.training import _val_setups, mean_coarse_nemd, read_config


@torch.inference_mode()
def unsigned(network, grid, x0, dtype):
    """The inference path without the canonical sign: divide by the unsigned peak norm."""
    peak = np.sqrt(np.einsum("nij,nij->ni", x0, x0).max(axis=-1))
    safe = np.where(peak > 0, peak, 1.0)
    out = np.empty(x0.shape, np.float32)
    for start in range(0, len(x0), 16):
        dense = torch.from_numpy(
            grid.to_dense((x0[start : start + 16] / safe[start : start + 16, None, None]).astype(np.float32))
        )
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            pred = network.estimate(dense)
        out[start : start + 16] = grid.from_dense(pred.float().numpy()) * safe[start : start + 16, None, None]
    return out


def main(weights=None, config="continue"):
    config = read_config(config)
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    network = prepare_network(load_network(weights or bundled_weights_path()).network, torch.device("cpu"))
    dtype = resolve_precision("auto", torch.device("cpu"))
    setups = _val_setups(config, grid)
    rng = np.random.default_rng(20_000)
    prior = SourcePrior(**config.prior)
    print(f"precision {dtype}; NEMD per number of sources")
    print(
        "| sources | eLORETA | as trained | canonical sign | symmetrised |\n| --- | --- | --- | --- | --- |"
    )
    rel, shift = [], []
    for k in (1, 2, 3, 5, 10):
        batches = [simulate(s, 12, rng, prior, n_sources=k) for s in setups]
        x0 = np.concatenate([b.eloreta_grid for b in batches])
        x = np.concatenate([b.true_grid for b in batches])
        plus, minus = unsigned(network, grid, x0, dtype), unsigned(network, grid, -x0, dtype)
        scores = [
            mean_coarse_nemd(e, x, grid)
            for e in (x0, plus, predict_maps(network, grid, x0, dtype=dtype), (plus - minus) / 2)
        ]
        print(f"| {k} | " + " | ".join(f"{v:.3f}" for v in scores) + " |")
        rel += list(np.linalg.norm((plus + minus).reshape(len(x0), -1), axis=1)
                    / np.linalg.norm(plus.reshape(len(x0), -1), axis=1))  # fmt: skip
        peaks = [grid.pos[np.argmax(np.linalg.norm(m, axis=-1), axis=-1)] for m in (plus, minus)]
        shift += list(1e3 * np.linalg.norm(peaks[0] - peaks[1], axis=1))
    print(f"\nas trained, out(x) against -out(-x): median relative L2 {np.median(rel):.1%}; "
          f"peak shift median {np.median(shift):.1f} mm, largest {np.max(shift):.1f} mm")  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
