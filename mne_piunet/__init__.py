"""mne-piunet: 3D-PIUNet, a learned refinement of eLORETA, for MNE-Python.

The inverse API needs PyTorch; it is imported on first use so that the anatomy,
grid, simulation and metrics modules work without it.
"""

__version__ = "0.1.0"

__all__ = ["PIUNetInverse", "apply_piunet", "apply_piunet_epochs", "apply_piunet_raw", "__version__"]


def __getattr__(name):
    if name in ("PIUNetInverse", "apply_piunet", "apply_piunet_epochs", "apply_piunet_raw"):
        from . import inverse

        return getattr(inverse, name)
    raise AttributeError(f"module 'mne_piunet' has no attribute {name!r}")
