"""The landmark stage: five face points from the Haar crop, so the encoder sees an aligned face.

A small int8 CNN (``kiosk/models/landmarks.tflite``, trained by ``python -m kiosk.training.landmarks``
with YuNet's landmarks as the teacher) reads the shared Haar crop at 64x64 and predicts where the
eyes, nose tip and mouth corners are; :func:`kiosk.face.aligned_crop` then moves them onto the
canonical template. It costs about 0.3 ms per face and keeps the mandated Haar detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.encoder import DEFAULT_MODEL_DIR, BadField, number_field, text_field, load_verified_model, read_metadata, run_interpreter
from kiosk.errors import ModelError
from kiosk.face import Face, crop_face, crop_points_to_image

LANDMARK_FILE = "landmarks.tflite"
LANDMARK_METADATA = "landmarks.json"
POINTS = 5
OUTPUT_SCALE = 10.0
"""The CNN predicts the points as fractions of the crop side, times this (training targets of a few units)."""


@dataclass(frozen=True)
class LandmarkInfo:
    """``landmarks.json``: the input side and the SHA-256 of ``landmarks.tflite``."""

    input_size: int
    sha256: str

    @classmethod
    def load(cls, path: Path) -> LandmarkInfo:
        data = read_metadata(path, "landmark model metadata", "retrain it (python -m kiosk.training.landmarks)")
        try:
            return cls(int(number_field(data, "input.size", lambda v: 8 <= v <= 512 and v == int(v), "a whole number in 8..512")),
                       text_field(data, "tflite_sha256"))
        except BadField as error:
            raise ModelError(f"landmark model metadata {path}: {error}") from None


class Landmarker:
    """Five points (image pixels: left eye, right eye, nose tip, left and right mouth corner) of a Haar face."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, num_threads: int = 1, runtime: str = "auto") -> None:
        model_dir = Path(model_dir)
        self.info = LandmarkInfo.load(model_dir / LANDMARK_METADATA)
        self.runtime, self._interpreter = load_verified_model(model_dir / LANDMARK_FILE, self.info.sha256, self.info.input_size,
                                                              num_threads, what="landmark model", runtime=runtime)
        shape = tuple(self._interpreter.get_output_details()[0]["shape"])
        if shape != (1, 2 * POINTS):
            raise ModelError(f"landmark model {model_dir / LANDMARK_FILE} outputs {shape}, expected (1, {2 * POINTS})")

    def crop_points(self, crop: np.ndarray) -> np.ndarray:
        """The points of one ``input_size`` RGB Haar crop, as fractions of its side ([5, 2])."""
        return run_interpreter(self._interpreter, crop).reshape(POINTS, 2) / OUTPUT_SCALE

    def points(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The five points of ``face`` in ``image`` (BGR or gray), in image pixels ([5, 2])."""
        size = self.info.input_size
        return crop_points_to_image(face, self.crop_points(crop_face(image, face, size=size)), size)
