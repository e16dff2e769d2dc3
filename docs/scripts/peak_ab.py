"""Peak error and NEMD on the *validation* setups, one source at 20 and 30 dB (the peak-term A/B of the model card).

``python docs/scripts/peak_ab.py WEIGHTS [WEIGHTS ...]`` scores eLORETA and each
weights file on the same 16 samples per validation setup and SNR (seed 31337) of
``mne_piunet/weights/balanced_config.json``'s validation setups, and prints the
mean peak localisation error (mm) and NEMD of each. Validation setups only: this
compares training candidates, it is not the evaluation.
"""

import sys

import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.bench.evaluation import Cell, score_methods
from mne_piunet.simulation import HeadSetup
from mne_piunet.train.training import TrainConfig, finetune_config_path


def main() -> None:
    config = TrainConfig.from_json(finetune_config_path().with_name("balanced_config.json"))
    setups = [
        HeadSetup(**{k: tuple(v) if k == "conductivity" else v for k, v in s.items()})
        for s in config.val_setups
    ]
    cells = [
        Cell("evaluation", f"{snr:g} dB", s, snr_db=snr, n_sources=1) for s in setups for snr in (20.0, 30.0)
    ]
    for i, weights in enumerate(sys.argv[1:]):
        methods = ("eLORETA", "PIUNet") if i == 0 else ("PIUNet",)
        rows = score_methods(
            PIUNetInverse(weights, precision="float32"), cells, 16, seed=31337, methods=methods
        )
        for method in methods:
            mine = [r for r in rows if r["method"] == method]
            name = weights if method == "PIUNet" else "eLORETA"
            print(
                f"{name}: PLE {np.nanmean([r['ple'] for r in mine]):.2f} mm, NEMD {np.nanmean([r['nemd'] for r in mine]):.3f}"
            )


if __name__ == "__main__":
    main()
