"""iResNet backbones: InsightFace state-dict layout, published sizes, shapes at any input size."""

from __future__ import annotations

import pytest
import torch

from facetrust.errors import ConfigError
from facetrust.models import available_backbones, build_backbone


def insightface_iresnet_keys(layers=(3, 4, 14, 3), width=64, embedding_size=512, fc_hw=(7, 7)):
    """Key -> shape of an InsightFace ``arcface_torch`` iResNet state dict, written from the reference
    layout (deepinsight/insightface, recognition/arcface_torch/backbones/iresnet.py): stem
    conv1/bn1/prelu; layer1..4 of IBasicBlock (bn1, conv1 3x3, bn2, prelu, conv2 3x3 with the
    stride, bn3, downsample = [conv1x1, BN] in block 0); bn2; fc over 512*7*7; features BN1d."""

    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    keys = {"conv1.weight": (width, 3, 3, 3), **bn("bn1", width), "prelu.weight": (width,)}
    inplanes = width
    for stage, blocks in enumerate(layers, start=1):
        planes = width * 2 ** (stage - 1)
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else planes
            keys.update(bn(f"{p}.bn1", cin))
            keys[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            keys.update(bn(f"{p}.bn2", planes))
            keys[f"{p}.prelu.weight"] = (planes,)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(bn(f"{p}.bn3", planes))
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                keys.update(bn(f"{p}.downsample.1", planes))
        inplanes = planes
    keys.update(bn("bn2", 8 * width))
    keys["fc.weight"] = (embedding_size, 8 * width * fc_hw[0] * fc_hw[1])
    keys["fc.bias"] = (embedding_size,)
    keys.update(bn("features", embedding_size))
    return keys


def test_iresnet50_state_dict_has_the_insightface_keys_and_shapes():
    model = build_backbone("iresnet50")
    expected = insightface_iresnet_keys()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected


def test_insightface_layout_checkpoint_loads_strictly_and_is_used():
    expected = insightface_iresnet_keys(layers=(3, 4, 14, 3), width=64)
    # a distinct constant per tensor, so a tensor loaded under the wrong key would show
    checkpoint = {
        k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.full(shape, 1.0 + i / 1000))
        for i, (k, shape) in enumerate(expected.items())
    }
    model = build_backbone("iresnet50")
    model.load_state_dict(checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint[key]), key


def test_parameter_counts_match_published_figures():
    # iResNet-50 at 112x112, 512-d: 43.59M parameters (AdaDistill, ECCV 2024: "Teacher ResNet50
    # (43.59M, 13.64GFLOPs)", the InsightFace r50).  iResNet-100: OpenVINO Open Model Zoo lists the
    # InsightFace LResNet100E-IR (face-recognition-resnet100-arcface-onnx) at 65.1320 MParams;
    # the released arcface_torch checkpoints ms1mv3_arcface_r50/r100 are 175 MB / 261 MB of float32.
    r50 = build_backbone("iresnet50")
    r100 = build_backbone("iresnet100")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    state_mb = lambda m: sum(v.numel() * 4 for v in m.state_dict().values() if v.is_floating_point()) / 1e6  # noqa: E731
    assert round(count(r50) / 1e6, 2) == 43.59
    assert abs(count(r100) / 1e6 - 65.132) < 0.05
    assert abs(state_mb(r50) - 175) < 1.0
    assert abs(state_mb(r100) - 261) < 1.0


@pytest.mark.parametrize(
    "input_size, map_hw",
    [((112, 112), (7, 7)), ((112, 96), (7, 6)), ((32, 32), (2, 2)), ((48, 48), (3, 3)), ((40, 36), (3, 3))],
)
def test_embedding_and_feature_map_shapes_follow_the_input_size(input_size, map_hw):
    model = build_backbone("iresnet", embedding_size=24, input_size=input_size, layers=(1, 1, 1, 1), width=4).eval()
    assert model.feature_map_shape == (32, *map_hw)
    assert model.fc.in_features == 32 * map_hw[0] * map_hw[1]
    x = torch.randn(3, 3, *input_size)
    embedding = model(x)
    assert embedding.shape == (3, 24)
    embedding2, feature_map = model(x, return_feature_map=True)
    assert feature_map.shape == (3, *model.feature_map_shape)
    assert torch.equal(embedding, embedding2)
    # the map is the output of bn2, the input of the fc
    assert torch.allclose(model.features(model.fc(feature_map.flatten(1))), embedding, atol=1e-6)


def test_named_depths_are_registered_with_their_block_counts():
    names = available_backbones()
    expected = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
                "iresnet100": (3, 13, 30, 3), "iresnet200": (6, 26, 60, 6)}
    for name, layers in expected.items():
        assert name in names
        model = build_backbone(name, width=2, input_size=(16, 16), embedding_size=4)
        assert tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5)) == layers


def test_width_and_layers_override_the_channels_and_depth():
    model = build_backbone("iresnet18", width=8, layers=(1, 2, 1, 1), input_size=(32, 32), embedding_size=16)
    assert model.conv1.out_channels == 8
    assert model.layer4[0].conv2.out_channels == 64
    assert len(model.layer2) == 2


def test_embedding_bn_scale_is_frozen_like_insightface():
    model = build_backbone("iresnet", layers=(1, 1, 1, 1), width=4, input_size=(16, 16), embedding_size=8)
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(8))


def test_bad_options_raise_config_error_naming_them():
    with pytest.raises(ConfigError, match="layers"):
        build_backbone("iresnet", input_size=(32, 32))
    with pytest.raises(ConfigError, match="widht"):
        build_backbone("iresnet18", widht=8)
    with pytest.raises(ConfigError, match="input_size"):
        build_backbone("iresnet18", input_size=(0, 32))


def test_same_seed_gives_identical_initial_weights():
    def build():
        torch.manual_seed(3)
        return build_backbone("iresnet", layers=(1, 1, 1, 1), width=4, input_size=(16, 16), embedding_size=8)

    a, b = build().state_dict(), build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
