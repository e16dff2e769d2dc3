"""
.. _tut-quickstart:

Quickstart: PIUNet beside dSPM, sLORETA and eLORETA
===================================================

Everything here runs offline on the template head that mne-piunet builds from
files MNE and nilearn ship: we simulate an evoked response from one known source,
localise it with MNE's linear inverses and with PIUNet, and compare.
"""

# %%
import matplotlib

matplotlib.use("Agg")  # runs as a plain script too

import mne
import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.simulation import HeadSetup, prepare_setup, simulate_demo_evoked

mne.set_log_level("WARNING")

# %%
# The pretrained network and its output grid
# -------------------------------------------
# ``piu.src`` is an ordinary MNE volume source space (8 mm, fsaverage/MNI
# coordinates) and ``piu.subjects_dir`` a template subjects folder, so MNE's
# plotting works without FreeSurfer or downloads.
piu = PIUNetInverse()
print(piu)

# %%
# A simulated evoked response
# ---------------------------
# A 64-channel BioSemi cap on the template 3-layer BEM, with the grid as a
# free-orientation source space. One Gaussian blob (10 mm) in the left
# superior temporal region carries a 10 Hz burst; white noise gives 10 dB SNR.
setup = prepare_setup(HeadSetup("biosemi64"), piu.grid)
evoked, true_pos = simulate_demo_evoked(setup, snr_db=10.0)
inv = setup.inverse_operator  # an ordinary mne.minimum_norm.InverseOperator
evoked.plot_joint(show=False)

# %%
# Four inverse solutions
# ----------------------
# PIUNet takes exactly what ``apply_inverse`` takes.
stcs = {m: mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, m) for m in ("dSPM", "sLORETA", "eLORETA")}
stcs["PIUNet"] = piu.apply(evoked, inv, lambda2=1 / 9)

t_peak = evoked.times[np.argmax((evoked.data**2).sum(axis=0))]
for name, stc in stcs.items():
    values = np.abs(stc.data[:, stc.time_as_index(t_peak)[0]])
    error = np.linalg.norm(piu.grid.pos[np.argmax(values)] - true_pos) * 1e3
    print(f"{name:8s} peak {error:5.1f} mm from the true source")

# %%
# Plot with MNE
# -------------
# The PIUNet estimate is a :class:`mne.VolSourceEstimate`: ``stc.plot`` works
# in both of its volume modes.
stc = stcs["PIUNet"]
fig = stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode="glass_brain", initial_time=t_peak, show=False)
fig = stc.plot(piu.src, subjects_dir=piu.subjects_dir, mode="stat_map", initial_time=t_peak, show=False)
