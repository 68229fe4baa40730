"""Faults: a killed enrolment, black/frozen/garbage frames, a GPIO error, a locked database, a full or read-only disk."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk import cli
from kiosk.demo import demo_data
from kiosk.errors import GalleryError
from kiosk.gallery import Gallery
from tests.conftest import FACES, fill_the_disk, free_the_disk, shipped_model_gallery

ENROL = sorted((demo_data() / "enrol").glob("*.jpg"))


def test_sigkill_in_the_middle_of_an_enrolment_leaves_the_gallery_intact(tmp_path):
    state = tmp_path / "state"
    assert cli.main(["enroll", "first", "--state-dir", str(state), "--images", *map(str, ENROL)]) == 0
    many = tmp_path / "many"
    many.mkdir()
    photo = (FACES / "George_W_Bush" / "George_W_Bush_0001.jpg").read_bytes()
    for i in range(400):
        (many / f"{i:03d}.jpg").write_bytes(photo)
    process = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "enroll", "second", "--state-dir", str(state),
                                "--images", str(many)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)  # well inside the 400 embeddings
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    gallery = shipped_model_gallery(state)
    assert gallery.integrity_ok()
    people = {p.name: p.embeddings for p in gallery.people()}
    assert people["first"] == 3
    assert people.get("second") in (None, 400), "all or nothing"
    gallery.close()


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    """An image-folder camera source playing ``frames`` in order (PNG: every pixel as given)."""
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


def test_black_frozen_and_garbage_frames_never_open_the_door(tmp_path, pins, capsys, keep_signal_handlers):
    state = tmp_path / "state"
    assert cli.main(["enroll", "Colin Powell", "--state-dir", str(state), "--images", *map(str, ENROL)]) == 0
    rng = np.random.default_rng(0)
    frames = [np.zeros((480, 640, 3), np.uint8)] * 10  # black, frozen
    frames += [np.full((480, 640, 3), 255, np.uint8)] * 10  # blown out, frozen
    frames += [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(6)]  # garbage (slow to search: few)
    camera = write_frames(tmp_path / "frames", frames)
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[camera]\nsource = "{camera}"\nmax_fps = 120\n[storage]\nstate_dir = "{state}"\n')
    capsys.readouterr()
    assert cli.main(["run", "--simulate", "--config", str(config)]) == 0  # to the end of the frames
    assert " granted " not in capsys.readouterr().out
    relay = pins.pin(17)  # the default active-low relay: energised = LOW
    assert relay.state is True and all(change.state for change in relay.states[1:]), "the relay was never switched on"
    gallery = shipped_model_gallery(state)
    assert [e.kind for e in gallery.events()] == ["enrolled"]
    gallery.close()


def test_gpio_error_when_opening_leaves_the_relay_off(tmp_path, pins, capsys, keep_signal_handlers):
    from gpiozero import OutputDevice

    camera = write_frames(tmp_path / "frames", [np.zeros((480, 640, 3), np.uint8)])
    holder = OutputDevice(27, pin_factory=pins)  # another program holds the LED's line: set-up fails after the relay's
    try:
        assert cli.main(["run", "--simulate", "--state-dir", str(tmp_path / "state"), "--camera", str(camera)]) == 2
    finally:
        holder.close()
    assert "cannot set up GPIO" in capsys.readouterr().err
    relay = pins.pin(17)
    # A released line keeps its last level on a Pi: that level must be HIGH, the off level of this active-low relay,
    # and the relay must never have been driven on (LOW) after it became an output.
    assert relay.state is True, "the relay was released in its off state"
    assert all(change.state for change in relay.states[1:]), "the relay was never switched on"


def test_locked_database_is_a_clear_error_and_changes_nothing(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.add_person("Ann", np.ones(128, np.float32) / np.sqrt(128))
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    gallery._db.execute("PRAGMA busy_timeout = 100")
    with pytest.raises(GalleryError, match="is busy .*another kiosk command.*nothing was changed"):
        gallery.add_person("Bob", np.ones(128, np.float32) / np.sqrt(128))
    blocker.rollback()
    blocker.close()
    assert [p.name for p in gallery.people()] == ["Ann"]
    gallery.close()


def test_enroll_from_a_folder_of_bad_files_uses_the_good_ones_and_names_the_rest(tmp_path, capsys):
    """Corrupt, truncated, zero-byte, enormous and non-image files are named and skipped; odd formats are read."""
    from PIL import Image

    from tests.conftest import png_header_only

    photos = tmp_path / "photos"
    photos.mkdir()
    good = ENROL[0].read_bytes()
    (photos / "a_good.jpg").write_bytes(good)
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "zero.png").write_bytes(b"")
    (photos / "notes.jpg").write_text("this is a text file with an image suffix")
    png_header_only(photos / "bomb.png", 100_000, 100_000)
    image = cv2.imread(str(ENROL[1]))
    Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).convert("CMYK").save(photos / "cmyk.jpg")
    cv2.imwrite(str(photos / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(photos / "deep16.png"), image.astype(np.uint16) * 257)
    state = tmp_path / "state"
    assert cli.main(["enroll", "odd ñame-ü", "--state-dir", str(state), "--images", str(photos)]) == 0
    out = capsys.readouterr()
    report = out.out + out.err
    for name in ("corrupt.jpg", "truncated.jpg", "zero.png", "notes.jpg", "bomb.png"):
        assert f"{name}" in report, name
    assert "too large to read safely" in report and "empty (0 bytes)" in report
    gallery = shipped_model_gallery(state)
    (person,) = gallery.people()
    assert person.name == "odd ñame-ü"
    assert person.embeddings == 4  # the good JPEG and the CMYK, grayscale and 16-bit copies


def test_full_disk_refuses_an_enrolment_with_a_clear_error_and_keeps_the_gallery(tmp_path):
    gallery = Gallery(tmp_path / "gallery.sqlite3", "model-a")
    unit = np.ones(128, np.float32) / np.sqrt(128)
    gallery.add_person("Ann", unit)
    gallery.log_event("granted", "Ann", 0.9)
    fillers = fill_the_disk(gallery)
    with pytest.raises(GalleryError, match="disk is full.*nothing was changed"):
        gallery.add_person("Bob", unit)
    assert [(p.name, p.embeddings) for p in gallery.people()] == [("Ann", 1)]
    assert [e.kind for e in gallery.events()] == ["enrolled", "granted"] + ["error"] * fillers
    gallery.close()
    reopened = Gallery(tmp_path / "gallery.sqlite3", "model-a")  # integrity check passes after the failure
    assert [p.name for p in reopened.people()] == ["Ann"]
    reopened.add_person("Bob", unit)  # space is back (no page cap on a new connection)
    reopened.close()


# Degrade, don't die: a full disk or a read-only gallery at start -----------------------------------

UNIT = np.ones(128, np.float32) / np.sqrt(128)


def capped_connections(monkeypatch, pages: int) -> None:
    """Every new SQLite connection sees a database that cannot grow past ``pages``: SQLITE_FULL, as on a full disk."""
    connect = sqlite3.connect

    def capped(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(sqlite3, "connect", capped)


def test_a_full_disk_at_start_opens_the_gallery_for_reading_and_writes_fail_cleanly(tmp_path, monkeypatch):
    path = tmp_path / "state" / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.add_person("Ann", UNIT)
    fill_the_disk(gallery)
    gallery.close()
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    capped_connections(monkeypatch, pages)
    gallery = Gallery(path, "model-a")  # no schema write is needed: it opens
    assert gallery.templates().names == ["Ann"] and not gallery.read_only
    writers = (lambda i: gallery.log_event("granted", "Ann", 0.9), lambda i: gallery.save_state(f"key {i}", "x" * 200),
               lambda i: gallery.add_person(f"person {i}", UNIT))
    for write in writers:  # each table has its own pages: write until the one it needs next does not fit
        with pytest.raises(GalleryError) as error:
            for i in range(1000):
                write(i)
        assert "disk is full" in str(error.value) and "nothing was changed" in str(error.value)
        assert "restore" not in str(error.value)
        assert gallery.read_only
    assert gallery.integrity_ok()
    monkeypatch.undo()
    free_the_disk(gallery)
    gallery.log_event("granted", "Ann", 0.9)
    assert not gallery.read_only
    gallery.close()


def mount_tmpfs(folder, size: str = "1m") -> None:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                          check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB file system (root only): filling it gives the real SQLITE_FULL and I/O errors of a full SD card."""
    folder = tmp_path / "disk"
    mount_tmpfs(folder)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_the_file_system(folder) -> None:
    handle = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(handle, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(handle)


def test_a_really_full_disk_at_start_runs_the_gallery_read_only_and_recovers(small_disk, monkeypatch):
    """The issue's case: the file is fine but SQLite cannot even create its shared-memory file."""
    import kiosk.gallery

    path = small_disk / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.add_person("Ann", UNIT)
    gallery.close()
    fill_the_file_system(small_disk)
    monkeypatch.setattr(kiosk.gallery, "REOPEN_SECONDS", 0.0)  # try to reopen for writing at every read and write
    gallery = Gallery(path, "model-a")
    assert gallery.read_only and gallery.templates().names == ["Ann"] and gallery.damaged_templates() == []
    with pytest.raises(GalleryError) as error:
        gallery.log_event("granted", "Ann", 0.9)
    assert "restore" not in str(error.value) and "nothing was changed" in str(error.value)
    (small_disk / "filler").unlink()
    gallery.log_event("granted", "Ann", 0.9)  # reopened for writing once there is space
    assert not gallery.read_only and [e.kind for e in gallery.events()] == ["enrolled", "granted"]
    gallery.close()


def test_kiosk_run_starts_on_a_full_disk_without_advising_a_restore(small_disk, tmp_path, capsys):
    gallery = shipped_model_gallery(small_disk)
    gallery.add_person("Ann", UNIT)
    gallery.close()
    (small_disk / "kiosk.lock").touch()
    fill_the_file_system(small_disk)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.jpg").write_bytes((demo_data() / "frames" / "empty_00.jpg").read_bytes())
    done = subprocess.run([sys.executable, "-m", "kiosk.cli", "run", "--simulate", "--state-dir", str(small_disk),
                           "--camera", str(frames)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "is read-only (disk full or read-only file system): the door runs" in done.stderr
    assert "restore" not in done.stdout + done.stderr


@pytest.fixture
def read_only_state(tmp_path):
    """A state folder whose gallery cannot be written: file mode 0400 in a 0500 folder, or (as root, who may
    write anyway) a file system mounted read-only."""
    if os.geteuid() != 0:
        folder = tmp_path / "state"
        folder.mkdir()
        yield folder, lambda: (folder.chmod(0o500), (folder / "gallery.sqlite3").chmod(0o400))
        folder.chmod(0o700)
        return
    folder = tmp_path / "state"
    mount_tmpfs(folder)
    yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_gallery_is_read_and_its_writes_fail_cleanly(read_only_state):
    folder, make_read_only = read_only_state
    gallery = Gallery(folder / "gallery.sqlite3", "model-a")
    gallery.add_person("Ann", UNIT)
    gallery.close()
    make_read_only()
    gallery = Gallery(folder / "gallery.sqlite3", "model-a")
    assert gallery.templates().names == ["Ann"] and gallery.people()[0].name == "Ann"
    with pytest.raises(GalleryError) as error:
        gallery.log_event("granted", "Ann", 0.9)
    assert "read-only" in str(error.value) and "restore" not in str(error.value)
    assert gallery.read_only
    gallery.close()


def test_only_a_failed_integrity_check_advises_a_restore(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.add_person("Ann", UNIT)
    for i in range(300):
        gallery.log_event("denied", detail=f"event {i} " * 10)
    gallery.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[5 * page + 8: 5 * page + 200] = bytes(range(192))  # scribble over a b-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="is damaged .*On tree page .*restore a backup"):
        Gallery(path, "model-a")
