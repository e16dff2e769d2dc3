"""
.. _tut-real-data:

Real data: auditory and visual evoked responses on a template head
==================================================================

MNE's "sample" subject heard tones and saw checkerboards in the left or right
hemifield, recorded with 60 EEG channels and a 306-channel Neuromag MEG. Here
we take the usual "M/EEG with a template MRI" approach, once per channel set
a user may have (EEG, MEG, MEG+EEG):

- EEG with an average reference; MEG with the recording's SSP projectors and
  its device -> head transform;
- the template BEM in place of the subject's own MRI: the fsaverage5 cortex
  for EEG, PIUNet's own volume grid for MEG and MEG+EEG (quicker forwards).

Then we ask where eLORETA and PIUNet put two responses, averaged over 80-130 ms:

- the auditory N100, expected in both superior temporal regions;
- the visual P100, expected in the occipital cortex opposite to the stimulated hemifield.

With ``mne.datasets.sample`` on disk the full data set is used. Offline, the
tutorial falls back to MNE's small test excerpt of the same recording (3-6 trials
per condition) when it sits beside the checkout.
"""

# %%
import matplotlib

matplotlib.use("Agg")

from pathlib import Path

import mne
import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.anatomy import make_template_inverse

mne.set_log_level("WARNING")


def find_data():
    """(evoked file, covariance file) of the sample data, or None."""
    sample = mne.datasets.sample.data_path(download=False)
    if sample and Path(sample, "MEG", "sample", "sample_audvis-ave.fif").is_file():
        meg = Path(sample, "MEG", "sample")
        return meg / "sample_audvis-ave.fif", meg / "sample_audvis-cov.fif"
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    for root in (here, *here.parents):
        test = root / "shared" / "data" / "mne-test-evoked"
        if (test / "test-ave.fif.gz").is_file():
            return test / "test-ave.fif.gz", test / "test-cov.fif"
    return None


paths = find_data()
if paths is None:
    print("Neither MNE's sample data nor the MNE test evoked is available: nothing to show.")
    raise SystemExit(0)

# %%
# Evoked responses per channel set
# --------------------------------
# The stored data are not baseline-corrected; a DC offset would otherwise dominate.
evokeds = mne.read_evokeds(paths[0], baseline=(None, 0))
cov = mne.read_cov(paths[1])
CHANNEL_SETS = {"EEG": dict(meg=False, eeg=True), "MEG": dict(meg=True, eeg=False),
                "MEG+EEG": dict(meg=True, eeg=True)}  # fmt: skip


def window_means(channels):
    """Each condition's mean over 80-130 ms, on one channel set."""
    means = {}
    for evoked in evokeds:
        evoked = evoked.copy().pick(mne.pick_types(evoked.info, **CHANNEL_SETS[channels], exclude="bads"))
        if "EEG" in channels and not any(p["desc"].startswith("Average EEG") for p in evoked.info["projs"]):
            evoked.set_eeg_reference(projection=True)
        window = evoked.copy().crop(0.08, 0.13)
        means[evoked.comment] = mne.EvokedArray(
            window.data.mean(axis=1, keepdims=True), window.info, tmin=0.1, nave=evoked.nave
        )
    return means


print(", ".join(f"{e.comment}: nave {e.nave}" for e in evokeds))

# %%
# A template inverse and two estimates per channel set
# ----------------------------------------------------
# ``make_template_inverse`` computes the forward once and caches it. The forward uses:
#
# - the digitised electrodes and the MEG sensors where the recording put them;
# - the template BEM (three layers with EEG; MEG alone uses MNE's usual single shell);
# - the fsaverage5 cortex with MNE's default loose orientation (EEG), or PIUNet's
#   grid with free orientations (MEG, MEG+EEG).
piu = PIUNetInverse()
for channels in CHANNEL_SETS:
    means = window_means(channels)
    info = next(iter(means.values())).info
    src = None if channels == "EEG" else piu.src
    inv = make_template_inverse(info, cov, src=src, loose="auto" if src is None else 1.0)
    src_pos = mne.transforms.apply_trans(
        mne.transforms.invert_transform(inv["mri_head_t"]),
        np.concatenate([s["rr"][s["vertno"]] for s in inv["src"]]),
    )
    for name, evoked in means.items():
        stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA")
        stc_p = piu.apply(evoked, inv, 1 / 9)
        pe = src_pos[stc_e.get_peak(vert_as_index=True)[0]] * 1e3
        pp = piu.grid.pos[stc_p.get_peak(vert_as_index=True)[0]] * 1e3
        print(f"{channels:8s}{name:15s} eLORETA peak {np.round(pe)} mm | PIUNet peak {np.round(pp)} mm (MNI)")

# %%
# What the data show
# ------------------
# Read the peaks printed above with two points in mind:
#
# - x < 0 is the left hemisphere, and y < -60 mm is occipital.
# - With this few trials the auditory N100 is weak in EEG. On this excerpt eLORETA's auditory
#   peaks are parietal and superior, not temporal, so do not expect a method that starts from
#   eLORETA to recover the temporal sources.
#
# The visual P100 is the stronger test: both methods should place it in the occipital lobe,
# opposite to the stimulated hemifield, with every channel set. The project's real-data
# test checks exactly this.
stc = piu.apply(means["Left visual"], inv, 1 / 9)  # MEG+EEG, the last channel set
stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode="glass_brain", show=False)
