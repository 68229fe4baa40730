"""Liveness: the shipped MiniFASNet file against its ONNX reference, the context crop, the motion cue, the verdict, the door, the CSV tool.

The fixture frames (tests/fixtures/liveness, see its README) are from a NUAA subject (0006) that
MiniFASNet never saw: a live attempt, a printed-photo
attempt of the same person, and three live frames from another session to enrol them.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk import assemble
from kiosk.camera import PlaylistCamera, ReconnectingCamera
from kiosk.clock import FakeClock
from kiosk.config import Config
from kiosk.door import Door
from kiosk.encoder import runtime_interpreters, sha256_of
from kiosk.enroll import enroll_from_images, record_live_scores
from kiosk.errors import ModelError
from kiosk.face import Face, FaceFinder
from kiosk.gallery import Gallery
from kiosk.gpio import DoorHardware, GpioSettings, make_pin_factory
from kiosk.images import read_image
from kiosk.liveness import (
    METADATA_FILE,
    MODEL_FILE,
    Adaptation,
    ContextCrop,
    Liveness,
    LivenessChecker,
    LivenessInfo,
    MotionCue,
    NoLivenessCheck,
    TextureClassifier,
    context_box,
    context_crops,
    make_liveness,
    real_logit,
)
from kiosk.liveness_cli import add_parser, cmd_liveness, liveness_csv, natural_key
from kiosk.pipeline import FacePipeline
from kiosk.training.liveness.minifasnet import DEFAULT_ONNX_DIR, NETWORKS
from tests.conftest import FIXTURES, MODELS

FRAMES = FIXTURES / "liveness"
ONNX_DIR = Path(__file__).resolve().parents[1] / DEFAULT_ONNX_DIR
LIVE = sorted((FRAMES / "live").glob("*.jpg"), key=natural_key)
SPOOF = sorted((FRAMES / "spoof").glob("*.jpg"), key=natural_key)
ENROL = sorted((FRAMES / "enrol").glob("*.jpg"), key=natural_key)
FPS = 15


def _faces(paths: list[Path]) -> list[tuple[np.ndarray, Face]]:
    finder = FaceFinder()
    frames = [(image, finder.largest(image)) for image in map(read_image, paths)]
    assert all(face is not None for _, face in frames), "every fixture frame should have a face"
    return frames


@pytest.fixture(scope="module")
def live() -> list[tuple[np.ndarray, Face]]:
    return _faces(LIVE)


@pytest.fixture(scope="module")
def spoof() -> list[tuple[np.ndarray, Face]]:
    return _faces(SPOOF)


def _verdicts(checker: LivenessChecker, frames: list[tuple[np.ndarray, Face]]) -> list[Liveness]:
    checker.reset()
    return [checker.check(image, face, i / FPS) for i, (image, face) in enumerate(frames)]


# The model file ---------------------------------------------------------------------------------------


def test_shipped_model_matches_its_metadata():
    info = LivenessInfo.load(MODELS / METADATA_FILE)
    assert sha256_of(MODELS / MODEL_FILE) == info.sha256
    interpreter = runtime_interpreters()["ai-edge-litert"](model_path=str(MODELS / MODEL_FILE))
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    assert sorted(c.scale for c in info.crops) == [2.7, 4.0] and len(inputs) == 2
    assert all(tuple(d["shape"]) == (1, info.input_size, info.input_size, 3) for d in inputs)
    assert tuple(interpreter.get_output_details()[0]["shape"]) == (1, 6)  # three logits per network
    assert info.texture_threshold == 0.0 and info.min_movements >= 2


def test_shipped_file_scores_the_fixtures_as_the_onnx_reference_does(live, spoof):
    """The shipped file against MiniFASNet's ONNX files run by OpenCV: every live frame real, every print not, as the reference.

    The float conversion gives the same logits; the int8 ReLU student (distilled from them) the same decisions.
    """
    classifier = TextureClassifier(MODELS)
    crops = [classifier.crops(image, face) for image, face in live + spoof]
    shipped = np.array([classifier.logits(pair) for pair in crops])
    if ONNX_DIR.is_dir():
        reference = np.concatenate([_opencv_logits(ONNX_DIR / n.onnx_name, [pair[i] for pair in crops])
                                    for i, n in enumerate(NETWORKS)], axis=1)
        if classifier.info.extra["model"]["precision"] == "float32":
            assert np.abs(shipped - reference).max() < 1e-3
        assert [real_logit(v) >= 0 for v in reference] == [real_logit(v) >= 0 for v in shipped]
    scores = np.array([real_logit(v) for v in shipped])
    assert scores[:len(live)].min() > 0 > scores[len(live):].max()


def _opencv_logits(path: Path, crops: list[np.ndarray]) -> np.ndarray:
    net = cv2.dnn.readNetFromONNX(str(path))
    out = []
    for crop in crops:
        net.setInput(cv2.dnn.blobFromImage(crop.astype(np.float32)))
        out.append(net.forward().reshape(-1))
    return np.array(out)


def test_context_box_is_grown_about_the_centre_and_shifted_inside_never_padded():
    # Inside the frame: 2.7 times the box about its centre.
    assert context_box(320, 240, (140, 100, 40, 40), 2.7) == (106, 66, 214, 174)
    # Near the left and top edges: the same size, shifted back inside.
    left, top, right, bottom = context_box(320, 240, (0, 5, 40, 40), 2.7)
    assert (left, top) == (0, 0) and (right - left, bottom - top) == (108, 108)
    # Near the right and bottom edges.
    left, top, right, bottom = context_box(320, 240, (290, 210, 30, 30), 4.0)
    assert (right, bottom) == (319, 239) and (right - left, bottom - top) == (120, 120)
    # Larger than the frame allows: the scale is capped at what fits, so no pixel is ever outside the image.
    left, top, right, bottom = context_box(320, 240, (100, 60, 120, 120), 4.0)
    assert top == 0 and bottom == 239 and 0 <= left and right <= 319


def test_context_crops_come_from_the_frame_at_the_work_width():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 255  # the right half is white
    face = Face(x=300, y=200, w=80, h=80, angle=0.0, center=(340.0, 240.0), pass_name="test")
    (crop,) = context_crops(frame, face, (ContextCrop("crop_2_7", 2.0),), 320, 80)
    assert crop.shape == (80, 80, 3)
    assert crop[:, :28].max() == 0 and crop[:, 32:].min() == 255  # centred on the box: the white edge in the middle
    tilted = Face(x=0, y=0, w=80, h=80, angle=10.0, center=(340.0, 240.0), pass_name="haar@+10")
    assert np.array_equal(context_crops(frame, tilted, (ContextCrop("crop_2_7", 2.0),), 320, 80)[0], crop)


def test_metadata_without_its_crops_is_refused(tmp_path):
    for name in (MODEL_FILE, METADATA_FILE):
        shutil.copy(MODELS / name, tmp_path / name)
    data = json.loads((tmp_path / METADATA_FILE).read_text())
    del data["input"]["crops"]
    (tmp_path / METADATA_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="crops"):
        make_liveness("both", tmp_path)
    data = json.loads((MODELS / METADATA_FILE).read_text())
    data["input"]["crops"][0]["input"] = "crop_9"
    (tmp_path / METADATA_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="no input 'crop_9'"):
        make_liveness("texture", tmp_path)


def test_damaged_or_missing_model_is_refused(tmp_path):
    for name in (MODEL_FILE, METADATA_FILE):
        shutil.copy(MODELS / name, tmp_path / name)
    data = bytearray((tmp_path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match"):
        make_liveness("both", tmp_path)
    (tmp_path / METADATA_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        make_liveness("texture", tmp_path)


# The cues and their fusion ----------------------------------------------------------------------------------


def test_make_liveness_modes():
    off = make_liveness("off", MODELS)
    assert isinstance(off, NoLivenessCheck) and off.check(np.zeros((8, 8, 3), np.uint8), None) is Liveness.OFF
    assert make_liveness("texture", MODELS).mode == "texture"
    assert make_liveness("both", MODELS).motion is not None
    with pytest.raises(ValueError, match="unknown liveness mode"):
        make_liveness("blink", MODELS)


@pytest.mark.parametrize("mode", ["texture", "both"])
def test_fusion_accepts_the_live_attempt_and_refuses_the_photo(mode, live, spoof):
    checker = LivenessChecker(mode, MODELS)
    verdicts = _verdicts(checker, live)
    assert verdicts[-1] is Liveness.LIVE and Liveness.SPOOF not in verdicts, checker.scores()
    assert Liveness.LIVE not in _verdicts(checker, spoof), checker.scores()
    if mode == "both":
        assert checker.scores().movements >= 2, "the moved photo should have been seen to move"


def test_reset_starts_a_new_attempt(live, spoof):
    checker = LivenessChecker("both", MODELS)
    _verdicts(checker, spoof)
    assert _verdicts(checker, live)[-1] is Liveness.LIVE
    assert checker.scores().frames == len(live)


def test_only_the_frames_inside_the_window_count(live, spoof):
    """Live frames, then a photo: with the decision window, the photo's frames alone decide (live-then-photo)."""
    checker = LivenessChecker("both", MODELS, window_seconds=0.3)
    frames = live + spoof
    verdicts = [checker.check(image, face, i / FPS) for i, (image, face) in enumerate(frames)]
    assert verdicts[len(live) - 1] is Liveness.LIVE and verdicts[-1] is not Liveness.LIVE
    assert checker.scores().frames == 5  # 0.3 s at 15 fps


@pytest.mark.parametrize("mode, verdict", [("both", Liveness.PENDING), ("texture", Liveness.LIVE)])
def test_no_motion_is_no_proof_of_life(mode, verdict, live):
    """One live frame repeated (a photo on a stand, a frozen replay): never LIVE in mode both."""
    checker = LivenessChecker(mode, MODELS, window_seconds=1.5)
    image, face = live[0]
    verdicts = {checker.check(image, face, i / FPS) for i in range(30)}
    assert verdicts == {verdict}


def _textured_plane(seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (240, 320), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def test_motion_cue_counts_movement_not_a_still_image_or_a_jittering_box():
    """A still image gives no measurement even when the Haar box jitters; a moved one gives its movement."""
    face = Face(x=110, y=70, w=100, h=100, angle=0.0, center=(160.0, 120.0), pass_name="test")
    jittered = Face(x=112, y=69, w=98, h=98, angle=0.0, center=(161.0, 118.0), pass_name="test")
    plane = _textured_plane()
    cue = MotionCue()
    assert cue.update(plane, face) is None  # the reference frame
    assert cue.update(plane, jittered) is None  # the same image: no movement, whatever the box does
    moved = cv2.warpAffine(plane, np.float32([[1, 0, 3.0], [0, 1, 2.0]]), (320, 240), borderMode=cv2.BORDER_REFLECT)
    movement = cue.update(moved, face)
    assert movement == pytest.approx(np.hypot(3.0, 2.0) / face.w, rel=0.1)
    assert cue.update(moved, face) is None  # the moved frame is the new reference


def test_the_door_fits_the_threshold_to_its_camera_within_the_bound():
    adaptation = Adaptation(max_lowering=1.5, min_people=2, min_scores=20, live_quantile=0.02)
    low = [list(np.linspace(-0.5, 3.0, 15)), list(np.linspace(0.0, 4.0, 15))]
    assert adaptation.threshold(0.0, low[:1]) == 0.0  # one enrolment is not this door's light yet
    assert adaptation.threshold(0.0, [low[0], low[1][:3]]) == 0.0  # nor 18 scores
    fitted = adaptation.threshold(0.0, low)
    assert fitted == pytest.approx(np.quantile(low[0] + low[1], 0.02)) and -1.5 < fitted < 0.0
    assert adaptation.threshold(0.0, [[-9.0] * 15, [-9.0] * 15]) == -1.5  # never below the bound
    assert adaptation.threshold(0.0, [[5.0] * 15, [6.0, float("nan")] * 8]) == 0.0  # never raised; NaN ignored


def test_a_checker_adapts_with_the_shipped_bound(live):
    checker = LivenessChecker("both", MODELS)
    bound = checker.info.adaptation.max_lowering
    assert 0.0 <= bound <= 2.0
    assert checker.adapt([]) == checker.info.texture_threshold
    assert checker.adapt([[-9.0] * 20, [-9.0] * 20]) == pytest.approx(checker.info.texture_threshold - bound)
    assert checker.threshold == pytest.approx(checker.info.texture_threshold - bound)


@pytest.mark.parametrize("texture, movements, mode, verdict", [
    (2.0, 0, "texture", Liveness.LIVE), (2.0, 0, "both", Liveness.PENDING), (2.0, 1, "both", Liveness.PENDING),
    (2.0, 2, "both", Liveness.LIVE), (-0.1, 0, "both", Liveness.SPOOF), (-0.1, 9, "both", Liveness.SPOOF),
])
def test_motion_withholds_the_texture_verdict_but_never_changes_it(texture, movements, mode, verdict):
    """However live a replayed video moves, a texture score below the threshold stays a spoof; moving is only required."""
    checker = LivenessChecker(mode, MODELS)
    checker.texture.score = lambda frame, face: checker.threshold + texture
    moves = iter([0.05] * movements)
    if checker.motion is not None:
        checker.motion.update = lambda frame, face: next(moves, None)
    frame = np.zeros((240, 320, 3), np.uint8)
    verdicts = [checker.check(frame, None, i / FPS) for i in range(10)]
    assert verdicts[-1] is verdict
    assert checker.scores().movements == (movements if mode == "both" else 0)


# The door ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return assemble.pipeline(Config())


def _door(tmp_path: Path, pipeline: FacePipeline, frames: list[Path]) -> tuple[Door, Gallery, DoorHardware]:
    clock = FakeClock()
    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    gallery = Gallery(config.database, pipeline.encoder.info.sha256, clock=clock)
    enroll_from_images("subject", ENROL, pipeline, gallery)
    hardware = DoorHardware(GpioSettings(), make_pin_factory("mock"))
    camera = ReconnectingCamera(lambda: PlaylistCamera(frames, on_frame=lambda: clock.advance(1 / FPS)), clock)
    liveness = make_liveness("both", MODELS, window_seconds=config.decision.window_seconds,
                             min_face_fraction=config.liveness.min_face_fraction)
    door = Door(config, camera, pipeline, gallery, hardware, clock=clock, liveness=liveness)
    return door, gallery, hardware


def test_door_logs_a_held_up_photo_as_spoof_and_never_unlocks(tmp_path, pipeline):
    frames = SPOOF * 3
    door, gallery, hardware = _door(tmp_path, pipeline, frames)
    try:
        reports = [door.process_frame() for _ in frames]
        assert not any(r.relay_on for r in reports) and not hardware.relay_on
        kinds = [e.kind for e in gallery.events()]
        assert "granted" not in kinds and kinds.count("spoof") >= 1, kinds
        spoof_events = [e for e in gallery.events() if e.kind == "spoof"]
        assert all(e.person == "subject" and "liveness check failed" in e.detail for e in spoof_events)
    finally:
        door.close()
        gallery.close()


def test_the_door_fits_its_liveness_threshold_to_its_camera_enrolments(tmp_path, pipeline):
    """Scores recorded by camera enrolments lower the door's liveness threshold, within the model's bound."""
    door, gallery, _ = _door(tmp_path, pipeline, LIVE)
    try:
        shipped = door.liveness.info.texture_threshold
        assert door.liveness_threshold == shipped  # no camera enrolment yet
        low = [[shipped - 5.0] * 15, [shipped - 4.0] * 15]
        for scores in low:
            record_live_scores(gallery, scores)
        door.reload_gallery()
        expected = door.liveness.info.adaptation.threshold(shipped, low)
        assert door.liveness_threshold == door.liveness.threshold == pytest.approx(expected)
        assert shipped - door.liveness.info.adaptation.max_lowering <= expected <= shipped
    finally:
        door.close()
        gallery.close()


def test_door_lets_the_live_person_in_with_liveness_on(tmp_path, pipeline):
    door, gallery, hardware = _door(tmp_path, pipeline, LIVE)
    try:
        reports = [door.process_frame() for _ in LIVE]
        first_on = next(i for i, r in enumerate(reports) if r.relay_on)
        assert first_on <= 4 and reports[first_on].event.kind == "granted"
        assert "not configured" not in reports[first_on].event.detail
    finally:
        door.close()
        gallery.close()


def test_a_face_too_far_away_to_judge_is_no_attempt(tmp_path, pipeline):
    """The enrolled person's live frames, shrunk as if 2.5 times further away: too small for the liveness cues."""
    frames = []
    for index, path in enumerate(LIVE):
        image = read_image(path)
        far = np.full_like(image, 110)
        small = cv2.resize(image, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
        y, x = (image.shape[0] - small.shape[0]) // 2, (image.shape[1] - small.shape[1]) // 2
        far[y:y + small.shape[0], x:x + small.shape[1]] = small
        frames.append(tmp_path / f"far_{index:02d}.png")
        cv2.imwrite(str(frames[-1]), far)
    assert FaceFinder().largest(read_image(frames[0])) is not None, "the door's detector still sees the face"
    door, gallery, hardware = _door(tmp_path, pipeline, frames)
    try:
        reports = [door.process_frame() for _ in frames]
        assert not any(r.relay_on for r in reports)
        assert all(r.faces == 0 and r.distant_faces == 1 for r in reports)
        assert [e.kind for e in gallery.events()] == ["enrolled"], "no attempt, so nothing to log or count"
    finally:
        door.close()
        gallery.close()


def test_door_refuses_a_still_face_as_no_proof_of_life(tmp_path, pipeline):
    frames = [LIVE[0]] * (5 * FPS)  # the enrolled person's live frame, frozen for 5 s
    door, gallery, _ = _door(tmp_path, pipeline, frames)
    try:
        reports = [door.process_frame() for _ in frames]
        assert not any(r.relay_on for r in reports)
        events = [e for e in gallery.events() if e.kind != "enrolled"]
        assert [e.kind for e in events] == ["spoof"] and "no proof of life" in events[0].detail
    finally:
        door.close()
        gallery.close()


# kiosk liveness -------------------------------------------------------------------------------------


def test_liveness_csv_scores_each_attempt_folder(tmp_path):
    root = tmp_path / "attempts"
    shutil.copytree(FRAMES / "live", root / "door" / "alice")
    shutil.copytree(FRAMES / "spoof", root / "door" / "photo")
    (root / "empty").mkdir()
    (root / "door" / "notes.txt").write_text("not an image")
    out = tmp_path / "scores.csv"
    rows = liveness_csv(root, out, "both", MODELS)
    assert [r["attempt"] for r in rows] == ["door/alice", "door/photo"]
    assert [r["decision"] for r in rows] == ["live", "spoof"]
    assert rows[0]["frames"] == rows[0]["faces"] == len(LIVE)
    with open(out, newline="") as stream:
        written = list(csv.DictReader(stream))
    assert [w["decision"] for w in written] == ["live", "spoof"] and float(written[1]["texture"]) < 0 <= float(written[0]["texture"])
    assert int(written[0]["movements"]) >= 2


def test_natural_order_plays_frame_2_before_frame_10():
    names = [Path(n) for n in ("s_10.jpg", "s_2.jpg", "s_1.jpg")]
    assert [p.name for p in sorted(names, key=natural_key)] == ["s_1.jpg", "s_2.jpg", "s_10.jpg"]


def test_add_parser_registers_the_command(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="kiosk")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["liveness", str(FRAMES), "--out", str(tmp_path / "x.csv"), "--mode", "texture", "--quiet"])
    assert args.handler is cmd_liveness and args.mode == "texture" and args.models == MODELS.resolve()
    assert args.handler(args) == 0
    assert "3 attempts" in capsys.readouterr().out  # enrol, live and spoof are three folders of images
