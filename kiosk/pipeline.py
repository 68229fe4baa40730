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
        """Embed the largest usable face in a BGR photo; None when no usable face is found.

        When no box of a detection pass is usable, the later passes look on (a photo is worth the time;
        the door's tracker stops at the first pass that finds a box).
        """
        for faces in self.finder.passes(image):
            result = self.embed_faces(image, faces)
            if result is not None and result.usable:
                return result
        return None

    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> FaceEmbedding | None:
        """The first of ``faces`` (largest first, at most :data:`FACES_TRIED`) whose embedding is usable,
        else the largest one's (unusable) embedding; None without faces.

        A Haar box larger than the real face is sometimes no face at all (a pattern, a poster, a head
        with its surroundings): the encoder's strength gate rejects it, and a smaller box is the face.
        On wild CelebA (100 unseen people) the largest box was unusable in 87 of 2,208 photos, and a
        smaller one was usable in 43 of those (2026-12-01).
        """
        largest = None
        for face in faces[:FACES_TRIED]:
            result = self.embed_face(image, face)
            if result.usable:
                return result
            largest = largest or result
        return largest


FACES_TRIED = 3
"""Boxes embedded per image at most, largest first, before the image counts as showing no usable face."""


def without_refused(faces: list[Face], embedded: FaceEmbedding | None) -> list[Face]:
    """``faces`` from the one :meth:`FacePipeline.embed_faces` took onwards: the larger boxes before it
    were refused by the encoder's strength gate, so they are no faces (not a second person in view)."""
    if embedded is None or not embedded.usable:
        return faces
    return faces[faces.index(embedded.face):]
