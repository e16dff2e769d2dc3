"""apply_piunet_many: recordings spread over joblib workers give the serial estimates."""

import mne
import numpy as np
import pytest


def test_two_local_workers_match_a_serial_loop(simulated_evoked, piu, tiny_weights, volume_setup):
    from mne_piunet import apply_piunet_many

    inv = volume_setup.inverse_operator
    evoked = [simulated_evoked(volume_setup, n_times=3, seed=s)[0] for s in range(3)]
    raw = mne.io.RawArray(np.concatenate([e.data for e in evoked], axis=1), evoked[0].info, verbose=False)
    epochs = mne.EpochsArray(np.stack([e.data for e in evoked]), evoked[0].info, verbose=False)
    recordings = [*evoked, raw, epochs]
    stcs = apply_piunet_many(
        recordings, inv, 1 / 9, n_jobs=2, weights=tiny_weights, device="cpu", precision="float32"
    )
    assert len(stcs) == len(recordings)

    def assert_close(a, b):  # other torch threads in the workers: equal to fp32 round-off
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())

    for stc, e in zip(stcs[:3], evoked):
        assert_close(stc.data, piu.apply(e, inv, 1 / 9).data)
    assert_close(stcs[3].data, piu.apply_raw(raw, inv, 1 / 9).data)
    assert stcs[3].tmin == raw.times[0]
    for stc, expected in zip(stcs[4], piu.apply_epochs(epochs, inv, 1 / 9)):
        assert_close(stc.data, expected.data)
    with pytest.raises(ValueError, match="return_generator=True cannot cross to worker processes"):
        apply_piunet_many([raw, raw], inv, 1 / 9, n_jobs=2, return_generator=True)


def test_bad_input_names_the_fix(simulated_evoked, volume_setup):
    from mne_piunet import apply_piunet_many

    evoked, _ = simulated_evoked(volume_setup, n_times=2)
    inv = volume_setup.inverse_operator
    with pytest.raises(ValueError, match="2 recordings but 3 inverse operators"):
        apply_piunet_many([evoked, evoked], [inv] * 3)
    with pytest.raises(TypeError, match=r"recordings\[1\] must be an Evoked, Epochs or Raw"):
        apply_piunet_many([evoked, evoked.data], inv)
