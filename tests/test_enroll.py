"""Enrolment from photos (the photos must agree, a known face needs --force) and at the camera (live, one track)."""

from __future__ import annotations

import pytest

from kiosk import assemble
from kiosk.camera import PlaylistCamera
from kiosk.clock import FakeClock
from kiosk.config import Config
from kiosk.enroll import (
    LIVE_SCORES_KEPT,
    LIVE_SCORES_STATE,
    ButtonEnrollment,
    capture_from_camera,
    door_live_scores,
    enroll_from_images,
    record_live_scores,
)
from kiosk.errors import EnrollmentError
from kiosk.gallery import Gallery
from kiosk.images import read_image
from kiosk.liveness import NoLivenessCheck, make_liveness
from kiosk.pipeline import FacePipeline
from tests.conftest import FACES, FIXTURES, MODELS

POWELL = sorted((FACES / "Colin_Powell").glob("*.jpg"))
BUSH = sorted((FACES / "George_W_Bush").glob("*.jpg"))
NUAA = FIXTURES / "liveness"
FPS = 15


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return assemble.pipeline(Config())


@pytest.fixture
def gallery(tmp_path, pipeline):
    gallery = Gallery(tmp_path / "gallery.sqlite3", pipeline.encoder.info.sha256)
    yield gallery
    gallery.close()


def test_a_photo_of_someone_else_among_the_enrolment_photos_is_named_and_nothing_is_enrolled(pipeline, gallery):
    with pytest.raises(EnrollmentError, match="George_W_Bush_0001.jpg") as error:
        enroll_from_images("powell", POWELL[:3] + BUSH[:1], pipeline, gallery)
    assert "Colin_Powell" not in str(error.value) and "nobody was enrolled" in str(error.value)
    assert gallery.people() == []


def test_a_face_that_is_already_enrolled_needs_force(pipeline, gallery):
    enroll_from_images("powell", POWELL[:2], pipeline, gallery)
    with pytest.raises(EnrollmentError, match="match 'powell'.*--force"):
        enroll_from_images("colin", POWELL[2:], pipeline, gallery)
    assert [p.name for p in gallery.people()] == ["powell"]
    person, _ = enroll_from_images("colin", POWELL[2:], pipeline, gallery, force=True)
    assert person.name == "colin" and person.embeddings == 2


def test_agreeing_photos_of_a_new_face_are_enrolled(pipeline, gallery):
    enroll_from_images("powell", POWELL, pipeline, gallery)
    person, _ = enroll_from_images("bush", BUSH, pipeline, gallery)
    assert person.embeddings == len(BUSH) and person.role == "user"


def _session(gallery, config: Config, clock: FakeClock, **kwargs) -> ButtonEnrollment:
    return ButtonEnrollment(gallery, config.enrollment, config.decision, clock(), **kwargs)


def _camera_enrolment(pipeline, gallery, kind: str, name: str):
    """A trusted camera enrolment (``kiosk enroll NAME --camera --role admin``) on NUAA frames of ``kind``."""
    config = Config()
    config.enrollment.frames = 3
    config.enrollment.min_face_pixels = 60
    clock = FakeClock()
    camera = PlaylistCamera(sorted((NUAA / kind).glob("*.jpg")) * 3, on_frame=lambda: clock.advance(1 / FPS))
    liveness = make_liveness("both", MODELS, window_seconds=config.decision.window_seconds)
    session = _session(gallery, config, clock, name=name, trusted=True, role="admin")
    return capture_from_camera(session, camera.read, pipeline, liveness, clock)


def test_the_camera_enrolment_makes_the_first_admin_from_one_live_track(pipeline, gallery):
    person = _camera_enrolment(pipeline, gallery, "live", "alice")
    assert (person.name, person.role, person.embeddings) == ("alice", "admin", 3)


def test_the_camera_enrolment_records_its_liveness_scores_for_the_door(pipeline, gallery):
    """The capture's liveness scores (this door's camera, a live face) are kept for the door's threshold; no name."""
    _camera_enrolment(pipeline, gallery, "live", "alice")
    (scores,) = door_live_scores(gallery)
    assert len(scores) >= 3 and all(v > 0 for v in scores)  # the live fixture scores live
    assert "alice" not in gallery.load_state(LIVE_SCORES_STATE)
    enroll_from_images("powell", POWELL, pipeline, gallery)
    assert len(door_live_scores(gallery)) == 1, "photos are no camera: they record nothing"


def test_recorded_scores_keep_the_newest_enrolments_and_a_damaged_record_is_ignored(gallery):
    for i in range(LIVE_SCORES_KEPT + 3):
        record_live_scores(gallery, [float(i), float(i) + 0.5])
    kept = door_live_scores(gallery)
    assert len(kept) == LIVE_SCORES_KEPT and kept[-1] == [LIVE_SCORES_KEPT + 2.0, LIVE_SCORES_KEPT + 2.5]
    gallery.save_state(LIVE_SCORES_STATE, "{not json")
    assert door_live_scores(gallery) == []  # the door then keeps the shipped threshold
    record_live_scores(gallery, [1.0])
    assert door_live_scores(gallery) == [[1.0]]


def test_the_camera_enrolment_refuses_a_printed_photo(pipeline, gallery):
    with pytest.raises(EnrollmentError, match="liveness|proof of life"):
        _camera_enrolment(pipeline, gallery, "spoof", "mallory")
    assert gallery.people() == [] and door_live_scores(gallery) == [], "a photo's scores never reach the door's threshold"


def test_the_button_alone_cannot_enrol_into_a_gallery_without_an_admin(pipeline, gallery):
    config = Config()
    config.enrollment.require_admin = False  # even with the admin check switched off
    clock = FakeClock()
    session = _session(gallery, config, clock)
    assert session.finished and session.person is None and "kiosk enroll NAME --camera --role admin" in session.message
    enroll_from_images("powell", POWELL, pipeline, gallery, role="admin")
    config.enrollment.frames = 2
    config.enrollment.min_face_pixels = 60
    session = _session(gallery, config, clock)
    camera = PlaylistCamera(BUSH * 2, on_frame=lambda: clock.advance(1 / FPS))
    person = capture_from_camera(session, camera.read, pipeline, NoLivenessCheck(), clock)
    assert person.role == "user", "the button never makes an admin"


def test_a_face_too_weak_to_be_a_template_is_never_enrolled(pipeline, gallery, monkeypatch):
    """A weak template resembles many strangers: enrolment needs more than an attempt's quality gate."""
    from dataclasses import replace

    from kiosk.enroll import frame_quality

    info = pipeline.encoder.info
    assert info.min_strength < pipeline.encoder.min_enrol_strength  # the shipped model sets a stricter enrolment bar
    strengths = [pipeline.embed_largest(read_image(path)).strength for path in POWELL[:2]]
    monkeypatch.setattr(pipeline.encoder, "info", replace(info, min_enrol_strength=max(strengths) + 0.01))
    weak = pipeline.embed_largest(read_image(POWELL[0]))
    assert weak.usable and not weak.enrollable  # still recognised at the door, never a template
    with pytest.raises(EnrollmentError, match="too weak to enrol") as error:
        enroll_from_images("powell", POWELL[:2], pipeline, gallery)
    assert POWELL[0].name in str(error.value) and gallery.people() == []
    assert "not clear enough to enrol" in frame_quality(1, weak, Config().enrollment)
    monkeypatch.setattr(pipeline.encoder, "info", replace(info, min_enrol_strength=min(strengths) - 0.01))
    person, notes = enroll_from_images("powell", POWELL[:2], pipeline, gallery)
    assert person.embeddings == 2 and not any("skipped" in note for note in notes)
