"""The frozen-feature cache of xCos training (facetrust.train.xcos_cache.build_feature_cache)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.data.transforms import fit_to_size, to_tensor
from facetrust.train.xcos_cache import _frozen_outputs, build_feature_cache


class MapNet(nn.Module):
    """A small conv net with the backbone interface (embedding, feature map); channels-last as the
    frozen passes run, so the cache's own NCHW copy is exercised."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x, return_feature_map=False):
        feature_map = F.adaptive_avg_pool2d(self.conv(x), 4)
        embedding = self.fc(feature_map.flatten(1))
        return (embedding, feature_map) if return_feature_map else embedding


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (10, 9, 3), dtype=np.uint8) for _ in range(count)]


def _old_cache(backbone, standard, images, input_size, standard_size, batch_size):
    """The cache as it was built before: per-batch lists, concatenated, then stacked."""
    maps, embeddings = [[], []], [[], []]
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        for orientation in (0, 1):
            views = [image[:, ::-1] if orientation else image for image in batch]
            own = torch.stack([to_tensor(fit_to_size(v, input_size)) for v in views])
            other = torch.stack([to_tensor(fit_to_size(v, standard_size)) for v in views]) if standard else None
            feature_map, embedding = _frozen_outputs(backbone, standard, own, other)
            maps[orientation].append(feature_map)
            embeddings[orientation].append(embedding)
    return torch.stack([torch.cat(m) for m in maps]), torch.stack([torch.cat(e) for e in embeddings])


def test_the_cache_filled_in_place_equals_the_stacked_batches():
    """Every value and the layout (contiguous NCHW per image, orientation first) as before, with a
    last batch shorter than the others, with and without a separate standard model."""
    backbone = MapNet().to(memory_format=torch.channels_last).eval()
    standard = MapNet().eval()
    images = _images(23)
    for other, size in ((None, None), (standard, (12, 12))):
        cache = build_feature_cache(backbone, other, lambda i: images[i], len(images), (8, 8), size,
                                    batch_size=5, progress=False)
        old_maps, old_embeddings = _old_cache(backbone, other, images, (8, 8), size, 5)
        assert cache.feature_maps.shape == (2, 23, 8, 4, 4) and cache.standard.shape == (2, 23, 5)
        assert torch.equal(cache.feature_maps, old_maps) and torch.equal(cache.standard, old_embeddings)
        assert cache.feature_maps.stride() == old_maps.stride() and cache.standard.stride() == old_embeddings.stride()
    # the mirrored orientation is the mirrored image's map, not a copy of the original's
    assert not torch.equal(cache.feature_maps[0], cache.feature_maps[1])


def test_building_the_cache_holds_it_about_once(tmp_path):
    """Peak memory while building a 151 MB cache grows by about the cache, not three times it (the
    batches' list, their concatenation and the stack were all alive at once before)."""
    code = textwrap.dedent("""
        import json, resource, numpy as np, torch, torch.nn as nn
        from facetrust.train.xcos_cache import build_feature_cache

        class Wide(nn.Module):  # a 128 x 6 x 6 map per image, as the embedded default's xCos backbone
            def forward(self, x, return_feature_map=False):
                n = x.shape[0]
                return x.new_zeros(n, 16) + x.mean(), x.new_zeros(n, 128, 6, 6) + x.mean()

        image = np.zeros((8, 8, 3), np.uint8)
        torch.set_num_threads(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cache = build_feature_cache(Wide(), None, lambda i: image, 4096, (8, 8), progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"grown_kib": after - before, "cache_kib": cache.feature_maps.nbytes // 1024}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["cache_kib"] > 140_000
    assert figures["grown_kib"] < 1.5 * figures["cache_kib"], figures  # 3x before the change
