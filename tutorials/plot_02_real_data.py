"""
.. _tut-real-data:

Real data: auditory and visual evoked responses on a template head
==================================================================

MNE's "sample" subject heard tones and saw checkerboards in the left or right
hemifield. Here we take the usual "EEG with a template MRI" approach:
- EEG channels only, with an average reference;
- the template BEM and the fsaverage5 cortex in place of the subject's own MRI.

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
# Evoked responses, EEG only
# --------------------------
# The stored data are not baseline-corrected; a DC offset would otherwise dominate.
evokeds = mne.read_evokeds(paths[0], baseline=(None, 0))
cov = mne.read_cov(paths[1])
means = {}
for evoked in evokeds:
    evoked = evoked.pick("eeg", exclude="bads")
    if not any(p["desc"].startswith("Average EEG") for p in evoked.info["projs"]):
        evoked.set_eeg_reference(projection=True)
    window = evoked.copy().crop(0.08, 0.13)
    means[evoked.comment] = mne.EvokedArray(
        window.data.mean(axis=1, keepdims=True), window.info, tmin=0.1, nave=evoked.nave
    )
    print(f"{evoked.comment}: nave {evoked.nave}")

# %%
# A template inverse and two estimates
# ------------------------------------
# ``make_template_inverse`` computes the forward once and caches it. The forward uses:
# - the digitised electrodes;
# - the template BEM;
# - the fsaverage5 cortex, with MNE's default loose orientation.
inv = make_template_inverse(next(iter(means.values())).info, cov)
piu = PIUNetInverse()
src_pos = mne.transforms.apply_trans(
    mne.transforms.invert_transform(inv["mri_head_t"]),
    np.concatenate([s["rr"][s["vertno"]] for s in inv["src"]]),
)

for name, evoked in means.items():
    stc_e = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA")
    stc_p = piu.apply(evoked, inv, 1 / 9)
    pe = src_pos[stc_e.get_peak(vert_as_index=True)[0]] * 1e3
    pp = piu.grid.pos[stc_p.get_peak(vert_as_index=True)[0]] * 1e3
    print(f"{name:15s} eLORETA peak {np.round(pe)} mm | PIUNet peak {np.round(pp)} mm (MNI)")

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
# opposite to the stimulated hemifield. The project's real-data test checks exactly this.
stc = piu.apply(means["Left visual"], inv, 1 / 9)
stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode="glass_brain", show=False)
