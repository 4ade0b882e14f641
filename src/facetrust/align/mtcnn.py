"""MTCNN face detection (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks") for the align stage: boxes, scores and five landmarks.

The cascade (P-Net proposals over an image pyramid, R-Net refinement, O-Net boxes + landmarks) is
run through the ``MTCNN`` class of the installed ``facenet-pytorch`` package (2.5.3), whose wheel
ships the converted original weights (``data/pnet.pt``, ``rnet.pt``, ``onet.pt``); nothing is
downloaded. Install it without its dependency resolution (``pip install --no-deps
facenet-pytorch==2.5.3``) so that it never touches the pinned torch.

Conventions of what the caller gets:
- coordinates are 0-based pixel coordinates (x, y) of the input image, pixel centres at integers
  (facenet-pytorch's port subtracts 1 from the MATLAB original's 1-based output), the convention
  :func:`facetrust.align.warp.align_face` expects;
- landmarks are ordered as the ArcFace template: left eye, right eye, nose tip, left mouth corner,
  right mouth corner, "left" meaning the image's left (the subject's right);
- the score is O-Net's face probability;
- CPU runs are deterministic (no sampling; torchvision's NMS is deterministic on CPU).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, NamedTuple

import numpy as np

from facetrust.errors import ConfigError, InputError

# Zhang et al. 2016 / facenet-pytorch defaults: smallest face searched (px), per-stage score
# thresholds (P-, R-, O-Net), pyramid scale step (≈ 1/√2 per level).
MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
# A face at least this confident counts as "the subject" candidate in loose crops.
CONFIDENT_SCORE = 0.9
# Same-sized images detected together (facenet-pytorch stacks them; the results equal one by one).
BATCH_SIZE = 32

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.5.3"


class DetectedFace(NamedTuple):
    """One detection: ``box`` (4,) float64 x1, y1, x2, y2; ``score`` in [0, 1]; ``landmarks`` (5, 2)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` intra-op torch threads, restoring the caller's setting after."""
    import torch

    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Check and normalise the input: H×W×3 uint8 RGB (H×W grey is replicated to three channels)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"MTCNN input must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # RGBA: the detector was trained on RGB, alpha carries no face
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"MTCNN input must be H×W×3 (or H×W grey), got shape {image.shape}")
    return np.ascontiguousarray(image)


class MTCNNDetector:
    """An MTCNN cascade with fixed settings; build once, call per image.

    ``threads`` sets torch's intra-op threads during each call (restored afterwards; ``None`` keeps
    the process setting). ``device`` is a torch device string; CPU is the reproducible default.
    """

    def __init__(self, *, min_face_size: int = MIN_FACE_SIZE, thresholds: tuple[float, float, float] = THRESHOLDS,
                 factor: float = PYRAMID_FACTOR, threads: int | None = 1, device: str = "cpu") -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise ConfigError(
                f"align.method=mtcnn needs the facenet-pytorch package ({INSTALL_HINT}): {error}"
            ) from None
        if min_face_size < 12:
            raise ConfigError(f"MTCNN min_face_size={min_face_size}: must be >= 12 (P-Net's window)")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"MTCNN thresholds={thresholds}: need three probabilities (P-, R-, O-Net)")
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"MTCNN factor={factor}: the pyramid step must lie in (0, 1)")
        self.min_face_size = int(min_face_size)
        self.threads = threads
        # select_largest=False: keep the cascade's own order; we sort by score ourselves below.
        self._mtcnn = MTCNN(min_face_size=self.min_face_size, thresholds=list(thresholds), factor=factor,
                            select_largest=False, keep_all=True, device=device).eval()

    def detect_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces in an H×W×3 uint8 RGB image, highest score first (ties: the cascade's order).

        An image smaller than ``min_face_size`` on its short side holds no searchable face and
        yields ``[]``, as does an image where no window passes the three thresholds.
        """
        return self.detect_faces_batch([image], batch_size=1)[0]

    def detect_faces_batch(self, images, batch_size: int = BATCH_SIZE) -> list[list[DetectedFace]]:
        """:meth:`detect_faces` of each image, run in batches of same-sized images (the cascade
        stacks a batch into one tensor).  Batches are formed in input order, so the same list of
        images always gives the same batches and the same detections."""
        import torch

        images = [_as_rgb_uint8(image) for image in images]
        results: list[list[DetectedFace]] = [[] for _ in images]
        by_shape: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            if min(image.shape[:2]) >= self.min_face_size:  # smaller: no searchable face
                by_shape.setdefault(image.shape, []).append(index)
        with _torch_threads(self.threads), torch.no_grad():
            for indices in by_shape.values():
                for start in range(0, len(indices), batch_size):
                    batch = indices[start : start + batch_size]
                    boxes, scores, points = self._mtcnn.detect(np.stack([images[i] for i in batch]), landmarks=True)
                    for i, b, s, p in zip(batch, boxes, scores, points):
                        results[i] = _faces(b, s, p)
        return results

    def detect_landmarks(self, image: np.ndarray, *,
                         min_score: float = CONFIDENT_SCORE) -> tuple[np.ndarray, float] | None:
        """The subject's five landmarks (5, 2) and score in a loose crop, or ``None`` without a face.

        IJB-style loose crops are cut around the annotated subject, so other people may appear
        towards the edges. Among the confident faces (score ≥ ``min_score``) the one whose box centre
        lies nearest the image centre is the subject; when no face is that confident, the
        highest-scoring detection is returned (its low score tells the caller).
        """
        chosen = choose_subject(self.detect_faces(image), np.asarray(image).shape, min_score)
        return None if chosen is None else (chosen[0].landmarks.copy(), chosen[0].score)


def _faces(boxes, scores, points) -> list[DetectedFace]:
    """One image's detections from facenet-pytorch's arrays, highest score first."""
    if boxes is None:
        return []
    # numpy 2: facenet-pytorch hands back object arrays; make them plain float64.
    boxes = np.asarray(boxes.astype(float), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores.astype(float), dtype=np.float64).reshape(-1)
    points = np.asarray(points.astype(float), dtype=np.float64).reshape(-1, 5, 2)
    order = np.argsort(-scores, kind="stable")
    return [DetectedFace(boxes[i].copy(), float(scores[i]), points[i].copy()) for i in order]


#: How :func:`choose_subject` picked a face (written per image by the align stage).
NEAREST_CENTRE, HIGHEST_SCORE = "nearest_centre", "highest_score"
FACE_CHOICE_POLICY = (f"{NEAREST_CENTRE}: among faces with score >= min_score, the one whose box centre is nearest "
                      f"the image centre; {HIGHEST_SCORE}: no face that confident, the best-scored detection")


def choose_subject(faces: list[DetectedFace], image_shape, min_score: float = CONFIDENT_SCORE
                   ) -> tuple[DetectedFace, str] | None:
    """The subject of a loose crop among ``faces`` (highest score first) and the rule that chose it
    (:data:`FACE_CHOICE_POLICY`), or None without a face."""
    if not faces:
        return None
    confident = [face for face in faces if face.score >= min_score]
    if not confident:
        return faces[0], HIGHEST_SCORE
    height, width = image_shape[:2]
    # Pixel-centre convention: the image centre is ((W-1)/2, (H-1)/2).
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    distances = [float(np.hypot(*((face.box[:2] + face.box[2:]) / 2.0 - centre))) for face in confident]
    return confident[int(np.argmin(distances))], NEAREST_CENTRE  # argmin keeps the higher score on ties


@functools.lru_cache(maxsize=4)
def default_detector(threads: int | None = 1, device: str = "cpu") -> MTCNNDetector:
    """A process-wide detector with the paper's settings (weights are loaded once per process)."""
    return MTCNNDetector(threads=threads, device=device)


def detect_faces(image: np.ndarray, *, threads: int | None = 1) -> list[DetectedFace]:
    """All faces in an H×W×3 uint8 RGB image as ``(box, score, landmarks)``, highest score first."""
    return default_detector(threads).detect_faces(image)


def detect_landmarks(image: np.ndarray, *, min_score: float = CONFIDENT_SCORE,
                     threads: int | None = 1) -> tuple[np.ndarray, float] | None:
    """``(landmarks (5, 2), score)`` of the subject of a loose crop, or ``None``; see
    :meth:`MTCNNDetector.detect_landmarks` for how the subject is chosen."""
    return default_detector(threads).detect_landmarks(image, min_score=min_score)
