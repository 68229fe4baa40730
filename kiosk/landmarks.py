"""The landmark stage: five face points from the Haar crop, so the encoder sees an aligned face.

A small int8 CNN (``kiosk/models/landmarks.tflite``, trained by ``python -m kiosk.training.landmarks``
with YuNet's landmarks as the teacher) reads the shared Haar crop at 64x64 and predicts where the
eyes, nose tip and mouth corners are; :func:`kiosk.face.aligned_crop` then moves them onto the
canonical template. The CNN then looks again (:data:`REFINEMENTS`): on a crop that puts its first points
where the faces it learned from had theirs on average, upright and at their usual size, so what is left
of the Haar box's offset, scale and the head's roll no longer moves the points. It costs about 0.3 ms
per look and keeps the mandated Haar detector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.encoder import DEFAULT_MODEL_DIR, BadField, number_field, text_field, load_verified_model, read_metadata, run_interpreter
from kiosk.errors import ModelError
from kiosk.face import Face, crop_face, crop_points_to_image, points_from_crop, similarity_crop

LANDMARK_FILE = "landmarks.tflite"
LANDMARK_METADATA = "landmarks.json"
POINTS = 5
OUTPUT_SCALE = 10.0
"""The CNN predicts the points as fractions of the crop side, times this (training targets of a few units)."""
REFINEMENTS = 2
"""Looks of the CNN after the first, each on the crop that centres the previous points on the crop template.
Chosen on wild CelebA's calibration half (50 people never used for training, shipped encoder, 2026-12-01):
TAR at FAR 1e-3 78.3% with the first look alone, 79.8% with one later look, 80.5% with two (1e-4: 72.6, 74.2,
74.7%); the evaluation half agreed (82.5, 83.7, 84.2%). Each look costs about 0.3 ms."""


@dataclass(frozen=True)
class LandmarkInfo:
    """``landmarks.json``: the input side, the SHA-256 of ``landmarks.tflite`` and the crop template (where the
    training faces' points lay on average, as fractions of the crop side, [5, 2])."""

    input_size: int
    sha256: str
    crop_template: np.ndarray

    @classmethod
    def load(cls, path: Path) -> LandmarkInfo:
        data = read_metadata(path, "landmark model metadata", "retrain it (python -m kiosk.training.landmarks)")
        try:
            return cls(int(number_field(data, "input.size", lambda v: 8 <= v <= 512 and v == int(v), "a whole number in 8..512")),
                       text_field(data, "tflite_sha256"), crop_template(data))
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
        """The five points of ``face`` in ``image`` (BGR or gray), in image pixels ([5, 2]): a look at the Haar crop,
        then :data:`REFINEMENTS` looks at the crop that puts the previous points on the crop template."""
        return looked_points(self.crop_points, image, face, self.info.input_size, self.info.crop_template)


def looked_points(look: Callable[[np.ndarray], np.ndarray], image: np.ndarray, face: Face, size: int,
                  template: np.ndarray) -> np.ndarray:
    """The five points of ``face`` in image pixels: ``look`` (a ``size`` RGB crop -> [5, 2] crop fractions) at the
    Haar crop, then :data:`REFINEMENTS` looks at the crop that moves the previous points onto ``template``.
    The one implementation of the door's points; the training tool passes its Keras model as ``look``."""
    points = crop_points_to_image(face, look(crop_face(image, face, size=size)), size)
    for _ in range(REFINEMENTS):
        crop, matrix = similarity_crop(image, points, template * size, size)
        points = points_from_crop(matrix, look(crop), size)
    return points


def crop_template(data: dict) -> np.ndarray:
    """``refinement.crop_template`` of the metadata: five (x, y) fractions of the crop side, eyes above the mouth."""
    value = data.get("refinement", {}).get("crop_template") if isinstance(data.get("refinement"), dict) else None
    try:
        template = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        template = np.zeros(0)
    if template.shape != (POINTS, 2) or not np.all(np.isfinite(template)) or not np.all((template > 0) & (template < 1)) \
            or not template[:2, 1].max() < template[3:, 1].min():
        raise BadField(f"the field refinement.crop_template must be {POINTS} (x, y) pairs inside the crop (0..1), "
                       f"eyes above the mouth, got {value!r}")
    return template
