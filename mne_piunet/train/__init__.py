"""For the model's developers: simulated training data, losses, the training loop and fine-tuning.

:mod:`~mne_piunet.simulation` draws sources, sensor data and eLORETA
estimates; :mod:`~mne_piunet.train.losses` scores the network's output;
:mod:`~mne_piunet.train.training` runs, checkpoints and validates a training
run; :mod:`~mne_piunet.train.finetune` adapts weights to a user's own head
(what :meth:`mne_piunet.PIUNetInverse.fine_tune` calls). Nothing here is
imported when a model is applied.
"""
