"""Write the embedded synthetic benchmark in the real formats.

Layout under ``out_dir`` (docs/FORMATS.md "Synthetic benchmark"; the pipeline relies on it)::

    train/            train.rec, train.idx, property   (InsightFace RecordIO, aligned crops)
    pairs/synth_lfw.bin                                (LFW-style .bin, 10 ordered folds)
    pairs/synth_val.bin                                (validation split: same layout, own identities)
    pairs/<set>.twins.npz   every occluded pair-set image's clean twin (occluders module)
    ijb/synth_ijbc/loose_crop/<n>.jpg                  (IJB-C-style loose crops, n from 1)
    ijb/synth_ijbc/meta/synth_ijbc_face_tid_mid.txt, _name_5pts_score.txt,
                        _template_pair_label.txt, _template_identity.txt (extra ground truth)
    quality.csv       one row per image of every set: known degradations and quality
    occluders.csv     one row per image of every set: the occluder's box, if any (aligned crop;
                      layout in :mod:`facetrust.data.synthetic.occluders`)
    manifest.json     counts, config, seed

Identities are numbered globally (train ``0..T-1`` = the class labels, then the pair
identities, then the IJB identities, then the validation identities), so the sets are
identity-disjoint by construction.  The validation pair set exists to choose hyperparameters and
operating thresholds; nothing is chosen on the test sets (synth_lfw, synth_ijbc).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from facetrust.data.binset import write_bin
from facetrust.data.insightface import write_insightface_dataset
from facetrust.data.synthetic.config import SynthConfig
from facetrust.data.synthetic.degrade import Degradation
from facetrust.data.synthetic.images import (
    STREAM_IJB,
    STREAM_PAIRS,
    STREAM_SPLIT,
    STREAM_TRAIN,
    STREAM_VALIDATION,
    RenderedImage,
    keyed_rng,
)
from facetrust.data.synthetic.parallel import ijb_media, ordered_map, pair_identity, train_identity
from facetrust.data.synthetic.occluders import (
    OCCLUDER_COLUMNS,
    OCCLUDERS_NAME,
    TWINS_SUFFIX,
    occluder_cells,
    write_clean_twins,
)
from facetrust.errors import ConfigError
from facetrust.io import atomic_path, staged_directory, write_json_atomic, write_text_atomic

IJB_NAME = "synth_ijbc"
PAIR_SET_NAME = "synth_lfw"
#: The validation pair set: identities of no other set, for choosing values (never a test set).
VALIDATION_SET_NAME = "synth_val"
QUALITY_COLUMNS = ("set", "image", "identity", "blur_sigma", "noise_std", "resolution",
                   "jpeg_quality", "occlusion", "quality")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class _QualityRow:
    set: str
    image: str
    identity: int
    degradation: Degradation
    quality: float
    occluder: tuple | None = None  # box in the aligned crop (x0, y0, x1, y1), None: no occluder
    occluder_loose: tuple | None = None  # exact box in an IJB loose crop

    def occluder_cells(self) -> list[str]:
        return occluder_cells(self.set, self.image, self.occluder, self.occluder_loose)

    def cells(self) -> list[str]:
        d = self.degradation
        return [self.set, self.image, str(self.identity), f"{d.blur_sigma:.3f}", f"{d.noise_std:.2f}",
                str(d.resolution), str(d.jpeg_quality), f"{d.occlusion:.3f}", f"{self.quality:.6f}"]


def _decode(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", leave=False, mininterval=1.0)


# --------------------------------------------------------------------------- training set
def _train_images_per_identity(config: SynthConfig, seed: int) -> np.ndarray:
    low, high = config.train_images_per_identity
    return keyed_rng(seed, STREAM_SPLIT, STREAM_TRAIN).integers(low, high + 1, config.train_identities)


def _write_train(out_dir: Path, config: SynthConfig, seed: int, rows: list[_QualityRow], workers: int = 1) -> dict:
    counts = _train_images_per_identity(config, seed)
    bar = _progress(int(counts.sum()), "synth train")

    def samples() -> Iterator[tuple[int, bytes]]:
        key = 1  # InsightFace sets: image records are keys 1 .. A-1, in the order written
        tasks = [(label, int(counts[label])) for label in range(config.train_identities)]
        for (label, _), images in zip(tasks, ordered_map(partial(train_identity, seed, config), tasks, workers)):
            for image in images:
                rows.append(_QualityRow("train", f"train/{key}", label, image.degradation, image.quality,
                                        image.occluder))
                key += 1
                bar.update()
                yield label, image.jpeg

    size = (config.image_size, config.image_size)
    summary = write_insightface_dataset(out_dir / "train", samples(), config.train_identities, size)
    bar.close()
    return {"identities": config.train_identities, "images": int(summary["num_images"])}


# --------------------------------------------------------------------------- pair set
def _distinct_choices(rng: np.random.Generator, universe: int, count: int, what: str) -> np.ndarray:
    if count > universe:
        raise ConfigError(f"synth: {what}: {count} wanted but only {universe} distinct exist; "
                          "raise pair_identities or pair_images_per_identity, or lower pairs_per_fold")
    return rng.choice(universe, size=count, replace=False)


def _write_pairs(out_dir: Path, config: SynthConfig, seed: int, first_identity: int,
                 rows: list[_QualityRow], name: str = PAIR_SET_NAME, identities: int | None = None,
                 pairs_per_fold: int | None = None, stream: int = STREAM_PAIRS, workers: int = 1) -> dict:
    """LFW view-2 style: fold k = pairs [k*n, (k+1)*n), genuine first, identity-disjoint folds.

    The test pair set uses the ``pair_*`` sizes and ``STREAM_PAIRS``; the validation pair set
    (:data:`VALIDATION_SET_NAME`) the same layout with its own identities, sizes and stream."""
    identities = config.pair_identities if identities is None else identities
    folds, k = config.pair_folds, config.pair_images_per_identity
    per_fold = config.pairs_per_fold if pairs_per_fold is None else pairs_per_fold
    fold_of = np.arange(identities) % folds  # even split, identities in order
    bins: list[bytes] = []
    issame: list[bool] = []
    twin_images: list[int] = []  # .bin image numbers with an occluder, and their clean renders
    twin_pixels: list[np.ndarray] = []
    bar = _progress(identities * k, f"synth {name}")
    # every identity's k images (and clean twins), rendered in identity order across the workers
    everyone = list(range(first_identity, first_identity + identities))
    rendered = ordered_map(partial(pair_identity, seed, config, stream, k), everyone, workers)
    pool: dict[tuple[int, int], RenderedImage] = {}
    clean: dict[tuple[int, int], np.ndarray] = {}
    for ident, images in zip(everyone, rendered):
        for index, (image, twin) in enumerate(images):
            pool[ident, index] = image
            if twin is not None:  # its clean twin: same draws, not painted
                clean[ident, index] = _decode(twin.jpeg)
            bar.update()
    for fold in range(folds):
        members = first_identity + np.flatnonzero(fold_of == fold)
        rng = keyed_rng(seed, STREAM_SPLIT, stream, fold)
        m, half = len(members), per_fold // 2
        # genuine: (identity, image i < image j); combos enumerated then drawn without replacement
        iu, ju = np.triu_indices(k, 1)
        genuine = _distinct_choices(rng, m * len(iu), half, f"genuine pairs in fold {fold}")
        pairs = [((members[g // len(iu)], iu[g % len(iu)]), (members[g // len(iu)], ju[g % len(iu)]))
                 for g in genuine.tolist()]
        # impostor: (identity a < identity b, image of a, image of b)
        ia, ib = np.triu_indices(m, 1)
        impostor = _distinct_choices(rng, len(ia) * k * k, half, f"impostor pairs in fold {fold}")
        for code in impostor.tolist():
            pair, images = divmod(code, k * k)
            pairs.append(((members[ia[pair]], images // k), (members[ib[pair]], images % k)))
        for number, (a, b) in enumerate(pairs):
            for ident, index in (a, b):
                image = pool[int(ident), int(index)]
                rows.append(_QualityRow(name, f"{name}/{len(bins)}", int(ident),
                                        image.degradation, image.quality, image.occluder))
                if image.occluder is not None:
                    twin_images.append(len(bins))
                    twin_pixels.append(clean[int(ident), int(index)])
                bins.append(image.jpeg)
            issame.append(number < half)
    bar.close()
    write_bin(out_dir / "pairs" / f"{name}.bin", bins, issame)
    write_clean_twins(out_dir / "pairs" / f"{name}{TWINS_SUFFIX}", twin_images, twin_pixels,
                      (config.image_size, config.image_size))
    return {"identities": identities, "pairs": len(issame), "images": len(bins),
            "folds": folds}


# --------------------------------------------------------------------------- IJB set
def _impostor_template_pairs(rng: np.random.Generator, template_identity: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct unordered template pairs of different identities, (t1 < t2) indices."""
    n = len(template_identity)
    same = np.bincount(template_identity)
    available = n * (n - 1) // 2 - int((same * (same - 1) // 2).sum())
    if count > available:
        raise ConfigError(f"synth.ijb_impostor_pairs: {count} wanted but only {available} "
                          "impostor template pairs exist; lower it or raise ijb_identities")
    if count > available // 2:  # dense: enumerate all and draw
        i, j = np.triu_indices(n, 1)
        keep = template_identity[i] != template_identity[j]
        all_pairs = np.stack([i[keep], j[keep]], 1)
        return all_pairs[np.sort(rng.choice(len(all_pairs), count, replace=False))]
    chosen: dict[int, None] = {}  # insertion-ordered set of codes t1 * n + t2
    while len(chosen) < count:
        draw = rng.integers(0, n, size=(2 * (count - len(chosen)) + 16, 2))
        a, b = draw.min(1), draw.max(1)
        ok = template_identity[a] != template_identity[b]
        for code in (a[ok] * n + b[ok]).tolist():
            chosen.setdefault(code)
            if len(chosen) == count:
                break
    codes = np.fromiter(chosen, dtype=np.int64, count=count)
    return np.stack([codes // n, codes % n], 1)


def _write_ijb(out_dir: Path, config: SynthConfig, seed: int, first_identity: int,
               rows: list[_QualityRow], workers: int = 1) -> dict:
    root = out_dir / "ijb" / IJB_NAME
    crops = root / "loose_crop"
    meta = root / "meta"
    crops.mkdir(parents=True, exist_ok=True)
    plan_rng = keyed_rng(seed, STREAM_SPLIT, STREAM_IJB)
    # plan: identity -> templates -> media -> frames (sizes only; images keyed by their numbers)
    plan = []  # (identity, template id, media id, frames)
    tid = mid = 0
    for offset in range(config.ijb_identities):
        for _ in range(int(plan_rng.integers(config.ijb_templates_per_identity[0],
                                             config.ijb_templates_per_identity[1] + 1))):
            tid += 1
            for _ in range(int(plan_rng.integers(config.ijb_media_per_template[0],
                                                 config.ijb_media_per_template[1] + 1))):
                mid += 1
                frames = int(plan_rng.integers(config.ijb_frames_per_media[0],
                                               config.ijb_frames_per_media[1] + 1))
                plan.append((first_identity + offset, tid, mid, frames))
    face_lines, point_lines = [], []
    number = 0
    bar = _progress(sum(p[3] for p in plan), "synth ijb")
    rendered = ordered_map(partial(ijb_media, seed, config),
                           [(ident, media, frames) for ident, _, media, frames in plan], workers)
    for (ident, template, media, _), media_frames in zip(plan, rendered):
        for frame in media_frames:
            number += 1
            name = f"{number}.jpg"
            with atomic_path(crops / name) as tmp:
                tmp.write_bytes(frame.image.jpeg)
            face_lines.append(f"{name} {template} {media}")
            point_lines.append(name + "".join(f" {v:.3f}" for v in frame.detected.ravel()) + f" {frame.score:.6f}")
            rows.append(_QualityRow(IJB_NAME, f"{IJB_NAME}/{name}", ident, frame.image.degradation,
                                    frame.image.quality, frame.aligned_box, frame.image.occluder))
            bar.update()
    bar.close()
    # crops of an earlier, larger run in the same directory would survive and change its hash
    for stale in crops.glob("*.jpg"):
        if not stale.stem.isdigit() or int(stale.stem) > number:
            stale.unlink()

    template_identity = np.zeros(tid, dtype=np.int64)  # index = tid - 1
    for ident, template, _, _ in plan:
        template_identity[template - 1] = ident - first_identity
    pair_rng = keyed_rng(seed, STREAM_SPLIT, STREAM_IJB, 1)
    genuine = []
    for ident in range(config.ijb_identities):
        members = np.flatnonzero(template_identity == ident)
        i, j = np.triu_indices(len(members), 1)
        genuine.extend(zip(members[i].tolist(), members[j].tolist()))
    impostor = _impostor_template_pairs(pair_rng, template_identity, config.ijb_impostor_pairs)
    pairs = np.concatenate([np.asarray(genuine, dtype=np.int64).reshape(-1, 2), impostor])
    labels = np.concatenate([np.ones(len(genuine), np.int64), np.zeros(len(impostor), np.int64)])
    order = pair_rng.permutation(len(pairs))  # IJB files interleave genuine and impostor pairs
    pair_text = io.StringIO()
    for (a, b), label in zip(pairs[order].tolist(), labels[order].tolist()):
        pair_text.write(f"{a + 1} {b + 1} {label}\n")

    write_text_atomic(meta / f"{IJB_NAME}_face_tid_mid.txt", "\n".join(face_lines) + "\n")
    write_text_atomic(meta / f"{IJB_NAME}_name_5pts_score.txt", "\n".join(point_lines) + "\n")
    write_text_atomic(meta / f"{IJB_NAME}_template_pair_label.txt", pair_text.getvalue())
    truth = "".join(f"{t + 1} {first_identity + i}\n" for t, i in enumerate(template_identity.tolist()))
    write_text_atomic(meta / f"{IJB_NAME}_template_identity.txt", truth)
    return {"identities": config.ijb_identities, "templates": tid, "media": mid, "images": number,
            "genuine_pairs": len(genuine), "impostor_pairs": len(impostor)}


# --------------------------------------------------------------------------- entry point
def synthesize(out_dir: str | os.PathLike, config: SynthConfig | None = None, seed: int = 0,
               workers: int = 1) -> dict:
    """Render and write the whole benchmark under ``out_dir``; return the manifest dict.

    Same ``config`` and ``seed`` give byte-identical files, whatever the number of ``workers``
    (processes that render; :mod:`facetrust.data.synthetic.parallel`).  Training images stream into the
    RecordIO writer (never all in memory).  Returns ``{"format_version", "seed", "config",
    "counts": {"train", "pairs", "ijb", "quality_rows"}, "image_size", ...}``, also written
    to ``manifest.json``.
    """
    config = config or SynthConfig()
    # Written into a staging directory that replaces ``out_dir`` in one rename: a failure part-way
    # (a bad size option, a full disk) leaves no half-made benchmark behind.
    with staged_directory(out_dir) as staging:
        return _synthesize(staging, config, seed, workers)


def _synthesize(out_dir: Path, config: SynthConfig, seed: int, workers: int = 1) -> dict:
    rows: list[_QualityRow] = []
    counts = {"train": _write_train(out_dir, config, seed, rows, workers)}
    counts["pairs"] = _write_pairs(out_dir, config, seed, config.train_identities, rows, workers=workers)
    counts["ijb"] = _write_ijb(out_dir, config, seed, config.train_identities + config.pair_identities, rows,
                               workers)
    # Validation identities come after every test identity, and their images and pairs draw from
    # their own streams: the training, test pair and IJB files are byte-identical with or without it.
    first_validation = config.train_identities + config.pair_identities + config.ijb_identities
    counts["validation"] = _write_pairs(out_dir, config, seed, first_validation, rows, name=VALIDATION_SET_NAME,
                                        identities=config.validation_identities,
                                        pairs_per_fold=config.validation_pairs_per_fold, stream=STREAM_VALIDATION,
                                        workers=workers)
    counts["quality_rows"] = len(rows)

    quality = io.StringIO()
    writer = csv.writer(quality, lineterminator="\n")
    writer.writerow(QUALITY_COLUMNS)
    writer.writerows(row.cells() for row in rows)
    write_text_atomic(out_dir / "quality.csv", quality.getvalue())
    occluders = io.StringIO()
    writer = csv.writer(occluders, lineterminator="\n")
    writer.writerow(OCCLUDER_COLUMNS)
    writer.writerows(row.occluder_cells() for row in rows)
    write_text_atomic(out_dir / OCCLUDERS_NAME, occluders.getvalue())
    values = np.array([row.quality for row in rows])
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "config": config.to_dict(),
        "counts": counts,
        "sets": {"train": "train", PAIR_SET_NAME: f"pairs/{PAIR_SET_NAME}.bin", IJB_NAME: f"ijb/{IJB_NAME}",
                 VALIDATION_SET_NAME: f"pairs/{VALIDATION_SET_NAME}.bin"},
        "validation_sets": [VALIDATION_SET_NAME],
        "quality": {"mean": round(float(values.mean()), 6),
                    "fraction_below_0.3": round(float((values < 0.3).mean()), 6)},
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
