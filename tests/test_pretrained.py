"""Models trained elsewhere: an arcface_torch ``backbone.pth`` (InsightFace key names, any depth)
and ONNX files run with onnxruntime, loaded through models/artifacts.py; ``export onnx`` checked
against PyTorch; what needs a feature map fails clearly on an ONNX file without one."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetrust.cli import main
from facetrust.config import validate_params
from facetrust.errors import ConfigError, InputError
from facetrust.models.artifacts import import_pretrained, load_margin, load_model
from test_iresnet import insightface_iresnet_keys

pytest.importorskip("onnxruntime", reason="onnxruntime is pinned in envs/requirements.txt")

LAYERS = (2, 2, 2, 2)
WIDTH, DIM = 8, 16


def insightface_state(layers=LAYERS, width=WIDTH, dim=DIM, seed=0) -> dict[str, torch.Tensor]:
    """A random state dict under InsightFace's key names and shapes (BN variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in insightface_iresnet_keys(layers, width, dim).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith(".weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1 + (1.0 if "bn" in key and "weight" in key else 0.0)
    return state


def arcface_torch_forward(state: dict, x: torch.Tensor, layers=LAYERS) -> torch.Tensor:
    """arcface_torch's IResNet.forward written functionally from the state dict alone: stem
    conv-BN-PReLU; blocks BN-conv-BN-PReLU-conv(stride)-BN + shortcut; BN, flatten, fc, BN1d."""

    def bn(t, prefix):
        return F.batch_norm(t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], False, 0.0, 1e-5)

    x = F.prelu(bn(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"), state["prelu.weight"])
    for stage, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            p, stride = f"layer{stage}.{b}", (2 if b == 0 else 1)
            out = F.conv2d(bn(x, f"{p}.bn1"), state[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(bn(out, f"{p}.bn2"), state[f"{p}.prelu.weight"])
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn3")
            shortcut = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1") \
                if b == 0 else x
            x = out + shortcut
    x = F.linear(bn(x, "bn2").flatten(1), state["fc.weight"], state["fc.bias"])
    return bn(x, "features")


@pytest.fixture(scope="module")
def backbone_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "backbone.pth"
    torch.save(insightface_state(), path)  # what arcface_torch writes: torch.save(backbone.state_dict())
    return path


@pytest.fixture(scope="module")
def exported(backbone_pth, tmp_path_factory):
    """(embedding-only .onnx, .onnx with the feature map) exported from backbone.pth by the CLI."""
    out = tmp_path_factory.mktemp("onnx")
    plain, with_map = out / "model.onnx", out / "model_fmap.onnx"
    assert main(["export", "onnx", "--model", str(backbone_pth), "--out", str(plain)]) == 0
    assert main(["export", "onnx", "--model", str(backbone_pth), "--out", str(with_map), "--feature-map"]) == 0
    return plain, with_map


def _images(n, seed=1):
    return (torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1)


# ------------------------------------------------------------------------------ backbone.pth


def test_arcface_torch_backbone_pth_loads_strictly_and_computes_insightfaces_forward(backbone_pth):
    backbone, config, extras = load_model(backbone_pth)
    assert (config["backbone"], config["backbone_options"]) == ("iresnet18", {"width": WIDTH})
    assert (config["embedding_size"], config["input_size"], extras["source"]) == (DIM, [112, 112], "pretrained")
    x = _images(3)
    with torch.no_grad():
        ours, reference = backbone(x), arcface_torch_forward(torch.load(backbone_pth, weights_only=True), x)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


@pytest.mark.parametrize("depth, layers", [(50, (3, 4, 14, 3)), (100, (3, 13, 30, 3))])
def test_named_depths_are_recognised_from_the_keys(tmp_path, depth, layers):
    from facetrust.models.pretrained import infer_iresnet, iresnet_name, load_arcface_torch

    # zero-cost tensors of the right shapes: the load copies them, memory stays small
    state = {k: torch.zeros(()).expand(shape) if shape else torch.tensor(0)
             for k, shape in insightface_iresnet_keys(layers, 64, 512).items()}
    assert iresnet_name(infer_iresnet(state)["layers"]) == f"iresnet{depth}"
    backbone, config = load_arcface_torch(tmp_path / "r.pth", {"backbone": f"iresnet{depth}"}, state)
    assert config["backbone"] == f"iresnet{depth}" and backbone.feature_map_shape == (512, 7, 7)
    with pytest.raises(ConfigError, match=f"holds iresnet{depth}"):
        load_arcface_torch(tmp_path / "r.pth", {"backbone": "iresnet34"}, state)


def test_a_state_dict_from_a_dataparallel_wrapper_loads(tmp_path):
    path = tmp_path / "wrapped.pth"
    state = insightface_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    backbone, _, _ = load_model(path)
    assert torch.equal(backbone.state_dict()["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])


def test_wrong_files_are_refused_naming_them(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"stem.weight": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match=r"resnet\.pth.*conv1\.weight"):
        load_model(foreign)
    wrong_size = tmp_path / "r18_96.pth"
    torch.save(insightface_state(), wrong_size)
    with pytest.raises(InputError, match=r"input size \[112, 96\]"):
        load_model(wrong_size, settings={"input_size": [112, 96]})
    code = tmp_path / "code.pth"
    torch.save({"conv1.weight": torch.nn.Linear(2, 2)}, code)  # a module object: refused by weights_only
    with pytest.raises(InputError, match=r"code\.pth.*refused by the weights-only loader"):
        load_model(code)
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "missing.onnx")


def test_a_pretrained_backbone_has_no_margin_head(backbone_pth):
    _, config, extras = load_model(backbone_pth)
    with pytest.raises(InputError, match="no margin head"):
        load_margin(config, extras)


# ------------------------------------------------------------------------------ ONNX


def test_export_matches_pytorch_with_a_dynamic_batch(backbone_pth, exported, capsys):
    from facetrust.models.onnx_model import OnnxBackbone, compare_with_torch

    backbone, _, _ = load_model(backbone_pth)
    comparison = compare_with_torch(backbone, exported[0], (112, 112), batch_sizes=(1, 2, 5), seed=3)
    assert comparison["max_rel_diff"] < 1e-4, comparison
    onnx_model = OnnxBackbone(exported[0])
    assert onnx_model.fixed_batch is None and onnx_model.input_size == (112, 112)
    assert tuple(onnx_model(_images(7)).shape) == (7, DIM)


def test_export_cli_prints_the_difference_and_refuses_a_tolerance_it_cannot_meet(backbone_pth, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--model", str(backbone_pth), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 <= summary["max_abs_diff"] < 1e-4 * summary["max_abs_output"] and out.exists()
    strict = tmp_path / "strict.onnx"
    assert main(["export", "onnx", "--model", str(backbone_pth), "--out", str(strict), "--tolerance", "0"]) == 1 \
        or summary["max_abs_diff"] == 0
    assert not strict.exists() or summary["max_abs_diff"] == 0
    assert list(tmp_path.glob(".*tmp")) == []


def test_export_gives_the_same_bytes_twice(backbone_pth, exported, tmp_path):
    again = tmp_path / "again.onnx"
    assert main(["export", "onnx", "--model", str(backbone_pth), "--out", str(again)]) == 0
    assert again.read_bytes() == exported[0].read_bytes()


def test_input_convention_is_converted_for_a_bgr_model(backbone_pth, exported):
    from facetrust.models.onnx_model import OnnxBackbone

    backbone, _, _ = load_model(backbone_pth)
    x = _images(2)
    bgr = OnnxBackbone(exported[0], {"channels": "bgr", "mean": 127.5, "std": 127.5})
    raw = OnnxBackbone(exported[0], {"channels": "rgb", "mean": 0.0, "std": 1.0})
    with torch.no_grad():
        # a BGR model fed our RGB batch sees its channels reversed; a 0..255 model sees raw pixels
        assert torch.allclose(bgr(x), backbone(x.flip(1)), atol=1e-4)
        assert torch.allclose(raw(x), backbone(x * 127.5 + 127.5), rtol=1e-4, atol=1e-3)


def test_onnx_without_feature_map_says_what_needs_it(exported):
    from facetrust.models.onnx_model import OnnxBackbone

    plain, with_map = OnnxBackbone(exported[0]), OnnxBackbone(exported[1])
    with pytest.raises(InputError, match=r"PFE, SCF, SCF-G, ScaleFace's scale and xCos.*--feature-map"):
        plain(_images(1), return_feature_map=True)
    embedding, feature_map = with_map(_images(2), return_feature_map=True)
    assert tuple(feature_map.shape) == (2, 8 * WIDTH, 7, 7) and tuple(embedding.shape) == (2, DIM)
    with pytest.raises(InputError, match="no gradients"):
        plain(_images(1).requires_grad_())


# ------------------------------------------------------------------ through the stages


def _tiny_bin(path, n_pairs=4, seed=0):
    from facetrust.data.binset import write_bin

    rng = np.random.default_rng(seed)
    bins = []
    for _ in range(2 * n_pairs):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(buffer, format="PNG")
        bins.append(buffer.getvalue())
    write_bin(path, bins, [True, False] * (n_pairs // 2))
    return path


def test_embed_gives_the_same_embeddings_from_pth_onnx_and_an_imported_directory(backbone_pth, exported, tmp_path):
    testset = _tiny_bin(tmp_path / "tiny.bin")
    assert main(["import-model", "--path", str(exported[0]), "--out", str(tmp_path / "imported")]) == 0
    descriptor = json.loads((tmp_path / "imported" / "pretrained.json").read_text())
    assert descriptor["file_format"] == "onnx" and descriptor["feature_map"] is False
    results = {}
    for name, model in {"pth": backbone_pth, "onnx": exported[0], "dir": tmp_path / "imported"}.items():
        out = tmp_path / f"{name}.npz"
        assert main(["embed", "--model", str(model), "--test-set", str(testset), "--out", str(out),
                     "--uncertainty", "emb_norm"]) == 0
        results[name] = np.load(out)
    for name in ("onnx", "dir"):
        for key in ("embedding", "embedding_noflip", "uncertainty"):
            reference = results["pth"][key]
            np.testing.assert_allclose(results[name][key], reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_a_fitted_head_on_an_onnx_model_without_feature_map_exits_2(exported, tmp_path, capsys):
    from facetrust.models.artifacts import save_uncertainty_head
    from facetrust.models.uncertainty.methods import UNCERTAINTY_HEADS

    config = {"hidden": [8], "radius": 64.0}
    head = UNCERTAINTY_HEADS.get("scf").build((8 * WIDTH, 7, 7), DIM, config)
    save_uncertainty_head(tmp_path / "head", "scf", head, config, (8 * WIDTH, 7, 7), DIM)
    testset = _tiny_bin(tmp_path / "tiny.bin")
    code = main(["embed", "--model", str(exported[0]), "--test-set", str(testset), "--out", str(tmp_path / "e.npz"),
                 "--head", str(tmp_path / "head")])
    assert code == 2 and "feature_map" in capsys.readouterr().err
    assert main(["embed", "--model", str(exported[1]), "--test-set", str(testset), "--out", str(tmp_path / "e.npz"),
                 "--head", str(tmp_path / "head")]) == 0
    assert np.load(tmp_path / "e.npz")["uncertainty"].shape == (8,)


def test_descriptor_refuses_a_changed_file(backbone_pth, tmp_path):
    copy = tmp_path / "backbone.pth"
    copy.write_bytes(backbone_pth.read_bytes())
    import_pretrained(copy, tmp_path / "model")
    torch.save(insightface_state(seed=5), copy)
    with pytest.raises(InputError, match="changed since it was imported"):
        load_model(tmp_path / "model")


def test_params_pretrained_model_needs_a_path_but_no_head():
    base = {"models": {"r50": {"source": "pretrained", "path": "data/pretrained/r50/backbone.pth"}}}
    model = validate_params(base)["models"]["r50"]
    assert model["input"] == {"channels": "rgb", "mean": 127.5, "std": 127.5}
    with pytest.raises(ConfigError, match=r"models\.r50.*'path' is a required property"):
        validate_params({"models": {"r50": {"source": "pretrained"}}})
    with pytest.raises(ConfigError, match=r"models\.arc.*'backbone' is a required property"):
        validate_params({"models": {"arc": {"head": {"kind": "arcface"}}}})
