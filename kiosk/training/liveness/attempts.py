"""Per-attempt scores of the prepared NUAA frames: the mean texture logit and how often the face was seen to move."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from kiosk.training.liveness.data import Prepared

MIN_MOVEMENTS = 2
"""Movements (:class:`kiosk.liveness.MotionCue` measurements) an attempt needs before mode ``both`` gives its verdict:
one could be a single jolt of the camera or of a photo on a stand."""


@dataclass
class AttemptTable:
    """Per-attempt scores (one row per attempt with at least one face)."""

    live: np.ndarray
    subject: np.ndarray
    texture: np.ndarray
    movements: np.ndarray

    @property
    def moved(self) -> np.ndarray:
        """Attempts in which mode ``both`` saw enough movement to give a verdict (the others wait at the door)."""
        return self.movements >= MIN_MOVEMENTS


def attempt_table(prepared: Prepared, logits: np.ndarray, rows: np.ndarray) -> AttemptTable:
    """Attempt scores from per-frame logits (mean over frames with a face) and movements (frames with a measurement)."""
    columns: dict[str, list] = defaultdict(list)
    for attempt in np.unique(prepared.attempt[rows]):
        frames = rows[(prepared.attempt[rows] == attempt) & prepared.found[rows]]
        if len(frames) == 0:
            continue
        columns["live"].append(bool(prepared.live[frames[0]]))
        columns["subject"].append(prepared.subject[frames[0]])
        columns["texture"].append(float(np.mean(logits[frames])))
        columns["movements"].append(int(np.isfinite(prepared.motion[frames]).sum()))
    return AttemptTable(**{name: np.array(values) for name, values in columns.items()})
