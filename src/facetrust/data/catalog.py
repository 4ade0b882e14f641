"""The real data sets users point the pipeline at: file names, layout, licence and origin.

``facetrust fetch NAME --out DIR`` reads this catalog. None of these sets has a stable, public,
licence-free download URL: the InsightFace training packs are shared through cloud drives that
change, and IJB-B/C need a licence from NIST. So an entry carries no URL unless one is known to
be stable; ``fetch`` then prints :meth:`DatasetEntry.instructions` (where to get the set, where to
put it, what layout is expected, how to verify it) and exits 2, and ``--url URL [--sha256 HEX]``
downloads from any mirror the user has access to.

Layout facts (docs/FORMATS.md "RecordIO"): an InsightFace training pack unzips to one directory
holding ``train.rec``, ``train.idx``, ``property`` (``num_classes,h,w``) and the ``.bin``
verification sets; the InsightFace IJB test package holds ``IJBB/`` and ``IJBC/``, each with
``loose_crop/`` and ``meta/<name>_{face_tid_mid,name_5pts_score,template_pair_label}.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facetrust.errors import InputError

_INSIGHTFACE_ZOO = (
    "the InsightFace dataset zoo: github.com/deepinsight/insightface, page recognition/_datasets_ "
    "(cloud-drive links that change over time)"
)
_INSIGHTFACE_TERMS = (
    "InsightFace distributes the training data for non-commercial research only; by downloading "
    "you accept the terms of the original data set"
)
_IJB_SOURCE = (
    "the InsightFace IJB test package, linked from github.com/deepinsight/insightface, page "
    "recognition/_evaluation_/ijb (IJBB/ and IJBC/, each with loose_crop/ and meta/), after "
    "obtaining the IARPA Janus Benchmark licence from NIST"
)
_IJB_TERMS = "NIST IJB licence agreement required; do not redistribute"
_TRAINING_PACK_DIRS = ("faces_emore", "faces_webface_112x112", "ms1m-retinaface-t1")


@dataclass(frozen=True)
class DatasetEntry:
    """One known data set.

    ``directories`` are the candidate locations of the set's directory relative to the ``--out``
    directory ("" = the out directory itself), in the order they are searched; ``files`` must all
    exist (relative to that directory) for the layout to count as present.
    """

    name: str
    title: str
    kind: str  # "recordio" (training set), "bin" (pair set), "ijb" (IJB-style test set)
    description: str
    source: str
    licence: str
    files: tuple[str, ...]
    directories: tuple[str, ...]
    archive: str | None = None  # file name the source distributes (None: comes inside another)
    comes_with: tuple[str, ...] = ()  # catalog names whose archive contains this set
    urls: tuple[str, ...] = ()  # stable public URLs; none are known for these sets
    sha256: str | None = None  # digest of ``archive`` when one is published
    params_key: str = ""  # where the directory or file goes in params.yaml

    def locate(self, out_dir: str | Path) -> Path | None:
        """The directory under ``out_dir`` that holds every required file, or None."""
        out_dir = Path(out_dir)
        for relative in self.directories:
            candidate = out_dir / relative if relative else out_dir
            if all((candidate / name).exists() for name in self.files):
                return candidate
        return None

    def missing(self, out_dir: str | Path) -> list[str]:
        """Required files missing under the first candidate directory (for error messages)."""
        out_dir = Path(out_dir)
        relative = self.directories[0]
        base = out_dir / relative if relative else out_dir
        return [str(base / name) for name in self.files if not (base / name).exists()]

    def params_path(self, set_dir: Path) -> str:
        """The value to put under :attr:`params_key`: the directory, or the file for a pair set."""
        return str(set_dir / self.files[0]) if self.kind == "bin" else str(set_dir)

    def instructions(self, out_dir: str | Path) -> str:
        """Step-by-step manual download instructions for a set ``fetch`` cannot download itself."""
        out_dir = Path(out_dir)
        target = out_dir / self.directories[0] if self.directories[0] else out_dir
        if self.archive:
            get = f"download {self.archive} from {self.source}"
            put = f"extract it into {out_dir} so that these files exist:"
        else:
            packs = ", ".join(self.comes_with)
            get = f"it ships inside the training-set archives ({packs}); {self.source}"
            put = f"extract one of them into {out_dir} (or copy the file) so that this exists:"
        layout = "\n".join(f"       {target / name}" for name in self.files)
        mirror = f"facetrust fetch {self.name} --out {out_dir} --url URL [--sha256 HEX]"
        return "\n".join([
            f"{self.title} ({self.name}) has no stable public download URL; fetch it by hand.",
            f"  {self.description}",
            f"  Licence: {self.licence}.",
            f"  1. Get it: {get}.",
            f"  2. Put it: {put}",
            layout,
            f"  3. Verify: rerun `facetrust fetch {self.name} --out {out_dir}` (checks the layout, exit 0),",
            f"     then `facetrust data inspect {self.params_path(target)}`.",
            f"  4. Use it: set {self.params_key}: {self.params_path(target)} in your preset (config/*.yaml).",
            f"  A mirror you have access to: {mirror}",
        ])


def _training_pack(name: str, title: str, archive: str, directory: str, description: str,
                   bins: tuple[str, ...]) -> DatasetEntry:
    return DatasetEntry(
        name=name, title=title, kind="recordio", description=description,
        source=_INSIGHTFACE_ZOO, licence=_INSIGHTFACE_TERMS,
        files=("train.rec", "train.idx", "property", *bins), directories=(directory, ""),
        archive=archive, params_key="datasets.train",
    )


def _pair_set(name: str, title: str, description: str) -> DatasetEntry:
    return DatasetEntry(
        name=name, title=title, kind="bin", description=description,
        source=f"see `facetrust fetch --list` for the packs; {_INSIGHTFACE_ZOO}",
        licence=_INSIGHTFACE_TERMS + "; the original set's own terms also apply",
        files=(f"{name}.bin",), directories=(*_TRAINING_PACK_DIRS, ""),
        comes_with=("casia_webface", "ms1mv2", "ms1mv3"), params_key=f"datasets.pairs.{name}",
    )


def _ijb_set(name: str, title: str, directory: str, description: str) -> DatasetEntry:
    meta = tuple(f"meta/{name}_{part}.txt" for part in ("face_tid_mid", "name_5pts_score", "template_pair_label"))
    return DatasetEntry(
        name=name, title=title, kind="ijb", description=description,
        source=_IJB_SOURCE, licence=_IJB_TERMS,
        files=("loose_crop", *meta), directories=(f"IJB_release/{directory}", directory, ""),
        archive="IJB_release.tar", params_key=f"datasets.ijb.{name}",
    )


_ENTRIES = (
    _training_pack(
        "casia_webface", "CASIA-WebFace", "faces_webface_112x112.zip", "faces_webface_112x112",
        "10,572 identities, ~0.49M images, 112x112 ArcFace-aligned, MXNet RecordIO; SphereFace/xCos training set",
        ("lfw.bin", "cfp_fp.bin", "agedb_30.bin"),
    ),
    _training_pack(
        "ms1mv2", "MS1MV2 (MS1M-ArcFace, faces_emore)", "faces_emore.zip", "faces_emore",
        "85,742 identities, 5,822,653 images, 112x112 ArcFace-aligned, MXNet RecordIO",
        ("lfw.bin", "cfp_fp.bin", "agedb_30.bin"),
    ),
    _training_pack(
        "ms1mv3", "MS1MV3 (MS1M-RetinaFace)", "ms1m-retinaface-t1.zip", "ms1m-retinaface-t1",
        "93,431 identities, ~5.18M images, 112x112 RetinaFace-aligned, MXNet RecordIO",
        ("lfw.bin", "cfp_fp.bin", "agedb_30.bin"),
    ),
    _pair_set("lfw", "LFW (InsightFace .bin)", "6,000 pairs in 10 folds, 112x112 aligned JPEGs"),
    _pair_set("cfp_fp", "CFP-FP (InsightFace .bin)", "7,000 frontal-profile pairs in 10 folds"),
    _pair_set("agedb_30", "AgeDB-30 (InsightFace .bin)", "6,000 pairs with a 30-year age gap in 10 folds"),
    _ijb_set("ijbb", "IJB-B", "IJBB", "227,630 loose crops, 12,115 templates, 8,010,270 1:1 pairs (10,270 genuine)"),
    _ijb_set("ijbc", "IJB-C", "IJBC", "469,375 loose crops, 23,124 templates, 15,658,489 1:1 pairs (19,557 genuine)"),
)

CATALOG: dict[str, DatasetEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> DatasetEntry:
    """The catalog entry called ``name`` (case-insensitive, '-' = '_'); InputError lists the known names."""
    key = name.strip().lower().replace("-", "_")
    if key not in CATALOG:
        raise InputError(f"unknown data set {name!r}; known: {', '.join(CATALOG)} (or pass a URL)")
    return CATALOG[key]


def catalog_table() -> str:
    """A human-readable listing of the catalog (``facetrust fetch --list``)."""
    lines = []
    for entry in CATALOG.values():
        where = entry.archive or f"inside {', '.join(entry.comes_with)}"
        lines.append(f"{entry.name:14s} {entry.title}: {entry.description}. File: {where}. Licence: {entry.licence}.")
    return "\n".join(lines)
