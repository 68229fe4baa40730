"""Liveness: is the face at the door a live person rather than a photo?

The door asks a :class:`LivenessCheck` once per frame of an attempt (one face
track, see :mod:`kiosk.decision`) and calls ``reset()`` whenever an attempt
starts or restarts, so the verdict comes only from the frames of the face
that is voting for the unlock, and only from those inside the decision
window (``window_seconds``). :func:`make_liveness` builds the check the
configuration names:

- ``"off"``: :class:`NoLivenessCheck`, which answers None ("not configured");
  the decision proceeds and says so in the granted event's log line.
- ``"texture"``: :class:`LivenessChecker` with the texture cue only: two
  CNNs (``kiosk/models/liveness.tflite``: int8 students of MiniFASNet,
  Apache-2.0, see ``kiosk/models/README.md``) score context crops 2.7 and 4.0 times the face
  box (:func:`context_box`: the paper edge, a bezel, the hand are much of
  what they look at); a frame's score is the logit of their mean "real"
  probability, the attempt's the mean of its frames'.
- ``"both"``: the texture verdict, given only once the face has been seen
  to move (:class:`MotionCue`). Motion is evidence of presence, never of
  life: it cannot raise or lower the texture score, because a replayed
  video moves like a live face (a bonus for live-looking motion let the
  red team's screen replay, 11f, and a far-away print, 11c, through) and a
  live face that sits still can move as rigidly as a photo (a planar-motion
  veto refused 5.4% of live attempts from an unseen capture session).

**Verdict timing.** Every call returns a :class:`~kiosk.decision.Liveness`
verdict for the attempt so far: SPOOF as soon as the mean texture score of
the attempt's frames is below the threshold, else LIVE (``"texture"``) or,
in ``"both"``, PENDING until the motion cue has seen the face move by
``MotionSettings.min_shift`` of its width ``min_movements`` times inside the
window. **No motion is no proof of life:** a photo or phone on a stand, or a
repeated frame, never gets there; the decision refuses such an attempt after
``decision.liveness_wait_seconds``.

**The door's camera.** :meth:`LivenessChecker.adapt` may lower the threshold
to the scores camera enrolments recorded at this door (:class:`Adaptation`),
never below the bound the training tool set from the attacks it measured.

The model file is checked against the SHA-256 in ``kiosk/models/liveness.json``
at load time, like the encoder; a missing, damaged or swapped file is
refused with :class:`~kiosk.encoder.ModelError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from kiosk.decision import Liveness
from kiosk.encoder import DEFAULT_MODEL_DIR, load_verified_model, read_metadata
from kiosk.errors import ModelError
from kiosk.face import Face

MODEL_FILE = "liveness.tflite"
METADATA_FILE = "liveness.json"
MODES = ("off", "texture", "both")
"""The values of the ``liveness.mode`` setting."""


class LivenessCheck(Protocol):
    def check(self, frame: np.ndarray, face: Face, now: float = 0.0) -> Liveness:
        """Add one frame (taken at ``now``) of the attempt; the attempt's verdict so far."""

    def reset(self) -> None:
        """Forget the current attempt (a new face track begins)."""

    def close_enough(self, frame: np.ndarray, face: Face) -> bool:
        """Whether ``face`` is large enough in ``frame`` for the check to judge it (else: not an attempt)."""

    def score(self) -> float | None:
        """The attempt's score so far (None: nothing scored, or no score kept)."""

    def adapt(self, live_scores: Sequence[Sequence[float]]) -> float | None:
        """Fit the threshold to this door's camera from live people's scores at enrolment; the threshold in use."""


class NoLivenessCheck:
    """The placeholder check: always passes, and says that no check ran."""

    def check(self, frame: np.ndarray, face: Face, now: float = 0.0) -> Liveness:
        return Liveness.OFF

    def reset(self) -> None:
        pass

    def close_enough(self, frame: np.ndarray, face: Face) -> bool:
        return True

    def score(self) -> float | None:
        return None

    def adapt(self, live_scores: Sequence[Sequence[float]]) -> float | None:
        return None


@dataclass(frozen=True)
class Adaptation:
    """How far a door may lower the texture threshold to fit its own camera's live faces (``liveness.json``).

    Enrolment at the camera records the attempt score of every frame of the
    new person's capture (which passes the liveness check itself, under an
    admin's eye): the door's own live faces, in its own light. Once
    ``min_people`` enrolments hold ``min_scores`` scores, the threshold
    becomes their ``live_quantile`` quantile when that is lower (so about
    that share of this door's live windows fall below it), but never more
    than ``max_lowering`` below the shipped threshold: the training tool sets
    that bound from the highest-scoring attacks it has, so that no attack it
    measured gets through even at the lowest threshold. It is never raised.
    """

    max_lowering: float
    min_people: int
    min_scores: int
    live_quantile: float

    def threshold(self, shipped: float, live_scores: Sequence[Sequence[float]]) -> float:
        """The door's threshold from its enrolments' scores (one sequence per enrolment, newest last)."""
        scores = [float(v) for person in live_scores for v in person if np.isfinite(v)]
        if len([p for p in live_scores if len(p)]) < self.min_people or len(scores) < self.min_scores:
            return shipped
        fitted = float(np.quantile(scores, self.live_quantile))
        return float(min(shipped, max(shipped - self.max_lowering, fitted)))


# The motion cue -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionSettings:
    """Tuning of :class:`MotionCue`.

    ``work_width``: frames are downscaled to this width (as for detection);
    ``max_points``/``min_points``: corners tracked on the face, and the
    fewest that make a measurement; ``min_shift``: median point movement,
    in face widths, since the reference frame before a measurement is made
    (smaller movements say nothing about depth); ``max_error``: largest
    forward-backward tracking error in pixels for a point to count.
    """

    work_width: int = 320
    max_points: int = 50
    min_points: int = 10
    min_shift: float = 0.01
    max_error: float = 1.0

    def as_dict(self) -> dict[str, float]:
        """The settings as stored in ``liveness.json``."""
        return {"work_width": self.work_width, "max_points": self.max_points, "min_points": self.min_points,
                "min_shift": self.min_shift, "max_error": self.max_error}


_LK = dict(winSize=(11, 11), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03))


@dataclass
class _Reference:
    gray: np.ndarray
    points: np.ndarray  # [N, 1, 2] float32, in working-image pixels
    width: float  # face width in working-image pixels


class MotionCue:
    """Whether the face moved: corners tracked from a reference frame into each new one.

    Corners are picked inside the face box of a reference frame and tracked
    (pyramidal Lucas-Kanade, forward-backward checked) into each new frame.
    Once their median movement reaches ``min_shift`` face widths, that
    movement is a measurement and the current frame becomes the reference.
    Comparing with a reference rather than the previous frame makes the
    count wait for real movement (a still image gives sensor noise only, and
    the Haar box's jitter is not counted because the corners are tracked in
    the image itself), so it means the same at 15 frames per second as on
    data sampled more sparsely.
    """

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self._reference: _Reference | None = None

    def reset(self) -> None:
        """Forget the reference frame (a new attempt begins)."""
        self._reference = None

    def update(self, frame: np.ndarray, face: Face) -> float | None:
        """Feed one frame; the movement in face widths when the face moved enough since the reference, else None."""
        gray, factor = self._gray(frame)
        reference = self._reference
        if reference is None:
            self._reference = self._new_reference(gray, face, factor)
            return None
        tracked = self._track(reference, gray)
        if tracked is None:
            self._reference = self._new_reference(gray, face, factor)
            return None
        before, after = tracked
        shift = float(np.median(np.linalg.norm(after - before, axis=1))) / reference.width
        if shift < self.settings.min_shift:
            return None
        self._reference = self._new_reference(gray, face, factor)
        return shift

    def _gray(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        factor = min(1.0, self.settings.work_width / gray.shape[1])
        if factor < 1.0:
            gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        return gray, factor

    def _new_reference(self, gray: np.ndarray, face: Face, factor: float) -> _Reference | None:
        width = face.w * factor
        cx, cy = face.center[0] * factor, face.center[1] * factor
        half = 0.4 * width  # the inner 80% of the box: face, not background
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        window = gray[y0:max(y0, int(cy + half)), x0:max(x0, int(cx + half))]
        if min(window.shape) < 8:
            return None
        points = cv2.goodFeaturesToTrack(window, self.settings.max_points, 0.01, 3)
        if points is None or len(points) < self.settings.min_points:
            return None
        return _Reference(gray, (points + np.array([x0, y0], np.float32)).astype(np.float32), width)

    def _track(self, reference: _Reference, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        forward, status, _ = cv2.calcOpticalFlowPyrLK(reference.gray, gray, reference.points, None, **_LK)
        back, status_back, _ = cv2.calcOpticalFlowPyrLK(gray, reference.gray, forward, None, **_LK)
        error = np.linalg.norm(back - reference.points, axis=2)[:, 0]
        ok = (status[:, 0] == 1) & (status_back[:, 0] == 1) & (error < self.settings.max_error)
        if ok.sum() < self.settings.min_points:
            return None
        return reference.points[ok, 0], forward[ok, 0]


# The texture cue ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContextCrop:
    """One network's input: the face box grown ``scale`` times about its centre, fed as input ``input_name``."""

    input_name: str
    scale: float


@dataclass
class LivenessInfo:
    """The metadata stored next to the model in ``liveness.json``."""

    input_size: int
    sha256: str
    crops: tuple[ContextCrop, ...]
    work_width: int
    texture_threshold: float
    min_movements: int
    adaptation: Adaptation
    motion: MotionSettings
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> LivenessInfo:
        """Read and validate ``liveness.json``."""
        data = read_metadata(path, "liveness metadata", "rebuild it (python -m kiosk.training.liveness)")
        try:
            return cls(
                input_size=int(data["input"]["size"]),
                sha256=str(data["tflite_sha256"]),
                crops=tuple(ContextCrop(str(c["input"]), float(c["scale"])) for c in data["input"]["crops"]),
                work_width=int(data["input"]["work_width"]),
                texture_threshold=float(data["threshold"]["texture"]),
                min_movements=int(data["movement"]["min_measurements"]),
                adaptation=Adaptation(**{k: data["adaptation"][k] for k in ("max_lowering", "min_people", "min_scores",
                                                                              "live_quantile")}),
                motion=MotionSettings(**data["motion"]),
                extra=data,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"liveness metadata {path} lacks or mangles the field {error}") from error


def context_box(width: int, height: int, box: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive, of ``box`` (x, y, w, h) grown ``scale`` times about its centre.

    MiniFASNet's own rule (Silent-Face-Anti-Spoofing's ``CropImage``): the
    scale is capped so the grown box fits the image, and a box that crosses
    an edge is shifted back inside, never padded, so the crop always holds
    real surroundings (a paper edge, a bezel, a hand).
    """
    x, y, w, h = box
    scale = min((height - 1) / h, (width - 1) / w, scale)
    grown_w, grown_h = w * scale, h * scale
    cx, cy = x + w / 2, y + h / 2
    left, top, right, bottom = cx - grown_w / 2, cy - grown_h / 2, cx + grown_w / 2, cy + grown_h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), width - 1.0
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), height - 1.0
    return int(left), int(top), int(right), int(bottom)


def context_crops(frame: np.ndarray, face: Face, crops: tuple[ContextCrop, ...], work_width: int, size: int) -> list[np.ndarray]:
    """The BGR ``size`` x ``size`` context crop of ``face`` for each network, from the frame at ``work_width`` pixels.

    The box is the Haar box (for a face found in a rotated pass, a box of its
    size about its centre in the frame); the frame is first brought to
    ``work_width`` like the detector's, so the crops look alike whatever the camera's resolution.
    """
    factor = min(1.0, work_width / frame.shape[1])
    if factor < 1.0:
        frame = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    w, h = face.w * factor, face.h * factor
    if face.angle:
        x, y = face.center[0] * factor - w / 2, face.center[1] * factor - h / 2
    else:
        x, y = face.x * factor, face.y * factor
    height, width = frame.shape[:2]
    out = []
    for crop in crops:
        left, top, right, bottom = context_box(width, height, (x, y, w, h), crop.scale)
        out.append(cv2.resize(frame[top:bottom + 1, left:right + 1], (size, size)))
    return out


REAL_CLASS = 1
"""Index of the "real face" class in each network's three logits (0 and 2 are attacks)."""
MAX_LOGIT = 9.0
"""The per-frame texture logit is clipped to +-this (a probability within about 1e-4 of 0 or 1)."""


def real_logit(logits: np.ndarray) -> float:
    """log(p / (1 - p)) of p, the mean over the networks of their softmax "real" probability.

    ``logits`` holds each network's three logits in turn. p >= 0.5 (logit
    >= 0) is MiniFASNet's own rule, real when the summed "real" probability
    is the largest, up to ties with the two attack classes.
    """
    per_network = logits.reshape(-1, 3)
    shifted = np.exp(per_network - per_network.max(axis=1, keepdims=True))
    real = float(np.mean(shifted[:, REAL_CLASS] / shifted.sum(axis=1)))
    logit = np.log(max(real, 1e-12)) - np.log(max(1.0 - real, 1e-12))
    return float(np.clip(logit, -MAX_LOGIT, MAX_LOGIT))


class TextureClassifier:
    """MiniFASNet's two context-crop CNNs in one TFLite file; returns a logit per face (> 0: real)."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, num_threads: int = 1, runtime: str = "auto") -> None:
        model_dir = Path(model_dir)
        self.model_path = model_dir / MODEL_FILE
        self.info = LivenessInfo.load(model_dir / METADATA_FILE)
        self.runtime, self._interpreter = load_verified_model(
            self.model_path, self.info.sha256, self.info.input_size, num_threads, what="liveness model", runtime=runtime
        )
        details = {d["name"]: d for d in self._interpreter.get_input_details()}
        self._inputs = []
        for crop in self.info.crops:
            named = [d for name, d in details.items() if name.split(":")[0].endswith(crop.input_name)]
            if len(named) != 1:
                raise ModelError(f"liveness model {self.model_path} has no input {crop.input_name!r} (its metadata names it); "
                                 f"its inputs: {', '.join(details)}")
            self._inputs.append(named[0])
        self._output = self._interpreter.get_output_details()[0]

    def crops(self, frame: np.ndarray, face: Face) -> list[np.ndarray]:
        """The networks' context crops of ``face`` in a BGR frame."""
        return context_crops(frame, face, self.info.crops, self.info.work_width, self.info.input_size)

    def logits(self, crops: list[np.ndarray]) -> np.ndarray:
        """The networks' raw logits (three each, in ``info.crops`` order) for their BGR uint8 crops."""
        for detail, crop in zip(self._inputs, crops):
            data = crop.astype(np.float32)
            if detail["dtype"] == np.int8:
                scale, zero = detail["quantization"]
                data = np.clip(np.round(data / scale + zero), -128, 127).astype(np.int8)
            self._interpreter.set_tensor(detail["index"], data[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"])[0]
        if self._output["dtype"] == np.int8:
            scale, zero = self._output["quantization"]
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)

    def score(self, frame: np.ndarray, face: Face) -> float:
        """Real-vs-attack logit of ``face`` in a BGR frame (see :func:`real_logit`)."""
        return real_logit(self.logits(self.crops(frame, face)))


@dataclass(frozen=True)
class AttemptScores:
    """The scores of one attempt so far: the mean texture logit (None before a frame) and the movements seen."""

    texture: float | None
    frames: int
    movements: int


class LivenessChecker:
    """The liveness check of modes ``"texture"`` and ``"both"`` (see the module docstring).

    One instance follows one attempt at a time: :meth:`check` adds a frame
    and returns the verdict so far, :meth:`reset` starts a new attempt. With
    ``window_seconds`` set (the door), only the frames of the last
    ``window_seconds`` count; without it (offline scoring), the whole attempt.
    """

    def __init__(self, mode: str, model_dir: Path = DEFAULT_MODEL_DIR, window_seconds: float | None = None,
                 runtime: str = "auto", min_face_fraction: float = 0.0) -> None:
        if mode not in ("texture", "both"):
            raise ValueError(f"LivenessChecker mode must be 'texture' or 'both', got {mode!r}")
        self.mode = mode
        self.window_seconds = window_seconds
        self.min_face_fraction = min_face_fraction
        self.texture = TextureClassifier(model_dir, runtime=runtime)
        self.info = self.texture.info
        self.threshold = self.info.texture_threshold
        self.motion = MotionCue(self.info.motion) if mode == "both" else None
        self._logits: list[tuple[float, float]] = []  # (time, texture logit)
        self._movements: list[float] = []  # times the face was seen to move

    def reset(self) -> None:
        self._logits.clear()
        self._movements.clear()
        if self.motion is not None:
            self.motion.reset()

    def close_enough(self, frame: np.ndarray, face: Face) -> bool:
        """Whether the face is at least ``min_face_fraction`` of the frame's shorter side tall.

        A smaller face is too far away to judge: the texture CNN sees too few pixels of paper (red-team attack
        11c opened the door that way). The door treats such a face as no attempt.
        """
        return face.h >= self.min_face_fraction * min(frame.shape[:2])

    def check(self, frame: np.ndarray, face: Face, now: float = 0.0) -> Liveness:
        """Add one frame of the attempt, taken at ``now``; the attempt's verdict so far."""
        self._logits.append((now, self.texture.score(frame, face)))
        if self.motion is not None and self.motion.update(frame, face) is not None:
            self._movements.append(now)
        if self.window_seconds is not None:
            start = now - self.window_seconds
            self._logits = [item for item in self._logits if item[0] >= start]
            self._movements = [t for t in self._movements if t >= start]
        return self.verdict()

    def verdict(self) -> Liveness:
        """SPOOF when the texture says so, else LIVE, or (mode ``"both"``, the face not seen to move yet) PENDING."""
        scores = self.scores()
        if scores.texture is None:
            return Liveness.PENDING
        if scores.texture < self.threshold:
            return Liveness.SPOOF
        if self.mode == "both" and scores.movements < self.info.min_movements:
            return Liveness.PENDING
        return Liveness.LIVE

    def score(self) -> float | None:
        """The attempt's mean texture logit so far (inside the window)."""
        return self.scores().texture

    def adapt(self, live_scores: Sequence[Sequence[float]]) -> float:
        """Set the threshold from this door's enrolment scores (:class:`Adaptation`); the threshold now in use."""
        self.threshold = self.info.adaptation.threshold(self.info.texture_threshold, live_scores)
        return self.threshold

    def scores(self) -> AttemptScores:
        """The attempt's mean texture logit and the number of movements seen (inside the window)."""
        texture = float(np.mean([v for _, v in self._logits])) if self._logits else None
        return AttemptScores(texture, len(self._logits), len(self._movements))


def make_liveness(mode: str, model_dir: Path = DEFAULT_MODEL_DIR, window_seconds: float | None = None,
                  runtime: str = "auto", min_face_fraction: float = 0.0) -> LivenessCheck:
    """The liveness check for a ``liveness.mode`` setting: ``"off"``, ``"texture"`` or ``"both"``."""
    if mode == "off":
        return NoLivenessCheck()
    if mode in ("texture", "both"):
        return LivenessChecker(mode, model_dir, window_seconds, runtime, min_face_fraction)
    raise ValueError(f"unknown liveness mode {mode!r}; choose one of {', '.join(MODES)}")
