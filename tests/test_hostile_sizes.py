"""Sizes a small file states are bounded before anything is allocated (the bad-input contract:
exit 2, one line naming the file and the key, no traceback, nothing written, memory bounded by
the input's real size).

A model's size comes from settings: params.yaml (``width``, ``layers``, ``input_size``,
``embedding_size``, ``heads.*.hidden``), a checkpoint's ``config``, or the shapes of a ``.pth``
state dict.  Each is checked in one place, :mod:`facetrust.models.registry` (the limits, then a
build without storage), before a tensor exists; the params schema refuses the same values at
validation time with the key path.  The inputs here are a few kilobytes; before these checks they
made the process reach 4-24 GB or hang.  The headline cases run in a child process whose own peak
resident memory (``getrusage``, as the CLI records it: ``FACETRUST_PEAK_MEMORY_LOG``) is asserted,
under an address-space limit as a safety net.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facetrust.cli import PEAK_MEMORY_LOG, build_parser, main, record_peak_memory
from facetrust.config import load_params, schema_file
from facetrust.errors import ConfigError, InputError
from facetrust.models import registry
from facetrust.models.artifacts import load_model, save_checkpoint, save_uncertainty_head
from facetrust.models.registry import backbone_plan, build_backbone
from test_iresnet import insightface_iresnet_keys

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4)
#: A command of these tests stays below this resident peak (the interpreter with torch: ~0.6 GB).
PEAK_LIMIT_MIB = 1536
#: Address-space limit of the child (torch's import alone reserves ~3.2 GB of it): an unchecked
#: allocation of the sizes above fails here instead of filling the machine.
ADDRESS_SPACE = 8 * 2**30


# ------------------------------------------------------------------------------- inputs


def tiny_state(layers=(1, 1, 1, 1), width=4, dim=8, fc_hw=(1, 1)) -> dict[str, torch.Tensor]:
    """An arcface_torch state dict (InsightFace key names) of a tiny iResNet, 16x16 input."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in insightface_iresnet_keys(layers, width, dim, fc_hw).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


def pth(tmp: Path, name: str = "backbone.pth", **changes) -> Path:
    state = tiny_state()
    state.update(changes)
    torch.save(state, tmp / name)
    return tmp / name


def checkpoint(tmp: Path, name: str = "model", **config_changes) -> Path:
    """A tiny trained-model directory whose checkpoint config is ``config_changes`` over the real one."""
    torch.manual_seed(0)
    backbone = build_backbone("iresnet", **TINY)
    config = {"backbone": "iresnet", "embedding_size": 8, "input_size": [16, 16],
              "backbone_options": {"layers": [1, 1, 1, 1], "width": 4}, "head": {"kind": "arcface"}}
    config.update(config_changes)
    save_checkpoint(tmp / name / "checkpoint.pt", {"backbone": backbone.state_dict(), "config": config,
                                                   "epoch": 1, "step": 1, "num_classes": 2})
    return tmp / name


def params_yaml(tmp: Path, model: str = "{backbone: iresnet, backbone_options: {layers: [1, 1, 1, 1], width: 4}, "
                "input_size: [16, 16], embedding_size: 8, head: {kind: arcface}}", extra: str = "") -> Path:
    path = tmp / "params.yaml"
    path.write_text(f"seed: 1\nthreads: 1\nmodels:\n  m: {model}\n{extra}")
    return path


def onnx_file(tmp: Path, weight_value: float = 0.5, side: int = 8, name: str = "m.onnx") -> Path:
    """A tiny ONNX face model: (N, 3, side, side) -> GlobalAveragePool -> Flatten -> Gemm with the
    initializer ``fc_weight`` (3 x 4, every value ``weight_value``) -> ``embedding`` (N, 4)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "fc_weight"], ["embedding"])],
        "face", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.full((3, 4), weight_value, dtype=np.float32), "fc_weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp / name)
    return tmp / name


# ------------------------------------------------------------------------------- helpers


def run_inprocess(argv: list[str], capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: exit 2 with its one-line message
        code = stop.code
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    return code, err + out, elapsed


def assert_refused(code: int, message: str, *words: str) -> None:
    assert code == 2, message[-2000:]
    assert "Traceback" not in message, message[-2000:]
    assert "unexpected" not in message, message[-2000:]
    for word in words:
        assert word in message, f"{word!r} not in:\n{message[-2000:]}"


def run_child(argv: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """``facetrust ARGV`` in a child process under :data:`ADDRESS_SPACE`: (exit code, stderr,
    seconds, the child's own peak resident MiB as the CLI records it, facetrust.cli.PEAK_MEMORY_LOG)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    peaks = cwd / "peaks.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", PEAK_MEMORY_LOG: str(peaks)}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "facetrust.cli", *argv], cwd=cwd, env=env, preexec_fn=limit,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"facetrust {' '.join(argv)}: no answer in 60 s (a hang?)")
    elapsed = time.perf_counter() - start
    records = [json.loads(line) for line in peaks.read_text().splitlines()] if peaks.exists() else []
    return done.returncode, done.stderr, elapsed, records[-1]["max_rss_mib"] if records else 0.0


# ------------------------------------------- the headline cases, in a child: exit 2, bounded memory


def _broadcast_pth(tmp: Path) -> tuple[list[str], list[str], Path]:
    # 750 KB in the audit; here ~20 KB: conv1.weight is one stored zero broadcast to 8000 channels
    path = pth(tmp, "wide.pth", **{"conv1.weight": torch.zeros(1).expand(8000, 3, 3, 3)})
    return ["import-model", "--path", str(path), "--out", str(tmp / "imported")], \
        ["wide.pth", "'conv1.weight'", "broadcast view"], tmp / "imported"


def _wide_checkpoint(tmp: Path) -> tuple[list[str], list[str], Path]:
    model = checkpoint(tmp, backbone_options={"layers": [1, 1, 1, 1], "width": 8000})
    return ["export", "onnx", "--model", str(model), "--out", str(tmp / "m.onnx")], \
        ["checkpoint.pt", "width 8000", "limit 1024"], tmp / "m.onnx"


def _deep_params(tmp: Path) -> tuple[list[str], list[str], Path]:
    params = params_yaml(tmp, model="{backbone: iresnet, backbone_options: {layers: [100000000, 1, 1, 1], width: 4}, "
                                    "input_size: [16, 16], embedding_size: 8, head: {kind: arcface}}")
    return ["train", "--params", str(params), "--model", "m", "--out", str(tmp / "trained")], \
        ["params.yaml", "models.m.backbone_options.layers.0", "100000000", "maximum of 256"], tmp / "trained"


@pytest.mark.parametrize("build", [_broadcast_pth, _wide_checkpoint, _deep_params],
                         ids=["pth-broadcast-conv1", "checkpoint-width-8000", "params-layers-1e8"])
def test_a_small_file_cannot_make_the_process_allocate_gigabytes(tmp_path, build):
    argv, words, output = build(tmp_path)
    code, err, elapsed, peak_mib = run_child(argv, tmp_path)
    assert_refused(code, err, *words)
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert not output.exists()  # nothing half-written
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert 0 < peak_mib < PEAK_LIMIT_MIB, f"peak {peak_mib:.0f} MiB"


# ---------------------------------------------------------------------- 1. import-model (.pth, .onnx)


def test_pth_whose_conv1_is_wider_than_any_model_is_refused_before_building(tmp_path, capsys):
    """A real (not broadcast) 8000-channel conv1: the width limit, naming the file and the key."""
    path = pth(tmp_path, **{"conv1.weight": torch.zeros(8000, 3, 3, 3)})
    code, message, elapsed = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_refused(code, message, "backbone.pth", "conv1.weight", "width 8000", "limit 1024")
    assert elapsed < 10 and not (tmp_path / "o").exists()


def test_pth_beyond_the_value_budget_is_refused_before_building(tmp_path, capsys):
    """Width 1024 is within its own limit, but the iResNet it gives (1.2e9 values) is not."""
    path = pth(tmp_path, **{"conv1.weight": torch.zeros(1024, 3, 3, 3)})
    code, message, elapsed = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_refused(code, message, "backbone.pth", "width 1024", "above the limit 268,435,456")
    assert elapsed < 10


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_pth_with_non_finite_weights_is_refused_by_import_and_embed(tmp_path, capsys, value):
    weight = tiny_state()["layer2.0.conv1.weight"].clone()
    weight[0, 0, 0, 0] = value
    path = pth(tmp_path, **{"layer2.0.conv1.weight": weight})
    code, message, _ = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o"),
                                      "--input-size", "16,16"], capsys)
    assert_refused(code, message, "backbone.pth", "'layer2.0.conv1.weight'", "NaN or infinite")
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match=r"backbone\.pth: tensor 'layer2\.0\.conv1\.weight' holds NaN"):
        load_model(path, settings={"input_size": [16, 16]})  # what embed --model X.pth runs


def test_a_good_tiny_pth_still_imports(tmp_path, capsys):
    path = pth(tmp_path)
    code, message, _ = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o"),
                                      "--input-size", "16,16"], capsys)
    assert code == 0, message
    assert json.loads((tmp_path / "o" / "pretrained.json").read_text())["config"]["backbone_options"] == \
        {"width": 4, "layers": [1, 1, 1, 1]}


def test_pth_whose_fc_does_not_fit_the_input_size_is_refused_before_building(tmp_path, capsys):
    """The configured input size sets the fc's width: a mismatch is found on the shapes alone."""
    path = pth(tmp_path)
    code, message, _ = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o"),
                                      "--input-size", "1024,1024"], capsys)
    assert_refused(code, message, "backbone.pth")


def test_onnx_with_a_nan_initializer_is_refused_naming_it(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = onnx_file(tmp_path, weight_value=float("nan"))
    code, message, _ = run_inprocess(["import-model", "--path", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_refused(code, message, "m.onnx", "initializer 'fc_weight'", "NaN or infinite")
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="initializer 'fc_weight'"):
        load_model(path)  # embed --model m.onnx


def test_onnx_good_file_imports_and_a_huge_input_is_refused(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    code, message, _ = run_inprocess(["import-model", "--path", str(onnx_file(tmp_path)), "--out",
                                      str(tmp_path / "o")], capsys)
    assert code == 0, message
    with pytest.raises(InputError, match=r"big\.onnx: input 'input' is 2000x2000"):
        load_model(onnx_file(tmp_path, side=2000, weight_value=0.0, name="big.onnx"))


# ---------------------------------------------------------------------- 2. checkpoint.pt config values


@pytest.mark.parametrize("changes, words", [
    ({"backbone_options": {"layers": [1, 1, 1, 1], "width": 8000}}, ["width 8000", "limit 1024"]),
    ({"backbone_options": {"layers": [100000000, 1, 1, 1], "width": 4}}, ["block count 100000000", "limit 256"]),
    ({"input_size": [7000, 7000]}, ["input_size side 7000", "limit 1024"]),
    ({"backbone_options": {"layers": [1, 1, 1, 1], "width": 1024}}, ["would hold", "above the limit"]),
    ({"backbone_options": {"layers": [1, 1, 1, 1], "width": 4, "evil": 1}}, ["unknown option(s) evil"]),
    ({"backbone": "sphere20", "backbone_options": {"units": [1, 1, 1, 10**9]}}, ["not accepted"]),
], ids=["width", "layers", "input-size", "budget", "unknown-option", "bad-option"])
def test_checkpoint_config_beyond_the_limits_is_refused_before_building(tmp_path, capsys, changes, words):
    model = checkpoint(tmp_path, **changes)
    code, message, elapsed = run_inprocess(["export", "onnx", "--model", str(model), "--out",
                                            str(tmp_path / "m.onnx")], capsys)
    assert_refused(code, message, "checkpoint.pt", *words)
    assert elapsed < 10 and not (tmp_path / "m.onnx").exists()


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused_on_shapes(tmp_path):
    """Input size 512 is within the limits, but the stored fc is the 16x16 one: refused from the
    shapes, before a 512x512 model (its fc alone 32x32x32x8 values) is allocated."""
    model = checkpoint(tmp_path, input_size=[512, 512])
    with pytest.raises(InputError, match=r"checkpoint\.pt: backbone weights do not fit 'iresnet'.*fc\.weight"):
        load_model(model)


def test_checkpoint_with_a_broadcast_tensor_is_refused(tmp_path):
    model = checkpoint(tmp_path)
    payload = torch.load(model / "checkpoint.pt", weights_only=True)
    payload["backbone"]["conv1.weight"] = torch.zeros(1).expand(4, 3, 3, 3)
    torch.save(payload, model / "checkpoint.pt")
    with pytest.raises(InputError, match=r"checkpoint\.pt: backbone tensor 'conv1\.weight' .* broadcast view"):
        load_model(model)


def test_a_good_tiny_checkpoint_still_loads_and_computes_the_same(tmp_path):
    torch.manual_seed(0)
    reference = build_backbone("iresnet", **TINY).eval()
    backbone, config, _ = load_model(checkpoint(tmp_path))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(backbone(x), reference(x), atol=1e-5)


def test_head_file_beyond_the_limits_is_refused_naming_it(tmp_path):
    from facetrust.models.artifacts import load_uncertainty_head
    from facetrust.models.uncertainty import SCFHead

    head = SCFHead((4, 1, 1), hidden=[8])
    path = save_uncertainty_head(tmp_path / "h", "scf", head, {"hidden": [1073741824]}, (4, 1, 1), 8)
    with pytest.raises(InputError, match=r"head\.pt: head config: SCF head: 'hidden'"):
        load_uncertainty_head(path)


# ---------------------------------------------------------------------- 3. params.yaml sizes


@pytest.mark.parametrize("model, key", [
    ("{backbone: iresnet, backbone_options: {layers: [1, 1, 1, 1], width: 100000}, head: {kind: arcface}}",
     "models.m.backbone_options.width: 100000 is greater than the maximum of 1024"),
    ("{backbone: iresnet, backbone_options: {layers: [1, 1, 1, 1], width: 4}, embedding_size: 1073741824, "
     "head: {kind: arcface}}", "models.m.embedding_size: 1073741824 is greater than the maximum of 65536"),
    ("{backbone: iresnet, backbone_options: {layers: [1, 1, 1, 1], width: 4}, input_size: [100000, 100000], "
     "head: {kind: arcface}}", "models.m.input_size.0: 100000 is greater than the maximum of 1024"),
    ("{backbone: sphere20, backbone_options: {units: [1, 1, 1, 300]}, head: {kind: arcface}}",
     "models.m.backbone_options.units.3: 300 is greater than the maximum of 256"),
    ("{backbone: iresnet, backbone_options: {layers: [1, 1, 1, 1], width: 4}, head: {kind: scaleface, "
     "hidden: 1073741824}}", "models.m.head.hidden: 1073741824 is greater than the maximum of 16384"),
], ids=["width", "embedding", "input-size", "units", "scaleface-hidden"])
def test_params_sizes_beyond_the_limits_are_refused_at_validation(tmp_path, capsys, model, key):
    params = params_yaml(tmp_path, model=model)
    code, message, elapsed = run_inprocess(["train", "--params", str(params), "--model", "m", "--out",
                                            str(tmp_path / "o")], capsys)
    assert_refused(code, message, "params.yaml", key)
    assert elapsed < 10 and not (tmp_path / "o").exists()


def test_params_threads_beyond_the_limit_is_refused_at_validation(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(params_yaml(tmp_path).read_text().replace("threads: 1", "threads: 100000"))
    code, message, _ = run_inprocess(["train", "--params", str(params), "--model", "m", "--out",
                                      str(tmp_path / "o")], capsys)
    assert_refused(code, message, "params.yaml", "threads: 100000 is greater than the maximum of 1024")


def test_fit_head_hidden_beyond_the_limit_is_refused_at_validation(tmp_path, capsys):
    params = params_yaml(tmp_path, extra="heads:\n  scf: {method: scf, hidden: [1073741824]}\n")
    code, message, _ = run_inprocess(["fit-head", "--params", str(params), "--model", "m", "--head", "scf",
                                      "--out", str(tmp_path / "h")], capsys)
    assert_refused(code, message, "params.yaml", "heads.scf.hidden.0: 1073741824 is greater than the maximum of 16384")


def test_fit_head_config_and_heads_refuse_huge_hidden_widths():
    from facetrust.models.uncertainty import PFEHead, SCFHead
    from facetrust.train.fit_head import resolve_config

    with pytest.raises(ConfigError, match="fit-head config 'hidden'"):
        resolve_config({"hidden": [1073741824]})
    with pytest.raises(ConfigError, match="SCF head: 'hidden'"):
        SCFHead((512, 7, 7), hidden=[100000])
    with pytest.raises(ConfigError, match="would hold"):  # each width allowed, the head too big in all
        SCFHead((16384, 8, 8), hidden=[16384])
    with pytest.raises(ConfigError, match="PFE head: 'hidden'"):
        PFEHead((512, 7, 7), 512, hidden=1073741824)
    assert SCFHead((4, 2, 2), hidden=[8, 4]) is not None  # small heads still build


def test_backbone_budget_beyond_the_settings_limits_is_a_config_error():
    """Every setting within its limit, the model too big in all (1.2e9 values): refused before building."""
    with pytest.raises(ConfigError, match=r"iresnet with embedding_size 8, input_size \(16, 16\) and "
                                          r"backbone_options \{layers: \[1, 1, 1, 1\], width: 1024\} would hold"):
        build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=1024)
    with pytest.raises(ConfigError, match="first feature map"):  # one image's first map: 512 x 1024 x 1024
        backbone_plan("iresnet", 8, input_size=(1024, 1024), layers=[1, 1, 1, 1], width=512)


# ---------------------------------------------------------------------- the limits themselves


def test_the_limits_admit_every_model_of_the_field():
    """iResNet-200 at 112x112 and 512-d, every registered backbone at its defaults, SphereFace-64."""
    plan = backbone_plan("iresnet200", 512, input_size=(112, 112))
    assert sum(math.prod(shape) for shape in plan.values()) < registry.MAX_BACKBONE_VALUES / 2
    for name in registry.available_backbones():
        backbone_plan(name, 512, **({"layers": [2, 2, 2, 2]} if name == "iresnet" else {}))


def test_planning_allocates_nothing_and_draws_no_random_numbers():
    torch.manual_seed(0)
    expected = torch.randn(3)
    torch.manual_seed(0)
    start = time.perf_counter()
    shapes = backbone_plan("iresnet200", 512)
    assert time.perf_counter() - start < 5
    assert shapes["fc.weight"] == (512, 512 * 7 * 7)
    assert torch.equal(torch.randn(3), expected)  # building a model after the check draws the same weights


def test_schema_bounds_are_the_registry_limits():
    from facetrust import options
    from facetrust.evaluate.settings import MIN_FRACTION_STEP
    from facetrust.models.uncertainty import MAX_HIDDEN_LAYERS, MAX_HIDDEN_WIDTH

    tree = schema_file()
    model = tree["$defs"]["model"]["properties"]
    backbone_options = tree["$defs"]["backbone_options"]["properties"]
    assert tree["$defs"]["model_size"]["items"]["maximum"] == registry.MAX_INPUT_SIDE
    assert model["embedding_size"]["maximum"] == registry.MAX_EMBEDDING_SIZE
    assert backbone_options["width"]["maximum"] == registry.MAX_WIDTH
    assert backbone_options["layers"]["items"]["maximum"] == registry.MAX_BLOCKS_PER_STAGE
    assert backbone_options["units"]["items"]["maximum"] == registry.MAX_BLOCKS_PER_STAGE
    hidden = tree["properties"]["heads"]["additionalProperties"]["properties"]["hidden"]
    assert hidden["items"]["maximum"] == MAX_HIDDEN_WIDTH and hidden["maxItems"] == MAX_HIDDEN_LAYERS
    assert tree["$defs"]["head"]["properties"]["hidden"]["maximum"] == MAX_HIDDEN_WIDTH
    assert tree["properties"]["threads"]["maximum"] == options.THREADS_MAX
    reject = tree["properties"]["evaluate"]["properties"]["reject"]["properties"]
    assert reject["fraction_step"]["minimum"] == MIN_FRACTION_STEP
    load_params(REPO / "params.yaml")  # the shipped params are within every bound


# ---------------------------------------------------------------------- record_peak_memory never raises


def test_record_peak_memory_never_raises(tmp_path, monkeypatch):
    """It runs after the command, outside its error handling: `threads: 100000` once left too little
    address space to import `resource`, and the ImportError became a traceback and exit 1."""
    target = {PEAK_MEMORY_LOG: str(tmp_path / "peaks.jsonl")}
    assert record_peak_memory(object(), 2, target) is None  # arguments it cannot read
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    assert record_peak_memory(build_parser().parse_args(["methods"]), 2, target) is None
    assert not (tmp_path / "peaks.jsonl").exists()


# ---------------------------------------------------------------------- 4. CLI options


@pytest.mark.parametrize("argv, words", [
    (["data", "pack", "ijb", "imgs", "--subjects", "s.csv", "--name", "t", "--out", "o", "--seed", "-1"],
     ["argument --seed", "-1 is outside the allowed range"]),
    (["data", "pack", "rec", "imgs", "--out", "o", "--align", "mtcnn", "--threads", "-3"],
     ["argument --threads", "-3 is outside the allowed range [1, 1024]"]),
    (["data", "pack", "ijb", "imgs", "--subjects", "s.csv", "--name", "t", "--out", "o", "--impostor-pairs", "-5"],
     ["argument --impostor-pairs", "-5 is outside the allowed range"]),
    (["data", "pack", "ijb", "imgs", "--subjects", "s.csv", "--name", "t", "--out", "o",
      "--templates-per-subject", "0"], ["argument --templates-per-subject"]),
    (["data", "pack", "bin", "pairs.txt", "--out", "o.bin", "--min-score", "7"], ["argument --min-score"]),
    (["evaluate", "reject", "--embeddings", "e.npz", "--out", "r.json", "--fraction-step", "1e-9"],
     ["argument --fraction-step", "1e-9 is outside the allowed range [0.0001, 1]"]),
    (["train", "--params", "p.yaml", "--model", "m", "--out", "o", "--threads", "100000"],
     ["argument --threads", "outside the allowed range [1, 1024]"]),
], ids=["pack-seed", "pack-threads", "impostor-pairs", "templates-per-subject", "min-score", "fraction-step",
        "threads"])
def test_numeric_options_are_checked_at_parse_time(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, message, elapsed = run_inprocess(argv, capsys)
    assert_refused(code, message, *words)
    assert elapsed < 5 and not (tmp_path / "o").exists() and not (tmp_path / "r.json").exists()


def test_pack_ijb_refuses_negative_impostor_pairs_before_reading_images(tmp_path):
    from facetrust.pack.ijb import pack_ijb

    with pytest.raises(InputError, match="--impostor-pairs -5: must be at least 0"):
        pack_ijb(tmp_path / "no-images", tmp_path / "no.csv", tmp_path / "o", name="t", impostor_pairs=-5)


def test_reject_fractions_are_bounded_whatever_builds_the_settings():
    from facetrust.evaluate.settings import RejectSettings

    assert len(RejectSettings(fraction_step=1e-4, max_fraction=0.99).fractions()) == 9901
    with pytest.raises(ConfigError, match="evaluate.reject.fraction_step: 1e-09 is outside"):
        RejectSettings(fraction_step=1e-9).fractions()


def test_params_fraction_step_below_the_limit_is_refused_at_validation(tmp_path, capsys):
    params = params_yaml(tmp_path, extra="evaluate:\n  reject: {fraction_step: 1.0e-9}\n")
    code, message, _ = run_inprocess(["train", "--params", str(params), "--model", "m", "--out",
                                      str(tmp_path / "o")], capsys)
    assert_refused(code, message, "params.yaml", "evaluate.reject.fraction_step", "less than the minimum of 0.0001")


def test_a_model_within_each_limit_but_too_large_as_a_whole_is_named_by_its_params_key(tmp_path, capsys):
    # width 1024 is allowed alone; four stages of it (1024..8192 channels) hold far above the budget
    params = params_yaml(tmp_path, model="{backbone: iresnet, backbone_options: {layers: [2, 2, 2, 2], width: 1024}, "
                                         "input_size: [16, 16], embedding_size: 8, head: {kind: arcface}}")
    code, message, elapsed = run_inprocess(["train", "--params", str(params), "--model", "m", "--train-data",
                                            str(tmp_path / "absent"), "--out", str(tmp_path / "o")], capsys)
    assert_refused(code, message, f"{params}: models.m:", "above the limit")
    assert elapsed < 10 and not (tmp_path / "o").exists()  # before the (absent) training set is read


def test_a_refused_pth_does_not_relay_torchs_advice_to_load_it_unsafely(tmp_path, capsys):
    import pickle

    class Evil:  # unpickling this would run a command
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Evil()}, protocol=4))
    code, message, _ = run_inprocess(["import-model", "--path", str(tmp_path / "evil.pth"), "--out",
                                      str(tmp_path / "m")], capsys)
    assert_refused(code, message, "evil.pth", "refused by the weights-only loader", "never loaded otherwise")
    assert "weights_only` set to `False`" not in message and "UserWarning" not in message
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
