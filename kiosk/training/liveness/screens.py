"""Synthetic attacks: screen replays (a phone held up to the camera) and prints held at any distance.

No recording of a real screen attack is in the data, and NUAA's prints are
all held close, so live photos are re-rendered as attacks. A replay shows
the frame on a phone held in front of the camera: the scene
around the face shrunk into a screen rectangle with a bezel, its gamut
reduced, a pixel grid that beats with the camera's (moire), a specular
glare, and the recapture's blur and resampling, over a dimmed, blurred copy
of the room. A print (:func:`render_print`) puts the photo on paper held up
at any distance. The face in the result is found and scored like any other
(Haar box, both context crops, the shipped file). This measures the
*effects* listed; a real phone's optics, reflections and refresh, and real
paper and ink, are not.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.liveness import TextureClassifier
from kiosk.training.liveness.data import TEST_SUBJECTS, Prepared

REPLAYS_PER_SUBJECT = 36
"""Live frames per subject turned into a replay and a print (the subjects of ``TEST_SUBJECTS``, both sessions: the
students' print pool never holds their frames)."""
EFFECTS = ("bezel", "gamut", "moire", "glare", "recapture")
PRINT_EFFECTS = ("ink range", "paper tint", "halftone or grain", "paper margin", "distance", "tilt", "uneven light",
                 "recapture")


def render_print(photo: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``photo`` printed on paper and held up in front of ``room`` at a random distance (every effect of ``PRINT_EFFECTS``).

    The sheet (ink never black, paper never white, a tint, a halftone screen
    or paper grain, often a white margin) fills 30-95% of the frame's width,
    tilted a little, under light that falls off across it; the room around
    it is another photo, blurred. A far sheet shows its edges and the room,
    which a live face at that distance never has.
    """
    height, width = photo.shape[:2]
    sheet = photo.astype(np.float32)
    black, white = rng.uniform(20, 60), rng.uniform(185, 235)
    sheet = black + sheet * (white - black) / 255.0  # ink on paper: the dynamic range of a print
    sheet *= np.array([rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.0), 1.0], np.float32)  # BGR: a warm paper tint
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.uniform() < 0.5:
        period, angle = rng.uniform(2.0, 4.0), rng.uniform(0, np.pi)
        screen = 0.5 + 0.5 * np.cos(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
        sheet *= (1 - rng.uniform(0.05, 0.15) * screen)[..., None]  # the printer's halftone screen
    else:
        grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 0.8)
        sheet += rng.uniform(3, 8) * grain[..., None]  # paper grain
    margin = int(width * rng.uniform(0.03, 0.1)) if rng.uniform() < 0.6 else 0
    sheet = cv2.copyMakeBorder(sheet, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=(white, white, white))
    sheet_h, sheet_w = sheet.shape[:2]
    scale = rng.uniform(0.3, 0.95) * width / sheet_w
    out_w, out_h = sheet_w * scale, sheet_h * scale
    corners = np.float32([[0, 0], [sheet_w, 0], [sheet_w, sheet_h], [0, sheet_h]])
    cx, cy = width / 2 + rng.uniform(-0.15, 0.15) * width, height / 2 + rng.uniform(-0.1, 0.1) * height
    angle = np.deg2rad(rng.uniform(-8, 8))
    target = []
    for x, y in ((-out_w / 2, -out_h / 2), (out_w / 2, -out_h / 2), (out_w / 2, out_h / 2), (-out_w / 2, out_h / 2)):
        squeeze = 1 + rng.uniform(-0.04, 0.04)  # the sheet tilted towards or away from the camera
        target.append([cx + squeeze * (x * np.cos(angle) - y * np.sin(angle)), cy + squeeze * (x * np.sin(angle) + y * np.cos(angle))])
    warp = cv2.getPerspectiveTransform(corners, np.float32(target))
    warped = cv2.warpPerspective(sheet, warp, (width, height), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((sheet_h, sheet_w), np.float32), warp, (width, height))[..., None]
    light = 1 + rng.uniform(-0.3, 0.3) * ((xs - cx) / width) + rng.uniform(-0.2, 0.2) * ((ys - cy) / height)
    background = cv2.resize(room, (width, height)).astype(np.float32)
    background = cv2.GaussianBlur(background, (0, 0), rng.uniform(0.5, 3.0)) * rng.uniform(0.6, 1.1)
    out = np.clip(mask * warped * light[..., None] + (1 - mask) * background, 0, 255).astype(np.uint8)
    factor = rng.uniform(0.6, 0.9)
    small = cv2.resize(out, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)  # recapture: resampling and blur
    return cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), (0, 0), rng.uniform(0.3, 0.9))


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


def synthetic_attacks(prepared: Prepared, model_dirs: dict[str, Path], seed: int) -> dict:
    """Frame-level texture logits of synthetic replays and prints of NUAA live frames, per model folder; APCER at 0.

    Up to ``REPLAYS_PER_SUBJECT`` live frames per subject are rendered once
    as a replay (:func:`render_replay`) and once as a print held up in front
    of another subject's frame (:func:`render_print`); every model scores the
    same images. A face smaller than the door judges (``liveness.min_face_fraction``
    of the frame's shorter side) is not an attempt there, so it is not scored.
    Returns ``{"replay": {model: rates}, "print": {model: rates}}``.
    """
    from kiosk.config import LivenessConfig

    min_face_fraction = LivenessConfig().min_face_fraction
    rng = np.random.default_rng(seed)
    finder = FaceFinder()
    classifiers = {name: TextureClassifier(folder) for name, folder in model_dirs.items()}
    kinds = {"replay": EFFECTS, "print": PRINT_EFFECTS}
    logits: dict[str, dict[str, list[float]]] = {kind: {name: [] for name in model_dirs} for kind in kinds}
    subjects: dict[str, list[str]] = {kind: [] for kind in kinds}
    live_paths = prepared.paths[prepared.live & prepared.found]
    live_subjects = prepared.subject[prepared.live & prepared.found]
    for subject in TEST_SUBJECTS:
        paths = live_paths[live_subjects == subject]
        others = live_paths[live_subjects != subject]
        for path in rng.permutation(paths)[:REPLAYS_PER_SUBJECT]:
            frame = read_image(Path(path))
            rendered = {"replay": render_replay(frame, rng),
                        "print": render_print(frame, read_image(Path(others[int(rng.integers(len(others)))])), rng)}
            for kind, image in rendered.items():
                face = finder.largest(image)
                if face is None or face.h < min_face_fraction * min(image.shape[:2]):
                    continue
                for name, classifier in classifiers.items():
                    logits[kind][name].append(classifier.score(image, face))
                subjects[kind].append(subject)
    rendered_count = int(sum(min(REPLAYS_PER_SUBJECT, int((live_subjects == s).sum())) for s in TEST_SUBJECTS))
    return {kind: {name: _rates(np.array(values), np.array(subjects[kind])) | {"effects": list(kinds[kind]),
                                                                                "rendered": rendered_count}
                   for name, values in logits[kind].items()} for kind in kinds}


def _rates(values: np.ndarray, subjects: np.ndarray) -> dict:
    found = len(values)
    return {"faces_found": found, "accepted_frames": int((values >= 0).sum()),
            "apcer_frames": float(np.mean(values >= 0)) if found else float("nan"),
            "worst_subject_apcer": max((float(np.mean(values[subjects == s] >= 0)) for s in set(subjects)), default=float("nan")),
            "median_logit": float(np.median(values)) if found else float("nan"),
            "p99_logit": float(np.percentile(values, 99)) if found else float("nan")}
