"""Turn image folders into a training cache: aligned context crops + teacher embeddings.

Each image goes through the door's own front end: the Haar face
(:class:`kiosk.face.FaceFinder`) and the door's landmark stage
(:class:`kiosk.landmarks.Landmarker`), so the student trains on the alignment
the door will give it, errors included. Around the aligned face a *context
crop* somewhat larger than the encoder crop is kept, so augmentation can
shift, scale and rotate without running out of pixels. The teacher (YuNet +
SFace) embeds the face aligned by YuNet's own landmarks; the student learns
to reproduce that embedding from the door's crop.

Images where Haar or the teacher finds no face are counted and reported,
never silently dropped.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.errors import ImageError
from kiosk.face import ENCODER_SIZE, FaceFinder, aligned_crop
from kiosk.images import read_image

CONTEXT = 1.25
"""Context crop side relative to the encoder crop."""
CONTEXT_SIZE = int(round(ENCODER_SIZE * CONTEXT))


@dataclass
class Cache:
    """Context crops [N, S, S, 3] uint8 RGB, teacher embeddings [N, 128], labels."""

    crops: np.ndarray
    teacher: np.ndarray
    labels: np.ndarray
    paths: list[str]
    misses: Counter = field(default_factory=Counter)

    def save(self, path: Path) -> None:
        np.savez(path, crops=self.crops, teacher=self.teacher, labels=self.labels, paths=np.array(self.paths), misses=np.array(sorted(self.misses.items()), dtype=object))

    @classmethod
    def load(cls, path: Path) -> Cache:
        data = np.load(path, allow_pickle=True)
        misses = Counter({str(k): int(v) for k, v in data["misses"]})
        return cls(data["crops"], data["teacher"], data["labels"], [str(p) for p in data["paths"]], misses)


_worker: dict = {}


def _init_worker(with_teacher: bool) -> None:
    import cv2

    cv2.setNumThreads(1)
    from kiosk.landmarks import Landmarker

    _worker["finder"] = FaceFinder()
    _worker["landmarker"] = Landmarker()
    if with_teacher:
        from kiosk.training.teacher import Teacher

        _worker["teacher"] = Teacher()


def _process(path: str) -> tuple[str, np.ndarray | None, np.ndarray | None, str]:
    """(path, context crop, teacher embedding, status)."""
    try:
        image = read_image(path)
    except ImageError:
        return path, None, None, "unreadable"
    face = _worker["finder"].largest(image)
    if face is None:
        return path, None, None, "no face (haar)"
    crop = aligned_crop(image, _worker["landmarker"].points(image, face), CONTEXT_SIZE, CONTEXT)
    teacher = _worker.get("teacher")
    if teacher is None:
        return path, crop, None, "ok"
    center = np.array(face.center)
    for candidate in teacher.detect(image):
        if np.linalg.norm(candidate.landmarks.mean(0) - center) < face.w / 2:
            return path, crop, teacher.embed(image, candidate), "ok"
    return path, None, None, "no face (teacher)"


def build_cache(images: list[tuple[Path, int]], workers: int = 2, with_teacher: bool = True, desc: str = "preparing") -> Cache:
    """Run the front end (and teacher) over ``(path, label)`` pairs."""
    labels_of = {str(p): label for p, label in images}
    crops, teachers, labels, paths = [], [], [], []
    misses: Counter = Counter()
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (with_teacher,)) as pool:
        for path, crop, embedding, status in tqdm(
            pool.imap(_process, list(labels_of), chunksize=16), total=len(labels_of), desc=desc, unit="img"
        ):
            if status != "ok":
                misses[status] += 1
                continue
            crops.append(crop)
            teachers.append(embedding if embedding is not None else np.zeros(128, np.float32))
            labels.append(labels_of[path])
            paths.append(path)
    if not crops:
        raise RuntimeError(f"no usable faces among {len(images)} images ({dict(misses)})")
    return Cache(np.stack(crops), np.stack(teachers).astype(np.float32), np.array(labels, np.int32), paths, misses)


def center_crops(context: np.ndarray) -> np.ndarray:
    """The encoder crops at the centre of context crops (no augmentation)."""
    return np.stack([_center(crop) for crop in context])


def _center(crop: np.ndarray) -> np.ndarray:
    import cv2

    side = crop.shape[0] / CONTEXT
    scale = ENCODER_SIZE / side
    matrix = np.array([[scale, 0, ENCODER_SIZE / 2 - scale * crop.shape[1] / 2], [0, scale, ENCODER_SIZE / 2 - scale * crop.shape[0] / 2]])
    return cv2.warpAffine(crop, matrix, (ENCODER_SIZE, ENCODER_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
