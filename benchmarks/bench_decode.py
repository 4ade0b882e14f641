"""Benchmark: the RecordIO training input path vs the bare JPEG decoder and MXNet.

On an InsightFace RecordIO set of natural-image 112×112 JPEGs (``recordio_synth.py``, about
5.6 KB each) it measures, on one thread, in images per second of CPU time (best of ``--repeat``
rounds, every side timed once per round, one after the other):

- **limit**: ``torchvision.io.decode_jpeg`` on the JPEG bytes already in memory, nothing else;
- **simplejpeg**: ``simplejpeg.decode_jpeg`` on the same bytes: the libjpeg-turbo call our path makes;
- **ours**: the training sample path as the trainer's DataLoader runs it,
  ``RecordDataset.__getitems__`` on shuffled batches of ``--batch-size`` (the default config's
  128): read each record, parse its header and label, decode into the batch's slot, mirror by the
  seeded coin, uint8 batch tensor; and ``RecordDataset[i]`` one sample at a time.  Every sample is
  decoded each time (:func:`decoding_every_time`), as on any real training set; a set small enough
  to be kept decoded after its first epoch (the embedded default's) is timed beside it
  (``ours_sample_kept_decoded``), not as the headline;
- **normalise**: ``normalize_batch`` on the CPU, per image (the float conversion training does
  once per batch: on the GPU when it trains there, here in the main process);
- **PIL**: ``Image.open`` + ``convert("RGB")`` + ``np.asarray`` on the bytes;
- **MXNet 1.9.1**: ``MXIndexedRecordIO.read_idx`` + ``recordio.unpack`` + ``mx.image.imdecode`` +
  ``asnumpy`` (arcface_torch's path), run by the isolated MXNet venv (``--mxnet-python``);
- **DataLoader**: the trainer's loader (``make_loader`` + ``EpochSampler``, batch ``--batch-size``,
  ``drop_last``) over ``--loader-images`` images with 0, 1 and 2 worker processes, its uint8
  batches taken as they come (a GPU trainer normalises them on the GPU) and normalised in the main
  process as the CPU trainer does (``batch_to_device``): images per second of wall time over a
  whole epoch (worker start-up included, as each training epoch pays it) and the start-up alone
  (the wait for the first batch).

Agreement (the script exits 1 otherwise): our batch pixels equal PIL's on every image, mirrored
ones equal PIL's mirrored, and the normalised batch equals the per-sample formula bit for bit (so
training is byte-identical).  Each decoder's pixels are compared with MXNet's (OpenCV's libjpeg).
Results go to ``results/recordio_decode.json``.

    python benchmarks/bench_decode.py [--images 4000] [--loader-images 12000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

import recordio_synth
from harness import REPO, add_common_arguments, child_env, results_dir, run_measured, table, write_result

MXNET_SCRIPT = r"""
import json, sys, time
import numpy as np
import mxnet as mx
rec_dir, n, repeat, dump = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
record = mx.recordio.MXIndexedRecordIO(rec_dir + "/train.idx", rec_dir + "/train.rec", "r")
header, _ = mx.recordio.unpack(record.read_idx(0))
keys = list(range(1, int(header.label[0])))[:n]
order = np.random.RandomState(0).permutation(len(keys))
def sample(key):
    header, payload = mx.recordio.unpack(record.read_idx(key))
    return mx.image.imdecode(payload).asnumpy(), header.label
for key in keys[:20]:
    sample(key)
best = 1e9
for _ in range(repeat):
    start = time.process_time()
    for i in order:
        sample(keys[i])
    best = min(best, time.process_time() - start)
np.save(sys.argv[5], np.stack([sample(k)[0] for k in keys[:dump]]))
print(json.dumps({"images_per_s": len(keys) / best, "mxnet": mx.__version__}))
"""


def _decoders():
    """The bare decoders, each ``payload -> H x W x 3 uint8 array``, and its input form."""
    import simplejpeg
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg

    return {
        "limit_decode_jpeg": (lambda t: decode_jpeg(t), lambda p: torch.frombuffer(bytearray(p), dtype=torch.uint8),
                              lambda image: image.permute(1, 2, 0).numpy()),
        "simplejpeg_decode": (lambda p: simplejpeg.decode_jpeg(p, colorspace="RGB"), bytes, np.asarray),
        "pil_decode": (lambda p: np.asarray(Image.open(io.BytesIO(p)).convert("RGB")), bytes, np.asarray),
    }


def cpu_rates(sides: dict, repeat: int) -> dict:
    """``{name: items per second of CPU time}`` for ``sides = {name: (function, items, count)}``: in
    each of ``repeat`` rounds every side runs once, one after the other; the best round counts."""
    best = {name: float("inf") for name in sides}
    for _ in range(repeat):
        for name, (function, items, _count) in sides.items():
            start = time.process_time()
            for item in items:
                function(item)
            best[name] = min(best[name], time.process_time() - start)
    return {name: count / best[name] for name, (_f, _i, count) in sides.items()}


@contextlib.contextmanager
def decoded_cache_limit(limit: float):
    """Datasets made inside keep their samples decoded when they take at most ``limit`` bytes
    (``train.dataset.DECODED_CACHE_BYTES`` meanwhile)."""
    from facetrust.train import dataset as dataset_module

    saved = dataset_module.DECODED_CACHE_BYTES
    dataset_module.DECODED_CACHE_BYTES = limit
    try:
        yield
    finally:
        dataset_module.DECODED_CACHE_BYTES = saved


def decoding_every_time():
    """Datasets made inside decode every sample each time it is asked for, as a training set above
    ``DECODED_CACHE_BYTES`` does (any real one); the benchmark's sets are small enough to be kept
    decoded after their first epoch, which would time a copy, not the decode."""
    return decoded_cache_limit(0)


def single_thread_rates(rec_dir: Path, n: int, batch_size: int, repeat: int) -> dict:
    """Images per second of one thread: the bare decoders, our batch and sample paths, normalisation."""
    import torch

    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.data.transforms import normalize_batch
    from facetrust.train.dataset import RecordDataset

    record = InsightFaceRecord(rec_dir)
    payloads = [record.read(i)[0] for i in range(n)]
    with decoding_every_time():
        dataset = RecordDataset(record, (112, 112), flip=True, seed=0)
    with decoded_cache_limit(float("inf")):  # as the embedded default's set does, whatever --images
        kept = RecordDataset(record, (112, 112), flip=True, seed=0)
    order = np.random.default_rng(0).permutation(n).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    in_batches = len(batches) * batch_size
    uint8_batch = dataset.__getitems__(batches[0]).images
    for batch in batches:  # its first epoch decodes (and keeps) them
        kept.__getitems__(batch)
    sides = {name: (decode, [to_input(p) for p in payloads], n) for name, (decode, to_input, _) in _decoders().items()}
    sides["ours_sample"] = (dataset.__getitems__, batches, in_batches)
    sides["ours_getitem"] = (dataset.__getitem__, order, n)
    sides["ours_sample_kept_decoded"] = (kept.__getitems__, batches, in_batches)
    sides["normalize_batch_cpu"] = (lambda _: normalize_batch(uint8_batch), range(len(batches)), in_batches)
    torch.set_num_threads(1)
    return cpu_rates(sides, repeat)


def agreement(rec_dir: Path, n: int) -> dict:
    """Counts of images whose pixels agree: our batch path vs PIL (plain and mirrored), the bare
    decoders vs ours; and whether the normalised batch equals the per-sample formula."""
    import torch

    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.data.transforms import normalize_batch, to_tensor
    from facetrust.train.dataset import RecordDataset

    record = InsightFaceRecord(rec_dir)
    plain = RecordDataset(record, (112, 112), flip=False).__getitems__(range(n)).images.permute(0, 2, 3, 1).numpy()
    flipping = RecordDataset(record, (112, 112), flip=True, seed=0)
    mirrored = flipping.__getitems__(range(n)).images.permute(0, 2, 3, 1).numpy()
    decoders = _decoders()
    pil_decode, _, _ = decoders["pil_decode"]
    identical = {"ours_vs_pil": 0, "ours_mirrored_vs_pil_mirrored": 0}
    identical.update({f"{name}_vs_ours": 0 for name in decoders})
    for i in range(n):
        payload = record.read(i)[0]
        pil = pil_decode(payload)
        identical["ours_vs_pil"] += bool(np.array_equal(plain[i], pil))
        want = pil[:, ::-1] if flipping.flips(i) else pil
        identical["ours_mirrored_vs_pil_mirrored"] += bool(np.array_equal(mirrored[i], want))
        for name, (decode, to_input, to_array) in decoders.items():
            identical[f"{name}_vs_ours"] += bool(np.array_equal(to_array(decode(to_input(payload))), plain[i]))
    batch = torch.from_numpy(mirrored[: min(n, 128)]).permute(0, 3, 1, 2)
    per_sample = torch.stack([to_tensor(image) for image in mirrored[: min(n, 128)]])
    return {"images": n, "identical": identical,
            "normalized_batch_equals_per_sample": bool(torch.equal(normalize_batch(batch), per_sample))}


def loader_curve(rec_dir: Path, batch_size: int, workers: list[int], repeat: int) -> dict:
    """The trainer's DataLoader, one epoch per pass, ``repeat`` passes per worker count and consumer
    (the best kept).  Consumers: ``uint8`` takes the batches as a GPU trainer does before it moves
    them (normalisation then runs on the GPU); ``normalized_cpu`` normalises each in the main process,
    as the CPU trainer does.  ``{workers: {consumer: img/s of wall time over the epoch,
    consumer + "_cpu_us_per_image": CPU time of the main process and its workers per image,
    "first_batch_s": the start-up, the wait for the first batch}}``."""
    import torch

    from facetrust.train.dataset import EpochSampler, RecordDataset
    from facetrust.train.loader import batch_to_device, make_loader

    with decoding_every_time():  # every epoch decodes, as on a real training set
        dataset = RecordDataset(rec_dir, (112, 112), flip=True, seed=0)
    sampler, generator = EpochSampler(len(dataset), seed=0), torch.Generator()
    consumers = {"uint8": lambda images, labels: (images, labels),
                 "normalized_cpu": lambda images, labels: batch_to_device(images, labels, "cpu")}
    curve = {}
    for count in workers:
        loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=count, generator=generator,
                             device="cpu", drop_last=True)
        best = {"uint8": 0.0, "normalized_cpu": 0.0, "uint8_cpu_us_per_image": float("inf"),
                "normalized_cpu_cpu_us_per_image": float("inf"), "first_batch_s": float("inf")}
        for epoch in range(repeat):
            for name, consume in consumers.items():
                dataset.set_epoch(epoch)  # what the trainer does before each epoch
                sampler.set_epoch(epoch)
                generator.manual_seed(epoch)
                start, cpu_start, first, seen = time.perf_counter(), _cpu_s(), None, 0
                for images, labels in loader:
                    consume(images, labels)
                    first = first or time.perf_counter() - start
                    seen += len(labels)
                best[name] = max(best[name], seen / (time.perf_counter() - start))
                # the workers have been joined when the epoch ends, so their CPU time is counted
                cpu_key = f"{name}_cpu_us_per_image"
                best[cpu_key] = min(best[cpu_key], (_cpu_s() - cpu_start) / seen * 1e6)
                best["first_batch_s"] = min(best["first_batch_s"], first)
        curve[str(count)] = best
    return curve


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished, joined children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def mxnet_side(python: Path, rec_dir: Path, n: int, repeat: int, dump: int, work: Path) -> dict | None:
    """MXNet's read + decode rate (its own process) and how many of the first ``dump`` images each
    decoder (ours through the batch path; the bare ones) decodes to MXNet's pixels."""
    if not Path(python).is_file():
        return None
    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.train.dataset import RecordDataset

    dump_path = work / "mxnet_pixels.npy"
    run = run_measured([str(python), "-c", MXNET_SCRIPT, str(rec_dir), str(n), str(repeat), str(dump), str(dump_path)],
                       child_env(PYTHONPATH="", MXNET_ENGINE_TYPE="NaiveEngine"))
    result = json.loads(run["stdout"].splitlines()[-1])
    theirs = np.load(dump_path)
    record = InsightFaceRecord(rec_dir)
    ours = RecordDataset(record, (112, 112), flip=False).__getitems__(range(dump)).images.permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    result.update(pixels_identical=int((diff.reshape(dump, -1).max(axis=1) == 0).sum()), compared=dump,
                  max_abs_pixel_difference=int(diff.max()), mean_abs_pixel_difference=float(diff.mean()))
    result["decoders_identical_to_mxnet"] = {
        name: sum(bool(np.array_equal(to_array(decode(to_input(record.read(i)[0]))), theirs[i])) for i in range(dump))
        for name, (decode, to_input, to_array) in _decoders().items()}
    return result


def report(result: dict, mxnet_python: Path) -> None:
    """Print the tables the README copies."""
    rates = result["rates"]
    limit, ours = rates["limit_decode_jpeg"], rates["ours_sample"]
    rows = [[name, f"{rate:,.0f}", f"{rate / limit:.2f}", f"{ours / rate:.2f}"] for name, rate in rates.items()]
    if result["mxnet"]:
        mx = result["mxnet"]["images_per_s"]
        rows.append(["mxnet_1.9.1_read_imdecode", f"{mx:,.0f}", f"{mx / limit:.2f}", f"{ours / mx:.2f}"])
    print(table(rows, ["one thread (CPU time)", "img/s", "x limit", "ours_sample / this"]))
    curve = result["dataloader"]
    print(table([[w, f"{c['uint8']:,.0f}", f"{c['uint8_cpu_us_per_image']:.0f}", f"{c['normalized_cpu']:,.0f}",
                  f"{c['normalized_cpu_cpu_us_per_image']:.0f}", f"{c['first_batch_s']:.3f}"] for w, c in curve.items()],
                ["DataLoader workers", "uint8 batches img/s (wall)", "CPU µs/img", "+ normalised on the CPU img/s",
                 "CPU µs/img", "first batch s"]))
    print(f"pixels identical ({result['agreement']['images']} images): {result['agreement']['identical']}; "
          f"normalised batch == per-sample: {result['agreement']['normalized_batch_equals_per_sample']}")
    if result["mxnet"]:
        m = result["mxnet"]
        print(f"MXNet pixels identical to ours: {m['pixels_identical']} of {m['compared']} "
              f"(max |diff| {m['max_abs_pixel_difference']}); each decoder vs MXNet: {m['decoders_identical_to_mxnet']}")
    else:
        print(f"MXNet side skipped: no {mxnet_python}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--images", type=int, default=4000, help="images of the single-thread measurement")
    parser.add_argument("--loader-images", type=int, default=12000, help="images of the DataLoader epoch")
    parser.add_argument("--batch-size", type=int, default=128, help="the default config's batch size")
    parser.add_argument("--mxnet-python", type=Path, default=REPO / ".venv-mxnet" / "bin" / "python")
    args = parser.parse_args()
    n, loader_n = (200, 256) if args.quick else (args.images, args.loader_images)
    batch_size = 32 if args.quick else args.batch_size
    repeat = 1 if args.quick else args.repeat
    rec_dir = recordio_synth.ensure(args.work, n)
    loader_dir = recordio_synth.ensure(args.work, loader_n)
    work = args.work / f"{rec_dir.name}-bench"
    work.mkdir(parents=True, exist_ok=True)
    result = {"images": n, "batch_size": batch_size, "loader_images": loader_n,
              "mean_jpeg_bytes": float(np.mean([len(p) for p in _payloads(rec_dir)])),
              "rates": single_thread_rates(rec_dir, n, batch_size, repeat)}
    result["dataloader"] = loader_curve(loader_dir, batch_size, [0, 1] if args.quick else [0, 1, 2], repeat)
    result["dataloader_images_per_s"] = {w: c["normalized_cpu"] for w, c in result["dataloader"].items()}
    result["agreement"] = agreement(rec_dir, n)
    result["mxnet"] = mxnet_side(args.mxnet_python, rec_dir, n, repeat, min(n, 200), work)
    # Headline: ours (the trainer's sample path) as a fraction of the bare decoder (goal >= 0.9).
    result["ratio"] = result["rates"]["ours_sample"] / result["rates"]["limit_decode_jpeg"]
    report(result, args.mxnet_python)
    path = write_result("recordio_decode", result, work if args.quick else results_dir(args))
    print(f"wrote {path}")
    identical = result["agreement"]["identical"]
    if (identical["ours_vs_pil"] != n or identical["ours_mirrored_vs_pil_mirrored"] != n
            or not result["agreement"]["normalized_batch_equals_per_sample"]):
        raise SystemExit("the training path's pixels or floats differ from the reference: training would change")


def _payloads(rec_dir: Path) -> list[bytes]:
    from facetrust.data.insightface import InsightFaceRecord

    record = InsightFaceRecord(rec_dir)
    return [record.read(i)[0] for i in range(len(record))]


if __name__ == "__main__":
    main()
