"""The DVC view of the results (facetrust.report.dvc_metrics): flat per-variant metrics for
`dvc metrics show`, long-format ROC and reject curves for `dvc plots show`."""

from __future__ import annotations

import csv
import json
import math

import pytest

from facetrust.errors import InputError
from facetrust.report.dvc_metrics import flat_metrics, main, write_dvc_view


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_rows(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def results(tmp_path):
    """A results/ tree in the workflow's layout: two variants, an IJB set and a pair set."""
    r = tmp_path / "results"
    for variant, tar in (("arcface", 0.3), ("arcface_scf", 0.4)):
        _write_json(r / "metrics" / variant / "synth_ijbc.json", {
            "auc": 0.9, "n_pairs": 324, "settings": {"flip": True, "pooling": "mean"},
            "tar_at_far": {"1e-01": tar, "1e-03": tar / 4, "1e-02": tar / 2}, "testset": "synth_ijbc"})
        _write_json(r / "metrics" / variant / "synth_lfw.json", {
            "accuracy": 0.8, "accuracy_std": 0.05, "auc": 0.85, "fold_accuracies": [0.8] * 10,
            "tar_at_far": {"1e-02": tar, "1e-06": float("nan")}})
        _write_rows(r / "roc" / variant / "synth_ijbc.csv", ["fpr", "tpr", "threshold"],
                    [[0.0, 0.0, "inf"], [0.0, 0.1, 0.9], [0.01, 0.2, 0.5], [1.0, 1.0, -1.0]])
        _write_json(r / "reject" / variant / "synth_ijbc.json", {
            "fractions": [0.0, 0.1, 0.2], "tar_at_far": {"1e-01": [0.3, 0.35, None], "1e-02": [0.1, 0.2, 0.25]}})
        _write_rows(r / "reject" / variant / "synth_ijbc.csv", ["fraction", "TAR@FAR=1e-02"], [[0.0, 0.1]])
    return r


def _view(results, out):
    return write_dvc_view(results / "metrics", results / "roc", results / "reject", out)


def test_flat_metrics_orders_tar_by_far_and_drops_nan_and_non_numbers():
    flat = flat_metrics({"tar_at_far": {"1e-01": 0.5, "1e-03": 0.1, "1e-02": float("nan")},
                         "auc": 0.7, "accuracy": None, "settings": {"flip": True}, "n_pairs": 10})
    assert list(flat) == ["TAR@FAR=1e-03", "TAR@FAR=1e-01", "auc"]
    assert flat["TAR@FAR=1e-03"] == 0.1


def test_flat_metrics_refuses_a_tar_at_far_that_is_not_a_map():
    with pytest.raises(InputError, match="m.json.*tar_at_far"):
        flat_metrics({"tar_at_far": [0.1, 0.2]}, "m.json")


def test_view_writes_one_metrics_row_per_variant_with_every_test_set(results, tmp_path):
    out = tmp_path / "dvc"
    _view(results, out)
    assert sorted(p.name for p in (out / "metrics").iterdir()) == ["arcface.json", "arcface_scf.json"]
    row = json.loads((out / "metrics" / "arcface_scf.json").read_text())
    assert row["synth_ijbc"] == {"TAR@FAR=1e-03": 0.1, "TAR@FAR=1e-02": 0.2, "TAR@FAR=1e-01": 0.4, "auc": 0.9}
    assert row["synth_lfw"] == {"TAR@FAR=1e-02": 0.4, "auc": 0.85, "accuracy": 0.8, "accuracy_std": 0.05}


def test_view_roc_holds_every_variant_in_curve_order_without_fpr_zero(results, tmp_path):
    out = tmp_path / "dvc"
    _view(results, out)
    rows = _read_rows(out / "roc" / "synth_ijbc.csv")
    assert [(r["variant"], r["point"]) for r in rows] == [
        ("arcface", "2"), ("arcface", "3"), ("arcface_scf", "2"), ("arcface_scf", "3")]
    assert all(float(r["fpr"]) > 0 for r in rows)  # the FAR axis is logarithmic


def test_view_reject_is_long_format_per_far_and_skips_missing_tar(results, tmp_path):
    out = tmp_path / "dvc"
    _view(results, out)
    rows = _read_rows(out / "reject" / "synth_ijbc.csv")
    arcface = [(r["far"], float(r["fraction"]), float(r["tar"])) for r in rows if r["variant"] == "arcface"]
    assert arcface == [("1e-02", 0.0, 0.1), ("1e-02", 0.1, 0.2), ("1e-02", 0.2, 0.25),
                       ("1e-01", 0.0, 0.3), ("1e-01", 0.1, 0.35)]
    assert not any(math.isnan(float(r["tar"])) for r in rows)


def test_view_without_reject_curves_writes_metrics_and_roc_only(results, tmp_path):
    out = tmp_path / "dvc"
    written = write_dvc_view(results / "metrics", results / "roc", tmp_path / "absent", out)
    assert not (out / "reject").exists()
    assert {p.parent.name for p in written} == {"metrics", "roc"}


def test_view_refuses_an_empty_metrics_directory(tmp_path):
    (tmp_path / "metrics").mkdir()
    with pytest.raises(InputError, match="no <variant>/<testset>.json"):
        write_dvc_view(tmp_path / "metrics", tmp_path / "roc", None, tmp_path / "out")


def test_view_names_a_reject_file_whose_lists_disagree(results, tmp_path):
    bad = results / "reject" / "arcface" / "synth_ijbc.json"
    _write_json(bad, {"fractions": [0.0, 0.1], "tar_at_far": {"1e-02": [0.1]}})
    with pytest.raises(InputError, match=r"arcface/synth_ijbc.json.*1 values for 2 fractions"):
        _view(results, tmp_path / "dvc")


def test_view_names_an_roc_file_without_fpr(results, tmp_path):
    _write_rows(results / "roc" / "arcface" / "synth_ijbc.csv", ["far", "tar"], [[0.1, 0.2]])
    with pytest.raises(InputError, match=r"arcface/synth_ijbc.csv.*fpr,tpr"):
        _view(results, tmp_path / "dvc")


def test_module_entry_point_exits_2_with_the_message_on_bad_input(tmp_path, capsys):
    (tmp_path / "metrics").mkdir()
    code = main(["--metrics", str(tmp_path / "metrics"), "--roc", str(tmp_path / "roc"),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "no <variant>/<testset>.json" in capsys.readouterr().err
