"""No command loses a user's data (facetrust.outputs): a non-empty --out directory that is not the
command's own is refused, an output never overwrites an input, one run per output directory, a
killed run's temporaries go on the next run, and a failed commit (provenance included) leaves
nothing; one error line per failure (exit 2 bad input or usage, exit 1 the machine or the run)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bad_input_fixtures as fx
from facetrust import outputs
from facetrust.cli import main

TINY_SYNTH = ["--set", "train_identities=4", "--set", "train_images_per_identity=[2,2]", "--set", "pair_identities=20",
              "--set", "pairs_per_fold=2", "--set", "ijb_identities=4", "--set", "ijb_impostor_pairs=20"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pairs_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, image=np.array([str(i) for i in range(40)]), embedding=rng.normal(size=(40, 8)).astype(np.float32),
             issame=np.arange(20) % 2 == 0)
    return path


# --------------------------------------------------------------------------- directories we do not own


def test_synth_refuses_a_non_empty_directory_and_leaves_it_intact(tmp_path, capsys):
    out = tmp_path / "thesis"
    (out / "chapters").mkdir(parents=True)
    (out / "chapters" / "one.tex").write_text("three years of work")
    (out / "notes.txt").write_text("do not delete")
    before = _tree(out)
    assert main(["synth", "--out", str(out), *TINY_SYNTH]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "not empty" in line and "--force" in line
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no lock, staging or marker left


def test_synth_reruns_into_its_own_output_and_force_overrides_the_refusal(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), *TINY_SYNTH]) == 0
    first = _tree(out)
    assert json.loads((out / outputs.MARKER).read_text()) == {"facetrust_output_of": "synth"}
    assert main(["synth", "--out", str(out), *TINY_SYNTH]) == 0  # its own previous output: replaced
    assert _tree(out) == first  # byte for byte, marker included
    # a directory another command made is not synth's
    (out / outputs.MARKER).write_text(outputs.marker_text("align"))
    assert main(["synth", "--out", str(out), *TINY_SYNTH]) == 2
    assert "'facetrust align' output" in _one_error_line(capsys.readouterr().err)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert main(["synth", "--out", str(other), "--force", *TINY_SYNTH]) == 0
    assert _tree(other) == first  # --force: synth replaces the whole directory


def test_empty_folders_are_an_empty_directory(tmp_path):
    """Snakemake makes the folders of a job's outputs (data/synth/train/, …) before the job runs."""
    (tmp_path / "synth" / "train").mkdir(parents=True)
    (tmp_path / "synth" / "ijb" / "x" / "meta").mkdir(parents=True)
    outputs.check_may_write(tmp_path / "synth", "synth", force=False)
    (tmp_path / "synth" / "ijb" / "x" / "meta" / "notes").write_text("a file")
    with pytest.raises(outputs.InputError, match="not empty"):
        outputs.check_may_write(tmp_path / "synth", "synth", force=False)


def test_a_directory_with_only_a_provenance_record_of_the_command_is_its_own(tmp_path, monkeypatch):
    """Outputs made before markers existed are recognised by their provenance record."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aligned").mkdir()
    (tmp_path / "aligned" / "index.csv").write_text("image,detector_score\n")
    assert outputs.previous_command(Path("aligned")) is None
    (tmp_path / "provenance").mkdir()
    (tmp_path / "provenance" / "aligned.json").write_text(json.dumps({"command": ["facetrust", "-v", "align"]}))
    assert outputs.previous_command(Path("aligned")) == "align"
    outputs.check_may_write(Path("aligned"), "align", force=False)
    with pytest.raises(outputs.InputError, match="not a previous 'facetrust train' output"):
        outputs.check_may_write(Path("aligned"), "train", force=False)


def test_align_after_a_failure_leaves_no_empty_directory(tmp_path, capsys):
    root = fx.ijb_dir(tmp_path / "ijb", crops=[fx.jpeg(10, 64), fx.corrupt_jpeg(3, 64), fx.jpeg(12, 64)])
    assert main(["align", "--in", str(root), "--name", "ijbx", "--out", str(tmp_path / "aligned")]) == 2
    _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ijb"]


# --------------------------------------------------------------------------- inputs are never outputs


def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, capsys):
    embeddings = _pairs_npz(tmp_path / "e.npz")
    before = embeddings.read_bytes()
    assert main(["evaluate", "pairs", "--embeddings", str(embeddings), "--out", str(embeddings)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and "--embeddings" in line and "e.npz" in line
    (tmp_path / "roc.csv").symlink_to(embeddings)  # a link to the input is the input
    assert main(["evaluate", "pairs", "--embeddings", str(embeddings), "--out", str(tmp_path / "m.json"),
                 "--roc", str(tmp_path / "roc.csv")]) == 2
    assert "--roc" in _one_error_line(capsys.readouterr().err)
    os.link(embeddings, tmp_path / "hard.npz")  # so is a hard link
    assert main(["evaluate", "pairs", "--embeddings", str(embeddings), "--out", str(tmp_path / "hard.npz")]) == 2
    capsys.readouterr()
    assert embeddings.read_bytes() == before
    assert not (tmp_path / "m.json").exists()


def test_embed_over_its_test_set_is_refused(tmp_path, capsys):
    pairs = fx.bin_with_images(tmp_path / "lfw.bin", [fx.jpeg(0), fx.jpeg(1)])
    before = pairs.read_bytes()
    (tmp_path / "model").mkdir()
    assert main(["embed", "--model", str(tmp_path / "model"), "--test-set", str(pairs), "--out", str(pairs)]) == 2
    assert "--test-set" in _one_error_line(capsys.readouterr().err)
    assert pairs.read_bytes() == before


def test_an_output_inside_an_input_directory_or_holding_an_input_is_refused(tmp_path, capsys):
    root = fx.ijb_dir(tmp_path / "ijb")
    assert main(["align", "--in", str(root), "--name", "ijbx", "--out", str(root / "aligned")]) == 2
    assert "inside the input directory --in" in _one_error_line(capsys.readouterr().err)
    params = tmp_path / "synth" / "params.yaml"
    params.parent.mkdir()
    params.write_text("seed: 1\n")
    assert main(["synth", "--params", str(params), "--out", str(params.parent), "--force", *TINY_SYNTH]) == 2
    assert "holds the input --params" in _one_error_line(capsys.readouterr().err)
    assert params.read_text() == "seed: 1\n"


# --------------------------------------------------------------------------- one run per directory


def test_a_second_run_on_a_locked_directory_stops_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "synth"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nsys.path[:0] = sys.argv[2:]\nfrom pathlib import Path\n"
         "from facetrust.outputs import directory_lock\nwith directory_lock(Path(sys.argv[1]), 'synth'):\n"
         "    print('locked', flush=True)\n    sys.stdin.readline()\n", str(out), *sys.path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["synth", "--out", str(out), *TINY_SYNTH]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"PID {holder.pid}" in line and str(out) in line
        assert not out.exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert not outputs.lock_path(out).exists()  # the holder removed its lock file


def test_the_lock_is_released_and_removed_after_a_run(tmp_path):
    out = tmp_path / "d"
    with outputs.directory_lock(out, "align"):
        assert "PID" in outputs.lock_path(out).read_text()
        with pytest.raises(outputs.RunError, match=rf"PID {os.getpid()}, facetrust align"):
            with outputs.directory_lock(out, "align"):
                pass
    assert not outputs.lock_path(out).exists()
    with outputs.directory_lock(out, "align"):  # free again
        pass


# --------------------------------------------------------------------------- all or nothing


def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path):
    out = tmp_path / "aligned"
    out.mkdir()
    (out / ".aligned.rec.k3j2l1mn.tmp").write_bytes(b"half")  # atomic_path's temporary
    (out / "user.txt").write_text("kept")
    (tmp_path / ".aligned.x8d7.tmp").mkdir()  # staged_directory's staging tree
    (tmp_path / "notes.tmp").write_text("not ours: kept")
    removed = outputs.remove_orphans(out, directory=True)
    assert sorted(p.name for p in removed) == [".aligned.rec.k3j2l1mn.tmp", ".aligned.x8d7.tmp"]
    assert sorted(p.name for p in out.iterdir()) == ["user.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "notes.tmp"]


def _no_space_for(target: str, monkeypatch):
    """os.replace fails with ENOSPC when it would create a file named ``target``."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_align_on_a_full_disk_leaves_no_rec_without_index(tmp_path, capsys, monkeypatch):
    root = fx.ijb_dir(tmp_path / "ijb")
    _no_space_for("index.csv", monkeypatch)
    assert main(["align", "--in", str(root), "--name", "ijbx", "--out", str(tmp_path / "aligned")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(tmp_path / "aligned") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ijb"]


def test_pair_scores_on_a_full_disk_leave_no_metrics_without_roc(tmp_path, capsys, monkeypatch):
    issame = np.arange(40) % 2 == 0
    np.savez(tmp_path / "s.npz", issame=issame, score_names=np.array(["xcos"]),
             xcos=np.where(issame, 0.5, -0.5) + np.linspace(-0.6, 0.6, 40))
    _no_space_for("roc.csv", monkeypatch)
    assert main(["evaluate", "pairs", "--scores", str(tmp_path / "s.npz"), "--out", str(tmp_path / "m.json"),
                 "--roc", str(tmp_path / "roc.csv")]) == 1
    _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_a_provenance_record_that_cannot_be_written_leaves_no_outputs(tmp_path, capsys, monkeypatch):
    embeddings = _pairs_npz(tmp_path / "e.npz")
    args = ["evaluate", "pairs", "--embeddings", str(embeddings), "--out", str(tmp_path / "m.json"),
            "--roc", str(tmp_path / "roc.csv")]
    _no_space_for("m.json.provenance.json", monkeypatch)  # the commit of the record fails
    assert main(args) == 1
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]
    monkeypatch.undo()
    (tmp_path / "m.json.provenance.json").mkdir()  # no room for the record at all: found before any work
    assert main(args) == 1
    _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "m.json.provenance.json"]
    (tmp_path / "m.json.provenance.json").rmdir()
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "m.json", "m.json.provenance.json", "roc.csv"]


def test_edc_replicates_never_without_their_metrics(tmp_path, monkeypatch):
    from facetrust.evaluate import edc_protocol
    from facetrust.evaluate.bootstrap import BootstrapSettings

    rng = np.random.default_rng(0)
    images = np.array([f"{i // 4}/{i}" for i in range(80)])
    identity = np.array([int(name.split("/")[0]) for name in images])
    embedding = rng.normal(size=(80, 8)).astype(np.float32) + 3 * np.eye(20, 8)[identity].astype(np.float32)
    np.savez(tmp_path / "e.npz", image=images, embedding=embedding, issame=np.arange(40) % 2 == 0,
             uncertainty=rng.uniform(0.5, 1.5, 80).astype(np.float32), uncertainty_kind=np.asarray("pfe"))
    _no_space_for("edc.json", monkeypatch)
    settings = BootstrapSettings(5, 0, 0.95, tmp_path / "rep.npz", False)
    with pytest.raises(OSError):
        edc_protocol.run_evaluate_edc(tmp_path / "e.npz", tmp_path / "edc.json", bootstrap=settings, random_draws=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]


def test_a_diverged_run_says_where_its_last_good_checkpoint_is_in_one_line(tmp_path, capsys, monkeypatch):
    import yaml

    from facetrust.train import trainer
    from train_helpers import make_tiny_rec, tiny_config

    rec = make_tiny_rec(tmp_path / "rec")
    config = tiny_config(epochs=2)
    model = {key: config[key] for key in ("backbone", "backbone_options", "embedding_size", "input_size", "head")}
    model["train"] = {k: v for k, v in config.items() if k not in model and k != "threads"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "threads": 1, "models": {"tiny": model},
                                                          "datasets": {"train": str(rec)}}))
    real, calls = trainer.F.cross_entropy, {"n": 0}

    def nan_at(step):
        def loss(logits, labels):
            calls["n"] += 1
            value = real(logits, labels)
            return value * float("nan") if calls["n"] == step else value
        return loss

    argv = ["train", "--model", "tiny", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "model")]
    monkeypatch.setattr(trainer.F, "cross_entropy", nan_at(2))  # in the first epoch: no checkpoint yet
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "step 2 (epoch 1)" in line and "no checkpoint was written" in line
    assert not (tmp_path / "model").exists()
    calls["n"] = 0
    monkeypatch.setattr(trainer.F, "cross_entropy", nan_at(6))  # in the second: epoch 1's checkpoint stays
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err)
    checkpoint = tmp_path / "model" / "checkpoint.pt"
    assert f"the last good checkpoint is {checkpoint}" in line and checkpoint.is_file()


# --------------------------------------------------------------------------- numeric options

NUMERIC = [
    (["embed", "--model", "m", "--test-set", "t", "--out", "e.npz", "--batch-size", "0"], "--batch-size"),
    (["embed", "--model", "m", "--test-set", "t", "--out", "e.npz", "--threads", "-1"], "--threads"),
    (["evaluate", "pairs", "--embeddings", "e", "--out", "m", "--ci-level", "7"], "--ci-level"),
    (["evaluate", "pairs", "--embeddings", "e", "--out", "m", "--ci-level", "nan"], "--ci-level"),
    (["evaluate", "reject", "--embeddings", "e", "--out", "m", "--fraction-step", "0"], "--fraction-step"),
    (["evaluate", "reject", "--embeddings", "e", "--out", "m", "--max-fraction", "1.5"], "--max-fraction"),
    (["evaluate", "edc", "--embeddings", "e", "--out", "m", "--random-draws", "0"], "--random-draws"),
    (["evaluate", "edc", "--embeddings", "e", "--out", "m", "--starting-error", "1"], "--starting-error"),
    (["evaluate", "edc", "--embeddings", "e", "--out", "m", "--discard-limit", "-0.1"], "--discard-limit"),
    (["evaluate", "edc", "--embeddings", "e", "--out", "m", "--crfiqa-fmrs", "0"], "--crfiqa-fmrs"),
    (["evaluate", "ijb", "--embeddings", "e", "--out", "m", "--fars", "2,-1,nan"], "--fars"),
    (["evaluate", "ijb", "--embeddings", "e", "--out", "m", "--fars", ","], "--fars"),
    (["evaluate", "pairs", "--embeddings", "e", "--out", "m", "--bootstrap", "-5"], "--bootstrap"),
    (["evaluate", "pairs", "--embeddings", "e", "--out", "m", "--seed", "-1"], "--seed"),
    (["synth", "--out", "s", "--seed", "9" * 5000], "--seed"),
    (["synth", "--out", "s", "--seed", str(2**64)], "--seed"),
    (["align", "--in", "i", "--name", "n", "--out", "a", "--size", "0,112"], "--size"),
    (["align", "--in", "i", "--name", "n", "--out", "a", "--size", "112,112,3"], "--size"),
    (["align", "--in", "i", "--name", "n", "--out", "a", "--min-score", "2"], "--min-score"),
    (["import-model", "--path", "p", "--out", "o", "--std", "0"], "--std"),
    (["export", "onnx", "--model", "m", "--out", "o", "--tolerance", "inf"], "--tolerance"),
    (["export", "onnx", "--model", "m", "--out", "o", "--opset", "0"], "--opset"),
    (["explain", "score", "--model", "m", "--standard", "s", "--test-set", "t", "--out", "o", "--batch-pairs", "0"],
     "--batch-pairs"),
    (["explain", "map", "a", "b", "--model", "m", "--out", "o", "--masks", "0"], "--masks"),
    (["report", "scaleface", "--reject", "r", "--out", "o", "--alpha", "0"], "--alpha"),
    (["fetch", "lfw", "--retries", "-1"], "--retries"),
    (["fetch", "lfw", "--timeout", "0"], "--timeout"),
]


@pytest.mark.parametrize("argv, option", NUMERIC, ids=[f"{a[0]} {o} {a[-1][:8]}" for a, o in NUMERIC])
def test_a_numeric_option_out_of_range_is_exit_2_naming_it_and_its_range(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err, err
    assert "[" in err or "(" in err, err  # the allowed range
    assert len(err) < 2000  # a 5,000-digit value is not echoed back


def test_numeric_options_in_range_parse_as_before():
    from facetrust.cli import build_parser

    args = build_parser().parse_args(["evaluate", "ijb", "--embeddings", "e", "--protocol", "p", "--name", "n",
                                      "--out", "m", "--fars", "1e-4,0.1", "--ci-level", "0.9", "--bootstrap", "0",
                                      "--seed", "2026"])
    assert args.fars == (1e-4, 0.1) and args.level == 0.9 and args.n_resamples == 0 and args.seed == 2026
    defaults = build_parser().parse_args(["evaluate", "reject", "--embeddings", "e", "--out", "m"])
    # reject's own FARs (evaluate.reject.fars of the schema), not the IJB table's
    assert defaults.fars == (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2) and defaults.fraction_step == 0.01
    assert build_parser().parse_args(["align", "--in", "i", "--name", "n", "--out", "a", "--size", "112x96"]).size \
        == (112, 96)


# --------------------------------------------------------------------------- line endings


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_ijb_meta_files_read_alike_whatever_their_line_endings(tmp_path, ending):
    from facetrust.data.ijb import read_ijb_protocol

    lf = fx.ijb_dir(tmp_path / "lf")
    other = fx.ijb_dir(tmp_path / "other")
    for path in (other / "meta").iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", ending))
    a, b = read_ijb_protocol(lf, "ijbx"), read_ijb_protocol(other, "ijbx")
    assert list(a.images) == list(b.images) and np.array_equal(a.landmarks, b.landmarks)
    assert np.array_equal(a.landmark_lines, b.landmark_lines)
    assert np.array_equal(a.pairs, b.pairs) and np.array_equal(a.labels, b.labels)


def test_a_cr_only_meta_file_error_names_the_right_line(tmp_path, capsys):
    root = fx.ijb_dir(tmp_path / "ijb")
    fx.edit(root / "meta" / "ijbx_face_tid_mid.txt", "2.jpg 5 ", "2.jpg five ")
    for path in (root / "meta").iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    assert main(["align", "--in", str(root), "--name", "ijbx", "--out", str(tmp_path / "aligned")]) == 2
    assert "line 2, column 2: 'five' is not int" in _one_error_line(capsys.readouterr().err)


def test_a_cr_only_idx_reads_like_lf(tmp_path):
    from facetrust.data.recordio import read_idx

    root = fx.good_training_set(tmp_path / "set")
    lf = read_idx(root / "train.idx")
    (root / "train.idx").write_bytes((root / "train.idx").read_bytes().replace(b"\n", b"\r"))
    assert read_idx(root / "train.idx") == lf


def test_only_rank_0_of_torchrun_or_srun_owns_the_outputs():
    from facetrust.cli import main_process

    assert main_process({})
    assert main_process({"RANK": "0", "WORLD_SIZE": "4"}) and not main_process({"RANK": "3", "WORLD_SIZE": "4"})
    # srun: RANK is set from SLURM_PROCID only once the trainer joins the group
    assert not main_process({"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "8"})
    assert main_process({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "8"})
    assert main_process({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "1"})  # a one-task step: its own run
