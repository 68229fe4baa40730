"""NUAA frames, sessions and attempts, and the door's front end run over them once (the prepared cache)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from kiosk.errors import TrainingError
from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.liveness import MotionCue, context_crops

ATTEMPT_FRAMES = 5
"""Frames per evaluation attempt (a session's leftover frames join its last attempt)."""
TEST_SUBJECTS = ("0003", "0006", "0009")
"""The subjects whose sessions are played through the runtime class at the door's rules (evaluate.py)."""
CAPTURE_SESSIONS = ("01", "02")
"""NUAA's two capture sessions (days, rooms, light): the 4th field of a file name."""
DATA_TERMS = (
    "NUAA Photograph Imposter Database (X. Tan, Y. Li, J. Liu, L. Jiang, 'Face Liveness Detection from a Single "
    "Image with Sparse Low Rank Bilinear Discriminative Model', ECCV 2010), training split, every 3rd frame; "
    "research use"
)
SCREEN_REPLAYS = (
    "NUAA holds printed photos only: real phone or tablet replays, masks and cut-out photos are not in the data; "
    "screens are measured only on synthetic replays built from NUAA live frames (see the report)."
)


@dataclass(frozen=True)
class FrameRecord:
    """One NUAA frame: ``<live|spoof>/<subject>/<subject>_<glasses>_<pos>_<session>_<frame>.jpg``."""

    path: Path
    live: bool
    subject: str
    session: str
    frame: int

    @property
    def capture_session(self) -> str:
        """NUAA's capture session, "01" or "02" (the 4th field of the file name)."""
        return self.path.stem.split("_")[3]


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


class ArrayRecord:
    """A dataclass of NumPy arrays cached as one compressed ``.npz`` (prepared crops are slow to make)."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **asdict(self))

    @classmethod
    def load(cls, path: Path) -> Self:
        data = np.load(path)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    @classmethod
    def cached(cls, path: Path, make: Callable[[], Self], what: str) -> Self:
        """The record saved at ``path`` when it exists, else ``make()`` it and save it there (``what``: for the message)."""
        if path.exists():
            print(f"using the prepared {what} in {path} (delete it to prepare again)", flush=True)
            return cls.load(path)
        record = make()
        record.save(path)
        return record


@dataclass
class Prepared(ArrayRecord):
    """Per-frame arrays: both networks' context crops, whether a face was found, labels, attempts, movements."""

    crops: np.ndarray  # [N, networks, 80, 80, 3] uint8 BGR
    found: np.ndarray
    live: np.ndarray
    subject: np.ndarray
    capture_session: np.ndarray
    attempt: np.ndarray
    motion: np.ndarray  # the movement the motion cue measured at this frame, in face widths (nan: none)
    paths: np.ndarray



def prepare(root: Path) -> Prepared:
    """Run the door's front end (Haar face, the two context crops) and the motion cue over every NUAA attempt."""
    from tqdm import tqdm

    from kiosk.training.liveness.minifasnet import INPUT_SIZE, WORK_WIDTH, context_crop_settings

    crops = context_crop_settings()
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
                    pair = np.zeros((len(crops), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
                else:
                    pair = np.stack(context_crops(image, face, crops, WORK_WIDTH, INPUT_SIZE))
                    measured = motion.update(image, face)
                for name, value in (("crops", pair), ("found", face is not None), ("live", record.live),
                                    ("subject", record.subject), ("capture_session", record.capture_session),
                                    ("attempt", index), ("motion", np.nan if measured is None else measured),
                                    ("paths", str(record.path))):
                    columns[name].append(value)
                progress.update()
    return Prepared(**{name: np.array(values) for name, values in columns.items()})
