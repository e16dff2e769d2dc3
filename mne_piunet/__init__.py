"""mne-piunet: 3D-PIUNet, a learned refinement of eLORETA, for MNE-Python.

PyTorch is a dependency like MNE: importing the package imports it.
"""

from .inverse import PIUNetInverse, apply_piunet, apply_piunet_epochs, apply_piunet_raw
from .parallel import apply_piunet_many

__version__ = "0.1.0"

__all__ = [
    "PIUNetInverse", "apply_piunet", "apply_piunet_epochs", "apply_piunet_many", "apply_piunet_raw", "__version__",
]  # fmt: skip
