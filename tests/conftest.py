"""Shared, session-scoped fixtures: the expensive anatomy is built once.

The on-disk cache is the users' one (``$MNE_PIUNET_CACHE``); when unset, the
tests use ``~/.cache/mne-piunet`` as users would, so a second run is fast.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

mne.set_log_level("WARNING")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


SHARED_EVOKED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mne-test-evoked"


@pytest.fixture(scope="session")
def grid():
    from mne_piunet.grid import get_grid

    return get_grid()


@pytest.fixture(scope="session")
def volume_setup(grid):
    """easycap-M10 on the template BEM, the grid as a free-orientation source space."""
    from mne_piunet.simulation import HeadSetup, prepare_setup

    return prepare_setup(HeadSetup("easycap-M10"), grid)


@pytest.fixture(scope="session")
def surface_setup(grid):
    """biosemi64 on the template BEM, fsaverage5 cortex with fixed orientations."""
    from mne_piunet.simulation import HeadSetup, prepare_setup

    return prepare_setup(HeadSetup("biosemi64", source_space="surface"), grid)


@pytest.fixture(scope="session")
def tiny_weights(grid, tmp_path_factory):
    """An untrained 2-level, width-8 network saved like the bundled weights (non-zero output)."""
    import torch

    from mne_piunet.grid import grid_meta
    from mne_piunet.network import UNet3d, UNetConfig, save_network

    torch.manual_seed(0)
    net = UNet3d(UNetConfig(width=8, levels=2, heads=2, groups=4), torch.from_numpy(grid.mask))
    # the last layer starts at zero; give it weights so the maps are not empty
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    fname = tmp_path_factory.mktemp("weights") / "tiny.pt"
    return save_network(net, fname, dict(grid=grid_meta(grid)))


@pytest.fixture(scope="session")
def piu_network_only(tiny_weights):
    """The same model without the data-fit step: what ``refine`` of an estimate without its inverse gives."""
    from mne_piunet import PIUNetInverse

    return PIUNetInverse(tiny_weights, device="cpu", precision="float32", data_fit=False)


@pytest.fixture(scope="session")
def piu(tiny_weights):
    from mne_piunet import PIUNetInverse

    # fp32: the contract tests compare estimates to 1e-6 on any CPU
    return PIUNetInverse(tiny_weights, device="cpu", precision="float32")


@pytest.fixture
def small_fine_tune(monkeypatch):
    """Fine-tunes that validate on 8 samples and accept on 2 per group (users': 64 and 24).

    The run, its validation and all 18 acceptance groups are still made and
    checked; only their sample counts are the tests' own.
    """
    from mne_piunet.train import finetune

    monkeypatch.setitem(finetune.FINE_TUNE_SETTINGS, "val_size", 8)
    monkeypatch.setattr(finetune, "ACCEPTANCE_PER_GROUP", 2)


@pytest.fixture(scope="session")
def operators(grid):
    """(info, forward, inverse, forward in the inverse's basis) of free, fixed and loose EEG inverses."""
    from mne_piunet.anatomy import make_cortex_src, make_template_forward, montage_info

    info = montage_info("easycap-M10")
    cov = mne.make_ad_hoc_cov(info, verbose=False)
    vol = make_template_forward("easycap-M10", grid.src)
    cortex = make_template_forward("easycap-M10", make_cortex_src())
    cases = {}
    for name, fwd, kwargs in (
        ("free volume", vol, dict(loose=1.0, depth=None)),
        ("fixed cortex", cortex, dict(fixed=True, depth=0.8)),
        ("loose cortex", cortex, dict(loose=0.2, depth=0.8)),
    ):
        inv = mne.minimum_norm.make_inverse_operator(info, fwd, cov, verbose=False, **kwargs)
        used = mne.convert_forward_solution(
            fwd,
            surf_ori=name != "free volume",
            force_fixed=name == "fixed cortex",
            use_cps=True,
            verbose=False,
        )
        cases[name] = (info, fwd, inv, used)
    return cases


@pytest.fixture(scope="session")
def simulated_evoked():
    """A factory: ``simulated_evoked(setup, n_times=5, seed=0, snr_db=20.0)`` -> (evoked, batch)."""
    return _simulated_evoked


@pytest.fixture(scope="session")
def shared_evoked():
    """The folder of MNE's test evoked beside the checkout (``../shared``); the test skips without it."""
    if not (SHARED_EVOKED / "test-ave.fif.gz").is_file():
        pytest.skip(f"MNE test evoked not found in {SHARED_EVOKED}")
    return SHARED_EVOKED


def _simulated_evoked(setup, n_times=5, seed=0, snr_db=20.0):
    """An Evoked whose every time point is one simulated sample of ``setup``."""
    from mne_piunet.simulation import simulate

    batch = simulate(setup, n_times, np.random.default_rng(seed), snr_db=snr_db, n_sources=1)
    evoked = mne.EvokedArray(batch.sensor.T, setup.info, tmin=0.0, nave=1)
    return evoked, batch
