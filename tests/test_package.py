"""The package itself: its version and how it imports its dependencies."""

import importlib.metadata
import subprocess
import sys


def test_import_binds_the_api_and_imports_torch():
    # PyTorch is a dependency like MNE, imported with the package rather than on
    # first use. A fresh interpreter, since this session's other tests import it.
    code = (
        "import sys, mne_piunet\n"
        "print(mne_piunet.__version__, 'torch' in sys.modules, '__getattr__' in vars(mne_piunet))\n"
        "print(*sorted(set(mne_piunet.__all__) - set(vars(mne_piunet))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    version, torch_imported, lazy, *missing = out.split()
    assert version == importlib.metadata.version("mne-piunet")
    assert torch_imported == "True" and lazy == "False"
    assert missing == []  # every public name is bound at import


def test_applying_a_model_never_imports_the_training_code():
    """Users load anatomy, grid, network, inference and the inverse; train/ and bench/ are the developers'."""
    code = (
        "import sys, mne_piunet\n"
        "piu = mne_piunet.PIUNetInverse(device='cpu')\n"
        "print('loaded:', *sorted(m for m in sys.modules if m.startswith(('mne_piunet.train', 'mne_piunet.bench'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1].split() == ["loaded:"]  # MNE's own messages come before
