"""Writes small IJB-style protocol directories (the release's meta file layout) for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ijb_dir(root: Path, name: str, images, template_ids, media_ids, detector_scores, pairs, labels,
                  landmarks=None) -> Path:
    """Write ``root/meta/<name>_{face_tid_mid,name_5pts_score,template_pair_label}.txt``; return root."""
    meta = Path(root) / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    n = len(images)
    if landmarks is None:
        landmarks = np.arange(n * 10, dtype=float).reshape(n, 10) / 7.0
    with open(meta / f"{name}_face_tid_mid.txt", "w") as f:
        for image, tid, mid in zip(images, template_ids, media_ids):
            f.write(f"{image} {int(tid)} {int(mid)}\n")
    with open(meta / f"{name}_name_5pts_score.txt", "w") as f:
        for image, points, score in zip(images, np.asarray(landmarks).reshape(n, 10), detector_scores):
            f.write(image + " " + " ".join(f"{v:.4f}" for v in points) + f" {float(score)!r}\n")
    with open(meta / f"{name}_template_pair_label.txt", "w") as f:
        for (t1, t2), label in zip(pairs, labels):
            f.write(f"{int(t1)} {int(t2)} {int(label)}\n")
    return Path(root)


def random_ijb(root: Path, name: str = "ijbx", *, n_templates: int = 40, seed: int = 0, dim: int = 16):
    """A random protocol + matching embeddings arrays.

    Returns (root, images, embedding, embedding_noflip, protocol arrays dict).  Templates of the same
    identity share a centre so genuine pairs score higher.
    """
    rng = np.random.default_rng(seed)
    identities = rng.integers(0, n_templates // 3, n_templates)
    centres = rng.standard_normal((identities.max() + 1, dim)) * 2
    images, tids, mids, embeddings = [], [], [], []
    media = 0
    for t in range(n_templates):
        for _ in range(rng.integers(1, 4)):
            media += 1
            for _ in range(rng.integers(1, 4)):
                images.append(f"{len(images) + 1}.jpg")
                tids.append(100 + t)
                mids.append(media)
                embeddings.append(centres[identities[t]] + rng.standard_normal(dim))
    n = len(images)
    embedding = np.asarray(embeddings, dtype=np.float32) * rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    noflip = (embedding / 2 + 0.1 * rng.standard_normal((n, dim))).astype(np.float32)
    detector = rng.uniform(0.3, 1.0, n)
    t1, t2 = np.triu_indices(n_templates, k=1)
    labels = (identities[t1] == identities[t2]).astype(int)
    pairs = np.stack([t1 + 100, t2 + 100], axis=1)
    write_ijb_dir(root, name, images, tids, mids, detector, pairs, labels)
    arrays = dict(template_ids=np.array(tids), media_ids=np.array(mids), detector=detector, pairs=pairs, labels=labels)
    return Path(root), np.array(images), embedding, noflip, arrays
