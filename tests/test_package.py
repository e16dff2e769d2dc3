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
    """Users load anatomy, grid, physics, network, inference and the inverse; simulation, train and bench are the developers'."""
    code = (
        "import sys, mne_piunet\n"
        "piu = mne_piunet.PIUNetInverse(device='cpu')\n"
        "print('loaded:', *sorted(m for m in sys.modules if m.startswith(('mne_piunet.simulation', 'mne_piunet.train', 'mne_piunet.bench'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1].split() == ["loaded:"]  # MNE's own messages come before


def test_imports_run_one_way():
    """Each developers' layer imports only the layers below it: simulation -> train -> bench -> cli.

    (Importing any of them imports the package, so the users' API, first.)
    """
    above = {
        "mne_piunet.simulation": ("mne_piunet.train", "mne_piunet.bench", "mne_piunet.cli"),
        "mne_piunet.demo": ("mne_piunet.train", "mne_piunet.bench", "mne_piunet.cli"),
        "mne_piunet.train.training": ("mne_piunet.bench", "mne_piunet.cli"),
        "mne_piunet.bench.evaluation": ("mne_piunet.cli",),
    }
    for module, forbidden in above.items():
        code = f"import sys, {module}\nprint(*sorted(m for m in sys.modules if m.startswith('mne_piunet')))"
        loaded = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        assert not [m for m in loaded if m.startswith(forbidden)], (module, loaded)
