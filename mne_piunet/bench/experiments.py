"""The experiments the docs quote, as named declarative definitions, and the one runner of them all.

An :class:`Experiment` is data: groups of cells (:class:`CellGroup`: setups
crossed with SNRs, numbers of sources and source extents), the methods, the
model variants, the samples per cell and the seed. :func:`run_experiment`
simulates and scores one with
:func:`~mne_piunet.bench.evaluation.score_methods`. :data:`EXPERIMENTS` names
every experiment of the README, the model card and the benchmark page, and
:data:`HEADLINE` those of the headline report (``mne-piunet report``,
:func:`~mne_piunet.bench.report.headline_report`).

Every setup here is held out from training (montages, arrays, skull
conductivities), apart from :data:`IN_DISTRIBUTION_SETUP`, and every seed
comes from :mod:`mne_piunet.simulation.seeds`.
"""

# License: BSD-3-Clause

from __future__ import annotations

from dataclasses import dataclass, replace

from ..simulation import HeadSetup, SourcePrior, setup_list
from ..simulation.seeds import EXPERIMENT_SEEDS
from ..utils._defaults import DEFAULT_LAMBDA2, N_SOURCES_SWEEP
from ..utils._docs import fill_doc
from .evaluation import (
    BENCHMARK_METHODS,
    EVALUATION_METHODS,
    Cell,
    MismatchSetup,
    score_methods,
)

__all__ = (
    "EXPERIMENTS",
    "HEADLINE",
    "HELD_OUT_SETUPS",
    "CellGroup",
    "Experiment",
    "MismatchSetup",
    "run_experiment",
)

# ------------------------------------------------------------------ setups
#: Held out from training: montages, skull conductivity and head never seen.
HELD_OUT_SETUPS = (
    HeadSetup("easycap-M1", "bem", (0.332, 0.0113, 0.332), "surface"),
    HeadSetup("biosemi128", "bem", (0.332, 0.0113, 0.332), "volume"),
)
#: A training setup, for the in-distribution figure.
IN_DISTRIBUTION_SETUP = HeadSetup("easycap-M10", "bem", (0.3, 0.006, 0.3), "volume")
SNRS_DB = (0.0, 5.0, 10.0, 20.0, 30.0)
#: The benchmark's heads and montages, none of them seen in training.
BENCH_MONTAGE = "easycap-M43"
BENCH_CONDUCTIVITY = (0.332, 0.0113, 0.332)
BENCH_MONTAGES = ("GSN-HydroCel-32", "easycap-M43", "biosemi128")
BENCH_SKULLS = (0.0113, 0.0033)
EXTENTS_MM = (10.0, 20.0, 40.0, 80.0)
#: Sensor arrays no training saw: a KIT array (a family held out), and the Kernel Flux
#: OPM layout (triaxial, where training had radial and dual-axis caps).
HELD_OUT_MEG = "kit157"
HELD_OUT_OPM = "flux120"
#: The held-out EEG montage of the sensor-type comparison (as :data:`HELD_OUT_SETUPS`).
HELD_OUT_EEG = "easycap-M1"
#: MEG's usual single-shell inverse on data from the 3-layer BEM.
SINGLE_SHELL = (0.3,)
#: MNE's default 3-layer conductivities, for inverses made without measuring the head.
MNE_DEFAULT_CONDUCTIVITY = (0.3, 0.006, 0.3)


def _on_cortex(montage: str | None, conductivity: tuple[float, ...], meg: str | None = None) -> HeadSetup:
    """A fixed-orientation fsaverage5-cortex setup on the template BEM."""
    return HeadSetup(montage, "bem", conductivity, "surface", meg=meg)


#: The sensor-type comparison: EEG on one held-out head model; MEG and MEG+EEG with data from
#: the 3-layer BEM and the inverse a MEG user makes (single shell, or MNE's default BEM with EEG);
#: the held-out OPM layout on the single shell.
SENSOR_SETUPS = (
    (f"EEG ({HELD_OUT_EEG})", _on_cortex(HELD_OUT_EEG, BENCH_CONDUCTIVITY)),
    (
        f"MEG ({HELD_OUT_MEG})",
        MismatchSetup(
            _on_cortex(None, BENCH_CONDUCTIVITY, HELD_OUT_MEG), _on_cortex(None, SINGLE_SHELL, HELD_OUT_MEG)
        ),
    ),
    (
        f"MEG+EEG ({HELD_OUT_MEG} + {HELD_OUT_EEG})",
        MismatchSetup(
            _on_cortex(HELD_OUT_EEG, BENCH_CONDUCTIVITY, HELD_OUT_MEG),
            _on_cortex(HELD_OUT_EEG, MNE_DEFAULT_CONDUCTIVITY, HELD_OUT_MEG),
        ),
    ),
    (f"OPM ({HELD_OUT_OPM})", _on_cortex(None, SINGLE_SHELL, HELD_OUT_OPM)),
)
#: The paper's setting: a 7 mm volume source space with free orientations, easycap-M10,
#: data from one skull conductivity and the inverse from MNE's default.
PAPER_SETTING = MismatchSetup(
    HeadSetup("easycap-M10", "bem", BENCH_CONDUCTIVITY, "volume"),
    HeadSetup("easycap-M10", "bem", MNE_DEFAULT_CONDUCTIVITY, "volume"),
    spacing_mm=7.0,
)
#: A loose-orientation cortical inverse (MNE's surface default: loose 0.2, depth 0.8).
LOOSE_SETUP = HeadSetup(HELD_OUT_EEG, "bem", BENCH_CONDUCTIVITY, "surface", loose=0.2)
#: A held-out 32-channel montage (32-channel caps gain least).
SPARSE_MONTAGE_SETUP = HeadSetup("GSN-HydroCel-32", "bem", BENCH_CONDUCTIVITY, "surface")


def _from_setup_list(list_name: str, names: tuple[str, ...]) -> tuple[HeadSetup, ...]:
    """The setups of a named list of :data:`~mne_piunet.simulation.SETUP_LISTS`, by name, in that order."""
    setups = {setup.name: setup for setup in map(HeadSetup.from_dict, setup_list(list_name))}
    return tuple(setups[name] for name in names)


#: Validation setups of the ``temporal`` config (never held out): the data-fit step's design is chosen on them.
#: The fixed and free EEG setups of ``SETUP_LISTS["eeg-meg-val"]`` (not its loose and MEG ones).
VALIDATION_SETUPS = _from_setup_list(
    "eeg-meg-val", ("mgh60/bem0.0113/volume", "GSN-HydroCel-64_1.0/bem0.0113/surface")
)

#: The condition every benchmark sweep varies one factor of.
BASE_SNR_DB, BASE_N_SOURCES = 10.0, 1


# ------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class CellGroup:
    """Cells crossing setups, SNRs, numbers of sources and source extents.

    Parameters
    ----------
    sweep : str
        What the group varies, and so what its cells' ``value`` is:
        ``"snr_db"``, ``"n_sources"`` or ``"extent_mm"`` (that factor),
        ``"evaluation"`` (``"SNR <s> dB, <k> sources"``), or any other name
        (``"montage"``, ``"head"``, ``"sensors"``, ``"preset"``: the setup's
        label).
    setups : tuple of (str, HeadSetup | MismatchSetup)
        Labelled setups.
    snrs_db : tuple of float
        SNRs (dB).
    n_sources : tuple of int
        Numbers of sources.
    extents_mm : tuple of float
        Source extents (2 sigma, mm); empty: the prior's range.
    """

    sweep: str
    setups: tuple[tuple[str, HeadSetup | MismatchSetup], ...]
    snrs_db: tuple[float, ...] = (BASE_SNR_DB,)
    n_sources: tuple[int, ...] = (BASE_N_SOURCES,)
    extents_mm: tuple[float, ...] = ()

    def cells(self) -> list[Cell]:
        """The group's cells, setups outermost.

        Returns
        -------
        cells : list of Cell
            One per setup, SNR, number of sources and extent.
        """
        extents = self.extents_mm or (None,)
        cells = []
        for label, setup in self.setups:
            for snr in self.snrs_db:
                for k in self.n_sources:
                    for extent in extents:
                        sigma = SourcePrior().sigma_mm if extent is None else (extent / 2, extent / 2)
                        value = {"snr_db": snr, "n_sources": k, "extent_mm": extent}.get(self.sweep, label)
                        if self.sweep == "evaluation":
                            value = f"SNR {snr:g} dB, {k} sources"
                        cells.append(Cell(self.sweep, value, setup, snr, k, sigma))
        return cells

    def quick(self) -> CellGroup:
        """The group cut to its first setup and the extreme values of each factor (a smoke run).

        Returns
        -------
        group : CellGroup
            The smaller group.
        """

        def ends(values):
            return tuple(dict.fromkeys((values[0], values[-1]))) if values else values

        return replace(
            self,
            setups=self.setups[:1],
            snrs_db=ends(self.snrs_db),
            n_sources=ends(self.n_sources),
            extents_mm=ends(self.extents_mm),
        )


@dataclass(frozen=True)
class Experiment:
    """One experiment of the docs: its cells, methods, model variants, size and seed.

    Parameters
    ----------
    title : str
        What it measures, as a report's heading.
    groups : tuple of CellGroup
        Its cells.
    seed : int
        Seed of its samples (:data:`~mne_piunet.simulation.seeds.EXPERIMENT_SEEDS`).
    methods : tuple of str
        Methods of :data:`~mne_piunet.bench.evaluation.METHODS`.
    n_per_cell : int
        Samples per cell.
    single : bool
        Score single maps (every method sees the centre sample alone) rather
        than 80 ms time courses scored at their centre.
    variants : tuple of (str, dict)
        PIUNet's rows: a label and the :class:`~mne_piunet.PIUNetInverse`
        options of each (the weights come from :func:`run_experiment`).
    table : tuple of str
        The rows' columns its report groups by.
    """

    title: str
    groups: tuple[CellGroup, ...]
    seed: int
    methods: tuple[str, ...] = EVALUATION_METHODS
    n_per_cell: int = 10
    single: bool = False
    variants: tuple[tuple[str, dict], ...] = (("PIUNet", {}),)
    table: tuple[str, ...] = ("setup", "snr_db", "n_sources")

    def cells(self, quick: bool = False) -> list[Cell]:
        """Every cell of the experiment, in group order.

        Parameters
        ----------
        quick : bool
            Each group cut as :meth:`CellGroup.quick` cuts it.

        Returns
        -------
        cells : list of Cell
            The cells.
        """
        return [cell for group in self.groups for cell in (group.quick() if quick else group).cells()]


def _crossed(sweep: str, setups, snrs=SNRS_DB, n_sources=N_SOURCES_SWEEP) -> CellGroup:
    return CellGroup(sweep, tuple(setups), tuple(snrs), tuple(n_sources))


_HELD_OUT = tuple((setup.name, setup) for setup in HELD_OUT_SETUPS)
_SPACES = tuple(
    (space, HeadSetup(BENCH_MONTAGE, "bem", BENCH_CONDUCTIVITY, space)) for space in ("surface", "volume")
)
_MONTAGES = tuple((m, HeadSetup(m, "bem", BENCH_CONDUCTIVITY, "surface")) for m in BENCH_MONTAGES)
_HEADS = tuple(
    (f"BEM, skull {skull:g} S/m", HeadSetup(BENCH_MONTAGE, "bem", (0.332, skull, 0.332), "surface"))
    for skull in BENCH_SKULLS
) + (("4-layer sphere", HeadSetup(BENCH_MONTAGE, "sphere", source_space="surface")),)

#: The data-fit step's A/B; its single-map and validation twins differ in one field each.
_DATA_FIT = Experiment(
    "The network alone against the data-fit step, on the same held-out time courses",
    (_crossed("evaluation", _HELD_OUT, n_sources=(1, 3, 10)),),
    EXPERIMENT_SEEDS["data-fit"],
    methods=("PIUNet",),
    n_per_cell=6,
    variants=(("network alone", dict(data_fit=False)), ("data fit", {})),
)
#: Every experiment the README, the model card and the benchmark page quote, by name.
EXPERIMENTS: dict[str, Experiment] = {
    "held-out": Experiment(
        "Held-out heads and montages: 80 ms time courses scored at their centre",
        (_crossed("evaluation", _HELD_OUT),),
        EXPERIMENT_SEEDS["held-out"],
        n_per_cell=8,
    ),
    "single-maps": Experiment(
        "Held-out heads and montages: single maps (no temporal context)",
        (_crossed("evaluation", _HELD_OUT),),
        EXPERIMENT_SEEDS["held-out"],
        n_per_cell=8,
        single=True,
    ),
    "in-distribution": Experiment(
        "A training setup, one source at 20 dB",
        (_crossed("evaluation", ((IN_DISTRIBUTION_SETUP.name, IN_DISTRIBUTION_SETUP),), (20.0,), (1,)),),
        EXPERIMENT_SEEDS["in-distribution"],
        n_per_cell=40,
    ),
    "sensors": Experiment(
        "Sensor types on held-out arrays and heads (MEG: data and inverse from different head models)",
        (_crossed("sensors", SENSOR_SETUPS, (0.0, 5.0, 10.0, 20.0), (1, 3, 5)),),
        EXPERIMENT_SEEDS["sensors"],
        n_per_cell=10,
        table=("value", "snr_db", "n_sources"),
    ),
    "presets": Experiment(
        "Conditions a user meets: a loose cortical inverse, a 32-channel cap, the paper's setting",
        (
            _crossed("preset", (("loose cortex", LOOSE_SETUP),), (10.0,), (1, 3)),
            _crossed("preset", (("32 channels", SPARSE_MONTAGE_SETUP),), (10.0,), (1,)),
            _crossed("preset", (("paper setting", PAPER_SETTING),), (20.0,), (1, 3)),
        ),
        EXPERIMENT_SEEDS["presets"],
        n_per_cell=20,
        table=("value", "snr_db", "n_sources"),
    ),
    "benchmark": Experiment(
        "Every method of MNE beside PIUNet, one factor varied at a time around one source at 10 dB",
        (
            CellGroup("snr_db", _SPACES, SNRS_DB),
            CellGroup("n_sources", _SPACES, n_sources=N_SOURCES_SWEEP),
            CellGroup("extent_mm", _SPACES, extents_mm=EXTENTS_MM),
            CellGroup("montage", _MONTAGES),
            CellGroup("head", _HEADS),
            CellGroup("sensors", SENSOR_SETUPS),
        ),
        EXPERIMENT_SEEDS["benchmark"],
        methods=BENCHMARK_METHODS,
        n_per_cell=10,
        table=("source_space", "sweep", "value"),
    ),
    "benchmark-summary": Experiment(
        "Every method of MNE beside PIUNet: one source, SNR on cortex and volume, and the sensor types at 10 dB",
        (CellGroup("snr_db", _SPACES, SNRS_DB), CellGroup("sensors", SENSOR_SETUPS)),
        EXPERIMENT_SEEDS["benchmark"],
        methods=BENCHMARK_METHODS,
        n_per_cell=3,
        table=("source_space", "sweep", "value"),
    ),
    # the benchmark's sensor sweep at 5 and 20 dB plus the held-out volume, seeded as the benchmark
    # (an evaluation beside it, never trained or tuned on)
    "peaks": Experiment(
        "One source on held-out arrays and heads: peaks beside MxNE at both alphas",
        (CellGroup("sensors", SENSOR_SETUPS + _HELD_OUT[1:], (5.0, 20.0)),),
        EXPERIMENT_SEEDS["benchmark"],
        methods=("eLORETA", "PIUNet", "MxNE", "MxNE-SURE"),
        table=("value", "snr_db", "n_sources"),
    ),
    "data-fit": _DATA_FIT,
    "data-fit-single-maps": replace(
        _DATA_FIT,
        title="The network alone against the data-fit step, on the same held-out single maps",
        single=True,
    ),
    "data-fit-validation": replace(
        _DATA_FIT,
        title="Design choices of the data-fit step, on the validation setups (time courses; --single for single maps)",
        groups=(
            _crossed("evaluation", tuple((s.name, s) for s in VALIDATION_SETUPS), (5.0, 20.0), (1, 3, 10)),
        ),
    ),
}
#: The experiments of the headline report, in its order.
HEADLINE = ("held-out", "single-maps", "sensors", "benchmark-summary")


# ------------------------------------------------------------------ running
@fill_doc
def run_experiment(
    experiment: str | Experiment,
    weights=None,
    n_per_cell: int | None = None,
    quick: bool = False,
    lambda2: float = DEFAULT_LAMBDA2,
    methods: tuple[str, ...] | None = None,
    single: bool | None = None,
    *,
    verbose: bool | str | int | None = None,
) -> list[dict]:
    """Simulate and score one experiment.

    Parameters
    ----------
    experiment : str | Experiment
        A name of :data:`EXPERIMENTS`, or a definition.
    %(weights)s
    n_per_cell : int | None
        Samples per cell; None: the experiment's own.
    quick : bool
        A smoke run: each group's first setup and extreme values
        (:meth:`CellGroup.quick`).
    %(lambda2)s
    methods : tuple of str | None
        The methods; None: the experiment's own.
    single : bool | None
        Score single maps (True) or time courses (False); None: as the experiment says.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    rows : list of dict
        One per sample and method (:func:`~mne_piunet.bench.evaluation.score_methods`);
        PIUNet's rows carry their variant's label as ``method``.
    """
    from ..inverse import PIUNetInverse

    if isinstance(experiment, str):
        if experiment not in EXPERIMENTS:
            raise ValueError(f"Unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
        experiment = EXPERIMENTS[experiment]
    models = {label: PIUNetInverse(weights, **options) for label, options in experiment.variants}
    return score_methods(
        models,
        experiment.cells(quick),
        experiment.n_per_cell if n_per_cell is None else n_per_cell,
        experiment.seed,
        lambda2,
        experiment.methods if methods is None else tuple(methods),
        single=experiment.single if single is None else single,
        verbose=verbose,
    )
