"""Full-integer int8 TFLite export, and checks of the exported file.

Only ``TFLITE_BUILTINS_INT8`` ops are allowed, input and output are int8,
and L2 normalisation stays outside the graph (the runtime does it). The
converter needs TensorFlow; the model itself may have been trained with any
Keras backend and saved as ``.keras``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.encoder import runtime_interpreters
from kiosk.training.model import l2_normalise
from kiosk.training.runtime_check import embed_in_runtime


def export_tflite(model, out_path: Path, calibration: Sequence | None = None) -> Path:
    """Write ``model`` as TFLite: float32 without ``calibration``, else full int8 (``TFLITE_BUILTINS_INT8``, int8 in
    and out) with ranges from ``calibration``: one sample per face, an array for a one-input model or a
    ``{input name: array}`` dict, each without the batch axis."""
    import tensorflow as tf

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if calibration is not None:
            def representative() -> Iterable[list[np.ndarray] | dict[str, np.ndarray]]:
                for sample in calibration:
                    if isinstance(sample, dict):
                        yield {name: value[None].astype(np.float32) for name, value in sample.items()}
                    else:
                        yield [sample[None].astype(np.float32)]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        data = converter.convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path


def export_int8(model, calibration: np.ndarray, out_path: Path) -> Path:
    """A fully int8 ``.tflite`` of a one-input model, calibrated on ``calibration`` ([N, H, W, 3] uint8 crops, a
    representative set of what the door will feed it)."""
    return export_tflite(model, out_path, calibration)


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_export` measured for one runtime."""

    runtime: str
    min_cosine: float
    mean_cosine: float


def check_export(model, tflite_path: Path, crops: np.ndarray) -> list[ExportCheck]:
    """Run the int8 file in every installed TFLite runtime and compare with the float model.

    Returns one :class:`ExportCheck` per runtime (ai-edge-litert, tflite-runtime);
    each runtime runs in its own process (see :mod:`kiosk.training.runtime_check`).
    """
    reference = l2_normalise(np.asarray(model.predict(crops.astype(np.float32), verbose=0, batch_size=64)))
    checks = []
    for name in runtime_interpreters():
        embeddings = l2_normalise(embed_in_runtime(name, Path(tflite_path), crops))
        cosine = np.sum(embeddings * reference, axis=1)
        checks.append(ExportCheck(name, float(cosine.min()), float(cosine.mean())))
    if not checks:
        raise RuntimeError("neither ai-edge-litert nor tflite-runtime is installed; cannot check the export")
    return checks
