"""Training throughput: samples per second of the real training step, and its cost by part.

``mne-piunet bench-train`` runs :func:`bench_training` (threads, autocast
precision and simulation processes) and :func:`profile_train_step`; both time
the loop's own functions (:mod:`mne_piunet.train.training`), so they live
beside it.
"""

# License: BSD-3-Clause

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

#: The training variants :func:`bench_training` times: torch threads, autocast
#: precision, simulation processes.
TRAIN_VARIANTS = (
    dict(threads=1, precision="float32", data_workers=0),
    dict(threads=1, precision="bfloat16", data_workers=0),
    dict(threads=2, precision="bfloat16", data_workers=0),
    dict(threads=1, precision="bfloat16", data_workers=1),
)


def _bench_run(config, init, out):
    """A training run's live objects, prepared as :func:`~mne_piunet.train.training.train` prepares them."""
    from .training import _prepare_data, _start_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _start_run(config, out, init)
    _prepare_data(run, None)
    return run


def bench_training(
    config, init=None, n_steps: int = 30, variants: tuple = TRAIN_VARIANTS, out=None
) -> list[dict]:
    """Training samples per second of the real step (simulation included) for each variant.

    Parameters
    ----------
    config : TrainConfig
        The run to time (its setups, prior, losses and batch size).
    init : path-like | None
        Weights to start from.
    n_steps : int
        Timed steps per variant, after two warm-up steps.
    variants : tuple of dict
        :class:`~mne_piunet.train.training.TrainConfig` fields to override per variant.
    out : path-like | None
        Scratch folder (default: a temporary one).

    Returns
    -------
    rows : list of dict
        Each variant's fields and ``samples_per_s``.
    """
    import tempfile
    from dataclasses import replace

    from .training import _start_workers, _train_step

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, variant in enumerate(variants):
            run = _bench_run(replace(config, val_size=8, **variant), init, Path(out or tmp) / f"v{k}")
            _start_workers(run)
            for _ in range(2):
                _train_step(run)
            t0 = time.perf_counter()
            samples = sum(_train_step(run)[1] for _ in range(n_steps))
            rows.append(dict(variant, samples_per_s=samples / (time.perf_counter() - t0)))
            run.batches = None  # ends the workers
    return rows


def profile_train_step(config, init=None, n_steps: int = 20, out=None) -> dict[str, float]:
    """Milliseconds per training step by part: simulation, dense tensors, network, losses, update.

    The simulation is the engine's own (:meth:`~mne_piunet.simulation.SimulationEngine.sample`:
    sources, sensors and noise, eLORETA, resampling, each sample's window
    with a temporal context); the rest are the training loop's own functions.

    Parameters
    ----------
    config : TrainConfig
        The run (its precision and threads too).
    init : path-like | None
        Weights to start from.
    n_steps : int
        Steps to average over.
    out : path-like | None
        Scratch folder (default: a temporary one).

    Returns
    -------
    ms : dict
        Mean milliseconds per step of each part, and ``"total"``.
    """
    import tempfile
    from dataclasses import replace

    from ..simulation import normalised_dense
    from .training import _forward, _loss, _optimise

    parts = dict.fromkeys(("simulation", "dense tensors", "forward", "losses", "backward + AdamW"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        run = _bench_run(replace(config, val_size=8), init, Path(out or tmp) / "profile")
        run.network.train()

        def timed(part, func, *args, **kwargs):
            t0 = time.perf_counter()
            result = func(*args, **kwargs)
            parts[part] += time.perf_counter() - t0
            return result

        for _ in range(n_steps):
            chunks = timed("simulation", run.engine.sample, config.batch_size)
            inputs, targets, _, ratio = timed(
                "dense tensors", normalised_dense, run.grid, chunks, run.network.config
            )
            inputs, targets = torch.from_numpy(inputs), torch.from_numpy(targets)
            log_ratio = torch.from_numpy(np.log(ratio)).float()
            shape, pred = timed("forward", _forward, run, inputs)
            loss = timed("losses", _loss, run, inputs, shape, pred, targets, log_ratio)
            timed("backward + AdamW", _optimise, run, loss)
    ms = {k: 1e3 * v / n_steps for k, v in parts.items()}
    ms["total"] = sum(ms.values())
    return ms
