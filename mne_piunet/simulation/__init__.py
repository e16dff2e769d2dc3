"""Simulated EEG and MEG and their eLORETA estimates: the data of training, fine-tuning, evaluation and the demo.

:mod:`~mne_piunet.simulation.setups` names and prepares forward models (sensors x head x source space, or a
user's own forward and inverse) with MNE; :mod:`~mne_piunet.simulation.sources` draws sources, their time
courses and noise; :mod:`~mne_piunet.simulation.engine` runs sources -> sensors (+ noise) -> eLORETA -> grid in
seeded batches; :mod:`~mne_piunet.simulation.seeds` holds the seeds of the simulated data sets. Used by
:mod:`mne_piunet.train`, :mod:`mne_piunet.bench`, the fine-tune and the demo; nothing here is imported when a
model is applied.
"""

from .engine import (
    DEMO_SOURCE_POS,
    SimulatedBatch,
    SimulationEngine,
    batch_fits,
    batch_maps,
    batch_resolution,
    music_scan,
    network_window,
    normalised_dense,
    sample_resolution,
    simulate,
    simulate_demo_evoked,
)
from .setups import (
    N_BACKGROUND_DIPOLES,
    SETUP_LISTS,
    HeadSetup,
    PreparedSetup,
    background_noise_cov,
    inverse_kernel,
    jittered_info,
    linear_kernel,
    prepare_setup,
    prepare_user_setup,
    setup_forward,
    setup_info,
    setup_list,
)
from .sources import (
    TIME_COURSES,
    SourcePrior,
    add_noise,
    blob_profiles,
    noise_colouring,
    simulate_sources,
    source_atoms,
    source_time_courses,
)

__all__ = [
    "DEMO_SOURCE_POS",
    "HeadSetup",
    "N_BACKGROUND_DIPOLES",
    "PreparedSetup",
    "SETUP_LISTS",
    "SimulatedBatch",
    "SimulationEngine",
    "SourcePrior",
    "TIME_COURSES",
    "add_noise",
    "background_noise_cov",
    "batch_fits",
    "music_scan",
    "batch_maps",
    "batch_resolution",
    "blob_profiles",
    "inverse_kernel",
    "jittered_info",
    "linear_kernel",
    "network_window",
    "noise_colouring",
    "normalised_dense",
    "prepare_setup",
    "prepare_user_setup",
    "sample_resolution",
    "setup_forward",
    "setup_info",
    "setup_list",
    "simulate",
    "simulate_demo_evoked",
    "simulate_sources",
    "source_atoms",
    "source_time_courses",
]
