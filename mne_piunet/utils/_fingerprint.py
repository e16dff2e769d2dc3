"""Fingerprints of MNE objects: which forward and inverse a set of tuned weights was tuned on.

:func:`~mne_piunet.train.finetune.fine_tune` records them in the weights it
writes, and :class:`~mne_piunet.PIUNetInverse` compares them with the inverse it
is given, so both import them from here rather than one from the other.
"""

from __future__ import annotations

import mne
import numpy as np

from .._cache import digest

__all__ = ["forward_fingerprint", "inverse_fingerprint"]


def _digest(arrays: list[np.ndarray], names: list[str]) -> str:
    # float32: FIF files store these in single precision, so an object and its
    # written-and-read copy get one digest
    return digest(*[np.asarray(a, np.float32) for a in arrays], repr(list(names)))


def forward_fingerprint(forward: mne.Forward) -> str:
    """sha256 of a forward's leadfield and channel names.

    Parameters
    ----------
    forward : mne.Forward
        The forward model.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    return _digest([forward["sol"]["data"]], forward["sol"]["row_names"])


def inverse_fingerprint(inverse_operator: mne.minimum_norm.InverseOperator) -> str:
    """sha256 of what identifies an inverse operator through reading and preparation.

    Writing and reading an inverse (``reginv`` becomes ``[]``) and preparing
    it (``prepare_inverse_operator`` scales the noise covariance by ``nave``,
    and eLORETA rewrites the source covariance, eigen fields, eigen leads and
    singular values) leave this unchanged: the noise covariance up to scale,
    its channels, the source space's vertices and orientations, the depth and
    orientation priors, and the SSP projectors.

    Parameters
    ----------
    inverse_operator : mne.minimum_norm.InverseOperator
        The inverse, prepared or not.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    inv = inverse_operator
    cov = inv["noise_cov"]
    # preparation scales the eigenvalues by 1 / nave: their ratios, on a log scale in steps
    # of 1 %, stay put; the eigenvectors are stored as they are
    eig = np.asarray(cov["eig"], float)
    ratio = np.clip(eig / max(eig.max(), np.finfo(float).tiny), 1e-10, None)
    priors = [np.asarray(inv[k]["data"]) for k in ("depth_prior", "orient_prior") if inv.get(k) is not None]
    projs = [np.asarray(p["data"]["data"]) for p in inv["projs"]]
    arrays = [
        np.asarray(cov["eigvec"]),
        np.round(np.log2(ratio) * 64),
        inv["source_nn"],
        np.concatenate([s["vertno"] for s in inv["src"]]).astype(np.float32),
        *priors,
        *projs,
    ]
    return _digest(arrays, cov["names"])
