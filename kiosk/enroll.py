"""Enrolment: from photos (``kiosk enroll NAME --images``) or at the door (the button).

Enrolment is as strict as an unlock. At the door, pressing the button
starts :class:`ButtonEnrollment`: an admin must first pass the same check as
an unlock (``k`` of ``n`` frames, live), then the new person's face is
collected for ``capture_seconds`` from one face track (exactly one face,
large enough, sharp enough, each new frame a little different from the
ones kept), and stored only if that track passes the liveness check too. The
button never creates the first admin: with nobody (or no admin) enrolled it
refuses and says how to enrol one at install time (``kiosk enroll NAME
--camera --role admin``, whose operator is trusted: ``trusted=True``).
People enrolled with the button are users named ``person-<n>`` until renamed.

From photos, the photos must agree: one that does not match the others is
named and refused, and a face that already matches another enrolled person
needs ``force``.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk.config import EnrollmentConfig
from kiosk.decision import DecisionSettings, DoorDecision, Liveness, Observation
from kiosk.errors import EnrollmentError, GalleryError, ImageError
from kiosk.face import AttemptBoundary
from kiosk.gallery import Gallery, Person, Templates
from kiosk.images import image_files, read_image
from kiosk.pipeline import FaceEmbedding, FacePipeline, without_refused

log = logging.getLogger(__name__)

VARIETY_MAX_COSINE = 0.985
"""A new enrolment frame must differ from every kept one at least this much (pose variety)."""
LIVE_SCORES_STATE = "liveness_live_scores"
"""The gallery state key of the liveness scores of camera enrolments: this door's live faces, in its light."""
LIVE_SCORES_KEPT = 20
"""Enrolments whose scores are kept (the newest): the door's light is what it is now."""


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the face crop: low for blurred or out-of-focus faces."""
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def frame_quality(faces: int, embedded: FaceEmbedding | None, settings: EnrollmentConfig) -> str | None:
    """Why a frame is not good for enrolment, or None when it is."""
    if faces == 0 or embedded is None:
        return "no face"
    if not embedded.usable:
        return "face not clear enough"
    if not embedded.enrollable:
        return "face not clear enough to enrol (come closer, face the camera, more light)"
    if faces > 1:
        return "more than one face"
    if embedded.face.w < settings.min_face_pixels:
        return f"face too small ({embedded.face.w:.0f} px < {settings.min_face_pixels})"
    if sharpness(embedded.crop) < settings.min_sharpness:
        return "face too blurred"
    return None


def enroll_from_images(name: str, paths: Iterable[Path], pipeline: FacePipeline, gallery: Gallery,
                       role: str | None = None, force: bool = False, threshold: float | None = None) -> tuple[Person, list[str]]:
    """Enrol ``name`` from photo files; returns the person and one note per skipped file.

    Refuses (nothing enrolled) when a photo does not match the others, or when
    the face already matches someone else enrolled and ``force`` is not set.
    ``threshold`` is the cosine two photos of one person must reach (default:
    the model's calibrated per-comparison threshold).
    """
    threshold = pipeline.encoder.threshold if threshold is None else threshold
    vectors, used, notes = [], [], []
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
        embedded = pipeline.embed_faces(image, faces)
        if len(faces) > 1:
            notes.append(f"note: {len(faces)} faces in {path}; used the largest clear one")
        if not embedded.usable:
            notes.append(f"skipped: the face in {path} is not clear enough (blurred, dark or not a face)")
            continue
        if not embedded.enrollable:
            notes.append(f"skipped: the face in {path} is too weak to enrol (small, blurred, dark or turned away; "
                         "such a photo resembles many strangers): use a sharp, frontal photo")
            continue
        vectors.append(embedded.embedding)
        used.append(Path(path))
    if not vectors:
        raise EnrollmentError(f"no usable face in the given images; {name!r} was not enrolled"
                              + (f" ({'; '.join(notes)})" if notes else ""))
    stacked = np.stack(vectors)
    check_photos_agree(stacked, used, threshold, name)
    if not force:
        check_not_enrolled(stacked, gallery.templates(), threshold, name)
    return gallery.add_person(name, stacked, role), notes


def check_photos_agree(vectors: np.ndarray, paths: list[Path], threshold: float, name: str) -> None:
    """Refuse photos that do not show the same person: each must match at least one other (the majority's face).

    One photo of someone else among the enrolment photos would let that other
    person open the door; it is named so the user can take it out.
    """
    if len(vectors) < 2:
        return
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    best = similarity.max(axis=1)
    odd = [f"{path} (best match with the others {score:.2f}, needs {threshold:.2f})"
           for path, score in zip(paths, best) if score <= threshold]
    if odd:
        raise EnrollmentError(f"these photos do not match the other photos of {name!r}, so they may show someone "
                              f"else: {'; '.join(odd)}. Remove them (or use clearer photos) and enrol again; "
                              "nobody was enrolled")


def check_not_enrolled(vectors: np.ndarray, templates: Templates, threshold: float, name: str) -> None:
    """Refuse a face that already matches another enrolled person (the same person twice, or a look-alike)."""
    if not templates.names:
        return
    similarity = templates.vectors @ vectors.T  # templates x photos
    best_per_person: dict[str, float] = {}
    for person, scores in zip(templates.names, similarity):
        best_per_person[person] = max(best_per_person.get(person, -1.0), float(np.median(scores)))
    person, score = max(best_per_person.items(), key=lambda item: item[1])
    if score > threshold and person != name:
        raise EnrollmentError(f"these photos match {person!r}, who is already enrolled (score {score:.2f} > "
                              f"{threshold:.2f}); {name!r} was not enrolled. If they really are different people, "
                              "enrol again with --force (the door then needs a clear lead between them)")


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


NO_ADMIN = ("no admin is enrolled yet, so the button cannot enrol anyone: enrol the first admin at install time "
            "with 'kiosk enroll NAME --camera --role admin' (or --images PHOTOS)")


@dataclass
class ButtonEnrollment:
    """One enrolment started by the button; feed it every frame until it is done or failed.

    The door builds each frame's :class:`~kiosk.decision.Observation` exactly
    as for an unlock and passes it to :meth:`feed` with the frame's face count
    and embedding; while an admin is awaited, the observation goes through a
    :class:`~kiosk.decision.DoorDecision` of its own, so the admin passes
    precisely the unlock rule (``k`` of ``n`` frames, live).
    """

    gallery: Gallery
    settings: EnrollmentConfig
    decision: DecisionSettings
    started: float
    name: str | None = None  # None: the next free person-<n>
    trusted: bool = False  # the operator at a shell: no admin check, and the role is the caller's
    role: str | None = None
    phase: Phase = Phase.CAPTURE
    deadline: float = 0.0
    message: str = ""
    kept: list[np.ndarray] = field(default_factory=list)
    live_scores: list[float] = field(default_factory=list)  # the capture's liveness scores, frame by frame
    person: Person | None = None
    admin: str | None = None

    def __post_init__(self) -> None:
        self._admins = self.gallery.admins()
        self._admin_check = DoorDecision(self.decision)
        if self.trusted or not self.settings.require_admin:
            if not self.trusted and not self._admins:
                self._fail(NO_ADMIN)
                return
            self._start_capture(self.started)
        elif not self._admins:
            self._fail(NO_ADMIN)
        else:
            self.phase = Phase.AWAIT_ADMIN
            self.deadline = self.started + self.settings.admin_timeout_seconds
            self.message = "an admin must look at the camera first"

    def _start_capture(self, now: float) -> None:
        self.phase = Phase.CAPTURE
        self.deadline = now + self.settings.capture_seconds
        self.kept.clear()
        self.live_scores.clear()
        self.message = "look at the camera, turn your head a little"

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    @property
    def awaiting_admin(self) -> bool:
        return self.phase is Phase.AWAIT_ADMIN

    def feed(self, obs: Observation, faces: int, embedded: FaceEmbedding | None) -> bool:
        """Take one frame; returns True when the capture (re)started, so the door resets its liveness check."""
        if self.finished:
            return False
        now = obs.time
        if self.phase is Phase.AWAIT_ADMIN:
            return self._feed_admin(obs)
        if obs.new_attempt or obs.restart:
            self.kept.clear()  # one capture is one face track: never a mix of two faces
            self.live_scores.clear()
        if obs.live_score is not None:
            self.live_scores.append(obs.live_score)
        if obs.live is Liveness.SPOOF:
            self._fail("the new face failed the liveness check (a photo or a screen?); nobody was enrolled")
            return False
        enough = len(self.kept) >= self.settings.frames or (now > self.deadline and len(self.kept) >= max(2, self.settings.frames // 2))
        if enough:
            if obs.live in (Liveness.LIVE, Liveness.OFF):
                self._store()
            elif now > self.deadline:
                self._fail("no proof of life during the capture (the face did not move); nobody was enrolled")
            return False
        if now > self.deadline:
            self._fail(f"only {len(self.kept)} good frames in {self.settings.capture_seconds:g} s; nobody was enrolled")
            return False
        if frame_quality(faces, embedded, self.settings) is not None:
            return False
        vector = embedded.embedding
        if self.kept and max(float(v @ vector) for v in self.kept) > VARIETY_MAX_COSINE:
            return False
        if self.admin is not None and obs.person == self.admin:
            return False  # still the admin in front of the camera, not the new person
        self.kept.append(vector)
        return False

    def _feed_admin(self, obs: Observation) -> bool:
        if obs.time > self.deadline:
            self._fail("no admin was recognised in time; enrolment refused")
            return False
        step = self._admin_check.observe(obs)
        event = step.event
        if event is None:
            return False
        if event.kind == "spoof":
            self._fail(f"the admin check failed the liveness check ({event.detail}); enrolment refused")
        elif event.kind == "granted" and event.person in self._admins:
            self.admin = event.person
            self._start_capture(obs.time)
            self.message = f"admin {event.person} recognised; now the new person looks at the camera"
            return True
        elif event.kind == "granted":
            self._fail(f"{event.person} is not an admin; enrolment refused")
        return False

    def _store(self) -> None:
        name = self.name or self.gallery.next_auto_name()
        role = self.role if self.trusted else "user"
        self.person = self.gallery.add_person(name, np.stack(self.kept), role)
        if self.live_scores:
            record_live_scores(self.gallery, self.live_scores)
        self.phase = Phase.DONE
        self.message = f"enrolled {name} ({self.person.role}) from {len(self.kept)} frames"

    def _fail(self, reason: str) -> None:
        self.phase = Phase.FAILED
        self.message = reason


def record_live_scores(gallery: Gallery, scores: list[float]) -> None:
    """Add one camera enrolment's liveness scores to the door's record (the newest ``LIVE_SCORES_KEPT`` are kept).

    Only the numbers are kept, not who they came from. A record that cannot
    be read is started afresh; one that cannot be written is skipped (the
    door then keeps its threshold: the shipped one or the one it had).
    """
    try:
        kept = door_live_scores(gallery)
        gallery.save_state(LIVE_SCORES_STATE, json.dumps([*kept, [round(float(v), 4) for v in scores]][-LIVE_SCORES_KEPT:]))
    except GalleryError as error:
        log.error("liveness scores of the enrolment not saved: %s", error)


def door_live_scores(gallery: Gallery) -> list[list[float]]:
    """The liveness scores of this door's camera enrolments, one list per enrolment (empty when none or unreadable)."""
    try:
        saved = gallery.load_state(LIVE_SCORES_STATE)
        record = json.loads(saved) if saved else []
        return [[float(v) for v in scores] for scores in record]
    except (GalleryError, ValueError, TypeError) as error:
        log.error("saved liveness scores unreadable, the shipped threshold is used: %s", error)
        return []


def capture_from_camera(session: ButtonEnrollment, read_frame, pipeline: FacePipeline, liveness, clock) -> Person:
    """Run a trusted enrolment (``kiosk enroll NAME --camera``) on frames from ``read_frame``.

    Each frame gets the door's attempt boundaries and liveness check, so the
    capture is one live face track, exactly as at the door.
    """
    boundary = AttemptBoundary(session.decision.track_gap_seconds, pipeline.encoder.threshold)
    liveness.reset()
    while not session.finished:
        frame = read_frame()
        now = clock()
        faces = pipeline.finder.find(frame)
        embedded = pipeline.embed_faces(frame, faces)
        faces = without_refused(faces, embedded)
        usable = embedded is not None and embedded.usable
        new_attempt, restart = boundary.update(now, faces, embedded.embedding if usable else None, None)
        if new_attempt or restart:
            liveness.reset()
        live = liveness.check(frame, faces[0], now) if faces else Liveness.PENDING
        session.feed(Observation(now, bool(faces), live=live, new_attempt=new_attempt, restart=restart,
                                 live_score=liveness.score() if faces else None), len(faces), embedded)
    if session.person is None:
        raise EnrollmentError(session.message)
    return session.person
