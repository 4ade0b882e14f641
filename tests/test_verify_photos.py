"""Photographs as input: real photos shipped with the dependencies (matplotlib's grace_hopper.jpg,
scikit-image's astronaut and lfw_subset) are detected and aligned to InsightFace's crop by every
command that takes image files, never squashed; ``facetrust verify`` runs end to end on a tiny
trained model and writes a complete record.  Same/different decisions on these photos are not
asserted: the synthetic model was never trained on real faces."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch", reason="MTCNN needs facenet-pytorch")
skimage_data = pytest.importorskip("skimage.data")
cbook = pytest.importorskip("matplotlib.cbook")

from facetrust.align.photo import CENTER_CROP, DETECTED, prepare_files, prepare_images  # noqa: E402
from facetrust.align.warp import ARCFACE_TEMPLATE_112, align_face, estimate_similarity  # noqa: E402
from facetrust.cli import main  # noqa: E402
from facetrust.data.transforms import fit_to_size  # noqa: E402
from test_align_insightface import insightface_norm_crop  # noqa: E402

NOT_WRITABLE = "error:The given NumPy array is not writable"
HOPPER = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The photos as files a user would have: grace_hopper.jpg as shipped, the astronaut as a PNG,
    and an LFW face (25x25 grey, enlarged to 100x100 for MTCNN's 20 px minimum)."""
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut.png")
    lfw = np.round(skimage_data.lfw_subset()[0] * 255).astype(np.uint8)
    Image.fromarray(lfw).resize((100, 100), Image.BICUBIC).convert("RGB").save(root / "lfw0.png")
    return {"hopper": HOPPER, "astronaut": root / "astronaut.png", "lfw": root / "lfw0.png"}


@pytest.mark.filterwarnings(NOT_WRITABLE)
def test_photos_are_detected_and_the_crop_is_insightfaces_with_landmarks_on_the_template(photos):
    faces = prepare_files([photos["hopper"], photos["astronaut"], photos["lfw"]], (112, 112))
    for face, path in zip(faces, (photos["hopper"], photos["astronaut"], photos["lfw"])):
        assert face.how == DETECTED and face.detection["score"] > 0.95, path
        pixels = np.asarray(Image.open(path).convert("RGB"))
        points = np.asarray(face.detection["landmarks"])
        x1, y1, x2, y2 = face.detection["box"]
        assert ((points >= [x1, y1]) & (points <= [x2, y2])).all()  # the five points belong to the face found
        # the model's input is exactly our align_face of the detected points (the align stage's crop) and
        # InsightFace's norm_crop of them within one grey level (cv2's fixed-point bilinear)
        assert np.array_equal(face.pixels, align_face(pixels, points, (112, 112)))
        theirs = insightface_norm_crop(pixels, points)
        assert np.abs(face.pixels.astype(int) - theirs.astype(int)).max() <= 1
        # the detected points land on the ArcFace template up to the 4-DoF fit's residual: a few pixels
        # on the 112-px template (eyes ~35 px apart; a smile moves the mouth corners), not tens
        matrix = estimate_similarity(points, ARCFACE_TEMPLATE_112)
        np.testing.assert_allclose(face.landmarks, points @ matrix[:, :2].T + matrix[:, 2], atol=1e-9)
        residual = np.linalg.norm(face.landmarks - ARCFACE_TEMPLATE_112, axis=1)
        assert residual.mean() < 5.0 and residual[:2].max() < 3.5
        assert face.note and "is not an aligned 112x112 crop" in face.note and str(path) in face.note


def test_the_crop_is_made_at_the_models_input_size_not_resized_from_112(photos):
    small, = prepare_files([photos["astronaut"]], (24, 24))
    pixels = np.asarray(Image.open(photos["astronaut"]).convert("RGB"))
    assert np.array_equal(small.pixels, align_face(pixels, np.asarray(small.detection["landmarks"]), (24, 24)))
    residual = np.linalg.norm(small.landmarks - ARCFACE_TEMPLATE_112 * 24 / 112, axis=1)
    assert residual.mean() < 5.0 * 24 / 112  # the 112-px bound, scaled with the template


def _disc(width: int, height: int) -> np.ndarray:
    """A dark disc of radius 40 px in the middle of a light, faceless canvas."""
    yy, xx = np.mgrid[:height, :width]
    canvas = np.full((height, width, 3), 230, np.uint8)
    canvas[(xx - (width - 1) / 2) ** 2 + (yy - (height - 1) / 2) ** 2 <= 40**2] = 20
    return canvas


def test_no_face_center_crop_keeps_the_aspect_ratio():
    face, = prepare_images([("disc.png", _disc(300, 120))], (32, 32), no_face="center-crop")
    assert face.how == CENTER_CROP and "no face" in face.note
    assert np.array_equal(face.pixels, fit_to_size(_disc(300, 120), (32, 32)))
    dark = face.pixels[..., 0] < 125
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    # a squash of 300x120 to 32x32 would make the disc 2.5 times taller than wide
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1


def test_no_face_is_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    from explain_helpers import save_model

    model = save_model(tmp_path / "model")
    Image.fromarray(_disc(200, 150)).save(tmp_path / "disc.png")
    code = main(["verify", str(tmp_path / "disc.png"), str(HOPPER), "--model", str(model), "--explain", "none",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("facetrust verify: error: ") and "disc.png" in err[-1]
    assert "no face" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_file_that_is_not_an_image_is_exit_2_naming_it(tmp_path, capsys):
    from explain_helpers import save_model

    (tmp_path / "notes.jpg").write_text("not a photograph")
    code = main(["verify", str(tmp_path / "notes.jpg"), str(HOPPER), "--model", str(save_model(tmp_path / "m")),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "notes.jpg" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.filterwarnings(NOT_WRITABLE)
def test_explain_map_detects_and_aligns_photos_and_says_so(photos, tmp_path, capsys):
    from explain_helpers import save_model

    model = save_model(tmp_path / "model", size=24)
    out = tmp_path / "map.png"
    assert main(["explain", "map", str(photos["hopper"]), str(photos["astronaut"]), "--model", str(model),
                 "--steps", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("is not an aligned 24x24 crop: MTCNN found") == 2 and out.stat().st_size > 0
    # --aligned skips detection, and says what it did instead
    assert main(["explain", "map", str(photos["hopper"]), str(photos["astronaut"]), "--model", str(model),
                 "--steps", "2", "--aligned", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "MTCNN" not in err and "--aligned: 512x600 taken as an aligned crop, the centre 512x512" in err


def test_reading_images_gives_writable_arrays_so_torch_does_not_warn(tmp_path):
    import io

    from facetrust.data.images import decode_image
    from facetrust.data.transforms import to_tensor

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buffer, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        decoded = decode_image(buffer.getvalue(), "x.png")
        assert decoded.flags.writeable
        to_tensor(np.asarray(Image.new("RGB", (8, 6))))  # np.asarray of a PIL image is read-only
        to_tensor(fit_to_size(decoded, (4, 4)))


# ------------------------------------------------------------------------------- verify end to end


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """A tiny model trained on a synthetic set, embedded (emb_norm uncertainty) and evaluated on the
    set's IJB protocol: a metrics file with thresholds and the embeddings it came from."""
    from explain_helpers import TINY_SYNTH
    from train_helpers import tiny_config

    from facetrust.align.stage import run_align
    from facetrust.data.synthetic import SynthConfig, synthesize
    from facetrust.embed import run_embed
    from facetrust.evaluate.ijb import run_evaluate_ijb
    from facetrust.train.trainer import train

    root = tmp_path_factory.mktemp("verify_bench")
    synthesize(root / "bench", SynthConfig.from_dict({**TINY_SYNTH, "ijb_identities": 5, "ijb_impostor_pairs": 30}),
               seed=3)
    train(tiny_config(input_size=[24, 24], epochs=1), root / "bench" / "train", root / "model")
    ijb = root / "bench" / "ijb" / "synth_ijbc"
    run_align(ijb, "synth_ijbc", root / "aligned", output_size=(24, 24))
    run_embed(root / "model", root / "aligned", root / "emb.npz", uncertainty="emb_norm")
    run_evaluate_ijb(root / "emb.npz", ijb, "synth_ijbc", root / "metrics.json")
    return root


@pytest.fixture(scope="module")
def scf_benchmark(benchmark):
    """The same model with an SCF head, evaluated with SCF's own score (Eq. 13) on κ-pooled templates."""
    from facetrust.embed import run_embed
    from facetrust.evaluate.ijb import run_evaluate_ijb
    from facetrust.train.fit_head import fit_head

    root = benchmark
    fit_head("scf", root / "model", root / "bench" / "train", root / "scf",
             {"epochs": 2, "batch_size": 8, "hidden": [8], "extract_batch_size": 16, "device": "cpu"})
    run_embed(root / "model", root / "aligned", root / "emb_scf.npz", head_dir=root / "scf")
    run_evaluate_ijb(root / "emb_scf.npz", root / "bench" / "ijb" / "synth_ijbc", "synth_ijbc",
                     root / "metrics_scf.json", pooling="kappa", score="scf_vmf")
    return root


@pytest.mark.filterwarnings(NOT_WRITABLE)
def test_verify_runs_end_to_end_and_the_record_is_complete(benchmark, photos, tmp_path, capsys):
    import torch

    from facetrust.data.transforms import to_tensor
    from facetrust.models.artifacts import load_model

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image1,image2,label\n{photos['hopper']},{photos['astronaut']},different\n"
                     f"{photos['hopper']},{photos['hopper']},same\n")
    out = tmp_path / "out"
    metrics = json.loads((benchmark / "metrics.json").read_text())
    assert main(["verify", "--pairs", str(pairs), "--model", str(benchmark / "model"), "--far", "1e-1",
                 "--metrics", str(benchmark / "metrics.json"), "--benchmark-embeddings", str(benchmark / "emb.npz"),
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    point = metrics["threshold_at_far"]["1e-01"]
    assert f"threshold {point['threshold']:.6g} at FAR 1e-01 on synth_ijbc" in captured.out
    # 30 impostor pairs do not resolve FAR 0.1 (fewer than 10 above the threshold), and the threshold is a
    # template-level one: both said, on stderr and in the record
    assert "1e-01" in metrics["unresolved_fars"]
    assert "verify: note: FAR 1e-01 is not resolved on synth_ijbc" in captured.err
    assert "verify: note: the threshold was set on synth_ijbc's template-to-template scores" in captured.err
    assert captured.err.count("is not an aligned 24x24 crop") == 2  # each photo detected once, said once
    result = json.loads((out / "verify.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [".facetrust-output", "pair_0000.png", "pair_0001.png",
                                                     "verify.json"]  # the marker: a rerun may replace it
    assert result["settings"]["score"] == "cosine" and result["settings"]["flip"] is True
    assert len(result["settings"]["operating_point_caveats"]) >= 2 and result["skipped_pairs"] == 0

    # the score is the cosine of the embed stage's flip-fused embeddings of the two aligned crops
    backbone, _, _ = load_model(benchmark / "model")
    crops = prepare_files([photos["hopper"], photos["astronaut"]], (24, 24))
    with torch.no_grad():
        inputs = torch.stack([to_tensor(c.pixels) for c in crops])
        fused = (backbone(inputs) + backbone(torch.flip(inputs, dims=[3]))).double().numpy()
    unit = fused / np.linalg.norm(fused, axis=1, keepdims=True)
    first, same = result["pairs"]
    assert first["score"]["value"] == pytest.approx(float(unit[0] @ unit[1]), abs=1e-6)
    assert same["score"]["value"] == pytest.approx(1.0, abs=1e-6)  # a photo against itself, whatever the model

    benchmark_u = np.load(benchmark / "emb.npz")["uncertainty"].astype(np.float64)
    for record, label in zip(result["pairs"], ("different", "same")):
        assert record["label"] == label and record["figure"].endswith(".png")
        for image in ("image1", "image2"):
            assert record[image]["how"] == "detected" and len(record[image]["aligned_landmarks"]) == 5
            assert record[image]["detection"]["faces_found"] >= 1
        decision = record["decision"]
        assert decision["threshold"] == point["threshold"] and decision["far"] == 0.1
        assert decision["roc_far"] == point["far"] and decision["test_set"] == "synth_ijbc"
        assert decision["same"] == (record["score"]["value"] >= point["threshold"])
        uncertainty = record["uncertainty"]
        assert uncertainty["kind"] == "emb_norm"  # the benchmark row's own estimate
        for face in ("face1", "face2"):
            value = uncertainty[face]["uncertainty"]
            assert uncertainty[face]["feature_norm"] == pytest.approx(1.0 / value)
            placed = uncertainty["benchmark"][face]
            assert placed["share_at_least_as_uncertain"] == pytest.approx(np.mean(benchmark_u >= value))
            assert "synth_ijbc images" in placed["text"] and "0.0 %" not in placed["text"]
        assert record["explanation"]["method"] == "integrated_gradients"  # what --explain gradient draws
        with Image.open(out / record["figure"]) as page:
            assert page.size[0] > 600 and page.size[1] > 400
    # the same photo on both sides: identical crops and uncertainties
    assert same["uncertainty"]["face1"] == same["uncertainty"]["face2"]


def test_verify_refuses_a_far_the_metrics_file_was_not_evaluated_at(benchmark, photos, tmp_path, capsys):
    code = main(["verify", str(photos["hopper"]), str(photos["hopper"]), "--model", str(benchmark / "model"),
                 "--far", "0.5", "--metrics", str(benchmark / "metrics.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "metrics.json" in err and "no FAR 5e-01" in err


def test_a_bad_pairs_csv_is_exit_2_naming_file_and_line(tmp_path, capsys):
    from explain_helpers import save_model

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image1,image2\n{HOPPER},{HOPPER}\nonly-one-path\n")
    code = main(["verify", "--pairs", str(pairs), "--model", str(save_model(tmp_path / "m")),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "pairs.csv line 3" in capsys.readouterr().err


def test_verify_with_an_scf_head_scores_with_eq_13_and_reports_kappa(scf_benchmark, photos, tmp_path):
    from facetrust.evaluate.scores import vmf_log_similarity

    root = scf_benchmark
    out = tmp_path / "out"
    assert main(["verify", str(photos["hopper"]), str(photos["astronaut"]), "--model", str(root / "model"),
                 "--head", str(root / "scf"), "--far", "1e-1", "--metrics", str(root / "metrics_scf.json"),
                 "--benchmark-embeddings", str(root / "emb_scf.npz"), "--explain", "none", "--out", str(out)]) == 0
    record = json.loads((out / "verify.json").read_text())["pairs"][0]
    assert record["score"]["name"] == "scf_vmf" and "explanation" not in record
    kappa1, kappa2 = (record["uncertainty"][f]["kappa"] for f in ("face1", "face2"))
    assert record["uncertainty"]["kind"] == "scf" and kappa1 > 0 and kappa2 > 0
    dimension = json.loads((root / "model" / "config.json").read_text())["embedding_size"]
    expected = vmf_log_similarity(np.array([record["cosine"]]), np.array([kappa1]), np.array([kappa2]), dimension)
    assert record["score"]["value"] == pytest.approx(float(expected[0]), rel=1e-6)
    threshold = json.loads((root / "metrics_scf.json").read_text())["threshold_at_far"]["1e-01"]["threshold"]
    assert record["decision"]["threshold"] == threshold and record["decision"]["score"] == "scf_vmf"
    assert set(record["uncertainty"]["benchmark"]) >= {"face1", "face2", "n_images"}


def test_verify_runs_an_onnx_model_on_aligned_crops_with_the_perturbation_map(tmp_path, capsys):
    """Crops of the input size are used as they are, and stderr says so; ONNX has no gradients."""
    pytest.importorskip("onnxruntime")
    from explain_helpers import save_model

    from facetrust.models.export import run_export_onnx

    run_export_onnx(save_model(tmp_path / "m", size=24), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    args = ["verify", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(tmp_path / "m.onnx")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "no gradients; use --explain perturbation" in capsys.readouterr().err
    assert main([*args, "--explain", "perturbation", "--masks", "20", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "MTCNN" not in err and err.count("24x24 is the model's input size: taken as an aligned crop, not detected") == 2
    record = json.loads((tmp_path / "o" / "verify.json").read_text())["pairs"][0]
    assert record["image1"]["how"] == record["image2"]["how"] == "aligned_input"
    assert record["explanation"]["method"] == "perturbation" and record["decision"] is None


def test_an_image_below_mtcnns_smallest_face_is_named_as_too_small(tmp_path, capsys):
    from explain_helpers import save_model

    Image.open(HOPPER).convert("RGB").resize((16, 19)).save(tmp_path / "thumb.png")
    code = main(["verify", str(tmp_path / "thumb.png"), str(HOPPER), "--model", str(save_model(tmp_path / "m")),
                 "--explain", "none", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "thumb.png: this 16x19 image is smaller than MTCNN's smallest face (20 px)" in err


@pytest.mark.filterwarnings(NOT_WRITABLE)
def test_pairs_with_a_bad_photograph_are_skipped_on_request_and_stop_the_run_otherwise(photos, tmp_path, capsys):
    from explain_helpers import save_model

    model = save_model(tmp_path / "m", size=24)
    (tmp_path / "corrupt.jpg").write_bytes(HOPPER.read_bytes()[:2000])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image1,image2,label\n{HOPPER},{photos['astronaut']},different\n"
                     f"{tmp_path / 'corrupt.jpg'},{HOPPER},same\n{photos['astronaut']},{photos['lfw']},different\n")
    args = ["verify", "--pairs", str(pairs), "--model", str(model), "--explain", "none", "--threshold", "0.5"]
    assert main([*args, "--out", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]  # the message on a line of its own, not after the progress bar's \r
    assert last.startswith("facetrust verify: error: ") and "corrupt.jpg" in last
    assert not (tmp_path / "stop").exists()

    assert main([*args, "--on-bad-image", "skip", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr()
    result = json.loads((tmp_path / "o" / "verify.json").read_text())
    assert [record["pair"] for record in result["pairs"]] == [0, 1, 2] and result["skipped_pairs"] == 1
    skipped = result["pairs"][1]
    assert "corrupt.jpg" in skipped["skipped"] and skipped["label"] == "same" and "figure" not in skipped
    assert [entry["path"] for entry in result["skipped_images"]] == [str(tmp_path / "corrupt.jpg")]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".facetrust-output", "pair_0000.png",
                                                                  "pair_0002.png", "verify.json"]
    assert "1 skipped" in out.out and "--on-bad-image skip" in out.err
