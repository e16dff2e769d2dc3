"""
.. _tut-train:

Train or fine-tune a model for your montage and head model
==========================================================

The bundled network was trained on several montages and head models. If your
montage or your head model is far from those, fine-tune it on simulations of
your own setup. The data are simulated on the fly, so no recordings are needed.

The training budget here is kept short (``PIUNET_TUTORIAL_MINUTES``, default 2)
so that the tutorial runs anywhere. Give it an hour, or run it on a GPU, for
real use. The command-line equivalent is::

    mne-piunet train --config my_config.json --init <bundled .pt> --out my_model
"""

# %%
import matplotlib

matplotlib.use("Agg")

import os
import tempfile
from dataclasses import asdict

import mne

from mne_piunet import PIUNetInverse
from mne_piunet.evaluation import evaluate_methods
from mne_piunet.network import bundled_weights_path
from mne_piunet.report import markdown_table, summarise
from mne_piunet.simulation import HeadSetup
from mne_piunet.training import TrainConfig, distill_config_path, train

mne.set_log_level("WARNING")
minutes = float(os.environ.get("PIUNET_TUTORIAL_MINUTES", 2))

# %%
# Your setup
# ----------
# A 129-channel EGI net on the template BEM with a thicker, less conductive skull.
mine = HeadSetup("GSN-HydroCel-129", "bem", (0.33, 0.004, 0.33), "surface")

# %%
# A config: the shipped model's own, retargeted
# ---------------------------------------------
# It keeps the shipped model's architecture and loss, including the transport
# term (a differentiable NEMD) that stops a fine-tune from dropping uncertain
# sources. The shipped model was distilled from a larger one; a fine-tune
# learns from your simulations alone.
config = TrainConfig.from_json(distill_config_path())
config.teacher, config.distill_weight = None, 0.0
config.train_setups = [
    asdict(mine),
    asdict(HeadSetup("GSN-HydroCel-129", "bem", (0.33, 0.004, 0.33), "volume")),
]
config.val_setups = [asdict(mine)]
config.max_minutes = minutes
config.warmup_steps = 10
config.lr = 2e-4  # fine-tuning: small steps
config.val_every_steps = 25
config.val_size = 16
out = tempfile.mkdtemp()
best = train(config, out, init=bundled_weights_path())
print(open(os.path.join(out, "train.log")).read().splitlines()[-1])

# %%
# Bundled vs fine-tuned, on fresh samples of your setup
# -----------------------------------------------------
for name, weights in (("bundled", None), ("fine-tuned", best)):
    rows = evaluate_methods(
        PIUNetInverse(weights), (mine,), snrs=(10.0,), n_sources=(1, 3), n_per_cell=5, seed=7
    )
    print(f"\n{name}\n" + markdown_table(summarise(rows)))
