"""Shared fixtures and helpers: the tiny credited face set, mock pins, a full disk, a systemd notify socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import settings

from kiosk import api, assemble
from kiosk.camera import PlaylistCamera, ReconnectingCamera
from kiosk.config import Config
from kiosk.control import DoorControl
from kiosk.demo import demo_data
from kiosk.enroll import enroll_from_images
from kiosk.errors import GalleryError
from kiosk.gallery import Gallery
from kiosk.liveness import NoLivenessCheck
from kiosk.notify import SystemdNotifier
from kiosk.service import DoorService, StopFlag, lock_state_dir

# Property tests draw the same examples on every CI run (a flaky test blocks every landing);
# locally they explore new random examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

FIXTURES = Path(__file__).parent / "fixtures"
FACES = FIXTURES / "faces"
MODELS = Path(__file__).resolve().parent.parent / "kiosk" / "models"


@pytest.fixture
def face_tree(tmp_path: Path) -> Path:
    """A writable copy of the fixture faces (ROOT/<person>/<image>)."""
    root = tmp_path / "faces"
    shutil.copytree(FACES, root)
    return root


def shipped_model_gallery(state_dir: Path) -> Gallery:
    """The gallery in ``state_dir`` as the kiosk commands open it: embeddings tied to the shipped model."""
    from kiosk.encoder import ModelInfo

    return Gallery(state_dir / "gallery.sqlite3", ModelInfo.load(MODELS / "encoder.json").sha256)


# Commands that touch GPIO ------------------------------------------------------------------------


@pytest.fixture
def pins(monkeypatch) -> MockFactory:
    """The mock pins every command in the test uses (one factory, so the test can look at them afterwards)."""
    from kiosk import gpio

    factory = MockFactory()
    monkeypatch.setattr(gpio, "make_pin_factory", lambda _name: factory)
    return factory


@pytest.fixture
def keep_signal_handlers():
    """'kiosk run' installs SIGTERM/SIGINT handlers; put pytest's back afterwards."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


# A full disk ------------------------------------------------------------------------------------


def fill_the_disk(gallery: Gallery) -> int:
    """Fill the database's last free byte, as on a full disk: SQLite then reports SQLITE_FULL.

    The page count is capped where it is, and filler events are written until
    one no longer fits. Returns how many filler events went in.
    """
    pages = gallery._db.execute("PRAGMA page_count").fetchone()[0]
    gallery._db.execute(f"PRAGMA max_page_count = {pages}")
    for written in range(100_000):
        try:
            gallery.log_event("error", detail="filler " * 20)
        except GalleryError:
            return written
    raise AssertionError("the database never filled up")


def free_the_disk(gallery: Gallery) -> None:
    """Undo :func:`fill_the_disk` on this connection."""
    gallery._db.execute("PRAGMA max_page_count = 1073741823")


# 'kiosk run' under a systemd that the test plays --------------------------------------------------


class NotifySocket:
    """A NOTIFY_SOCKET the test owns, collecting what the service says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float, until: Callable[[NotifySocket], bool] | None = None) -> None:
        """Gather datagrams for ``seconds``, or until ``until(self)`` holds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data))
            if until is not None and until(self):
                return

    def count(self, text: str) -> int:
        return sum(text in m for _, m in self.messages)

    def statuses(self) -> list[str]:
        """The STATUS= lines received so far, oldest first."""
        return [m.removeprefix("STATUS=") for _, m in self.messages if m.startswith("STATUS=")]


def start_kiosk(tmp_path: Path, frames: Path, watchdog_usec: int = 1_000_000,
                extra_config: str = "") -> tuple[subprocess.Popen, NotifySocket]:
    """'kiosk run --simulate' on the image folder ``frames`` at 15 fps, state in ``tmp_path/state``, as systemd starts it.

    ``extra_config``: more TOML sections for the config file (e.g. ``[liveness]\\nmode = "off"\\n``).
    """
    notify = NotifySocket(tmp_path / "notify.sock")
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[camera]\nsource = "{frames}"\nmax_fps = 15.0\n[storage]\nstate_dir = "{tmp_path / "state"}"\n'
                      + extra_config)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--simulate", "--config", str(config)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, notify


def png_header_only(path, width: int, height: int) -> None:
    """A tiny PNG file whose header declares ``width`` x ``height`` (a decompression-bomb shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# A running door (kiosk run in-process) for the local API, the web page and MQTT -------------------------

ENROL = sorted((demo_data() / "enrol").glob("*.jpg"))


@pytest.fixture(scope="session")
def door_pipeline():
    return assemble.pipeline(Config())


class RunningDoor:
    """``kiosk run`` in-process: the door built and run in a thread of its own (SQLite connections belong to the
    thread that opened them), its local API on a socket in ``state``."""

    def __init__(self, state: Path, pipeline, frames: list[Path], configure: Callable[[Config], None] | None = None,
                 owner: bool = True, before_start: Callable[[RunningDoor], None] | None = None) -> None:
        self.config = Config()
        self.config.storage.state_dir = str(state)
        self.config.gpio.pin_factory = "mock"
        self.config.camera.max_fps = 30.0
        self.config.enrollment.capture_seconds = 4.0
        self.config.enrollment.frames = 3
        if configure is not None:
            configure(self.config)
        gallery = assemble.gallery(self.config)
        if owner:
            enroll_from_images("owner", ENROL, pipeline, gallery)
        gallery.close()
        self.lock = lock_state_dir(self.config)  # as run_service holds it
        self.control = DoorControl()
        self.server = api.ApiServer(self.config.api_socket, self.control, self.config)
        self.server.start()
        if before_start is not None:  # e.g. a listener that must not miss the first decision
            before_start(self)
        self.stop = StopFlag()
        self.thread = threading.Thread(target=self._run, args=(pipeline, frames), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.control.status is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _run(self, pipeline, frames: list[Path]) -> None:
        camera = ReconnectingCamera(lambda: PlaylistCamera(frames, loop=True))
        self.door = assemble.door(self.config, face_pipeline=pipeline, door_camera=camera,
                                  door_liveness=NoLivenessCheck())
        try:
            DoorService(self.door, self.config, SystemdNotifier({}), out=lambda line: None, err=lambda line: None,
                        control=self.control).run(self.stop)
        finally:
            self.door.close()
            self.door.gallery.close()

    def ask(self, command: str, **arguments):
        progress: list[str] = []
        return api.request(self.config.api_socket, command, progress=progress.append, **arguments), progress

    def events(self):
        """The event log, read as another process would."""
        gallery = assemble.gallery(self.config)
        try:
            return gallery.events()
        finally:
            gallery.close()

    def people(self) -> set[str]:
        gallery = assemble.gallery(self.config)
        try:
            return {person.name for person in gallery.people()}
        finally:
            gallery.close()

    def close(self) -> None:
        if self.stop:
            return
        self.stop.reason = "test over"
        self.thread.join(10)
        self.server.stop()
        os.close(self.lock)


@pytest.fixture
def running(tmp_path, door_pipeline):
    doors: list[RunningDoor] = []

    def start(frames: list[Path], configure: Callable[[Config], None] | None = None, owner: bool = True,
              before_start: Callable[[RunningDoor], None] | None = None) -> RunningDoor:
        for door in doors:  # one at a time: they share the pipeline, whose detector is not thread-safe
            door.close()
        doors.append(RunningDoor(tmp_path / f"d{len(doors)}", door_pipeline, frames, configure, owner, before_start))
        return doors[-1]

    yield start
    for door in doors:
        door.close()


