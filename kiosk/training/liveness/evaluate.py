"""The held-out subjects through the runtime class (:class:`kiosk.liveness.LivenessChecker` on the int8 file)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.face import Face, FaceFinder
from kiosk.images import read_image
from kiosk.liveness import AttemptScores, Liveness, LivenessChecker
from kiosk.training.liveness.attempts import AttemptTable
from kiosk.training.liveness.data import ATTEMPT_FRAMES, TEST_SUBJECTS, FrameRecord, scan_nuaa, sessions

DOOR_VERDICT_EVERY = 3
"""The decision's k: a grant (and so a liveness verdict) is possible every k frames with a face."""
COST_REPEATS = 5
"""Times the cost frames are played through each model (the best repeat counts: other jobs share the CPU)."""
COST_FRAMES = 150
"""Held-out frames with a face the cost is measured on (decoded once, kept in memory)."""


@dataclass
class Evaluation:
    """The held-out subjects through the runtime class: attempt scores, frame logits, the door's view, timing (one pass)."""

    table: AttemptTable
    door: dict
    frame_logits: np.ndarray
    frame_live: np.ndarray
    timing: dict


def evaluate(root: Path, model_dir: Path) -> Evaluation:
    """Score every held-out attempt with the shipped int8 model through :class:`LivenessChecker`.

    Attempts are those of :func:`kiosk.training.liveness.data.split_attempts`.
    For the door's view, each attempt start is also followed to the end of its
    session with a verdict every ``DOOR_VERDICT_EVERY`` frames (when the
    decision could grant).
    """
    both = LivenessChecker("both", model_dir)
    texture_only = LivenessChecker("texture", model_dir)
    columns: dict[str, list] = defaultdict(list)
    first_pass: dict[bool, list[int | None]] = {True: [], False: []}
    frame_logits, frame_live, times = [], [], {"texture": [], "both": []}
    for records, frames in _held_out_sessions(root):
        texture_only.reset()
        both.reset()
        for image, face in frames:
            if face is not None:
                frame_logits.append(texture_only.texture.score(image, face))
                frame_live.append(records[0].live)
                for mode, checker in (("texture", texture_only), ("both", both)):
                    started = time.perf_counter()
                    checker.check(image, face)
                    times[mode].append(1000 * (time.perf_counter() - started))
        chunks = np.array_split(np.arange(len(records)), max(1, len(records) // ATTEMPT_FRAMES))
        for chunk in chunks:
            history = _scores_per_face(both, frames[chunk[0]:])
            faces = sum(face is not None for _, face in frames[chunk[0]:chunk[-1] + 1])
            if faces:
                scores, _ = history[faces - 1]
                columns["live"].append(records[0].live)
                columns["subject"].append(records[0].subject)
                columns["texture"].append(scores.texture)
                columns["movements"].append(scores.movements)
            verdicts = [v is Liveness.LIVE for _, v in history[DOOR_VERDICT_EVERY - 1::DOOR_VERDICT_EVERY]]
            first_pass[records[0].live].append(next((i + 1 for i, ok in enumerate(verdicts) if ok), None))
    table = AttemptTable(**{name: np.array(values) for name, values in columns.items()})
    door = {
        "live_starts": len(first_pass[True]),
        "live_pass_first_verdict": float(np.mean([p == 1 for p in first_pass[True]])),
        "live_pass_by_second_verdict": float(np.mean([p is not None and p <= 2 for p in first_pass[True]])),
        "live_never_pass_in_session": float(np.mean([p is None for p in first_pass[True]])),
        "spoof_starts": len(first_pass[False]),
        "spoof_pass_first_verdict": float(np.mean([p == 1 for p in first_pass[False]])),
        "spoof_pass_within_5_verdicts": float(np.mean([p is not None and p <= 5 for p in first_pass[False]])),
    }
    timing = {mode: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "calls": len(v)}
              for mode, v in times.items()}
    return Evaluation(table, door, np.array(frame_logits), np.array(frame_live), timing)


def measure_cost(root: Path, model_dirs: dict[str, Path], repeats: int = COST_REPEATS) -> dict:
    """The whole check per face (after detection) in modes texture and both, one thread, for each model folder.

    ``COST_FRAMES`` held-out frames, played in session order through a
    checker of each mode and model in turn, ``repeats`` times; per mode and
    model the median and p90 of each repeat, and the best repeat's (the
    lowest median: the machine is shared, so slower repeats measure the other jobs).
    """
    frames = [(image, face) for _, session in _held_out_sessions(root) for image, face in session if face is not None]
    frames = frames[:COST_FRAMES]
    checkers = {(name, mode): LivenessChecker(mode, folder) for name, folder in model_dirs.items() for mode in ("texture", "both")}
    runs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for _ in range(repeats):
        for key, checker in checkers.items():
            checker.reset()
            times = []
            for image, face in frames:
                started = time.perf_counter()
                checker.check(image, face)
                times.append(1000 * (time.perf_counter() - started))
            runs[key].append((float(np.median(times)), float(np.percentile(times, 90))))
    result: dict = defaultdict(dict)
    for (name, mode), values in runs.items():
        best = min(values)
        result[name][mode] = {"median_ms": best[0], "p90_ms": best[1], "repeats": [list(v) for v in values],
                              "calls": len(frames)}
    return dict(result)


def _held_out_sessions(root: Path) -> Iterator[tuple[list[FrameRecord], list[tuple[np.ndarray, Face | None]]]]:
    """Each held-out session with its decoded frames and detected faces."""
    finder = FaceFinder()
    held_out = [record for record in scan_nuaa(root) if record.subject in TEST_SUBJECTS]
    for records in sessions(held_out).values():
        frames = []
        for record in records:
            image = read_image(record.path)
            frames.append((image, finder.largest(image)))
        yield records, frames


def _scores_per_face(checker: LivenessChecker,
                     frames: list[tuple[np.ndarray, Face | None]]) -> list[tuple[AttemptScores, Liveness]]:
    """The checker's scores and verdict after each frame with a face (frames without one are skipped)."""
    checker.reset()
    history = []
    for image, face in frames:
        if face is not None:
            verdict = checker.check(image, face)
            history.append((checker.scores(), verdict))
    return history
