"""TAR over IJB pairs split by known quality: a pair is as good as its worse template."""

import numpy as np
import pandas as pd

from facetrust.data.ijb import read_ijb_protocol
from facetrust.report.quality_split import pair_quality, write_quality_split


def test_pair_quality_is_the_worse_templates_mean_image_quality(tmp_path):
    from ijb_protocol_fixture import write_ijb_dir

    images = ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    write_ijb_dir(tmp_path, "q", images, [10, 10, 20, 30], [1, 2, 3, 4], [1.0] * 4,
                  np.array([[10, 20], [20, 30], [10, 30]]), [0, 0, 1])
    protocol = read_ijb_protocol(tmp_path, "q")
    quality = np.array([0.2, 0.6, 0.9, 0.5])  # template 10: 0.4, 20: 0.9, 30: 0.5
    np.testing.assert_allclose(pair_quality(protocol, quality), [0.4, 0.5, 0.4])


def test_degraded_images_lower_tar_in_the_low_quality_group(tmp_path):
    from ijb_protocol_fixture import random_ijb

    root, images, embedding, noflip, arrays = random_ijb(tmp_path / "ijb", "ijbq", n_templates=90, seed=3)
    rng = np.random.default_rng(0)
    # Quality per template; low-quality templates get their identity information drowned in noise.
    template_quality = {t: q for t, q in zip(np.unique(arrays["template_ids"]),
                                             rng.uniform(0, 1, len(np.unique(arrays["template_ids"]))))}
    quality = np.array([template_quality[t] for t in arrays["template_ids"]])
    noise = rng.standard_normal(embedding.shape).astype(np.float32) * (6.0 * (1 - quality))[:, None]
    path = tmp_path / "e.npz"
    np.savez(path, image=images, embedding=embedding + noise, embedding_noflip=noflip + noise)
    quality_csv = tmp_path / "quality.csv"
    pd.DataFrame({"set": "ijbq", "image": [f"ijbq/{name}" for name in images], "identity": 0, "blur_sigma": 0.0,
                  "noise_std": 0.0, "resolution": 48, "jpeg_quality": 95, "occlusion": 0.0,
                  "quality": quality}).to_csv(quality_csv, index=False)
    out = tmp_path / "split.csv"
    table = write_quality_split({"M": path}, root, "ijbq", quality_csv, out, fars=(0.1,))
    assert out.exists()
    by_group = table.set_index("group")["TAR@FAR=1e-01"]
    assert by_group["high"] > by_group["low"] + 0.2
    assert table["genuine"].sum() == int(arrays["labels"].sum())
