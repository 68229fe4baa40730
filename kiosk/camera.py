"""Camera sources behind one small interface: ``read() -> BGR frame``, ``close()``.

- ``picamera``: the Pi camera through picamera2 (imported only when chosen).
- an integer (``0``): a USB camera by index, through OpenCV.
- ``rtsp://...``, ``http://...`` or a video file: OpenCV.
- a folder of images: played in file-name order, numbers by value (tests, the demo, replaying incidents).

A failing source raises :class:`CameraError`; a finished one (end of a file
or folder) raises :class:`EndOfStream`. :class:`ReconnectingCamera` retries a
lost camera with exponential backoff while the door stays locked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from kiosk.errors import CameraError, EndOfStream, ImageError
from kiosk.images import IMAGE_SUFFIXES, read_image


@dataclass
class CameraSettings:
    """Where frames come from (the ``[camera]`` config section)."""

    source: str = "picamera"  # "picamera", a USB index ("0"), rtsp://... / http://..., a video file, or a folder of images
    backend: str = "auto"  # "auto" (from the source), "picamera", "opencv" or "folder"
    width: int = 640
    height: int = 480
    max_fps: float = 15.0  # frames processed per second at most


class Camera(Protocol):
    name: str

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


def frame_order(path: Path) -> tuple:
    """Sort key of a recorded frame's file: its name with the numbers in it compared by value, so that
    ``frame_9.jpg`` plays before ``frame_10.jpg`` (camera tools rarely pad the frame number)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name) if part)


class FolderCamera:
    """Images of a folder, in file-name order (:func:`frame_order`), as consecutive frames."""

    def __init__(self, folder: Path, loop: bool = False) -> None:
        self.folder = Path(folder)
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES] if self.folder.is_dir() else []
        self.files = sorted(files, key=frame_order)
        if not self.files:
            raise CameraError(f"no images in {self.folder}")
        self.loop = loop
        self.index = 0
        self.name = f"folder {self.folder}"

    def read(self) -> np.ndarray:
        if self.index >= len(self.files):
            if not self.loop:
                raise EndOfStream(f"{self.name}: all {len(self.files)} frames played")
            self.index = 0
        path = self.files[self.index]
        self.index += 1
        try:
            return read_image(path)
        except ImageError as error:
            raise CameraError(str(error)) from error

    def close(self) -> None:
        pass


OPENCV_LOG_SILENT = 0
"""cv2.utils.logging.LOG_LEVEL_SILENT (not exported by every OpenCV 4.x wheel)."""


class OpenCVCamera:
    """A USB camera (index), a network stream (URL) or a video file, through OpenCV."""

    def __init__(self, source: int | str, width: int = 640, height: int = 480) -> None:
        self.source = source
        self.name = f"camera {source}"
        self.is_file = isinstance(source, str) and Path(source).is_file()  # a video file ends; a stream or device does not
        previous = cv2.getLogLevel()
        cv2.setLogLevel(OPENCV_LOG_SILENT)  # OpenCV's own WARN/ERROR lines on every retry: a failed open is reported once, below
        try:
            self._capture = cv2.VideoCapture(source)
        finally:
            cv2.setLogLevel(previous)
        if not self._capture.isOpened():
            raise CameraError(f"cannot open {self.name}: no such device, stream or file (check the cable, URL or permissions)")
        if isinstance(source, int):
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def read(self) -> np.ndarray:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            if self.is_file:
                raise EndOfStream(f"{self.name}: end of video")
            raise CameraError(f"{self.name} delivered no frame")
        return frame

    def close(self) -> None:
        self._capture.release()


class PiCamera:
    """The Raspberry Pi camera through picamera2 (from apt: python3-picamera2)."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as error:
            raise CameraError(
                "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create "
                "the venv with --system-site-packages (deploy/install.sh does both)"
            ) from error
        self.name = "Pi camera"
        try:
            self._camera = Picamera2()
            self._camera.configure(self._camera.create_video_configuration(main={"size": (width, height), "format": "RGB888"}))
            self._camera.start()
        except Exception as error:  # noqa: BLE001 - libcamera raises many types
            raise CameraError(f"cannot start the Pi camera: {error} (is it connected and enabled? try: rpicam-hello)") from error

    def read(self) -> np.ndarray:
        try:
            # picamera2's "RGB888" is stored B, G, R in memory: OpenCV's BGR order.
            return self._camera.capture_array("main")
        except Exception as error:  # noqa: BLE001
            raise CameraError(f"Pi camera failed: {error}") from error

    def close(self) -> None:
        try:
            self._camera.stop()
            self._camera.close()
        except Exception:  # noqa: BLE001 - closing a broken camera must not raise
            pass


def _opencv(settings: CameraSettings) -> Camera:
    source = settings.source
    return OpenCVCamera(int(source) if source.isdigit() else source, settings.width, settings.height)


CAMERA_BACKENDS: dict[str, Callable[[CameraSettings], Camera]] = {
    "picamera": lambda s: PiCamera(s.width, s.height),
    "opencv": _opencv,
    "folder": lambda s: FolderCamera(Path(s.source)),
}
"""Camera backends by name (``camera.backend``); ``folder`` is the camera of the tests, the demo and replays."""


def backend_for(source: str) -> str:
    """The backend that fits a source: ``picamera``, a folder, else OpenCV (a device index, a URL or a video file)."""
    if source == "picamera":
        return "picamera"
    if Path(source).is_dir():
        return "folder"
    if source.isdigit() or "://" in source or Path(source).exists():
        return "opencv"
    raise CameraError(f"camera source {source!r} is not 'picamera', a device index, a URL, a video file or a folder of images")


def open_camera(settings: CameraSettings) -> Camera:
    """Open the camera the settings name: ``camera.backend``, or the one that fits ``camera.source`` when it is ``auto``."""
    name = backend_for(settings.source) if settings.backend == "auto" else settings.backend
    return CAMERA_BACKENDS[name](settings)


class FrameSource(Protocol):
    """What the door reads: a frame, or None while the camera is down (``last_error`` says why)."""

    last_error: str | None

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class ReconnectingCamera:
    """Wraps a camera factory: a failed read closes the camera and reopens it with backoff.

    :meth:`read` returns None while the camera is down (the caller keeps the
    door locked and shows the error LED) and raises only :class:`EndOfStream`.
    """

    def __init__(self, factory: Callable[[], Camera], clock: Callable[[], float] = time.monotonic,
                 first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.factory = factory
        self.clock = clock
        self.first_delay, self.max_delay = first_delay, max_delay
        self.camera: Camera | None = None
        self.delay = first_delay
        self.next_attempt = float("-inf")
        self.last_error: str | None = None
        self.reconnects = 0

    @property
    def up(self) -> bool:
        return self.camera is not None

    def read(self) -> np.ndarray | None:
        now = self.clock()
        if self.camera is None:
            if now < self.next_attempt:
                return None
            try:
                self.camera = self.factory()
                if self.last_error is not None:
                    self.reconnects += 1
            except EndOfStream:
                raise
            except CameraError as error:
                self._failed(str(error), now)
                return None
        try:
            frame = self.camera.read()
        except EndOfStream:
            raise
        except CameraError as error:
            self._failed(str(error), now)
            return None
        self.delay = self.first_delay
        self.last_error = None if self.reconnects == 0 else self.last_error
        return frame

    def _failed(self, message: str, now: float) -> None:
        self.last_error = message
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        self.next_attempt = now + self.delay
        self.delay = min(self.delay * 2, self.max_delay)

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None


class PlaylistCamera:
    """Frames from a list of image files (repeats allowed), each decoded once: recorded scenes."""

    def __init__(self, files: list[Path], on_frame: Callable[[], None] | None = None, loop: bool = False) -> None:
        self.files = [Path(f) for f in files]
        self.on_frame = on_frame
        self.loop = loop
        self.index = 0
        self.name = f"playlist of {len(self.files)} frames"
        self._decoded: dict[Path, np.ndarray] = {}

    def read(self) -> np.ndarray:
        if self.index >= len(self.files):
            if not self.loop:
                raise EndOfStream(f"{self.name}: all frames played")
            self.index = 0
        path = self.files[self.index]
        self.index += 1
        if self.on_frame is not None:
            self.on_frame()
        if path not in self._decoded:
            try:
                self._decoded[path] = read_image(path)
            except ImageError as error:
                raise CameraError(str(error)) from error
        return self._decoded[path]

    def close(self) -> None:
        pass
