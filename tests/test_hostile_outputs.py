"""Outputs never destroy what they are pointed at: a directory output of ``verify`` or ``data pack``
over a folder of other files (or of its own inputs), two outputs of one run in one file, a file
output that is an existing directory; and inputs that are loops of symbolic links or JSON files
that are not what they claim are exit 2 naming the file (the outputs contract of
docs/ARCHITECTURE.md "Outputs")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facetrust.cli import main
from facetrust.errors import InputError


def _photos(folder, n=2, size=24):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        paths.append(folder / f"a{k}.png")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from explain_helpers import save_model

    return save_model(tmp_path_factory.mktemp("model") / "m", size=24)


def test_verify_refuses_an_out_that_holds_its_photos_or_other_files_and_reruns_into_its_own(model, tmp_path, capsys):
    photos = _photos(tmp_path / "p")
    args = ["verify", *map(str, photos), "--model", str(model), "--threshold", "0.3", "--explain", "none"]
    assert main([*args, "--out", str(tmp_path / "p")]) == 2
    assert "holds the input" in _last_error(capsys)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["a0.png", "a1.png"]  # nothing lost

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "keep")]) == 2
    message = _last_error(capsys)
    assert "not empty and not a previous 'facetrust verify' output" in message and "--force" not in message
    assert (tmp_path / "keep" / "precious.txt").read_text() == "mine"

    for _ in range(2):  # its own previous output is replaced, as a rerun expects
        assert main([*args, "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "verify.json").is_file()


def test_data_pack_refuses_an_out_over_its_input_another_folder_or_a_file(tmp_path, capsys):
    for k in range(2):
        _photos(tmp_path / "proj" / "imgs" / f"id{k}", n=2, size=32)
    args = ["data", "pack", "rec", str(tmp_path / "proj" / "imgs"), "--size", "32,32"]
    assert main([*args, "--out", str(tmp_path / "proj")]) == 2
    assert "holds the input" in _last_error(capsys)
    assert len(list((tmp_path / "proj" / "imgs").rglob("*.png"))) == 4

    (tmp_path / "notes.txt").write_text("x")
    assert main([*args, "--out", str(tmp_path / "notes.txt")]) == 2
    assert "--out is a file, not a directory" in _last_error(capsys)
    assert (tmp_path / "notes.txt").read_text() == "x"

    (tmp_path / "keepdir").mkdir()
    (tmp_path / "keepdir" / "precious.txt").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "keepdir")]) == 2
    assert "not a previous 'facetrust data pack rec' output" in _last_error(capsys)
    assert (tmp_path / "keepdir" / "precious.txt").read_text() == "mine"

    for _ in range(2):
        assert main([*args, "--out", str(tmp_path / "packed")]) == 0
    assert json.loads((tmp_path / "packed" / "pack.json").read_text())["num_images"] == 4


def test_two_outputs_of_one_run_in_one_file_are_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "reject", "--embeddings", str(tmp_path / "absent.npz"), "--out", str(out),
                 "--csv", str(out)]) == 2
    message = _last_error(capsys)
    assert "--out" in message and "--csv" in message and "are the same file" in message
    assert not out.exists()


def test_a_loop_of_symbolic_links_as_an_input_is_exit_2_naming_it(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert main(["report", "table", "--metrics", str(tmp_path / "a"), "--out", str(tmp_path / "t.csv")]) == 2
    assert str(tmp_path / "a") in _last_error(capsys)


@pytest.mark.parametrize("payload, says", [
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b'{"test_set": "a", "test_set": "b"}', "key 'test_set' appears twice"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"n": ' + b"9" * 100_001 + b"}", "not a valid metrics file"),
])
def test_json_that_is_not_what_it_claims_is_exit_2_naming_the_file(tmp_path, capsys, payload, says):
    metrics = tmp_path / "metrics.json"
    metrics.write_bytes(payload)
    assert main(["report", "table", "--metrics", str(metrics), "--out", str(tmp_path / "t.csv")]) == 2
    message = _last_error(capsys)
    assert str(metrics) in message and says in message


def test_a_directory_given_as_a_json_input_or_a_file_output_is_named():
    from facetrust.io import atomic_path, read_json

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(InputError, match="is a directory, not a metrics file"):
            read_json(folder, "metrics file")
        with pytest.raises(InputError, match=r"is a directory; the output is a file"):
            with atomic_path(folder):
                pass
        assert list(Path(folder).iterdir()) == []  # no temporary left beside or inside
