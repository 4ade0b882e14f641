"""The CLI contract: exit 0 on success, 2 on bad input or usage with a message naming the file
and the record or key, 1 on a failed run; nothing half-written."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facetrust.cli import main
from facetrust.data.recordio import IRHeader, IndexedRecordIOWriter, pack

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_has_help():
    result = subprocess.run([sys.executable, "-m", "facetrust.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("synth", "fetch", "data", "align", "train", "fit-head", "embed", "evaluate", "report"):
        assert command in result.stdout


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "nonsense"])
    assert exit_info.value.code == 2


def test_truncated_recordio_exits_2_naming_the_file(tmp_path, capsys):
    idx, rec = tmp_path / "train.idx", tmp_path / "train.rec"
    with IndexedRecordIOWriter(idx, rec) as writer:
        for key in range(3):
            writer.write_idx(key, pack(IRHeader(0, float(key), key, 0), b"x" * 100))
    rec.write_bytes(rec.read_bytes()[:-60])  # cut the last record short
    assert main(["data", "dump", str(rec), "--jsonl"]) == 2
    assert "train.rec" in capsys.readouterr().err


def test_missing_params_file_exits_2(tmp_path, capsys):
    assert main(["train", "--model", "arcface", "--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_model_exits_2_and_lists_the_configured_ones(tmp_path, capsys):
    code = main(["train", "--model", "no_such_model", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path)])
    assert code == 2
    assert "no_such_model" in capsys.readouterr().err


def test_evaluate_ijb_end_to_end_and_missing_images_exit_2(tmp_path, capsys):
    from ijb_protocol_fixture import random_ijb

    root, images, embedding, noflip, _ = random_ijb(tmp_path / "ijb", "ijbx")
    good = tmp_path / "good.npz"
    np.savez(good, image=images, embedding=embedding, embedding_noflip=noflip)
    out = tmp_path / "m.json"
    assert main(["evaluate", "ijb", "--embeddings", str(good), "--protocol", str(root), "--name", "ijbx",
                 "--out", str(out), "--fars", "0.01,0.1"]) == 0
    assert out.exists()
    partial = tmp_path / "partial.npz"
    np.savez(partial, image=images[1:], embedding=embedding[1:], embedding_noflip=noflip[1:])
    out2 = tmp_path / "m2.json"
    assert main(["evaluate", "ijb", "--embeddings", str(partial), "--protocol", str(root), "--name", "ijbx",
                 "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert "partial.npz" in err and images[0] in err
    assert not out2.exists()


def test_bad_embeddings_file_exits_2_and_leaves_no_output(tmp_path, capsys):
    embeddings = tmp_path / "e.npz"
    np.savez(embeddings, image=np.array(["1.jpg"]), embedding=np.zeros((2, 4), np.float32))  # rows disagree
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "pairs", "--embeddings", str(embeddings), "--out", str(out)]) == 2
    assert "e.npz" in capsys.readouterr().err
    assert not out.exists()


def test_a_closed_output_pipe_stops_quietly():
    """`facetrust methods | head -1`: the reader goes away before the command writes; no traceback and
    no 'cannot write' message, exit 1 (Python's convention for SIGPIPE)."""
    child = subprocess.Popen([sys.executable, "-m", "facetrust.cli", "methods"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # long before the child has imported anything
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1 and err == b"", err
