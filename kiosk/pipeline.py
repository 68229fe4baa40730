"""Detect -> crop -> encode: the face pipeline as the door, enrolment and ``kiosk embed`` use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.encoder import DEFAULT_MODEL_DIR, Encoder
from kiosk.face import DetectorSettings, Face, FaceFinder, crop_face


@dataclass(frozen=True)
class FaceEmbedding:
    """A detected face, its encoder crop and its L2-normalised embedding."""

    face: Face
    crop: np.ndarray
    embedding: np.ndarray


class FacePipeline:
    """Haar detection, the shared crop and the int8 encoder, composed."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, detector: DetectorSettings | None = None, num_threads: int = 2) -> None:
        self.finder = FaceFinder(detector)
        self.encoder = Encoder(model_dir, num_threads=num_threads)

    def embed_face(self, image: np.ndarray, face: Face) -> FaceEmbedding:
        """Embed one already-detected face of ``image``."""
        crop = crop_face(image, face, size=self.encoder.input_size)
        return FaceEmbedding(face, crop, self.encoder.embed(crop))

    def embed_largest(self, image: np.ndarray) -> FaceEmbedding | None:
        """Embed the largest face in a BGR image, or None when no face is found."""
        face = self.finder.largest(image)
        return None if face is None else self.embed_face(image, face)
