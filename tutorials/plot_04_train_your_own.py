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

Everything below uses MNE itself, the model's public API and NumPy: the head
model is made with MNE as for any "EEG with a template MRI" analysis, the
fine-tune reports its own verdict, and a check on fresh simulated evoked
responses (:func:`mne.simulation.simulate_evoked`) is scored with
:mod:`mne_piunet.metrics`.

The budget here is short (``PIUNET_TUTORIAL_MINUTES``, default 2) so that the
tutorial runs anywhere; the model card reports what 10 and 30 minutes on 2 CPU
cores buy. The command-line equivalent is::

    mne-piunet fine-tune --fwd sub-01-fwd.fif --inv sub-01-inv.fif --minutes 30 -o my_piunet.pt

To train a model from scratch on other template setups instead, see
``mne-piunet train --help``.
"""

# %%
import matplotlib

matplotlib.use("Agg")

import os
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import mne
import numpy as np

from mne_piunet import PIUNetInverse
from mne_piunet.metrics import nemd, peak_localisation_error

mne.set_log_level("WARNING")
minutes = float(os.environ.get("PIUNET_TUTORIAL_MINUTES", 2))
folder = Path(tempfile.mkdtemp())
rng = np.random.default_rng(7)
piu = PIUNetInverse()
subjects_dir = piu.subjects_dir  # a template fsaverage folder (MRI, BEM surfaces, cortex), offline

# %%
# Your head model
# ---------------
# Made to look like a researcher's own: the electrodes are a digitisation of
# an easycap-M43 cap (its nominal positions with 5 mm of jitter, as a real cap
# sits), the head is a 3-layer BEM of the fsaverage template with other
# conductivities than the ones the network was trained with, the source space
# is the fsaverage5 cortex, and the inverse is MNE's default for a cortical
# source space (loose 0.2, depth 0.8) with a noise covariance estimated from
# baseline data. With your own data you would read your digitisation, use
# your subject's BEM and ``trans``, or MNE's fsaverage files.
#
# Solving the BEM and the forward are the slow steps here (a few minutes on
# 2 CPU cores); they go to disk and back, as yours would.
nominal = mne.channels.make_standard_montage("easycap-M43").get_positions()
ch_pos = {name: xyz + rng.normal(0.0, 5e-3, 3) for name, xyz in nominal["ch_pos"].items()}
digitisation = mne.channels.make_dig_montage(
    ch_pos=ch_pos, nasion=nominal["nasion"], lpa=nominal["lpa"], rpa=nominal["rpa"],
    coord_frame=nominal["coord_frame"],
)  # fmt: skip
info = mne.create_info(list(ch_pos), sfreq=250.0, ch_types="eeg")
info.set_montage(digitisation)

trans = subjects_dir / "fsaverage" / "bem" / "fsaverage-trans.fif"
bem_model = mne.make_bem_model(
    "fsaverage", ico=None, conductivity=(0.33, 0.0066, 0.33), subjects_dir=subjects_dir
)
bem = mne.make_bem_solution(bem_model)
src = mne.setup_source_space("fsaverage", spacing="all", subjects_dir=subjects_dir, add_dist=False)
fwd = mne.make_forward_solution(info, trans, src, bem, eeg=True, meg=False)

# 20 s of baseline: background activity (5,000 random cortical dipoles) and sensor noise
leadfield = fwd["sol"]["data"]
background = rng.choice(leadfield.shape[1], 5000, replace=False)
baseline = leadfield[:, background] @ rng.standard_normal((5000, 5000)) * 1e-9
baseline += 0.2 * baseline.std() * rng.standard_normal(baseline.shape)
raw = mne.io.RawArray(baseline, info).set_eeg_reference(projection=True)
noise_cov = mne.compute_raw_covariance(raw)
inv = mne.minimum_norm.make_inverse_operator(raw.info, fwd, noise_cov, loose=0.2, depth=0.8)

mne.write_forward_solution(folder / "sub-01-fwd.fif", fwd)
mne.minimum_norm.write_inverse_operator(folder / "sub-01-inv.fif", inv)
# With your own data, start here:
fwd = mne.read_forward_solution(folder / "sub-01-fwd.fif")
inv = mne.minimum_norm.read_inverse_operator(folder / "sub-01-inv.fif")
print(fwd)

# %%
# One call
# --------
# ``fine_tune`` keeps a seeded slice of the simulations for validation, writes
# a log and checkpoints (a larger ``minutes`` with the same ``run_dir``
# resumes), and then scores the bundled and the tuned weights on fresh samples
# of your setup. It refuses to save weights that are not better on average, or
# that are worse in some group of samples: it then returns the bundled model
# and warns with the groups. The tuned weights record the sha256 of the
# forward and inverse they were tuned on, and warn when applied with another
# inverse.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tuned = piu.fine_tune(inv, fwd, minutes=minutes, out=folder / "my_piunet.pt", overwrite=True)
print(open(folder / "my_piunet_run" / "train.log").read().splitlines()[-1])

# %%
# The fine-tune's verdict
# -----------------------
# Per group (number of sources x SNR band, the centre map refined with its
# temporal window or alone): mean NEMD of the bundled and the tuned weights
# on the same fresh samples (lower is better), and their mean paired
# difference with its standard error.
if tuned is piu:
    print("Not accepted: the bundled weights are kept. The fine-tune's warning:")
    print("\n".join(str(w.message) for w in caught if "not better" in str(w.message)))
else:
    print("Accepted. NEMD on fresh samples of your setup, bundled -> tuned:")
    for g in tuned.bundle.meta["tuned_on"]["acceptance"]:
        print(
            f"  {g['n_sources']:2d} source(s), {g['snr_db'][0]:g}-{g['snr_db'][1]:g} dB, {g['mode']:10s}: "
            f"{g['start']:.3f} -> {g['tuned']:.3f} ({g['diff']:+.3f} +/- {g['se']:.3f})"
        )

# %%
# Your own check, on simulated evoked responses
# ---------------------------------------------
# Fresh evoked responses from 1 or 3 cortical sources (along the cortical
# normal, a 200 ms burst, longer than the network's 80 ms temporal context,
# 10 dB SNR against your noise covariance), made with MNE's
# :func:`~mne.simulation.simulate_evoked` through your forward, and localised
# by eLORETA on your inverse and by PIUNet, bundled and tuned. Each estimate's
# map at the burst's peak is scored against the truth with NEMD (normalised
# earth mover's distance; 0 is perfect, 1 is as good as a uniform map) and the
# peak localisation error. PIUNet's estimates live on its MNI grid, the truth
# on your cortex: both are compared in the template MRI frame.
fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True, use_cps=True)
mri_pos = mne.transforms.apply_trans(mne.transforms.invert_transform(fwd["mri_head_t"]), fwd["source_rr"])
vertices = [s["vertno"] for s in fwd["src"]]
n_lh = len(vertices[0])
lambda2, nave, n_times = 1 / 9, 30, 50
times = np.arange(n_times) / info["sfreq"]
burst = np.hanning(n_times)
peak = n_times // 2
noise_rms = np.sqrt(np.mean(np.diag(noise_cov.data)) / nave)
eloreta = mne.minimum_norm.prepare_inverse_operator(inv, nave, lambda2, "eLORETA")  # once for all samples
models = {"bundled": piu} if tuned is piu else {"bundled": piu, "fine-tuned": tuned}
n_per_cell = 8
scores = {}  # (method, n_sources) -> list of (NEMD, PLE)
for n_sources in (1, 3):
    for _ in range(n_per_cell):
        active = np.sort(rng.choice(fixed["nsource"], n_sources, replace=False))
        amplitude = rng.choice([-1.0, 1.0], n_sources) * rng.uniform(0.5, 1.0, n_sources)
        clean = fixed["sol"]["data"][:, active] @ amplitude  # the sensors at the peak, per unit moment
        scale = 10 ** (10.0 / 20) * noise_rms / np.sqrt(np.mean((clean - clean.mean()) ** 2))
        moments = scale * amplitude  # Am, so that the peak is 10 dB above the averaged noise
        lh, rh = active[active < n_lh], active[active >= n_lh]
        stc_true = mne.SourceEstimate(
            np.outer(moments, burst), [vertices[0][lh], vertices[1][rh - n_lh]], tmin=0.0, tstep=times[1]
        )
        evoked = mne.simulation.simulate_evoked(
            fixed, stc_true, raw.info, noise_cov, nave=nave, random_state=rng
        )
        true, true_pos = np.abs(moments), mri_pos[active]
        stc_eloreta = mne.minimum_norm.apply_inverse(evoked, eloreta, lambda2, "eLORETA", prepared=True)
        estimates = {"eLORETA": (stc_eloreta.data[:, peak], mri_pos)}
        for label, model in models.items():
            stc = model.apply(evoked, inv, lambda2)
            estimates[f"PIUNet {label}"] = (stc.data[:, peak], model.grid.pos)
        for method, (est, pos) in estimates.items():
            scores.setdefault((method, n_sources), []).append(
                (nemd(est, true, pos, true_pos), peak_localisation_error(est, true, pos, true_pos))
            )

methods = list(dict.fromkeys(m for m, _ in scores))
print(f"{n_per_cell} samples per row, 10 dB; mean NEMD (lower is better), mean peak error (mm)")
for (method, n_sources), values in scores.items():
    values = np.array(values)
    nemd_mean, ple_mean = values.mean(axis=0)
    print(f"{method:20s} {n_sources} source(s): NEMD {nemd_mean:.3f}, peak error {ple_mean:5.1f} mm")

fig, axes = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
for ax, n_sources in zip(axes, (1, 3)):
    ax.boxplot([np.array(scores[m, n_sources])[:, 0] for m in methods])
    ax.set(xticks=range(1, len(methods) + 1), title=f"{n_sources} source(s), 10 dB", ylabel="NEMD")
    ax.set_xticklabels(methods, rotation=20)

# %%
# Use it as any MNE inverse
# -------------------------
# The tuned model (or the bundled one, when the fine-tune kept it) is applied
# as before; the output is a standard volume source estimate on the model's
# grid. Here: the last simulated evoked response.
best = tuned if tuned is not piu else piu
stc = best.apply(evoked, inv, lambda2)
vertno, t_peak = stc.get_peak()
print(f"{stc}\npeak at {(best.src[0]['rr'][vertno] * 1e3).round()} mm; true sources at")
print((true_pos * 1e3).round())
