"""The training input path: uint8 batches decoded into their slots, normalised once per batch, and
the same floats reaching the network as when every sample was decoded and normalised on its own."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import bad_input_fixtures as fx
from facetrust.data.insightface import write_insightface_dataset
from facetrust.data.transforms import _normalize_by_table, normalize_batch
from facetrust.errors import InputError
from facetrust.train.dataset import EpochSampler, RecordDataset
from facetrust.train.loader import batch_to_device, make_loader


def _photo(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.cumsum(rng.normal(0, 9, (*size, 3)), axis=1) + 128, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory):
    """24 JPEGs of 24 x 20 in 3 classes, with a grey, a CMYK and a progressive one among them."""
    payloads = [_jpeg(_photo(i, (24, 20))) for i in range(24)]
    payloads[3] = _jpeg(_photo(3, (24, 20))[..., 0])
    cmyk = io.BytesIO()
    Image.fromarray(_photo(5, (24, 20))).convert("CMYK").save(cmyk, format="JPEG", quality=92)
    payloads[5] = cmyk.getvalue()
    payloads[7] = _jpeg(_photo(7, (24, 20)), progressive=True)
    root = tmp_path_factory.mktemp("mixed")
    write_insightface_dataset(root, [(i // 8, p) for i, p in enumerate(payloads)], 3, (24, 20))
    return root, payloads


def _reference_input(payload: bytes, size, mirrored: bool) -> torch.Tensor:
    """The network input of one sample as facetrust computed it before batches: PIL's pixels,
    centre-crop/resize, mirror, then (x - 127.5) / 127.5 in float32, written out with numpy."""
    from facetrust.data.transforms import fit_to_size

    pixels = fit_to_size(np.asarray(Image.open(io.BytesIO(payload)).convert("RGB")), size)
    if mirrored:
        pixels = pixels[:, ::-1]
    floats = (pixels.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    return torch.from_numpy(np.ascontiguousarray(floats.transpose(2, 0, 1)))


@pytest.mark.parametrize("size", [(24, 20), (24, 16), (12, 10)])  # as stored, a centre crop, a resize
def test_batches_reach_the_network_as_the_per_sample_floats_did(mixed_set, size):
    root, payloads = mixed_set
    dataset = RecordDataset(root, size, flip=True, seed=11)
    dataset.set_epoch(2)
    indices = [13, 5, 0, 3, 22, 7, 9, 16]
    batch = dataset.__getitems__(indices)
    assert batch.images.dtype == torch.uint8 and tuple(batch.images.shape) == (8, 3, *size)
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [i // 8 for i in indices]
    mirrored = [np.random.default_rng([11, 2, i]).random() < 0.5 for i in indices]  # the seeded coin itself
    assert 0 < sum(mirrored) < len(indices)
    want = torch.stack([_reference_input(payloads[i], size, m) for i, m in zip(indices, mirrored)])
    got = normalize_batch(batch.images)
    assert got.is_contiguous() and torch.equal(got, want)
    for k, index in enumerate(indices):  # one sample at a time: the same pixels
        image, label = dataset[index]
        assert torch.equal(image, batch.images[k]) and label == index // 8


def test_every_uint8_value_normalises_to_the_same_float_on_every_path():
    values = torch.arange(256, dtype=torch.uint8)
    image = torch.stack([values.view(16, 16), values.flip(0).view(16, 16), values.view(16, 16).t()])
    batch = torch.stack([image, image.flip(2)]).contiguous(memory_format=torch.channels_last)
    want = torch.from_numpy((batch.numpy().astype(np.float32) - np.float32(127.5)) / np.float32(127.5))
    assert torch.equal(normalize_batch(batch), want)
    assert torch.equal(_normalize_by_table(batch, torch.device("cpu")), want)  # the path taken off the CPU
    assert _normalize_by_table(batch, torch.device("cpu")).is_contiguous()


def test_a_reciprocal_multiplication_would_change_the_floats():
    """Why the device path looks floats up instead of dividing: CUDA divides a tensor by a Python
    scalar as a multiplication by the scalar's reciprocal."""
    x = np.arange(256, dtype=np.float32) - np.float32(127.5)
    divided = x / np.float32(127.5)
    multiplied = x * (np.float32(1) / np.float32(127.5))
    assert (divided != multiplied).sum() == 126


def test_the_loader_yields_the_same_uint8_batches_with_and_without_workers(mixed_set):
    root, _ = mixed_set
    dataset = RecordDataset(root, (24, 20), flip=True, seed=3)
    dataset.set_epoch(1)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(len(dataset), seed=3)
        sampler.set_epoch(1, skip=4)
        loader = make_loader(dataset, 5, sampler=sampler, num_workers=workers, generator=torch.Generator(),
                             drop_last=True)
        batches[workers] = list(loader)
    assert len(batches[0]) == 4  # 20 samples left after skipping 4, in batches of 5
    for (images0, labels0), (images2, labels2) in zip(batches[0], batches[2]):
        assert images0.dtype == torch.uint8 and labels0.dtype == torch.int64
        assert torch.equal(images0, images2) and torch.equal(labels0, labels2)
    order = EpochSampler(len(dataset), seed=3)
    order.set_epoch(1, skip=4)
    assert torch.cat([labels for _, labels in batches[0]]).tolist() == [i // 8 for i in list(order)]


def test_batch_to_device_gives_float_inputs_and_int64_labels(mixed_set):
    root, _ = mixed_set
    images, labels = next(iter(make_loader(RecordDataset(root, (24, 20)), 4)))
    inputs, targets = batch_to_device(images, labels, "cpu")
    assert inputs.dtype == torch.float32 and inputs.shape == (4, 3, 24, 20) and targets.dtype == torch.int64
    assert float(inputs.min()) >= -1 and float(inputs.max()) <= 1


@pytest.mark.parametrize("payload, message", [
    (fx.corrupt_jpeg(), "train.rec key 2: Corrupt JPEG data"),
    (fx.jpeg_bomb(), "train.rec key 2: image declares 60000x60000"),
    (b"not an image", "train.rec key 2: cannot decode image"),
])
def test_a_bad_image_in_a_batch_names_the_file_and_key(tmp_path, payload, message):
    root = fx.training_set(tmp_path / "set", payloads=[fx.jpeg(0), payload, fx.jpeg(2), fx.jpeg(3)])
    dataset = RecordDataset(root, (fx.SIZE, fx.SIZE), flip=False)
    dataset.__getitems__([0, 2])  # the good ones
    with pytest.raises(InputError, match=message):
        dataset.__getitems__([0, 1, 2])


class _CountingRecord:
    """An InsightFaceRecord that counts its decodes."""

    def __init__(self, root):
        from facetrust.data.insightface import InsightFaceRecord

        self.record, self.decodes = InsightFaceRecord(root), 0
        self.labels, self.num_classes = self.record.labels, self.record.num_classes

    def __len__(self) -> int:
        return len(self.record)

    def decode(self, i: int, out=None):
        self.decodes += 1
        return self.record.decode(i, out=out)


@pytest.mark.parametrize("size", [(24, 20), (12, 10)])  # as stored (decoded into its slot), a resize
def test_a_small_set_is_decoded_once_and_gives_the_same_batches_every_epoch(mixed_set, monkeypatch, size):
    import pickle

    from facetrust.train import dataset as dataset_module

    root, payloads = mixed_set
    kept = RecordDataset(_CountingRecord(root), size, flip=True, seed=11)
    monkeypatch.setattr(dataset_module, "DECODED_CACHE_BYTES", 0)  # the same set, never kept
    fresh = RecordDataset(_CountingRecord(root), size, flip=True, seed=11)
    monkeypatch.undo()
    order = [13, 5, 0, 3, 22, 7, 9, 16, 1, 2, 4, 6, 8, 10, 11, 12, 14, 15, 17, 18, 19, 20, 21, 23]
    for epoch in range(3):
        kept.set_epoch(epoch)
        fresh.set_epoch(epoch)
        for start in (0, 8, 16):
            a, b = kept.__getitems__(order[start:start + 8]), fresh.__getitems__(order[start:start + 8])
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
            mirrored = [np.random.default_rng([11, epoch, i]).random() < 0.5 for i in order[start:start + 8]]
            want = torch.stack([_reference_input(payloads[i], size, m)
                                for i, m in zip(order[start:start + 8], mirrored)])
            assert torch.equal(normalize_batch(a.images), want)
        image, label = kept[3]  # one sample at a time too
        assert torch.equal(image, fresh[3][0]) and label == 0
    assert kept.source.decodes == 24 and fresh.source.decodes == 3 * 25
    copy = pickle.loads(pickle.dumps(kept))  # what a DataLoader worker gets: no decoded samples
    assert copy._decoded is None and kept._decoded is not None


def test_a_set_above_the_budget_is_decoded_every_time(mixed_set, monkeypatch):
    from facetrust.train import dataset as dataset_module

    root, _ = mixed_set
    monkeypatch.setattr(dataset_module, "DECODED_CACHE_BYTES", 24 * 24 * 20 * 3 - 1)  # one byte short
    dataset = RecordDataset(_CountingRecord(root), (24, 20), flip=False)
    for _ in range(2):
        dataset.__getitems__(list(range(24)))
    assert dataset.source.decodes == 48 and dataset._decoded is None
    monkeypatch.setattr(dataset_module, "DECODED_CACHE_BYTES", 24 * 24 * 20 * 3)  # exactly fits
    dataset = RecordDataset(_CountingRecord(root), (24, 20), flip=False)
    for _ in range(2):
        dataset.__getitems__(list(range(24)))
    assert dataset.source.decodes == 24
