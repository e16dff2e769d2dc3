"""Training configs: bundled configs that name their parent and their setup lists, and users' own JSON files."""

import json
from dataclasses import asdict, fields

import pytest

from mne_piunet.train.training import BUNDLED_CONFIGS


def test_bundled_configs_are_the_config_files_beside_the_weights():
    """Every ``NAME_config.json`` shipped with the weights is a bundled config, and none is missing."""
    from mne_piunet.train.training import bundled_config

    folder = bundled_config("train").parent
    assert sorted(f.name.removesuffix("_config.json") for f in folder.glob("*_config.json")) == sorted(
        BUNDLED_CONFIGS
    )


def _raw(name):
    from mne_piunet.train.training import bundled_config

    return json.loads(bundled_config(name).read_text())


@pytest.mark.parametrize("name", BUNDLED_CONFIGS)
def test_bundled_config_is_its_parent_but_for_what_it_sets(name):
    from mne_piunet.simulation import SETUP_LISTS, setup_list
    from mne_piunet.train.training import TrainConfig, read_config

    raw, config = _raw(name), read_config(name)
    # setup lists are written once, in SETUP_LISTS: a bundled config names them
    for key in ("train_setups", "val_setups"):
        if key in raw:
            assert isinstance(raw[key], str) and raw[key] in SETUP_LISTS, (name, key)
            assert getattr(config, key) == setup_list(raw[key])
    parent = read_config(raw["parent"]) if "parent" in raw else TrainConfig()
    assert ("parent" in raw) == (name != "train")  # stage 1 is the root of every chain
    for field in fields(TrainConfig):
        value = getattr(config, field.name)
        if field.name not in raw:
            assert value == getattr(parent, field.name), (name, field.name)
        elif field.name not in ("train_setups", "val_setups"):
            assert value == raw[field.name], (name, field.name)
            # a child holds only what differs from its parent
            assert "parent" not in raw or value != getattr(parent, field.name), (name, field.name)


def test_every_bundled_config_reaches_stage_1_and_each_name_is_used():
    from mne_piunet.simulation import SETUP_LISTS
    from mne_piunet.train.training import BUNDLED_CONFIGS

    used = set()
    for name in BUNDLED_CONFIGS:
        chain = [name]
        while "parent" in _raw(chain[-1]):
            chain.append(_raw(chain[-1])["parent"])
            assert len(chain) <= len(BUNDLED_CONFIGS), chain
        assert chain[-1] == "train", chain
        used |= {v for k, v in _raw(name).items() if k in ("train_setups", "val_setups")}
    assert used == set(SETUP_LISTS)


def test_unknown_setup_list_or_parent_names_the_choices(tmp_path, monkeypatch):
    from mne_piunet.train import training
    from mne_piunet.train.training import TrainConfig, read_config

    with pytest.raises(ValueError, match=r"Unknown setup list 'eeg-tarin'.*eeg-train, .*eeg-meg-val"):
        TrainConfig(train_setups="eeg-tarin")
    fname = tmp_path / "mine.json"
    fname.write_text(json.dumps({"parent": "continue", "val_setups": "meg"}))
    with pytest.raises(ValueError, match=r"Unknown setup list 'meg'.*eeg-basic-train"):
        read_config(fname)
    fname.write_text(json.dumps({"parent": "continued", "seed": 1}))
    with pytest.raises(
        ValueError, match=r"Unknown parent config 'continued' in .*mine.json.*train, finetune, .*temporal"
    ):
        read_config(fname)
    fname.write_text(json.dumps({"parent": "continue", "sed": 1}))
    with pytest.raises(ValueError, match=r"Unknown training config keys \['sed'\]"):
        read_config(fname)
    # parents that loop are refused, not followed for ever
    (tmp_path / "train.json").write_text(json.dumps({"parent": "finetune"}))
    (tmp_path / "finetune.json").write_text(json.dumps({"parent": "train", "seed": 2}))
    monkeypatch.setattr(training, "bundled_config", lambda name: tmp_path / f"{name}.json")
    fname.write_text(json.dumps({"parent": "train"}))
    with pytest.raises(ValueError, match="form a loop: train -> finetune -> train"):
        read_config(fname)


def test_inline_setup_lists_still_work(tmp_path):
    from mne_piunet.simulation import SETUP_LISTS
    from mne_piunet.train.training import TrainConfig, read_config

    # a config of the old form (every field inline, as runs' stored configs are)
    # loads to the same config as the bundled one it copies
    temporal = read_config("temporal")
    fname = tmp_path / "old.json"
    fname.write_text(json.dumps(asdict(temporal)))
    assert read_config(fname) == temporal
    assert isinstance(temporal.train_setups, list) and isinstance(
        temporal.train_setups[0]["conductivity"], list
    )
    # a user's child config with its own setups inline, the rest from its parent
    mine = [dict(montage="biosemi64", source_space="surface", loose=0.2)]
    fname.write_text(json.dumps({"parent": "continue", "train_setups": mine, "seed": 7}))
    config = read_config(fname)
    assert config.train_setups == mine and config.seed == 7
    assert asdict(config) == asdict(read_config("continue")) | dict(train_setups=mine, seed=7)
    # a named list is copied, so changing a config's setups leaves the name's list as it was
    config = TrainConfig(train_setups="eeg-train")
    config.train_setups[0]["montage"] = "mgh60"
    assert SETUP_LISTS["eeg-train"][0]["montage"] == "easycap-M10"


def test_seeds_have_one_home_and_keep_their_values():
    from mne_piunet.simulation import seeds
    from mne_piunet.train import finetune, training

    # changing one changes the samples behind published numbers
    assert (seeds.VAL_SEED_OFFSET, seeds.ACCEPTANCE_SEED_OFFSET, seeds.BY_SOURCES_SEED) == (
        10_000,
        20_000,
        20_000,
    )
    assert training.VAL_SEED_OFFSET is seeds.VAL_SEED_OFFSET
    assert finetune.ACCEPTANCE_SEED_OFFSET is seeds.ACCEPTANCE_SEED_OFFSET
    assert training.validate_by_sources.__defaults__[-1] == seeds.BY_SOURCES_SEED
