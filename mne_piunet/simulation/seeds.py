"""Seeds of every simulated data set, in one place, so that no two sets share draws.

A training run draws its samples from its config's ``seed`` (rank r of a
data-parallel run from ``[seed, r]``). Every other simulated set draws from a
stream of its own: the run's seed plus an offset (``*_SEED_OFFSET``), or a
fixed default seed (``*_SEED``) where no run's seed is at hand. A new data set
takes a new constant here, with a comment naming the set it seeds, so that a
clash shows at a glance.

The values are part of every published number (validation scores, acceptance
checks, the model history's tables): changing one changes the samples it
seeds, so results are no longer reproduced bit for bit.
"""

# --------------------------------------------- offsets from a run's config.seed
#: The fixed validation set of a training run or fine-tune
#: (:func:`~mne_piunet.train.training.make_validation_set`): ``config.seed + 10_000``.
VAL_SEED_OFFSET = 10_000
#: The acceptance check of a fine-tune (:func:`~mne_piunet.train.finetune.fine_tune`),
#: on the user's setup: ``config.seed + 20_000``, apart from its training and validation sets.
ACCEPTANCE_SEED_OFFSET = 20_000

# ------------------------------------------------------------ fixed seeds
#: The default seed of :func:`~mne_piunet.train.training.validate_by_sources`
#: (``mne-piunet validate``): the samples on which candidate weights are
#: compared on a config's validation setups, apart from the training and
#: validation streams of every run seeded below 10,000 (the bundled configs'
#: seeds are below 100).
BY_SOURCES_SEED = 20_000
#: The samples of each experiment of the docs (:data:`mne_piunet.bench.experiments.EXPERIMENTS`),
#: by name: every method and model variant of an experiment is scored on the same samples.
EXPERIMENT_SEEDS = {
    "held-out": 1235,
    "in-distribution": 1234,
    "presets": 1236,
    "sensors": 1237,
    "benchmark": 0,
    "data-fit": 31415,
}
#: The single-source time courses of :func:`~mne_piunet.bench.evaluation.peak_floor`.
PEAK_FLOOR_SEED = 2718
#: The samples of :func:`~mne_piunet.bench.evaluation.finetune_benefit` on a user's setup,
#: apart from the fine-tune's own training, validation and acceptance streams.
FINETUNE_BENEFIT_SEED = 4321
