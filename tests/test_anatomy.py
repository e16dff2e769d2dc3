"""Template anatomy (BEM surfaces, subjects folder, montages) and the on-disk cache."""

import json

import mne
import numpy as np
import pytest

from mne_piunet import _cache, anatomy


def test_bem_surfaces_nested_with_plausible_skull():
    inner, outer, scalp = anatomy.template_bem_surfaces(ico=3)
    assert len(inner["rr"]) == len(outer["rr"]) == len(scalp["rr"]) == 642
    centre = inner["rr"].mean(axis=0)
    r = [np.linalg.norm(s["rr"] - centre, axis=1) for s in (inner, outer, scalp)]
    # same directions, strictly nested, skull 2-7 mm thick
    assert np.all(r[0] < r[1]) and np.all(r[1] < r[2])
    skull = r[1] - r[0]
    assert skull.min() >= 0.002 - 1e-9 and skull.max() <= 0.007 + 1e-9
    # the inner skull keeps the size of MNE's fsaverage inner skull (~150 mm wide)
    width = np.ptp(inner["rr"][:, 0])
    assert 0.13 < width < 0.17


def test_icosphere_is_closed_and_outward():
    rr, tris = anatomy._icosphere(2)
    assert len(rr) == 162 and len(tris) == 320
    # Euler characteristic of a closed sphere
    edges = np.unique(
        np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1), axis=0
    )
    assert len(rr) - len(edges) + len(tris) == 2
    normals = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    assert np.all(np.einsum("ij,ij->i", normals, rr[tris].mean(axis=1)) > 0)


def test_subjects_dir_has_mni_t1_and_talairach():
    sd = anatomy.template_subjects_dir()
    subj = sd / "fsaverage"
    for rel in ("mri/T1.mgz", "mri/transforms/talairach.xfm", "bem/inner_skull.surf", "surf/lh.white"):
        assert (subj / rel).is_file(), rel
    import nibabel as nib

    img = nib.load(subj / "mri" / "T1.mgz")
    assert img.shape == (256, 256, 256)
    # surface RAS == scanner RAS (centre at 0), i.e. MNI coordinates
    np.testing.assert_allclose(img.header.get_vox2ras_tkr(), img.affine, atol=1e-4)
    tal = mne.read_talxfm("fsaverage", sd)
    np.testing.assert_allclose(tal["trans"], np.eye(4))


def test_montage_validation_lists_valid_names():
    with pytest.raises(ValueError, match="Valid built-in montages are: .*biosemi64"):
        anatomy.check_montage("biosemi65")
    info = anatomy.montage_info("biosemi32")
    assert len(info["ch_names"]) == 32
    assert any(p["desc"] == "Average EEG reference" for p in info["projs"])


@pytest.mark.parametrize(
    "cond, match",
    [
        ((0.3, 0.5, 0.3), "skull conductivity must be within"),
        ((0.3, 0.006), "brain, skull, scalp"),
        ((5.0, 0.006, 0.3), "brain"),
    ],
)
def test_conductivity_out_of_range(cond, match):
    with pytest.raises(ValueError, match=match):
        anatomy.check_conductivity(cond)


def test_cache_rebuilds_corrupted_and_stale_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("MNE_PIUNET_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return np.arange(5.0)

    def write(f, x):
        np.save(f, x)

    def read(f):
        return np.load(f)

    args = ("thing", dict(a=1), ".npy", build, lambda f, x: write(open(f, "wb"), x), read)
    np.testing.assert_array_equal(_cache.cached(*args), np.arange(5.0))
    _cache.cached(*args)
    assert len(calls) == 1  # second call read the cache
    (fname,) = (tmp_path / "thing").glob("*.npy")
    fname.write_bytes(b"garbage")  # corrupted: checksum no longer matches
    np.testing.assert_array_equal(_cache.cached(*args), np.arange(5.0))
    assert len(calls) == 2
    meta = fname.with_suffix(".json")
    meta.write_text("{not json")  # unreadable sidecar
    _cache.cached(*args)
    assert len(calls) == 3
    # other parameters -> another key -> rebuilt
    _cache.cached("thing", dict(a=2), ".npy", build, args[4], read)
    assert len(calls) == 4
    assert json.loads(meta.read_text())["params"] == dict(a=1)


@pytest.mark.parametrize("library", ["mne", "nilearn"])
def test_cache_rebuilds_when_mne_or_nilearn_changes(tmp_path, monkeypatch, library):
    """Forwards, kernels and grids are built by MNE from nilearn's template: a new version rebuilds."""
    import importlib

    module = importlib.import_module(library)
    monkeypatch.setenv("MNE_PIUNET_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return np.arange(3.0)

    args = ("thing", dict(a=1), ".npy", build, np.save, np.load)
    _cache.cached(*args)
    _cache.cached(*args)
    assert len(calls) == 1
    subjects = anatomy._subjects_folder_name()
    old = module.__version__
    monkeypatch.setattr(module, "__version__", old + ".post1")
    _cache.cached(*args)
    assert len(calls) == 2  # same parameters, another library version: rebuilt
    assert anatomy._subjects_folder_name() != subjects
    metas = [json.loads(f.read_text()) for f in (tmp_path / "thing").glob("*.json")]
    assert sorted(m["libs"][library] for m in metas) == [old, old + ".post1"]
    monkeypatch.setattr(module, "__version__", old)
    _cache.cached(*args)
    assert len(calls) == 2  # back on the first version: its entry is still valid


def test_one_file_checksum_for_cache_and_weights(tmp_path):
    """The cache and the weight files share one sha256 helper."""
    import hashlib

    from mne_piunet import network

    assert network.file_sha256 is _cache.file_sha256
    fname = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 << 20)  # several 1 MiB blocks
    fname.write_bytes(data)
    assert _cache.file_sha256(fname) == hashlib.sha256(data).hexdigest()


def test_sphere_avoids_sources_at_centre():
    info = anatomy.montage_info("biosemi32")
    sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
    at_centre = np.array([sphere["r0"], sphere["r0"] + [0.01, 0, 0]])
    moved = anatomy.make_template_sphere(info, avoid=at_centre, contain=at_centre)
    assert np.linalg.norm(at_centre - moved["r0"], axis=1).min() >= 1e-3
    src = mne.setup_volume_source_space(
        pos=dict(rr=at_centre, nn=np.tile([0, 0, 1.0], (2, 1))), verbose=False
    )
    fwd = mne.make_forward_solution(info, None, src, moved, eeg=True, meg=False, verbose=False)
    assert np.all(np.isfinite(fwd["sol"]["data"]))
