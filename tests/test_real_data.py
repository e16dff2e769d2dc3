"""Real data: MNE's test evoked (auditory/visual; 60 EEG, 306 MEG) with the template anatomy.

Each channel set a user has, EEG, MEG and MEG+EEG, is localised with the
bundled model. Skipped when ``../shared/data/mne-test-evoked`` (beside the
checkout) is absent.
"""

import mne
import numpy as np
import pytest

CHANNEL_SETS = {
    "eeg": dict(meg=False, eeg=True),
    "meg": dict(meg=True, eeg=False),
    "meg+eeg": dict(meg=True, eeg=True),
}


def _window_means(folder, channels: str) -> tuple[dict, mne.Covariance]:
    """One channel set, baseline-corrected (average reference for EEG), mean over 80-130 ms."""
    evokeds = mne.read_evokeds(folder / "test-ave.fif.gz", baseline=(None, 0), verbose=False)
    cov = mne.read_cov(folder / "test-cov.fif", verbose=False)
    out = {}
    for ev in evokeds:
        ev = ev.copy().pick(mne.pick_types(ev.info, **CHANNEL_SETS[channels], exclude="bads"))
        if "eeg" in channels and not any(p["desc"].startswith("Average EEG") for p in ev.info["projs"]):
            ev.set_eeg_reference(projection=True, verbose=False)
        win = ev.copy().crop(0.08, 0.13)
        out[ev.comment] = mne.EvokedArray(
            win.data.mean(axis=1, keepdims=True), win.info, tmin=0.1, nave=ev.nave
        )
    return out, cov


@pytest.fixture(scope="module")
def bundled():
    from mne_piunet import PIUNetInverse

    return PIUNetInverse()  # the bundled, pretrained model


@pytest.fixture(scope="module", params=list(CHANNEL_SETS))
def peaks(request, bundled, shared_evoked):
    """PIUNet's peak (MNI mm) and right-hemisphere share of |moment| per condition, one channel set.

    EEG on the fsaverage5 cortex (MNE's default loose inverse); MEG and
    MEG+EEG on PIUNet's own grid (a free volume inverse), to keep their
    forwards quick to build.
    """
    from mne_piunet.anatomy import make_template_inverse

    means, cov = _window_means(shared_evoked, request.param)
    info = next(iter(means.values())).info
    src = None if request.param == "eeg" else bundled.src
    inv = make_template_inverse(info, cov, src=src, loose="auto" if src is None else 1.0)
    x = bundled.grid.pos[:, 0]
    out = {}
    for name, evoked in means.items():
        stc = bundled.apply(evoked, inv, 1 / 9)
        vertex, _ = stc.get_peak(vert_as_index=True)
        magnitude = np.abs(stc.data[:, 0])
        right = magnitude[x > 0].sum() / magnitude[x != 0].sum()
        out[name] = (bundled.grid.pos[vertex] * 1e3, right)
        print(
            f"{request.param} {name}: peak at {np.round(out[name][0])} mm (MNI), right hemisphere {right:.0%}"
        )
    return out


def test_visual_p100_is_contralateral(peaks):
    (left, left_right_share), (right, right_right_share) = peaks["Left visual"], peaks["Right visual"]
    # V1 lies along the medial wall: on an 8 mm grid a contralateral peak may sit on
    # the midline row (x = 0), so the map's hemispheric balance decides, and the peak
    # must not be ipsilateral
    assert left_right_share > 0.5 > right_right_share, "visual maps should lean contralateral"
    assert left[0] >= 0 >= right[0], "visual peaks should not be ipsilateral"
    assert left[1] < -40 and right[1] < -40, "visual peaks should be posterior"


def test_visual_p100_is_occipital(peaks):
    left, right = peaks["Left visual"][0], peaks["Right visual"][0]
    assert left[1] < -60 and right[1] < -60, "visual peaks should be occipital"


def test_meg_eeg_inverse_refines_mnes_own_eloreta(shared_evoked):
    """A combined MEG+EEG inverse (real sensors, the file's projectors) refines MNE's own eLORETA."""
    from mne_piunet import PIUNetInverse

    folder = shared_evoked
    bundled = PIUNetInverse(precision="float32")
    evoked = mne.read_evokeds(folder / "test-ave.fif.gz", 0, baseline=(None, 0), verbose=False)
    # the file's evoked already carries an average-reference projector
    evoked = evoked.pick(["meg", "eeg"], exclude="bads").crop(0.09, 0.11)
    cov = mne.read_cov(folder / "test-cov.fif", verbose=False)
    sphere = mne.make_sphere_model("auto", "auto", evoked.info, verbose=False)
    src = mne.setup_volume_source_space(pos=20.0, sphere=sphere, exclude=20.0, verbose=False)
    fwd = mne.make_forward_solution(evoked.info, None, src, sphere, meg=True, eeg=True, verbose=False)
    inv = mne.minimum_norm.make_inverse_operator(evoked.info, fwd, cov, loose=1.0, verbose=False)
    ref = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", verbose=False)
    stc = bundled.apply(evoked, inv, 1 / 9)
    np.testing.assert_allclose(stc.times, ref.times)
    assert stc.subject == "fsaverage" and np.all(np.isfinite(stc.data)) and stc.data.max() > 0
    vec = mne.minimum_norm.apply_inverse(evoked, inv, 1 / 9, "eLORETA", pick_ori="vector", verbose=False)
    refined = bundled.refine(vec, inv, lambda2=1 / 9).data  # the lambda2 a residual pass needs
    # a residual pass's kernel is prepared at nave 1 there and at the evoked's here: its scale does not
    # count, the float32 second pass's round-off does (1e-6 of the peak in a few voxels)
    np.testing.assert_allclose(refined, stc.data, rtol=1e-5, atol=1e-5 * stc.data.max())
