"""
.. _tut-meg-comparison:

MNE, dSPM, sLORETA, eLORETA and PIUNet on MEG
=============================================

MNE-Python's own comparison of its inverse methods uses the "sample" subject's
MEG-only inverse on the auditory evoked response. This is that comparison with
PIUNet added, on the same evoked and the same inverse operator: PIUNet takes
what ``apply_inverse`` takes.

- With ``mne.datasets.sample`` on disk: the sample data's own MEG inverse
  (``sample_audvis-meg-oct-6-meg-inv.fif``) on the subject's MRI, which PIUNet
  maps to the template by the subject's talairach transform.
- Offline: MNE's small test excerpt of the same recording (its 306 MEG
  channels, 3-6 trials per condition), on the template head and cortex, with
  MEG's usual single-shell head model.

PIUNet's estimate is a volume source estimate on its own template grid, so it
is compared with the others by where each puts its peak.
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
    """(evoked, inverse operator, subjects_dir) of the sample data or the test excerpt, or None."""
    sample = mne.datasets.sample.data_path(download=False)
    meg = Path(sample, "MEG", "sample") if sample else None
    if meg is not None and (meg / "sample_audvis-meg-oct-6-meg-inv.fif").is_file():
        evoked = mne.read_evokeds(meg / "sample_audvis-ave.fif", "Left Auditory", baseline=(None, 0))
        inv = mne.minimum_norm.read_inverse_operator(meg / "sample_audvis-meg-oct-6-meg-inv.fif")
        return evoked.pick("meg"), inv, Path(sample, "subjects")
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    for root in (here, *here.parents):
        test = root / "shared" / "data" / "mne-test-evoked"
        if (test / "test-ave.fif.gz").is_file():
            evoked = mne.read_evokeds(test / "test-ave.fif.gz", "Left Auditory", baseline=(None, 0))
            evoked = evoked.pick("meg", exclude="bads")
            inv = make_template_inverse(evoked.info, mne.read_cov(test / "test-cov.fif"))
            return evoked, inv, None
    return None


data = find_data()
if data is None:
    print("Neither MNE's sample data nor the MNE test evoked is available: nothing to show.")
    raise SystemExit(0)
evoked, inv, subjects_dir = data
print(f"{evoked.comment}: {len(evoked.ch_names)} MEG channels, nave {evoked.nave}")

# %%
# Five methods, one call each
# ---------------------------
# As in MNE's tutorial: ``lambda2 = 1 / SNR ** 2`` with an SNR of 3, and the
# time window of the N100. PIUNet refines eLORETA, so it takes the same
# ``lambda2`` and always runs eLORETA first.
lambda2 = 1.0 / 3.0**2
evoked = evoked.crop(0.05, 0.15)
piu = PIUNetInverse()


def cortical_peak_mni(stc):
    """MNI position (mm) and time of a cortical estimate's peak."""
    index, t_peak = stc.get_peak(vert_as_index=True)
    hemi = int(index >= len(stc.vertices[0]))
    vertno = stc.vertices[hemi][index - hemi * len(stc.vertices[0])]
    mni = mne.vertex_to_mni(vertno, hemi, stc.subject, subjects_dir=subjects_dir or piu.subjects_dir)
    return np.round(mni), t_peak


peaks = {}
for method in ("MNE", "dSPM", "sLORETA", "eLORETA"):
    peaks[method] = cortical_peak_mni(mne.minimum_norm.apply_inverse(evoked, inv, lambda2, method=method))
stc = piu.apply(evoked, inv, lambda2, subjects_dir=subjects_dir)
index, t_peak = stc.get_peak(vert_as_index=True)
peaks["PIUNet"] = (np.round(piu.grid.pos[index] * 1e3), t_peak)  # the grid is in MNI space
for method, (pos, t) in peaks.items():
    hemi = "left" if pos[0] < 0 else "right"
    print(f"{method:8s} peak at {pos} mm (MNI, {hemi} hemisphere), {t * 1e3:.0f} ms")

# %%
# What to look for
# ----------------
# The sound was played to the left ear, so the N100 is expected in both
# auditory cortices (superior temporal gyri, x about -/+ 55 mm, z about 5 mm),
# stronger on the right. The noise-normalised methods (dSPM, sLORETA) and
# eLORETA spread the response over the temporal lobe; PIUNet starts from
# eLORETA's map and concentrates it. With the test excerpt's 3 trials on a
# template head, expect the hemisphere more than the gyrus.
stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode="glass_brain", initial_time=t_peak, show=False)
