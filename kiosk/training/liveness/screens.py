"""Synthetic screen replays built from NUAA live frames: what the texture cue does with a phone held up to the camera.

No recording of a real screen attack is in the data, so each live frame is
re-rendered as if shown on a phone held in front of the camera: the scene
around the face shrunk into a screen rectangle with a bezel, its gamut
reduced, a pixel grid that beats with the camera's (moire), a specular
glare, and the recapture's blur and resampling, over a dimmed, blurred copy
of the room. The face in the result is found and scored like any other
(Haar box, both context crops, the shipped file). This measures the screen
*effects* listed; a real phone's optics, reflections and refresh are not.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.liveness import TextureClassifier
from kiosk.training.liveness.data import Prepared

REPLAYS_PER_SUBJECT = 12
"""Live frames per subject turned into a replay (every subject, both sessions)."""
EFFECTS = ("bezel", "gamut", "moire", "glare", "recapture")


def render_replay(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frame`` as a phone screen held up to the camera (every effect of ``EFFECTS``)."""
    height, width = frame.shape[:2]
    screen_w = int(width * rng.uniform(0.45, 0.6))
    screen_h = int(screen_w * rng.uniform(1.3, 1.8))
    screen_h = min(screen_h, int(height * 0.8))
    content = frame[:, (width - int(screen_h * width / height * 0.75)) // 2:][:, :int(screen_h * width / height * 0.75)]
    content = cv2.resize(content, (screen_w, screen_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    gray = content.mean(axis=2, keepdims=True)
    content = gray + rng.uniform(0.6, 0.85) * (content - gray)  # reduced gamut
    content = content * rng.uniform(0.75, 0.95) + rng.uniform(15, 35)  # backlight lifts the blacks
    ys, xs = np.mgrid[0:screen_h, 0:screen_w].astype(np.float32)
    period, angle = rng.uniform(2.2, 3.5), rng.uniform(-0.3, 0.3)
    grid = 0.5 + 0.5 * np.cos(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    content *= (1 - rng.uniform(0.08, 0.18) * grid)[..., None]  # pixel grid beating with the camera's: moire
    gx, gy = rng.uniform(0, screen_w), rng.uniform(0, screen_h * 0.5)
    glare = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * (screen_w * rng.uniform(0.15, 0.3)) ** 2))
    content += rng.uniform(60, 120) * glare[..., None]
    room = cv2.GaussianBlur(frame, (0, 0), 3).astype(np.float32) * rng.uniform(0.5, 0.8)
    bezel = int(screen_w * rng.uniform(0.04, 0.08))
    x0 = (width - screen_w) // 2 + int(rng.uniform(-0.1, 0.1) * width)
    y0 = max(bezel, (height - screen_h) // 2 + int(rng.uniform(-0.05, 0.05) * height))
    x0 = int(np.clip(x0, bezel, width - screen_w - bezel))
    y0 = int(np.clip(y0, bezel, height - screen_h - bezel))
    shade = rng.choice([rng.uniform(10, 40), rng.uniform(200, 240)])  # a black or a bright bezel
    room[y0 - bezel:y0 + screen_h + bezel, x0 - bezel:x0 + screen_w + bezel] = shade
    room[y0:y0 + screen_h, x0:x0 + screen_w] = content
    out = np.clip(room, 0, 255).astype(np.uint8)
    small = cv2.resize(out, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_LINEAR)  # recapture: resampling and blur
    return cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), (0, 0), 0.8)


def screen_replays(prepared: Prepared, model_dirs: dict[str, Path], seed: int) -> dict:
    """Frame-level texture logits of synthetic replays of NUAA live frames, per model folder; APCER at 0.

    Every model scores the same replays (rendered once, ``seed``).
    """
    rng = np.random.default_rng(seed)
    finder = FaceFinder()
    classifiers = {name: TextureClassifier(folder) for name, folder in model_dirs.items()}
    logits: dict[str, list[float]] = {name: [] for name in model_dirs}
    subjects = []
    live_paths = prepared.paths[prepared.live & prepared.found]
    live_subjects = prepared.subject[prepared.live & prepared.found]
    for subject in sorted(set(live_subjects)):
        paths = live_paths[live_subjects == subject]
        for path in rng.permutation(paths)[:REPLAYS_PER_SUBJECT]:
            replay = render_replay(read_image(Path(path)), rng)
            face = finder.largest(replay)
            if face is None:
                continue
            for name, classifier in classifiers.items():
                logits[name].append(classifier.score(replay, face))
            subjects.append(subject)
    subjects = np.array(subjects)
    replays = int(sum(min(REPLAYS_PER_SUBJECT, int((live_subjects == s).sum())) for s in set(live_subjects)))
    return {name: _rates(np.array(values), subjects) | {"effects": list(EFFECTS), "replays": replays}
            for name, values in logits.items()}


def _rates(values: np.ndarray, subjects: np.ndarray) -> dict:
    found = len(values)
    return {"faces_found": found, "accepted_frames": int((values >= 0).sum()),
            "apcer_frames": float(np.mean(values >= 0)) if found else float("nan"),
            "worst_subject_apcer": max((float(np.mean(values[subjects == s] >= 0)) for s in set(subjects)), default=float("nan")),
            "median_logit": float(np.median(values)) if found else float("nan")}
