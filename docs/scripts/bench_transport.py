"""GeomLoss against the hand-written TransportLoss (the transport term's build-or-buy check).

Not part of the package: ``pip install geomloss`` first (and ``pip install
pykeops`` for GeomLoss's multiscale rows, which need KeOps and a C++ compiler;
without it they are skipped), then
``OMP_NUM_THREADS=1 python docs/scripts/bench_transport.py [THREADS] [POOL ...]``.

On one simulated batch of 16 (easycap-M10, up to 5 sources, seed 0) and two
estimates of it, eLORETA (the network's input) and the bundled network's shape,
it scores each of the 32 (sample, estimate) pairs with
:class:`mne_piunet.train.losses.TransportLoss` and with GeomLoss's debiased Sinkhorn
divergence (``p=1``, the blur matched to TransportLoss's final epsilon) on the
same coarse cells and masses (:meth:`TransportLoss.masses`, cell centres as
points, both divided by the truth's divergence from the uniform map as
TransportLoss is). Per method and settings it prints:

- the Spearman rank correlation of the loss with the exact EMD ratio on the
  same cells (POT's ``emd2``; EMD(estimate, truth) / EMD(uniform, truth), the
  NEMD on those cells), the same over the network's 16 pairs only (the
  estimates a training loss must rank), with the raw exact EMD, and the mean
  absolute difference from the exact ratio;
- the median over 5 runs (after a warm-up) of forward + backward ms for the
  batch of 16 network shapes, on ``THREADS`` threads (default 1);
- whether the gradients with respect to the maps are finite.

Cells are ``POOL``-voxel cubes: by default 3 (24 mm, TransportLoss's default)
and 2 (16 mm, the validation NEMD's cell size; GeomLoss's multiscale backend is
tried there). The 16 mm rows take several minutes of CPU.
"""

import statistics
import sys
import time

import numpy as np
import ot
import torch
from geomloss import SamplesLoss
from scipy.stats import spearmanr

from mne_piunet.grid import get_grid
from mne_piunet.network import load_network
from mne_piunet.simulation import HeadSetup, SimulationEngine, SourcePrior, prepare_setup
from mne_piunet.train.losses import TransportLoss

try:
    import pykeops  # noqa: F401  (GeomLoss's multiscale backend needs it)

    HAVE_KEOPS = True
except ImportError:
    HAVE_KEOPS = False


def cell_centres(loss: TransportLoss, grid_shape) -> torch.Tensor:
    """The coarse cells' integer coordinates (cell units), in TransportLoss's order."""
    coarse_shape = tuple(-(-s // loss.pool) for s in grid_shape)
    ijk = np.stack(np.unravel_index(loss.index.numpy(), coarse_shape), axis=1)
    cells = torch.from_numpy(ijk).float()
    assert torch.allclose(torch.cdist(cells, cells), loss.cost), "cell order differs from TransportLoss's"
    return cells


def exact_emd(loss: TransportLoss, pred, target):
    """Exact EMD (cell units) and its ratio over EMD(uniform, truth) per pair, on the loss's cells."""
    a = loss.masses(pred).double().numpy()
    b = loss.masses(target).double().numpy()
    cost = loss.cost.double().numpy()
    u = np.full(cost.shape[0], 1.0 / cost.shape[0])
    raw = np.array([ot.emd2(ai / ai.sum(), bi / bi.sum(), cost, numItermax=10**7) for ai, bi in zip(a, b)])
    ref = np.array([ot.emd2(u, bi / bi.sum(), cost, numItermax=10**7) for bi in b])
    return raw, raw / ref


def transport_values(loss: TransportLoss):
    """Per-pair TransportLoss values (its forward averages, so one pair per call)."""

    def values(pred, target):
        return torch.stack([loss(pred[i : i + 1], target[i : i + 1]) for i in range(len(pred))])

    return values


def geomloss_values(loss: TransportLoss, cells: torch.Tensor, **kwargs):
    """Per-pair GeomLoss divergence over the truth's from the uniform map, on TransportLoss's masses."""
    sinkhorn = SamplesLoss("sinkhorn", p=1, debias=True, **kwargs)
    n_cells = len(cells)
    multiscale = kwargs.get("backend") == "multiscale"  # one measure at a time

    def divergence(a, b):
        if multiscale:
            return torch.stack([sinkhorn(ai, cells, bi, cells) for ai, bi in zip(a, b)])
        x = cells.expand(len(a), n_cells, 3).contiguous()
        return sinkhorn(a, x, b, x)

    def values(pred, target):
        a, b = loss.masses(pred), loss.masses(target)
        with torch.no_grad():
            reference = divergence(torch.full_like(b, 1.0 / n_cells), b)
        return divergence(a, b) / reference.clamp_min(1e-6)

    return values


def fwd_bwd(values, pred, target, repeats=5):
    """Median ms of forward + backward of the batch's mean value, and whether the gradient is finite."""

    def run():
        p = pred.detach().clone().requires_grad_(True)
        values(p, target).mean().backward()
        return p.grad

    grad = run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), bool(torch.isfinite(grad).all())


def main(threads=1, pools=(3, 2), n=16):
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as training does (mne_piunet.train.training._make_transport)
    grid = get_grid()
    setup = prepare_setup(HeadSetup("easycap-M10"), grid)
    engine = SimulationEngine([setup], grid, SourcePrior(max_sources=5), seed=0)
    inputs, targets, _ = engine.batch(n)
    with torch.no_grad():
        shape, _ = load_network().network(inputs)
    preds = torch.cat([inputs, shape])  # eLORETA then the network: 2 n pairs
    truths = torch.cat([targets, targets])
    mask = torch.from_numpy(grid.mask)

    rows = []
    for pool in pools:
        loss = TransportLoss(mask, pool=pool)
        cells = cell_centres(loss, grid.shape)
        t0 = time.perf_counter()
        raw, ratio = exact_emd(loss, preds, truths)
        emd_ms = 1e3 * (time.perf_counter() - t0) / len(preds)
        blur = loss.blurs[-1]  # cost in cell units and epsilon = blur ** p, so p=1 matches it directly
        methods = {f"TransportLoss (20 annealed iterations, blur {blur:g})": transport_values(loss)}
        for scaling in (0.5, 0.8, 0.9):
            methods[f"GeomLoss tensorized, blur {blur:g}, scaling {scaling}"] = geomloss_values(
                loss, cells, blur=blur, scaling=scaling, backend="tensorized"
            )
        if HAVE_KEOPS and pool == 2:
            cluster = 1.5  # 24 mm clusters for the coarse-to-fine start
            methods[f"GeomLoss multiscale, blur {blur:g}, scaling 0.8, clusters {cluster} cells"] = (
                geomloss_values(
                    loss, cells, blur=blur, scaling=0.8, backend="multiscale", cluster_scale=cluster
                )
            )
        for name, values in methods.items():
            p = preds.detach().clone().requires_grad_(True)
            value = values(p, truths)
            value.sum().backward()
            finite = bool(torch.isfinite(p.grad).all())
            value = value.detach().numpy()
            ms, finite_batch = fwd_bwd(values, shape, targets)
            rows.append(
                (
                    f"{pool * 8} mm cells ({len(cells)}): {name}",
                    spearmanr(value, ratio)[0],
                    spearmanr(value[n:], ratio[n:])[0],
                    spearmanr(value, raw)[0],
                    np.abs(value - ratio).mean(),
                    ms,
                    finite and finite_batch,
                )
            )
        print(
            f"exact EMD on {pool * 8} mm cells: {emd_ms:.0f} ms per pair (POT, float64, not differentiable)"
        )
    print(f"\n{threads} thread(s), batch of {n}; {len(preds)} pairs (eLORETA and network vs truth)")
    head = f"{'method / settings':<90} {'rho ratio':>9} {'rho net':>7} {'rho EMD':>8} {'|d ratio|':>9} {'ms fwd+bwd':>10} finite"
    print(head)
    for name, rho_ratio, rho_net, rho_raw, mad, ms, finite in rows:
        print(f"{name:<90} {rho_ratio:9.3f} {rho_net:7.3f} {rho_raw:8.3f} {mad:9.3f} {ms:10.0f} {finite}")
    if not HAVE_KEOPS:
        print("GeomLoss's multiscale backend needs pykeops (pip install pykeops): skipped")


if __name__ == "__main__":
    pools = tuple(int(a) for a in sys.argv[2:]) or (3, 2)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1, pools)
