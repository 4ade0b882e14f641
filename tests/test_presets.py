"""Real-data presets in config/: valid once merged the way Snakemake merges them, paper settings,
and a Snakemake dry run on empty stand-in files in the expected layout lists the real-data DAG.

Snakemake 9 folds `--configfile` into the Snakefile's `configfile: "params.yaml"` with
`snakemake.utils.update_config` (recursive: keys added or overwritten, never removed);
`--replace-workflow-config` discards params.yaml first. The presets are written for the latter.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from facetrust.config import validate_params

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"
PRESETS = sorted((REPO / "config").glob("*.yaml"))
PRESET_IDS = [p.stem for p in PRESETS]
PAPER_FARS = [1.0e-6, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def snakemake_config(preset: Path, replace: bool) -> dict:
    """The config dict the Snakefile sees, built as snakemake.workflow.Workflow.configfile does:
    params.yaml first, then the --configfile dict merged over it (or over {} with
    --replace-workflow-config)."""
    config = {} if replace else _load(REPO / "params.yaml")
    update_config(config, _load(preset))
    return config


def test_presets_exist():
    assert {p.name for p in PRESETS} >= {
        "ijbc_r50_ms1mv2.yaml", "ijbb_r50_ms1mv2.yaml", "lfw_sphereface20_casia.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_preset_validates_as_the_whole_configuration(preset):
    config = validate_params(snakemake_config(preset, replace=True), source=str(preset))
    datasets = config["datasets"]
    assert datasets["source"] == "files"
    # Nothing may point at the synthetic benchmark, or the DAG would need `synthesize`.
    paths = [datasets["train"], *datasets["pairs"].values(), *datasets["ijb"].values()]
    assert not [p for p in paths if p.startswith("data/synth")]
    assert config["align"]["output_size"] == [112, 112]
    assert config["evaluate"]["fars"] == PAPER_FARS
    for name, model in config["models"].items():
        if model["source"] == "pretrained":  # evaluated, never trained: a file and its input convention
            assert model["path"].startswith("data/pretrained/") and model["input_size"] == [112, 112], name
            continue
        train = model["train"]
        assert model["embedding_size"] == 512, name
        assert train["lr_schedule"] == "step" and train["milestones"] == sorted(train["milestones"])
        assert 0 < min(train["milestones"]) and max(train["milestones"]) < train["epochs"], name


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_plain_merge_would_keep_the_synthetic_sets_hence_replace_flag(preset):
    merged = validate_params(snakemake_config(preset, replace=False), source=str(preset))
    # update_config cannot delete keys: the embedded default's model and sets survive the merge...
    assert "arcface" in merged["models"] and "synth_lfw" in merged["datasets"]["pairs"]
    # ...so each preset tells the user to run it with --replace-workflow-config.
    header = preset.read_text().split("\n\n")[0]
    assert f"--configfile config/{preset.name} --replace-workflow-config" in header


@pytest.mark.parametrize("name", ["ijbc_r50_ms1mv2", "ijbb_r50_ms1mv2"])
def test_ijb_presets_are_arcface_and_cosface_r50_on_ms1mv2(name):
    config = validate_params(snakemake_config(REPO / "config" / f"{name}.yaml", replace=True))
    heads = {m["head"]["kind"]: m["head"] for m in config["models"].values()}
    assert heads["arcface"] == {"kind": "arcface", "s": 64.0, "m": 0.5}
    assert heads["cosface"] == {"kind": "cosface", "s": 64.0, "m": 0.35}
    for model in config["models"].values():
        assert model["backbone"] == "iresnet50" and model["backbone_options"] == {"width": 64}
        assert model["input_size"] == [112, 112]
        assert (model["train"]["batch_size"], model["train"]["lr"]) == (512, 0.1)
    ijb = name[:4]
    assert list(config["datasets"]["ijb"]) == [ijb]
    assert config["report"]["ijbc_table"]["test_set"] == ijb


def test_lfw_preset_is_sphereface20_a_softmax_on_casia_112x96():
    config = validate_params(snakemake_config(REPO / "config" / "lfw_sphereface20_casia.yaml", replace=True))
    (model,) = config["models"].values()
    assert (model["backbone"], model["input_size"]) == ("sphere20", [112, 96])
    assert model["head"]["kind"] == "sphereface" and model["head"]["m"] == 4
    assert config["datasets"]["ijb"] == {}
    assert "lfw" in config["datasets"]["pairs"]


def test_preset_backbones_are_registered():
    from facetrust.models import available_backbones

    names = {m["backbone"] for p in PRESETS for m in _load(p)["models"].values()}
    assert names <= set(available_backbones())


# --------------------------------------------------------------------------- dry runs


def _stand_in_files(preset: Path, workdir: Path) -> None:
    """Empty files in the layout the preset points at (training pack, .bin sets, IJB meta)."""
    datasets = _load(preset)["datasets"]
    train = workdir / datasets["train"]
    train.mkdir(parents=True)
    for name in ("train.rec", "train.idx", "property"):
        (train / name).touch()
    for path in datasets["pairs"].values():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).touch()
    for model in _load(preset)["models"].values():
        if model.get("source") == "pretrained":
            (workdir / model["path"]).parent.mkdir(parents=True, exist_ok=True)
            (workdir / model["path"]).touch()
    for name, path in datasets["ijb"].items():
        (workdir / path / "loose_crop").mkdir(parents=True)
        (workdir / path / "meta").mkdir()
        for part in ("face_tid_mid", "name_5pts_score", "template_pair_label"):
            (workdir / path / "meta" / f"{name}_{part}.txt").touch()


# The targets each newer preset's header tells the user to build.
PRESET_TARGETS = {
    "ijb_pretrained_r50_r100": ["results/ijbc_table.csv", "results/ijbb_table.csv", "results/verification_table.csv"],
    "scf_ijb_r100_ms1mv2": ["results/ijbc_table.csv", "results/ijbb_table.csv"],
    "scaleface_ijbc_r50_ms1mv2": ["results/ijbc_table.csv", "results/figures/reject_ijbc.png"],
    "xcos_lfw_irse50_casia": ["results/verification_table.csv"],
    "inversion_arcface_r50_ms1mv2": ["results/verification_table.csv"],
    "own_data": ["results/ijbc_table.csv", "results/verification_table.csv"],
}


def _targets(preset: Path) -> list[str]:
    if preset.stem in PRESET_TARGETS:
        return PRESET_TARGETS[preset.stem]
    config = _load(preset)
    if config["datasets"]["ijb"]:
        return ["results/ijbc_table.csv"]
    return [f"embeddings/{model}/{pairs}.npz" for model in config["models"] for pairs in config["datasets"]["pairs"]]


def _job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    table = output.split("Job stats:")[-1]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M) if rule != "total"}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """{preset stem: job counts}; the dry runs (~5 s of CPU each) run three at a time."""
    if not SNAKEMAKE.exists():
        pytest.skip("no .venv/bin/snakemake")
    results = {}
    for start in range(0, len(PRESETS), 3):
        running = {}
        for preset in PRESETS[start : start + 3]:
            workdir = tmp_path_factory.mktemp(preset.stem)
            shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
            _stand_in_files(preset, workdir)
            command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n", "--cores", "1",
                       "--configfile", str(preset), "--replace-workflow-config", *_targets(preset)]
            running[preset.stem] = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, text=True)
        for stem, process in running.items():
            output, _ = process.communicate(timeout=300)
            assert process.returncode == 0, f"{stem}: snakemake -n failed:\n{output[-3000:]}"
            results[stem] = _job_counts(output)
    return results


def test_presets_cover_the_papers_and_the_pretrained_evaluation():
    assert {p.stem for p in PRESETS} >= set(PRESET_TARGETS) | {"lfw_sphereface20_casia"}


@pytest.mark.parametrize("stem", sorted(PRESET_TARGETS))
def test_each_preset_header_names_the_targets_the_dry_run_builds(stem):
    preset = REPO / "config" / f"{stem}.yaml"
    header = preset.read_text().split("\n\n")[0]
    for target in _targets(preset):
        assert target in header, target


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_dry_run_lists_real_data_jobs_without_synthesis(dry_runs, preset):
    counts = dry_runs[preset.stem]
    config = validate_params(snakemake_config(preset, replace=True))
    pretrained = [m for m, model in config["models"].items() if model["source"] == "pretrained"]
    n_models = len(config["models"]) - len(pretrained)
    assert "synthesize" not in counts
    assert counts.get("import_model", 0) == len(pretrained)
    if "results/ijbb_table.csv" in _targets(preset):
        assert counts["ijbb_table"] == 1 and counts["align"] == len(config["datasets"]["ijb"]) == 2
    if preset.stem in PRESET_TARGETS:  # the newer presets: one check per kind of job
        assert counts.get("train", 0) == n_models
        assert ("decode" in counts) == bool(n_models or config["heads"])
        heads = {(v["model"], v["head"]) for v in config["variants"].values() if "head" in v}
        assert counts.get("fit_head", 0) == len(heads)
        return
    assert counts["decode"] == 1
    assert counts["train"] == n_models
    if config["datasets"]["ijb"]:
        assert counts["align"] == 1
        assert counts["embed"] == counts["evaluate_ijb"] == n_models
        assert counts["ijbc_table"] == 1
    else:
        assert counts["embed"] == n_models * len(config["datasets"]["pairs"])
        assert "align" not in counts

