"""Deprecated: the old home of :mod:`mne_piunet.evaluation` and :mod:`mne_piunet.report`.

Every old name still resolves, with a :class:`FutureWarning`, for one release
(removed in mne-piunet 0.3). Renamed: ``evaluate`` is
:func:`mne_piunet.evaluation.evaluate_methods` (not to be confused with
:func:`mne_piunet.metrics.evaluate`); ``score`` and ``score_all`` are
:func:`mne_piunet.evaluation.score_map`, which returns every score.
"""

# License: BSD-3-Clause

from __future__ import annotations

import importlib
import warnings

_EVALUATION = (
    "AM_METHODS", "BASE_N_SOURCES", "BASE_SIGMA_MM", "BASE_SNR_DB", "BENCH_CONDUCTIVITY", "BENCH_MONTAGE",
    "BENCH_MONTAGES", "BENCH_SKULLS", "EXTENTS_MM", "GAMMA_MAP_ALPHA", "HELD_OUT_SETUPS",
    "IN_DISTRIBUTION_SETUP", "LINEAR_METHODS", "METHODS", "MXNE_ALPHA", "N_SOURCES", "SNRS_DB",
    "SPARSE_METHODS", "Cell", "MethodRunner", "benchmark_cells", "run_benchmark",
)  # fmt: skip
_REPORT = (
    "METRIC_LABELS", "SWEEP_LABELS", "benchmark_header", "benchmark_summary", "markdown_table",
    "plot_benchmark", "run_evaluation", "summarise", "write_csv",
)  # fmt: skip
#: Old name -> (module, new name).
_MOVED = {
    **{name: ("evaluation", name) for name in _EVALUATION},
    **{name: ("report", name) for name in _REPORT},
    "evaluate": ("evaluation", "evaluate_methods"),
    "score": ("evaluation", "score_map"),
    "score_all": ("evaluation", "score_map"),
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, new = _MOVED[name]
    warnings.warn(
        f"mne_piunet.benchmark.{name} is deprecated and will be removed in mne-piunet 0.3; "
        f"use mne_piunet.{module}.{new} instead.",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"mne_piunet.{module}"), new)


def __dir__() -> list[str]:
    return sorted(_MOVED)
