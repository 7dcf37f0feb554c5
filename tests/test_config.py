"""Tests of pointea.config: YAML round trip, recipes, dotted overrides and error messages."""

from __future__ import annotations

import pytest
import yaml

from pointea.config import (
    Config,
    available_configs,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_config_path,
    save_config,
)
from pointea.data.catalog import DATASETS as CATALOG

RECIPES = ("synthetic-cls", "synthetic-partseg", "modelnet40-cls", "modelnet40-cls-cpu", "modelnet40-cls-cpu-long",
           "modelnet40-cls-cpu-robust", "shapenetpart-partseg")


def test_shipped_recipes_load():
    import torch

    from pointea.engine.train import training_augmentation
    from pointea.models import build_model

    assert set(RECIPES) <= set(available_configs())
    for name in available_configs():  # every shipped recipe builds its model and augmentation
        config = load_config(name)
        assert isinstance(config, Config)
        assert config.train.epochs >= 1
        build_model(config.model.preset, **config.model.overrides)
        training_augmentation(config, torch.Generator().manual_seed(0), num_classes=40)
    assert load_config("shapenetpart-partseg").data.num_points == 2048
    assert load_config("modelnet40-cls").train.optimizer == "sgd"


@pytest.mark.parametrize("recipe", ["modelnet40-cls-cpu-long", "modelnet40-cls-cpu-robust"])
def test_150_minute_recipes_budget_their_epochs(recipe):
    # on a CPU that trains them in fp32 their full schedules take over three hours
    budget = load_config(recipe).train.time_budget_s
    assert budget is not None and 0 < budget <= 150 * 60


def test_yaml_round_trip(tmp_path):
    config = load_config("synthetic-cls", ["train.lr=0.005", "model.overrides.dropout=0.1"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    again = load_config(path)
    assert again == config
    assert config_to_dict(again) == yaml.safe_load(path.read_text())


def test_overrides_parse_yaml_values():
    config = load_config(None, [
        "train.lr=0.01",
        "train.epochs=3",
        "train.grad_clip=null",
        "train.augmentation=[{name: jitter, sigma: 0.02}]",
        "data.categories=[Airplane, Chair]",
        "model.overrides.embed_dims=[16, 16]",
    ])
    assert config.train.lr == 0.01 and isinstance(config.train.lr, float)
    assert config.train.epochs == 3
    assert config.train.grad_clip is None
    assert config.train.augmentation == [{"name": "jitter", "sigma": 0.02}]
    assert config.data.categories == ["Airplane", "Chair"]
    assert config.model.overrides == {"embed_dims": [16, 16]}


def test_int_accepted_for_float_but_not_bool():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ValueError, match=r"train\.lr must be of type float, got True"):
        load_config(None, ["train.lr=true"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError) as info:
        load_config(None, ["train.learning_rate=0.1"])
    message = str(info.value)
    assert "train.learning_rate" in message
    for key in ("lr", "batch_size", "weight_decay", "label_smoothing"):
        assert key in message


def test_unknown_section_and_bad_form():
    with pytest.raises(ValueError, match="valid sections"):
        load_config(None, ["optim.lr=0.1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ValueError, match="unknown section 'lr'"):
        load_config(None, ["lr=0.1"])


def test_bad_value_type_is_clear():
    with pytest.raises(ValueError, match=r"train\.epochs must be of type int, got 'ten' \(str\)"):
        load_config(None, ["train.epochs=ten"])
    with pytest.raises(ValueError, match=r"train\.augmentation must be a list"):
        load_config(None, ["train.augmentation=5"])
    with pytest.raises(ValueError, match=r"model\.overrides must be a mapping"):
        config_from_dict({"model": {"overrides": [1, 2]}})


def test_bad_choices_name_valid_ones():
    with pytest.raises(ValueError, match="adamw, sgd"):
        load_config(None, ["train.optimizer=adam"])
    with pytest.raises(ValueError, match="synthetic, modelnet40, modelnet10, shapenetpart"):
        load_config(None, ["data.name=kitti"])
    with pytest.raises(ValueError, match="rotate_up"):
        load_config(None, ["train.augmentation=[{name: flip}]"])
    with pytest.raises(ValueError, match="min_lr"):
        load_config(None, ["train.min_lr=1.0"])


def test_no_way_to_select_on_test():
    with pytest.raises(ValueError, match="validation"):
        load_config(None, ["train.select_metric=test_accuracy"])
    assert "test" not in " ".join(config_to_dict(Config())["data"])


def test_unknown_key_in_yaml_file_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  lr_max: 0.1\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "lr_max" in str(info.value)


def test_missing_recipe_lists_shipped_ones():
    with pytest.raises(FileNotFoundError) as info:
        resolve_config_path("no-such-recipe")
    assert "synthetic-cls" in str(info.value)


def test_apply_overrides_returns_copy():
    base = Config()
    changed = apply_overrides(base, ["train.epochs=7"])
    assert base.train.epochs == 100 and changed.train.epochs == 7


@pytest.mark.parametrize("override, message", [
    # many keys in 'train': the close match only, no list
    ("train.lrr=0.01", "overrides: unknown key train.lrr; did you mean train.lr?"),
    ("model.prest=pointnet-cls",
     "overrides: unknown key model.prest; valid keys in 'model': preset, overrides; did you mean model.preset?"),
    ("data.name=modelnet04", f"overrides: data.name is 'modelnet04'; valid choices: {', '.join(CATALOG)}; "
     "did you mean modelnet40 or modelnet10?"),
    ("train.optimizer=adam", "overrides: train.optimizer is 'adam'; valid choices: adamw, sgd; did you mean adamw?"),
    ("model.overrides.dropuot=0.3", "overrides: unknown key model.overrides.dropuot; did you mean model.overrides.dropout?"),
    ("model.overrides.attention=mhae",
     "overrides: model.overrides.attention is 'mhae'; valid choices: ea, mhea, sa, ssa, oa, none; did you mean mhea?"),
])
def test_misspelt_keys_and_values_suggest_the_close_one(override, message):
    with pytest.raises(ValueError) as info:
        load_config("synthetic-cls", [override])
    assert str(info.value) == message


def test_misspelt_preset_fails_at_load_with_suggestion():
    with pytest.raises(ValueError) as info:
        load_config("synthetic-cls", ["model.preset=pointea-cls-mheaa"])
    message = str(info.value)
    assert message.startswith("overrides: model.preset is 'pointea-cls-mheaa'; valid choices: pointea-cls, ")
    assert message.endswith("; did you mean pointea-cls-mhea?")


def test_model_section_of_a_yaml_file_is_checked_at_load(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  preset: pointnet-cls\n  overrides: {head_dim: [128]}\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: unknown key model.overrides.head_dim; did you mean model.overrides.head_dims?"


def test_misspelt_recipe_name_suggests_the_recipe():
    with pytest.raises(FileNotFoundError) as info:
        load_config("modelnet40-cls-cup")
    message = str(info.value)
    assert message.startswith("config 'modelnet40-cls-cup' is neither a file nor a shipped recipe; shipped recipes: ")
    assert message.endswith("; did you mean modelnet40-cls-cpu?")
    with pytest.raises(FileNotFoundError) as info:
        load_config("configs/modelnet40-cls-cup.yaml")  # a path is not matched against recipe names
    assert "did you mean" not in str(info.value)


def test_augmentation_probability_p_wraps_an_entry_and_is_checked():
    import torch

    from pointea.data.transforms import RandomApply, RandomJitter
    from pointea.engine.train import training_augmentation

    config = load_config(None, ["train.augmentation=[{name: jitter, sigma: 0.02, p: 0.25}]"])
    step = training_augmentation(config, torch.Generator()).transforms[0]
    assert isinstance(step, RandomApply) and step.p == 0.25
    assert isinstance(step.transform, RandomJitter) and step.transform.sigma == 0.02
    with pytest.raises(ValueError, match=r"train\.augmentation\[0\] \(jitter\): p must be a probability in \[0, 1\], got 2"):
        load_config(None, ["train.augmentation=[{name: jitter, p: 2}]"])
    with pytest.raises(ValueError, match="a mixing entry has its own probability argument"):
        load_config(None, ["train.augmentation=[{name: rsmix, p: 0.5}]"])
