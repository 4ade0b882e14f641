"""facetrust.models.fold: batch norms folded for embedding; the rest as one addcmul, bit for bit."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.embed import for_inference
from facetrust.models import build_backbone
from facetrust.models.fold import ChannelAffine, fold_batch_norms
from facetrust.models.registry import inference_layout


def _trained_like(model, seed=1):
    """Batch-norm statistics and affine parameters away from their initial 0 / 1 (an untrained
    model's would make folding an identity)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            if module.affine:
                with torch.no_grad():
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    return model.eval()


def _norms(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name, options, size", [
    ("iresnet", {"layers": [2, 2, 2, 2], "width": 16}, (32, 32)),
    ("iresnet", {"layers": [1, 1, 1, 1], "width": 8, "last_stage_stride": 1}, (48, 48)),
    ("mobilefacenet", {}, (112, 112)),
    ("resnet18_se", {}, (112, 112)),
])
@pytest.mark.parametrize("channels_last", [True, False])
def test_folded_model_gives_the_embeddings_up_to_rounding(name, options, size, channels_last):
    torch.manual_seed(0)
    model = _trained_like(build_backbone(name, embedding_size=32, input_size=size, **options))
    if channels_last:
        inference_layout(model)
    state = copy.deepcopy(model.state_dict())
    folded = fold_batch_norms(model)
    assert _norms(folded) < _norms(model)
    x = torch.randn(6, 3, *size)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert not torch.equal(want, got) or name == "mobilefacenet"  # rescaled weights: other roundings
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    # the model itself untouched: its batch norms are what explain and inversion hook into
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # each folded layer keeps its layer's memory layout
    layouts = {n: p.is_contiguous() for n, p in model.named_parameters() if p.dim() == 4}
    assert all(p.is_contiguous() == layouts[n] for n, p in folded.named_parameters() if n in layouts)


def test_iresnet_folds_every_batch_norm_after_a_layer_and_keeps_its_feature_map():
    model = _trained_like(build_backbone("iresnet", embedding_size=32, layers=[2, 2, 2, 2], width=16,
                                         input_size=(32, 32)))
    folded = fold_batch_norms(model)
    # 31 batch norms: 22 after a convolution or the fc fold, 9 after a residual sum / the input stay
    assert _norms(model) == 31 and _norms(folded) == 0
    assert sum(isinstance(m, ChannelAffine) for m in folded.modules()) == 9
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        (e1, m1), (e2, m2) = model(x, return_feature_map=True), folded(x, return_feature_map=True)
    torch.testing.assert_close(m2, m1, rtol=1e-4, atol=1e-5 * m1.abs().max().item())
    torch.testing.assert_close(e2, e1, rtol=1e-4, atol=1e-5 * e1.abs().max().item())


@pytest.mark.parametrize("shape", [(16, 16, 32, 32), (9, 128, 2, 2), (3, 7, 5, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_channel_affine_is_the_eval_batch_norm_bit_for_bit(shape, channels_last, affine):
    generator = torch.Generator().manual_seed(2)
    norm = _trained_like(nn.BatchNorm2d(shape[1], eps=2e-5, affine=affine))
    x = torch.randn(shape, generator=generator) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = norm(x)
    got = ChannelAffine(norm)(x)
    assert torch.equal(got, want) and got.stride() == want.stride()
    # and not a copy of the input: a separate multiply and add rounds differently somewhere
    alpha = torch.rsqrt(norm.running_var + norm.eps) * (norm.weight if affine else 1)
    beta = (norm.bias if affine else 0) - norm.running_mean * alpha
    assert not torch.equal(x * alpha.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1), want)


def test_in_place_folds_the_model_itself():
    model = _trained_like(build_backbone("iresnet", embedding_size=32, layers=[1, 1, 1, 1], width=8,
                                         input_size=(32, 32)))
    kept = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    assert for_inference(model) is model and _norms(model) == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), kept(x), rtol=1e-4, atol=1e-5)


def test_same_bytes_every_run_and_onnx_like_modules_pass_through():
    model = _trained_like(build_backbone("iresnet", embedding_size=32, layers=[1, 1, 1, 1], width=8,
                                         input_size=(32, 32)))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        runs = [for_inference(copy.deepcopy(model))(x) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    weightless = nn.Identity().train()
    assert for_inference(weightless) is weightless and not weightless.training
    plain = object()
    assert for_inference(plain) is plain


def test_embed_runs_the_folded_model(tmp_path):
    """``facetrust embed``'s embeddings are the folded model's (F1: original + mirror), not the
    unfolded model's bits."""
    from facetrust.embed import embed_batch

    model = _trained_like(build_backbone("iresnet", embedding_size=32, layers=[1, 1, 1, 1], width=8,
                                         input_size=(32, 32)))
    folded = for_inference(copy.deepcopy(model))
    x = torch.randn(5, 3, 32, 32)
    original, fused, _ = embed_batch(folded, x)
    with torch.no_grad():
        np.testing.assert_array_equal(original, folded(x).numpy())
        np.testing.assert_array_equal(fused, folded(x).numpy() + folded(torch.flip(x, dims=[3])).numpy())
        np.testing.assert_allclose(original, model(x).numpy(), rtol=1e-4, atol=1e-5)
    assert F.cosine_similarity(torch.from_numpy(original), model(x).detach()).min() > 0.99999
