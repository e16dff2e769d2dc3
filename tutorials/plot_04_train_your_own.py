"""
.. _tut-train:

Fine-tune the model on your own head model
==========================================

The bundled network works on any head and montage. If you have your own
forward model (digitised electrodes, an individual BEM, a subject MRI), one
call adapts the network to it: :meth:`mne_piunet.PIUNetInverse.fine_tune`
simulates sources on *your* source space, projects them through *your*
forward, adds noise with *your* noise covariance, applies *your* inverse, and
fine-tunes the bundled weights on the result. No recordings are needed.

The budget here is short (``PIUNET_TUTORIAL_MINUTES``, default 2) so that the
tutorial runs anywhere; the model card reports what 10 and 30 minutes on 2 CPU
cores buy. The command-line equivalent is::

    mne-piunet fine-tune --fwd sub-01-fwd.fif --inv sub-01-inv.fif --minutes 30 -o my_piunet.pt

To train a model from scratch on other template setups instead, see
``mne-piunet train`` and :class:`mne_piunet.train.training.TrainConfig`.
"""

# %%
import matplotlib

matplotlib.use("Agg")

import os
import tempfile
from pathlib import Path

import mne
import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.bench.evaluation import USER_STYLE_HEAD, finetune_benefit, user_style_models
from mne_piunet.bench.report import methods_table
from mne_piunet.simulation import jittered_info

mne.set_log_level("WARNING")
minutes = float(os.environ.get("PIUNET_TUTORIAL_MINUTES", 2))
folder = Path(tempfile.mkdtemp())

# %%
# Your forward model and inverse
# ------------------------------
# Here they are made to look like a researcher's own: the electrodes are a
# digitisation of an easycap-M43 cap (the nominal positions with 5 mm of
# jitter, as a real cap sits), the head is the template BEM with other
# conductivities (an individual-like head), and the inverse is MNE's default
# for a cortical source space (loose 0.2, depth 0.8) with a noise covariance
# estimated from baseline data. They go to disk and back, as yours would.
print(f"Head: {USER_STYLE_HEAD}")
fwd, inv = user_style_models()
mne.write_forward_solution(folder / "sub-01-fwd.fif", fwd)
mne.minimum_norm.write_inverse_operator(folder / "sub-01-inv.fif", inv)

# With your own data, start here:
fwd = mne.read_forward_solution(folder / "sub-01-fwd.fif")
inv = mne.minimum_norm.read_inverse_operator(folder / "sub-01-inv.fif")

# %%
# One call
# --------
# ``fine_tune`` keeps a seeded slice of the simulations for validation, writes
# a log and checkpoints (a larger ``minutes`` with the same ``run_dir``
# resumes), and refuses to save weights that validate worse than the bundled
# ones on your setup: it then returns the bundled model and says so. The
# tuned weights record the sha256 of the forward and inverse they were tuned
# on, and warn when applied with another inverse.
piu = PIUNetInverse()
tuned = piu.fine_tune(inv, fwd, minutes=minutes, out=folder / "my_piunet.pt", overwrite=True)
print(open(folder / "my_piunet_run" / "train.log").read().splitlines()[-1])
if tuned is not piu:
    print("tuned on:", {k: v for k, v in tuned.bundle.meta["tuned_on"].items() if k != "files"})

# %%
# Use it as any MNE inverse
# -------------------------
# A source along the cortical normal at one left-hemisphere vertex, through
# your forward, read with your recording's info (here the digitisation above)
# and localised with the tuned model: the output is a standard volume source
# estimate.
info = jittered_info(USER_STYLE_HEAD["montage"], USER_STYLE_HEAD["jitter_mm"], USER_STYLE_HEAD["seed"])
fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True, use_cps=True)
vertex = 1234  # a left-hemisphere source
rng = np.random.default_rng(0)
data = np.outer(fixed["sol"]["data"][:, vertex], 20e-9 * np.hanning(20))
data += 0.1 * data.std() * rng.standard_normal(data.shape)
evoked = mne.EvokedArray(data, info, tmin=0.0)
stc = tuned.apply(evoked, inv, 1 / 9)
vertno, t_peak = stc.get_peak()
peak = tuned.src[0]["rr"][vertno]
# the forward's sources are in head coordinates; the estimate's in the template MRI's
head_to_mri = mne.transforms.invert_transform(fwd["mri_head_t"])
true = mne.transforms.apply_trans(head_to_mri, fixed["source_rr"][vertex])
print(f"{stc}\npeak at {(peak * 1e3).round()} mm, true source at {(true * 1e3).round()} mm")

# %%
# Bundled against fine-tuned, on fresh samples of your setup
# ----------------------------------------------------------
# NEMD (lower is better) and peak localisation error (mm), on samples drawn
# apart from the fine-tune's training and validation streams.
rows = finetune_benefit(
    {"bundled": piu, "fine-tuned": tuned}, fwd, inv, snrs=(10.0,), n_sources=(1, 3), n_per_cell=5
)
print(methods_table(rows))
