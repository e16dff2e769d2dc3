"""Boundary checks shared by the inverse, the demo and the training code, each written once.

The type, integer and option checks are MNE's own (:func:`mne.utils._validate_type`,
:func:`mne.utils._ensure_int`, :func:`mne.utils._check_option`), so each kind of
error reads as it does in MNE; the wrappers here add, where one helps, a
sentence naming the fix. The messages say what was expected, what was given,
and how to make the right thing.
"""

from __future__ import annotations

import mne
import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _ensure_int, _validate_type


def _with_fix(message: str, fix: str) -> str:
    return f"{message} {fix}" if fix else message


def validate_type(item, types, item_name: str, type_name: str | None = None, *, fix: str = ""):
    """MNE's ``_validate_type`` ("<name> must be an instance of <types>, got <type> instead."), then ``fix``.

    Returns ``item``. ``types`` are as for MNE's: classes, None, or MNE's
    names such as ``"numeric"`` (which refuses bools) and ``"path-like"``.
    """
    try:
        _validate_type(item, types, item_name, type_name)
    except TypeError as err:
        raise TypeError(_with_fix(str(err), fix)) from None
    return item


def check_option(parameter: str, value, allowed_values, *, fix: str = ""):
    """MNE's ``_check_option`` ("Invalid value for the '<name>' parameter. Allowed values are ..."), then ``fix``.

    Returns ``value``.
    """
    try:
        return _check_option(parameter, value, allowed_values)
    except ValueError as err:
        raise ValueError(_with_fix(str(err), fix)) from None


def ensure_int(value, name: str, must_be: str = "an int", *, minimum: int | None = None) -> int:
    """MNE's ``_ensure_int`` (bools refused: "<name> must be <must_be>, got <type>"), and a lower bound.

    A value below ``minimum`` raises a ValueError worded the same way,
    "<name> must be <must_be>, got <value>".
    """
    value = _ensure_int(value, name, must_be)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {must_be}, got {value}")
    return value


def check_positive(value, name: str, hint: str = "", *, zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``zero``; bools refused), as a float; ``hint`` says what it is.

    A wrong type raises MNE's TypeError; a number out of range,
    "<name> must be > 0 (<hint>), got <value>".
    """
    validate_type(value, "numeric", name, "int or float")
    if not np.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = f"{'>=' if zero else '>'} 0" + (f" ({hint})" if hint else "")
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def check_inverse_operator(inverse_operator) -> None:
    """Raise a TypeError naming the fix unless ``inverse_operator`` is an MNE InverseOperator."""
    validate_type(
        inverse_operator,
        mne.minimum_norm.InverseOperator,
        "inverse_operator",
        "mne.minimum_norm.InverseOperator",
        fix="Make one with mne.minimum_norm.make_inverse_operator(info, forward, noise_cov).",
    )


def check_forward(forward) -> None:
    """Raise a TypeError naming the fix unless ``forward`` is an MNE Forward."""
    validate_type(
        forward,
        mne.Forward,
        "forward",
        "mne.Forward",
        fix="Read one with mne.read_forward_solution or make one with mne.make_forward_solution.",
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
