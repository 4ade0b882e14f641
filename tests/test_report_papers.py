"""Per-paper reports, the verification table and the `facetrust report` kinds.

Every claim verdict must follow the numbers: the tests build inputs where the claim holds, flip
the numbers, and check that the report's sentence flips with them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetrust.errors import InputError
from facetrust.report import claims as claim_kinds
from facetrust.report import published
from facetrust.report.scaleface_report import write_scaleface_report
from facetrust.report.scf_report import write_scf_report
from facetrust.report.sphereface_report import write_sphereface_report
from facetrust.report.cli import add_report_parsers
from facetrust.report.verification import VERIFICATION_COLUMNS, write_verification_table

# --------------------------------------------------------------------------- helpers


def write_pairs_metrics(path: Path, accuracy: float, std: float = 0.01, val: float = 0.4, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"testset": "synth_lfw", "protocol": "pairs_10fold", "accuracy": accuracy, "accuracy_std": std,
               "val_at_far": {"1e-03": val}, "tar_at_far": {"1e-03": val}, "auc": 0.9, "n_pairs": 600, **extra}
    path.write_text(json.dumps(metrics))
    return path


def verification_csv(tmp_path: Path, rows: list[tuple], name: str = "verification_table.csv") -> Path:
    """rows: (method, backbone, accuracy, std, fisher)."""
    frame = pd.DataFrame([{"method": m, "backbone": b, "train_set": "synth_train", "test_set": "synth_lfw",
                           "accuracy": a, "accuracy_std": s, "angular_fisher_score": f, "VAL@FAR=1e-03": 0.5}
                          for m, b, a, s, f in rows], columns=VERIFICATION_COLUMNS)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def tar_csv(tmp_path: Path, rows: list[tuple], name: str = "ijbc_table.csv") -> Path:
    """rows: (method, TAR@1e-05, TAR@1e-04, TAR@1e-03)."""
    frame = pd.DataFrame([{"method": m, "backbone": "iresnet", "train_set": "synth_train", "test_set": "synth_ijbc",
                           "TAR@FAR=1e-05": a, "TAR@FAR=1e-04": b, "TAR@FAR=1e-03": c} for m, a, b, c in rows])
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def reject_json(path: Path, tars: dict[str, list[float]], fractions=(0.0, 0.25, 0.5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"testset": "synth_ijbc", "protocol": "reject_ijb_templates", "n_pairs": 1000,
                                "fractions": list(fractions), "tar_at_far": tars,
                                "settings": {"pair_uncertainty": "mean"}}))
    return path


def run_report_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="facetrust")
    report = parser.add_subparsers(dest="command").add_parser("report")
    add_report_parsers(report.add_subparsers(dest="kind", required=True))
    args = parser.parse_args(["report", *argv])
    args.func(args)


# --------------------------------------------------------------------------- verification table


def test_verification_table_has_one_row_per_model_with_accuracy_fisher_and_val(tmp_path):
    softmax = write_pairs_metrics(tmp_path / "m" / "softmax" / "synth_lfw.json", 0.80, 0.02, 0.30,
                                  angular_fisher_score=0.5)
    arcface = write_pairs_metrics(tmp_path / "m" / "arcface" / "synth_lfw.json", 0.90, 0.01, 0.60)
    table = write_verification_table([softmax, arcface], tmp_path / "verification_table.csv",
                                     methods=["Softmax", "ArcFace"], backbones=["sphere20", "iresnet"],
                                     train_sets=["synth_train", "synth_train"])
    written = pd.read_csv(tmp_path / "verification_table.csv")
    assert list(written.columns) == VERIFICATION_COLUMNS
    assert written["method"].tolist() == ["Softmax", "ArcFace"]
    assert written["accuracy"].tolist() == [0.8, 0.9]
    assert written["VAL@FAR=1e-03"].tolist() == [0.3, 0.6]
    assert written["angular_fisher_score"].iloc[0] == 0.5 and np.isnan(written["angular_fisher_score"].iloc[1])
    assert table["test_set"].tolist() == ["synth_lfw", "synth_lfw"]
    with pytest.raises(InputError, match="--method has 1 values for 2"):
        write_verification_table([softmax, arcface], tmp_path / "x.csv", methods=["Softmax"])


def test_verification_table_computes_fisher_score_from_embeddings_and_identities(tmp_path):
    from facetrust.evaluate.pairs import angular_fisher_score

    rng = np.random.default_rng(0)
    identity = np.repeat(np.arange(10), 4)
    features = (rng.normal(size=(10, 8))[identity] * 3 + rng.normal(size=(40, 8))).astype(np.float32)
    np.savez(tmp_path / "e.npz", image=np.array([f"synth_lfw/{i}" for i in range(40)]), embedding=features,
             issame=np.zeros(20, bool))
    lines = ["set,image,identity,blur_sigma,noise_std,resolution,jpeg_quality,occlusion,quality"]
    lines += [f"synth_lfw,synth_lfw/{i},{identity[i]},0,0,48,95,0,1" for i in range(40)]
    (tmp_path / "quality.csv").write_text("\n".join(lines) + "\n")
    metrics = write_pairs_metrics(tmp_path / "m.json", 0.9)
    table = write_verification_table([metrics], tmp_path / "v.csv", embeddings=[tmp_path / "e.npz"],
                                     quality_csv=tmp_path / "quality.csv")
    assert table["angular_fisher_score"].iloc[0] == pytest.approx(angular_fisher_score(features, identity), abs=1e-6)


def test_pair_metrics_without_accuracy_are_refused(tmp_path):
    path = tmp_path / "ijb.json"
    path.write_text(json.dumps({"tar_at_far": {"1e-04": 0.5}}))
    with pytest.raises(InputError, match="ijb.json: no 'accuracy'"):
        write_verification_table([path], tmp_path / "v.csv")


# --------------------------------------------------------------------------- SphereFace


def test_sphereface_report_says_margins_beat_softmax_when_they_do(tmp_path):
    table = verification_csv(tmp_path, [("Softmax", "sphere20", 0.80, 0.02, 0.6),
                                        ("A-Softmax", "sphere20", 0.90, 0.01, 0.3),
                                        ("ArcFace", "iresnet", 0.85, 0.01, 0.4),
                                        ("A-Softmax", "sphere4", 0.84, 0.02, 0.5)])
    (tmp_path / "figures").mkdir()
    figure = tmp_path / "figures" / "roc_synth_lfw.png"
    figure.write_bytes(b"png")
    out = tmp_path / "reports" / "sphereface.md"
    claims = write_sphereface_report(table, out, figures=[figure])
    text = out.read_text()
    summary = claims[0]
    # only the margin row with a Softmax control on its own backbone is judged (issue 18, §6)
    assert summary.verdict == claim_kinds.HELD and "1 of 1" in summary.text
    assert '**held**: "Angular margins beat plain softmax" on synth_lfw' in text
    assert "+10.00 points" in text  # A-Softmax sphere20 vs Softmax sphere20
    not_checked = [c for c in claims if c.verdict == claim_kinds.NOT_CHECKED]
    assert {("ArcFace (iresnet)" in c.text) or ("A-Softmax (sphere4)" in c.text) for c in not_checked} == {True}
    assert len(not_checked) == 2 and "+5.00 points" not in text  # ArcFace iresnet never set against sphere20
    depth = [c for c in claims if "deeper network" in c.text]
    assert depth and depth[0].verdict == claim_kinds.HELD and "+6.00 points" in depth[0].text
    assert "![roc_synth_lfw](../figures/roc_synth_lfw.png)" in text
    assert "| published (SphereFace README, LFW, CASIA-WebFace SphereFace-20) | LFW | A-Softmax |" in text
    assert "| ours (synthetic synth_lfw) | synth_lfw | Softmax | sphere20 |" in text
    assert "| 99.30 |" in text and "99.13–99.30" in text


def test_sphereface_claim_flips_when_softmax_is_better(tmp_path):
    table = verification_csv(tmp_path, [("Softmax", "sphere20", 0.92, 0.01, 0.2),
                                        ("A-Softmax", "sphere20", 0.90, 0.01, 0.3),
                                        ("A-Softmax", "sphere4", 0.91, 0.01, 0.3)])
    out = tmp_path / "sphereface.md"
    claims = write_sphereface_report(table, out)
    text = out.read_text()
    assert claims[0].verdict == claim_kinds.NOT_HELD
    assert "did not beat plain softmax" in text and "-2.00 points" in text
    assert "no Softmax row on the sphere4 backbone" in text
    depth = [c for c in claims if "deeper network" in c.text][0]
    assert depth.verdict == claim_kinds.NOT_HELD and "not more accurate" in depth.text


def test_margin_rows_are_judged_against_plain_and_normalised_softmax_on_their_own_backbone(tmp_path):
    table = verification_csv(tmp_path, [("Softmax", "sphere20", 0.80, 0.01, None),
                                        ("NormFace", "sphere20", 0.88, 0.01, None),
                                        ("A-Softmax", "sphere20", 0.86, 0.01, None),
                                        ("Softmax", "iresnet", 0.70, 0.01, None),
                                        ("NormFace", "iresnet", 0.75, 0.01, None),
                                        ("ArcFace", "iresnet", 0.90, 0.01, None)], name="c.csv")
    claims = write_sphereface_report(table, tmp_path / "c.md")
    summaries = {c.text.split('"')[1]: c.verdict for c in claims if c.text.startswith('"Angular')}
    assert summaries == {"Angular margins beat plain softmax": claim_kinds.HELD,
                         "Angular margins beat normalised softmax": claim_kinds.PARTLY}
    text = (tmp_path / "c.md").read_text()
    assert all(f"{d} points" in text for d in ("+6.00", "+20.00", "+15.00", "-2.00"))
    # no difference across backbones (ArcFace-iresnet vs sphere20 controls, A-Softmax vs iresnet ones)
    assert not any(f"{d} points" in text for d in ("+10.00", "+2.00", "+16.00", "+11.00"))


def test_sphereface_claim_partly_held_and_missing_baseline_reported(tmp_path):
    partly = verification_csv(tmp_path, [("Softmax", "sphere20", 0.88, 0.01, None),
                                         ("A-Softmax", "sphere20", 0.90, 0.01, None),
                                         ("CosFace", "sphere20", 0.87, 0.01, None)], name="a.csv")
    assert write_sphereface_report(partly, tmp_path / "a.md")[0].verdict == claim_kinds.PARTLY
    missing = verification_csv(tmp_path, [("ArcFace", "iresnet", 0.9, 0.01, None)], name="b.csv")
    claims = write_sphereface_report(missing, tmp_path / "b.md")
    assert claims[0].verdict == claim_kinds.NOT_CHECKED and "no Softmax row" in claims[0].text


# --------------------------------------------------------------------------- SCF


def test_scf_report_checks_each_base_at_each_far_and_cites_the_paper(tmp_path):
    table = tar_csv(tmp_path, [("ArcFace", 0.50, 0.60, 0.70), ("+SCF", 0.55, 0.62, 0.69),
                               ("CosFace", 0.40, 0.50, 0.60), ("CosFace + SCF", 0.45, 0.55, 0.65),
                               ("CosFace + PFE", 0.30, 0.40, 0.50)])
    out = tmp_path / "reports" / "scf.md"
    claims = write_scf_report([table], out)
    text = out.read_text()
    scf = [c for c in claims if "SCF" in c.text and "FAR=" in c.text]
    assert len(scf) == 6  # 2 bases x 3 FARs
    arcface_1e3 = [c for c in scf if "over ArcFace" in c.text and "FAR=1e-03" in c.text][0]
    assert arcface_1e3.verdict == claim_kinds.NOT_HELD and "does not raise" in arcface_1e3.text
    arcface_1e5 = [c for c in scf if "over ArcFace" in c.text and "FAR=1e-05" in c.text][0]
    assert arcface_1e5.verdict == claim_kinds.HELD and "+5.00 points" in arcface_1e5.text
    assert "+0.89 on IJB-C" in arcface_1e5.text  # README: ArcFace 93.15 -> +SCF 94.04
    assert claims[0].verdict == claim_kinds.PARTLY and "5 of 6" in claims[0].text
    assert "### +PFE over its base" in text and "### +SCF-G" not in text
    assert "| published (SCF README, IJB-C, MS1M ResNet100) | IJB-C | CosFace + SCF | ResNet100 | MS1M | 94.78 | 96.22 |" in text
    assert "| published (InsightFace arcface_torch README, IJB-C, MS1MV2 r100) | IJB-C | ArcFace | r100 | MS1MV2 | 94.27 | 96.37 |" in text
    assert "| ours (synthetic synth_ijbc) | synth_ijbc | +SCF | iresnet | synth_train | 55.00 | 62.00 |" in text


def test_scf_claim_flips_when_scf_lowers_tar(tmp_path):
    higher = tar_csv(tmp_path, [("ArcFace", 0.5, 0.6, 0.7), ("ArcFace+SCF", 0.6, 0.7, 0.8)], name="h.csv")
    lower = tar_csv(tmp_path, [("ArcFace", 0.6, 0.7, 0.8), ("ArcFace+SCF", 0.5, 0.6, 0.7)], name="l.csv")
    assert write_scf_report([higher], tmp_path / "h.md")[0].verdict == claim_kinds.HELD
    claims = write_scf_report([lower], tmp_path / "l.md")
    assert claims[0].verdict == claim_kinds.NOT_HELD
    assert all("does not raise" in c.text for c in claims[1:4])


def test_scf_report_without_scf_rows_says_not_checked(tmp_path):
    table = tar_csv(tmp_path, [("ArcFace", 0.5, 0.6, 0.7)])
    claims = write_scf_report([table], tmp_path / "scf.md")
    assert claims[0].verdict == claim_kinds.NOT_CHECKED
    assert "**not checked**" in (tmp_path / "scf.md").read_text()


# --------------------------------------------------------------------------- ScaleFace


def quality_table_csv(tmp_path: Path, rho: float, p_value: float) -> Path:
    path = tmp_path / "quality_table.csv"
    pd.DataFrame([{"method": "ScaleFace", "uncertainty_kind": "scaleface", "test_set": "synth_ijbc", "n_images": 500,
                   "spearman_degradation": rho, "p_value": p_value, "spearman_blur": rho / 2,
                   "spearman_noise": rho, "spearman_resolution": None, "spearman_jpeg": 0.0,
                   "spearman_occlusion": 0.1}]).to_csv(path, index=False)
    return path


def test_scaleface_report_says_curves_rise_and_uncertainty_tracks_quality(tmp_path):
    rising = reject_json(tmp_path / "reject" / "scaleface" / "synth_ijbc.json",
                         {"1e-04": [0.50, 0.55, 0.60], "1e-03": [0.70, 0.72, 0.75]})
    flat = reject_json(tmp_path / "reject" / "pfe" / "synth_ijbc.json",
                       {"1e-04": [0.50, 0.45, 0.40], "1e-03": [0.70, 0.72, 0.75]})
    out = tmp_path / "reports" / "scaleface.md"
    claims = write_scaleface_report({"ScaleFace": rising, "PFE": flat}, out,
                                           quality_table=quality_table_csv(tmp_path, 0.45, 1e-9),
                                           figures=[tmp_path / "figures" / "reject.png"])
    verdicts = {c.text.split(" ")[0]: c.verdict for c in claims}
    assert verdicts["ScaleFace"] == claim_kinds.HELD
    assert verdicts["PFE"] == claim_kinds.PARTLY
    text = out.read_text()
    assert "TAR rises from 0% to 50% rejected at 2 of 2 FARs" in text
    assert "FAR=1e-04: 50.00% → 60.00%" in text
    assert "tracks the known degradation on synth_ijbc: Spearman ρ = 0.450" in text
    assert "strongest for noise" in text
    assert "![reject](../figures/reject.png)" in text
    assert "published (ScaleFace paper/README, IJB-C)" in text and "0 to 0.5, step 0.002" in text


def test_scaleface_claims_flip_when_curves_fall_and_correlation_is_negative(tmp_path):
    falling = reject_json(tmp_path / "r.json", {"1e-04": [0.6, 0.5, 0.4]})
    claims = write_scaleface_report({"ScaleFace": falling}, tmp_path / "s.md",
                                           quality_table=quality_table_csv(tmp_path, -0.3, 1e-6))
    assert [c.verdict for c in claims] == [claim_kinds.NOT_HELD, claim_kinds.NOT_HELD]
    assert "does not track" in claims[1].text
    weak = write_scaleface_report({"ScaleFace": falling}, tmp_path / "w.md",
                                         quality_table=quality_table_csv(tmp_path, 0.05, 0.4))
    assert weak[1].verdict == claim_kinds.NOT_HELD  # positive but not significant


# --------------------------------------------------------------------------- published data and CLI


def test_published_rows_carry_their_source_and_data_set():
    rows = published.sphereface_rows() + published.scf_rows() + published.insightface_rows()
    assert all(row.source and row.test_set and row.label.startswith(f"published ({row.source}, {row.test_set}")
               for row in rows)
    released = published.sphereface_rows()[0]
    assert released.values["accuracy"] == pytest.approx(np.mean(published.SPHEREFACE20_RELEASED_FOLDS), abs=0.01)
    ijbc = {row.method: row.values for row in published.scf_rows("IJB-C")}
    assert ijbc["CosFace + SCF"]["TAR@FAR=1e-04"] == 96.22 and ijbc["ArcFace"]["TAR@FAR=1e-05"] == 93.15
    assert {row.test_set for row in published.scf_rows()} == {"IJB-B", "IJB-C"}


def test_report_cli_kinds_write_their_outputs(tmp_path):
    metrics = [write_pairs_metrics(tmp_path / "metrics" / name / "synth_lfw.json", acc)
               for name, acc in (("softmax", 0.8), ("sphereface20", 0.9))]
    table = tmp_path / "results" / "verification_table.csv"
    run_report_cli(["verification-table", "--metrics", *map(str, metrics), "--method", "Softmax", "A-Softmax",
                    "--backbone", "sphere20", "sphere20", "--train-set", "synth", "synth", "--out", str(table)])
    report = tmp_path / "results" / "reports" / "sphereface.md"
    run_report_cli(["sphereface", "--verification-table", str(table), "--out", str(report)])
    assert "**held**" in report.read_text()
    curve = reject_json(tmp_path / "reject" / "scaleface" / "synth_ijbc.json", {"1e-04": [0.5, 0.6, 0.7]})
    run_report_cli(["scaleface", "--reject", str(curve), "--out", str(tmp_path / "scaleface.md")])
    assert "scaleface on synth_ijbc" in (tmp_path / "scaleface.md").read_text()  # label = folder name
    with pytest.raises(InputError, match="--label has 2 values for 1 files"):
        run_report_cli(["scaleface", "--reject", str(curve), "--label", "a", "b", "--out", str(tmp_path / "x.md")])


def test_scf_claims_are_judged_on_the_controlled_pair_with_paired_intervals(tmp_path):
    """+SCF is compared with its control (same model, pooling, score, constant uncertainty), never
    with the N1D1F1 base; the verdict follows the paired interval; unresolved FARs stay unresolved."""
    import numpy as np

    from facetrust.evaluate.bootstrap import cluster_design, write_replicates

    design = cluster_design(np.array([[0, 1], [0, 2]]), np.array([1, 0]), None)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (200, 2))
    files = {}
    for name, level in (("base", 0.60), ("scf", 0.50), ("control", 0.45)):
        files[name] = tmp_path / f"{name}.npz"
        tar = np.column_stack([level + noise[:, 0] * 10, level + noise[:, 1]])
        write_replicates(files[name], fars=[1e-6, 1e-3], tar=tar, design=design, n_resamples=200, seed=1, level=0.95)
    header = ("method,backbone,train_set,test_set,TAR@FAR=1e-06,TAR@FAR=1e-03,variant,model,pooling,score,control,"
              "n_genuine,n_impostor,unresolved_fars,replicates\n")
    rows = [f"ArcFace,r,s,t,0.6,0.6,arcface,arcface,mean,cosine,,10,100000,1e-06,{files['base']}",
            f"ArcFace+SCF,r,s,t,0.5,0.5,arcface_scf,arcface,kappa,cosine,,10,100000,1e-06,{files['scf']}",
            f"ArcFace [control],r,s,t,0.45,0.45,c,arcface,kappa,cosine,mean,10,100000,1e-06,{files['control']}"]
    table = tmp_path / "ijbc_table.csv"
    table.write_text(header + "\n".join(rows) + "\n")
    claims = write_scf_report([table], tmp_path / "scf.md")
    by_far = {c.text.split("TAR@FAR=")[1][:5]: c for c in claims if "vs its control" in c.text}
    assert by_far["1e-03"].verdict == "held"  # +5 points, interval well above 0
    assert by_far["1e-06"].verdict == "not resolved"  # FAR below 10/n_impostor
    assert "ArcFace [control]" in by_far["1e-03"].text and "Uncontrolled" in by_far["1e-03"].text
    text = (tmp_path / "scf.md").read_text()
    assert "(unresolved)" in text and "which convention each used" in text


def test_sphereface_protocol_rows_carry_their_bootstrap_interval(tmp_path):
    table = verification_csv(tmp_path, [("Softmax", "sphere20", 0.80, 0.02, 0.6),
                                        ("A-Softmax", "sphere20", 0.90, 0.01, 0.3)])
    protocol = tmp_path / "sphere20.sphereface.json"
    protocol.write_text(json.dumps({"test_set": "synth_lfw", "accuracy": 0.915, "accuracy_std": 0.01,
                                    "accuracy_ci": [0.9034, 0.93]}))
    without = tmp_path / "sphere4.sphereface.json"
    without.write_text(json.dumps({"test_set": "synth_lfw", "accuracy": 0.88, "accuracy_std": 0.02}))
    out = tmp_path / "sphereface.md"
    write_sphereface_report(table, out, paper_protocol={"A-Softmax (sphere20)": protocol,
                                                               "A-Softmax (sphere4)": without})
    rows = [line for line in out.read_text().splitlines() if "SphereFace's protocol (evaluation.m)" in line]
    assert len(rows) == 2
    assert "| 91.50 [90.34, 93.00] |" in rows[0] and "| 88.00 |" in rows[1]


# --------------------------------------------------------------------------- the papers registry


def test_every_paper_is_report_paper_name_with_its_own_inputs_and_report_name_is_the_same_command():
    from facetrust.cli import build_parser
    from facetrust.report.papers import PAPER_MODULES, papers

    assert list(papers()) == list(PAPER_MODULES)
    parser = build_parser()
    for name in PAPER_MODULES:
        long = parser.parse_args(["report", "paper", name, "--out", "r.md", *_required(name)])
        short = parser.parse_args(["report", name, "--out", "r.md", *_required(name)])
        assert long.func.__qualname__ == short.func.__qualname__
        assert {k: v for k, v in vars(long).items() if k not in ("func", "paper", "kind")} == \
               {k: v for k, v in vars(short).items() if k not in ("func", "kind")}
    published = {name: paper.published() for name, paper in papers().items() if paper.published}
    assert set(published) == {"sphereface", "scf", "xcos"} and all(published.values())
    with pytest.raises(SystemExit):  # another paper's flag is not this paper's input
        parser.parse_args(["report", "paper", "scf", "--table", "t.csv", "--reject", "r.json", "--out", "r.md"])


def _required(name: str) -> list[str]:
    return {"sphereface": ["--verification-table", "v.csv"], "scf": ["--table", "t.csv"],
            "scaleface": ["--reject", "r.json"], "xcos": ["--metrics", "m.json", "--table", "x.csv"],
            "explanations": ["--results", "a", "--examples", "b", "--table", "c", "--curves", "d", "--maps", "e",
                             "--sanity", "f", "--sanity-examples", "g", "--cascade", "h", "--restoration", "i"],
            "inversion": ["--results", "a", "--images", "b", "--table", "c", "--figure", "d"]}[name]


def test_a_planted_paper_reaches_the_command_and_facetrust_methods(tmp_path, monkeypatch, capsys):
    """The paper recipe: one module with ``PAPER`` plus its name in PAPER_MODULES."""
    import sys
    import types

    from facetrust.cli import main
    from facetrust.report import papers as registry

    planted = types.ModuleType("facetrust.report.papers.planted")

    def add_arguments(p):
        p.add_argument("--table", required=True)
        p.add_argument("--out", required=True)

    def write(args):
        Path(args.out).write_text(f"# Planted\n\nrows: {len(Path(args.table).read_text().splitlines())}\n")
        return [claim_kinds.Claim("the planted paper's claim", "held")]

    planted.PAPER = registry.Paper("planted", "A planted paper", add_arguments, write)
    monkeypatch.setitem(sys.modules, "facetrust.report.papers.planted", planted)
    monkeypatch.setattr(registry, "PAPER_MODULES", (*registry.PAPER_MODULES, "planted"))
    registry.papers.cache_clear()
    try:
        (tmp_path / "t.csv").write_text("a\n1\n2\n")
        monkeypatch.chdir(tmp_path)
        assert main(["report", "paper", "planted", "--table", "t.csv", "--out", "planted.md"]) == 0
        assert (tmp_path / "planted.md").read_text().endswith("rows: 3\n")
        assert "[held] the planted paper's claim" in capsys.readouterr().out
        assert main(["methods"]) in (0, None)
        listed = capsys.readouterr().out
        assert "paper reports (report paper NAME): sphereface, scf, scaleface" in listed and "inversion, planted" in listed
    finally:
        registry.papers.cache_clear()
