"""Hostile inputs to the readers of metrics files, embeddings and ROC ``.npz``, test sets, params
YAML and pairs lists: each is refused with exit code 2 and one line naming the file (and the key,
row or line), no traceback, nothing written (the contract of docs/troubleshooting.md)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrust.cli import main

SIZE = 24  # the tiny model's input size: crops of this size are taken as aligned


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and the last line of stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.rstrip("\n").split("\n")
    return code, lines[-1].split("\r")[-1]


def _refused(capsys, argv, *words: str, out: Path | None = None) -> str:
    code, last = _run(capsys, argv)
    assert code == 2, last
    assert "error:" in last and "unexpected" not in last and "(run with -v" not in last, last
    for word in words:
        assert word in last, f"{word!r} not in {last!r}"
    if out is not None:
        assert not Path(out).exists()  # nothing half-written
    return last


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from explain_helpers import save_model

    return save_model(tmp_path_factory.mktemp("model") / "m", size=SIZE)


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(2):
        path = root / f"a{k}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths[0], paths[1]


# ----------------------------------------------------------------------------- metrics files


def _metrics(**changes) -> dict:
    metrics = {"test_set": "synth_ijbc", "protocol": "ijb_1to1", "n_genuine": 24, "n_impostor": 300,
               "n_pairs": 324, "settings": {"flip": True, "pooling": "mean", "score_name": "cosine"},
               "tar_at_far": {"1e-02": 0.25, "1e-01": 0.5},
               "threshold_at_far": {"1e-02": {"far": 0.01, "tar": 0.25, "threshold": 0.6},
                                    "1e-01": {"far": 0.1, "tar": 0.5, "threshold": 0.4}}}
    metrics.update(changes)
    return metrics


def _write(path: Path, metrics: dict) -> Path:
    path.write_text(json.dumps(metrics))  # json writes NaN as the literal NaN, as a hostile file may
    return path


def _threshold(value) -> dict:
    return {"1e-02": {"far": 0.01, "tar": 0.25, "threshold": value}}


@pytest.mark.parametrize("change, words", [
    ({"settings": "str"}, ["key 'settings' must be a JSON object"]),
    ({"threshold_at_far": _threshold("0.5")}, ["threshold_at_far['1e-02'].threshold", "must be a number", "'0.5'"]),
    ({"threshold_at_far": _threshold(float("nan"))}, ["threshold_at_far['1e-02'].threshold", "must be finite"]),
    ({"threshold_at_far": _threshold(float("inf"))}, ["threshold_at_far['1e-02'].threshold", "must be finite"]),
    ({"threshold_at_far": [1, 2]}, ["key 'threshold_at_far' must map FAR keys"]),
    ({"threshold_at_far": {"1e-02": {"far": "x", "tar": 0.2, "threshold": 0.5}}}, ["threshold_at_far['1e-02'].far"]),
    ({"settings": {"flip": "yes"}}, ["settings.flip"]),
    ({"unresolved_fars": 5}, ["unresolved_fars"]),
    ({"embeddings": 7}, ["key 'embeddings' must be a string"]),
], ids=["settings-string", "threshold-string", "threshold-nan", "threshold-inf", "threshold-map-list",
        "point-far-string", "flip-string", "unresolved-number", "embeddings-number"])
def test_verify_refuses_a_metrics_file_with_wrong_types(model, crops, tmp_path, capsys, change, words):
    metrics = _write(tmp_path / "metrics.json", _metrics(**change))
    out = tmp_path / "o"
    _refused(capsys, ["verify", *crops, "--model", model, "--metrics", metrics, "--far", "1e-2", "--explain", "none",
                      "--out", out], "metrics.json", *words, out=out)


def test_verify_still_takes_a_null_threshold_as_accept_nothing(model, crops, tmp_path, capsys):
    metrics = _write(tmp_path / "metrics.json", _metrics(threshold_at_far=_threshold(None)))
    code, _ = _run(capsys, ["verify", *crops, "--model", model, "--metrics", metrics, "--far", "1e-2",
                            "--explain", "none", "--out", tmp_path / "o"])
    assert code == 0
    record = json.loads((tmp_path / "o" / "verify.json").read_text())["pairs"][0]
    assert record["decision"]["threshold"] is None and record["decision"]["same"] is False


@pytest.mark.parametrize("tars, words", [
    ({"1e-02": "abc"}, ["tar_at_far['1e-02']", "must be a number or null", "'abc'"]),
    ({"1e-02": float("inf")}, ["tar_at_far['1e-02']", "must be finite"]),
    ({"1e-02": 3.5}, ["tar_at_far['1e-02']", "[0, 1]"]),
    ({"abc": 0.5}, ["tar_at_far", "'abc'", "not a FAR"]),
], ids=["tar-string", "tar-inf", "tar-above-one", "far-key-string"])
def test_report_table_refuses_a_tar_that_is_not_a_rate(tmp_path, capsys, tars, words):
    metrics = _write(tmp_path / "metrics.json", _metrics(tar_at_far=tars))
    out = tmp_path / "t.csv"
    _refused(capsys, ["report", "table", "--metrics", metrics, "--out", out], "metrics.json", *words, out=out)


def test_report_table_reads_null_and_older_nan_tars_as_empty_cells(tmp_path, capsys):
    metrics = _write(tmp_path / "metrics.json", _metrics(tar_at_far={"1e-02": float("nan"), "1e-01": None}))
    code, _ = _run(capsys, ["report", "table", "--metrics", metrics, "--out", tmp_path / "t.csv"])
    assert code == 0 and "TAR@FAR=1e-02" in (tmp_path / "t.csv").read_text()


def test_report_table_refuses_settings_that_are_not_an_object(tmp_path, capsys):
    metrics = _write(tmp_path / "metrics.json", _metrics(settings="str"))
    _refused(capsys, ["report", "table", "--metrics", metrics, "--out", tmp_path / "t.csv"], "metrics.json",
             "key 'settings' must be a JSON object")


def test_report_reject_refuses_a_tar_that_is_not_a_number(tmp_path, capsys):
    curve = _write(tmp_path / "reject.json", {"fractions": [0.0, 0.1], "tar_at_far": {"1e-02": [0.5, "x"]}})
    _refused(capsys, ["report", "reject-plot", "--reject", curve, "--out", tmp_path / "r.png"],
             "reject.json", "tar_at_far['1e-02'][1]")


# ----------------------------------------------------------------------------- pair sets


def _pair_set(path: Path, issame, uncertainty=None, dim: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    issame = np.asarray(issame, dtype=bool)
    n = 2 * issame.size
    embedding = rng.standard_normal((n, dim)).astype(np.float32)
    if uncertainty is None:
        uncertainty = rng.uniform(0.5, 2.0, n)
    np.savez(path, image=np.array([f"set/{i}" for i in range(n)]), embedding=embedding, embedding_noflip=embedding,
             issame=issame, uncertainty=np.asarray(uncertainty, dtype=np.float32),
             uncertainty_kind=np.array("emb_norm"))
    return path


@pytest.mark.parametrize("protocol", ["edc", "reject"])
@pytest.mark.parametrize("issame, counts", [([True] * 40, "40 genuine and 0 impostor"),
                                            ([True, True], "2 genuine and 0 impostor"),
                                            ([False] * 10, "0 genuine and 10 impostor")],
                         ids=["all-genuine", "two-pairs", "all-impostor"])
def test_edc_and_reject_refuse_a_pair_set_without_both_classes(tmp_path, capsys, protocol, issame, counts):
    embeddings = _pair_set(tmp_path / "e.npz", issame)
    out = tmp_path / "m.json"
    _refused(capsys, ["evaluate", protocol, "--embeddings", embeddings, "--out", out],
             "e.npz", "needs genuine and impostor pairs", counts, out=out)


def test_edc_runs_on_two_pairs_of_both_kinds(tmp_path, capsys):
    embeddings = _pair_set(tmp_path / "e.npz", [True, False])
    code, last = _run(capsys, ["evaluate", "edc", "--embeddings", embeddings, "--out", tmp_path / "m.json"])
    assert code == 0, last


@pytest.mark.parametrize("protocol, extra, uncertainty, words", [
    ("reject", [], [1.0, np.nan, 1.0, 1.0], ["key 'uncertainty' row 1", "'set/1'", "is NaN"]),
    ("reject", [], [1.0, np.inf, 1.0, 1.0], ["key 'uncertainty' row 1", "'set/1'", "is inf"]),
    ("reject", ["--space", "confidence"], [1.0, 1.0, 0.0, 1.0],
     ["key 'uncertainty' row 2", "'set/2'", "is 0, not positive as confidence space needs"]),
    ("edc", [], [1.0, 1.0, 1.0, np.nan], ["key 'uncertainty' row 3", "'set/3'", "NaN"]),
], ids=["reject-nan", "reject-inf", "reject-confidence-zero", "edc-nan"])
def test_bad_uncertainties_are_refused_naming_the_file_and_row(tmp_path, capsys, protocol, extra, uncertainty, words):
    embeddings = _pair_set(tmp_path / "e.npz", [True, False], uncertainty)
    out = tmp_path / "m.json"
    _refused(capsys, ["evaluate", protocol, "--embeddings", embeddings, *extra, "--out", out], "e.npz", *words,
             out=out)


def test_ijb_template_uncertainties_name_the_embeddings_file(tmp_path, capsys):
    from ijb_protocol_fixture import random_ijb

    root, images, embedding, _, _ = random_ijb(tmp_path / "ijb", n_templates=12, seed=3)
    uncertainty = np.full(images.size, 1.0, np.float32)
    uncertainty[2] = 0.0  # confidence space inverts it
    np.savez(tmp_path / "i.npz", image=images, embedding=embedding, uncertainty=uncertainty)
    for protocol in ("reject", "edc"):
        _refused(capsys, ["evaluate", protocol, "--embeddings", tmp_path / "i.npz", "--protocol", root, "--name",
                          "ijbx", "--space", "confidence", "--out", tmp_path / "m.json"],
                 "i.npz: ", f"row 2 ({str(images[2])!r}) is 0, not positive as confidence space needs",
                 out=tmp_path / "m.json")


def test_a_message_of_the_maths_gets_the_file_it_was_computed_from():
    from facetrust.errors import ConfigError, InputError
    from facetrust.evaluate.reject import pair_uncertainty
    from facetrust.formats import naming_file

    with pytest.raises(InputError, match=r"^e\.npz: pair uncertainty: uncertainties must be finite$"):
        with naming_file("e.npz"):
            pair_uncertainty(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ConfigError, match=r"^e\.npz: x$"):  # the kind of error is kept
        with naming_file("e.npz"):
            raise ConfigError("x")
    with pytest.raises(InputError, match=r"^e\.npz: row 3$"):  # a message that names the file is left alone
        with naming_file("e.npz"):
            raise InputError("e.npz: row 3")


def test_ijb_protocol_without_impostors_is_named(tmp_path, capsys):
    from ijb_protocol_fixture import write_ijb_dir

    images = [f"{i}.jpg" for i in range(4)]
    root = write_ijb_dir(tmp_path / "ijb", "ijbx", images, [1, 1, 2, 2], [1, 2, 3, 4], [0.9] * 4, [(1, 2)], [1])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "i.npz", image=np.array(images), embedding=rng.standard_normal((4, 8)).astype(np.float32),
             uncertainty=np.ones(4, np.float32))
    for protocol in ("reject", "edc"):
        _refused(capsys, ["evaluate", protocol, "--embeddings", tmp_path / "i.npz", "--protocol", root, "--name",
                          "ijbx", "--out", tmp_path / "m.json"],
                 "ijbx_template_pair_label.txt", "1 genuine and 0 impostor", out=tmp_path / "m.json")


# ----------------------------------------------------------------------------- test sets


def test_embed_refuses_an_empty_test_set(model, tmp_path, capsys):
    (tmp_path / "zero.bin").write_bytes(pickle.dumps(([], [])))
    out = tmp_path / "e.npz"
    _refused(capsys, ["embed", "--model", model, "--test-set", tmp_path / "zero.bin", "--out", out],
             "zero.bin", "empty test set", out=out)


# ----------------------------------------------------------------------------- .npz bombs


def _npy_header(shape, descr: str = "<f8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array))
    return buffer.getvalue()


def _archive(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_report_roc_refuses_a_member_declaring_a_terabyte(tmp_path, capsys, compression):
    roc = _archive(tmp_path / "r.npz", {"fpr": _npy_header((2**40,)) + bytes(64), "tpr": _npy([0.0, 1.0])},
                   compression)
    out = tmp_path / "roc.png"
    _refused(capsys, ["report", "roc", "--roc", roc, "--out", out], "r.npz", "member 'fpr' declares shape", out=out)


def _quality_csv(path: Path, images) -> Path:
    rows = ["set,image,identity,blur_sigma,noise_std,resolution,jpeg_quality,occlusion,quality"]
    rows += [f"s,s/{name},0,1.0,1.0,32,90,0.0,{0.1 + 0.2 * k:.2f}" for k, name in enumerate(images)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("command", ["quality", "histograms"])
def test_report_quality_and_histograms_refuse_a_member_declaring_two_gigaelements(tmp_path, capsys, command):
    images = ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    embeddings = _archive(tmp_path / "e.npz", {"image": _npy(np.array(images)),
                                               "uncertainty": _npy_header((2**31,), "<f4") + bytes(64),
                                               "issame": _npy(np.array([True, False]))})
    quality = _quality_csv(tmp_path / "quality.csv", images)
    out = tmp_path / ("q.csv" if command == "quality" else "h.png")
    _refused(capsys, ["report", command, "--embeddings", embeddings, "--quality", quality, "--out", out],
             "e.npz", "member 'uncertainty' declares shape (2147483648,)", out=out)


def test_report_quality_names_a_non_finite_row_with_its_image_as_plain_text(tmp_path, capsys):
    images = ["1.jpg", "2.jpg", "3.jpg"]
    np.savez(tmp_path / "e.npz", image=np.array(images), uncertainty=np.array([1.0, 2.0, np.nan]))
    quality = _quality_csv(tmp_path / "quality.csv", images)
    last = _refused(capsys, ["report", "quality", "--embeddings", tmp_path / "e.npz", "--quality", quality,
                             "--out", tmp_path / "q.csv"], "e.npz", "row 2 ('3.jpg')")
    assert "np.str_" not in last


def test_read_npz_refuses_pickles_and_names_a_missing_key(tmp_path):
    from facetrust.errors import InputError
    from facetrust.npz import read_npz

    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="p.npz: not a readable"):
        read_npz(tmp_path / "p.npz")
    np.savez(tmp_path / "k.npz", x=np.arange(3))
    with pytest.raises(InputError, match="k.npz: missing key 'y'"):
        read_npz(tmp_path / "k.npz", ["y"])
    assert set(read_npz(tmp_path / "k.npz", ["x"], optional=["y"])) == {"x"}


# ----------------------------------------------------------------------------- params YAML


def _synth(tmp_path: Path, text: str) -> tuple[list, Path]:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    return ["synth", "--params", params, "--out", tmp_path / "synth"], tmp_path / "synth"


@pytest.mark.parametrize("text, words", [
    ("seed: 7\nseed: 8\n", ["duplicate key 'seed' at line 2 (first at line 1)"]),
    ("seed: 7\nmodels:\n  arcface:\n    method: ArcFace\n    method: CosFace\n",
     ["duplicate key 'models.arcface.method' at line 5 (first at line 4)"]),
], ids=["top-level", "nested"])
def test_params_with_a_duplicate_key_are_refused_naming_key_and_lines(tmp_path, capsys, text, words):
    argv, out = _synth(tmp_path, text)
    _refused(capsys, argv, "params.yaml", *words, out=out)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    from facetrust.yaml_files import load_yaml

    (tmp_path / "m.yaml").write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  x: 3\n")
    assert load_yaml(tmp_path / "m.yaml")["derived"] == {"x": 3, "y": 2}


@pytest.mark.parametrize("text, words", [
    ("!!python/object/apply:os.system ['true']\n", ["line 1, column 1", "could not determine a constructor"]),
    ("seed: 7\n---\nseed: 8\n", ["line 2, column 1", "expected a single document in the stream"]),
    ("models: [unclosed\n", ["line 2, column 1", "while parsing a flow sequence started at line 1, column 9"]),
], ids=["python-tag", "two-documents", "unclosed"])
def test_yaml_errors_are_one_line_with_the_position(tmp_path, capsys, text, words):
    argv, out = _synth(tmp_path, text)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    messages = [line for line in err.splitlines() if "error:" in line]
    assert len(messages) == 1 and err.strip().endswith(messages[0].strip()), err
    assert "params.yaml: not valid YAML at " in messages[0]
    for word in words:
        assert word in messages[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- pairs lists


def test_a_pairs_csv_with_a_byte_order_mark_is_read(tmp_path):
    from facetrust.verify.run import read_pairs_csv

    (tmp_path / "pairs.csv").write_bytes("image1,image2,label\r\na.png,b.png,same\r\n".encode("utf-8-sig"))
    assert read_pairs_csv(tmp_path / "pairs.csv") == [(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "same")]


def test_a_bad_photograph_names_its_pairs_csv_line(model, crops, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(crops[0].read_bytes()[:60])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image1,image2\n{crops[0]},{crops[1]}\n\n{crops[1]},broken.png\n")
    out = tmp_path / "o"
    _refused(capsys, ["verify", "--pairs", pairs, "--model", model, "--explain", "none", "--threshold", "0.5",
                      "--batch-size", "1", "--out", out], "pairs.csv line 4: ", "broken.png", out=out)


# --------------------------------------------------------------------------- labels, set files, --roc


@pytest.mark.parametrize("issame, says", [
    (np.array([1, 3]), "entry 1 is 3, not 0 or 1"),
    (np.array([0.0, np.nan]), "entry 1 is nan, not 0 or 1"),
    (np.array(["yes", "no"]), "not booleans or 0/1"),
])
def test_pair_labels_that_are_not_0_or_1_are_refused_not_read_as_same(tmp_path, capsys, issame, says):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "e.npz", image=np.array(["a", "b", "c", "d"]), embedding=rng.normal(size=(4, 8)),
             issame=issame)
    code, message = _run(capsys, ["evaluate", "pairs", "--embeddings", str(tmp_path / "e.npz"),
                                  "--out", str(tmp_path / "m.json")])
    assert code == 2 and "e.npz: key 'issame'" in message and says in message


def test_a_property_or_index_that_is_not_a_file_is_named_not_ignored(tmp_path, capsys):
    import shutil

    import bad_input_fixtures as fx

    root = fx.training_set(tmp_path / "set")
    (root / "property").unlink()
    (root / "property").mkdir()
    for command in (["data", "verify", str(root)], ["data", "inspect", str(root)]):
        code, message = _run(capsys, command)
        assert code == 2 and "set/property" in message, message
    shutil.rmtree(root / "property")
    (root / "train.idx").unlink()
    (root / "train.idx").mkdir()
    code, message = _run(capsys, ["data", "inspect", str(root)])
    assert code == 2 and "train.idx: not a regular file" in message
    (root / "train.idx").rmdir()
    (root / "train.idx").write_text("")
    code, message = _run(capsys, ["data", "inspect", str(root)])
    assert code == 2 and "train.idx: an empty index beside a" in message


def test_a_roc_file_of_another_kind_is_refused_before_the_evaluation_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse: exit 2, its one line naming the option
        main(["evaluate", "pairs", "--embeddings", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "m.json"),
              "--roc", str(tmp_path / "roc.json")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "argument --roc" in message and "must end in .npz or .csv" in message


def test_a_number_below_a_one_sided_bound_is_named_not_a_formatting_crash():
    from facetrust.errors import InputError
    from facetrust.formats import metrics_number

    with pytest.raises(InputError, match=r"m\.json: key n_impostor is -5: must be at least 0"):
        metrics_number(-5, "m.json", "n_impostor", allow_none=True, low=0.0)
    with pytest.raises(InputError, match=r"must be at most 1"):
        metrics_number(2.0, "m.json", "x", high=1.0)
    assert metrics_number(0.5, "m.json", "x", low=0.0, high=1.0) == 0.5
