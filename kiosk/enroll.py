"""Enrolment: from photos (``kiosk enroll NAME --images``) or at the door (the button).

At the door, pressing the button starts :class:`ButtonEnrollment`: if
nobody is enrolled yet, the first person becomes admin; otherwise an admin
must first be recognised (so a stranger cannot enrol themselves). Then good
frames of the new face are collected for ``capture_seconds``: exactly one
face, large enough, sharp enough, and each new frame a little different
from the ones kept (pose variety). The person is stored as ``person-<n>``
until renamed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk.config import EnrollmentConfig
from kiosk.face import FaceKioskError, ImageError, image_files, read_image
from kiosk.gallery import Gallery, Person
from kiosk.match import match
from kiosk.pipeline import FaceEmbedding, FacePipeline

VARIETY_MAX_COSINE = 0.985
"""A new enrolment frame must differ from every kept one at least this much (pose variety)."""


class EnrollmentError(FaceKioskError):
    """Enrolment could not collect usable faces."""


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the face crop: low for blurred or out-of-focus faces."""
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def frame_quality(faces: int, embedded: FaceEmbedding | None, settings: EnrollmentConfig) -> str | None:
    """Why a frame is not good for enrolment, or None when it is."""
    if faces == 0 or embedded is None:
        return "no face"
    if not embedded.usable:
        return "face not clear enough"
    if faces > 1:
        return "more than one face"
    if embedded.face.w < settings.min_face_pixels:
        return f"face too small ({embedded.face.w:.0f} px < {settings.min_face_pixels})"
    if sharpness(embedded.crop) < settings.min_sharpness:
        return "face too blurred"
    return None


def enroll_from_images(name: str, paths: Iterable[Path], pipeline: FacePipeline, gallery: Gallery,
                       role: str | None = None, force: bool = False) -> tuple[Person, list[str]]:
    """Enrol ``name`` from photo files; returns the person and one note per skipped file."""
    vectors, notes = [], []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as error:
            notes.append(f"skipped: {error}")
            continue
        faces = pipeline.finder.find(image)
        if not faces:
            notes.append(f"skipped: no face found in {path}")
            continue
        if len(faces) > 1:
            notes.append(f"note: {len(faces)} faces in {path}; used the largest")
        embedded = pipeline.embed_face(image, faces[0])
        if not embedded.usable:
            notes.append(f"skipped: the face in {path} is not clear enough (blurred, dark or not a face)")
            continue
        vectors.append(embedded.embedding)
    if not vectors:
        raise EnrollmentError(f"no usable face in the given images; {name!r} was not enrolled")
    return gallery.add_person(name, np.stack(vectors), role), notes


def image_paths(items: Iterable[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); keep files as given."""
    out: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            out.extend(image_files(item))
        elif item.exists():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    return out


class Phase(enum.Enum):
    AWAIT_ADMIN = "waiting for an admin"
    CAPTURE = "capturing the new face"
    DONE = "done"
    FAILED = "failed"


@dataclass
class ButtonEnrollment:
    """One enrolment started by the button; feed it every frame until it is done or failed."""

    gallery: Gallery
    settings: EnrollmentConfig
    threshold: float
    margin: float
    started: float
    k: int = 3
    name: str | None = None  # None: the next free person-<n>
    phase: Phase = Phase.CAPTURE
    deadline: float = 0.0
    message: str = ""
    kept: list[np.ndarray] = field(default_factory=list)
    admin_votes: dict[str, int] = field(default_factory=dict)
    person: Person | None = None

    def __post_init__(self) -> None:
        self._templates = self.gallery.templates()
        self._admins = self.gallery.admins()
        if self.gallery.people() and self.settings.require_admin:
            self.phase = Phase.AWAIT_ADMIN
            self.deadline = self.started + self.settings.admin_timeout_seconds
            self.message = "an admin must look at the camera first"
        else:
            self._start_capture(self.started)

    def _start_capture(self, now: float) -> None:
        self.phase = Phase.CAPTURE
        self.deadline = now + self.settings.capture_seconds
        self.message = "look at the camera, turn your head a little"

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    def feed(self, now: float, faces: int, embedded: FaceEmbedding | None) -> None:
        """Take one frame (its face count and the largest face's embedding)."""
        if self.finished:
            return
        if self.phase is Phase.AWAIT_ADMIN:
            if now > self.deadline:
                self._fail("no admin was recognised in time; enrolment refused")
                return
            if embedded is not None and embedded.usable:
                result = match(embedded.embedding, self._templates, self.threshold, self.margin)
                if result.person is not None and result.person in self._admins:
                    self.admin_votes[result.person] = self.admin_votes.get(result.person, 0) + 1
                    if self.admin_votes[result.person] >= self.k:
                        self.message = f"admin {result.person} recognised"
                        self._start_capture(now)
            return
        if now > self.deadline:
            if len(self.kept) >= max(2, self.settings.frames // 2):
                self._store()
            else:
                self._fail(f"only {len(self.kept)} good frames in {self.settings.capture_seconds:g} s; nobody was enrolled")
            return
        if frame_quality(faces, embedded, self.settings) is not None:
            return
        vector = embedded.embedding
        if self.kept and max(float(v @ vector) for v in self.kept) > VARIETY_MAX_COSINE:
            return
        if self._templates.names:
            known = match(vector, self._templates, self.threshold, self.margin)
            if known.person is not None and self.phase is Phase.CAPTURE and self.admin_votes.get(known.person):
                return  # still the admin in front of the camera, not the new person
        self.kept.append(vector)
        if len(self.kept) >= self.settings.frames:
            self._store()

    def _store(self) -> None:
        name = self.name or self.gallery.next_auto_name()
        self.person = self.gallery.add_person(name, np.stack(self.kept))
        self.phase = Phase.DONE
        self.message = f"enrolled {name} ({self.person.role}) from {len(self.kept)} frames"

    def _fail(self, reason: str) -> None:
        self.phase = Phase.FAILED
        self.message = reason
