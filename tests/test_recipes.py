"""docs/ARCHITECTURE.md's recipes, followed in a temporary copy of the package: the new thing is
one new file plus one registration line, and it reaches the CLI, the schema and the outputs."""

from __future__ import annotations

import csv
import difflib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facetrust"


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the package under ``tmp_path/src`` (what a contributor edits)."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "facetrust", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _register(copy: Path, relative: str, old: str, new: str) -> None:
    path = copy / "src" / "facetrust" / relative
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def _changed_lines(copy: Path) -> tuple[list[str], list[str]]:
    """(new files, changed lines of existing files) of the copy against the package."""
    new, changed = [], []
    for path in sorted((copy / "src" / "facetrust").rglob("*.py")):
        relative = path.relative_to(copy / "src" / "facetrust")
        original = PACKAGE / relative
        if not original.exists():
            new.append(str(relative))
            continue
        diff = difflib.unified_diff(original.read_text().splitlines(), path.read_text().splitlines(), lineterm="", n=0)
        changed += [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return new, changed


def _python(copy: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_paper_report_is_one_module_and_its_name_in_paper_modules(copy, tmp_path):
    (copy / "src" / "facetrust" / "report" / "papers" / "planted.py").write_text(textwrap.dedent('''
        """A planted paper: counts the rows of a table."""
        from pathlib import Path

        from facetrust.report.claims import Claim
        from facetrust.report.papers import Paper


        def add_arguments(p):
            p.add_argument("--table", required=True)
            p.add_argument("--out", required=True)


        def write(args):
            rows = len(Path(args.table).read_text().splitlines()) - 1
            Path(args.out).write_text(f"# Planted\\n\\n{rows} rows\\n")
            return [Claim(f"the table has {rows} rows", "held")]


        PAPER = Paper("planted", "A planted paper", add_arguments, write)
    '''))
    _register(copy, "report/papers/__init__.py", '"explanations", "inversion")', '"explanations", "inversion", "planted")')
    new, changed = _changed_lines(copy)
    assert new == ["report/papers/planted.py"] and len(changed) == 2  # one line, before and after
    (tmp_path / "t.csv").write_text("a\n1\n2\n")
    done = _python(copy, """
        from facetrust.cli import main
        assert main(["report", "paper", "planted", "--table", "t.csv", "--out", "planted.md"]) == 0
        assert main(["methods"]) in (0, None)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "planted.md").read_text() == "# Planted\n\n2 rows\n"
    assert "[held] the table has 2 rows" in done.stdout
    assert "paper reports (report paper NAME): sphereface, scf, scaleface, xcos, explanations, inversion, planted" \
        in done.stdout


def test_a_margin_with_its_own_options_is_one_module_and_one_import(copy, tmp_path):
    (copy / "src" / "facetrust" / "models" / "margins" / "planted_margin.py").write_text(textwrap.dedent('''
        """A planted margin whose options no other margin has (h, t_alpha)."""
        from facetrust.models.margins.head import AngularMargin
        from facetrust.models.margins.kinds import MARGINS
        from facetrust.models.margins.scale import FixedScale


        @MARGINS.register("planted")
        def planted(s: float = 64.0, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01) -> dict:
            return {"margin": AngularMargin(m3=m * h / (h + t_alpha)), "scale": FixedScale(s)}
    '''))
    _register(copy, "models/margins/__init__.py", "from facetrust.models.margins.kinds import MARGINS, available_heads, build_head\n",
              "from facetrust.models.margins.kinds import MARGINS, available_heads, build_head\n"
              "from facetrust.models.margins import planted_margin  # noqa: F401\n")
    new, changed = _changed_lines(copy)
    assert new == ["models/margins/planted_margin.py"] and len(changed) == 1  # one import line added
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    done = _python(copy, f"""
        import copy, json, yaml
        import torch
        from facetrust.config import validate_params
        from facetrust.cli import main
        from facetrust.errors import ConfigError
        from facetrust.models.margins import build_head
        params = yaml.safe_load(open({str(params)!r}))
        params["models"]["arcface"]["head"] = {{"kind": "planted", "s": 32.0, "h": 0.5, "t_alpha": 0.02}}
        validate_params(copy.deepcopy(params))
        params["models"]["arcface"]["head"]["m1"] = 0.3
        try:
            validate_params(copy.deepcopy(params))
            raise SystemExit("m1 accepted")
        except ConfigError as error:
            print("refused:", error)
        head = build_head("planted", 8, 5, s=32.0, h=0.5, t_alpha=0.02)
        logits = head(torch.nn.functional.normalize(torch.randn(4, 8), dim=1), torch.tensor([0, 1, 2, 3]))
        print("logits", tuple(logits.shape))
        assert main(["methods"]) in (0, None)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: params.yaml: models.arcface.head: 'm1' is not an option of margin 'planted'" in done.stdout
    assert "logits (4, 5)" in done.stdout
    assert "planted" in next(line for line in done.stdout.splitlines() if line.startswith("margins:"))


def test_an_uncertainty_head_with_its_pooling_is_two_modules_and_two_imports(copy, tmp_path):
    """The head lives with the models and its pooling with evaluation; the floors forbid one file for
    both (models never import evaluate), so this recipe is two new modules and one import each."""
    (copy / "src" / "facetrust" / "models" / "uncertainty" / "planted_head.py").write_text(textwrap.dedent('''
        """A planted head: log sigma^2 from the pooled feature map, fitted by the PFE-style MLS loss."""
        import numpy as np
        import torch
        import torch.nn as nn

        from facetrust.models.uncertainty.methods import FittedMethod, _register_head


        @_register_head
        class Planted(FittedMethod):
            name = "planted"
            batches = "identity"
            needs_centres = False

            def build(self, feature_map_shape, embedding_size, config, init_log_kappa=0.0):
                channels = feature_map_shape[0]
                return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))

            def loss(self, head, embeddings, feature_maps, labels, centres, radius):
                log_sigma_sq = head(feature_maps)[:, 0]
                return (log_sigma_sq ** 2).mean()

            def predict(self, outputs):
                return torch.exp(outputs[:, 0]).numpy().astype(np.float32), {}
    '''))
    (copy / "src" / "facetrust" / "evaluate" / "planted_pooling.py").write_text(textwrap.dedent('''
        """The planted head's pooling: unit image features weighted by 1/sigma^2."""
        import numpy as np

        from facetrust.evaluate.fusion import l2_normalize, weighted_group_sum
        from facetrust.evaluate.poolings import POOLINGS, Pooling


        def _precision_sum(embeddings, template_index, n_templates, media_ids, image_weight, uncertainty, **_flags):
            weight = image_weight / np.asarray(uncertainty, dtype=np.float64).reshape(-1)
            return l2_normalize(weighted_group_sum(template_index, n_templates, weight,
                                                   l2_normalize(embeddings.astype(np.float64))))


        POOLINGS.register("planted_precision")(Pooling("unit features weighted by 1/sigma^2", _precision_sum,
                                                       uncertainty="sigma_sq"))
    '''))
    methods = copy / "src" / "facetrust" / "models" / "uncertainty" / "methods.py"
    methods.write_text(methods.read_text() + "from facetrust.models.uncertainty import planted_head  # noqa: E402,F401\n")
    poolings = copy / "src" / "facetrust" / "evaluate" / "poolings.py"
    poolings.write_text(poolings.read_text() + "from facetrust.evaluate import planted_pooling  # noqa: E402,F401\n")
    new, changed = _changed_lines(copy)
    assert new == ["evaluate/planted_pooling.py", "models/uncertainty/planted_head.py"] and len(changed) == 2
    done = _python(copy, """
        import numpy as np
        import torch
        from facetrust.cli import build_parser, main
        from facetrust.config import schema, schema_node
        from facetrust.evaluate.ijb import template_features_float64
        from facetrust.models.uncertainty.methods import UNCERTAINTY_HEADS

        tree = schema()
        assert "planted" in schema_node(tree, ("heads", "*", "method"))["enum"]
        assert "planted_precision" in schema_node(tree, ("variants", "*", "pooling"))["enum"]
        args = build_parser().parse_args(["evaluate", "ijb", "--embeddings", "e.npz", "--protocol", "p", "--name", "n",
                                          "--out", "m.json", "--pooling", "planted_precision"])
        assert args.pooling == "planted_precision"
        head = UNCERTAINTY_HEADS.get("planted")
        module = head.build((8, 3, 3), 16, {})
        sigma_sq, _ = head.predict(module(torch.randn(5, 8, 3, 3)).detach())
        assert sigma_sq.shape == (5,) and (sigma_sq > 0).all()
        rng = np.random.default_rng(0)
        features = rng.normal(size=(6, 4))
        uncertainty = np.array([1.0, 1e6, 1.0, 1.0, 1.0, 1.0])  # image 1 all but ignored
        ids, pooled = template_features_float64(features, np.array([1, 1, 2, 2, 3, 3]), np.arange(6),
                                                pooling="planted_precision", uncertainty=uncertainty)
        unit = features[0] / np.linalg.norm(features[0])
        print("template 1 vs image 0:", round(float(pooled[0] @ unit), 4))
        assert main(["methods"]) in (0, None)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "template 1 vs image 0: 1.0" in done.stdout
    listed = done.stdout.splitlines()
    assert "planted" in next(line for line in listed if line.startswith("uncertainty heads"))
    assert "planted_precision" in next(line for line in listed if line.startswith("template poolings"))


def test_a_metric_is_one_module_and_one_import(copy, tmp_path):
    """A planted FNMR@FMR metric (ISO/IEC 19795-1: 1 - TAR at each FAR) reaches the metrics file,
    the result table, the DVC view, the printed summary and ``facetrust methods``."""
    (copy / "src" / "facetrust" / "evaluate" / "planted_metric.py").write_text(textwrap.dedent('''
        """A planted metric: FNMR at each FMR, the complement of the TAR the protocol read."""
        from facetrust.evaluate.metrics import metric
        from facetrust.evaluate.roc import plain_float, tar_at_far


        @metric("fnmr_at_fmr", "FNMR at each FMR", column="FNMR@FMR={far}", shown=("table", "view", "summary"))
        def fnmr_at_fmr(scored):
            tars = scored.tar if scored.tar is not None else tar_at_far(scored.fpr, scored.tpr, scored.fars,
                                                                        method=scored.tar_method)
            return {far: plain_float(1.0 - tar) for far, tar in tars.items()}
    '''))
    metrics = copy / "src" / "facetrust" / "evaluate" / "metrics.py"
    metrics.write_text(metrics.read_text() + "from facetrust.evaluate import planted_metric  # noqa: E402,F401\n")
    new, changed = _changed_lines(copy)
    assert new == ["evaluate/planted_metric.py"] and len(changed) == 1
    rng = np.random.default_rng(3)
    same = np.arange(400) % 2 == 0
    first = rng.normal(size=(400, 16))
    second = np.where(same[:, None], first + 3.0 * rng.normal(size=(400, 16)), rng.normal(size=(400, 16)))
    embedding = np.empty((800, 16), dtype=np.float32)
    embedding[0::2], embedding[1::2] = first, second
    np.savez(tmp_path / "lfw.npz", image=np.array([f"{i}.jpg" for i in range(800)]), embedding=embedding,
             issame=same)
    done = _python(copy, """
        import csv, json
        from facetrust.cli import main
        from facetrust.report.dvc_metrics import write_dvc_view
        assert main(["evaluate", "pairs", "--embeddings", "lfw.npz", "--out", "results/metrics/v/lfw.json",
                     "--roc", "results/roc/v/lfw.csv"]) in (0, None)
        assert main(["report", "table", "--metrics", "results/metrics/v/lfw.json", "--out", "table.csv"]) in (0, None)
        write_dvc_view("results/metrics", "results/roc", None, "dvc")
        assert main(["methods"]) in (0, None)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "metrics" / "v" / "lfw.json").read_text())
    fnmr, tar = record["fnmr_at_fmr"], record["tar_at_far"]
    assert set(fnmr) == set(tar) and all(fnmr[far] == pytest.approx(1 - tar[far]) for far in tar)
    assert 0 < fnmr["1e-01"] < 1
    with open(tmp_path / "table.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["FNMR@FMR=1e-01"]) == pytest.approx(fnmr["1e-01"], abs=1e-6)
    view = json.loads((tmp_path / "dvc" / "metrics" / "v.json").read_text())["lfw"]
    assert view["FNMR@FMR=1e-01"] == pytest.approx(fnmr["1e-01"])
    printed = json.loads(done.stdout[:done.stdout.index("\n}\n") + 3])  # the summary evaluate printed
    assert printed["fnmr_at_fmr"] == fnmr
    assert "fnmr_at_fmr" in next(line for line in done.stdout.splitlines() if line.startswith("metrics"))


def test_an_explanation_map_is_one_module_and_one_import(copy, tmp_path):
    """A planted saliency map (the plain gradient of the cosine) is an ``explain map --method``
    choice, a line of ``facetrust methods`` and a map of the sanity and faithfulness stages'
    ``pixel_methods``, beside the random-pixel control."""
    (copy / "src" / "facetrust" / "explain" / "planted_map.py").write_text(textwrap.dedent('''
        """A planted map: the plain gradient of the pair's cosine with respect to the first image."""
        import numpy as np
        import torch

        from facetrust.explain.maps import MAP_METHODS, MapMethod, PairMap


        def saliency(embed, image1, image2, *, scale):
            image1 = image1.clone().requires_grad_(True)
            cosine = torch.nn.functional.cosine_similarity(embed(image1[None]), embed(image2[None]))[0]
            cosine.backward()
            signed = scale * image1.grad.sum(0).numpy()
            return PairMap("saliency", np.maximum(signed, 0), np.maximum(-signed, 0), float(cosine.detach()),
                           {"signed": signed})


        MAP_METHODS.register("saliency")(MapMethod(
            "plain gradient of the cosine", saliency, lambda settings, threshold, seed: {"scale": 2.0},
            support=lambda r: r.contributions["signed"], against=lambda r: -r.contributions["signed"]))
    '''))
    maps = copy / "src" / "facetrust" / "explain" / "maps.py"
    maps.write_text(maps.read_text() + "from facetrust.explain import planted_map  # noqa: E402,F401\n")
    new, changed = _changed_lines(copy)
    assert new == ["explain/planted_map.py"] and len(changed) == 1
    done = _python(copy, f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_explain_trust import SIZE, faces, planted_model
        from facetrust.cli import build_parser, main
        from facetrust.explain.method_maps import MapSettings, pixel_methods

        args = build_parser().parse_args(["explain", "map", "a.png", "b.png", "--model", "m", "--method", "saliency",
                                          "--out", "o.png"])
        assert args.method == "saliency"
        maps = pixel_methods(planted_model(), faces(2, 1), faces(2, 2), MapSettings(steps=2, masks=8, cells=3,
                             batch_size=8), np.random.default_rng(0), cosine_threshold=0.0, progress=False)
        print("stage maps:", ", ".join(maps))
        assert maps["saliency"].support.shape == (2, SIZE, SIZE) and np.abs(maps["saliency"].support).sum() > 0
        np.testing.assert_array_equal(maps["saliency"].against, -maps["saliency"].support)
        assert main(["methods"]) in (0, None)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage maps: xssab, integrated_gradients, perturbation, saliency, random_pixels" in done.stdout
    assert "saliency" in next(line for line in done.stdout.splitlines() if line.startswith("explanation maps"))
