"""The demo: one known source on the template head, localised by dSPM, sLORETA, eLORETA and PIUNet.

What ``mne-piunet demo`` runs and prints: :func:`localise_demo` simulates the
source (:func:`mne_piunet.simulation.simulate_demo_evoked`) and applies each
inverse, :func:`demo_summary` reports the localisation errors and
:func:`plot_demo` draws the maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import mne
import numpy as np
from matplotlib.figure import Figure

from .inverse import PIUNetInverse
from .simulation import HeadSetup, prepare_setup, simulate_demo_evoked
from .utils._checks import check_positive, validate_type
from .utils._defaults import DEFAULT_LAMBDA2

__all__ = ["DEMO_METHODS", "DemoResult", "demo_summary", "localise_demo", "plot_demo"]

#: The methods the demo compares, MNE's first.
DEMO_METHODS = ("dSPM", "sLORETA", "eLORETA", "PIUNet")


@dataclass
class DemoResult:
    """The demo's simulation and each method's estimate and localisation error.

    Parameters
    ----------
    montage : str
        The montage.
    snr_db : float
        SNR at the peak (dB).
    evoked : mne.Evoked
        The simulated data.
    centre : array, shape (3,)
        The true source (m, template MRI coordinates).
    t_peak : float
        Time of the largest global field power (s).
    stcs : dict of str to VolSourceEstimate
        Each method's estimate.
    errors : dict of str to float
        Distance (mm) between each estimate's peak at ``t_peak`` and ``centre``.
    """

    montage: str
    snr_db: float
    evoked: mne.Evoked
    centre: np.ndarray
    t_peak: float
    stcs: dict
    errors: dict[str, float]


def localise_demo(
    piu, montage: str = "biosemi64", snr_db: float = 10.0, lambda2: float = DEFAULT_LAMBDA2
) -> DemoResult:
    """Simulate the demo's source and localise it with dSPM, sLORETA, eLORETA and PIUNet.

    Parameters
    ----------
    piu : PIUNetInverse
        The model.
    montage : str
        Built-in MNE montage, on the template BEM with the grid as a
        free-orientation source space.
    snr_db : float
        SNR at the peak (dB).
    lambda2 : float
        Regularisation of every method.

    Returns
    -------
    result : DemoResult
        The data, estimates and errors.
    """
    validate_type(piu, PIUNetInverse, "piu", "PIUNetInverse")
    validate_type(montage, str, "montage", fix="Name a built-in MNE montage, e.g. 'biosemi64'.")
    validate_type(snr_db, "numeric", "snr_db", "int or float")
    lambda2 = check_positive(lambda2, "lambda2", "e.g. 1 / SNR**2 = 1/9")
    setup = prepare_setup(HeadSetup(montage), piu.grid)
    evoked, centre = simulate_demo_evoked(setup, snr_db)
    inv = setup.inverse_operator
    stcs = {m: mne.minimum_norm.apply_inverse(evoked, inv, lambda2, m) for m in DEMO_METHODS[:-1]}
    stcs["PIUNet"] = piu.apply(evoked, inv, lambda2)
    t_peak = float(evoked.times[np.argmax(np.sum(evoked.data**2, axis=0))])
    # the vertices of a grid inverse are the grid's own (template MRI frame)
    errors = {}
    for name, stc in stcs.items():
        values = np.abs(stc.data[:, stc.time_as_index(t_peak)[0]])
        errors[name] = float(np.linalg.norm(piu.grid.pos[np.argmax(values)] - centre) * 1e3)
    return DemoResult(montage, snr_db, evoked, centre, t_peak, stcs, errors)


def demo_summary(result: DemoResult) -> str:
    """The demo's source and each method's localisation error, as text.

    Parameters
    ----------
    result : DemoResult
        The output of :func:`localise_demo`.

    Returns
    -------
    text : str
        One line on the simulation, one per method.
    """
    validate_type(result, DemoResult, "result", "DemoResult", fix="Pass the output of localise_demo.")
    lines = [
        f"True source at {np.round(result.centre * 1e3)} mm (MNI), SNR {result.snr_db} dB, {result.montage}; "
        f"peak time {result.t_peak:.3f} s"
    ]
    lines += [f"  {name:8s} localisation error {error:5.1f} mm" for name, error in result.errors.items()]
    return "\n".join(lines)


def plot_demo(result: DemoResult, piu) -> Figure:
    """Glass-brain views of each method's map at the peak time, the true source in cyan.

    Parameters
    ----------
    result : DemoResult
        The output of :func:`localise_demo`.
    piu : PIUNetInverse
        The model whose source space the maps live on.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One row per method.
    """
    validate_type(result, DemoResult, "result", "DemoResult", fix="Pass the output of localise_demo.")
    validate_type(piu, PIUNetInverse, "piu", "PIUNetInverse")
    from nilearn.plotting import plot_glass_brain

    fig = Figure(figsize=(8, 2.6 * len(result.stcs)))
    axes = fig.subplots(len(result.stcs), 1)
    for ax, (name, stc) in zip(axes, result.stcs.items()):
        values = np.abs(stc.data[:, stc.time_as_index(result.t_peak)[0]])
        img = stc.copy().crop(result.t_peak, result.t_peak).as_volume(piu.src, mri_resolution=False)
        display = plot_glass_brain(
            img,
            axes=ax,
            display_mode="lyrz",
            title=f"{name}: {result.errors[name]:.0f} mm",
            cmap="hot",
            vmin=0,
            vmax=values.max(),
            threshold=0.25 * values.max(),
            plot_abs=True,
            symmetric_cbar=False,
            colorbar=False,
        )
        display.add_markers([result.centre * 1e3], marker_color="cyan", marker_size=40)
    fig.suptitle("Simulated source (cyan) and each method's map at the peak time")
    return fig
