"""One run, every step in order: prepare, convert, export, score, validate by session and subject, fit, evaluate, report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from kiosk.liveness import METADATA_FILE, MODEL_FILE, Fusion, MotionSettings, real_logit
from kiosk.training.liveness.data import (
    CAPTURE_SESSIONS,
    DATA_TERMS,
    SCREEN_REPLAYS,
    TEST_SUBJECTS,
    Prepared,
    load_or_prepare,
)
from kiosk.training.liveness.evaluate import evaluate
from kiosk.training.liveness.fusion import MOTION_BONUS, AttemptTable, attempt_table, fit_fusion
from kiosk.training.liveness.metrics import choose_threshold, error_rates, rates_by_subject
from kiosk.training.liveness.minifasnet import (
    INPUT_SIZE,
    NETWORKS,
    WORK_WIDTH,
    agreement,
    build_pair,
    export_tflite,
    input_name,
    reference_logits,
    tflite_logits,
)
from kiosk.training.liveness.report import write_report
from kiosk.training.liveness.screens import screen_replays

TEXTURE_THRESHOLD = 0.0
"""MiniFASNet's own rule (mean "real" probability >= 0.5), fixed before any NUAA frame was seen."""
CHECK_FACES = 200
"""Faces the conversion and the int8 export are checked on (and the int8 ranges taken from)."""


def run(data: Path, out: Path, cache: Path, onnx_dir: Path, seed: int) -> dict:
    """Every step; writes ``liveness.tflite``, ``liveness.json``, the report and its plots to ``out``."""
    started = time.time()
    rng = np.random.default_rng(seed)
    prepared = load_or_prepare(data, cache / "nuaa.npz")
    faces = np.flatnonzero(prepared.found)
    print(f"{len(prepared.found)} frames, {len(faces)} with a face", flush=True)

    model = build_pair(onnx_dir)
    check = rng.permutation(faces)[:CHECK_FACES]
    reference = reference_logits(onnx_dir, prepared.crops[check])
    keras_logits = np.asarray(model.predict([prepared.crops[check][:, i].astype(np.float32) for i in range(len(NETWORKS))],
                                            verbose=0))
    conversion = agreement(reference, keras_logits)
    print(f"Keras against ONNX (OpenCV): {conversion}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    tflite = export_tflite(model, out / MODEL_FILE)
    float_logits, float_ms = tflite_logits(tflite, prepared.crops[check])
    calibration = [{input_name(n): pair[i] for i, n in enumerate(NETWORKS)} for pair in prepared.crops[check]]
    int8_file = export_tflite(model, cache / "liveness-int8.tflite", calibration)
    int8_logits, int8_ms = tflite_logits(int8_file, prepared.crops[check])
    export = {"float32": agreement(reference, float_logits) | {"ms_per_face": float_ms, "bytes": tflite.stat().st_size},
              "int8": agreement(float_logits, int8_logits) | {"ms_per_face": int8_ms, "bytes": int8_file.stat().st_size}}
    print(f"exports: {export}", flush=True)

    frame_logits = _frame_logits(tflite, prepared)
    frame_reference = np.full(len(prepared.found), np.nan)
    frame_reference[faces] = [real_logit(v) for v in reference_logits(onnx_dir, prepared.crops[faces])]
    splits = {"session": _cross_validate(prepared, frame_logits, frame_reference, "session"),
              "subject": _cross_validate(prepared, frame_logits, frame_reference, "subject")}

    fit_rows = np.flatnonzero(~np.isin(prepared.subject, TEST_SUBJECTS))
    fusion = fit_fusion(attempt_table(prepared, frame_logits, fit_rows), TEXTURE_THRESHOLD)
    metadata = _model_metadata(tflite, fusion, conversion, export, onnx_dir)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    evaluation = evaluate(data, out)
    metadata["metrics"] = {"splits": {name: {k: v for k, v in split.items() if k != "scores"} for name, split in splits.items()},
                           "screens": screen_replays(prepared, out, seed),
                           "test": {"texture": error_rates(evaluation.table.live, evaluation.table.texture, TEXTURE_THRESHOLD),
                                    "both": error_rates(evaluation.table.live, evaluation.fused, 0.0)},
                           "door": evaluation.door}
    metadata["timing"] = evaluation.timing | {
        "machine": metadata["machine"],
        "note": "one thread, per face after detection (crops, both CNNs, for both the corner tracking), measured during "
                "the evaluation run (other jobs may share the CPU)"}
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    report = write_report(metadata, splits, out)
    print(f"wrote {tflite}, {out / METADATA_FILE} and {report} in {(time.time() - started) / 60:.1f} min")
    return metadata


def _frame_logits(tflite: Path, prepared: Prepared) -> np.ndarray:
    """The runtime's per-frame texture logit (:func:`kiosk.liveness.real_logit`) of every frame with a face."""
    logits = np.full(len(prepared.found), np.nan)
    faces = np.flatnonzero(prepared.found)
    raw, _ = tflite_logits(tflite, prepared.crops[faces])
    logits[faces] = [real_logit(v) for v in raw]
    return logits


def _cross_validate(prepared: Prepared, logits: np.ndarray, reference: np.ndarray, by: str) -> dict:
    """Leave one capture session (``by="session"``) or one subject out: fit on the rest, score the one left out.

    The texture threshold is fixed (``TEXTURE_THRESHOLD``); what is fitted on
    the training part is the fusion with the motion cue, and, for comparison,
    a texture threshold of lowest ACER. Returns pooled rates, rates per
    subject and per left-out part, and the pooled attempt scores for the DET curves.
    """
    groups = prepared.capture_session if by == "session" else prepared.subject
    pooled: dict[str, list] = {"live": [], "subject": [], "part": [], "texture": [], "both": [], "reference": [],
                               "texture_fitted": []}
    parts = {}
    for part in (CAPTURE_SESSIONS if by == "session" else sorted(set(prepared.subject))):
        test_rows, fit_rows = np.flatnonzero(groups == part), np.flatnonzero(groups != part)
        fit_table = attempt_table(prepared, logits, fit_rows)
        fusion = fit_fusion(fit_table, TEXTURE_THRESHOLD)
        fitted_threshold = choose_threshold(fit_table.live, fit_table.texture)
        test: AttemptTable = attempt_table(prepared, logits, test_rows)
        scores = {"texture": test.texture - TEXTURE_THRESHOLD, "both": test.fused(fusion),
                  "reference": attempt_table(prepared, reference, test_rows).texture - TEXTURE_THRESHOLD,
                  "texture_fitted": test.texture - fitted_threshold}
        parts[part] = {mode: error_rates(test.live, s, 0.0) for mode, s in scores.items()} | {
            "fitted_texture_threshold": fitted_threshold, "motion_weight": fusion.motion_weight}
        for mode, values in scores.items():
            pooled[mode].extend(values.tolist())
        pooled["live"].extend(test.live.tolist())
        pooled["subject"].extend(test.subject.tolist())
        pooled["part"].extend([part] * len(test.live))
    live, subject = np.array(pooled["live"]), np.array(pooled["subject"])
    modes = ("texture", "both", "reference", "texture_fitted")
    return {"pooled": {mode: error_rates(live, np.array(pooled[mode]), 0.0) for mode in modes},
            "per_subject": rates_by_subject(live, subject, {m: np.array(pooled[m]) for m in modes}, dict.fromkeys(modes, 0.0)),
            "parts": parts, "scores": pooled}


def _model_metadata(tflite: Path, fusion: Fusion, conversion: dict, export: dict, onnx_dir: Path) -> dict:
    """``liveness.json`` before the evaluation: what the runtime loads, and how the model was made."""
    from kiosk.encoder import sha256_of

    return {
        "format": "face-kiosk-liveness/2",
        "input": {"size": INPUT_SIZE, "work_width": WORK_WIDTH,
                  "crops": [{"input": input_name(n), "scale": n.crop_scale, "network": n.onnx_name} for n in NETWORKS],
                  "layout": f"two inputs, each NHWC 1 x {INPUT_SIZE} x {INPUT_SIZE} x 3, BGR 0..255 float32, no normalisation",
                  "front_end": "OpenCV haarcascade_frontalface_default (largest face); the frame brought to work_width; the "
                               "Haar box grown by each crop's scale about its centre, shifted inside the frame, never padded "
                               "(kiosk.liveness.context_box); no mapping from Haar to RetinaFace boxes"},
        "output": "logits [1, 6]: three per network (class 1 real); the texture score is the logit of the networks' mean "
                  "softmax 'real' probability, clipped to +-9",
        "threshold": {"texture": TEXTURE_THRESHOLD, "both": 0.0,
                      "rule": "texture: MiniFASNet's own (mean real probability 0.5), chosen before any NUAA frame; "
                              "both: 0 by construction of the fusion (see kiosk.liveness.Fusion)"},
        "fusion": {"motion_weight": fusion.motion_weight, "motion_offset": fusion.motion_offset,
                   "motion_range": list(fusion.motion_range), "min_measurements": fusion.min_measurements,
                   "max_motion_bonus": MOTION_BONUS, "fitted_on": "NUAA attempts of every subject but "
                                                                  f"{', '.join(TEST_SUBJECTS)}, both sessions",
                   "formula": "texture - threshold.texture + (motion_weight * clip(mean motion, *motion_range) + "
                              "motion_offset once the motion cue has made min_measurements measurements)"},
        "motion": MotionSettings().as_dict(),
        "tflite_sha256": sha256_of(tflite),
        "tflite_bytes": tflite.stat().st_size,
        "conversion_check": conversion | {"against": f"the ONNX files in {onnx_dir} run by cv2.dnn.readNetFromONNX"},
        "export_check": export,
        "model": {"networks": [n.onnx_name for n in NETWORKS], "precision": "float32",
                  "source": "minivision-ai Silent-Face-Anti-Spoofing (Apache-2.0, commit b6d5f04), converted unchanged "
                            "by kiosk.training.liveness.minifasnet"},
        "data": {"terms": DATA_TERMS, "test_subjects": list(TEST_SUBJECTS), "not_covered": SCREEN_REPLAYS},
        "built_at": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
    }
