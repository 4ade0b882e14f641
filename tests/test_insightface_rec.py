"""facetrust.data.insightface: the train.rec/train.idx/property layout, written and read."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from facetrust.data.insightface import InsightFaceRecord, write_insightface_dataset
from facetrust.data.recordio import IndexedRecordIOReader, IndexedRecordIOWriter, IRHeader, pack, unpack
from facetrust.errors import InputError

COLOURS = [(220, 30, 30), (30, 200, 40), (20, 40, 210), (240, 240, 20)]


def jpeg(colour, size=(12, 10)) -> bytes:
    """A flat-colour JPEG, (height, width) = size."""
    buffer = io.BytesIO()
    Image.new("RGB", (size[1], size[0]), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


LABELS = [0, 0, 0, 1, 3, 3]  # class 2 has no image


def samples():
    for label in LABELS:
        yield label, jpeg(COLOURS[label])


def test_insightface_writer_produces_header_images_and_identity_ranges(tmp_path):
    summary = write_insightface_dataset(tmp_path, samples(), num_classes=4, image_size=(12, 10))
    assert summary == {"num_images": 6, "num_classes": 4, "header": (7, 11)}
    assert (tmp_path / "property").read_text() == "4,12,10"
    reader = IndexedRecordIOReader(tmp_path / "train.idx", tmp_path / "train.rec")
    assert reader.keys == list(range(11))
    assert reader.offset(0) == 0  # the header stays first in the file
    header, _ = unpack(reader.read_idx(0))
    assert header.flag == 2 and header.label == (7.0, 11.0)
    ranges = [unpack(reader.read_idx(k))[0].label for k in range(7, 11)]
    assert ranges == [(1.0, 4.0), (4.0, 5.0), (5.0, 5.0), (5.0, 7.0)]
    image_header, _ = unpack(reader.read_idx(5))
    assert image_header == IRHeader(0, 3.0, 5, 0)


def test_insightface_reader_round_trip_decodes_rgb(tmp_path):
    write_insightface_dataset(tmp_path, samples(), num_classes=4, image_size=(12, 10))
    dataset = InsightFaceRecord(tmp_path)
    assert len(dataset) == 6 and dataset.header == (7, 11)
    assert dataset.num_classes == 4 and dataset.image_size == (12, 10)
    assert dataset.image_keys.tolist() == [1, 2, 3, 4, 5, 6]
    assert dataset.labels.dtype == np.int64 and dataset.labels.tolist() == LABELS
    payload, label = dataset.read(3)
    assert label == 1 and payload == jpeg(COLOURS[1])
    image, label = dataset.decode(4)
    assert label == 3 and image.shape == (12, 10, 3) and image.dtype == np.uint8
    assert np.abs(image.reshape(-1, 3).mean(0) - COLOURS[3]).max() < 8


def test_insightface_writer_refuses_unsorted_labels_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="increasing order: 0 after 1"):
        write_insightface_dataset(tmp_path, [(1, b"a"), (0, b"b")], 2, (4, 4))
    with pytest.raises(ValueError, match="outside"):
        write_insightface_dataset(tmp_path, [(0, b"a"), (5, b"b")], 2, (4, 4))
    assert list(tmp_path.iterdir()) == []


def test_insightface_writer_streams_a_generator_once(tmp_path):
    produced = []

    def one_pass():
        for label, image in samples():
            produced.append(label)
            yield label, image

    write_insightface_dataset(tmp_path, one_pass(), num_classes=4, image_size=(12, 10))
    assert produced == LABELS
    assert InsightFaceRecord(tmp_path).labels.tolist() == LABELS


def test_set_without_header_treats_every_key_as_image(tmp_path):
    # DALI-converted sets: no header record, scalar labels, no property file
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as writer:
        for key, label in enumerate([2, 0, 1, 1]):
            writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), jpeg(COLOURS[label])))
    dataset = InsightFaceRecord(tmp_path)
    assert dataset.header is None and dataset.image_size is None
    assert dataset.image_keys.tolist() == [0, 1, 2, 3]
    assert dataset.labels.tolist() == [2, 0, 1, 1] and dataset.num_classes == 3
    assert dataset.read(0)[1] == 2


def test_header_pointing_past_the_index_is_refused(tmp_path):
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as writer:
        writer.write_idx(0, pack(IRHeader(0, (5.0, 7.0), 0, 0), b""))
        writer.write_idx(1, pack(IRHeader(0, 0.0, 1, 0), b"x"))
    with pytest.raises(InputError, match="needs keys 1..6; 5 missing, first 2"):
        InsightFaceRecord(tmp_path)


def test_undecodable_image_names_the_key(tmp_path):
    write_insightface_dataset(tmp_path, [(0, b"not a jpeg")], 1, (4, 4))
    with pytest.raises(InputError, match="key 1: cannot decode"):
        InsightFaceRecord(tmp_path).decode(0)


class _Images:
    def __init__(self, record):
        self.record = record

    def __len__(self):
        return len(self.record)

    def __getitem__(self, i):
        image, label = self.record.decode(i)
        return image.mean(), label


def test_insightface_record_works_in_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    write_insightface_dataset(tmp_path, samples(), num_classes=4, image_size=(12, 10))
    record = InsightFaceRecord(tmp_path)
    record.read(0)  # the parent holds an open handle before workers start
    clone = pickle.loads(pickle.dumps(record))
    assert clone.read(5) == record.read(5)
    loader = torch.utils.data.DataLoader(_Images(record), batch_size=2, num_workers=2)
    labels = torch.cat([batch[1] for batch in loader]).tolist()
    assert labels == LABELS


@pytest.mark.parametrize("label", [float("nan"), 1e30, -1.0, 2.5])
def test_labels_that_are_not_class_indices_are_refused_even_without_property(tmp_path, label):
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as writer:
        for key, value in enumerate([0.0, label]):
            writer.write_idx(key, pack(IRHeader(0, value, key, 0), jpeg(COLOURS[0])))
    dataset = InsightFaceRecord(tmp_path)  # no header, no property: num_classes comes from labels
    with pytest.raises(InputError, match="train.rec key 1: label .* is not a class index"):
        dataset.labels
    with pytest.raises(InputError, match="key 1: label"):
        dataset.read(1)


def test_header_that_leaves_records_out_is_refused(tmp_path):
    write_insightface_dataset(tmp_path, samples(), num_classes=4, image_size=(12, 10))
    with IndexedRecordIOWriter(tmp_path / "x.idx", tmp_path / "x.rec") as writer:
        reader = IndexedRecordIOReader(tmp_path / "train.idx", tmp_path / "train.rec")
        for key, record in reader:  # header (7, 11) becomes (3, 5): images 3..6 would vanish
            writer.write_idx(key, pack(IRHeader(2, (3.0, 5.0), 0, 0), b"") if key == 0 else record)
        reader.close()
    (tmp_path / "x.idx").replace(tmp_path / "train.idx")
    (tmp_path / "x.rec").replace(tmp_path / "train.rec")
    with pytest.raises(InputError, match=r"header \(A=3, B=5\) covers keys 0..4, but the index has 6 more"):
        InsightFaceRecord(tmp_path)


def test_labels_of_three_floats_are_read_alike_by_data_verify_and_train(tmp_path):
    """A valid set whose image records carry three floats (the class first): `data verify` accepted
    it and `train` refused it for a short header read; both now read the class from the first float."""
    import bad_input_fixtures as fx
    from facetrust.cli import main
    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.data.recordio import IndexedRecordIOWriter, IRHeader, pack

    root = tmp_path / "set"
    root.mkdir()
    labels = [i // 4 for i in range(16)]
    with IndexedRecordIOWriter(root / "train.idx", root / "train.rec") as writer:
        writer.write_idx(0, pack(IRHeader(2, (17.0, 21.0), 0, 0), b""))
        for key, label in enumerate(labels, start=1):
            writer.write_idx(key, pack(IRHeader(3, (float(label), 0.5, 0.25), key, 0), fx.jpeg(key)))
        for cls in range(4):
            writer.write_idx(17 + cls, pack(IRHeader(2, (1.0 + 4 * cls, 5.0 + 4 * cls), 0, 0), b""))
    (root / "property").write_text("4,32,32")
    assert main(["data", "verify", str(root)]) == 0
    assert InsightFaceRecord(root).labels.tolist() == labels
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nthreads: 1\nmodels:\n  m:\n    backbone: iresnet\n"
                      "    backbone_options: {layers: [1, 1, 1, 1], width: 4}\n    embedding_size: 8\n"
                      "    input_size: [32, 32]\n    head: {kind: arcface, s: 16.0, m: 0.3}\n"
                      "    train: {epochs: 1, batch_size: 8, lr: 0.05, warmup_epochs: 0}\n")
    assert main(["train", "--model", "m", "--params", str(params), "--train-data", str(root),
                 "--out", str(tmp_path / "model")]) == 0
