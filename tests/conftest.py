"""Shared fixtures and helpers: the tiny credited face set, mock pins, a full disk, a systemd notify socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import settings

from kiosk.errors import GalleryError
from kiosk.gallery import Gallery

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
