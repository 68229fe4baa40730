"""Liveness: the shipped int8 texture model in both runtimes, the motion cue, the fusion, the door, the CSV tool.

The fixture frames (tests/fixtures/liveness, see its README) are from a NUAA subject held out from the
model's training: a live attempt, a printed-photo attempt of the same person, and three live frames
from another session to enrol them.
"""

from __future__ import annotations

import argparse
import csv
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
from kiosk.encoder import run_interpreter, runtime_interpreters, sha256_of
from kiosk.enroll import enroll_from_images
from kiosk.errors import ModelError
from kiosk.face import Face, FaceFinder, crop_face
from kiosk.gallery import Gallery
from kiosk.gpio import DoorHardware, GpioSettings, make_pin_factory
from kiosk.images import read_image
from kiosk.liveness import (
    METADATA_FILE,
    MODEL_FILE,
    Liveness,
    LivenessChecker,
    LivenessInfo,
    MotionCue,
    NoLivenessCheck,
    make_liveness,
)
from kiosk.liveness_cli import add_parser, cmd_liveness, liveness_csv, natural_key
from kiosk.pipeline import FacePipeline
from kiosk.training.runtime_check import embed_in_runtime
from tests.conftest import FIXTURES, MODELS

FRAMES = FIXTURES / "liveness"
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
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, info.input_size, info.input_size, 3)
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8 and tuple(out["shape"]) == (1, 1)
    assert "DEQUANTIZE" not in {op["op_name"] for op in interpreter._get_ops_details()}  # full int8
    assert info.extra["threshold"]["both"] == 0.0 and info.fusion.texture_threshold == info.texture_threshold


def test_texture_model_runs_alike_in_both_runtimes(live, spoof):
    info = LivenessInfo.load(MODELS / METADATA_FILE)
    crops = np.stack([crop_face(image, face, size=info.input_size) for image, face in live + spoof])
    interpreter = runtime_interpreters()["ai-edge-litert"](model_path=str(MODELS / MODEL_FILE))
    interpreter.allocate_tensors()
    in_process = np.array([run_interpreter(interpreter, crop)[0] for crop in crops])
    live_logits, spoof_logits = in_process[: len(live)], in_process[len(live):]
    assert live_logits.min() > spoof_logits.max()
    if "tflite-runtime" not in runtime_interpreters():
        pytest.skip("tflite-runtime is not installed (pip install -e '.[tflite]')")
    # tflite-runtime 2.14 cannot share a process with TensorFlow, which other tests may have imported.
    other = embed_in_runtime("tflite-runtime", MODELS / MODEL_FILE, crops).reshape(-1)
    step = interpreter.get_output_details()[0]["quantization"][0]
    assert np.abs(other - in_process).max() <= step + 1e-6


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
        assert checker.scores().motion_measurements >= 2, "the moved photo should give motion evidence"


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


def test_motion_cue_tells_a_moved_plane_from_a_non_rigid_face():
    face = Face(x=110, y=70, w=100, h=100, angle=0.0, center=(160.0, 120.0), pass_name="test")
    plane = _textured_plane()
    tilt = np.array([[1.02, 0.03, 3.0], [-0.02, 1.0, 2.0], [1e-4, 0.0, 1.0]])
    moved = cv2.warpPerspective(plane, tilt, (320, 240), borderMode=cv2.BORDER_REFLECT)
    cue = MotionCue()
    assert cue.update(plane, face) is None  # the reference frame
    assert cue.update(plane, face) is None  # no movement, no evidence either way
    planar = cue.update(moved, face)
    assert planar is not None and planar < -3.0

    ys, xs = np.mgrid[0:240, 0:320].astype(np.float32)
    bulge = 3.0 * np.exp(-((xs - 160) ** 2 + (ys - 120) ** 2) / (2 * 25.0**2))  # the middle moves more: depth
    warped = cv2.remap(plane, xs - 2.0 - bulge, ys - 1.0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    cue.reset()
    cue.update(plane, face)
    non_rigid = cue.update(warped, face)
    assert non_rigid is not None and non_rigid > planar + 1.5


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
    liveness = make_liveness("both", MODELS, window_seconds=config.decision.window_seconds)
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
    assert [w["decision"] for w in written] == ["live", "spoof"] and float(written[1]["fused"]) < 0 <= float(written[0]["fused"])


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
