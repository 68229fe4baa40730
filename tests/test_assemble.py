"""The composition root and the named backends it picks from the config."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk import assemble
from kiosk import config as config_module
from kiosk.camera import FolderCamera, backend_for, open_camera
from kiosk.config import Config, default_state_dir, from_dict
from kiosk.encoder import RUNTIMES, Encoder, choose_interpreter, runtime_interpreters
from kiosk.errors import CameraError, ConfigError, GalleryError, HardwareError, ModelError
from kiosk.face import DetectorSettings, FaceFinder
from kiosk.gpio import make_pin_factory

FRAMES = Path(__file__).resolve().parent.parent / "kiosk" / "demo_data" / "frames"


def test_one_set_of_detector_defaults_for_every_path():
    """The door, enrolment, embed and calibration all build from Config(): one front end, one set of defaults."""
    assert Config().detector == DetectorSettings() == FaceFinder().settings
    assert assemble.default_config(Path("elsewhere")).detector == Config().detector


def test_the_pipeline_runs_the_configured_detector_and_model(tmp_path):
    config = from_dict({"detector": {"min_face_fraction": 0.2, "rotations": [-15.0, 15.0]}})
    pipeline = assemble.pipeline(config)
    assert pipeline.finder.settings.min_face_fraction == 0.2
    assert pipeline.finder.settings.rotations == (-15.0, 15.0)
    assert pipeline.encoder.model_dir == assemble.model_dir(config)
    config.recognition.model_dir = str(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="nowhere"):
        assemble.pipeline(config)


def test_reading_commands_refuse_a_missing_gallery_instead_of_making_an_empty_one(tmp_path):
    config = Config()
    config.storage.state_dir = str(tmp_path / "typo")
    with pytest.raises(GalleryError, match="no gallery in .*typo"):
        assemble.gallery(config, must_exist=True)
    assert not (tmp_path / "typo").exists()
    assemble.gallery(config).close()
    assemble.gallery(config, must_exist=True).close()


def test_an_unusable_state_folder_is_named_with_what_to_do(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    config = Config()
    config.storage.state_dir = str(tmp_path / "file" / "state")
    with pytest.raises(GalleryError, match=r"cannot create the state folder .*state_dir"):
        assemble.gallery(config)


def test_the_default_state_folder_is_per_user_without_an_install(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SERVICE_STATE_DIR", tmp_path / "var-lib-kiosk")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    assert default_state_dir() == tmp_path / "state-home" / "kiosk"
    assert Config().database == tmp_path / "state-home" / "kiosk" / "gallery.sqlite3"
    (tmp_path / "var-lib-kiosk").mkdir()
    assert default_state_dir() == tmp_path / "var-lib-kiosk"


def test_camera_backends_are_chosen_by_name_or_from_the_source(tmp_path):
    assert backend_for("picamera") == "picamera"
    assert backend_for("0") == "opencv"
    assert backend_for("rtsp://door.local/stream") == "opencv"
    assert backend_for(str(FRAMES)) == "folder"
    with pytest.raises(CameraError, match="not 'picamera', a device index"):
        backend_for(str(tmp_path / "missing"))
    config = from_dict({"camera": {"source": str(FRAMES), "backend": "folder"}})
    camera = open_camera(config.camera)
    assert isinstance(camera, FolderCamera) and camera.read().ndim == 3
    with pytest.raises(ConfigError, match="camera.backend .*choose one of: auto, picamera, opencv, folder"):
        from_dict({"camera": {"backend": "webcam"}})


def test_pin_factories_by_name_and_one_clear_error_without_gpio(monkeypatch):
    assert isinstance(make_pin_factory("mock"), MockFactory)
    config = from_dict({"gpio": {"pin_factory": "mock"}})
    hardware = assemble.hardware(config)
    try:
        assert isinstance(hardware.pin_factory, MockFactory) and not hardware.relay_on
    finally:
        hardware.close()
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(HardwareError, match="use --simulate"):
            make_pin_factory("auto")  # this machine has no GPIO
    assert caught == [], "gpiozero's fallback warnings are folded into the one error"
    with pytest.raises(HardwareError, match="unknown pin factory"):
        make_pin_factory("gpio-of-my-dreams")


def test_tflite_runtimes_by_name():
    installed = runtime_interpreters()
    assert list(installed) == [name for name in RUNTIMES if name in installed], "preferred first"
    for name in installed:
        assert choose_interpreter(name)[0] == name
        assert Encoder(runtime=name).runtime == name
    assert choose_interpreter("auto")[0] == next(iter(installed))
    with pytest.raises(ModelError, match="unknown TFLite runtime"):
        choose_interpreter("onnx")
    with pytest.raises(ConfigError, match="recognition.runtime"):
        from_dict({"recognition": {"runtime": "onnx"}})


def test_loading_a_model_prints_nothing(capfd):
    """The runtimes' native 'INFO: Created TensorFlow Lite XNNPACK delegate' line is held back."""
    encoder = Encoder()
    assert np.isfinite(encoder.embed(np.zeros((112, 112, 3), np.uint8))).all()
    captured = capfd.readouterr()
    assert "XNNPACK" not in captured.err and captured.out == ""


def test_a_folder_of_frames_plays_in_the_order_they_were_taken(tmp_path):
    """Camera tools rarely pad frame numbers: frame 9 comes before frame 10, not after frame 1."""
    import cv2

    for number in (10, 9, 1, 100):
        cv2.imwrite(str(tmp_path / f"door_{number}.png"), np.full((4, 4, 3), number, np.uint8))
    camera = FolderCamera(tmp_path)
    assert [path.name for path in camera.files] == ["door_1.png", "door_9.png", "door_10.png", "door_100.png"]
    assert [int(camera.read()[0, 0, 0]) for _ in range(4)] == [1, 9, 10, 100]
