"""The int8 TFLite face encoder and its metadata (``kiosk/models/encoder.json``).

The encoder runs on the TFLite runtime named by ``recognition.runtime``:
``auto`` picks ``ai-edge-litert`` when installed, else ``tflite-runtime``. At load time the ``.tflite`` file is checked against the
SHA-256 in its metadata and its input/output shapes against the metadata's
spec, so a swapped, truncated or wrong model is refused with a message that
says what is wrong instead of producing silent nonsense at the door.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.errors import ModelError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_FILE = "encoder.tflite"
METADATA_FILE = "encoder.json"


RUNTIMES = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}
"""The TFLite runtimes by name (``recognition.runtime``), preferred first: the module holding each one's ``Interpreter``."""


def runtime_interpreters() -> dict[str, type]:
    """The installed TFLite interpreter classes, preferred first."""
    found: dict[str, type] = {}
    for name, module in RUNTIMES.items():
        try:
            found[name] = importlib.import_module(module).Interpreter
        except ImportError:
            pass
    return found


def choose_interpreter(name: str = "auto") -> tuple[str, type]:
    """(name, class) of the TFLite runtime called ``name``, or of the preferred installed one for ``auto``."""
    runtimes = runtime_interpreters()
    if name != "auto":
        if name not in RUNTIMES:
            raise ModelError(f"unknown TFLite runtime {name!r} (known: auto, {', '.join(RUNTIMES)})")
        if name not in runtimes:
            raise ModelError(f"the TFLite runtime {name!r} (recognition.runtime) is not installed: pip install {name}")
        return name, runtimes[name]
    if not runtimes:
        raise ModelError(
            "no TFLite runtime is installed: pip install ai-edge-litert (or tflite-runtime on Python <= 3.11 with numpy < 2)"
        )
    return next(iter(runtimes.items()))


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[Callable[[], str]]:
    """Hold back what native code writes to stderr (the runtimes' "INFO: Created TensorFlow Lite XNNPACK
    delegate" on every start); yields a function returning it, for an error message that needs it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)

        def held_text() -> str:
            held.seek(0)
            return held.read().decode(errors="replace").strip()

        try:
            yield held_text
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run_interpreter(interpreter: Any, crop: np.ndarray) -> np.ndarray:
    """Run a one-image int8 (or float) model on a uint8 RGB crop; returns float output."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        if crop.dtype == np.uint8 and scale == 1.0 and zero == -128:
            # What the export writes (pixels 0..255 as int8 -128..127): flipping the top bit is the same
            # arithmetic, exactly, and a twentieth of its time per frame (three landmark looks and an embedding).
            data = (crop ^ np.uint8(0x80)).view(np.int8)
        else:
            data = np.clip(np.round(crop.astype(np.float32) / scale + zero), -128, 127).astype(np.int8)
    elif inp["dtype"] == np.uint8:
        data = crop.astype(np.uint8)
    else:
        data = crop.astype(np.float32)
    interpreter.set_tensor(inp["index"], data[None])
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"])[0]
    if out["dtype"] in (np.int8, np.uint8):
        scale, zero = out["quantization"]
        return (raw.astype(np.float32) - zero) * scale
    return raw.astype(np.float32)


def read_metadata(path: Path, what: str, rebuild: str) -> Any:
    """The parsed JSON of a model's metadata file; a missing or unreadable file is a :class:`ModelError` saying
    what it is and how to get it back (``rebuild``: the command that writes it)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise ModelError(f"{what} {path} is missing; reinstall face-kiosk or {rebuild}") from error
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{what} {path} is not valid JSON: {error}") from error


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ALIGNMENTS = {
    "haar-crop": "the Haar box's shared crop (kiosk.face.crop_face)",
    "landmarks": "the Haar face aligned by the landmark stage (kiosk.landmarks, kiosk.face.aligned_crop)",
}
"""What an encoder expects as input (``input.alignment`` in its metadata)."""


@dataclass
class ModelInfo:
    """The metadata stored next to the model in ``encoder.json``, range-checked on load.

    ``impostor_curve``: ((cosine, per-comparison false-accept rate), ...), cosines rising and
    rates falling (``open_set.curve``, see :mod:`kiosk.openset`); empty when the model was
    not calibrated for open-set use.
    """

    input_size: int
    embedding_size: int
    threshold: float
    target_far: float
    sha256: str
    min_strength: float = 0.0
    min_enrol_strength: float = 0.0
    alignment: str = "haar-crop"
    impostor_curve: tuple[tuple[float, float], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModelInfo:
        """Read and validate ``encoder.json``; a missing or out-of-range field is a :class:`ModelError` naming it."""
        data = read_metadata(path, "model metadata", "retrain (kiosk-train)")
        try:
            return cls(
                input_size=int(number_field(data, "input.size", lambda v: v >= 1 and v == int(v), "a positive whole number")),
                embedding_size=int(number_field(data, "embedding_size", lambda v: v >= 1 and v == int(v), "a positive whole number")),
                threshold=number_field(data, "threshold.value", lambda v: 0 < v < 1, "a cosine in (0, 1)"),
                target_far=number_field(data, "threshold.target_far", lambda v: 0 < v < 1, "a rate in (0, 1)"),
                sha256=text_field(data, "tflite_sha256"),
                min_strength=number_field(data, "quality.min_strength", lambda v: v >= 0, "a length >= 0", default=0.0),
                min_enrol_strength=number_field(data, "quality.min_enrol_strength", lambda v: v >= 0, "a length >= 0",
                                                default=0.0),
                alignment=_choice(data, "input.alignment", ALIGNMENTS, default="haar-crop"),
                impostor_curve=_impostor_curve(data),
                extra=data,
            )
        except BadField as error:
            raise ModelError(f"model metadata {path}: {error}") from None


class BadField(ValueError):
    """A field of the metadata is missing or out of range (the message names it)."""


_MISSING = object()


def _lookup(data: Any, dotted: str, default: Any = _MISSING) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            if default is _MISSING:
                raise BadField(f"lacks the field {dotted}")
            return default
        data = data[key]
    return data


def _finite(value: Any, name: str, valid: Any, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not valid(value):
        raise BadField(f"the field {name} must be {meaning}, got {value!r}")
    return float(value)


def number_field(data: dict, dotted: str, valid: Any, meaning: str, default: Any = _MISSING) -> float:
    return _finite(_lookup(data, dotted, default), dotted, valid, meaning)


def text_field(data: dict, dotted: str) -> str:
    value = _lookup(data, dotted)
    if not isinstance(value, str) or not value:
        raise BadField(f"the field {dotted} must be non-empty text, got {value!r}")
    return value


def _choice(data: dict, dotted: str, choices: dict[str, str], default: str) -> str:
    value = _lookup(data, dotted, default)
    if value not in choices:
        raise BadField(f"the field {dotted} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _impostor_curve(data: dict) -> tuple[tuple[float, float], ...]:
    """``open_set.curve``: at least two [cosine, rate] points, cosines rising in (-1, 1), rates falling in (0, 1]."""
    points = _lookup(data, "open_set.curve", default=None)
    if points is None:
        return ()
    name = "open_set.curve"
    if not isinstance(points, list) or len(points) < 2 or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise BadField(f"the field {name} must be a list of at least two [cosine, false-accept rate] pairs")
    curve = tuple(
        (_finite(cosine, f"{name}[{i}] cosine", lambda v: -1 < v < 1, "in (-1, 1)"),
         _finite(rate, f"{name}[{i}] rate", lambda v: 0 < v <= 1, "in (0, 1]"))
        for i, (cosine, rate) in enumerate(points)
    )
    for i in range(1, len(curve)):
        if not (curve[i][0] > curve[i - 1][0] and curve[i][1] < curve[i - 1][1]):
            raise BadField(f"the field {name} must have rising cosines and falling rates; point {i} {list(curve[i])} "
                            f"does not follow {list(curve[i - 1])}")
    return curve


def load_verified_model(path: Path, sha256: str, input_size: int, num_threads: int, what: str = "model",
                        runtime: str = "auto") -> tuple[str, Any]:
    """(runtime name, allocated interpreter) for a ``.tflite`` checked against its metadata.

    Refuses, with a message naming the file, a missing file, a hash that
    differs from the metadata's (damaged or swapped), a file the runtime
    cannot load, and an input shape other than 1 x size x size x 3.
    """
    if not path.is_file():
        raise ModelError(f"{what} file {path} is missing; reinstall face-kiosk or retrain (kiosk-train)")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelError(
            f"{what} file {path} does not match its metadata (sha256 {actual[:12]}... "
            f"expected {sha256[:12]}...): it is damaged or was swapped; reinstall it"
        )
    runtime, interpreter_class = choose_interpreter(runtime)
    with native_stderr_captured() as native_messages:
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{runtime} cannot load {path}: {error} {native_messages()}".strip()) from error
    shape = tuple(interpreter.get_input_details()[0]["shape"])
    expected = (1, input_size, input_size, 3)
    if shape != expected:
        raise ModelError(f"{what} {path} takes input {shape}, its metadata says {expected}")
    return runtime, interpreter


class Encoder:
    """Turns a face crop into an L2-normalised embedding with the shipped int8 model."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, num_threads: int = 2, runtime: str = "auto") -> None:
        self.model_dir = model_dir = Path(model_dir)
        self.model_path = model_dir / MODEL_FILE
        self.info = ModelInfo.load(model_dir / METADATA_FILE)
        self.runtime, self._interpreter = load_verified_model(self.model_path, self.info.sha256, self.info.input_size, num_threads,
                                                              runtime=runtime)
        out_shape = tuple(self._interpreter.get_output_details()[0]["shape"])
        if out_shape != (1, self.info.embedding_size):
            raise ModelError(f"model {self.model_path} outputs {out_shape}, its metadata says (1, {self.info.embedding_size})")

    @property
    def input_size(self) -> int:
        """Side of the square RGB crop the model takes."""
        return self.info.input_size

    @property
    def threshold(self) -> float:
        """The calibrated cosine threshold for an unlock."""
        return self.info.threshold

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embedding of one uint8 RGB crop."""
        return self.embed_with_strength(crop)[0]

    def embed_with_strength(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """(L2-normalised embedding, length of the raw embedding) of one uint8 RGB crop.

        The raw length is a face-quality signal: crops that are not a clear
        face (false detections, heavy blur, extreme light) give short vectors,
        and short vectors of different people resemble each other.
        """
        if crop.shape != (self.input_size, self.input_size, 3):
            raise ValueError(f"face crop must be {self.input_size}x{self.input_size}x3, got {crop.shape}")
        vector = run_interpreter(self._interpreter, crop)
        strength = float(np.linalg.norm(vector))
        return (vector / max(strength, 1e-12)).astype(np.float32), strength

    @property
    def min_strength(self) -> float:
        """Raw embedding length below which a face is not usable (0: no gate)."""
        return self.info.min_strength

    @property
    def min_enrol_strength(self) -> float:
        """Raw embedding length an enrolment photo or frame needs (never below :attr:`min_strength`).

        A template is compared with every stranger who ever walks up: a weak face (small, blurred,
        dark, turned away) lies nearer the encoder's mean and resembles many of them.
        """
        return max(self.info.min_strength, self.info.min_enrol_strength)
