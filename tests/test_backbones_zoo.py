"""The other papers' backbones: SphereFace-4/20/36/64, MobileNet-SphereFace, IR-SE ResNets, MobileFaceNet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.models.registry import available_backbones, build_backbone

# name -> (native input size, native feature map shape)
NATIVE = {
    "sphere4": ((112, 96), (512, 7, 6)),
    "sphere20": ((112, 96), (512, 7, 6)),
    "sphere36": ((112, 96), (512, 7, 6)),
    "sphere64": ((112, 96), (512, 7, 6)),
    "mobilenet_sphereface": ((112, 96), (512, 7, 6)),
    "resnet18_se": ((112, 112), (512, 7, 7)),
    "ir_se50": ((112, 112), (512, 7, 7)),
    "mobilefacenet": ((112, 112), (512, 7, 7)),
}
SPHERES = ("sphere4", "sphere20", "sphere36", "sphere64")


@pytest.fixture(scope="module")
def native_models():
    """Each backbone at its native size and default width, built once (the big ones cost ~0.5 s)."""
    torch.manual_seed(0)
    return {name: build_backbone(name).eval() for name in NATIVE}


def _image(input_size, batch=1, seed=0, channels=3):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *input_size, generator=generator)


def test_registry_builds_every_zoo_backbone_by_name(native_models):
    assert set(NATIVE) <= set(available_backbones())
    for name, model in native_models.items():
        assert isinstance(model, nn.Module), name


def test_registry_rejects_unknown_name_listing_allowed():
    with pytest.raises(ConfigError, match="sphere20"):
        build_backbone("sphere21")


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_native_input_gives_embedding_and_feature_map(native_models, name):
    model = native_models[name]
    input_size, feature_shape = NATIVE[name]
    assert model.feature_map_shape == feature_shape
    with torch.no_grad():
        embedding, feature_map = model(_image(input_size), return_feature_map=True)
        plain = model(_image(input_size))
    assert embedding.shape == (1, 512)
    assert feature_map.shape == (1, *feature_shape)
    assert torch.equal(plain, embedding)
    # Embeddings are not normalised: the norm is whatever the head produces, not 1.
    assert not torch.allclose(embedding.norm(dim=1), torch.ones(1), atol=1e-3)


@pytest.mark.parametrize("name", sorted(NATIVE))
@pytest.mark.parametrize("input_size", [(32, 32), (48, 48), (64, 64), (40, 36)])
def test_small_width_runs_on_small_inputs(name, input_size):
    # Four stride-2 stages (3x3, pad 1): each side becomes ceil(n / 16).
    model = build_backbone(name, embedding_size=16, input_size=input_size, width=8).eval()
    expected = (64, math.ceil(input_size[0] / 16), math.ceil(input_size[1] / 16))
    assert model.feature_map_shape == expected
    with torch.no_grad():
        embedding, feature_map = model(_image(input_size, batch=2), return_feature_map=True)
    assert embedding.shape == (2, 16)
    assert feature_map.shape == (2, *expected)
    assert torch.isfinite(embedding).all()


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_wrong_input_size_raises_input_error_naming_sizes(name):
    model = build_backbone(name, embedding_size=8, input_size=(32, 32), width=4)
    with pytest.raises(InputError, match=r"\(32, 32\)"):
        model(torch.zeros(1, 3, 48, 48))


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_gradients_reach_every_trainable_parameter(name):
    torch.manual_seed(1)
    model = build_backbone(name, embedding_size=8, input_size=(32, 32), width=8).train()
    # A fixed random projection, not .sum(): a sum of BatchNorm1d outputs has zero gradient.
    target = torch.randn(2, 8, generator=torch.Generator().manual_seed(2))
    (model(_image((32, 32), batch=2)) * target).sum().backward()
    for param_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_eval_forward_at_batch_two_is_deterministic(name):
    torch.manual_seed(3)
    first = build_backbone(name, embedding_size=16, input_size=(48, 48), width=8).eval()
    torch.manual_seed(3)
    second = build_backbone(name, embedding_size=16, input_size=(48, 48), width=8).eval()
    images = _image((48, 48), batch=2, seed=4)
    with torch.no_grad():
        out_a, out_b, out_c = first(images), first(images), second(images)
    assert torch.equal(out_a, out_b)
    assert torch.equal(out_a, out_c)  # same seed -> same weights -> bit-identical output
    # Batch elements are independent in eval mode (BatchNorm uses running statistics).
    with torch.no_grad():
        alone = first(images[1:])
    torch.testing.assert_close(alone, out_a[1:], rtol=1e-5, atol=1e-5)


def test_dropout_option_is_active_in_train_mode_only():
    model = build_backbone("sphere4", embedding_size=16, input_size=(32, 32), width=8, dropout=0.5)
    images = _image((32, 32), batch=2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), model(images))
    model.train()
    torch.manual_seed(5)
    with torch.no_grad():
        assert not torch.equal(model(images), model(images))


# --- SphereFace specifics ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SPHERES)
def test_sphere_depth_in_name_counts_its_conv_layers_and_has_no_batchnorm(native_models, name):
    # SphereFace-N has N conv layers (4 stage convs + 2 per residual unit), then the FC (Table 2).
    model = native_models[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == int(name[len("sphere") :])
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == len(convs)


def test_sphere_stage_convs_are_stride_two_at_64_128_256_512(native_models):
    convs = [m for m in native_models["sphere20"].modules() if isinstance(m, nn.Conv2d)]
    stage_convs = [c for c in convs if c.stride == (2, 2)]
    assert [c.out_channels for c in stage_convs] == [64, 128, 256, 512]
    assert all(c.stride == (1, 1) and c.in_channels == c.out_channels for c in convs if c not in stage_convs)


def test_sphere20_parameter_count_matches_published_caffe_model(native_models):
    # Independent count from the layer list of the released prototxt (sphereface_model.prototxt):
    # conv k*k*in*out + out bias, PReLU one slope per channel, fc5 (512*7*6)*512 + 512.
    stage = [(3, 64), (64, 128), (128, 256), (256, 512)]
    units = [1, 2, 4, 1]
    count = 0
    for (cin, cout), n in zip(stage, units):
        count += 9 * cin * cout + cout + cout  # stage conv + bias + PReLU
        count += n * 2 * (9 * cout * cout + cout + cout)  # residual convs + biases + PReLUs
    count += 512 * 7 * 6 * 512 + 512
    # = 1,550,976 (stage convs) + 960 (their PReLU) + 10,104,448 (units: weights + biases)
    #   + 3,712 (unit PReLU) + 11,010,560 (fc5) = 22,670,656
    assert count == 22_670_656
    # Published: OpenVINO Open Model Zoo model card "Sphereface" (converted from the authors'
    # Caffe SphereFace-20, 112x96 input, fc5 512-d): 22.671 MParams.
    assert round(count / 1e6, 3) == 22.671
    model = native_models["sphere20"]
    assert sum(p.numel() for p in model.parameters()) == count


def test_sphere_initialisation_follows_prototxt(native_models):
    # Stage convs and fc5: Caffe xavier = U(-sqrt(3/fan_in), sqrt(3/fan_in)); unit convs N(0, 0.01);
    # biases 0; unit biases frozen (lr_mult 0).
    model = native_models["sphere20"]
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        assert torch.count_nonzero(conv.bias) == 0
        weight = conv.weight.detach()
        if conv.stride == (2, 2):
            bound = math.sqrt(3.0 / weight[0].numel())
            assert weight.abs().max() <= bound
            assert weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.1)
            assert conv.bias.requires_grad
        else:
            assert weight.std().item() == pytest.approx(0.01, rel=0.05)
            assert not conv.bias.requires_grad
    fc_bound = math.sqrt(3.0 / (512 * 7 * 6))
    assert model.fc.weight.abs().max() <= fc_bound
    assert torch.count_nonzero(model.fc.bias) == 0


def test_sphere_residual_bias_can_be_left_trainable():
    model = build_backbone("sphere20", embedding_size=8, input_size=(32, 32), width=4, freeze_residual_bias=False)
    assert all(p.requires_grad for p in model.parameters())


# --- MobileNet-SphereFace, IR-SE, MobileFaceNet specifics --------------------------------------


def test_mobilenet_sphereface_uses_depthwise_convs_with_batchnorm(native_models):
    model = native_models["mobilenet_sphereface"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    # SphereFace-20's 20 convs: the first stays full, the other 19 become depthwise + pointwise.
    assert len(depthwise) == 19
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs)


def test_mobilenet_sphereface_rejects_unknown_activation():
    with pytest.raises(ConfigError, match="prelu"):
        build_backbone("mobilenet_sphereface", activation="swish")
    relu = build_backbone("mobilenet_sphereface", embedding_size=8, input_size=(32, 32), width=4, activation="relu")
    assert not any(isinstance(m, nn.PReLU) for m in relu.modules())


@pytest.mark.parametrize(("name", "units"), [("resnet18_se", 8), ("ir_se50", 24)])
def test_ir_se_unit_counts_and_se_reduction_16(native_models, name, units):
    from facetrust.models.backbones.resnet_se import IRSEUnit, SqueezeExcite

    model = native_models[name]
    assert sum(isinstance(m, IRSEUnit) for m in model.modules()) == units
    for se in (m for m in model.modules() if isinstance(m, SqueezeExcite)):
        squeeze = se.gate[1]
        assert squeeze.in_channels == 16 * squeeze.out_channels


def test_ir_se_accepts_single_channel_input_like_the_seed():
    model = build_backbone("resnet18_se", embedding_size=8, input_size=(32, 32), width=8, in_channels=1).eval()
    with torch.no_grad():
        assert model(_image((32, 32), channels=1)).shape == (1, 8)


def test_mobilefacenet_parameter_count_matches_paper():
    # Chen et al. 2018 (MobileFaceNets) report 0.99M parameters for the 128-d model (Table 3; the
    # abstract: "less than 1 million parameters", 4.0 MB).  The paper does not say whether BN
    # scale/shift and PReLU slopes are counted: conv + linear weights alone give 0.976M, all
    # trainable parameters 1.003M; 0.99M lies between, so each must be within 2% of it.
    model = build_backbone("mobilefacenet", embedding_size=128)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    total = sum(p.numel() for p in model.parameters())
    assert weights < 0.99e6 < total
    assert abs(weights - 0.99e6) / 0.99e6 < 0.02
    assert abs(total - 0.99e6) / 0.99e6 < 0.02


def test_mobilefacenet_gdconv_covers_the_whole_feature_map(native_models):
    model = native_models["mobilefacenet"]
    gdconv = model.gdconv[0]
    assert gdconv.kernel_size == (7, 7)
    assert gdconv.groups == gdconv.in_channels == 512
    bottlenecks = [m for m in model.body if type(m).__name__ == "Bottleneck"]
    assert len(bottlenecks) == 5 + 1 + 6 + 1 + 2  # Table 1 repeats


def test_nhwc_safe_flags_the_strided_1x1_conv_that_aborts_nhwc_backward():
    """A width-4 iResNet's downsample (1x1, stride 2, 4 -> 8 channels) aborts the process in NHWC
    backward on the CPU build in use; nhwc_safe says so, a width-8 net passes; the default build
    stays NCHW and trains."""
    from facetrust.models.registry import nhwc_safe

    tiny = build_backbone("iresnet", embedding_size=8, input_size=(32, 32), layers=[1, 1, 1, 1], width=4)
    assert not nhwc_safe(tiny)
    assert all(p.is_contiguous() for p in tiny.parameters())
    tiny(torch.randn(8, 3, 32, 32)).sum().backward()
    wide = build_backbone("iresnet", embedding_size=8, input_size=(32, 32), layers=[1, 1, 1, 1], width=8)
    assert nhwc_safe(wide)


def _params_backbones() -> dict[str, dict]:
    """One params.yaml model per distinct backbone (name and options)."""
    from pathlib import Path

    from facetrust.yaml_files import load_yaml

    models = load_yaml(Path(__file__).resolve().parents[1] / "params.yaml")["models"]
    distinct = {}
    for name, model in models.items():
        if "backbone" in model:
            distinct.setdefault(model["backbone"] + repr(sorted((model.get("backbone_options") or {}).items())), model)
    return distinct


@pytest.mark.parametrize("key", sorted(_params_backbones()))
def test_a_loaded_model_runs_channels_last_with_the_nchw_values_and_the_same_bytes_twice(key, tmp_path):
    """load_model gives every params.yaml backbone NHWC weights (models.registry.inference_layout),
    whose embeddings and input gradients equal NCHW's to float rounding and are the same bytes on a
    second run; the checkpoint is untouched."""
    from facetrust.models.artifacts import CHECKPOINT_NAME, load_model, save_checkpoint

    model = _params_backbones()[key]
    config = {"backbone": model["backbone"], "backbone_options": model.get("backbone_options") or {},
              "embedding_size": int(model["embedding_size"]), "input_size": list(model["input_size"])}
    torch.manual_seed(0)
    nchw = build_backbone(config["backbone"], embedding_size=config["embedding_size"],
                          input_size=tuple(config["input_size"]), **config["backbone_options"])
    for module in nchw.modules():  # trained-looking batch-norm statistics, so eval mode is not an identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"backbone": nchw.state_dict(), "head": {}, "config": config,
                                                 "epoch": 1, "step": 1, "num_classes": 4,
                                                 "feature_map_shape": list(nchw.feature_map_shape)})
    saved = (tmp_path / CHECKPOINT_NAME).read_bytes()
    loaded, _, _ = load_model(tmp_path)
    weights = [p for p in loaded.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert any(not p.is_contiguous() for p in weights)  # (a 1x1 kernel is both)
    nchw.eval()
    x = torch.randn(6, 3, *config["input_size"])

    def run(net):
        inputs = x.clone().requires_grad_(True)
        out = net(inputs)
        (gradient,) = torch.autograd.grad(out.square().sum(), inputs)
        return out.detach(), gradient

    (out, grad), (again, grad_again), (ref, grad_ref) = run(loaded), run(loaded), run(nchw)
    assert torch.equal(out, again) and torch.equal(grad, grad_again)
    # float rounding only (summation order): a layout mix-up would differ by the values' own size
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (grad - grad_ref).abs().max() <= 1e-3 * grad_ref.abs().max()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == saved


def test_inference_layout_keeps_a_net_that_nhwc_backward_would_abort_nchw():
    from facetrust.models.registry import inference_layout

    tiny = build_backbone("iresnet", embedding_size=8, input_size=(32, 32), layers=[1, 1, 1, 1], width=4)
    assert inference_layout(tiny) is tiny and all(p.is_contiguous() for p in tiny.parameters())
    inputs = torch.randn(2, 3, 32, 32, requires_grad=True)
    tiny(inputs).sum().backward()
    assert inputs.grad is not None
