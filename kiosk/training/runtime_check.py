"""Run an exported ``.tflite`` in one named TFLite runtime, in its own process.

TensorFlow and ``tflite-runtime`` 2.14 cannot share a process (their bundled
TFLite libraries clash and the interpreter fails to read the model), so the
export check starts this module once per runtime:

    python -m kiosk.training.runtime_check RUNTIME MODEL.tflite CROPS.npy OUT.npy
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def embed_in_runtime(runtime: str, model: Path, crops: np.ndarray) -> np.ndarray:
    """Unnormalised embeddings of ``crops`` from ``model`` run by ``runtime`` in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        crops_file, out_file = Path(tmp) / "crops.npy", Path(tmp) / "out.npy"
        np.save(crops_file, crops)
        done = subprocess.run(
            [sys.executable, "-m", "kiosk.training.runtime_check", runtime, str(model), str(crops_file), str(out_file)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{runtime} could not run {model}:\n{done.stderr.strip()[-2000:]}")
        return np.load(out_file)


def main() -> None:
    runtime, model, crops_file, out_file = sys.argv[1:5]
    from kiosk.encoder import run_interpreter, runtime_interpreters

    interpreters = runtime_interpreters()
    if runtime not in interpreters:
        raise SystemExit(f"{runtime} is not installed")
    interpreter = interpreters[runtime](model_path=model, num_threads=2)
    interpreter.allocate_tensors()
    crops = np.load(crops_file)
    np.save(out_file, np.stack([run_interpreter(interpreter, crop) for crop in crops]))


if __name__ == "__main__":
    main()
