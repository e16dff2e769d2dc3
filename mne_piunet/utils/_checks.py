"""Boundary checks shared by the inverse and the training code, each written once.

MNE has no public type checks for its objects, so these raise the project's
messages: what was expected, what was given, and how to make the right thing.
"""

from __future__ import annotations

import mne
import numpy as np
from mne.io.constants import FIFF


def check_inverse_operator(inverse_operator) -> None:
    """Raise a TypeError naming the fix unless ``inverse_operator`` is an MNE InverseOperator."""
    if not isinstance(inverse_operator, mne.minimum_norm.InverseOperator):
        raise TypeError(
            f"inverse_operator must be an mne.minimum_norm.InverseOperator, got "
            f"{type(inverse_operator).__name__}. Make one with "
            "mne.minimum_norm.make_inverse_operator(info, forward, noise_cov)."
        )


def check_forward(forward) -> None:
    """Raise a TypeError naming the fix unless ``forward`` is an MNE Forward."""
    if not isinstance(forward, mne.Forward):
        raise TypeError(
            f"forward must be an mne.Forward (e.g. from mne.read_forward_solution), got {type(forward).__name__}"
        )


def has_free_orientation(model) -> bool:
    """Whether a forward or inverse has three orientations per source (free or loose), not one (fixed)."""
    return model["source_ori"] == FIFF.FIFFV_MNE_FREE_ORI


def as_affine(trans, name: str = "transform") -> np.ndarray:
    """The 4x4 array of an :class:`mne.transforms.Transform` or of an array-like (m)."""
    affine = trans["trans"] if isinstance(trans, mne.transforms.Transform) else np.asarray(trans, float)
    if affine.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 affine (m), got shape {affine.shape}")
    return affine
