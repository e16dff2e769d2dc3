"""Many recordings at once: PIUNet over joblib workers, on one machine or a cluster.

:func:`apply_piunet_many` hands each recording (an Evoked, Epochs or Raw) and its
inverse operator to a worker through :func:`mne.parallel.parallel_func`, as
MNE's own ``n_jobs`` does. Each worker process loads the network once
(:func:`mne_piunet.inverse._default_inverse`) and refines its recordings with
the same code as :class:`~mne_piunet.PIUNetInverse`, so the estimates are the
ones a serial loop returns. joblib's backend decides where the workers run:
local processes by default, a Dask cluster inside
``joblib.parallel_config(backend="dask")``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import mne
from mne.minimum_norm import InverseOperator
from mne.parallel import parallel_func
from mne.utils import verbose

from .utils._defaults import DEFAULT_LAMBDA2
from .utils._docs import fill_doc

__all__ = ["apply_piunet_many"]


def _apply_one(inst, inverse_operator, lambda2, pick_ori, kwargs, network, threads):
    """One recording's estimate in a worker (a module-level function, so joblib can pickle it)."""
    import torch

    from .inverse import _default_inverse

    if threads is not None:
        torch.set_num_threads(threads)
    piu = _default_inverse(*network)
    if isinstance(inst, mne.Evoked):
        return piu.apply(inst, inverse_operator, lambda2, pick_ori=pick_ori, **kwargs)
    if isinstance(inst, mne.BaseEpochs):
        return piu.apply_epochs(inst, inverse_operator, lambda2, pick_ori=pick_ori, **kwargs)
    return piu.apply_raw(inst, inverse_operator, lambda2, pick_ori=pick_ori, **kwargs)


@verbose
@fill_doc
def apply_piunet_many(
    recordings: Sequence[mne.Evoked | mne.BaseEpochs | mne.io.BaseRaw],
    inverse_operators: InverseOperator | Sequence[InverseOperator],
    lambda2: float = DEFAULT_LAMBDA2,
    pick_ori: str | None = None,
    *,
    n_jobs: int = 1,
    threads: int | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    data_fit: bool = True,
    verbose=None,
    **kwargs,
) -> list:
    """PIUNet estimates of many recordings, spread over joblib workers.

    Parameters
    ----------
    recordings : sequence of Evoked | Epochs | Raw
        The recordings; each may be of any of the three types.
    inverse_operators : InverseOperator | sequence of InverseOperator
        One inverse for all recordings, or one per recording.
    %(lambda2)s
    %(pick_ori)s
    n_jobs : int
        Number of workers (``-1``: one per core), as for MNE's ``n_jobs``.
    threads : int | None
        Torch threads per worker process; None: the cores divided among the
        local workers. With one job the caller's setting is left alone.
    %(network_params)s
    %(verbose)s
    **kwargs
        Further keywords of :meth:`~mne_piunet.PIUNetInverse.apply`,
        :meth:`~mne_piunet.PIUNetInverse.apply_epochs` or
        :meth:`~mne_piunet.PIUNetInverse.apply_raw` (all recordings take the
        same ones, e.g. ``start`` and ``stop`` only where all are Raw).

    Returns
    -------
    stcs : list
        Per recording, what the matching method returns: an estimate for an
        Evoked or a Raw, a list of estimates for Epochs.
    """
    recordings = list(recordings)
    if isinstance(inverse_operators, InverseOperator):
        inverse_operators = [inverse_operators] * len(recordings)
    inverse_operators = list(inverse_operators)
    if len(inverse_operators) != len(recordings):
        raise ValueError(
            f"Got {len(recordings)} recordings but {len(inverse_operators)} inverse operators: pass one "
            "inverse for all, or one per recording."
        )
    for k, (inst, inv) in enumerate(zip(recordings, inverse_operators)):
        if not isinstance(inst, (mne.Evoked, mne.BaseEpochs, mne.io.BaseRaw)):
            raise TypeError(f"recordings[{k}] must be an Evoked, Epochs or Raw, got {type(inst).__name__}")
        if not isinstance(inv, InverseOperator):
            raise TypeError(f"inverse_operators[{k}] must be an InverseOperator, got {type(inv).__name__}")
    if kwargs.get("return_generator") and n_jobs != 1:
        raise ValueError(
            "return_generator=True cannot cross to worker processes (a generator cannot be pickled): "
            "use n_jobs=1, or collect the estimates (return_generator=False)."
        )
    parallel, run, n_jobs = parallel_func(_apply_one, n_jobs)
    if n_jobs == 1:
        threads = None  # this process's own torch threads are left as they are
    elif threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
    network = (weights, device, batch_size, precision, data_fit)
    return parallel(
        run(inst, inv, lambda2, pick_ori, kwargs, network, threads)
        for inst, inv in zip(recordings, inverse_operators)
    )
