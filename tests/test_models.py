"""Tests of pointea.models: every preset, configs, invariances, padding, FLOPs, export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from pointea.config import load_config
from pointea.data.shapenetpart import SHAPENETPART_CATEGORY_PARTS
from pointea.models import (
    PRESETS,
    ClassificationModel,
    ModelConfig,
    SegmentationModel,
    build_model,
    count_flops,
    count_module_flops,
    count_parameters,
    model_config_from_dict,
    model_config_to_dict,
)

SYNTHETIC_PARTS = [[0], [1, 2], [3, 4, 5]]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_inputs(model, batch_size: int, num_points: int) -> tuple:
    points = torch.randn(batch_size, num_points, model.config.in_channels)
    if model.config.task == "segmentation":
        return points, torch.randint(0, len(model.config.category_parts), (batch_size,))
    return (points,)


def expected_shape(model, batch_size: int, num_points: int) -> tuple:
    if model.config.task == "segmentation":
        return (batch_size, num_points, model.config.num_parts)
    return (batch_size, model.config.num_classes)


@pytest.mark.parametrize("num_points", [256, 1024])
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_forward_backward(name, num_points):
    model = build_model(name)
    inputs = make_inputs(model, 2, num_points)
    out = model(*inputs)
    assert out.shape == expected_shape(model, 2, num_points)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {pname}"


def test_unknown_preset_and_field_raise_value_errors():
    with pytest.raises(ValueError, match="unknown model preset 'pointnet3'; valid: pointea-cls, "):
        build_model("pointnet3")
    with pytest.raises(ValueError, match=r"unknown model config field 'widht'"):
        build_model("pointea-cls", widht=3)
    with pytest.raises(ValueError, match="unknown attention 'lstm'; valid: ea, mhea"):
        build_model("pointea-cls", attention="lstm")
    with pytest.raises(ValueError, match="stage_samples must be all 0"):
        build_model("pointea-partseg", stage_samples=(512,))


def test_misspelt_preset_field_and_choice_suggest_the_close_name():
    with pytest.raises(ValueError) as info:
        build_model("pointea-cls-mheaa")
    # few presets: all are listed, then the one that is close
    assert str(info.value).endswith("pointnet-partseg; did you mean pointea-cls-mhea?")
    with pytest.raises(ValueError) as info:
        build_model("pointea-cls", dropuot=0.1)
    # many fields: the list is left out behind the close match, the message stays one line
    assert str(info.value) == "unknown model config field 'dropuot'; did you mean dropout?"
    with pytest.raises(ValueError, match="unknown pooling 'maxmaen'; valid: max, mean, maxmean; did you mean maxmean?"):
        build_model("pointea-cls", pooling="maxmaen")


def test_overrides_and_model_classes():
    model = build_model("pointea-cls", num_classes=10, in_channels=6, attention="sa")
    assert isinstance(model, ClassificationModel)
    assert (model.config.num_classes, model.config.in_channels, model.config.attention) == (10, 6, "sa")
    assert model(torch.randn(2, 300, 6)).shape == (2, 10)
    assert PRESETS["pointea-cls"].num_classes == 40  # presets are never modified


def test_config_round_trip_through_yaml_and_state_dict():
    model = build_model("pointea-partseg", category_parts=SYNTHETIC_PARTS)
    data = yaml.safe_load(yaml.safe_dump(model_config_to_dict(model.config)))
    config = model_config_from_dict(data)
    assert config == model.config
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    inputs = make_inputs(model, 2, 128)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(*inputs), model(*inputs))
    with pytest.raises(ValueError, match=r"unknown model config keys \['colour'\]"):
        model_config_from_dict({**data, "colour": "red"})


def test_segmentation_category_table_is_derived_and_restricts_predictions():
    default = build_model("pointea-partseg")
    assert default.config.num_classes == 16 and default.config.num_parts == 50
    assert default.config.category_parts == [list(parts) for parts in SHAPENETPART_CATEGORY_PARTS]
    model = build_model("pointea-partseg", category_parts=SYNTHETIC_PARTS).eval()
    assert isinstance(model, SegmentationModel)
    assert (model.config.num_classes, model.config.num_parts) == (3, 6)
    points, category = torch.randn(3, 64, 3), torch.tensor([0, 1, 2])
    logits = model.restrict_to_category(model(points, category), category)
    assert logits.shape == (3, 64, 6)
    for b, parts in enumerate(SYNTHETIC_PARTS):
        assert set(logits[b].argmax(-1).unique().tolist()) <= set(parts)
        outside = [p for p in range(6) if p not in parts]
        assert torch.isneginf(logits[b][:, outside]).all()
    with pytest.raises(ValueError, match=r"category ids must lie in \[0, 3\)"):
        model(points, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="num_parts=4 but category_parts uses part id 5"):
        build_model("pointea-partseg", category_parts=SYNTHETIC_PARTS, num_parts=4)


@pytest.mark.parametrize("name", ["pointea-cls", "pointea-cls-sa", "pointnet-cls"])
def test_classification_is_permutation_invariant(name):
    # Farthest point sampling starts at the point farthest from the centroid, so the sampled set
    # does not depend on the order of the points (N = 1,024 > the 512 sampled centres).
    model = build_model(name).eval()
    points = torch.randn(2, 1024, 3)
    perm = torch.randperm(1024)
    torch.testing.assert_close(model(points[:, perm]), model(points), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["pointea-partseg", "pointnet-partseg"])
def test_segmentation_is_permutation_equivariant(name):
    model = build_model(name).eval()
    points, category = torch.randn(2, 512, 3), torch.tensor([0, 5])
    perm = torch.randperm(512)
    torch.testing.assert_close(model(points[:, perm], category), model(points, category)[:, perm], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", ["pointea-cls", "pointea-partseg", "pointnet-cls", "pointea-cls-oa"])
def test_padding_does_not_change_real_outputs(name, train):
    # In training mode the batch statistics must come from real points only; a classifier's
    # head needs two clouds for its BatchNorm, so there the global features are compared.
    model = build_model(name).train(train)
    for module in model.modules():  # dropout would make the two passes differ
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    inputs = make_inputs(model, 1, 300)
    padded = torch.cat([inputs[0], 5 * torch.randn(1, 80, 3)], dim=1)
    mask = torch.arange(380).unsqueeze(0) < 300
    if train and model.config.task == "classification":
        out, expected = model.forward_features(padded, mask)[1], model.forward_features(*inputs)[1]
    else:
        out, expected = model(padded, *inputs[1:], mask=mask), model(*inputs)
    if model.config.task == "segmentation":
        out = out[:, :300]
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("recipe", ["modelnet40-cls", "modelnet40-cls-cpu-long"])
def test_recipe_models_stay_within_the_design_budget(recipe):
    config = load_config(recipe)
    model = build_model(config.model.preset, num_classes=40, **config.model.overrides)
    assert count_parameters(model) <= 1_500_000
    assert count_flops(model, 1024) <= 1.0e9


def test_count_flops_counts_the_fused_self_attention_kernel():
    from pointea.nn.attention import SelfAttention

    n, dim = 300, 32
    layer = SelfAttention(dim, num_heads=4)
    projections = 2 * n * dim * 3 * dim + 2 * n * dim * dim  # qkv and output Linear layers
    core = 2 * n * n * dim + 2 * n * n * dim  # Q K^T and A V over all heads
    assert count_module_flops(layer, torch.randn(1, n, dim)) == projections + core


def test_count_flops_matches_hand_count_for_pointnet():
    model = build_model("pointnet-cls")
    n = 1024
    per_point = 3 * 64 + 64 * 64 + 64 * 64 + 64 * 128 + 128 * 1024
    head = 1024 * 512 + 512 * 256 + 256 * 40
    assert count_flops(model, n) == 2 * (n * per_point + head)
    assert model.training  # count_flops restores the mode


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name, overrides", [("pointea-cls", {}), ("pointea-cls", {"edge_mlp": True}),
                                             ("pointea-partseg", {}), ("pointea-cls-mhea", {}),
                                             ("pointnet-partseg", {})])
def test_inference_models_pass_torch_jit_script(name, overrides):
    model = build_model(name, **overrides).eval()
    inputs = make_inputs(model, 2, 256)
    mask = torch.arange(256).unsqueeze(0).expand(2, -1) < torch.tensor([[256], [190]])
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(*inputs), model(*inputs))
    torch.testing.assert_close(scripted(*inputs, mask=mask), model(*inputs, mask=mask))


def test_segmentation_model_passes_torch_export():
    # torch.export unrolls farthest point sampling's loop, which makes exporting the
    # down-sampling classifiers slow (minutes); the full-resolution segmentation model is quick.
    model = build_model("pointea-partseg").eval()
    inputs = make_inputs(model, 2, 256)
    exported = torch.export.export(model, inputs)
    torch.testing.assert_close(exported.module()(*inputs), model(*inputs))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:DeprecationWarning")
def test_traced_classifier_accepts_another_batch_size():
    model = build_model("pointea-cls", stage_samples=(64, 32)).eval()
    traced = torch.jit.trace(model, (torch.randn(2, 128, 3),), check_trace=False)
    points = torch.randn(3, 128, 3)
    torch.testing.assert_close(traced(points), model(points))


def test_model_config_is_a_dataclass_with_documented_defaults():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert {"task", "num_classes", "in_channels", "num_parts", "category_parts", "attention"} <= fields
    with pytest.raises(ValueError, match="classification needs num_classes"):
        ModelConfig()


def test_models_command_lists_presets(capsys):
    from pointea.cli import main

    assert main(["models", "--name", "pointnet-cls", "--num-points", "512"]) == 0
    out = capsys.readouterr().out
    assert "pointnet-cls" in out and "0.818" in out and "GFLOPs@512" in out
    assert "embed_dims: [64, 64, 64, 128, 1024]" in out
    with pytest.raises(SystemExit, match="unknown preset or shipped weights 'pointnet3'; .*did you mean pointnet-cls"):
        main(["models", "--name", "pointnet3"])
