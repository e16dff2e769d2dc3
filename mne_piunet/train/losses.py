"""Training losses: relative L1/L2 on the map's shape, its amplitude, transport, peak, distillation.

The network predicts a map's *shape* (peak norm about 1) and the log of its
peak ratio (:class:`~mne_piunet.network.UNet3d`). :func:`shape_amplitude_loss`
scores both against a target: the truth's, or a teacher network's
(:func:`distill_loss`). :class:`TransportLoss` adds a differentiable stand-in
for NEMD, :class:`PeakLoss` a soft-argmax peak distance. All take and return
torch tensors; nothing here knows of MNE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def relative_loss(
    pred: torch.Tensor, target: torch.Tensor, scales: tuple[int, ...] = (1,), norms: tuple[str, ...] = ("l1",)
) -> torch.Tensor:
    """L1 and/or L2 in source space relative to the target's norm, averaged over scales.

    Each term is per sample relative to the target's norm, so focal and diffuse
    maps weigh the same (the all-zero map scores 1 per term). L1 is what the
    paper's ablation favours, but from the all-zero start it settles on
    near-zero maps (the median of an uncertain posterior is 0) and leaves them
    slowly; adding L2 (the posterior mean) keeps mass where sources may be.
    With ``scales=(1, 2, 4)`` the maps are also compared after average pooling
    by 2 and 4 voxels: mass put near the right place earns credit, as it does
    in the earth mover's distance.

    Parameters
    ----------
    pred, target : torch.Tensor, shape (n, 3, ``*grid``)
        Estimated and target maps.
    scales : tuple of int
        Average-pooling factors to compare the maps at (1: as they are).
    norms : tuple of str
        ``"l1"`` and/or ``"l2"``.

    Returns
    -------
    loss : torch.Tensor
        The mean of the per-scale, per-norm relative errors (a scalar).
    """
    losses = []
    for s in scales:
        p = F.avg_pool3d(pred, s) if s > 1 else pred
        t = F.avg_pool3d(target, s) if s > 1 else target
        dims = tuple(range(1, t.ndim))
        for norm in norms:
            power = {"l1": 1, "l2": 2}[norm]
            err = (p - t).abs().pow(power).sum(dims)
            losses.append((err / t.abs().pow(power).sum(dims).clamp_min(1e-12)).mean())
    return torch.stack(losses).mean()


#: Kernel-domain Sinkhorn steps need exp(-cost / blur) >= e^-40: far above float32's
#: smallest normal number (about e^-87), so the terms it drops (below e^-87 of the
#: largest) cannot matter against the e^-40 it keeps.
_KERNEL_MAX_EXPONENT = 40.0


def _log_kernel_sum(h: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``log(sum_j kernel[i, j] * exp(h[:, j]))`` per row ``i``, shifted by each row's max of ``h``."""
    shift = h.amax(dim=1, keepdim=True)
    return torch.log((h - shift).exp() @ kernel) + shift


class TransportLoss(torch.nn.Module):
    """A differentiable stand-in for NEMD: a Sinkhorn divergence on coarse cells.

    The relative L1/L2 loss rewards dropping a source the network is unsure
    of (its median is zero), while NEMD must then carry that source's mass
    across the head. This term scores what NEMD scores: both maps' moment
    magnitudes are summed into ``pool``-voxel cubes (24 mm on the 8 mm grid:
    225 cells; ``pool=2`` gives 635 cells of 16 mm and costs about 20 times
    more), normalised
    to unit mass and compared by the debiased entropic transport cost
    (Euclidean ground distance, blur ``blur`` cells), divided by the truth's
    cost from the uniform map. For Gaussian blobs (sigma 1-2.5 cm) shifted by
    1-5 cm it is within 0.12 of the exact EMD ratio on the same cells.

    Potentials come from log-domain Sinkhorn iterations without autograd, with
    the blur annealed from the head's diameter; at convergence the gradient of
    the divergence with respect to the estimate's masses is the difference of
    its potentials, so one inner product carries it (the envelope theorem).

    Parameters
    ----------
    mask : torch.Tensor of bool, shape grid
        True inside the brain; cells are the pooled cubes holding any of it.
    pool : int
        Cube side in voxels.
    blur : float
        Final entropic blur, in cells.
    n_iter : int
        Sinkhorn iterations, the blur annealed over them.
    """

    def __init__(self, mask: torch.Tensor, pool: int = 3, blur: float = 0.1, n_iter: int = 20):
        super().__init__()
        coarse = F.max_pool3d(mask.float()[None, None], pool, ceil_mode=True)[0, 0] > 0
        self.pool = pool
        self.register_buffer("index", torch.nonzero(coarse.flatten()).ravel())
        cells = torch.nonzero(coarse).float()
        self.register_buffer("cost", torch.cdist(cells, cells))
        # blur annealed from the head's diameter down to ``blur`` (cells), fixed per grid
        self.blurs = np.geomspace(float(self.cost.max()), blur, n_iter).tolist()
        # While the blur is large, exp(-cost / blur) stays far from float32's underflow, so an
        # iteration is a matrix product with a precomputed kernel instead of a log-sum-exp over
        # (batch, cells, cells): the same update, about a hundredth of the exponentials.
        max_cost = float(self.cost.max())
        self.n_kernel_steps = sum(max_cost / eps < _KERNEL_MAX_EXPONENT for eps in self.blurs)
        self.register_buffer(
            "kernels", torch.stack([torch.exp(-self.cost / eps) for eps in self.blurs[: self.n_kernel_steps]])
        )
        n = len(cells)
        self.register_buffer("uniform", torch.full((n,), 1.0 / n))
        self.self_cost_uniform = float((self.uniform * self._self_cost(self.uniform[None])).sum())

    def masses(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-mass coarse magnitude maps of moment-vector maps.

        Parameters
        ----------
        x : torch.Tensor, shape (n, 3, ``*grid``)
            Maps of moment vectors.

        Returns
        -------
        masses : torch.Tensor of float32, shape (n, n_cells)
            Each map's magnitudes averaged over the cells, summing to 1.
        """
        magnitude = x.float().pow(2).sum(1, keepdim=True).add(1e-12).sqrt()
        cells = F.avg_pool3d(magnitude, self.pool, ceil_mode=True).flatten(1)[:, self.index]
        return cells / cells.sum(1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def _potentials(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_a, log_b = a.clamp_min(1e-30).log(), b.clamp_min(1e-30).log()
        f, g = torch.zeros_like(a), torch.zeros_like(b)
        for step, eps in enumerate(self.blurs):
            if step < self.n_kernel_steps:
                kernel = self.kernels[step]
                f = -eps * _log_kernel_sum(log_b + g / eps, kernel)
                g = -eps * _log_kernel_sum(log_a + f / eps, kernel)  # the cost matrix is symmetric
                continue
            c = self.cost / eps
            f = -eps * torch.logsumexp(log_b[:, None, :] + g[:, None, :] / eps - c, dim=2)
            # g from the new f: a consistent pair, whose dual value is the cost
            g = -eps * torch.logsumexp(log_a[:, :, None] + f[:, :, None] / eps - c, dim=1)
        return f, g

    def _self_cost(self, a: torch.Tensor) -> torch.Tensor:
        """OT(a, a) / 2 as (potential per cell); its inner product with ``a`` is the value."""
        f, g = self._potentials(a, a)
        return (f + g) / 2  # f and g may differ by a constant; their mean is symmetric

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each estimate's Sinkhorn divergence over its truth's from the uniform map, averaged.

        Parameters
        ----------
        pred, target : torch.Tensor, shape (n, 3, ``*grid``)
            Estimated and target maps of moment vectors.

        Returns
        -------
        loss : torch.Tensor
            A scalar: 0 for a perfect estimate, about 1 for the uniform map.
        """
        a, b = self.masses(pred), self.masses(target)
        f_ab, g_ab = self._potentials(a, b)
        h_aa, h_bb = self._self_cost(a), self._self_cost(b)
        # debiased S(a, b) = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2: the inner products
        # with the potentials carry the value and, at convergence, the gradient in a
        divergence = (a * (f_ab - h_aa)).sum(1) + (b * (g_ab - h_bb)).sum(1)
        with torch.no_grad():
            u = self.uniform.expand_as(b)
            f_ub, g_ub = self._potentials(u, b)
            reference = (u * f_ub).sum(1) + (b * (g_ub - h_bb)).sum(1) - self.self_cost_uniform
        return (divergence / reference.clamp_min(1e-6)).mean()


class PeakLoss(torch.nn.Module):
    """Distance between the estimate's soft peak and the truth's peak, in grid steps.

    NEMD and the L1/L2 terms reward mass near the truth, but not where the
    map's maximum sits: a broad estimate can score well and peak a few voxels
    off. This term takes a soft-argmax of the estimate's moment norms (each
    map scaled to peak 1, softmax at ``temperature`` inside the brain) and
    its distance to the position of the truth's largest moment. With several
    sources it is the strongest one's.

    Parameters
    ----------
    mask : torch.Tensor of bool, shape ``grid.shape``
        The brain mask; the soft peak is taken inside it.
    temperature : float
        Softmax temperature on the peak-normalised norms: at 0.05 a voxel at
        0.8 of the peak weighs e^-4 of the peak's.
    """

    def __init__(self, mask: torch.Tensor, temperature: float = 0.05):
        super().__init__()
        idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in mask.shape], indexing="ij"), -1)
        self.register_buffer("coords", idx.reshape(-1, 3).to(torch.float32), persistent=False)
        self.register_buffer("inside", mask.reshape(-1).to(torch.bool), persistent=False)
        self.temperature = temperature

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean distance (grid steps) between soft and true peaks.

        Parameters
        ----------
        pred, target : torch.Tensor, shape (n, 3, ``*grid``)
            Estimated and target maps.

        Returns
        -------
        loss : torch.Tensor
            A scalar.
        """
        norm = pred.float().pow(2).sum(1).flatten(1).add(1e-12).sqrt()  # (n, V)
        norm = norm / norm.amax(1, keepdim=True).detach()
        logits = (norm / self.temperature).masked_fill(~self.inside, float("-inf"))
        soft_peak = torch.softmax(logits, 1) @ self.coords  # (n, 3)
        true_peak = self.coords[target.float().pow(2).sum(1).flatten(1).argmax(1)]
        return (soft_peak - true_peak).pow(2).sum(1).add(1e-12).sqrt().mean()


def shape_amplitude_loss(
    shape: torch.Tensor,
    log_ratio: torch.Tensor,
    target: torch.Tensor,
    target_log_ratio: torch.Tensor,
    *,
    scales: tuple[int, ...] = (1,),
    norms: tuple[str, ...] = ("l1",),
    amplitude_weight: float = 0.1,
) -> torch.Tensor:
    """:func:`relative_loss` of the shape plus the weighted L1 error of the log peak ratio.

    Parameters
    ----------
    shape, target : torch.Tensor, shape (n, 3, ``*grid``)
        Predicted and target shapes.
    log_ratio, target_log_ratio : torch.Tensor, shape (n,)
        Predicted and target log peak ratios.
    scales, norms : tuple
        As for :func:`relative_loss`.
    amplitude_weight : float
        Weight of the amplitude term.

    Returns
    -------
    loss : torch.Tensor
        A scalar, in fp32 whatever the inputs' precision.
    """
    loss = relative_loss(shape.float(), target.float(), scales, norms)
    return loss + amplitude_weight * (log_ratio.float() - target_log_ratio.float()).abs().mean()


def distill_loss(
    teacher: torch.nn.Module,
    inputs: torch.Tensor,
    shape: torch.Tensor,
    log_ratio: torch.Tensor,
    *,
    scales: tuple[int, ...] = (1,),
    norms: tuple[str, ...] = ("l1",),
    amplitude_weight: float = 0.1,
) -> torch.Tensor:
    """The student's :func:`shape_amplitude_loss` against the teacher's outputs on ``inputs``.

    In the units of the loss against the truth, so one weight mixes the two.

    Parameters
    ----------
    teacher : torch.nn.Module
        The teacher network: maps ``inputs`` to a shape and a log peak ratio
        (run without gradients, in bf16 autocast).
    inputs : torch.Tensor, shape (n, 3, ``*grid``)
        The batch both networks see.
    shape : torch.Tensor, shape (n, 3, ``*grid``)
        The student's predicted shapes.
    log_ratio : torch.Tensor, shape (n,)
        The student's predicted log peak ratios.
    scales, norms : tuple
        As for :func:`relative_loss`.
    amplitude_weight : float
        Weight of the amplitude term.

    Returns
    -------
    loss : torch.Tensor
        A scalar, in fp32.
    """
    # bf16 halves the teacher's cost; its ~1e-2 relative error is far below the
    # student's, and on CPUs without native bf16 autocast only costs time.
    with torch.no_grad(), torch.autocast(inputs.device.type, dtype=torch.bfloat16):
        t_shape, t_log_ratio = teacher(inputs)
    return shape_amplitude_loss(
        shape, log_ratio, t_shape, t_log_ratio, scales=scales, norms=norms, amplitude_weight=amplitude_weight
    )
