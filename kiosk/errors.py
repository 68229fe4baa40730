"""The errors face-kiosk reports to its user: one hierarchy, one base class.

Every error a user can act on is a :class:`FaceKioskError` whose message names
the problem and what to do; the CLI prints it and exits 2. Anything else is a
bug (the door is locked either way).
"""

from __future__ import annotations


class FaceKioskError(Exception):
    """Base class of the errors face-kiosk reports to its user."""


class ConfigError(FaceKioskError):
    """The configuration file is unreadable or has a bad key or value."""


class ImageError(FaceKioskError):
    """An image file could not be read or decoded."""


class CameraError(FaceKioskError):
    """The camera cannot deliver a frame."""


class EndOfStream(CameraError):
    """A finite source (video file, image folder) has no more frames."""


class ModelError(FaceKioskError):
    """The model file or its metadata is missing, damaged or does not fit."""


class HardwareError(FaceKioskError):
    """A GPIO device could not be set up or driven."""


class GalleryError(FaceKioskError):
    """The gallery database cannot be used (corrupt, locked, full disk, bad request)."""


class ScheduleError(FaceKioskError):
    """A person's schedule cannot be read (the message says which part and how to write it)."""


class EnrollmentError(FaceKioskError):
    """Enrolment could not collect usable faces."""


class ServiceRunning(FaceKioskError):
    """``<state_dir>/kiosk.lock`` is held: ``kiosk run`` (or a restore) is using the state folder."""


class ApiError(FaceKioskError):
    """The running door's local API cannot be reached, or it refused a request (the message says why)."""


class DoorNotRunning(ApiError):
    """No door answers on the local API's socket (the service is stopped)."""


class DoorNotAnswering(ApiError):
    """The door's frame loop did not take an order in time (it is stuck or stopping)."""


class TrainingError(FaceKioskError):
    """A training step (``kiosk-train``, the desktop tool) cannot go on: missing tools or data, or a result that must not ship."""
