"""facetrust.data.synthetic: the embedded benchmark, written in the real formats."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from facetrust.data.binset import load_bin
from facetrust.data.ijb import read_ijb_protocol
from facetrust.data.insightface import InsightFaceRecord
from facetrust.data.synthetic import QUALITY_COLUMNS, SynthConfig, contact_sheet, quality_score, synthesize
from facetrust.data.synthetic.degrade import apply_degradation, sample_degradation
from facetrust.data.synthetic.identity import (
    ARCFACE_TEMPLATE_112,
    landmark_jitter_bound_112,
    sample_nuisance,
)
from facetrust.data.synthetic.images import (
    identity_of,
    keyed_rng,
    loose_transform,
    render_aligned,
    render_loose,
    sample_shot,
)
from facetrust.data.synthetic.render import render_face
from facetrust.errors import ConfigError

TINY = SynthConfig(
    image_size=48, loose_crop_size=64, train_identities=5, train_images_per_identity=(2, 4),
    pair_identities=20, pair_images_per_identity=3, pairs_per_fold=4, ijb_identities=6,
    ijb_templates_per_identity=(2, 3), ijb_media_per_template=(1, 2), ijb_frames_per_media=(1, 3),
    ijb_impostor_pairs=40,
)
SEED = 7


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    synthesize(out, TINY, SEED)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _quality_rows(bench: Path) -> list[dict]:
    with open(bench / "quality.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(bench, tmp_path):
    synthesize(tmp_path / "b", TINY, SEED)
    first, second = _files(bench), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    synthesize(tmp_path / "c", TINY, SEED + 1)
    assert (tmp_path / "c" / "train" / "train.rec").read_bytes() != first["train/train.rec"]


def test_rendering_in_two_processes_writes_the_same_files(bench, tmp_path):
    synthesize(tmp_path / "two", TINY, SEED, workers=2)
    first, second = _files(bench), _files(tmp_path / "two")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_training_images_do_not_depend_on_how_many_identities_are_drawn(bench, tmp_path):
    synthesize(tmp_path / "small", dataclasses.replace(TINY, train_identities=2), SEED)
    big, small = InsightFaceRecord(bench / "train"), InsightFaceRecord(tmp_path / "small" / "train")
    assert len(small) == int((big.labels < 2).sum())
    assert [small.read(i) for i in range(len(small))] == [big.read(i) for i in range(len(small))]


def test_layout_round_trips_through_the_real_readers(bench):
    manifest = json.loads((bench / "manifest.json").read_text())
    assert manifest["seed"] == SEED and manifest["config"] == TINY.to_dict()

    record = InsightFaceRecord(bench / "train")
    assert record.num_classes == TINY.train_identities
    assert record.image_size == (TINY.image_size, TINY.image_size)
    assert len(record) == manifest["counts"]["train"]["images"]
    labels = record.labels
    assert np.all(np.diff(labels) >= 0) and set(labels.tolist()) == set(range(TINY.train_identities))
    pixels, _ = record.decode(0)
    assert pixels.shape == (TINY.image_size, TINY.image_size, 3)

    bins, issame = load_bin(bench / "pairs" / "synth_lfw.bin")
    assert len(issame) == TINY.pair_folds * TINY.pairs_per_fold == manifest["counts"]["pairs"]["pairs"]
    folds = np.asarray(issame).reshape(TINY.pair_folds, TINY.pairs_per_fold)
    half = TINY.pairs_per_fold // 2
    assert folds[:, :half].all() and not folds[:, half:].any()  # LFW order: genuine, then impostor
    with Image.open(io.BytesIO(bins[0])) as image:
        assert image.size == (TINY.image_size, TINY.image_size) and image.format == "JPEG"

    protocol = read_ijb_protocol(bench / "ijb" / "synth_ijbc")
    assert protocol.name == "synth_ijbc"
    assert list(protocol.images) == [f"{n}.jpg" for n in range(1, len(protocol.images) + 1)]
    for name in protocol.images[:3]:
        with Image.open(bench / "ijb" / "synth_ijbc" / "loose_crop" / name) as image:
            assert image.size == (TINY.loose_crop_size, TINY.loose_crop_size)
    assert ((protocol.detector_scores > 0) & (protocol.detector_scores <= 1)).all()
    assert ((protocol.landmarks > -5) & (protocol.landmarks < TINY.loose_crop_size + 5)).all()


def test_rendered_landmarks_sit_on_the_scaled_arcface_template_within_the_jitter_bound():
    scale = TINY.image_size / 112.0
    template = ARCFACE_TEMPLATE_112 * scale
    bound = landmark_jitter_bound_112() * scale
    errors = []
    for index in range(60):
        identity = identity_of(SEED, index)
        image = render_aligned(identity, keyed_rng(SEED, 1, index), TINY)
        errors.append(np.linalg.norm(image.landmarks - template, axis=1))
    errors = np.asarray(errors)
    assert errors.max() <= bound
    assert np.median(errors) < 0.35 * bound  # jitter is small typically, not pinned at the bound


def test_landmarks_are_exactly_the_template_without_pose_or_identity_offsets():
    identity = dataclasses.replace(identity_of(SEED, 0), eye_spacing=0.0, eye_height_offset=0.0,
                                   nose_length=0.0, mouth_width=0.0)
    nuisance = dataclasses.replace(sample_nuisance(keyed_rng(SEED, 9), identity), yaw=0.0, roll=0.0,
                                   shift=(0.0, 0.0), scale=1.0)
    to_pixel = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    _, landmarks = render_face(identity, nuisance, to_pixel, (56, 56), supersample=3)
    np.testing.assert_allclose(landmarks, ARCFACE_TEMPLATE_112 * 0.5, atol=1e-9)


def test_eye_landmarks_fall_on_the_drawn_pupils():
    for index in range(8):
        identity = identity_of(SEED, index)
        nuisance = dataclasses.replace(sample_nuisance(keyed_rng(SEED, 9, index), identity),
                                       eye_closure=0.0, glasses_on=False, light_strength=0.0,
                                       brightness=1.0, colour_cast=(1.0, 1.0, 1.0))
        pixels, landmarks = render_face(identity, nuisance, np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                                        (112, 112), supersample=4)
        for x, y in landmarks[:2]:
            assert pixels[int(round(y)), int(round(x))].mean() < 40  # pupil (15, 12, 12)
        skin = pixels[int(round(landmarks[2, 1])) - 12, int(round(landmarks[2, 0]))].mean()
        assert skin > 40  # between the eyes and the nose: skin, not a dark pupil everywhere


def test_loose_crop_landmarks_follow_the_placement_of_the_face():
    bound = landmark_jitter_bound_112()
    for index in range(20):
        identity = identity_of(SEED, index)
        rng = keyed_rng(SEED, 3, index)
        shot = sample_shot(identity, rng, TINY)
        image = render_loose(identity, shot, rng, TINY)
        placed = ARCFACE_TEMPLATE_112 @ loose_transform(shot)[:, :2].T + loose_transform(shot)[:, 2]
        assert np.linalg.norm(image.landmarks - placed, axis=1).max() <= bound * shot.side / 112.0


def test_quality_csv_covers_every_image_and_matches_the_formula(bench):
    rows = _quality_rows(bench)
    assert tuple(rows[0].keys()) == QUALITY_COLUMNS
    images = [row["image"] for row in rows]
    n_train = len(InsightFaceRecord(bench / "train"))
    bins, _ = load_bin(bench / "pairs" / "synth_lfw.bin")
    crops = sorted((bench / "ijb" / "synth_ijbc" / "loose_crop").glob("*.jpg"), key=lambda p: int(p.stem))
    validation, _ = load_bin(bench / "pairs" / "synth_val.bin")
    expected = ([f"train/{k}" for k in range(1, n_train + 1)]
                + [f"synth_lfw/{i}" for i in range(len(bins))]
                + [f"synth_ijbc/{p.name}" for p in crops]
                + [f"synth_val/{i}" for i in range(len(validation))])
    assert images == expected
    values = np.array([[float(row[c]) for c in QUALITY_COLUMNS[3:]] for row in rows])
    recomputed = quality_score(*values[:, :5].T, TINY.image_size)
    np.testing.assert_allclose(values[:, 5], recomputed, atol=2e-3)
    assert ((values[:, 5] >= 0) & (values[:, 5] <= 1)).all()
    assert values[:, 5].min() < 0.3 < 0.8 < values[:, 5].max()  # both ends are populated


def test_quality_is_monotone_in_each_degradation_and_one_when_pristine():
    size = 48
    assert quality_score(0.0, 0.0, size, 95, 0.0, size) == 1.0
    base = dict(blur_sigma=0.5, noise_std=5.0, resolution=40, jpeg_quality=80, occlusion=0.1)
    sweeps = {"blur_sigma": np.linspace(0, 5, 50), "noise_std": np.linspace(0, 60, 50),
              "resolution": np.arange(48, 3, -1), "jpeg_quality": np.arange(100, 1, -1),
              "occlusion": np.linspace(0, 0.9, 50)}
    for name, sweep in sweeps.items():
        values = quality_score(**{**base, name: sweep}, image_size=size)
        assert np.all(np.diff(values) <= 0), name
        assert values[-1] < 0.6 * values[0], name  # each degradation matters


def test_strong_degradation_fraction_controls_the_low_quality_share():
    rng = np.random.default_rng(0)
    def qualities(fraction):
        config = dataclasses.replace(TINY, strong_degradation_fraction=fraction)
        return np.array([sample_degradation(rng, config).quality(config.image_size) for _ in range(600)])
    mild, strong, default = qualities(0.0), qualities(1.0), qualities(0.3)
    assert mild.min() > 0.25 and np.median(mild) > 0.8 and np.median(strong) < 0.3
    assert 0.18 < (default < 0.35).mean() < 0.38
    assert 0.1 < ((default > 0.35) & (default < 0.75)).mean()  # a continuum, not two clusters


def test_low_quality_means_more_pixel_damage():
    identity = identity_of(SEED, 0)
    damage, quality = [], []
    for index in range(40):
        rng = keyed_rng(SEED, 5, index)
        nuisance = sample_nuisance(rng, identity)
        pixels, _ = render_face(identity, nuisance, np.array([[48 / 112, 0, 0], [0, 48 / 112, 0]]), (48, 48))
        degradation = sample_degradation(rng, dataclasses.replace(TINY, strong_degradation_fraction=0.5))
        jpeg, effective = apply_degradation(pixels, degradation, (0, 0, 48), 48, rng)
        with Image.open(io.BytesIO(jpeg)) as image:
            degraded = np.asarray(image, dtype=np.float64)
        damage.append(np.abs(degraded - pixels).mean())
        quality.append(effective.quality(48))
    assert spearmanr(quality, damage).statistic < -0.5


def test_ijb_meta_is_consistent_with_identities_templates_and_media(bench):
    protocol = read_ijb_protocol(bench / "ijb" / "synth_ijbc")
    truth_file = bench / "ijb" / "synth_ijbc" / "meta" / "synth_ijbc_template_identity.txt"
    truth = np.loadtxt(truth_file, dtype=np.int64)
    identity_of_template = dict(truth.tolist())
    assert set(identity_of_template) == set(protocol.template_ids.tolist())
    pairs, labels = protocol.pairs, protocol.labels
    same = np.array([identity_of_template[a] == identity_of_template[b] for a, b in pairs.tolist()])
    assert np.array_equal(same, labels == 1)
    unordered = {tuple(sorted(p)) for p in pairs.tolist()}
    assert len(unordered) == len(pairs) and (pairs[:, 0] != pairs[:, 1]).all()
    templates_per_identity = np.bincount(np.unique(truth[:, 1], return_inverse=True)[1])
    assert (labels == 1).sum() == (templates_per_identity * (templates_per_identity - 1) // 2).sum()
    assert (labels == 0).sum() == TINY.ijb_impostor_pairs
    # a media belongs to one template; media and frame counts within the configured ranges
    media_template = {}
    for tid, mid in zip(protocol.template_ids.tolist(), protocol.media_ids.tolist()):
        assert media_template.setdefault(mid, tid) == tid
    frames = np.bincount(protocol.media_ids)[np.unique(protocol.media_ids)]
    assert frames.min() >= TINY.ijb_frames_per_media[0] and frames.max() <= TINY.ijb_frames_per_media[1]
    # identities of the three sets are disjoint
    rows = _quality_rows(bench)
    ids = {s: {int(r["identity"]) for r in rows if r["set"] == s} for s in ("train", "synth_lfw", "synth_ijbc")}
    assert ids["synth_ijbc"] == set(identity_of_template.values())
    assert not (ids["train"] & ids["synth_lfw"]) and not (ids["train"] & ids["synth_ijbc"])
    assert not (ids["synth_lfw"] & ids["synth_ijbc"])


def test_detector_score_rises_with_quality(bench):
    protocol = read_ijb_protocol(bench / "ijb" / "synth_ijbc")
    quality = {r["image"]: float(r["quality"]) for r in _quality_rows(bench) if r["set"] == "synth_ijbc"}
    q = [quality[f"synth_ijbc/{name}"] for name in protocol.images]
    assert spearmanr(q, protocol.detector_scores).statistic > 0.3


def test_pair_folds_are_identity_disjoint_and_pairs_match_their_labels(bench):
    _, issame = load_bin(bench / "pairs" / "synth_lfw.bin")
    rows = [r for r in _quality_rows(bench) if r["set"] == "synth_lfw"]
    identity = np.array([int(r["identity"]) for r in rows]).reshape(-1, 2)
    np.testing.assert_array_equal(identity[:, 0] == identity[:, 1], np.asarray(issame))
    per_fold = [set(identity[k * TINY.pairs_per_fold:(k + 1) * TINY.pairs_per_fold].ravel().tolist())
                for k in range(TINY.pair_folds)]
    for a in range(TINY.pair_folds):
        for b in range(a + 1, TINY.pair_folds):
            assert not per_fold[a] & per_fold[b]


def test_unknown_config_key_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match="train_identites"):
        SynthConfig.from_dict({"train_identites": 3})
    with pytest.raises(ConfigError, match="pairs_per_fold"):
        SynthConfig.from_dict({"pairs_per_fold": 7})
    with pytest.raises(ConfigError, match="image_size"):
        SynthConfig.from_dict({"image_size": "big"})
    config = SynthConfig.from_dict({"train_images_per_identity": [3, 5], "blur_sigma_max": 2})
    assert config.train_images_per_identity == (3, 5) and config.blur_sigma_max == 2.0


def test_too_many_impostor_pairs_is_a_config_error(tmp_path):
    config = dataclasses.replace(TINY, ijb_identities=2, ijb_templates_per_identity=(2, 2),
                                 ijb_impostor_pairs=5, train_identities=1, pair_identities=20)
    with pytest.raises(ConfigError, match="ijb_impostor_pairs"):
        synthesize(tmp_path, config, SEED)


def test_contact_sheet_is_a_png_grid_of_faces_and_loose_crops(bench, tmp_path):
    path = contact_sheet(bench, tmp_path / "sheet.png", identities=3, images_per_identity=2, tile=40)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (2 * 40, 5 * 40)  # 3 identity rows + 2 rows of loose crops


def test_rerun_with_fewer_images_leaves_no_stale_loose_crops(tmp_path):
    synthesize(tmp_path, TINY, SEED)
    smaller = dataclasses.replace(TINY, ijb_identities=3, ijb_impostor_pairs=5)
    synthesize(tmp_path, smaller, SEED)
    listed = read_ijb_protocol(tmp_path / "ijb" / "synth_ijbc").images
    on_disk = sorted(p.name for p in (tmp_path / "ijb" / "synth_ijbc" / "loose_crop").iterdir())
    assert sorted(listed) == on_disk


def test_identity_spread_pulls_people_towards_the_population_mean():
    wide = [identity_of(SEED, i, 1.0) for i in range(40)]
    narrow = [identity_of(SEED, i, 0.5) for i in range(40)]
    assert [p.hair_style for p in wide] == [p.hair_style for p in narrow]  # same draws
    for field in ("face_half_width", "eye_width", "nose_width", "brow_thickness"):
        ratio = np.std([getattr(p, field) for p in narrow]) / np.std([getattr(p, field) for p in wide])
        assert ratio == pytest.approx(0.5, rel=1e-6), field
    skin_spread = np.std([p.skin for p in narrow], axis=0) / np.std([p.skin for p in wide], axis=0)
    assert np.all(skin_spread < 0.6)
