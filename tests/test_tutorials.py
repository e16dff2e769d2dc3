"""The tutorials run as plain scripts (offline, Agg backend).

The quickstart runs in every test session. The real-data tutorial's pipeline
(its template inverses for EEG, MEG and MEG+EEG and PIUNet's estimates of the
same window means) runs in every session in ``test_real_data.py``, which checks
where the visual P100 lies; the script itself, with MNE's own eLORETA beside
every estimate (minutes on 2 cores), is marked ``slow`` with the three that
build extra forward models or train. They run with
``python -m pytest tests --run-slow``.
"""

import runpy
from pathlib import Path

import numpy as np
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


@pytest.mark.parametrize(
    "name",
    [
        "plot_01_quickstart.py",
        pytest.param("plot_02_real_data.py", marks=pytest.mark.slow),
        pytest.param("plot_03_your_inverse.py", marks=pytest.mark.slow),
        pytest.param("plot_04_train_your_own.py", marks=pytest.mark.slow),
        pytest.param("plot_05_meg_comparison.py", marks=pytest.mark.slow),
    ],
)
def test_tutorial_runs(name, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("PIUNET_TUTORIAL_MINUTES", "0.3")
    namespace = {}
    try:
        namespace = runpy.run_path(str(TUTORIALS / name), run_name="__main__")
    except SystemExit as exc:  # the real-data tutorial exits cleanly without data
        assert exc.code in (0, None)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    out = capsys.readouterr().out
    if not namespace:  # exited early: it says why
        assert "nothing to show" in out
        return
    # whatever the tutorial computes last is a standard estimate on the model's grid
    import mne

    piu, stc = namespace["piu"], namespace["stc"]
    assert isinstance(stc, (mne.VolSourceEstimate, mne.VolVectorSourceEstimate))
    np.testing.assert_array_equal(stc.vertices[0], piu.src[0]["vertno"])
    assert np.all(np.isfinite(stc.data)) and stc.data.max() > 0
    if name == "plot_01_quickstart.py":  # one printed peak error per method, each a distance in the head
        errors = [
            float(line.split("peak")[1].split("mm")[0])
            for line in out.splitlines()
            if "from the true" in line
        ]
        assert len(errors) == 4 and all(0 <= e < 200 for e in errors)
    if name == "plot_05_meg_comparison.py":  # one peak per method of MNE's comparison, and PIUNet's
        methods = [line.split()[0] for line in out.splitlines() if " peak at " in line]
        assert methods == ["MNE", "dSPM", "sLORETA", "eLORETA", "PIUNet"]
