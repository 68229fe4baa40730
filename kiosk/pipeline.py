"""Detect -> crop -> encode: the face pipeline as the door, enrolment and ``kiosk embed`` use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.encoder import DEFAULT_MODEL_DIR, Encoder
from kiosk.errors import ModelError
from kiosk.face import DetectorSettings, Face, FaceFinder, aligned_crop, crop_face
from kiosk.landmarks import Landmarker


@dataclass(frozen=True)
class FaceEmbedding:
    """A detected face, its encoder crop, its L2-normalised embedding and its strength.

    ``usable`` is False when the raw embedding is too short to trust (see
    :meth:`kiosk.encoder.Encoder.embed_with_strength`): such a face counts as
    not acquired, it is never matched or enrolled. ``enrollable``: strong
    enough to become a template (:attr:`kiosk.encoder.Encoder.min_enrol_strength`).
    """

    face: Face
    crop: np.ndarray
    embedding: np.ndarray
    strength: float = 0.0
    usable: bool = True
    enrollable: bool = True


class FacePipeline:
    """Haar detection, the encoder's input (the shared crop, or the face aligned by the landmark stage when the
    model was trained on aligned faces) and the int8 encoder, composed."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, detector: DetectorSettings | None = None, num_threads: int = 2,
                 runtime: str = "auto") -> None:
        self.finder = FaceFinder(detector)
        self.encoder = Encoder(model_dir, num_threads=num_threads, runtime=runtime)
        self.landmarker = None
        if self.encoder.info.alignment == "landmarks":
            self.landmarker = Landmarker(model_dir, runtime=runtime)
            expected = self.encoder.info.extra.get("input", {}).get("landmarks_sha256")
            if expected != self.landmarker.info.sha256:
                raise ModelError(f"the landmark model in {model_dir} is not the one the encoder was trained with "
                                 f"(sha256 {self.landmarker.info.sha256[:12]}..., the encoder expects {str(expected)[:12]}...); "
                                 "reinstall face-kiosk or copy both models from one training run")

    def encoder_input(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The RGB crop the encoder takes for ``face``: the one preprocessing of the door and the training tool."""
        size = self.encoder.input_size
        if self.landmarker is None:
            return crop_face(image, face, size=size)
        return aligned_crop(image, self.landmarker.points(image, face), size=size)

    def embed_face(self, image: np.ndarray, face: Face) -> FaceEmbedding:
        """Embed one already-detected face of ``image``."""
        crop = self.encoder_input(image, face)
        embedding, strength = self.encoder.embed_with_strength(crop)
        return FaceEmbedding(face, crop, embedding, strength, strength >= self.encoder.min_strength,
                             strength >= self.encoder.min_enrol_strength)

    def embed_largest(self, image: np.ndarray) -> FaceEmbedding | None:
        """Embed the largest face in a BGR image; None when no usable face is found."""
        face = self.finder.largest(image)
        if face is None:
            return None
        result = self.embed_face(image, face)
        return result if result.usable else None
