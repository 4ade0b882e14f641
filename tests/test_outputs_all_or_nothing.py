"""A stage's outputs appear together or not at all; a diverged run keeps its last good checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facetrust.errors import InputError
from facetrust.io import outputs_together, staged_directory
from train_helpers import make_tiny_rec, tiny_config


def test_outputs_together_removes_what_the_block_wrote_when_it_fails(tmp_path):
    kept = tmp_path / "old.json"
    kept.write_text("{}")  # existed before and was not touched: stays
    with pytest.raises(RuntimeError):
        with outputs_together(tmp_path / "a.json", tmp_path / "b.csv", kept, None):
            (tmp_path / "a.json").write_text("{}")
            raise RuntimeError("disk full")
    assert not (tmp_path / "a.json").exists() and kept.exists()
    with outputs_together(tmp_path / "a.json"):
        (tmp_path / "a.json").write_text("{}")
    assert (tmp_path / "a.json").exists()


def test_evaluate_pairs_leaves_no_metrics_file_when_the_roc_file_cannot_be_written(tmp_path):
    from facetrust.evaluate.pairs import run_evaluate_pairs

    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 8)).astype(np.float32)
    np.savez(tmp_path / "e.npz", image=np.array([str(i) for i in range(40)]), embedding=features,
             issame=np.arange(20) % 2 == 0)
    (tmp_path / "roc.csv").mkdir()  # a directory where the ROC file should go: refused, naming it
    with pytest.raises(InputError, match="roc.csv: is a directory"):
        run_evaluate_pairs(tmp_path / "e.npz", tmp_path / "m.json", roc_out=tmp_path / "roc.csv")
    assert not (tmp_path / "m.json").exists()


def test_staged_directory_replaces_the_tree_only_on_success(tmp_path):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with staged_directory(out) as staging:
            (staging / "train").mkdir()
            raise ValueError("a later part failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"] and (out / "old.txt").exists()
    with staged_directory(out) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no staging or old tree left


def test_synth_that_fails_part_way_leaves_no_half_benchmark(tmp_path, monkeypatch):
    from facetrust.data.synthetic import SynthConfig, synthesize
    from facetrust.data.synthetic import writer

    def broken(*args, **kwargs):
        raise RuntimeError("the pair set failed")

    monkeypatch.setattr(writer, "_write_pairs", broken)
    config = SynthConfig.from_dict({"train_identities": 4, "train_images_per_identity": [2, 2]})
    with pytest.raises(RuntimeError, match="pair set"):
        synthesize(tmp_path / "synth", config, seed=1)
    assert list(tmp_path.iterdir()) == []  # train/ was written first, and is gone with the rest


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    return make_tiny_rec(tmp_path_factory.mktemp("rec"))


def test_train_that_fails_before_its_first_checkpoint_leaves_no_config_or_log(rec_dir, tmp_path, monkeypatch):
    from facetrust.train import trainer

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(trainer, "_run_epoch", broken)
    with pytest.raises(OSError):
        trainer.train(tiny_config(epochs=1), rec_dir, tmp_path / "model")
    assert not (tmp_path / "model").exists()  # not even the directory the run made


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_checkpoint(rec_dir, tmp_path, monkeypatch):
    from facetrust.train import trainer

    trainer.train(tiny_config(epochs=1), rec_dir, tmp_path / "model")
    good = torch.load(tmp_path / "model" / "checkpoint.pt", weights_only=True)
    calls = {"n": 0}
    real = trainer.F.cross_entropy

    def nan_at_step_6(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(trainer.F, "cross_entropy", nan_at_step_6)
    with pytest.raises(trainer.TrainingDiverged, match=r"step 6 \(epoch 2\).*cross-entropy nan"):
        trainer.train(tiny_config(epochs=2), rec_dir, tmp_path / "model", resume=False)
    after = torch.load(tmp_path / "model" / "checkpoint.pt", weights_only=True)
    assert after["step"] == 4  # the epoch-1 checkpoint of this run: 4 steps, written before the NaN
    assert torch.isfinite(after["backbone"]["fc.weight"]).all()
    assert good["step"] == after["step"]
    log = (tmp_path / "model" / "train_log.csv").read_text()
    assert "nan" not in log.lower()
    json.loads((tmp_path / "model" / "config.json").read_text())


def test_npz_files_are_the_same_bytes_for_the_same_arrays_and_load_like_savez(tmp_path):
    import time

    from facetrust.io import write_npz

    arrays = {"image": np.array(["a/0", "a/1"]), "embedding": np.arange(6, dtype=np.float32).reshape(2, 3),
              "flip": np.asarray(True), "uncertainty_kind": np.asarray("scf")}
    write_npz(tmp_path / "a.npz", arrays)
    time.sleep(2.1)  # numpy's savez would stamp the members with a later time
    write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    np.savez(tmp_path / "ref.npz", **arrays)
    with np.load(tmp_path / "a.npz") as ours, np.load(tmp_path / "ref.npz") as reference:
        assert list(ours.keys()) == list(reference.keys())
        for key in arrays:
            assert ours[key].dtype == reference[key].dtype and np.array_equal(ours[key], reference[key])
