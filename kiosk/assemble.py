"""The composition root: the only place where a :class:`~kiosk.config.Config` becomes the door's parts.

``kiosk run``, the demo, enrolment, ``kiosk embed``, ``selftest``, the soak
and attack benchmarks and the open-set calibration all build their parts
here, so every path runs the same detector settings, model, TFLite runtime,
liveness mode and pins as the door. Each function builds one part; :func:`door`
builds the whole door from the parts it is not given (tests and benchmarks
pass their own camera, clock or mock pins).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kiosk.camera import Camera, ReconnectingCamera, open_camera
from kiosk.config import Config
from kiosk.door import Door
from kiosk.encoder import DEFAULT_MODEL_DIR, METADATA_FILE, ModelInfo
from kiosk.errors import GalleryError
from kiosk.gallery import Gallery
from kiosk.gpio import DoorHardware
from kiosk.liveness import LivenessCheck, make_liveness
from kiosk.pipeline import FacePipeline


def default_config(models: Path | None = None) -> Config:
    """The door's out-of-the-box config, with the model in ``models`` if given (calibration and benchmarks run the door's front end)."""
    config = Config()
    if models is not None:
        config.recognition.model_dir = str(models)
    return config


def model_dir(config: Config) -> Path:
    """``recognition.model_dir``, or the models shipped inside the package."""
    return Path(config.recognition.model_dir) if config.recognition.model_dir else DEFAULT_MODEL_DIR


def model_info(config: Config) -> ModelInfo:
    """The encoder's metadata (threshold, impostor curve, SHA-256), without loading the model."""
    return ModelInfo.load(model_dir(config) / METADATA_FILE)


def pipeline(config: Config, num_threads: int = 2) -> FacePipeline:
    """Haar detection with ``[detector]``, the shared crop and the encoder on ``recognition.runtime``."""
    return FacePipeline(model_dir(config), config.detector, num_threads=num_threads, runtime=config.recognition.runtime)


def liveness(config: Config) -> LivenessCheck:
    """The check of ``liveness.mode``, judging the frames of one decision window."""
    return make_liveness(config.liveness.mode, model_dir(config), window_seconds=config.decision.window_seconds,
                         runtime=config.recognition.runtime, min_face_fraction=config.liveness.min_face_fraction)


def gallery(config: Config, must_exist: bool = False, clock: Callable[[], float] = time.time) -> Gallery:
    """The gallery in the state folder; with ``must_exist``, a missing one is an error, not a new empty gallery.

    Commands that only read or copy the gallery (``people``, ``events``,
    ``backup``) pass ``must_exist``, so a mistyped ``--state-dir`` says so
    instead of showing an empty door.
    """
    path = config.database
    if must_exist and not path.exists():
        raise GalleryError(f"there is no gallery in {path.parent} (nobody was ever enrolled there): check --state-dir "
                           "or storage.state_dir, or enrol someone first (kiosk enroll NAME --camera --role admin)")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise GalleryError(f"cannot create the state folder {path.parent} ({error.strerror or error}): set "
                           "storage.state_dir in the config, or --state-dir, to a folder this user can write") from error
    return Gallery(path, model_info(config).sha256, clock=clock)


def frames(config: Config) -> Camera:
    """The camera of ``[camera]`` opened once, for a command that reports a failure rather than waiting (enrolment, selftest)."""
    return open_camera(config.camera)


def camera(config: Config, clock: Callable[[], float] = time.monotonic) -> ReconnectingCamera:
    """The camera of ``[camera]``, reopened with backoff when it is lost."""
    return ReconnectingCamera(lambda: open_camera(config.camera), clock)


def hardware(config: Config) -> DoorHardware:
    """Relay, LED and button on ``[gpio]``'s pins through its named pin factory (``mock`` simulates them)."""
    return DoorHardware(config.gpio)


def door(config: Config, *, face_pipeline: FacePipeline | None = None, door_gallery: Gallery | None = None,
         door_camera: ReconnectingCamera | None = None, door_hardware: DoorHardware | None = None,
         door_liveness: LivenessCheck | None = None, clock: Callable[[], float] = time.monotonic) -> Door:
    """The door, from the parts given and the config for the rest.

    The hardware comes first and is closed again (relay off) if any later
    part fails, so a half-built door never leaves a pin driven. The caller
    closes the door, then ``door.gallery``.
    """
    door_hardware = door_hardware or hardware(config)
    opened = None
    try:
        face_pipeline = face_pipeline or pipeline(config)
        door_liveness = door_liveness or liveness(config)
        door_gallery = door_gallery or (opened := gallery(config))
        return Door(config, door_camera or camera(config, clock), face_pipeline, door_gallery, door_hardware,
                    clock=clock, liveness=door_liveness)
    except BaseException:
        door_hardware.close()
        if opened is not None:
            opened.close()
        raise
