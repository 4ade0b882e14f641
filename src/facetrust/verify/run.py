"""``facetrust verify``: are two photographs the same person, by how much, how sure, and why.

For each pair: detection and alignment (:mod:`facetrust.align.photo`), embeddings, uncertainty and
score (:mod:`facetrust.verify.model`), the decision at a benchmark's operating point and the
uncertainty against the benchmark's (:mod:`facetrust.verify.benchmark`), an explanation map
(:mod:`facetrust.explain.maps`, or xCos's own maps), and a one-page figure
(:mod:`facetrust.verify.figure`).

Output directory (written together: a failed run leaves none of it)::

    verify.json      {"model", "settings", "pairs": [record, ...]} (docs/FORMATS.md "Verification")
    pair_0000.png    the page of pair 0, ...
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError
from facetrust.explain.defaults import DEFAULT_IG_STEPS, DEFAULT_MASKS

from facetrust.explain.defaults import VERIFY_EXPLAIN_METHODS as EXPLAIN_METHODS

GRADIENT_METHODS = ("gradient", "integrated_gradients")  # "gradient" is integrated gradients
MAX_PAIRS_FILE_BYTES = 64 * 2**20  # a pairs list is text: far below this


@dataclass
class VerifySettings:
    far: float | None = None
    metrics: Path | None = None
    threshold: float | None = None
    score: str | None = None
    explain: str = "gradient"
    steps: int = DEFAULT_IG_STEPS
    masks: int = DEFAULT_MASKS
    seed: int = 0
    aligned: bool = False
    no_face: str = "error"
    min_score: float = 0.9
    batch_size: int = 16
    benchmark_embeddings: Path | None = None
    on_bad_image: str = "fail"  # skip: a pair with an unreadable or faceless photograph is recorded as skipped


class PairRow(tuple):
    """One ``(image1, image2, label)`` row of a pairs CSV that remembers where it was read
    (``source`` line ``line``), so that an error about its photographs can name the line.  A plain
    3-tuple otherwise (equal to one, unpacks as one)."""

    source: str | None
    line: int | None

    def __new__(cls, values, source: str | None = None, line: int | None = None):
        row = super().__new__(cls, values)
        row.source, row.line = source, line
        return row


def read_pairs_csv(path: str | Path) -> list[tuple[str, str, str | None]]:
    """``image1,image2[,label]`` rows (header line required; a UTF-8 byte-order mark before it is
    accepted); relative paths are taken from the CSV's folder.  Each row is a :class:`PairRow`
    (its line number kept).  InputError naming the file and line for anything else."""
    from facetrust.input_files import read_regular

    path = Path(path)
    try:
        text = read_regular(path, "pairs list", max_bytes=MAX_PAIRS_FILE_BYTES).decode("utf-8-sig")
    except OSError as error:
        raise InputError(f"{path}: cannot read pairs list: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        if header is None or [c.strip() for c in header[:2]] != ["image1", "image2"]:
            raise InputError(f"{path} line 1: expected the header image1,image2[,label]")
        has_label = len(header) > 2 and header[2].strip() == "label"
        pairs = []
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise InputError(f"{path} line {line}: expected two image paths")
            if "\0" in row[0] or "\0" in row[1]:
                raise InputError(f"{path} line {line}: an image path holds a NUL character")
            first, second = (str(p if p.is_absolute() else path.parent / p) for p in (Path(row[0].strip()),
                                                                                      Path(row[1].strip())))
            pairs.append(PairRow((first, second, row[2].strip() if has_label and len(row) > 2 else None),
                                 str(path), line))
    except csv.Error as error:
        raise InputError(f"{path} line {reader.line_num}: not a valid CSV row ({error})") from None
    if not pairs:
        raise InputError(f"{path}: no pairs")
    return pairs


def _at_pairs_line(chunk: Sequence[tuple], error: InputError) -> str:
    """``error``'s message prefixed with ``pairs.csv line N:`` of the first pair of ``chunk`` that
    holds the photograph it names (pairs read by :func:`read_pairs_csv`); else the message as it is."""
    text = str(error)
    for names in (lambda image: text.startswith(f"{image}:"), lambda image: image in text):
        for pair in chunk:
            if getattr(pair, "line", None) is not None and any(names(image) for image in pair[:2]):
                return f"{pair.source} line {pair.line}: {text}"
    return text


def _explain(model, method: str, image1: torch.Tensor, image2: torch.Tensor, settings: VerifySettings,
             centre: float) -> dict | None:
    """The explanation arrays of face 1 against face 2 (None for ``none``)."""
    if method == "none":
        return None
    if method == "xcos":
        from facetrust.models.xcos import explain_pair

        return {"method": "xcos", "centre": centre, **explain_pair(model.xcos, image1, image2)}
    from facetrust.explain.maps import pair_map

    torch.manual_seed(settings.seed)
    if method in GRADIENT_METHODS:
        method, options = "integrated_gradients", {"steps": settings.steps}
    else:
        options = {"num_masks": settings.masks, "seed": settings.seed, "progress": False}
    result = pair_map(method, model.embed, image1, image2, **options)
    out = {"method": method, "similarity": result.similarity, "dissimilarity": result.dissimilarity,
           "cosine": result.cosine}
    if result.completeness_gap is not None:
        out["completeness_gap"] = result.completeness_gap
    return out


def _check_explain(model, method: str) -> None:
    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"--explain {method!r}: allowed: {', '.join(EXPLAIN_METHODS)}")
    if method == "xcos" and model.xcos is None:
        raise InputError(f"{model.path}: --explain xcos needs an xCos model (facetrust train-xcos); "
                         f"use gradient or perturbation")
    if method in GRADIENT_METHODS and model.onnx:
        raise InputError(f"{model.path}: an ONNX model has no gradients; use --explain perturbation")


def _decision(point, value: float) -> dict | None:
    if point is None:
        return None
    same = point.threshold is not None and value >= point.threshold
    return {**point.record(), "same": bool(same)}


def _line(index: int, record: dict) -> str:
    """One line per pair for the terminal."""
    score = record["score"]
    text = f"pair {index}: {score['name']} {score['value']:.4f}"
    decision = record["decision"]
    if decision is not None:
        threshold = decision["threshold"]
        text += (f" {'>=' if decision['same'] else '<'} threshold "
                 f"{'+inf' if threshold is None else format(threshold, '.4f')}: "
                 f"{'same' if decision['same'] else 'different'}")
    uncertainty = record["uncertainty"]
    for face in ("face1", "face2"):
        placed = ((uncertainty or {}).get("benchmark") or {}).get(face)
        if placed:
            text += f"; {placed['text']}"
    return text


def run_verify(model_path: str | Path, pairs: Sequence[tuple[str, str, str | None]], out_dir: str | Path,
               settings: VerifySettings, *, head_dir: str | Path | None = None, uncertainty: str | None = None,
               notify: Callable[[str], None] = lambda line: tqdm.write(line, file=sys.stderr)) -> dict:
    """Verify every pair; write ``out_dir`` (module docstring); returns the verify.json dict.
    ``notify`` receives one line per photograph that was detected and aligned (or centre-cropped)."""
    from facetrust.align.photo import prepare_files
    from facetrust.data.transforms import to_tensor
    from facetrust.io import staged_directory, write_json_atomic
    from facetrust.verify import benchmark as bench
    from facetrust.verify.figure import plot_verification
    from facetrust.verify.model import confidence_record, load_face_model, pair_score

    if settings.batch_size < 1:
        raise ConfigError(f"--batch-size {settings.batch_size}: must be >= 1")
    source = settings.benchmark_embeddings
    if source is None and settings.metrics is not None:
        from facetrust.formats import read_metrics

        source = read_metrics(settings.metrics).get("embeddings")
    if head_dir is None and uncertainty is None and source is not None:
        uncertainty = bench.model_uncertainty_of(source)  # the benchmark row's own estimate (emb_norm, scale, ...)
    model = load_face_model(model_path, head_dir=head_dir, uncertainty=uncertainty)
    _check_explain(model, settings.explain)
    point = None
    if settings.far is not None or settings.metrics is not None:
        if settings.far is None or settings.metrics is None:
            raise InputError("verify: --far and --metrics go together (the threshold of a metrics file at a FAR)")
        if settings.threshold is not None:
            raise InputError("verify: give --threshold or --far with --metrics, not both")
        point = bench.operating_point(settings.metrics, settings.far, settings.score)
    score_name = settings.score or (point.score if point else ("xcos" if model.xcos is not None else "cosine"))
    if (score_name == "xcos") != (model.xcos is not None):
        raise InputError(f"{model.path}: score {score_name!r} " + (
            "needs an xCos model" if score_name == "xcos" else "is not an xCos model's score (xcos)"))
    if settings.threshold is not None:
        point = bench.OperatingPoint(float(settings.threshold), None, None, None, score_name, True, None, None)
    flip = point.flip if point is not None else True
    if point is not None:
        print(f"operating point: {point.describe()}")
        for caveat in point.caveats:
            print(f"verify: note: {caveat}", file=sys.stderr)
    test_set = point.test_set if point is not None and point.test_set else "benchmark"
    spread, spread_missing = None, "no --metrics (its embeddings file gives the distribution)"
    if source is not None:
        spread, spread_missing = bench.benchmark_uncertainty(source, model.uncertainty_kind)

    if settings.on_bad_image not in ("fail", "skip"):
        raise ConfigError(f"--on-bad-image {settings.on_bad_image!r}: expected fail or skip")
    photo_options = {"aligned": settings.aligned, "no_face": settings.no_face, "min_score": settings.min_score}
    faces: dict[str, object] = {}
    bad: dict[str, str] = {}  # --on-bad-image skip: photograph -> why it was left out
    records = []
    with staged_directory(out_dir) as staging, tqdm(total=len(pairs), desc="verify", unit="pair",
                                                    disable=len(pairs) < 2) as progress:
        # (the bar is closed before an error is printed: the message gets a line of its own)
        for start in range(0, len(pairs), settings.batch_size):
            chunk = pairs[start : start + settings.batch_size]
            new = list(dict.fromkeys(p for pair in chunk for p in pair[:2] if p not in faces and p not in bad))
            if settings.on_bad_image == "skip":
                prepared = []
                for path in new:  # one at a time: a bad photograph costs only its own pairs
                    try:
                        prepared += prepare_files([path], model.input_size, **photo_options)
                    except InputError as error:
                        bad[path] = str(error)
                        notify(f"verify: --on-bad-image skip: {error}")
            else:
                try:
                    prepared = prepare_files(new, model.input_size, **photo_options)
                except InputError as error:  # name the pairs CSV line of the photograph
                    raise InputError(_at_pairs_line(chunk, error)) from None
            for face in prepared:
                faces[face.path] = face
                if face.note:
                    notify(face.note)
            for k, pair in enumerate(chunk):
                if pair[0] in bad or pair[1] in bad:
                    reason = bad.get(pair[0]) or bad[pair[1]]
                    records.append({"pair": start + k, "image1": {"path": pair[0]}, "image2": {"path": pair[1]},
                                    "skipped": reason, **({"label": pair[2]} if pair[2] is not None else {})})
                    tqdm.write(f"pair {start + k}: skipped ({reason})")
            kept = [k for k, pair in enumerate(chunk) if pair[0] not in bad and pair[1] not in bad]
            if not kept:
                progress.update(len(chunk))
                continue
            offsets, chunk = kept, [chunk[k] for k in kept]
            first = [faces[p[0]] for p in chunk]
            second = [faces[p[1]] for p in chunk]
            features, uncertainties = model.features([f.pixels for f in first + second], flip=flip)
            n = len(chunk)
            if model.xcos is not None:
                with torch.no_grad():
                    output = model.xcos(torch.stack([to_tensor(f.pixels) for f in first]),
                                        torch.stack([to_tensor(f.pixels) for f in second]))
                values, cosines = output.xcos.double().numpy(), output.grid_cosine.double().numpy()
            else:
                u1, u2 = (None, None) if uncertainties is None else (uncertainties[:n], uncertainties[n:])
                values, cosines = pair_score(score_name, features[:n], features[n:], u1, u2, model.uncertainty_kind)
            for k, (face1, face2) in enumerate(zip(first, second)):
                index = start + offsets[k]
                record = {"pair": index, "image1": face1.record(), "image2": face2.record(),
                          "score": {"name": score_name, "value": float(values[k])}, "cosine": float(cosines[k]),
                          "decision": _decision(point, float(values[k])), "uncertainty": None}
                if chunk[k][2] is not None:
                    record["label"] = chunk[k][2]
                if uncertainties is not None:
                    entry = {"kind": model.uncertainty_kind,
                             "face1": confidence_record(model.uncertainty_kind, float(uncertainties[k])),
                             "face2": confidence_record(model.uncertainty_kind, float(uncertainties[n + k]))}
                    if spread is not None:
                        entry["benchmark"] = {"embeddings": str(source), "test_set": test_set,
                                              "n_images": int(spread.size)}
                        for face in ("face1", "face2"):
                            face_label = "face 1" if face == "face1" else "face 2"
                            entry["benchmark"][face] = bench.placement(entry[face]["uncertainty"], spread, test_set,
                                                                       face_label)
                    else:
                        entry["benchmark_missing"] = spread_missing
                    record["uncertainty"] = entry
                centre = point.threshold if point is not None and point.threshold is not None else 0.0
                explanation = _explain(model, settings.explain, to_tensor(face1.pixels), to_tensor(face2.pixels),
                                       settings, centre)
                if explanation is not None:
                    record["explanation"] = {
                        "method": explanation["method"], "explains": "face 1 against face 2",
                        **{k: float(v) for k, v in explanation.items() if k in ("cosine", "completeness_gap", "xcos")}}
                    if "cosine" in explanation:  # maps explain the original image's embedding (no mirror)
                        record["explanation"]["cosine_of"] = "the original images (unflipped)"
                figure = f"pair_{index:04d}.png"
                plot_verification(face1, face2, record, explanation, spread, staging / figure)
                record["figure"] = figure
                records.append(record)
                tqdm.write(_line(index, record))  # stdout, above the progress bar
            progress.update(len(pairs[start : start + settings.batch_size]))
        if all("skipped" in record for record in records):
            raise InputError(f"verify: every pair was skipped ({len(records)}): a bad photograph in each "
                             f"(first: {records[0]['skipped']})")
        records.sort(key=lambda record: record["pair"])
        result = {"model": str(model_path), "input_size": list(model.input_size),
                  "settings": {"score": score_name, "flip": flip, "explain": settings.explain,
                               "aligned": settings.aligned, "no_face": settings.no_face,
                               "face_choice_min_score": settings.min_score,
                               "uncertainty_kind": model.uncertainty_kind,
                               "operating_point": None if point is None else point.describe(),
                               "operating_point_caveats": [] if point is None else list(point.caveats),
                               "on_bad_image": settings.on_bad_image},
                  "skipped_pairs": sum(1 for record in records if "skipped" in record),
                  "skipped_images": [{"path": path, "reason": reason} for path, reason in bad.items()],
                  "pairs": records}
        write_json_atomic(staging / "verify.json", result)
    return result
