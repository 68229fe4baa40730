"""Train, export and evaluate the liveness (anti-spoofing) model on NUAA.

One run, fixed seed, a few minutes on a 2-core CPU::

    python -m kiosk.training.liveness --data ../shared/data/nuaa_train --out models

Subjects are never split between training and evaluation. The subjects in
``TEST_SUBJECTS`` are held out for the final report; the others train the
shipped model. The steps:

1. **prepare**: every frame through the door's own front end
   (:class:`kiosk.face.FaceFinder`, :func:`kiosk.face.crop_face` at
   ``INPUT_SIZE`` with some context for augmentation), and the motion cue
   (:class:`kiosk.liveness.MotionCue`) over each attempt. Each NUAA session
   (``ID_glasses_pos_session``, frames in frame-number order) is cut into
   attempts of ``ATTEMPT_FRAMES`` to ``2 * ATTEMPT_FRAMES - 1`` consecutive frames.
2. **validate**: ``INNER_FOLDS`` over the training subjects: a texture CNN
   trained without a fold's subject scores that subject, so every training
   subject gets honest held-out scores. On those the texture threshold is
   chosen (lowest ACER, centre of the best interval) and the fusion with
   the motion cue is fitted (:func:`fit_fusion`).
3. **train and export**: the shipped CNN on all training subjects, full-int8
   TFLite (``TFLITE_BUILTINS_INT8``, int8 in and out), checked in every
   installed TFLite runtime against the float model.
4. **evaluate**: the held-out subjects through the runtime class itself
   (:class:`kiosk.liveness.LivenessChecker` on the int8 file): APCER, BPCER
   and ACER at the shipped thresholds, what it costs a live person at the
   door, the time per face, a Markdown report with histograms and a DET curve.

Training is plain Keras 3 (any backend); the int8 export needs TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from kiosk.face import CROP_GEOMETRY, CropGeometry, Face, FaceFinder, crop_face
from kiosk.images import read_image
from kiosk.liveness import METADATA_FILE, MODEL_FILE, AttemptScores, Fusion, LivenessChecker, MotionCue, MotionSettings

INPUT_SIZE = 64
"""Side of the texture CNN's square RGB input (the shared crop, smaller than the encoder's)."""
CONTEXT = 1.25
"""The cached crop is this much larger than the model's, so augmentation can shift and zoom."""
CONTEXT_SIZE = int(round(INPUT_SIZE * CONTEXT))
ATTEMPT_FRAMES = 5
"""Frames per evaluation attempt (a session's leftover frames join its last attempt)."""
TEST_SUBJECTS = ("0003", "0006", "0009")
"""Held out from all training and threshold choice; the report is on these."""
INNER_FOLDS = (("0001",), ("0002",), ("0004",), ("0005",), ("0007",), ("0008",))
"""Validation folds over the training subjects, one subject each (fusion and thresholds are fitted on their scores)."""
MIN_MOTION_MEASUREMENTS = 2
"""Motion measurements an attempt needs before motion joins the score: a single pair of frames is too noisy
(about 5% of single print-attack measurements look live on NUAA)."""
MOTION_BONUS = 2.0
"""The most, in texture logits, that live-looking motion may add: enough to rescue a borderline texture score,
never a clearly printed one (a replayed video would move like a live face)."""
DOOR_VERDICT_EVERY = 3
"""The decision's k: a grant (and so a liveness verdict) is possible every k frames with a face."""
DATA_TERMS = (
    "NUAA Photograph Imposter Database (X. Tan, Y. Li, J. Liu, L. Jiang, 'Face Liveness Detection from a Single "
    "Image with Sparse Low Rank Bilinear Discriminative Model', ECCV 2010), training split, every 3rd frame; "
    "research use"
)
SCREEN_REPLAYS = (
    "NUAA holds printed photos only: screen replays (a phone or tablet showing a photo or video), "
    "video of the enrolled person, masks and cut-out photos are not in the data, and nothing here is measured on them."
)


# Data ------------------------------------------------------------------------------------------------


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
        raise SystemExit(f"no NUAA frames under {root} (expected live/<subject>/*.jpg and spoof/<subject>/*.jpg)")
    return sorted(records, key=lambda r: (r.session, r.frame))


def split_attempts(records: list[FrameRecord]) -> list[list[FrameRecord]]:
    """Sessions cut into attempts of consecutive frames (see ``ATTEMPT_FRAMES``)."""
    sessions: dict[str, list[FrameRecord]] = defaultdict(list)
    for record in records:
        sessions[record.session].append(record)
    attempts = []
    for frames in sessions.values():
        count = max(1, len(frames) // ATTEMPT_FRAMES)
        attempts.extend([list(chunk) for chunk in np.array_split(np.array(frames, dtype=object), count)])
    return attempts


def context_geometry() -> CropGeometry:
    """The cached crop: the shared crop's centre, ``CONTEXT`` times larger."""
    return CropGeometry(CROP_GEOMETRY.dx, CROP_GEOMETRY.dy, CROP_GEOMETRY.scale * CONTEXT)


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


# The texture CNN ---------------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    """Hyper-parameters of one texture CNN training run."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0


def build_texture_model(size: int = INPUT_SIZE):
    """A small CNN: RGB pixels 0..255 in, one live-vs-photo logit out (> 0: live). About 14 M MACs."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="face")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)
    for index, filters in enumerate((16, 32, 64, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{index}")(x)
        x = layers.BatchNormalization(name=f"conv_{index}_bn")(x)
        x = layers.ReLU(name=f"conv_{index}_relu")(x)
        if index < 4:
            x = layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="liveness_texture")


def center_crop(context: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The model's crop at the centre of a context crop (what the door feeds it)."""
    scale = size * CONTEXT / context.shape[0]
    matrix = np.array([[scale, 0, size / 2 - scale * context.shape[1] / 2], [0, scale, size / 2 - scale * context.shape[0] / 2]])
    return cv2.warpAffine(context, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def augment(rng: np.random.Generator, context: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A training crop: small rotation, zoom, shift and flip (how a Haar box wanders), and colour changes.

    White balance, saturation, gamma and brightness are jittered widely: in
    NUAA each subject's live sessions have their own room light and camera
    colour, and without the jitter the CNN learns those instead of the print.
    No blur: softness is a genuine print cue here.
    """
    scale = size * CONTEXT / context.shape[0] * rng.uniform(0.9, 1.1)
    center = np.array(context.shape[:2][::-1]) / 2 + rng.uniform(-0.06, 0.06, 2) * context.shape[0] / CONTEXT
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), rng.uniform(-8, 8), scale)
    matrix[:, 2] += (size / 2 - center[0], size / 2 - center[1])
    crop = cv2.warpAffine(context, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = crop.astype(np.float32) / 255.0 * rng.uniform(0.8, 1.2, 3)
    gray = image.mean(axis=2, keepdims=True)
    image = np.clip(gray + (image - gray) * rng.uniform(0.5, 1.5), 0, 1) ** rng.uniform(0.6, 1.6)
    image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.2:
        image = image + rng.normal(0, 0.015, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def train_texture(crops: np.ndarray, live: np.ndarray, settings: TrainSettings):
    """Train the texture CNN on context crops with labels (True: live); returns the Keras model."""
    import keras

    keras.utils.set_random_seed(settings.seed)
    labels = live.astype(np.float32)[:, None]

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self) -> int:
            return len(crops) // settings.batch_size

        def __getitem__(self, index: int):
            order = np.random.default_rng([settings.seed, self.epoch]).permutation(len(crops))
            picks = order[index * settings.batch_size:(index + 1) * settings.batch_size]
            rng = np.random.default_rng([settings.seed, self.epoch, index])
            return np.stack([augment(rng, crops[i]) for i in picks]).astype(np.float32), labels[picks]

        def on_epoch_end(self) -> None:
            self.epoch += 1

    model = build_texture_model()
    batches = Batches()
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, settings.epochs * len(batches))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(batches, epochs=settings.epochs, verbose=0)
    return model


def predict_logits(model, crops: np.ndarray) -> np.ndarray:
    """The float model's logits for context crops (scored at their centre)."""
    centred = np.stack([center_crop(c) for c in crops]).astype(np.float32)
    return np.asarray(model.predict(centred, batch_size=128, verbose=0)).reshape(-1)


# Scores, fusion, thresholds and ISO/IEC 30107-3 metrics ---------------------------------------------------


@dataclass
class AttemptTable:
    """Per-attempt scores (one row per attempt with at least one face)."""

    live: np.ndarray
    subject: np.ndarray
    texture: np.ndarray
    motion: np.ndarray  # nan: the motion cue measured nothing in this attempt
    motion_count: np.ndarray

    def fused(self, fusion: Fusion) -> np.ndarray:
        return np.array([fusion(t, None if np.isnan(m) else m, int(n))
                         for t, m, n in zip(self.texture, self.motion, self.motion_count)])


def attempt_table(prepared: Prepared, logits: np.ndarray, rows: np.ndarray) -> AttemptTable:
    """Attempt scores from per-frame logits (mean over frames with a face) and motion (mean of measurements)."""
    columns: dict[str, list] = defaultdict(list)
    for attempt in np.unique(prepared.attempt[rows]):
        frames = rows[(prepared.attempt[rows] == attempt) & prepared.found[rows]]
        if len(frames) == 0:
            continue
        motion = prepared.motion[frames]
        columns["live"].append(bool(prepared.live[frames[0]]))
        columns["subject"].append(prepared.subject[frames[0]])
        columns["texture"].append(float(np.mean(logits[frames])))
        columns["motion"].append(float(np.nanmean(motion)) if np.isfinite(motion).any() else np.nan)
        columns["motion_count"].append(int(np.isfinite(motion).sum()))
    return AttemptTable(**{name: np.array(values) for name, values in columns.items()})


def fit_fusion(table: AttemptTable, texture_threshold: float, l2: float = 1.0) -> Fusion:
    """The fusion, fitted on validation attempts with at least ``MIN_MOTION_MEASUREMENTS`` motion measurements.

    A logistic model of live on (texture - texture_threshold, clipped mean
    motion) gives the motion's weight relative to the texture's; the offset
    then puts the fused threshold 0 at the centre of the lowest-ACER interval
    of those attempts. The clip range is the 2nd to 98th percentile of their
    motion scores, its upper end lowered so that motion adds at most
    ``MOTION_BONUS``. The L2 penalty keeps the weights finite when the
    attempts are separable.
    """
    has = table.motion_count >= MIN_MOTION_MEASUREMENTS
    if has.sum() < 4 or len(set(table.live[has])) < 2:
        raise SystemExit("too few validation attempts with motion measurements to fit the fusion")
    low, high = (float(v) for v in np.percentile(table.motion[has], [2, 98]))
    texture = table.texture[has] - texture_threshold
    motion = np.clip(table.motion[has], low, high)
    features = np.column_stack([texture, motion, np.ones(len(texture))])
    target = table.live[has].astype(float)
    weights = np.zeros(3)
    penalty = l2 * np.diag([1.0, 1.0, 0.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-features @ weights))
        gradient = features.T @ (p - target) + penalty @ weights
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(3)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    if weights[0] <= 0 or weights[1] <= 0:
        raise SystemExit(f"fitted fusion weights {weights[:2]} are not positive: a cue carries no signal on the validation subjects")
    weight, offset = weights[1] / weights[0], weights[2] / weights[0]
    offset -= choose_threshold(table.live[has], texture + weight * motion + offset)
    high = min(high, (MOTION_BONUS - offset) / weight)
    return Fusion(texture_threshold=texture_threshold, motion_weight=float(weight), motion_offset=float(offset),
                  motion_range=(low, max(low, high)), min_measurements=MIN_MOTION_MEASUREMENTS)


def error_rates(live: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ISO/IEC 30107-3 rates at a threshold (accept as bona fide when score >= threshold).

    APCER: attack presentations accepted as bona fide (one attack instrument species here: print);
    BPCER: bona fide presentations rejected as attacks; ACER: their mean.
    """
    accepted = scores >= threshold
    apcer = float(np.mean(accepted[~live])) if (~live).any() else float("nan")
    bpcer = float(np.mean(~accepted[live])) if live.any() else float("nan")
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2,
            "attack_presentations": int((~live).sum()), "bona_fide_presentations": int(live.sum())}


def choose_threshold(live: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of lowest ACER; where a range of thresholds ties, its centre (the widest margin)."""
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    acer = np.array([error_rates(live, scores, t)["acer"] for t in candidates])
    first = last = int(np.argmin(acer))
    while last + 1 < len(acer) and acer[last + 1] == acer[first]:
        last += 1
    return float((candidates[first] + candidates[last]) / 2)


def det_points(live: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(APCER, BPCER) over every threshold, for a DET curve."""
    thresholds = np.concatenate([[-np.inf], np.unique(scores), [np.inf]])
    apcer = np.array([np.mean(scores[~live] >= t) for t in thresholds])
    bpcer = np.array([np.mean(scores[live] < t) for t in thresholds])
    return apcer, bpcer


def equal_error_rate(live: np.ndarray, scores: np.ndarray) -> float:
    """The rate where APCER and BPCER cross."""
    apcer, bpcer = det_points(live, scores)
    index = int(np.argmin(np.abs(apcer - bpcer)))
    return float((apcer[index] + bpcer[index]) / 2)


# Steps ---------------------------------------------------------------------------------------------


def validate(prepared: Prepared, settings: TrainSettings) -> AttemptTable:
    """Inner folds over the training subjects: their attempts scored by CNNs that never saw them."""
    logits = np.full(len(prepared.found), np.nan, np.float32)
    training = ~np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found
    for fold in INNER_FOLDS:
        held = np.isin(prepared.subject, fold) & prepared.found
        fit = training & ~held
        started = time.time()
        model = train_texture(prepared.crops[fit], prepared.live[fit], settings)
        logits[held] = predict_logits(model, prepared.crops[held])
        print(f"fold {'+'.join(fold)}: trained on {fit.sum()} frames in {time.time() - started:.0f} s", flush=True)
    rows = np.flatnonzero(np.isin(prepared.subject, [s for fold in INNER_FOLDS for s in fold]))
    return attempt_table(prepared, logits, rows)


def export(model, prepared: Prepared, out: Path, seed: int) -> tuple[Path, list[dict]]:
    """Full-int8 TFLite of the texture CNN, checked in every installed runtime against the float model."""
    from kiosk.encoder import runtime_interpreters
    from kiosk.training.export import export_int8
    from kiosk.training.runtime_check import embed_in_runtime

    rng = np.random.default_rng(seed)
    training = np.flatnonzero(~np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found)
    picks = rng.permutation(training)[:200]
    representative = np.stack([center_crop(c) for c in prepared.crops[picks]])
    tflite = export_int8(model, representative, out / MODEL_FILE)
    test = np.flatnonzero(np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found)
    check_crops = np.stack([center_crop(c) for c in prepared.crops[rng.permutation(test)[:200]]])
    reference = np.asarray(model.predict(check_crops.astype(np.float32), verbose=0)).reshape(-1)
    checks = []
    for runtime in runtime_interpreters():
        quantised = embed_in_runtime(runtime, tflite, check_crops).reshape(-1)
        checks.append({"runtime": runtime, "crops": len(check_crops), "max_abs_logit_error": float(np.abs(quantised - reference).max()),
                       "mean_abs_logit_error": float(np.abs(quantised - reference).mean()),
                       "sign_agreement": float(np.mean((quantised >= 0) == (reference >= 0)))})
    return tflite, checks


@dataclass
class Evaluation:
    """The held-out subjects through the runtime class: attempt scores, frame logits, the door's view, timing."""

    table: AttemptTable
    fused: np.ndarray
    door: dict
    frame_logits: np.ndarray
    frame_live: np.ndarray
    timing: dict


def _held_out_frames(root: Path) -> Iterator[tuple[list[FrameRecord], list[tuple[np.ndarray, Face | None]]]]:
    """Each held-out session with its decoded frames and detected faces."""
    finder = FaceFinder()
    sessions: dict[str, list[FrameRecord]] = defaultdict(list)
    for record in scan_nuaa(root):
        if record.subject in TEST_SUBJECTS:
            sessions[record.session].append(record)
    for records in sessions.values():
        frames = []
        for record in records:
            image = read_image(record.path)
            frames.append((image, finder.largest(image)))
        yield records, frames


def _run(checker: LivenessChecker, frames: list[tuple[np.ndarray, Face | None]]) -> list[AttemptScores]:
    """The checker's scores after each frame with a face (frames without one are skipped)."""
    checker.reset()
    history = []
    for image, face in frames:
        if face is not None:
            checker.check(image, face)
            history.append(checker.scores())
    return history


def evaluate(root: Path, model_dir: Path) -> Evaluation:
    """Score every held-out attempt with the shipped int8 model through :class:`LivenessChecker`.

    Attempts are those of :func:`split_attempts`. For the door's view, each
    attempt start is also followed to the end of its session with a verdict
    every ``DOOR_VERDICT_EVERY`` frames (when the decision could grant).
    """
    both = LivenessChecker("both", model_dir)
    texture_only = LivenessChecker("texture", model_dir)
    info = both.info
    columns: dict[str, list] = defaultdict(list)
    first_pass: dict[bool, list[int | None]] = {True: [], False: []}
    frame_logits, frame_live, times = [], [], {"texture": [], "both": []}
    for records, frames in _held_out_frames(root):
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
            history = _run(both, frames[chunk[0]:])
            faces = sum(face is not None for _, face in frames[chunk[0]:chunk[-1] + 1])
            if faces:
                scores = history[faces - 1]
                columns["live"].append(records[0].live)
                columns["subject"].append(records[0].subject)
                columns["texture"].append(scores.texture)
                columns["motion"].append(np.nan if scores.motion is None else scores.motion)
                columns["motion_count"].append(scores.motion_measurements)
            verdicts = [h.fused >= info.fused_threshold for h in history[DOOR_VERDICT_EVERY - 1::DOOR_VERDICT_EVERY]]
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
    return Evaluation(table, table.fused(info.fusion), door, np.array(frame_logits), np.array(frame_live), timing)


# Report -----------------------------------------------------------------------------------------------


def _plots(evaluation: Evaluation, info_thresholds: dict[str, float], out: Path) -> dict[str, str]:
    """Score histograms and the DET curve as PNG files next to the report; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = evaluation.table
    names = {"hist": "liveness-histograms.png", "det": "liveness-det.png"}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    has = np.isfinite(table.motion)
    panels = [("texture score (mean logit)", table.texture, table.live, info_thresholds["texture"]),
              ("motion score (mean log residual ratio)", table.motion[has], table.live[has], None),
              ("fused score", evaluation.fused, table.live, info_thresholds["both"])]
    for axis, (title, scores, live, threshold) in zip(axes, panels):
        bins = np.linspace(scores.min(), scores.max(), 30)
        axis.hist(scores[live], bins, alpha=0.6, label=f"live ({live.sum()})", color="tab:green")
        axis.hist(scores[~live], bins, alpha=0.6, label=f"print attack ({(~live).sum()})", color="tab:red")
        if threshold is not None:
            axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
        axis.set_title(title)
        axis.set_xlabel("score (higher: more live)")
        axis.set_ylabel("attempts")
        axis.legend()
    figure.suptitle(f"Held-out subjects {', '.join(TEST_SUBJECTS)}: attempt scores")
    figure.tight_layout()
    figure.savefig(out / names["hist"], dpi=90)
    plt.close(figure)

    normal = NormalDist()
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]

    def deviate(rates: np.ndarray) -> np.ndarray:
        return np.array([normal.inv_cdf(min(max(r, 5e-4), 1 - 5e-4)) for r in rates])

    figure, axis = plt.subplots(figsize=(6, 6))
    curves = [("texture (per attempt)", table.live, table.texture), ("texture (per frame)", evaluation.frame_live, evaluation.frame_logits),
              ("motion (attempts with a measurement)", table.live[has], table.motion[has]), ("fused (per attempt)", table.live, evaluation.fused)]
    for label, live, scores in curves:
        apcer, bpcer = det_points(live, scores)
        axis.plot(deviate(apcer), deviate(bpcer), label=f"{label}, EER {100 * equal_error_rate(live, scores):.1f}%")
    for name, live, scores, threshold in (("texture", table.live, table.texture, info_thresholds["texture"]),
                                          ("fused", table.live, evaluation.fused, info_thresholds["both"])):
        rates = error_rates(live, scores, threshold)
        axis.plot(deviate(np.array([rates["apcer"]])), deviate(np.array([rates["bpcer"]])), "o", label=f"{name} at shipped threshold")
    axis.set_xticks(deviate(np.array(ticks)), [f"{100 * t:g}%" for t in ticks])
    axis.set_yticks(deviate(np.array(ticks)), [f"{100 * t:g}%" for t in ticks])
    limits = deviate(np.array([5e-4, 0.6]))
    axis.set_xlim(*limits)
    axis.set_ylim(*limits)
    axis.set_xlabel("APCER (print attacks accepted; 0 is drawn at 0.05%)")
    axis.set_ylabel("BPCER (live people rejected; 0 is drawn at 0.05%)")
    axis.set_title("DET, held-out NUAA subjects")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(out / names["det"], dpi=90)
    plt.close(figure)
    return names


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def write_report(metadata: dict, evaluation: Evaluation, out: Path) -> Path:
    """``liveness-report.md`` with the plots beside it."""
    names = _plots(evaluation, metadata["threshold"], out)
    metrics = metadata["metrics"]
    test, validation, door, timing = metrics["test"], metrics["validation"], metrics["door"], metadata["timing"]
    rows = []
    for mode in ("texture", "both"):
        r = test[mode]
        rows.append(f"| `{mode}` | {metadata['threshold'][mode]:.3f} | {_pct(r['apcer'])} | {_pct(r['bpcer'])} | {_pct(r['acer'])} "
                    f"| {_pct(validation[mode]['acer'])} |")
    per_subject = "\n".join(
        f"| {s} | {_pct(v['texture']['apcer'])} / {_pct(v['texture']['bpcer'])} | {_pct(v['both']['apcer'])} / {_pct(v['both']['bpcer'])} "
        f"| {v['both']['bona_fide_presentations']} / {v['both']['attack_presentations']} |"
        for s, v in metrics["test_per_subject"].items())
    checks = "; ".join(f"{c['runtime']}: logit error max {c['max_abs_logit_error']:.3f}, mean {c['mean_abs_logit_error']:.3f}, "
                       f"same side of 0 on {_pct(c['sign_agreement'])}" for c in metadata["export_check"])
    fusion = metadata["fusion"]
    text = f"""# Liveness (anti-spoofing) report

Written by `python -m kiosk.training.liveness` on {metadata['trained_at']} ({metadata['machine']}).
Everything below is measured on NUAA subjects **{', '.join(TEST_SUBJECTS)}**, held out from training,
from the fusion fit and from the choice of thresholds, through the runtime class
`kiosk.liveness.LivenessChecker` on the shipped int8 file `{MODEL_FILE}`.

**Not covered: {SCREEN_REPLAYS}**

## Results at the shipped thresholds (ISO/IEC 30107-3)

An attempt is {ATTEMPT_FRAMES} to {2 * ATTEMPT_FRAMES - 1} consecutive frames of one NUAA session
({test['both']['bona_fide_presentations']} bona fide and {test['both']['attack_presentations']} print-attack attempts).
APCER: attack presentations accepted as live (one attack instrument species: printed photo); BPCER:
live presentations rejected; ACER: their mean (kept for comparison with the literature; the 2023 edition
of ISO/IEC 30107-3 reports APCER and BPCER separately, as here).

| mode | threshold | APCER | BPCER | ACER | ACER on validation subjects |
|---|---|---|---|---|---|
{chr(10).join(rows)}

The last column is a second estimate: the {validation['both']['bona_fide_presentations']} live and
{validation['both']['attack_presentations']} attack attempts of the six training subjects, each scored by a CNN trained on
the other five. The texture threshold and the fusion were fitted on these very scores, so they are not an
independent test, but each of those CNNs saw one subject fewer than the shipped one: read the two
estimates together, and do not expect every new person, camera and room to do as well as the three held-out
subjects. Validation `texture` APCER
{_pct(validation['texture']['apcer'])}, BPCER {_pct(validation['texture']['bpcer'])}; `both` APCER
{_pct(validation['both']['apcer'])}, BPCER {_pct(validation['both']['bpcer'])}.

Per frame (texture CNN alone at the texture threshold, one frame = one decision): APCER {_pct(metrics['test_frames']['apcer'])},
BPCER {_pct(metrics['test_frames']['bpcer'])}, EER {_pct(metrics['test_frames']['eer'])}
({metrics['test_frames']['bona_fide_presentations']} live and {metrics['test_frames']['attack_presentations']} attack frames).
Equal error rates per attempt: texture {_pct(metrics['test_eer']['texture'])}, motion alone
{_pct(metrics['test_eer']['motion'])} (on the {metrics['test_eer']['motion_attempts']} attempts where it measured something),
fused {_pct(metrics['test_eer']['both'])}.

Per held-out subject (APCER / BPCER per attempt):

| subject | texture | both | live / attack attempts |
|---|---|---|---|
{per_subject}

![score histograms]({names['hist']})

![DET curve]({names['det']})

## What a live person pays at the door (mode `both`)

The decision can grant at the earliest on the {DOOR_VERDICT_EVERY}rd frame with a face, and asks the
liveness verdict then; a `False` is logged as `spoof` and the attempt restarts, so the next verdict
comes {DOOR_VERDICT_EVERY} frames later. Following each held-out attempt start to the end of its session:

- live people pass at the first verdict in **{_pct(door['live_pass_first_verdict'])}** of {door['live_starts']} starts,
  so **{_pct(1 - door['live_pass_first_verdict'])}** need a second look (about {DOOR_VERDICT_EVERY} more frames, 0.2 s
  at 15 fps, plus a `spoof` line in the event log); {_pct(door['live_pass_by_second_verdict'])} pass by the second verdict;
  {_pct(door['live_never_pass_in_session'])} never pass within their session;
- a print attack held up for as long as the session lasts passes at the first verdict in
  {_pct(door['spoof_pass_first_verdict'])} and within five verdicts (the lockout budget: 5 refusals lock the
  door out for 5 minutes) in **{_pct(door['spoof_pass_within_5_verdicts'])}** of {door['spoof_starts']} starts.

Five refused attempts within five minutes lock the door out, for live people too: a person rejected
five times in a row would be locked out (the event log says `spoof`).

## Cost per face

Target: at most 5 ms per face on a 2-core CPU. {timing['machine']}, {timing['note']}:
`texture` median {timing['texture']['median_ms']:.2f} ms (p90 {timing['texture']['p90_ms']:.2f} ms),
`both` median {timing['both']['median_ms']:.2f} ms (p90 {timing['both']['p90_ms']:.2f} ms) per face, on top of
detection and the encoder (the crop, the int8 CNN, and for `both` the corner tracking).
The CNN is about {metadata['model']['macs'] / 1e6:.0f} M multiply-accumulates, the file {metadata['tflite_bytes'] / 1024:.0f} KiB.

## How it works

- **Texture cue**: a 4-layer CNN on the shared face crop (`kiosk.face.crop_face`, {INPUT_SIZE}x{INPUT_SIZE} RGB)
  gives a logit per frame (> 0: live); the attempt's texture score is the mean logit of its frames.
  Trained on subjects {', '.join(metadata['data']['training_subjects'])} with shifts, zooms, small rotations,
  flips and wide colour changes (white balance, saturation, gamma, brightness: otherwise the CNN learns each
  subject's room light); full-int8 export ({checks}).
- **Motion cue** (`kiosk.liveness.MotionCue`): corners on the inner face box are tracked from a reference
  frame until they have moved {metadata['motion']['min_shift']:g} face widths; then one homography is fitted
  to all tracks and the score is log(90th-percentile residual / median movement). A printed photo,
  even tilted or slightly bent, moves as a plane and fits the homography (held-out attempts: median
  {metrics['motion_medians']['spoof']:.2f}); a live face (depth, blinks, expression) leaves a residual (median
  {metrics['motion_medians']['live']:.2f}). A face or photo held perfectly still gives no measurement, and the verdict
  is then the texture verdict. A live head that only slides sideways would also move almost as a plane:
  NUAA's live people mostly sit still, so how often that happens at a real door is not measured.
- **Fusion** (`kiosk.liveness.Fusion`), in texture-logit units with threshold 0:
  `fused = texture - ({metadata['threshold']['texture']:.3f})`, plus
  `{fusion['motion_weight']:.3f} * clip(mean motion, {fusion['motion_range'][0]:.2f}, {fusion['motion_range'][1]:.2f}) + ({fusion['motion_offset']:.3f})`
  once the motion cue has made {fusion['min_measurements']} measurements (one is too noisy). Until then the verdict of
  `both` is the `texture` verdict. The motion weight comes from a logistic model fitted on the validation
  attempts with enough measurements, its offset puts 0 at the centre of their lowest-ACER interval, and the
  clip's upper end lets live-looking motion add at most {fusion['max_motion_bonus']:g} logits (enough to rescue a
  borderline texture score, never a clearly printed one), while planar motion can pull the score down fully.
- **Texture threshold**: the lowest ACER on the validation subjects' out-of-fold attempt scores (one texture
  CNN per training subject, trained without that subject), at the centre of the best interval.

## Limits and what is needed next

- **Screen replays are not covered.** NUAA has printed photos only. A phone or tablet showing a photo or video
  of the enrolled person has other texture (moire, pixel grid, backlight, specular glare) that this CNN
  never saw, and a replayed *video* moves like a live face, so the motion cue does not help against it. To
  cover replays: training and test data with screen attacks (e.g. Idiap Replay-Attack, CASIA-FASD,
  OULU-NPU, or recordings of phones and tablets made with the door's own camera), a subject-disjoint
  evaluation per attack instrument species (APCER for the worst species), and possibly a cue a screen
  cannot fake (an infrared camera or an active light/flash challenge).
- **Data**: 9 subjects, one room, one webcam, one kind of printer; {len(TEST_SUBJECTS)} held-out subjects give
  {test['both']['bona_fide_presentations'] + test['both']['attack_presentations']} attempts, so every rate above has a wide
  uncertainty (one attempt is {_pct(1 / max(1, test['both']['attack_presentations']))} of the attacks). Other cameras,
  light and printers (glossy photo paper, high-resolution colour prints) need their own measurement.
- **Frame timing**: the NUAA frames are about 0.6 s apart (every third frame of the official list); the door
  takes 15 frames per second. The motion cue compares with a reference frame until enough movement has
  accumulated, so it waits for motion rather than for frames, but it was measured only on NUAA's spacing.
- **Not measured**: masks, cut-out photos (eyes or mouth cut out to blink through), photos on curved
  surfaces, and attacks by someone who knows the motion cue (holding a photo still defeats it, leaving the texture cue).

## Data and terms

{DATA_TERMS}. Training subjects: {', '.join(metadata['data']['training_subjects'])}; held-out test subjects:
{', '.join(TEST_SUBJECTS)}. Retrain with `python -m kiosk.training.liveness --data ../shared/data/nuaa_train --out models`
(seed {metadata['training']['seed']}).
"""
    path = out / "liveness-report.md"
    path.write_text(text)
    return path


def _rates_by_subject(table: AttemptTable, fused: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict]:
    return {subject: {"texture": error_rates(table.live[m], table.texture[m], thresholds["texture"]),
                      "both": error_rates(table.live[m], fused[m], thresholds["both"])}
            for subject in sorted(set(table.subject)) for m in [table.subject == subject]}


def count_macs(size: int = INPUT_SIZE) -> int:
    """Multiply-accumulates of one texture CNN run (convolutions and the final dense layer)."""
    side, channels, macs = size, 3, 0
    for index, filters in enumerate((16, 32, 64, 64), start=1):
        macs += side * side * 9 * channels * filters
        channels = filters
        if index < 4:
            side //= 2
    return macs + channels


def run(data: Path, out: Path, cache: Path, settings: TrainSettings) -> dict:
    """Every step; writes ``liveness.tflite``, ``liveness.json``, the report and its plots to ``out``."""
    from kiosk.encoder import sha256_of

    started = time.time()
    cache_file = cache / "nuaa.npz"
    if cache_file.exists():
        prepared = Prepared.load(cache_file)
        print(f"using the prepared frames in {cache_file} (delete it to prepare again)")
    else:
        prepared = prepare(data)
        prepared.save(cache_file)
    print(f"{len(prepared.found)} frames, {int(prepared.found.sum())} with a face; "
          f"{np.isfinite(prepared.motion).sum()} motion measurements", flush=True)

    validation_table = validate(prepared, settings)
    thresholds = {"texture": choose_threshold(validation_table.live, validation_table.texture), "both": 0.0}
    fusion = fit_fusion(validation_table, thresholds["texture"])
    validation_fused = validation_table.fused(fusion)
    print(f"{fusion}; thresholds {thresholds}", flush=True)

    training = ~np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found
    model = train_texture(prepared.crops[training], prepared.live[training], settings)
    out.mkdir(parents=True, exist_ok=True)
    tflite, checks = export(model, prepared, out, settings.seed)
    training_subjects = sorted(set(prepared.subject[training]))
    metadata = {
        "format": "face-kiosk-liveness/1",
        "input": {"size": INPUT_SIZE, "layout": f"NHWC, 1 x {INPUT_SIZE} x {INPUT_SIZE} x 3, RGB",
                  "dtype": "int8 (pixel 0..255 quantised with the input tensor's scale and zero point)",
                  "front_end": "OpenCV haarcascade_frontalface_default, largest face, kiosk.face.crop_face(size=64)",
                  "crop_geometry": asdict(CROP_GEOMETRY)},
        "output": "one int8 logit per crop: > 0 live, < 0 printed photo",
        "threshold": {"texture": thresholds["texture"], "both": thresholds["both"],
                      "rule": "texture: lowest ACER on the validation subjects' out-of-fold attempt scores, centre of the "
                              "best interval; both: 0 by construction of the fusion (see kiosk.liveness.Fusion)"},
        "fusion": {"motion_weight": fusion.motion_weight, "motion_offset": fusion.motion_offset,
                   "motion_range": list(fusion.motion_range), "min_measurements": fusion.min_measurements,
                   "max_motion_bonus": MOTION_BONUS,
                   "formula": "texture - threshold.texture + (motion_weight * clip(mean motion, *motion_range) + "
                              "motion_offset once the motion cue has made min_measurements measurements)"},
        "motion": MotionSettings().as_dict(),
        "tflite_sha256": sha256_of(tflite),
        "tflite_bytes": tflite.stat().st_size,
        "export_check": checks,
        "model": {"layers": "4 x (conv 3x3, batch norm, ReLU), max pooling, global average pooling, dense 1",
                  "macs": count_macs()},
        "data": {"terms": DATA_TERMS, "training_subjects": training_subjects, "test_subjects": list(TEST_SUBJECTS),
                 "validation_folds": [list(f) for f in INNER_FOLDS], "not_covered": SCREEN_REPLAYS},
        "training": asdict(settings) | {"frames": int(training.sum())},
        "trained_at": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    evaluation = evaluate(data, out)
    table, fused = evaluation.table, evaluation.fused
    has = np.isfinite(table.motion)
    frame_threshold = thresholds["texture"]
    metadata["metrics"] = {
        "test": {"texture": error_rates(table.live, table.texture, thresholds["texture"]),
                 "both": error_rates(table.live, fused, thresholds["both"])},
        "test_eer": {"texture": equal_error_rate(table.live, table.texture), "both": equal_error_rate(table.live, fused),
                     "motion": equal_error_rate(table.live[has], table.motion[has]), "motion_attempts": int(has.sum())},
        "test_frames": error_rates(evaluation.frame_live, evaluation.frame_logits, frame_threshold)
        | {"threshold": frame_threshold, "eer": equal_error_rate(evaluation.frame_live, evaluation.frame_logits)},
        "test_per_subject": _rates_by_subject(table, fused, thresholds),
        "validation": {"texture": error_rates(validation_table.live, validation_table.texture, thresholds["texture"]),
                       "both": error_rates(validation_table.live, validation_fused, thresholds["both"])},
        "door": evaluation.door,
        "motion_medians": {"live": float(np.median(table.motion[has & table.live])),
                           "spoof": float(np.median(table.motion[has & ~table.live]))},
    }
    metadata["timing"] = evaluation.timing | {
        "machine": metadata["machine"],
        "note": "one thread, per face after detection, measured during the evaluation run (other jobs may share the CPU)"}
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    report = write_report(metadata, evaluation, out)
    print(f"wrote {tflite}, {out / METADATA_FILE} and {report} in {(time.time() - started) / 60:.1f} min")
    return metadata


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kiosk.training.liveness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/nuaa_train"),
                        help="the NUAA training tree with live/ and spoof/ (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("kiosk/models"), help="where to write liveness.tflite, .json and the report")
    parser.add_argument("--cache", type=Path, default=Path("cache/liveness"), help="prepared frames (reused when present)")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run(args.data, args.out, args.cache, TrainSettings(epochs=args.epochs, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
