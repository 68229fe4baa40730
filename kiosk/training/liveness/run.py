"""One training run, every step in order: prepare, validate, fit, train, export, evaluate, report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kiosk.face import CROP_GEOMETRY
from kiosk.liveness import METADATA_FILE, Fusion, MotionSettings
from kiosk.training.liveness.data import (
    DATA_TERMS,
    INNER_FOLDS,
    INPUT_SIZE,
    SCREEN_REPLAYS,
    TEST_SUBJECTS,
    Prepared,
    load_or_prepare,
)
from kiosk.training.liveness.evaluate import Evaluation, evaluate
from kiosk.training.liveness.export import export_texture_model
from kiosk.training.liveness.fusion import MOTION_BONUS, AttemptTable, attempt_table, fit_fusion
from kiosk.training.liveness.metrics import choose_threshold, equal_error_rate, error_rates, rates_by_subject
from kiosk.training.liveness.model import TrainSettings, count_macs, predict_logits, train_texture
from kiosk.training.liveness.report import write_report


def run(data: Path, out: Path, cache: Path, settings: TrainSettings) -> dict:
    """Every step; writes ``liveness.tflite``, ``liveness.json``, the report and its plots to ``out``."""
    started = time.time()
    prepared = load_or_prepare(data, cache / "nuaa.npz")
    print(f"{len(prepared.found)} frames, {int(prepared.found.sum())} with a face; "
          f"{np.isfinite(prepared.motion).sum()} motion measurements", flush=True)

    validation = validate(prepared, settings)
    thresholds = {"texture": choose_threshold(validation.live, validation.texture), "both": 0.0}
    fusion = fit_fusion(validation, thresholds["texture"])
    print(f"{fusion}; thresholds {thresholds}", flush=True)

    training = ~np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found
    model = train_texture(prepared.crops[training], prepared.live[training], settings)
    out.mkdir(parents=True, exist_ok=True)
    tflite, checks = export_texture_model(model, prepared, out, settings.seed)
    metadata = _model_metadata(tflite, checks, thresholds, fusion, settings, prepared, training)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    evaluation = evaluate(data, out)
    metadata["metrics"] = _measured_metrics(evaluation, validation, validation.fused(fusion), thresholds)
    metadata["timing"] = evaluation.timing | {
        "machine": metadata["machine"],
        "note": "one thread, per face after detection, measured during the evaluation run (other jobs may share the CPU)"}
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    report = write_report(metadata, evaluation, out)
    print(f"wrote {tflite}, {out / METADATA_FILE} and {report} in {(time.time() - started) / 60:.1f} min")
    return metadata


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


def _model_metadata(tflite: Path, checks: list[dict], thresholds: dict[str, float], fusion: Fusion,
                    settings: TrainSettings, prepared: Prepared, training: np.ndarray) -> dict:
    """``liveness.json`` before the evaluation: what the runtime loads, and how the model was made."""
    from kiosk.encoder import sha256_of

    return {
        "format": "face-kiosk-liveness/1",
        "input": {"size": INPUT_SIZE, "layout": f"NHWC, 1 x {INPUT_SIZE} x {INPUT_SIZE} x 3, RGB",
                  "dtype": "int8 (pixel 0..255 quantised with the input tensor's scale and zero point)",
                  "front_end": f"OpenCV haarcascade_frontalface_default, largest face, kiosk.face.crop_face(size={INPUT_SIZE})",
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
        "data": {"terms": DATA_TERMS, "training_subjects": sorted(set(prepared.subject[training])),
                 "test_subjects": list(TEST_SUBJECTS), "validation_folds": [list(f) for f in INNER_FOLDS],
                 "not_covered": SCREEN_REPLAYS},
        "training": asdict(settings) | {"frames": int(training.sum())},
        "trained_at": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
    }


def _measured_metrics(evaluation: Evaluation, validation: AttemptTable, validation_fused: np.ndarray,
                      thresholds: dict[str, float]) -> dict:
    """The ``metrics`` section: held-out rates per attempt, per frame and per subject, beside the validation rates."""
    table, fused = evaluation.table, evaluation.fused
    has = np.isfinite(table.motion)
    frame_threshold = thresholds["texture"]
    return {
        "test": {"texture": error_rates(table.live, table.texture, thresholds["texture"]),
                 "both": error_rates(table.live, fused, thresholds["both"])},
        "test_eer": {"texture": equal_error_rate(table.live, table.texture), "both": equal_error_rate(table.live, fused),
                     "motion": equal_error_rate(table.live[has], table.motion[has]), "motion_attempts": int(has.sum())},
        "test_frames": error_rates(evaluation.frame_live, evaluation.frame_logits, frame_threshold)
        | {"threshold": frame_threshold, "eer": equal_error_rate(evaluation.frame_live, evaluation.frame_logits)},
        "test_per_subject": rates_by_subject(table.live, table.subject, {"texture": table.texture, "both": fused}, thresholds),
        "validation": {"texture": error_rates(validation.live, validation.texture, thresholds["texture"]),
                       "both": error_rates(validation.live, validation_fused, thresholds["both"])},
        "door": evaluation.door,
        "motion_medians": {"live": float(np.median(table.motion[has & table.live])),
                           "spoof": float(np.median(table.motion[has & ~table.live]))},
    }
