"""Result tables: one row per method, TAR@FAR columns in ascending FAR order."""

import json

import pandas as pd
import pytest

from facetrust.errors import InputError
from facetrust.report.tables import write_tar_table


def _metrics(path, tar):
    path.write_text(json.dumps({"tar_at_far": tar, "auc": 0.9}))
    return str(path)


def test_table_has_the_contract_columns_in_far_order(tmp_path):
    a = _metrics(tmp_path / "a.json", {"1e-01": 0.9, "1e-03": 0.5, "1e-06": 0.1})
    b = _metrics(tmp_path / "b.json", {"1e-01": 0.95, "1e-03": 0.6, "1e-06": 0.2})
    out = tmp_path / "table.csv"
    write_tar_table([a, b], out, methods=["ArcFace", "ArcFace+SCF"], backbones=["r", "r"],
                    train_sets=["synth", "synth"], test_set="synth_ijbc")
    table = pd.read_csv(out)
    assert list(table.columns) == ["method", "backbone", "train_set", "test_set",
                                   "TAR@FAR=1e-06", "TAR@FAR=1e-03", "TAR@FAR=1e-01"]
    assert table["method"].tolist() == ["ArcFace", "ArcFace+SCF"]
    assert table.loc[1, "TAR@FAR=1e-03"] == pytest.approx(0.6)


def test_mismatched_row_labels_and_bad_metrics_are_refused(tmp_path):
    a = _metrics(tmp_path / "a.json", {"1e-03": 0.5})
    with pytest.raises(InputError, match="--method has 2 values for 1 metrics files"):
        write_tar_table([a], tmp_path / "t.csv", methods=["x", "y"])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        write_tar_table([str(broken)], tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()
