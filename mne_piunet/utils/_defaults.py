"""Defaults shared across the package: one home for each number used in several places."""

#: eLORETA's regularisation, ``1 / SNR ** 2`` at MNE's customary SNR of 3 for evoked data.
DEFAULT_LAMBDA2 = 1.0 / 9.0

#: Numbers of simultaneous sources in every per-source table: validation, evaluation, report.
N_SOURCES_SWEEP = (1, 2, 3, 5, 10)
