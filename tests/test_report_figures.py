"""Figures (ROC, reject curves, uncertainty histograms) and the uncertainty-vs-quality Spearman table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetrust.errors import InputError
from facetrust.evaluate.roc import roc_points, write_roc
from facetrust.report import figures, uncertainty_figures
from facetrust.report.quality import quality_rows, read_quality, uncertainty_quality_table

QUALITY_HEADER = "set,image,identity,blur_sigma,noise_std,resolution,jpeg_quality,occlusion,quality"


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_quality_csv(path: Path, rows: list[tuple]) -> Path:
    lines = [QUALITY_HEADER] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_degradations(n: int, seed: int) -> pd.DataFrame:
    """n images with independent random degradations and the quality they imply (a product, as the benchmark)."""
    rng = np.random.default_rng(seed)
    blur = rng.uniform(0, 3, n)
    noise = rng.uniform(0, 30, n)
    resolution = rng.integers(12, 49, n)
    jpeg = rng.integers(10, 96, n)
    occlusion = rng.uniform(0, 0.4, n)
    quality = (1 / (1 + (blur / 1.5) ** 2)) * (1 / (1 + (noise / 20) ** 2)) * (1 - occlusion) ** 2
    return pd.DataFrame({"blur_sigma": blur, "noise_std": noise, "resolution": resolution, "jpeg_quality": jpeg,
                         "occlusion": occlusion, "quality": quality})


def write_pair_set(tmp_path: Path, n_pairs: int = 300, seed: int = 0, *, name: str = "synth_lfw",
                   uncertainty: str = "degradation") -> tuple[Path, Path, pd.DataFrame]:
    """A pair-set embeddings .npz (images synth_lfw/<i>) and its quality.csv; uncertainty from the degradation."""
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs
    degradations = synthetic_degradations(n, seed + 1)
    pair, second = np.arange(n) // 2, np.arange(n) % 2 == 1
    identity = pair + np.where(second & (pair % 2 == 1), n, 0)  # odd pairs: impostors
    issame = identity[0::2] == identity[1::2]
    centres = rng.normal(size=(2 * n, 16))
    degradation = 1.0 - degradations["quality"].to_numpy()
    embedding = centres[identity] + rng.normal(size=(n, 16)) * (0.3 + 2.0 * degradation[:, None])
    values = {"degradation": degradation + 0.05, "random": rng.uniform(0.1, 1.0, n)}[uncertainty]
    npz = tmp_path / f"{name}.npz"
    np.savez(npz, image=np.array([f"{name}/{i}" for i in range(n)]), embedding=embedding.astype(np.float32),
             uncertainty=values.astype(np.float32), uncertainty_kind=np.asarray("test"), issame=issame)
    rows = [(name, f"{name}/{i}", identity[i], *degradations.iloc[i].tolist()) for i in range(n)]
    quality_csv = write_quality_csv(tmp_path / "quality.csv", rows)
    return npz, quality_csv, degradations


# --------------------------------------------------------------------------- ROC


def test_roc_figure_is_written_and_byte_identical_when_rerendered(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 3000)
    fpr, tpr, thresholds = roc_points(labels, rng.normal(labels * 2.0, 1.0))
    write_roc(tmp_path / "arcface" / "synth.csv", fpr, tpr, thresholds)
    write_roc(tmp_path / "cosface" / "synth.npz", fpr, np.sqrt(tpr), thresholds)
    curves = {"ArcFace": tmp_path / "arcface" / "synth.csv", "CosFace": tmp_path / "cosface" / "synth.npz"}
    for suffix in ("png", "pdf"):
        first = figures.plot_roc(curves, tmp_path / f"roc.{suffix}", title="synth")
        again = figures.plot_roc(curves, tmp_path / f"roc_again.{suffix}", title="synth")
        assert first.stat().st_size > 1000
        assert digest(first) == digest(again)
    assert b"CreationDate" not in (tmp_path / "roc.pdf").read_bytes()
    # The figure depends on its data: another curve gives another file.
    figures.plot_roc({"ArcFace": curves["ArcFace"]}, tmp_path / "one.png", title="synth")
    assert digest(tmp_path / "one.png") != digest(tmp_path / "roc.png")


def test_roc_file_without_tpr_column_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("fpr,threshold\n0.0,1.0\n")
    with pytest.raises(InputError, match="bad.csv"):
        figures.plot_roc({"x": bad}, tmp_path / "x.png")


# --------------------------------------------------------------------------- reject curves


def test_reject_plot_from_evaluate_reject_output_is_deterministic(tmp_path):
    from facetrust.evaluate.reject import run_evaluate_reject

    npz, _, _ = write_pair_set(tmp_path, n_pairs=200)
    curve = run_evaluate_reject(npz, tmp_path / "scaleface" / "reject.json", fars=(1e-2, 1e-1),
                                fractions=np.round(np.arange(0, 0.51, 0.05), 4))
    assert set(curve["tar_at_far"]) == {"1e-02", "1e-01"}
    curves = {"ScaleFace": tmp_path / "scaleface" / "reject.json"}
    out = figures.plot_reject_curves(curves, None, tmp_path / "reject.png")
    again = figures.plot_reject_curves(curves, [0.01, 0.1], tmp_path / "reject_again.png")
    assert digest(out) == digest(again)
    single = figures.plot_reject_curves(curves, 0.1, tmp_path / "reject_single.png")
    assert digest(single) != digest(out)


def test_reject_plot_refuses_a_far_the_curve_lacks(tmp_path):
    path = tmp_path / "m" / "reject.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"fractions": [0.0, 0.5], "tar_at_far": {"1e-04": [0.5, 0.6]}}))
    with pytest.raises(InputError, match="FAR 0.001"):
        figures.plot_reject_curves({"m": path}, 1e-3, tmp_path / "x.png")
    path.write_text(json.dumps({"fractions": [0.0, 0.5], "tar_at_far": {"1e-04": [0.5]}}))
    with pytest.raises(InputError, match="one TAR per fraction"):
        figures.plot_reject_curves({"m": path}, 1e-4, tmp_path / "x.png")


# --------------------------------------------------------------------------- histograms


def test_uncertainty_histograms_for_a_pair_set_are_deterministic(tmp_path):
    npz, quality_csv, _ = write_pair_set(tmp_path, n_pairs=150)
    out = uncertainty_figures.plot_uncertainty_histograms(npz, quality_csv, None, tmp_path / "hist.png")
    again = uncertainty_figures.plot_uncertainty_histograms(npz, quality_csv, None, tmp_path / "hist_again.png")
    assert digest(out) == digest(again)
    no_quality = uncertainty_figures.plot_uncertainty_histograms(npz, None, None, tmp_path / "hist_pairs_only.png")
    assert digest(no_quality) != digest(out)


def write_ijb(tmp_path: Path, n_templates: int = 12, images_per_template: int = 3, seed: int = 5):
    """A tiny IJB-style protocol (meta files only) and an embeddings file naming its images <n>.jpg."""
    rng = np.random.default_rng(seed)
    meta = tmp_path / "ijb" / "meta"
    meta.mkdir(parents=True)
    names, templates = [], []
    for t in range(1, n_templates + 1):
        for _ in range(images_per_template):
            names.append(f"{len(names) + 1}.jpg")
            templates.append(t)
    (meta / "tiny_face_tid_mid.txt").write_text("".join(f"{n} {t} {t}\n" for n, t in zip(names, templates)))
    points = " 38.3 51.7 73.5 51.5 56.0 71.7 41.5 92.4 70.7 92.2"  # the ArcFace template (not degenerate)
    (meta / "tiny_name_5pts_score.txt").write_text("".join(f"{n}{points} 0.9\n" for n in names))
    pairs = [(a, b, int((a - 1) // 2 == (b - 1) // 2)) for a in range(1, n_templates + 1)
             for b in range(a + 1, n_templates + 1)]
    (meta / "tiny_template_pair_label.txt").write_text("".join(f"{a} {b} {lab}\n" for a, b, lab in pairs))
    degradations = synthetic_degradations(len(names), seed)
    npz = tmp_path / "ijb.npz"
    np.savez(npz, image=np.array(names), embedding=rng.normal(size=(len(names), 8)).astype(np.float32),
             uncertainty=(1.05 - degradations["quality"].to_numpy()).astype(np.float32),
             detector_score=np.full(len(names), 0.9, np.float32))
    rows = [("synth_ijbc", f"synth_ijbc/{n}", templates[i], *degradations.iloc[i].tolist()) for i, n in enumerate(names)]
    rows += [("synth_lfw", "synth_lfw/0", 1, 0, 0, 48, 95, 0, 1.0)]
    return npz, write_quality_csv(tmp_path / "quality.csv", rows), tmp_path / "ijb", len(pairs)


def test_ijb_histograms_pair_templates_by_mean_uncertainty(tmp_path):
    npz, quality_csv, ijb_dir, n_pairs = write_ijb(tmp_path)
    _, image_u, pair_u, genuine = uncertainty_figures.pair_uncertainty_and_labels(npz, ijb_dir, "tiny")
    assert pair_u.shape == genuine.shape == (n_pairs,)
    # Template 1 = images 0-2, template 2 = images 3-5; their pair is the first listed.
    expected = (image_u[0:3].mean() + image_u[3:6].mean()) / 2
    assert pair_u[0] == pytest.approx(expected)
    assert genuine[0]
    out = uncertainty_figures.plot_uncertainty_histograms(npz, quality_csv, ijb_dir, tmp_path / "ijb.png", name="tiny")
    assert digest(out) == digest(uncertainty_figures.plot_uncertainty_histograms(npz, quality_csv, ijb_dir, tmp_path / "again.png",
                                                                     name="tiny"))


# --------------------------------------------------------------------------- quality table


def test_spearman_is_one_when_uncertainty_equals_degradation(tmp_path):
    npz, quality_csv, _ = write_pair_set(tmp_path, uncertainty="degradation")
    table = uncertainty_quality_table({"Oracle": npz}, quality_csv, tmp_path / "q.csv")
    row = table.iloc[0]
    assert row["spearman_degradation"] == pytest.approx(1.0)
    assert row["n_images"] == 600 and row["test_set"] == "synth_lfw" and row["uncertainty_kind"] == "test"
    # Quality here falls with blur, noise and occlusion only: those correlate, JPEG and resolution do not.
    assert row["spearman_blur"] > 0.3 and row["spearman_noise"] > 0.3 and row["spearman_occlusion"] > 0.1
    assert abs(row["spearman_jpeg"]) < 0.15 and abs(row["spearman_resolution"]) < 0.15
    assert pd.read_csv(tmp_path / "q.csv")["spearman_degradation"].iloc[0] == pytest.approx(1.0)


def test_spearman_is_near_zero_for_random_uncertainty(tmp_path):
    npz, quality_csv, _ = write_pair_set(tmp_path, n_pairs=1000, uncertainty="random")
    row = uncertainty_quality_table({"Random": npz}, quality_csv).iloc[0]
    assert abs(row["spearman_degradation"]) < 0.08
    assert row["p_value"] > 0.001


def test_resolution_and_jpeg_are_inverted_and_constant_columns_left_empty(tmp_path):
    n = 50
    rng = np.random.default_rng(1)
    resolution = rng.permutation(np.arange(10, 10 + n))
    jpeg = rng.permutation(np.arange(20, 20 + n))
    rows = [("s", f"s/{i}", i, 0.0, 0.0, int(resolution[i]), int(jpeg[i]), 0.0, 1.0 - i / n) for i in range(n)]
    quality_csv = write_quality_csv(tmp_path / "quality.csv", rows)
    for name, values in {"low_res": -resolution, "low_jpeg": -jpeg}.items():
        np.savez(tmp_path / f"{name}.npz", image=np.array([f"s/{i}" for i in range(n)]),
                 uncertainty=values.astype(np.float32))
    table = uncertainty_quality_table({"low_res": tmp_path / "low_res.npz", "low_jpeg": tmp_path / "low_jpeg.npz"},
                                      quality_csv, tmp_path / "q.csv").set_index("method")
    assert table.loc["low_res", "spearman_resolution"] == pytest.approx(1.0)
    assert table.loc["low_jpeg", "spearman_jpeg"] == pytest.approx(1.0)
    assert np.isnan(table.loc["low_res", "spearman_blur"])  # blur is 0 everywhere: no ranking
    written = (tmp_path / "q.csv").read_text().splitlines()[1].split(",")
    assert written[6 + 0] == ""  # spearman_blur column empty, not 0


def test_ijb_image_names_are_matched_to_quality_rows_through_the_set_prefix(tmp_path):
    npz, quality_csv, _, _ = write_ijb(tmp_path)
    quality = read_quality(quality_csv)
    rows = quality_rows(["2.jpg", "1.jpg"], quality)
    assert rows["image"].tolist() == ["synth_ijbc/2.jpg", "synth_ijbc/1.jpg"]
    table = uncertainty_quality_table({"m": npz}, quality_csv)
    assert table["test_set"].iloc[0] == "synth_ijbc"
    assert table["spearman_degradation"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(InputError, match=r"999\.jpg' has no row"):
        quality_rows(["1.jpg", "999.jpg"], quality)


def test_embeddings_without_uncertainty_are_refused_naming_the_key(tmp_path):
    _, quality_csv, _ = write_pair_set(tmp_path, n_pairs=5)
    np.savez(tmp_path / "plain.npz", image=np.array(["synth_lfw/0"]), embedding=np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="plain.npz: missing key 'uncertainty'"):
        uncertainty_quality_table({"plain": tmp_path / "plain.npz"}, quality_csv)


def test_verification_figure_draws_margins_beside_their_controls_and_refuses_a_table_without_accuracy(tmp_path):
    rows = [("Softmax", "sphere20", 0.898, 0.879, 0.914), ("NormFace", "sphere20", 0.871, 0.849, 0.891),
            ("A-Softmax", "sphere20", 0.915, 0.897, 0.931), ("ArcFace", "iresnet", 0.927, 0.911, 0.944)]
    table = pd.DataFrame([{"method": m, "backbone": b, "train_set": "synth", "test_set": "synth_lfw", "accuracy": a,
                           "accuracy_ci_lo": lo, "accuracy_ci_hi": hi} for m, b, a, lo, hi in rows])
    table.to_csv(tmp_path / "t.csv", index=False)
    first = figures.plot_verification_accuracy(tmp_path / "t.csv", tmp_path / "a.png", margin_methods=["A-Softmax", "ArcFace"])
    again = figures.plot_verification_accuracy(tmp_path / "t.csv", tmp_path / "b.png", margin_methods=["A-Softmax", "ArcFace"])
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first.read_bytes() == again.read_bytes()
    table.drop(columns="accuracy").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="bad.csv"):
        figures.plot_verification_accuracy(tmp_path / "bad.csv", tmp_path / "c.png", margin_methods=["ArcFace"])
    assert not (tmp_path / "c.png").exists()
