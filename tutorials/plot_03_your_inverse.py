"""
.. _tut-your-inverse:

PIUNet from the inverse operator you already have
=================================================

PIUNet does not need a special forward model. It starts from eLORETA computed
on *your* inverse operator, moves that estimate onto its MNI grid and refines it
there. This tutorial feeds it:
- a cortical (fsaverage5) inverse with fixed orientations;
- a volume inverse with free orientations;
- a subject-specific inverse, mapped to MNI through the subject's talairach transform.

It also shows vector output, Epochs and Raw.
"""

# %%
import matplotlib

matplotlib.use("Agg")

import shutil
import tempfile
from pathlib import Path

import mne
import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.anatomy import (
    make_cortex_src,
    make_template_forward,
    make_template_sphere,
    montage_info,
    template_trans,
)

mne.set_log_level("WARNING")
piu = PIUNetInverse()
info = montage_info("easycap-M10")  # 61 channels, average reference
cov = mne.make_ad_hoc_cov(info)
rng = np.random.default_rng(0)

# A test signal: one cortical patch in the right occipital cortex.
src = make_cortex_src()
fwd = make_template_forward("easycap-M10", src)  # template BEM, cached
fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)
rr = np.concatenate([s["rr"][s["vertno"]] for s in src])  # template MRI frame
target = np.array([0.02, -0.09, 0.01])
amp = np.exp(-np.sum((rr - target) ** 2, axis=1) / (2 * 0.01**2)) * 1e-9
data = fixed["sol"]["data"] @ amp
data = np.outer(data, np.hanning(20)) + rng.standard_normal((len(data), 20)) * 0.05 * np.abs(data).max()
evoked = mne.EvokedArray(data, info, tmin=0.0)


def peak_mm(stc):
    return np.round(piu.grid.pos[stc.get_peak(vert_as_index=True)[0]] * 1e3)


# %%
# A cortical inverse with fixed orientations
# ------------------------------------------
# Each fixed-orientation eLORETA value becomes a vector along the source normal.
inv_fixed = mne.minimum_norm.make_inverse_operator(info, fwd, cov, fixed=True)
stc = piu.apply(evoked, inv_fixed, 1 / 9)
print("surface, fixed:", peak_mm(stc), "mm; truth", np.round(target * 1e3))

# %%
# A free-orientation volume inverse, with vector output
# -----------------------------------------------------
vol_src = mne.setup_volume_source_space(
    "fsaverage", pos=6.0, mri="T1.mgz", surface=piu.subjects_dir / "fsaverage" / "bem" / "inner_skull.surf",
    mindist=5.0, subjects_dir=piu.subjects_dir, add_interpolator=False,
)  # fmt: skip
fwd_vol = make_template_forward("easycap-M10", vol_src)
inv_vol = mne.minimum_norm.make_inverse_operator(info, fwd_vol, cov, loose=1.0)
vec = piu.apply(evoked, inv_vol, 1 / 9, pick_ori="vector")
print("volume, free:", type(vec).__name__, vec.data.shape, peak_mm(vec.magnitude()), "mm")

# %%
# A subject-specific inverse
# --------------------------
# "sub-01" is a fake subject for this demonstration: its MRI coordinates are the
# template's, shrunk by 5 %. Its ``talairach.xfm`` carries the inverse map, so
# PIUNet can reach MNI space. With a real subject, pass your FreeSurfer
# ``subjects_dir``, or pass ``mni_transform=``.
subjects_dir = Path(tempfile.mkdtemp())
tal = np.diag([1 / 0.95] * 3 + [1.0])  # subject MRI -> MNI
xfm = subjects_dir / "sub-01" / "mri" / "transforms" / "talairach.xfm"
xfm.parent.mkdir(parents=True)
# MNE reads the talairach transform together with the subject's T1 header.
shutil.copy(piu.subjects_dir / "fsaverage" / "mri" / "T1.mgz", xfm.parents[1] / "T1.mgz")
xfm.write_text(
    "MNI Transform File\n\nTransform_Type = Linear;\nLinear_Transform =\n"
    + "\n".join(" ".join(f"{v:.6f}" for v in row) for row in tal[:3])
    + ";\n"
)
sub_src = make_cortex_src()
for s in sub_src:
    s["rr"] = s["rr"] * 0.95
    s["subject_his_id"] = "sub-01"
sub_trans = template_trans()
sub_trans["trans"] = np.diag([0.95] * 3 + [1.0]) @ sub_trans["trans"]
sub_rr = mne.transforms.apply_trans(
    mne.transforms.invert_transform(sub_trans), np.concatenate([s["rr"] for s in sub_src])
)  # head coordinates
sub_rr_mri = np.concatenate([s["rr"] for s in sub_src])
sphere = make_template_sphere(info, avoid=sub_rr, contain=np.concatenate([sub_rr, sub_rr_mri]))
fwd_sub = mne.make_forward_solution(info, sub_trans, sub_src, sphere, eeg=True, meg=False)
inv_sub = mne.minimum_norm.make_inverse_operator(info, fwd_sub, cov, loose=0.2)
stc = piu.apply(evoked, inv_sub, 1 / 9, subjects_dir=subjects_dir)
print("subject-specific (talairach):", peak_mm(stc), "mm")

# %%
# Epochs and Raw
# --------------
# Epochs stream one at a time (``return_generator=True``). Raw is processed in
# chunks with a progress bar, so memory stays bounded.
epochs = mne.EpochsArray(np.stack([data, data * 0.5]), info)
for stc in piu.apply_epochs(epochs, inv_fixed, 1 / 9, return_generator=True):
    print("epoch peak:", peak_mm(stc), "mm")
raw = mne.io.RawArray(np.tile(data, 3), info)
stc_raw = piu.apply_raw(raw, inv_fixed, 1 / 9, buffer_size=25)
print("raw:", stc_raw.data.shape)
