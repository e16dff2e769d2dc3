"""For the model's developers: the evaluation, the benchmark beside MNE's inverses, reports and speed.

:mod:`~mne_piunet.bench.evaluation` runs methods over simulated setups and
scores them, :mod:`~mne_piunet.bench.report` writes the tables, CSV files and
figures of the README and the model card, :mod:`~mne_piunet.bench.speed`
times inference and training. These modules run the inverse, so they sit
above it.
"""
