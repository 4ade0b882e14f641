"""A generated IJB-C-sized 1:1 protocol and matching embeddings, in the release's text layout.

Sizes are IJB-C's (the release: 469,375 images, 23,124 templates, 15,658,489 pairs of which
19,557 genuine); d = 512.  Structure, as the 1:1 protocol is built: one enrolment template per
subject (3,531 subjects) and 19,593 verification templates spread over the subjects; genuine
pairs join a verification template to its subject's enrolment template, impostor pairs to about
800 random enrolment templates of other subjects.  A template holds media of 1-6 frames.  Image
features are a subject centre plus per-image noise whose strength varies (quality), plus one of a
few shared nuisance directions (pose, light), so impostor scores have tails and TAR@FAR is well
inside (0, 1).  Everything is a function of the seed; files are written once and reused.

``scale`` < 1 keeps a seeded random subset of the pairs (file order kept) and of the templates they
use nothing else changes; ``size="quick"`` is a tiny protocol of the same structure for CI.

``ties`` > 0 makes the protocol one with exactly tied float64 scores, as real ones have them:
that fraction of the verification templates are **duplicates** of another template of the same
subject with as many images (the same image features, detector scores and media ids, row for row,
so both pooling orders give bit-identical template features and every pair with a common partner
ties); 1 % of the impostor pairs are others **repeated** in the other order (same score, not a repeated line); and every image feature is
**quantised** to 8 bits per component (int8 storage with a per-image scale), so scores sit on a
coarser grid.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

NAME = "ijbc"


@dataclass(frozen=True)
class Sizes:
    n_images: int = 469_375
    n_templates: int = 23_124
    n_subjects: int = 3_531
    n_pairs: int = 15_658_489
    n_genuine: int = 19_557
    dim: int = 512


QUICK = Sizes(n_images=4_000, n_templates=400, n_subjects=60, n_pairs=20_000, n_genuine=330, dim=64)


def _media_layout(rng: np.random.Generator, sizes: Sizes) -> tuple[np.ndarray, np.ndarray]:
    """(template index, media index) of every image: media of 1-6 frames, exactly n_images in all."""
    media_per_template = 1 + rng.poisson(sizes.n_images / sizes.n_templates / 3.5 - 1, sizes.n_templates)
    frames = rng.integers(1, 7, media_per_template.sum())
    excess = int(frames.sum()) - sizes.n_images
    while excess != 0:  # trim or pad random media inside 1..6 frames until the total is exact
        can = np.flatnonzero(frames > 1) if excess > 0 else np.flatnonzero(frames < 6)
        pick = rng.choice(can, min(abs(excess), can.size), replace=False)
        frames[pick] -= int(np.sign(excess))
        excess = int(frames.sum()) - sizes.n_images
    media_template = np.repeat(np.arange(sizes.n_templates), media_per_template)
    image_media = np.repeat(np.arange(frames.size), frames)
    return media_template[image_media], image_media


def _pairs(rng: np.random.Generator, sizes: Sizes, subject: np.ndarray, n_enrol: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) template indices (enrolment, verification) and labels."""
    probes = np.arange(n_enrol, sizes.n_templates)
    genuine_probes = np.sort(rng.choice(probes, sizes.n_genuine, replace=False))
    n_impostor = sizes.n_pairs - sizes.n_genuine
    per_probe = np.full(probes.size, n_impostor // probes.size)
    per_probe[rng.choice(probes.size, n_impostor - per_probe.sum(), replace=False)] += 1
    # k distinct other-subject enrolment templates per probe: a random permutation of the
    # enrolment templates with the probe's own subject moved out of the first k.
    first, second = [], []
    for probe, k in zip(probes, per_probe):
        chosen = rng.choice(n_enrol - 1, k, replace=False)
        chosen[chosen >= subject[probe]] += 1  # skip the own subject's enrolment template
        first.append(chosen)
        second.append(np.full(k, probe))
    t1 = np.concatenate([np.concatenate(first), subject[genuine_probes]])
    t2 = np.concatenate([np.concatenate(second), genuine_probes])
    labels = np.concatenate([np.zeros(n_impostor, np.int8), np.ones(sizes.n_genuine, np.int8)])
    return np.stack([t1, t2], axis=1), labels


def _features(rng: np.random.Generator, sizes: Sizes, image_subject: np.ndarray, image_template: np.ndarray,
              image_media: np.ndarray) -> np.ndarray:
    """Image features (N, d) float32: subject centre + a template offset (what pooling cannot average
    away: age, capture conditions) + quality-scaled image noise + the media's nuisance direction."""
    centres = rng.standard_normal((sizes.n_subjects, sizes.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    offsets = rng.standard_normal((sizes.n_templates, sizes.dim), dtype=np.float32)
    offsets *= (rng.gamma(2.0, 0.5, sizes.n_templates) / np.linalg.norm(offsets, axis=1)).astype(np.float32)[:, None]
    nuisance = rng.standard_normal((24, sizes.dim), dtype=np.float32) / np.sqrt(sizes.dim)
    n = image_subject.size
    features = np.empty((n, sizes.dim), dtype=np.float32)
    noise_level = rng.gamma(4.0, 0.4, n).astype(np.float32) / np.sqrt(sizes.dim, dtype=np.float32)
    which = rng.integers(0, nuisance.shape[0], int(image_media.max()) + 1)[image_media]  # shared by a video's frames
    norms = rng.uniform(8.0, 30.0, n).astype(np.float32)
    for start in range(0, n, 65536):  # chunks keep the temporaries small
        s = slice(start, start + 65536)
        block = rng.standard_normal((len(range(*s.indices(n))), sizes.dim), dtype=np.float32)
        block *= noise_level[s, None]
        block += centres[image_subject[s]] + offsets[image_template[s]] + 0.9 * nuisance[which[s]]
        features[s] = block * norms[s, None]
    return features


def _write_text(path: Path, frame: pd.DataFrame, float_format: str | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, sep=" ", header=False, index=False, float_format=float_format)
    os.replace(tmp, path)


def _duplicates(rng: np.random.Generator, fraction: float, image_template: np.ndarray, subject: np.ndarray,
                n_enrol: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(copy's image rows, source's image rows) for ``fraction`` of the verification templates:
    each copy takes a distinct other verification template of its subject with as many images."""
    counts = np.bincount(image_template, minlength=subject.size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    taken, chosen = set(), []
    for copy in rng.permutation(np.arange(n_enrol, subject.size)):
        if len(chosen) >= fraction * (subject.size - n_enrol):
            break
        if copy in taken:
            continue
        sources = np.flatnonzero((subject == subject[copy]) & (counts == counts[copy]))
        sources = [t for t in sources.tolist() if t >= n_enrol and t != copy and t not in taken]
        if sources:
            source = sources[int(rng.integers(len(sources)))]
            taken.update((copy, source))
            chosen.append((np.arange(starts[copy], starts[copy] + counts[copy]),
                           np.arange(starts[source], starts[source] + counts[source])))
    return chosen


def quantise_int8(features: np.ndarray) -> np.ndarray:
    """Each row rounded to 8 bits per component (int8 storage, scale = max |x| / 127), as float32."""
    scale = np.abs(features).max(axis=1, keepdims=True) / np.float32(127.0)
    return (np.round(features / scale) * scale).astype(np.float32)


def generate(root: Path, sizes: Sizes = Sizes(), seed: int = 0, ties: float = 0.0) -> dict:
    """Write ``root/meta/ijbc_*.txt`` and ``root/embeddings.npz``; return a summary (also ``root/summary.json``).
    ``ties``: the fraction of duplicate templates of a protocol with tied scores (module docstring)."""
    rng = np.random.default_rng(seed)
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    n_enrol = sizes.n_subjects
    probe_subject = np.concatenate([np.arange(sizes.n_subjects),  # every subject has a probe
                                    rng.integers(0, sizes.n_subjects, sizes.n_templates - 2 * n_enrol)])
    subject = np.concatenate([np.arange(n_enrol), rng.permutation(probe_subject)])
    # Ids in random order, so that enrolment and verification templates interleave in id order.
    template_ids = rng.choice(np.arange(1, 200_000), sizes.n_templates, replace=False)
    image_template, image_media = _media_layout(rng, sizes)
    # Global media ids; a fifth of the verification templates reuse a media of their enrolment
    # template (the same video cut into several templates), so media ids repeat across templates.
    media_id_of = rng.permutation(image_media.max() + 1) + 1
    first_media = np.searchsorted(image_template[np.r_[0, np.flatnonzero(np.diff(image_media)) + 1]],
                                  np.arange(sizes.n_templates))
    reuse = rng.choice(np.arange(n_enrol, sizes.n_templates), (sizes.n_templates - n_enrol) // 5, replace=False)
    media_id_of[first_media[reuse]] = media_id_of[first_media[subject[reuse]]]
    media_ids = media_id_of[image_media]
    images = np.array([f"{i}.jpg" for i in range(1, sizes.n_images + 1)])
    pairs, labels = _pairs(rng, sizes, subject, n_enrol)
    order = np.lexsort((template_ids[pairs[:, 1]], template_ids[pairs[:, 0]]))  # the release's order: by id
    pairs, labels = pairs[order], labels[order]
    landmarks = rng.uniform(20.0, 100.0, (sizes.n_images, 10))
    detector = rng.uniform(0.3, 1.0, sizes.n_images)
    duplicates = _duplicates(np.random.default_rng([seed, 1]), ties, image_template, subject, n_enrol) if ties else []
    if ties:
        for copy, source in duplicates:
            media_ids[copy], detector[copy], landmarks[copy] = media_ids[source], detector[source], landmarks[source]
        repeat_rng = np.random.default_rng([seed, 2])
        impostor = np.flatnonzero(labels == 0)
        copies = repeat_rng.choice(impostor, impostor.size // 100, replace=False)
        # each copy is another impostor pair written in the other order (template 2, template 1):
        # the same score, but not a repeated line (evaluate refuses exact repeats as a silent accept)
        sources = repeat_rng.choice(np.setdiff1d(impostor, copies), copies.size, replace=False)
        pairs[copies] = pairs[sources][:, ::-1]
        order = np.lexsort((template_ids[pairs[:, 1]], template_ids[pairs[:, 0]]))
        pairs, labels = pairs[order], labels[order]

    _write_text(meta / f"{NAME}_face_tid_mid.txt",
                pd.DataFrame({0: images, 1: template_ids[image_template], 2: media_ids}))
    frame = pd.DataFrame(landmarks.round(3))
    frame.insert(0, "name", images)
    frame[11] = detector.round(6)
    _write_text(meta / f"{NAME}_name_5pts_score.txt", frame)
    _write_text(meta / f"{NAME}_template_pair_label.txt",
                pd.DataFrame({0: template_ids[pairs[:, 0]], 1: template_ids[pairs[:, 1]], 2: labels}))
    features = _features(rng, sizes, subject[image_template], image_template, image_media)
    if ties:
        features = quantise_int8(features)
        for copy, source in duplicates:
            features[copy] = features[source]
    tmp = root / "embeddings.tmp.npz"
    np.savez(tmp, image=images, embedding=features)
    os.replace(tmp, root / "embeddings.npz")
    summary = {**asdict(sizes), "seed": seed, "n_genuine_written": int(labels.sum()),
               "n_media": int(np.unique(np.stack([image_template, image_media])).size)}
    if ties:
        summary.update(ties=ties, duplicate_templates=len(duplicates), repeated_pairs=int(impostor.size // 100),
                       features="int8-quantised")
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ensure(work: Path, sizes: Sizes = Sizes(), seed: int = 0, ties: float = 0.0) -> Path:
    """The generated set under ``work/ijbc-<key>/``, generating it the first time."""
    key = hashlib.sha256(json.dumps({**asdict(sizes), "seed": seed, "v": 1, **({"ties": ties} if ties else {})})
                         .encode()).hexdigest()[:12]
    root = Path(work) / f"ijbc-{key}"
    if not (root / "summary.json").is_file():
        generate(root, sizes, seed, ties)
    return root


def subset(root: Path, fraction: float, seed: int = 0) -> Path:
    """``root`` with a seeded random ``fraction`` of the pairs (file order kept), as its own protocol dir."""
    if fraction >= 1:
        return root
    root = Path(root).resolve()  # the links below must not depend on the working directory
    out = root.parent / f"{root.name}-pairs{fraction:g}"
    pair_file = out / "meta" / f"{NAME}_template_pair_label.txt"
    if not pair_file.is_file():
        (out / "meta").mkdir(parents=True, exist_ok=True)
        for kind in ("face_tid_mid", "name_5pts_score"):
            link = out / "meta" / f"{NAME}_{kind}.txt"
            if not link.exists():
                link.symlink_to(root / "meta" / f"{NAME}_{kind}.txt")
        table = pd.read_csv(root / "meta" / f"{NAME}_template_pair_label.txt", sep=" ", header=None)
        keep = np.sort(np.random.default_rng(seed).choice(len(table), round(fraction * len(table)), replace=False))
        _write_text(pair_file, table.iloc[keep])
    return out
