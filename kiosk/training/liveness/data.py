"""NUAA frames, sessions and attempts, and the door's front end run over them once (the prepared cache)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import TrainingError
from kiosk.face import CROP_GEOMETRY, CropGeometry, FaceFinder, crop_face
from kiosk.images import read_image
from kiosk.liveness import MotionCue

INPUT_SIZE = 64
"""Side of the texture CNN's square RGB input (the shared crop, smaller than the encoder's)."""
CONTEXT = 1.25
"""The cached crop is this much larger than the model's, so augmentation can shift and zoom."""
CONTEXT_SIZE = round(INPUT_SIZE * CONTEXT)
ATTEMPT_FRAMES = 5
"""Frames per evaluation attempt (a session's leftover frames join its last attempt)."""
TEST_SUBJECTS = ("0003", "0006", "0009")
"""Held out from all training and threshold choice; the report is on these."""
INNER_FOLDS = (("0001",), ("0002",), ("0004",), ("0005",), ("0007",), ("0008",))
"""Validation folds over the training subjects, one subject each (fusion and thresholds are fitted on their scores)."""
DATA_TERMS = (
    "NUAA Photograph Imposter Database (X. Tan, Y. Li, J. Liu, L. Jiang, 'Face Liveness Detection from a Single "
    "Image with Sparse Low Rank Bilinear Discriminative Model', ECCV 2010), training split, every 3rd frame; "
    "research use"
)
SCREEN_REPLAYS = (
    "NUAA holds printed photos only: screen replays (a phone or tablet showing a photo or video), "
    "video of the enrolled person, masks and cut-out photos are not in the data, and nothing here is measured on them."
)


@dataclass(frozen=True)
class FrameRecord:
    """One NUAA frame: ``<live|spoof>/<subject>/<subject>_<glasses>_<pos>_<session>_<frame>.jpg``."""

    path: Path
    live: bool
    subject: str
    session: str
    frame: int


def scan_nuaa(root: Path) -> list[FrameRecord]:
    """Every frame under ``root/live`` and ``root/spoof``, grouped by session, in frame order."""
    records = []
    for label in ("live", "spoof"):
        for path in sorted((Path(root) / label).glob("*/*.jpg")):
            subject, glasses, pos, session, frame = path.stem.split("_")
            records.append(FrameRecord(path, label == "live", subject, f"{label}/{subject}/{glasses}_{pos}_{session}", int(frame)))
    if not records:
        raise TrainingError(f"no NUAA frames under {root}: expected live/<subject>/*.jpg and spoof/<subject>/*.jpg "
                            "(pass the NUAA training tree with --data)")
    return sorted(records, key=lambda r: (r.session, r.frame))


def sessions(records: list[FrameRecord]) -> dict[str, list[FrameRecord]]:
    """The records by session, each in the order given (frame order for :func:`scan_nuaa`'s)."""
    found: dict[str, list[FrameRecord]] = defaultdict(list)
    for record in records:
        found[record.session].append(record)
    return found


def split_attempts(records: list[FrameRecord]) -> list[list[FrameRecord]]:
    """Sessions cut into attempts of consecutive frames (see ``ATTEMPT_FRAMES``)."""
    attempts = []
    for frames in sessions(records).values():
        count = max(1, len(frames) // ATTEMPT_FRAMES)
        attempts.extend([list(chunk) for chunk in np.array_split(np.array(frames, dtype=object), count)])
    return attempts


def context_geometry() -> CropGeometry:
    """The cached crop: the shared crop's centre, ``CONTEXT`` times larger."""
    return CropGeometry(CROP_GEOMETRY.dx, CROP_GEOMETRY.dy, CROP_GEOMETRY.scale * CONTEXT)


def center_crop(context: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The model's crop at the centre of a context crop (what the door feeds it)."""
    scale = size * CONTEXT / context.shape[0]
    matrix = np.array([[scale, 0, size / 2 - scale * context.shape[1] / 2], [0, scale, size / 2 - scale * context.shape[0] / 2]])
    return cv2.warpAffine(context, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class Prepared:
    """Per-frame arrays: context crops, whether a face was found, labels, attempts, motion measurements."""

    crops: np.ndarray
    found: np.ndarray
    live: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    attempt: np.ndarray
    motion: np.ndarray
    paths: np.ndarray

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **asdict(self))

    @classmethod
    def load(cls, path: Path) -> Prepared:
        data = np.load(path)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def prepare(root: Path) -> Prepared:
    """Run the front end and the motion cue over every attempt of the NUAA tree at ``root``."""
    from tqdm import tqdm

    finder = FaceFinder()
    motion = MotionCue()
    columns: dict[str, list] = defaultdict(list)
    attempts = split_attempts(scan_nuaa(root))
    with tqdm(total=sum(map(len, attempts)), desc="prepare", unit="frame") as progress:
        for index, attempt in enumerate(attempts):
            motion.reset()
            for record in attempt:
                image = read_image(record.path)
                face = finder.largest(image)
                measured = None
                if face is None:
                    crop = np.zeros((CONTEXT_SIZE, CONTEXT_SIZE, 3), np.uint8)
                else:
                    crop = crop_face(image, face, context_geometry(), CONTEXT_SIZE)
                    measured = motion.update(image, face)
                for name, value in (("crops", crop), ("found", face is not None), ("live", record.live),
                                    ("subject", record.subject), ("session", record.session), ("attempt", index),
                                    ("motion", np.nan if measured is None else measured), ("paths", str(record.path))):
                    columns[name].append(value)
                progress.update()
    return Prepared(**{name: np.array(values) for name, values in columns.items()})


def load_or_prepare(root: Path, cache_file: Path) -> Prepared:
    """The prepared frames from ``cache_file`` when it exists, else :func:`prepare` them and save them there."""
    if cache_file.exists():
        print(f"using the prepared frames in {cache_file} (delete it to prepare again)")
        return Prepared.load(cache_file)
    prepared = prepare(root)
    prepared.save(cache_file)
    return prepared
