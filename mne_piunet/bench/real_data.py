"""Checks on a real recording: where each method's peak lies, and how steady it stays from sample to sample.

Simulations score a map against a known truth; a real recording has none,
but two things are known of a visual evoked response (MNE's sample subject,
whose excerpt ships with MNE's tests): its P100 lies in the occipital lobe
contralateral to the stimulated hemifield, and it stays there for tens of
milliseconds. :func:`peak_steadiness` measures both for MNE's linear
inverses and PIUNet, on the whole evoked and on a crop of the window alone
(as a user who crops first gets it).
"""

# License: BSD-3-Clause

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np

from ..utils._defaults import DEFAULT_LAMBDA2
from ..utils._docs import fill_doc

__all__ = ("STEADINESS_METHODS", "VISUAL_CONDITIONS", "peak_steadiness", "visual_steadiness")

#: The methods :func:`peak_steadiness` compares.
STEADINESS_METHODS = ("dSPM", "eLORETA", "PIUNet")
#: The visual conditions of MNE's test evoked, and the hemisphere their P100 lies in (sign of x).
VISUAL_CONDITIONS = {"Left visual": 1, "Right visual": -1}


def visual_steadiness(folder, piu, window: tuple[float, float] = (0.085, 0.115)) -> list[dict]:
    """:func:`peak_steadiness` of the MEG of MNE's test evoked, visual conditions, with a template inverse.

    Parameters
    ----------
    folder : path-like
        A folder holding MNE's ``test-ave.fif.gz`` and ``test-cov.fif``
        (``mne/io/tests/data/`` of MNE-Python's repository).
    piu : PIUNetInverse
        The model; the inverse is made on its own grid
        (:func:`~mne_piunet.make_template_inverse` with ``src=piu.src``: MEG
        on the single-shell template BEM, free orientations).
    window : tuple of float
        The window of the P100 (s).

    Returns
    -------
    rows : list of dict
        Those of :func:`peak_steadiness`, with ``contralateral``: whether the
        window-mean peak lies in the hemisphere opposite the stimulated
        hemifield, behind the central sulcus (y < -40 mm).
    """
    from ..anatomy import make_template_inverse

    folder = Path(folder)
    cov = mne.read_cov(folder / "test-cov.fif", verbose=False)
    rows, inverse = [], None
    for condition, side in VISUAL_CONDITIONS.items():
        evoked = mne.read_evokeds(
            folder / "test-ave.fif.gz", condition=condition, baseline=(None, 0), verbose=False
        ).pick("meg")
        if inverse is None:
            inverse = make_template_inverse(evoked.info, cov, src=piu.src, verbose=False)
        for row in peak_steadiness(evoked, inverse, piu, window):
            x, y, _ = row["mean_peak_mm"]
            rows.append(dict(row, contralateral=bool(side * x > 0 and y < -40)))
    return rows


@fill_doc
def peak_steadiness(
    evoked: mne.Evoked,
    inverse_operator: mne.minimum_norm.InverseOperator,
    piu,
    window: tuple[float, float] = (0.085, 0.115),
    lambda2: float = DEFAULT_LAMBDA2,
    methods: tuple[str, ...] = STEADINESS_METHODS,
) -> list[dict]:
    """Each method's peak per sample over a window: how far it jumps, and where it lies on average.

    Parameters
    ----------
    evoked : mne.Evoked
        The recording (baseline-corrected).
    inverse_operator : mne.minimum_norm.InverseOperator
        Its inverse, on a source space in template (fsaverage MRI) coordinates.
    piu : PIUNetInverse
        The model.
    window : tuple of float
        The window (s).
    %(lambda2)s
    methods : tuple of str
        Of :data:`STEADINESS_METHODS` (MNE's linear methods and PIUNet).

    Returns
    -------
    rows : list of dict
        Per method and ``data`` (``"whole evoked"``: applied to all of it,
        then cropped; ``"crop"``: applied to the window alone):
        ``median_jump_mm`` (median distance between the peaks of
        consecutive samples) and ``mean_peak_mm`` (the peak of the window's
        mean amplitude map, MNI mm).
    """
    rows = []
    for data, inst in (("whole evoked", evoked), ("crop", evoked.copy().crop(*window))):
        for method in methods:
            with warnings.catch_warnings():  # a 30 ms crop is shorter than PIUNet's window: measured here
                warnings.simplefilter("ignore")
                if method == "PIUNet":
                    stc = piu.apply(inst, inverse_operator, lambda2, verbose=False)
                else:
                    stc = mne.minimum_norm.apply_inverse(
                        inst, inverse_operator, lambda2, method, verbose=False
                    )
            stc = stc.crop(*window)
            pos = _source_positions(stc, piu, inverse_operator)
            amplitude = np.abs(stc.data)
            peaks = pos[np.argmax(amplitude, axis=0)]
            jumps = np.linalg.norm(np.diff(peaks, axis=0), axis=1)
            mean_peak = pos[np.argmax(amplitude.mean(axis=1))]
            rows.append(
                dict(
                    condition=evoked.comment,
                    data=data,
                    method=method,
                    median_jump_mm=float(1e3 * np.median(jumps)),
                    mean_peak_mm=tuple(float(v) for v in np.round(1e3 * mean_peak)),
                )
            )
    return rows


def _source_positions(stc, piu, inverse_operator) -> np.ndarray:
    """(n_sources, 3) MNI positions (m) of an estimate's sources: PIUNet's grid, or the inverse's source space."""
    if list(stc.vertices[0]) == list(piu.grid.vertices[0]) and len(stc.vertices) == 1:
        return piu.grid.pos
    src = inverse_operator["src"]
    return np.concatenate([s["rr"][v] for s, v in zip(src, stc.vertices)])
