"""mne-piunet: 3D-PIUNet, a learned refinement of eLORETA, for MNE-Python.

PyTorch is a dependency like MNE: importing the package imports it.
"""

from importlib.metadata import PackageNotFoundError, version

from .anatomy import make_template_inverse
from .inverse import PIUNetInverse, apply_piunet, apply_piunet_epochs, apply_piunet_raw
from .parallel import apply_piunet_many

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = version("mne-piunet")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

__all__ = [
    "PIUNetInverse",
    "apply_piunet",
    "apply_piunet_epochs",
    "apply_piunet_many",
    "apply_piunet_raw",
    "make_template_inverse",
    "__version__",
]
