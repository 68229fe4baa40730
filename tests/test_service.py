"""The service loop in-process: a real door on recorded frames, mock pins, a fake clock, a notify socket."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from kiosk import assemble
from kiosk.camera import PlaylistCamera, ReconnectingCamera
from kiosk.clock import FakeClock
from kiosk.config import Config
from kiosk.demo import demo_data
from kiosk.enroll import enroll_from_images
from kiosk.errors import FaceKioskError, GalleryError
from kiosk.liveness import NoLivenessCheck
from kiosk.notify import SystemdNotifier
from kiosk.service import MAX_CONSECUTIVE_ERRORS, DoorService, StopFlag, stop_on_signals

DATA = demo_data()
FPS = 15
OWNER = sorted((DATA / "frames").glob("a1_*.jpg"))
EMPTY = DATA / "frames" / "empty_00.jpg"
ENROL = sorted((DATA / "enrol").glob("*.jpg"))


@pytest.fixture(scope="module")
def pipeline():
    return assemble.pipeline(Config())


class Service:
    """A DoorService on a playlist of frames, with its printed lines and the datagrams it sent to systemd."""

    def __init__(self, tmp_path: Path, pipeline, frames: list[Path]) -> None:
        self.clock = FakeClock()
        self.config = Config()
        self.config.storage.state_dir = str(tmp_path / "state")
        self.config.gpio.pin_factory = "mock"
        self.gallery = assemble.gallery(self.config, clock=self.clock)
        enroll_from_images("owner", ENROL, pipeline, self.gallery)
        camera = ReconnectingCamera(lambda: PlaylistCamera(frames, on_frame=lambda: self.clock.advance(1 / FPS)), self.clock)
        self.door = assemble.door(self.config, face_pipeline=pipeline, door_gallery=self.gallery, door_camera=camera,
                                  door_liveness=NoLivenessCheck(), clock=self.clock)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(tmp_path / "notify"))
        self.socket.setblocking(False)
        self.notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}, clock=self.clock)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.service = DoorService(self.door, self.config, self.notifier, clock=self.clock, sleep=self.clock.advance,
                                   out=self.lines.append, err=self.errors.append)

    def datagrams(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.socket.recv(4096).decode())
            except BlockingIOError:
                return messages

    def close(self) -> None:
        self.door.close()
        self.gallery.close()
        self.notifier.close()
        self.socket.close()


@pytest.fixture
def service(tmp_path, pipeline):
    made: list[Service] = []

    def make(frames: list[Path]) -> Service:
        made.append(Service(tmp_path / f"s{len(made)}", pipeline, frames))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_the_loop_lets_the_owner_in_and_reports_the_decision_to_systemd(service):
    s = service(OWNER + [EMPTY] * (7 * FPS))
    s.service.run()
    assert any(" granted owner " in line for line in s.lines), s.lines
    messages = s.datagrams()
    assert messages[0].startswith("READY=1") and "1 people enrolled" in messages[0]
    assert "WATCHDOG=1" in messages
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert statuses and "last decision: granted owner" in statuses[-1], statuses
    assert "threshold" in statuses[-1] and "camera up" in statuses[-1]
    assert not s.door.hardware.relay_on, "the unlock expired before the frames ran out"


def test_the_loop_is_paced_to_max_fps(service):
    s = service([EMPTY] * 30)
    s.config.camera.max_fps = 5.0
    start = s.clock()
    s.service.run()
    # Each frame takes 1/15 s on the fake camera; the loop sleeps the rest of 1/5 s.
    assert s.clock() - start == pytest.approx(30 / 5.0, rel=0.02)


def test_a_stop_flag_ends_the_loop_at_the_next_frame(service):
    s = service(OWNER + [EMPTY] * 100)
    stop = StopFlag()
    s.service.out = lambda line: (s.lines.append(line), setattr(stop, "reason", "SIGTERM"))
    s.service.run(stop)
    assert s.door.frames < len(OWNER) + 100
    assert s.door.hardware.relay_on == s.door.decision.relay_on  # the relay follows the decision, nothing else


def test_failed_frames_in_a_row_stop_the_service_with_the_door_locked(service):
    s = service([EMPTY] * 50)

    def broken_frame():
        raise GalleryError("gallery is damaged (test)")

    s.door.process_frame = broken_frame
    with pytest.raises(FaceKioskError, match=f"{MAX_CONSECUTIVE_ERRORS} errors in a row"):
        s.service.run()
    assert len(s.errors) == MAX_CONSECUTIVE_ERRORS and "damaged" in s.errors[-1]
    assert not s.door.hardware.relay_on


def test_the_loop_picks_up_people_enrolled_by_another_process(service, pipeline):
    s = service([EMPTY] * (6 * FPS))
    other = assemble.gallery(s.config)  # what 'kiosk enroll' opens while the service runs
    try:
        enroll_from_images("second", ENROL[:2], pipeline, other, force=True)
    finally:
        other.close()
    assert set(s.door._templates.names) == {"owner"}
    s.service.run()
    assert set(s.door._templates.names) == {"owner", "second"}


def test_signals_stop_the_loop_and_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR1)
    with stop_on_signals((signal.SIGUSR1,)) as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop and stop.reason == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
