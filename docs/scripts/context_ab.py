"""Does the temporal context help? Weight files scored with and without it, on the same time courses.

Usage::

    N=8 python docs/scripts/context_ab.py WEIGHTS [WEIGHTS ...]

Samples (``N`` per validation setup and cell, seed 777) are time courses over
the temporal config's 80 ms window on its validation setups, at 0-20 dB with
1 and 3 sources. Each model refines each sample's centre map: a model with a
temporal context with it, and again with an instantaneous one ("inst"), so the
difference is what the context buys. Prints mean coarse NEMD per cell. This
is how the two context designs of stage 8 were compared.
"""

import os
import sys

import mne
import numpy as np
import torch

from mne_piunet.grid import get_grid
from mne_piunet.inference import predict_maps, prepare_network
from mne_piunet.network import load_network
from mne_piunet.simulation import SourcePrior, batch_maps, simulate
from mne_piunet.train.training import _val_setups, mean_coarse_nemd, read_config


def main() -> None:
    mne.set_log_level("ERROR")
    config = read_config("temporal")
    grid = get_grid(config.grid_spacing_mm, config.grid_mindist_mm)
    setups = _val_setups(config, grid)
    window = (config.network["window_s"], config.network["window_points"])
    nets = {w: prepare_network(load_network(w).network, torch.device("cpu")) for w in sys.argv[1:]}
    rng = np.random.default_rng(777)
    prior = SourcePrior(**{**config.prior, "instantaneous": 0.0})
    n = int(os.environ.get("N", 6))
    for snr in (0.0, 5.0, 10.0, 20.0):
        for k in (1, 3):
            batches = [simulate(s, n, rng, prior, snr_db=snr, n_sources=k, window=window) for s in setups]
            x = np.concatenate([b.true_grid for b in batches])
            x0 = np.concatenate([b.eloreta_grid for b in batches])
            scores = {"eLORETA": mean_coarse_nemd(x0, x, grid)}
            for name, net in nets.items():
                est = predict_maps(net, grid, *batch_maps(batches, net.config), dtype=torch.bfloat16)
                scores[name] = mean_coarse_nemd(est, x, grid)
                if net.config.context != "none":
                    inst = predict_maps(net, grid, x0, dtype=torch.bfloat16)
                    scores[f"{name} (inst)"] = mean_coarse_nemd(inst, x, grid)
            print(
                f"{snr:4.0f} dB, {k} source(s): " + ", ".join(f"{m} {v:.3f}" for m, v in scores.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
