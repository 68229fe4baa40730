"""The texture CNN as a full-int8 TFLite file, checked against the float model in every installed runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiosk.liveness import MODEL_FILE
from kiosk.training.liveness.data import TEST_SUBJECTS, Prepared, center_crop

REPRESENTATIVE_CROPS = 200
"""Training faces the converter takes its int8 ranges from, and held-out faces the export is checked on."""


def export_texture_model(model, prepared: Prepared, out: Path, seed: int) -> tuple[Path, list[dict]]:
    """Write ``out/liveness.tflite``; returns it and one check per runtime (logit error, sign agreement)."""
    from kiosk.encoder import runtime_interpreters
    from kiosk.training.export import export_int8
    from kiosk.training.runtime_check import embed_in_runtime

    rng = np.random.default_rng(seed)
    training = np.flatnonzero(~np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found)
    picks = rng.permutation(training)[:REPRESENTATIVE_CROPS]
    representative = np.stack([center_crop(c) for c in prepared.crops[picks]])
    tflite = export_int8(model, representative, out / MODEL_FILE)
    test = np.flatnonzero(np.isin(prepared.subject, TEST_SUBJECTS) & prepared.found)
    check_crops = np.stack([center_crop(c) for c in prepared.crops[rng.permutation(test)[:REPRESENTATIVE_CROPS]]])
    reference = np.asarray(model.predict(check_crops.astype(np.float32), verbose=0)).reshape(-1)
    checks = []
    for runtime in runtime_interpreters():
        quantised = embed_in_runtime(runtime, tflite, check_crops).reshape(-1)
        checks.append({"runtime": runtime, "crops": len(check_crops), "max_abs_logit_error": float(np.abs(quantised - reference).max()),
                       "mean_abs_logit_error": float(np.abs(quantised - reference).mean()),
                       "sign_agreement": float(np.mean((quantised >= 0) == (reference >= 0)))})
    return tflite, checks
