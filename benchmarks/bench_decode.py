"""Benchmark: RecordIO read + JPEG decode, the training input path, vs MXNet and the bare decoder.

On an InsightFace RecordIO set of natural-image 112×112 JPEGs (``recordio_synth.py``, about
5.6 KB each) it measures, on one thread, in images per second of CPU time (best of ``--repeat``):

- **limit**: ``torchvision.io.decode_jpeg`` on the JPEG bytes already in memory, nothing else;
- **ours**: ``RecordDataset[i]`` in a shuffled order: read the record, parse it, decode, mirror by
  the seeded coin, normalise to a float32 tensor (the whole training sample);
- **PIL**: ``Image.open`` + ``convert("RGB")`` + ``np.asarray`` on the bytes (the decoder facetrust
  used before, for the ratio);
- **MXNet 1.9.1**: ``MXIndexedRecordIO.read_idx`` + ``recordio.unpack`` + ``mx.image.imdecode`` +
  ``asnumpy`` (arcface_torch's path), run by the isolated MXNet venv (``--mxnet-python``);
- **DataLoader**: ``RecordDataset`` through ``torch.utils.data.DataLoader`` (batch 128) with 0, 1
  and 2 worker processes, in images per second of wall time.

Agreement: our decoded pixels must equal PIL's on every image (training stays byte-identical);
MXNet's (OpenCV's libjpeg) are compared and reported.  Results go to ``results/recordio_decode.json``.

    python benchmarks/bench_decode.py [--images 4000] [--repeat 3] [--quick] [--mxnet-python PATH]
"""

from __future__ import annotations

import argparse
import io
import json
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


def cpu_rate(function, items, repeat: int) -> float:
    """Items per second of process CPU time, best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            function(item)
        best = min(best, time.process_time() - start)
    return len(items) / best


def loader_rate(dataset, workers: int, batch_size: int = 128) -> float:
    """Images per second (wall) of one pass of a DataLoader with ``workers`` processes."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), worker_init_fn=_one_thread,
                        persistent_workers=False)
    start = time.perf_counter()
    seen = sum(batch[0].shape[0] for batch in loader)
    return seen / (time.perf_counter() - start)


def _one_thread(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def measure(rec_dir: Path, n: int, repeat: int, workers: list[int]) -> dict:
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg

    from facetrust.data.decode import decode_rgb
    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.train.dataset import RecordDataset

    torch.set_num_threads(1)
    record = InsightFaceRecord(rec_dir)
    n = min(n, len(record))
    payloads = [record.read(i)[0] for i in range(n)]
    in_memory = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
    dataset = RecordDataset(record, (112, 112), flip=True, seed=0)
    order = np.random.default_rng(0).permutation(n).tolist()
    pil = lambda p: np.asarray(Image.open(io.BytesIO(p)).convert("RGB"))  # noqa: E731
    identical = sum(np.array_equal(decode_rgb(p), pil(p)) for p in payloads)
    rates = {
        "limit_decode_jpeg": cpu_rate(decode_jpeg, in_memory, repeat),
        "ours_sample": cpu_rate(dataset.__getitem__, order, repeat),
        "pil_decode": cpu_rate(pil, payloads, repeat),
    }
    loader = {str(w): loader_rate(RecordDataset(record, (112, 112), flip=True, seed=0), w) for w in workers}
    return {"images": n, "rates": rates, "dataloader_images_per_s": loader, "pixels_identical_to_pil": identical,
            "mean_jpeg_bytes": float(np.mean([len(p) for p in payloads]))}


def mxnet_side(python: Path, rec_dir: Path, n: int, repeat: int, dump: int, work: Path) -> dict | None:
    if not Path(python).is_file():
        return None
    dump_path = work / "mxnet_pixels.npy"
    run = run_measured([str(python), "-c", MXNET_SCRIPT, str(rec_dir), str(n), str(repeat), str(dump), str(dump_path)],
                       child_env(PYTHONPATH="", MXNET_ENGINE_TYPE="NaiveEngine"))
    result = json.loads(run["stdout"].splitlines()[-1])
    from facetrust.data.insightface import InsightFaceRecord

    ours = np.stack([InsightFaceRecord(rec_dir).decode(i)[0] for i in range(dump)])
    theirs = np.load(dump_path)
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    result.update(pixels_identical=int((diff.reshape(dump, -1).max(axis=1) == 0).sum()), compared=dump,
                  max_abs_pixel_difference=int(diff.max()), mean_abs_pixel_difference=float(diff.mean()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--mxnet-python", type=Path, default=REPO / ".venv-mxnet" / "bin" / "python")
    args = parser.parse_args()
    n = 200 if args.quick else args.images
    repeat = 1 if args.quick else args.repeat
    rec_dir = recordio_synth.ensure(args.work, n)
    work = args.work / f"{rec_dir.name}-bench"
    work.mkdir(parents=True, exist_ok=True)
    result = measure(rec_dir, n, repeat, [0, 1] if args.quick else [0, 1, 2])
    result["mxnet"] = mxnet_side(args.mxnet_python, rec_dir, n, repeat, min(n, 200), work)
    rates = result["rates"]
    limit = rates["limit_decode_jpeg"]
    rows = [[name, f"{rate:,.0f}", f"{rate / limit:.2f}"] for name, rate in rates.items()]
    if result["mxnet"]:
        rows.append(["mxnet_1.9.1_read_imdecode", f"{result['mxnet']['images_per_s']:,.0f}",
                     f"{result['mxnet']['images_per_s'] / limit:.2f}"])
    print(table(rows, ["one thread (CPU time)", "img/s", "x limit"]))
    print(table([[w, f"{r:,.0f}"] for w, r in result["dataloader_images_per_s"].items()], ["DataLoader workers", "img/s (wall)"]))
    print(f"pixels identical to PIL: {result['pixels_identical_to_pil']} of {result['images']}")
    if result["mxnet"]:
        m = result["mxnet"]
        print(f"MXNet pixels identical: {m['pixels_identical']} of {m['compared']} (max |diff| {m['max_abs_pixel_difference']})")
    else:
        print(f"MXNet side skipped: no {args.mxnet_python}")
    path = write_result("recordio_decode", result, results_dir(args) if not args.quick else work)
    print(f"wrote {path}")
    if result["pixels_identical_to_pil"] != result["images"]:
        raise SystemExit("the decoder's pixels differ from PIL's: training would change")


if __name__ == "__main__":
    main()
