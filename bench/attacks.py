"""Red-team suite (issue 11): every attack an intruder tried, played through the real door.

Each attack builds the real :class:`kiosk.door.Door` (gpiozero mock pins, a
fake clock advanced 1/15 s per frame, image files from disk as the camera,
the liveness check the configuration names, ``"both"`` by default) with
:func:`build_door`, plays a scene, and records whether the relay was ever
energised, what the door logged, and whether the attack *held*: each attack
says what held means (usually "the door never opened"; for some, "every
attempt was logged", "the resident still got in", "the damaged gallery was
refused"). Controls check the rig itself: the enrolled person, live, must get
in; a plain printed photo must not.

    python -m bench.attacks                 # every attack on ../shared/data; rewrites docs/security.md's table
    python -m bench.attacks --quick         # one subject, fewer trials (about a minute)
    python -m bench.attacks --fixtures      # the in-repo fixtures only (what tests/test_attacks.py plays)

Exit status 1 when any attack did not hold (every attack that opened the
door is one of those) or a control failed; 0 when all held.

Data (``--data``, read-only): NUAA print-attack frames, ``nuaa_train/live``
and ``spoof/<subject>``, of the subjects held out from the liveness model's
training (0003, 0006, 0009) as residents and as strangers; LFW (people of
the View 1 test pairs, unseen in training) and CelebA wild for look-alikes.
Composed frames (a photo beside a face, a screen replay, ...) are written as
PNG files to a scratch folder and played from disk like any other frame.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk import assemble
from kiosk.camera import ReconnectingCamera
from kiosk.clock import FakeClock
from kiosk.config import Config
from kiosk.decision import Led
from kiosk.door import Door, FrameReport
from kiosk.enroll import enroll_from_images
from kiosk.errors import EndOfStream, FaceKioskError, ImageError
from kiosk.face import FaceFinder
from kiosk.gallery import Gallery
from kiosk.gpio import DoorHardware, make_pin_factory
from kiosk.images import read_image
from kiosk.liveness_cli import natural_key
from kiosk.pipeline import FacePipeline

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
SECURITY_MD = REPO / "docs" / "security.md"
MARK_START, MARK_END = "<!-- attacks:start -->", "<!-- attacks:end -->"
FIXTURES = REPO / "tests" / "fixtures"
DEMO = REPO / "kiosk" / "demo_data"
EMPTY = DEMO / "frames" / "empty_00.jpg"
FPS = 15
HELD_OUT = ("0003", "0006", "0009")
"""NUAA subjects the liveness model never saw (kiosk/models/liveness-report.md): residents and strangers here."""
RESIDENT = "resident"


# The door ---------------------------------------------------------------------------------------------


class SceneCamera:
    """Image files from disk as camera frames, in the order queued (each decoded once).

    Frames can be queued while the door runs (:meth:`Rig.show`); reading past
    the queue is the end of the stream. The clock advances one frame period
    per frame read, like a camera at 15 frames per second.
    """

    def __init__(self, on_frame: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.name = "attack scene"
        self.queue: deque[Path] = deque()
        self._decoded: dict[Path, np.ndarray] = {}

    def add(self, frames: Iterable[Path]) -> None:
        self.queue.extend(Path(f) for f in frames)

    def read(self) -> np.ndarray:
        if not self.queue:
            raise EndOfStream("attack scene: all frames played")
        path = self.queue.popleft()
        self.on_frame()
        if path not in self._decoded:
            self._decoded[path] = read_image(path)
        return self._decoded[path]

    def close(self) -> None:
        pass


_PIPELINES: dict[tuple, FacePipeline] = {}


def pipeline_for(config: Config) -> FacePipeline:
    """The face pipeline ``kiosk run`` builds for this configuration (shared between doors: loading costs)."""
    key = (config.recognition.model_dir, config.recognition.runtime, repr(config.detector))
    if key not in _PIPELINES:
        _PIPELINES[key] = assemble.pipeline(config)
    return _PIPELINES[key]


@dataclass
class Rig:
    """A real door on mock pins, a fake clock and a scene camera; see :func:`build_door`."""

    door: Door
    gallery: Gallery
    hardware: DoorHardware
    factory: object
    clock: FakeClock
    wall: FakeClock
    config: Config
    camera: SceneCamera
    pipeline: FacePipeline
    state_dir: Path
    opened: bool = False
    """Whether the relay was energised after any frame shown so far."""
    reports: list[FrameReport] = field(default_factory=list)
    events_before: int = 0

    @property
    def relay_energised(self) -> bool:
        """The relay pin itself (not the door's own account): energised = driven to its active level."""
        pin = self.factory.pin(self.config.gpio.relay_pin)
        return bool(pin.state) == self.config.gpio.relay_active_high

    def show(self, frames: Sequence[Path], actions: dict[int, Callable[[Rig], None]] | None = None) -> list[FrameReport]:
        """Play ``frames`` through the door (``actions[i]`` runs before frame ``i``); the reports."""
        self.camera.add(frames)
        out = []
        for i in range(len(frames)):
            if actions and i in actions:
                actions[i](self)
            out.append(self.door.step())
            self.opened |= self.relay_energised or out[-1].relay_on
        self.reports.extend(out)
        return out

    def wait(self, seconds: float) -> None:
        """Time passes without a frame (the door's and the wall clock)."""
        _advance(self.clock, self.wall, seconds)

    def press_button(self) -> None:
        self.factory.pin(self.config.gpio.button_pin).drive_low()  # pull-up button: pressed = low

    def release_button(self) -> None:
        self.factory.pin(self.config.gpio.button_pin).drive_high()

    def button(self, at: int = 0) -> dict[int, Callable[[Rig], None]]:
        """Actions for :meth:`show`: the enrol button pressed before frame ``at`` and released after it."""
        return {at: Rig.press_button, at + 1: Rig.release_button}

    def events(self):
        """Events logged since the door was built (not the set-up enrolments)."""
        return self.gallery.events()[self.events_before:]

    def people(self) -> list[str]:
        return [p.name for p in self.gallery.people()]

    @property
    def locked_out(self) -> bool:
        return bool(self.reports) and self.reports[-1].led is Led.LOCKED_OUT

    def close(self) -> None:
        try:
            self.door.close()
        finally:
            self.gallery.close()


def build_door(state_dir: Path, frames: Sequence[Path] = (), config: Config | None = None,
               enrol: dict[str, Sequence[Path]] | None = None, clock: FakeClock | None = None,
               wall: FakeClock | None = None) -> Rig:
    """The one place that builds a door: as ``kiosk run --simulate`` does, on a fake clock and a scene camera.

    ``state_dir`` is the door's state folder (gallery and whatever else it
    keeps); ``enrol`` enrols each name from its photos with
    :func:`kiosk.enroll.enroll_from_images` first (the first person enrolled
    becomes admin). ``clock`` is the door's (monotonic) clock and ``wall`` the
    gallery's (wall-clock) one, the same clock unless given: pass an earlier
    door's clocks to restart the service, a fresh ``clock`` with the old
    ``wall`` to reboot the machine.
    """
    config = config or Config()
    config.storage.state_dir = str(state_dir)
    clock = clock or FakeClock()
    wall = wall or clock
    config.gpio.pin_factory = "mock"
    pipeline = pipeline_for(config)
    gallery = assemble.gallery(config, clock=wall)
    try:
        for name, photos in (enrol or {}).items():
            enroll_from_images(name, list(photos), pipeline, gallery)
        factory = make_pin_factory("mock")
        hardware = DoorHardware(config.gpio, factory)
        camera = SceneCamera(lambda: _advance(clock, wall, 1 / FPS))
        door = assemble.door(config, face_pipeline=pipeline, door_gallery=gallery, door_hardware=hardware,
                             door_camera=ReconnectingCamera(lambda: camera, clock), clock=clock)
    except BaseException:
        gallery.close()
        raise
    rig = Rig(door, gallery, hardware, factory, clock, wall, config, camera, pipeline, Path(state_dir))
    rig.events_before = len(gallery.events())
    camera.add(frames)
    return rig


def _advance(clock: FakeClock, wall: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    if wall is not clock:
        wall.advance(seconds)



# Material: who is enrolled, who attacks, with which frames ------------------------------------------


@dataclass
class Lookalikes:
    """Attack 5's material: people enrolled from photos, and a pool of strangers' photos to pick look-alikes from."""

    enrolled: dict[str, list[Path]]
    """Candidates in order; the first ``people`` that enrolment accepts are enrolled."""
    people: int
    pool: list[Path]
    play: int
    """How many of the closest-scoring stranger photos walk up to the door."""
    label: str


@dataclass
class Material:
    """One resident and one stranger, with the frames the attacks are made of."""

    label: str
    enrol: list[Path]
    """Live photos the resident is enrolled from (another session than ``live``)."""
    live: list[Path]
    """The resident walking up, live, frames in order."""
    prints: list[list[Path]]
    """Print-attack sessions: a printed photo of the resident moved in front of the camera."""
    stranger: list[Path]
    """A live stranger (not enrolled), frames in order."""
    stranger_photo: Path
    """One photo of the stranger from another session (slipped among the resident's enrolment photos)."""
    stranger_prints: list[Path]
    """A photo of another person (not enrolled) moved in front of the camera: someone who is not there."""
    empty: Path = EMPTY
    thorough: bool = False
    """More trials per attack (every print session, several damaged components, a full minute of stepping out)."""
    lookalikes: Lookalikes | None = None
    housemates: dict[str, list[Path]] = field(default_factory=dict)
    """Other people who may be enrolled beside the resident (candidates; enrolment may refuse some)."""
    crowd: int = 0
    """How many people in all control C3 enrols (the resident and housemates)."""
    enrolment_seconds: tuple[float, float] | None = None
    """Shorter (admin wait, capture) windows for the button attacks, to keep the tests fast; None: the defaults."""

    def config(self) -> Config:
        """The door's configuration for this material: the defaults, but for ``enrolment_seconds``."""
        config = Config()
        if self.enrolment_seconds is not None:
            config.enrollment.admin_timeout_seconds, config.enrollment.capture_seconds = self.enrolment_seconds
        return config


def nuaa_sessions(folder: Path) -> list[list[Path]]:
    """The sessions of one NUAA subject folder (``ID_glasses_pos_session_frame.jpg``), each in frame order."""
    sessions: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.jpg"), key=natural_key):
        sessions.setdefault(path.stem.rsplit("_", 1)[0], []).append(path)
    return [sessions[k] for k in sorted(sessions)]


def fixture_material() -> Material:
    """The in-repo fixtures (what tests/test_attacks.py plays): NUAA 0006 as the resident, 0009 as the stranger."""
    liveness, attacks = FIXTURES / "liveness", FIXTURES / "attacks"
    faces = FIXTURES / "faces"
    enrolled = {name.replace("_", " "): sorted((faces / name).glob("*.jpg"))[:3]
                for name in ("Colin_Powell", "George_W_Bush", "Hugo_Chavez")}
    pool = sorted(attacks.glob("*.jpg")) + sorted((liveness / "live").glob("*.jpg"))[:1]
    return Material(
        label="fixtures: NUAA 0006 resident, 0009 stranger",
        enrol=sorted((liveness / "enrol").glob("*.jpg"), key=natural_key),
        live=sorted((liveness / "live").glob("*.jpg"), key=natural_key),
        prints=[sorted((liveness / "spoof").glob("*.jpg"), key=natural_key)],
        stranger=sorted(attacks.glob("0009_01_00_01_*.jpg"), key=natural_key),
        stranger_photo=next(iter(sorted(attacks.glob("0009_01_00_02_*.jpg")))),
        stranger_prints=sorted(attacks.glob("spoof_0009_*.jpg"), key=natural_key),
        lookalikes=Lookalikes(enrolled, 3, pool, play=3, label="LFW people from tests/fixtures/faces"),
        enrolment_seconds=(3.0, 3.0),
        housemates=enrolled, crowd=4,
    )


def data_materials(data: Path, quick: bool = False, enrolled_people: int = 20, pool_size: int | None = None) -> list[Material]:
    """Residents and strangers from the NUAA subjects held out from the liveness model; look-alikes from LFW and CelebA."""
    nuaa = data / "nuaa_train"
    if not nuaa.is_dir():
        raise SystemExit(f"no NUAA frames at {nuaa}: pass --data (the shared data folder) or --fixtures")
    pairs = [("0006", "0009"), ("0009", "0003"), ("0003", "0006")]
    materials = []
    for resident, stranger in pairs[:1] if quick else pairs:
        live = nuaa_sessions(nuaa / "live" / resident)
        if len(live) > 1:
            attempt, enrol_from = live[0], live[-1]
        else:  # one live session: enrol from its last frames, walk up with its first
            attempt, enrol_from = live[0][:20], live[0][-12:]
        enrol = [enrol_from[i] for i in np.linspace(0, len(enrol_from) - 1, 3).round().astype(int)]
        prints = nuaa_sessions(nuaa / "spoof" / resident)
        other = nuaa_sessions(nuaa / "live" / stranger)
        materials.append(Material(
            label=f"NUAA {resident} resident, {stranger} stranger",
            enrol=enrol, live=attempt[:15], prints=prints[:2] if quick else prints,
            stranger=other[0][:40], stranger_photo=other[-1][-1], thorough=not quick,
            stranger_prints=nuaa_sessions(nuaa / "spoof" / stranger)[0],
        ))
    people, pool, play = (5, 300, 5) if quick else (enrolled_people, pool_size, 20)
    materials[0].lookalikes = lfw_lookalikes(data, people, pool, play)
    for m in materials:
        m.housemates, m.crowd = materials[0].lookalikes.enrolled, people
    return materials


def lfw_lookalikes(data: Path, people: int, pool_size: int | None, play: int, seed: int = 11) -> Lookalikes:
    """``people`` enrolled from 3 photos each, strangers from the rest: LFW people of the View 1 test pairs and CelebA wild.

    Both sets are unseen by the encoder's training (LFW View 1 test people and
    the CelebA wild identities were kept out of it).
    """
    names = set()
    for line in (data / "lfw_pairsDevTest.txt").read_text().splitlines()[1:]:
        parts = line.split()
        names.update([parts[0]] if len(parts) == 3 else [parts[0], parts[2]] if len(parts) == 4 else [])
    lfw = data / "lfw"
    photos = {n: sorted((lfw / n).glob("*.jpg")) for n in sorted(names)}
    rng = np.random.default_rng(seed)
    candidates = [n for n, p in photos.items() if len(p) >= 3]
    chosen = rng.permutation(candidates)[:2 * people].tolist()  # twice as many: enrolment refuses some
    pool = [p for n, ps in photos.items() if n not in chosen for p in ps]
    pool += sorted((data / "celeba").glob("*/*.jpg"))
    if pool_size is not None and pool_size < len(pool):
        pool = [pool[i] for i in sorted(rng.choice(len(pool), size=pool_size, replace=False))]
    return Lookalikes({n: photos[n][:3] for n in chosen}, people, pool, play,
                      label=f"LFW people (View 1 test identities, 3 photos each); {len(pool)} stranger photos "
                            "from the other View 1 test people and CelebA wild")


# Composed frames --------------------------------------------------------------------------------------


class Work:
    """A scratch folder: fresh state folders and composed frames (PNG, lossless)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def state(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:03d}-{name}"

    def frames(self, name: str, images: Iterable[np.ndarray]) -> list[Path]:
        self._count += 1
        folder = self.root / f"{self._count:03d}-{name}-frames"
        folder.mkdir(parents=True)
        paths = []
        for i, image in enumerate(images):
            path = folder / f"{i:04d}.png"
            if not cv2.imwrite(str(path), image):
                raise OSError(f"cannot write {path}")
            paths.append(path)
        return paths


_FINDER: FaceFinder | None = None


def face_centre(image: np.ndarray) -> tuple[float, float, float]:
    """Centre x, y and width of the largest face (the frame's centre when none is found)."""
    global _FINDER
    _FINDER = _FINDER or FaceFinder()
    face = _FINDER.largest(image)
    if face is None:
        return image.shape[1] / 2, image.shape[0] / 2, image.shape[1] / 3
    return face.center[0], face.center[1], face.w


def _columns(image: np.ndarray, centre_x: float, width: int) -> np.ndarray:
    x0 = int(np.clip(centre_x - width / 2, 0, image.shape[1] - width))
    return image[:, x0:x0 + width]


def beside(live: np.ndarray, photo: np.ndarray, photo_scale: float = 1.12) -> np.ndarray:
    """A live face on the left, a printed photo held beside it on the right (a little nearer the camera: larger)."""
    height, width = live.shape[:2]
    half = width // 2
    photo = cv2.resize(photo, None, fx=photo_scale, fy=photo_scale, interpolation=cv2.INTER_LINEAR)
    photo_x, photo_y, _ = face_centre(photo)
    live_x, live_y, _ = face_centre(live)
    y0 = int(np.clip(photo_y - live_y, 0, photo.shape[0] - height))  # faces at about the same height
    return np.hstack([_columns(live, live_x, half), _columns(photo[y0:y0 + height], photo_x, width - half)])


def over_face(live: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """The printed photo held in front of the live face, its face at the same place and size (no jump for the tracker)."""
    lx, ly, lw = face_centre(live)
    px, py, pw = face_centre(photo)
    scale = lw / pw
    scaled = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    dx, dy = round(px * scale - lx), round(py * scale - ly)
    # The paper: 1.6 face widths wide, 2 high, the face a little above its middle; edges visible.
    x0, x1 = max(0, int(lx - 0.8 * lw), -dx), min(live.shape[1], int(lx + 0.8 * lw), scaled.shape[1] - dx)
    y0, y1 = max(0, int(ly - 0.9 * lw), -dy), min(live.shape[0], int(ly + 1.1 * lw), scaled.shape[0] - dy)
    out = live.copy()
    out[y0:y1, x0:x1] = scaled[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out


def moved_to(photo: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """The whole frame scaled and shifted so that its face lands at ``target`` (centre x, y, width)."""
    tx, ty, tw = target
    px, py, pw = face_centre(photo)
    scale = tw / pw
    matrix = np.float32([[scale, 0, tx - scale * px], [0, scale, ty - scale * py]])
    return cv2.warpAffine(photo, matrix, (photo.shape[1], photo.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def far_away(photo: np.ndarray, background: np.ndarray, scale: float = 0.45) -> np.ndarray:
    """The whole printed photo, smaller (held further from the camera), edges visible, on the porch background."""
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = cv2.resize(background, (photo.shape[1], photo.shape[0])).copy()
    y0, x0 = (frame.shape[0] - small.shape[0]) // 2, (frame.shape[1] - small.shape[1]) // 2
    frame[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return frame


def blurred(image: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Out of focus or moved fast: the print's texture is gone."""
    return cv2.GaussianBlur(image, (0, 0), sigma)


def grayscale(image: np.ndarray) -> np.ndarray:
    """What a NoIR camera under infrared light delivers at night (three equal channels)."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def on_a_screen(frame: np.ndarray, background: np.ndarray, t: int, scale: float = 0.6) -> np.ndarray:
    """A recorded frame replayed on a tablet held up to the camera: backlit, lower contrast, moiré, a black bezel."""
    screen = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
    screen = 30 + 0.8 * 255 * (screen / 255) ** 0.85  # backlight lifts the blacks, gamma of the panel
    yy, xx = np.mgrid[0:screen.shape[0], 0:screen.shape[1]]
    screen *= (1 + 0.05 * np.sin(2 * np.pi * (xx * 0.93 + yy * 0.37 + t) / 3.3))[..., None]  # moiré of pixel grid vs sensor
    screen = cv2.GaussianBlur(np.clip(screen, 0, 255).astype(np.uint8), (0, 0), 0.7)
    bezel = 14
    out = cv2.resize(background, (frame.shape[1], frame.shape[0])).copy()
    h, w = screen.shape[:2]
    y0, x0 = (out.shape[0] - h) // 2 + int(3 * np.sin(t / 4)), (out.shape[1] - w) // 2 + int(3 * np.cos(t / 5))  # held by hand
    out[y0 - bezel:y0 + h + bezel, x0 - bezel:x0 + w + bezel] = 12
    out[y0:y0 + h, x0:x0 + w] = screen
    return out


def on_paper(frame: np.ndarray, background: np.ndarray, t: int, scale: float = 0.7) -> np.ndarray:
    """A live frame printed (ink never black, paper never white, a white margin) and held up by hand, the porch behind."""
    sheet = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
    sheet = 35 + sheet * (220 - 35) / 255  # the print's dynamic range
    sheet = cv2.GaussianBlur(sheet, (0, 0), 0.6)
    margin = 12
    out = cv2.resize(background, (frame.shape[1], frame.shape[0])).copy()
    h, w = sheet.shape[:2]
    y0 = (out.shape[0] - h) // 2 + int(4 * np.sin(t / 3))  # the hand moves the sheet a little
    x0 = (out.shape[1] - w) // 2 + int(4 * np.cos(t / 4))
    out[y0 - margin:y0 + h + margin, x0 - margin:x0 + w + margin] = 225
    out[y0:y0 + h, x0:x0 + w] = np.clip(sheet, 0, 255).astype(np.uint8)
    return out


def jittered(photo: np.ndarray, count: int) -> list[np.ndarray]:
    """One photo as ``count`` frames, each shifted by a pixel or two (so the tracker sees a live-ish sequence)."""
    shifts = [(0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (2, 0), (0, 2), (-2, 0), (0, -2)]
    out = []
    for i in range(count):
        dx, dy = shifts[i % len(shifts)]
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(cv2.warpAffine(photo, matrix, (photo.shape[1], photo.shape[0]), borderMode=cv2.BORDER_REPLICATE))
    return out


def images(paths: Iterable[Path]) -> list[np.ndarray]:
    return [read_image(p) for p in paths]


def cycle(frames: Sequence[Path], count: int, start: int = 0) -> list[Path]:
    """``count`` frames taken round and round from ``frames``."""
    return [frames[(start + i) % len(frames)] for i in range(count)]


# Trials -----------------------------------------------------------------------------------------------


ATTEMPT_KINDS = ("granted", "denied", "unknown", "spoof")


@dataclass
class Trial:
    """One play of an attack: did it hold, did the relay energise, what the door logged, in one line."""

    held: bool
    opened: bool
    events: list[str]
    note: str


def kinds(events) -> list[str]:
    return [e.kind for e in events]


def tally(kind_list: Iterable[str]) -> str:
    counts = Counter(kind_list)
    return ", ".join(f"{k} {n}" for k, n in counts.items()) if counts else "nothing"


def first_grant(events) -> str:
    for e in events:
        if e.kind == "granted":
            score = "" if e.score is None else f" (score {e.score:.3g})"
            return f"granted as {e.person!r}{score}"
    return "no granted event"


def trial_for(rig: Rig, held: bool, what: str, events=None) -> Trial:
    """A trial from a rig's play: ``what`` happened, then 'opened: granted as ...' or 'stayed shut'."""
    events = rig.events() if events is None else events
    result = f"OPENED, {first_grant(events)}" if rig.opened else "stayed shut"
    return Trial(held, rig.opened, kinds(events), f"{what}: {result}; logged {tally(kinds(events))}")


_SCRATCH: list[str] = []
"""The scratch folder of the attack being played: shown as ``<scratch>`` in outcomes (the table stays the same run to run)."""


def crashed(error: BaseException) -> str:
    """The error's type and first line, the scratch folder's path replaced by ``<scratch>``."""
    text = str(error).splitlines()[0] if str(error) else ""
    for path in _SCRATCH:
        text = text.replace(path, "<scratch>")
    return f"{type(error).__name__}: {text[:160]}"


class Precondition(Exception):
    """The scene could not be set up (e.g. no lockout could be provoked): the attack could not be tried."""


def lockout_config(m: Material) -> Config:
    """The material's configuration, a still face refused after 1 s instead of 4 (``decision.liveness_wait_seconds``).

    Only for attacks that need a lockout first (:func:`provoke_lockout`): it
    makes the still-photo tries short; the attack played during the lockout
    is the same.
    """
    config = m.config()
    if hasattr(config.decision, "liveness_wait_seconds"):
        config.decision.liveness_wait_seconds = 1.0
    return config


def provoke_lockout(rig: Rig, m: Material, limit: int = 16) -> int:
    """Photos of the resident, each then leaving the view, until the LED shows a lockout; the number of attempts.

    Attempts alternate a photo on a stand (a live frame of the resident,
    still, until the door's liveness wait is over and a bit) and a printed
    photo moved in front of the camera (a print session): a photo of an
    enrolled person is a suspicious attempt under any rule.
    """
    wait = getattr(rig.config.decision, "liveness_wait_seconds", 4.0)
    for attempt in range(1, limit + 1):
        reports = rig.show([m.live[0]] * int((wait + 0.3) * FPS) if attempt % 2 else m.prints[0])
        reports += leave(rig, m)
        if any(r.led is Led.LOCKED_OUT for r in reports):
            return attempt
    raise Precondition(f"no lockout after {limit} attempts (photos of the resident, still or moved, each leaving the view)")


def away_seconds(m: Material) -> float:
    """Out of view this long, a face that comes back is a new attempt under any sane rule (and the door's track gap)."""
    return max(1.0, getattr(m.config().decision, "track_gap_seconds", 0.5) + 0.5)


def leave(rig: Rig, m: Material) -> list[FrameReport]:
    """The person walks away: an empty frame, :func:`away_seconds` with nobody in view, another empty frame."""
    reports = rig.show([m.empty])
    rig.wait(away_seconds(m))
    return reports + rig.show([m.empty])


def capture_frames(m: Material) -> list[Path]:
    """The stranger looks into the camera for as long as a button enrolment can wait for an admin and capture."""
    settings = m.config().enrollment
    return cycle(m.stranger, int((settings.admin_timeout_seconds + settings.capture_seconds + 1) * FPS))


def enrolment_trial(rig: Rig, before: list[str], what: str) -> Trial:
    """Held: nobody was added to the gallery and the relay never energised."""
    added = [p for p in rig.people() if p not in before]
    roles = {p.name: p.role for p in rig.gallery.people()}
    stored = f"stored {', '.join(f'{n} ({roles[n]})' for n in added)}" if added else "nobody stored"
    return trial_for(rig, not added and not rig.opened, f"{what}: {stored}")


# The attacks ------------------------------------------------------------------------------------------


def control_resident(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("resident"), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        rig.show(m.live)
        granted = any(e.kind == "granted" and e.person == RESIDENT for e in rig.events())
        return [trial_for(rig, rig.opened and granted, f"{len(m.live)} live frames")]
    finally:
        rig.close()


def control_crowd(m: Material, work: Work) -> list[Trial]:
    """The resident walks up, live, with ``m.crowd`` people enrolled in all (the per-door threshold rises with them)."""
    if not m.crowd:
        return []
    state = work.state("crowd")
    rig = build_door(state, config=m.config(), enrol={RESIDENT: m.enrol})
    for name, photos in m.housemates.items():
        if len(rig.people()) >= m.crowd:
            break
        try:
            enroll_from_images(name, photos, rig.pipeline, rig.gallery)
        except FaceKioskError:
            pass  # an installer would pick clearer photos: left out
    rig.close()
    rig = build_door(state, config=m.config())
    try:
        rig.show(m.live)
        granted = any(e.kind == "granted" and e.person == RESIDENT for e in rig.events())
        threshold = getattr(rig.door, "threshold", None)
        at = f" (threshold {float(threshold):.3f})" if threshold is not None else ""
        return [trial_for(rig, rig.opened and granted, f"{len(rig.people())} people enrolled{at}, {len(m.live)} live frames")]
    finally:
        rig.close()


def control_print(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints:
        rig = build_door(work.state("print"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(prints)
            trials.append(trial_for(rig, not rig.opened, f"{len(prints)} print frames"))
        finally:
            rig.close()
    return trials


def live_then_photo(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints:
        rig = build_door(work.state("live-then-photo"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(cycle(m.stranger, 5) + prints)
            trials.append(trial_for(rig, not rig.opened, f"5 live frames + {len(prints)} print frames"))
        finally:
            rig.close()
    return trials


def live_duck_photo(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints if m.thorough else m.prints[:1]:
        live = cycle(m.stranger, 6)
        target = face_centre(read_image(live[-1]))
        raised = work.frames("duck", [moved_to(image, target) for image in images(prints)])
        rig = build_door(work.state("duck"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(live + [m.empty] * 3 + raised)
            trials.append(trial_for(rig, not rig.opened, f"6 live frames, 3 empty (0.2 s), {len(prints)} print frames "
                                                         "where the face was"))
        finally:
            rig.close()
    return trials


def photo_beside_face(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints if m.thorough else m.prints[:1]:
        for alone in (5, 0):
            live = cycle(m.stranger, alone + len(prints))
            composed = work.frames("beside", [beside(read_image(l), read_image(p)) for l, p in zip(live[alone:], prints)])
            rig = build_door(work.state("beside"), config=m.config(), enrol={RESIDENT: m.enrol})
            try:
                rig.show(live[:alone] + composed)
                start = f"{alone} frames of the stranger alone, then " if alone else ""
                trials.append(trial_for(rig, not rig.opened, f"{start}{len(prints)} frames with the photo beside the face"))
            finally:
                rig.close()
    return trials


def still_photo(m: Material, work: Work) -> list[Trial]:
    trials = []
    stills = [(f"print frame {p[len(p) // 2].name}", p[len(p) // 2]) for p in (m.prints if m.thorough else m.prints[:1])]
    stills += [(f"live frame {m.live[i].name}", m.live[i]) for i in ((0, len(m.live) // 2) if m.thorough else (0,))]
    for what, frame in stills:
        rig = build_door(work.state("still"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show([frame] * 30)
            trials.append(trial_for(rig, not rig.opened, f"{what} x30"))
        finally:
            rig.close()
    return trials


def button_printed_admin(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints[:2] if m.thorough else m.prints[:1]:
        rig = build_door(work.state("button-print"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            before = rig.people()
            rig.show(prints + capture_frames(m) + cycle(m.stranger, 10), actions=rig.button(0))
            trials.append(enrolment_trial(rig, before, f"button, {len(prints)} print frames of the admin, then the stranger"))
        finally:
            rig.close()
    return trials


def button_admin_then_photo(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("button-admin-photo"), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        before = rig.people()
        settings = m.config().enrollment
        target = face_centre(read_image(m.live[-1]))  # the photo is held up where the admin's face was
        photo = work.frames("photo-in-place", [moved_to(image, target) for image in images(m.stranger_prints)])
        capture = cycle(photo, int((settings.capture_seconds + 1) * FPS))
        rig.show(m.live + capture + cycle(photo, 10), actions=rig.button(0))
        return [enrolment_trial(rig, before, f"button, the live admin, then {len(capture)} frames of a photo of someone else "
                                             "held where the admin's face was")]
    finally:
        rig.close()


def button_during_lockout(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("button-lockout"), config=lockout_config(m), enrol={RESIDENT: m.enrol})
    try:
        attempts = provoke_lockout(rig, m)
        rig.opened, mark = False, len(rig.events())
        before = rig.people()
        reports = rig.show(m.live + capture_frames(m) + cycle(m.stranger, 10), actions=rig.button(0))
        enrolling = any(r.enrolling for r in reports)
        trial = enrolment_trial(rig, before, f"locked out after {attempts} attempts; button, the live admin, then the stranger")
        trial.held = trial.held and not enrolling
        trial.note += "; enrolment started" if enrolling else "; no enrolment started"
        trial.events = kinds(rig.events()[mark:])
        return [trial]
    except Precondition as error:
        return [Trial(False, rig.opened, kinds(rig.events()), f"could not be tried: {error}")]
    finally:
        rig.close()


def button_empty_gallery(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("button-empty"), config=m.config())
    try:
        rig.show(capture_frames(m) + cycle(m.stranger, 10), actions=rig.button(0))
        return [enrolment_trial(rig, [], "nobody enrolled; button, then the stranger")]
    finally:
        rig.close()


def _first_template(db: Path) -> tuple[int, np.ndarray]:
    with sqlite3.connect(db) as con:
        row_id, blob = con.execute("SELECT id, vector FROM embeddings ORDER BY id LIMIT 1").fetchone()
    con.close()
    return row_id, np.frombuffer(blob, dtype=np.float32).copy()


def _write_template(db: Path, row_id: int, blob: bytes) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (blob, row_id))
    con.close()


def _enrolled_state(m: Material, work: Work, name: str) -> tuple[Path, Path]:
    """A state folder with the resident enrolled (the door built once, then closed); its gallery file."""
    state = work.state(name)
    rig = build_door(state, config=m.config(), enrol={RESIDENT: m.enrol})
    db = rig.gallery.path
    rig.close()
    return state, db.relative_to(state)


def _damaged_door_trial(m: Material, state: Path, frames: list[Path], what: str) -> Trial:
    try:
        rig = build_door(state, config=m.config())
    except FaceKioskError as error:
        return Trial(True, False, [], f"{what}: the door refused to start: {crashed(error)}")
    except Exception as error:  # noqa: BLE001 - a crash is what this attack looks for
        return Trial(False, False, [], f"{what}: the door CRASHED at start: {crashed(error)}")
    try:
        rig.show(frames)
        return trial_for(rig, not rig.opened, f"{what}; the stranger walks up")
    except Exception as error:  # noqa: BLE001
        return Trial(False, rig.opened, kinds(rig.events()), f"{what}: the door CRASHED: {crashed(error)}")
    finally:
        rig.close()


def bit_flip(m: Material, work: Work) -> list[Trial]:
    """One bit flipped in one stored embedding: the top exponent bit of one float32 component (x 2^128)."""
    state, db_name = _enrolled_state(m, work, "bit-flip")
    row_id, vector = _first_template(state / db_name)
    pipeline = pipeline_for(Config())
    seen = [e.embedding for e in (pipeline.embed_largest(read_image(p)) for p in m.stranger[:5]) if e is not None]
    agree = np.mean(seen, axis=0) * np.sign(vector) if seen else vector
    # Half the components admit a given stranger when their exponent's top bit flips (those whose sign the
    # stranger's face shares); "worst" is the one this stranger shares most, the others are arbitrary.
    components = [("worst", int(np.argmax(agree)))] + ([(str(c), c) for c in range(4)] if m.thorough else [])
    trials = []
    for label, component in components:
        clone = work.state(f"bit-flip-{label}")
        shutil.copytree(state, clone)
        rotten = vector.copy()
        rotten.view(np.uint32)[component] ^= np.uint32(1 << 30)
        _write_template(clone / db_name, row_id, rotten.tobytes())
        what = (f"bit 30 of component {component} ({label}) of template {row_id}: "
                f"{vector[component]:.3g} -> {rotten[component]:.3g}")
        trials.append(_damaged_door_trial(m, clone, cycle(m.stranger, 10), what))
    return trials


def wrong_length(m: Material, work: Work) -> list[Trial]:
    trials = []
    for cut, label in ((4, "4 bytes short"), (-4, "4 bytes long")):
        state, db_name = _enrolled_state(m, work, "wrong-length")
        row_id, vector = _first_template(state / db_name)
        blob = vector.tobytes()
        _write_template(state / db_name, row_id, blob[:-cut] if cut > 0 else blob + b"\0" * -cut)
        trials.append(_damaged_door_trial(m, state, cycle(m.stranger, 10), f"template {row_id} {label}"))
    return trials


def lookalikes(m: Material, work: Work) -> list[Trial]:
    """The closest-scoring strangers against the enrolled templates walk up; liveness off (recognition alone)."""
    looks = m.lookalikes
    if looks is None:
        return []
    config = Config()
    config.liveness.mode = "off"
    state = work.state("lookalike-gallery")
    rig = build_door(state, config=config)
    refused = []
    for name, photos in looks.enrolled.items():  # as an installer would: people whose photos enrolment refuses are left out
        if len(rig.people()) >= looks.people:
            break
        try:
            enroll_from_images(name, photos, rig.pipeline, rig.gallery)
        except FaceKioskError:
            refused.append(name)
    rig.close()
    rig = build_door(state, config=copy.deepcopy(config))
    templates, threshold, enrolled = rig.gallery.templates(), float(rig.door.threshold), rig.people()
    rig.close()
    pipeline = pipeline_for(config)
    scored = []
    for path in looks.pool:
        try:
            image = read_image(path)
        except ImageError:
            continue
        faces = pipeline.finder.find(image)
        if len(faces) != 1:  # LFW news photos often show a second person, at times an enrolled one: not a stranger
            continue
        embedded = pipeline.embed_face(image, faces[0])
        if not embedded.usable:
            continue
        similarities = templates.vectors @ embedded.embedding
        best = int(np.argmax(similarities))
        scored.append((float(similarities[best]), path, templates.names[best]))
    scored.sort(key=lambda s: s[0], reverse=True)
    above = sum(s > threshold for s, _, _ in scored)
    trials = []
    for score, path, name in scored[:looks.play]:
        frames = work.frames("lookalike", jittered(read_image(path), 15))
        clone = work.state("lookalike")
        shutil.copytree(state, clone)
        rig = build_door(clone, config=copy.deepcopy(config))
        try:
            rig.show(frames)
            trials.append(trial_for(rig, not rig.opened, f"{path.parent.name}/{path.name} (closest: {name}, {score:.3f})"))
        finally:
            rig.close()
    if trials:
        left_out = f" ({len(refused)} candidates whose photos enrolment refused left out)" if refused else ""
        trials[0].note = (f"{len(enrolled)} {looks.label}{left_out}; {len(scored)} stranger photos with exactly one face, "
                          f"{above} above the door's "
                          f"threshold {threshold:.3f} in one comparison; the {len(trials)} closest walked up (liveness off): "
                          f"{sum(t.opened for t in trials)} opened. "
                          f"First: {trials[0].note}")
    return trials


def step_out(m: Material, work: Work, frames_of: str = "stranger", away: bool = False) -> list[Trial]:
    """3 frames in view, then out of view: for one frame (``away`` False), or for a second and more (a new visitor)."""
    appearances = 225 if m.thorough else 12  # 225 x 4 frames = 60 s
    source = m.stranger if frames_of == "stranger" else m.prints[0]
    gap = away_seconds(m)
    rig = build_door(work.state(f"step-out-{frames_of}"), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        reports = []
        for i in range(appearances):
            reports += rig.show(cycle(source, 3, start=3 * i) + [m.empty])
            if away:  # out of view for `gap` seconds
                rig.wait(gap)
                reports += rig.show([m.empty])
        attempts = sum(k in ATTEMPT_KINDS for k in kinds(rig.events()))
        lockout = next((i for i, r in enumerate(reports) if r.led is Led.LOCKED_OUT), None)
        per = 5 if away else 4
        when = f"a lockout from appearance {lockout // per + 1}" if lockout is not None else "no lockout"
        seconds = reports[-1].time - reports[0].time + 1 / FPS
        what = (f"{appearances} appearances of 3 frames, out of view {f'{gap:g} s' if away else '1 frame'} between "
                f"({seconds:.0f} s): {attempts} attempt(s) logged, {when}")
        if frames_of == "prints":
            return [trial_for(rig, not rig.opened and lockout is not None, what)]
        if away:
            return [trial_for(rig, not rig.opened and attempts >= appearances, what)]
        return [trial_for(rig, not rig.opened and attempts >= 1, what)]
    finally:
        rig.close()


def step_out_prints(m: Material, work: Work) -> list[Trial]:
    return step_out(m, work, frames_of="prints")


def step_away(m: Material, work: Work) -> list[Trial]:
    return step_out(m, work, away=True)


def stranger_stays(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("stranger-stays"), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        rig.show(cycle(m.stranger, 30) + [m.empty] * 3)
        stranger_opened, locked, mark = rig.opened, rig.locked_out, len(rig.events())
        rig.opened = False
        rig.show(m.live)
        arrival = rig.events()[mark:]
        granted = any(e.kind == "granted" and e.person == RESIDENT for e in arrival)
        what = (f"stranger 30 frames: {tally(kinds(rig.events()[:mark]))}{', locked out' if locked else ''}; "
                f"then the resident: {'let in' if rig.opened and granted else 'KEPT OUT'}, logged {tally(kinds(arrival))}")
        return [Trial(rig.opened and granted and not stranger_opened, stranger_opened or rig.opened, kinds(rig.events()), what)]
    finally:
        rig.close()


def restart_during_lockout(m: Material, work: Work) -> list[Trial]:
    """The service restarts (same clocks), or the Pi reboots (the monotonic clock starts again, the wall clock goes on)."""
    trials = []
    for reboot in (False, True):
        state = work.state("reboot" if reboot else "restart")
        clock, wall = (FakeClock(50_000.0), FakeClock(1.8e9)) if reboot else (FakeClock(), None)
        rig = build_door(state, config=lockout_config(m), enrol={RESIDENT: m.enrol}, clock=clock, wall=wall)
        try:
            attempts = provoke_lockout(rig, m)
        except Precondition as error:
            trials.append(Trial(False, rig.opened, kinds(rig.events()), f"could not be tried: {error}"))
            continue
        finally:
            rig.close()
        locked_at = rig.wall()
        if reboot:
            rig.wall.advance(30)  # a reboot takes half a minute; the door's monotonic clock starts near zero
            clock, wall = FakeClock(12.0), rig.wall
        else:
            clock, wall = rig.clock, rig.wall
        rig = build_door(state, config=lockout_config(m), clock=clock, wall=wall)
        try:
            rig.show(m.live)
            how = "rebooted" if reboot else "restarted"
            trials.append(trial_for(rig, not rig.opened, f"locked out after {attempts} attempts, {how}; the resident walks up "
                                                         f"{rig.wall() - locked_at:.0f} s later (lockout 300 s)"))
        finally:
            rig.close()
    return trials


def wrong_enrolment_photo(m: Material, work: Work) -> list[Trial]:
    state = work.state("wrong-photo")
    rig = build_door(state, config=m.config())
    photos = m.enrol + [m.stranger_photo]
    try:
        person, notes = enroll_from_images(RESIDENT, photos, rig.pipeline, rig.gallery)
        named = any(m.stranger_photo.name in note for note in notes)
        told = f"enrolled with {person.embeddings} embeddings" + (f", notes: {'; '.join(notes)}" if notes else ", no note")
    except FaceKioskError as error:
        named, told = m.stranger_photo.name in str(error), f"refused: {crashed(error)}"
    finally:
        rig.close()
    rig = build_door(state, config=m.config())
    try:
        rig.show(cycle(m.stranger, 10))
        return [trial_for(rig, named and not rig.opened,
                          f"3 photos of the resident + {m.stranger_photo.name} of the stranger: {told}; the photo "
                          f"{'named' if named else 'NOT named'}; the stranger walks up")]
    finally:
        rig.close()


def _lost_gallery(m: Material, work: Work, how: str) -> list[Trial]:
    state, db_name = _enrolled_state(m, work, f"gallery-{how}")
    db = state / db_name
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    if how == "zero-bytes":
        db.write_bytes(b"")
    else:
        db.unlink()
    try:
        rig = build_door(state, config=m.config())
    except FaceKioskError as error:
        return [Trial(True, False, [], f"gallery {how}: the door refused to start: {crashed(error)}")]
    except Exception as error:  # noqa: BLE001
        return [Trial(False, False, [], f"gallery {how}: the door CRASHED at start: {crashed(error)}")]
    try:
        rig.show(capture_frames(m) + cycle(m.stranger, 10), actions=rig.button(0))
        trial = enrolment_trial(rig, [], f"gallery {how}: started FRESH; button, then the stranger")
        trial.held = False
        return [trial]
    finally:
        rig.close()


def zero_byte_gallery(m: Material, work: Work) -> list[Trial]:
    return _lost_gallery(m, work, "zero-bytes")


def deleted_gallery(m: Material, work: Work) -> list[Trial]:
    return _lost_gallery(m, work, "deleted")


def interleaved(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints if m.thorough else m.prints[:1]:
        frames = []
        for i, p in enumerate(prints):
            if i % 2 == 0:
                frames.append(m.stranger[(i // 2) % len(m.stranger)])
            frames.append(p)
        rig = build_door(work.state("interleaved"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(frames)
            trials.append(trial_for(rig, not rig.opened, f"live stranger / print / print ... ({len(frames)} frames)"))
        finally:
            rig.close()
    return trials


def photo_over_face(m: Material, work: Work) -> list[Trial]:
    trials = []
    for prints in m.prints if m.thorough else m.prints[:1]:
        live = cycle(m.stranger, 8 + len(prints))
        covered = work.frames("over-face", [over_face(read_image(l), read_image(p)) for l, p in zip(live[8:], prints)])
        rig = build_door(work.state("over-face"), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(live[:8] + covered)
            trials.append(trial_for(rig, not rig.opened, f"8 live frames, then {len(prints)} with the photo over the face"))
        finally:
            rig.close()
    return trials


def _transformed_prints(m: Material, work: Work, name: str, transform: Callable[[np.ndarray], np.ndarray]) -> list[Trial]:
    trials = []
    for prints in m.prints if m.thorough else m.prints[:1]:
        frames = work.frames(name, [transform(image) for image in images(prints)])
        rig = build_door(work.state(name), config=m.config(), enrol={RESIDENT: m.enrol})
        try:
            rig.show(frames)
            trials.append(trial_for(rig, not rig.opened, f"{len(frames)} {name} print frames"))
        finally:
            rig.close()
    return trials


def far_photo(m: Material, work: Work) -> list[Trial]:
    background = read_image(m.empty)
    return _transformed_prints(m, work, "far", lambda image: far_away(image, background))


def blurred_print(m: Material, work: Work) -> list[Trial]:
    return _transformed_prints(m, work, "blurred", blurred)


def grayscale_print(m: Material, work: Work) -> list[Trial]:
    return _transformed_prints(m, work, "grayscale", grayscale)


def _live_frames_shown(m: Material, work: Work, name: str, render: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                       what: str) -> list[Trial]:
    """The resident's live frames shown to the camera on something held up (``render(frame, porch, t)``)."""
    background = read_image(m.empty)
    frames = work.frames(name, [render(image, background, t) for t, image in enumerate(images(m.live))])
    rig = build_door(work.state(name), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        rig.show(frames)
        return [trial_for(rig, not rig.opened, f"{what} ({len(frames)} frames)")]
    finally:
        rig.close()


def screen_replay(m: Material, work: Work) -> list[Trial]:
    return _live_frames_shown(m, work, "screen", on_a_screen, "the resident's live frames replayed on a tablet")


def printed_live_frame(m: Material, work: Work) -> list[Trial]:
    return _live_frames_shown(m, work, "paper", on_paper, "a print of the resident's live frames held up by hand")


def exact_replay(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("replay"), config=m.config(), enrol={RESIDENT: m.enrol})
    try:
        rig.show(m.live + [m.empty] * 3)
        rig.wait(10)  # the resident has gone in; the camera sees nobody for 10 s
        first = rig.opened
        rig.opened, mark = False, len(rig.events())
        rig.show(m.live)
        events = rig.events()[mark:]
        trial = trial_for(rig, first and not rig.opened,
                          f"the resident's attempt ({'let in' if first else 'NOT let in: rig fault'}), "
                          "then the same frames again 10 s later",
                          events)
        return [trial]
    finally:
        rig.close()


def lockout_logging(m: Material, work: Work) -> list[Trial]:
    rig = build_door(work.state("lockout-log"), config=lockout_config(m), enrol={RESIDENT: m.enrol})
    try:
        attempts = provoke_lockout(rig, m)
        rig.opened, mark = False, len(rig.events())
        appearances = 6
        for i in range(appearances):
            rig.show(cycle(m.stranger, 6) if i % 2 == 0 else m.prints[0][:6])
            leave(rig, m)
        logged = sum(k in ATTEMPT_KINDS for k in kinds(rig.events()[mark:]))
        return [trial_for(rig, logged >= appearances and not rig.opened,
                          f"locked out after {attempts} attempts; {appearances} more attempts during the lockout, "
                          f"{logged} logged",
                          rig.events()[mark:])]
    except Precondition as error:
        return [Trial(False, rig.opened, kinds(rig.events()), f"could not be tried: {error}")]
    finally:
        rig.close()


# The suite ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    id: str
    title: str
    held_when: str
    run: Callable[[Material, Work], list[Trial]]
    control: bool = False
    opening_expected: bool = False
    """The door must open in this scene (for the resident); every other opening is an intruder's success."""


ATTACKS = [
    Attack("C1", "control: the resident walks up, live", "the door opens and logs `granted`", control_resident, control=True,
           opening_expected=True),
    Attack("C3", "control: the resident walks up, live, among the people enrolled for the look-alikes (4 with the fixtures)",
           "the door opens and logs `granted`", control_crowd, control=True, opening_expected=True),
    Attack("C2", "control: a printed photo of the resident, moved in front of the camera", "never opens", control_print,
           control=True),
    Attack("1a", "live stranger (5 frames), then a printed photo of the resident", "never opens", live_then_photo),
    Attack("1b", "printed photo of the resident held beside a live stranger's face (composed frames)", "never opens",
           photo_beside_face),
    Attack("1c", "live stranger, ducks out of view for 0.2 s, raises a printed photo of the resident where his face was",
           "never opens", live_duck_photo),
    Attack("2", "still photo on a stand: one frame of the resident repeated 30 times (a print frame; a live frame)",
           "never opens", still_photo),
    Attack("3a", "enrol button: printed photo of the admin, then a stranger looks in", "nobody stored, never opens",
           button_printed_admin),
    Attack("3b", "enrol button pressed during a lockout (then even the live admin, then a stranger)",
           "no enrolment starts, nobody stored, never opens", button_during_lockout),
    Attack("3c", "enrol button with an empty gallery, a stranger looks in", "nobody stored (no admin made), never opens",
           button_empty_gallery),
    Attack("3d", "enrol button: the live admin approves, then a printed photo of someone else is captured",
           "nobody stored (the capture needs a live face), never opens", button_admin_then_photo),
    Attack("4a", "SD-card rot: one bit flipped in one stored embedding, a stranger walks up",
           "never opens; no crash (refusing to start with a message is fine)", bit_flip),
    Attack("4b", "SD-card rot: a stored embedding BLOB of the wrong length, a stranger walks up",
           "never opens; no crash (refusing to start with a message is fine)", wrong_length),
    Attack("5", "look-alikes: the closest-scoring unseen strangers walk up (photo, 1-2 px jitter; liveness off)",
           "never opens", lookalikes),
    Attack("6a", "a stranger steps out of view every 4th frame",
           "never opens; the stay is logged (1-frame gaps may join one attempt)", step_out),
    Attack("6b", "printed photo of the resident, out of view every 4th frame", "never opens; a lockout engages", step_out_prints),
    Attack("6c", "a stranger looks in for 3 frames, leaves for a second, again and again",
           "never opens; every look is logged as an attempt", step_away),
    Attack("7", "a stranger stands in view 2 s (30 frames), then the resident arrives",
           "the resident is let in and logged", stranger_stays, opening_expected=True),
    Attack("8", "restart the service (and reboot the Pi) during a lockout, the resident walks up",
           "the lockout still holds (never opens)",
           restart_during_lockout),
    Attack("9", "one photo of a stranger among the resident's enrolment photos, then the stranger walks up",
           "the photo is named (refused or skipped) and the stranger never gets in", wrong_enrolment_photo),
    Attack("10a", "zero-byte gallery file where a gallery existed", "the door refuses to start (an error, not a fresh gallery)",
           zero_byte_gallery),
    Attack("10b", "gallery file deleted where a gallery existed", "the door refuses to start (an error, not a fresh gallery)",
           deleted_gallery),
    Attack("11a", "identity switch mid-attempt: live stranger / print / print ... interleaved", "never opens", interleaved),
    Attack("11b", "the stranger walks up, then holds the resident's printed photo over his face (same place and size)",
           "never opens", photo_over_face),
    Attack("11c", "small printed photo held far from the camera (edges visible)", "never opens", far_photo),
    Attack("11d", "blurred printed photo (out of focus, moved fast)", "never opens", blurred_print),
    Attack("11e", "printed photo to a grayscale (NoIR, night) camera", "never opens", grayscale_print),
    Attack("11f", "screen replay: the resident's live video on a tablet (synthesised)", "never opens", screen_replay),
    Attack("11i", "a print of the resident's live picture (synthesised: ink range, white margin) held up by hand at arm's length",
           "never opens", printed_live_frame),
    Attack("11g", "exact replay of a granted attempt's frames (an injected camera feed) 10 s later",
           "the replay never opens", exact_replay),
    Attack("11h", "attempts during a lockout (strangers and printed photos, each leaving the view)",
           "every attempt logged, never opens", lockout_logging),
]
BY_ID = {a.id: a for a in ATTACKS}


@dataclass
class Row:
    """An attack's trials over every material, summarised."""

    attack: Attack
    trials: list[Trial]
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return bool(self.trials) and all(t.held for t in self.trials)

    @property
    def opened(self) -> int:
        return sum(t.opened for t in self.trials)

    @property
    def logged(self) -> str:
        return tally(k for t in self.trials for k in t.events)

    @property
    def opened_text(self) -> str:
        n = len(self.trials)
        if n == 1:
            return "yes" if self.opened else "no"
        return f"{self.opened}/{n}"

    @property
    def held_text(self) -> str:
        n, held = len(self.trials), sum(t.held for t in self.trials)
        if not self.trials:
            return "not run"
        word = "held" if self.held else "NOT HELD"
        return word if n == 1 else f"{word} ({held}/{n})"

    @property
    def outcome(self) -> str:
        """One line: the first trial that did not hold (else the first trial)."""
        if not self.trials:
            return "not run (no material)"
        failing = [t for t in self.trials if not t.held]
        shown = failing[0] if failing else self.trials[0]
        more = f" [{len(failing)} of {len(self.trials)} trials did not hold]" if failing and len(self.trials) > 1 else ""
        return shown.note + more


def run_attack(attack_id: str, materials: Sequence[Material], work_root: Path) -> Row:
    """Play one attack over every material; its row."""
    attack = BY_ID[attack_id]
    work = Work(Path(work_root) / attack_id)
    started = time.perf_counter()
    _SCRATCH[:] = [str(work.root)]
    try:
        trials = [t for m in materials for t in attack.run(m, work)]
    finally:
        _SCRATCH.clear()
    return Row(attack, trials, time.perf_counter() - started)


def line(row: Row) -> str:
    """``attack -> opened? (what the door logged)``, held or not, and the outcome."""
    return (f"{row.attack.id:>3} {row.attack.title} -> opened {row.opened_text} (logged {row.logged}) "
            f"{row.held_text}: {row.outcome}")


def table(rows: Sequence[Row], header: str) -> str:
    """The markdown block written between the attacks markers of docs/security.md."""
    out = [header, "", "| # | attack | held when | opened? | held? | what the door logged | outcome |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.attack.id, row.attack.title, row.attack.held_when, row.opened_text, f"**{row.held_text}**" if not row.held
                 else row.held_text, row.logged, row.outcome]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out)


def write_block(markdown: str, path: Path = SECURITY_MD) -> None:
    """Replace only the text between the attacks markers."""
    text = path.read_text()
    start, end = text.index(MARK_START) + len(MARK_START), text.index(MARK_END)
    path.write_text(text[:start] + "\n" + markdown.strip() + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="one resident/stranger pair, fewer trials, a small look-alike search")
    parser.add_argument("--fixtures", action="store_true",
                        help="play the in-repo fixtures only (as the tests do); implies --no-write")
    parser.add_argument("--no-write", action="store_true", help="print the table; leave docs/security.md alone")
    parser.add_argument("--only", nargs="+", metavar="ID", choices=list(BY_ID),
                        help="run only these attacks (implies --no-write)")
    parser.add_argument("--people", type=int, default=20, help="people enrolled for the look-alike attack (default %(default)s)")
    parser.add_argument("--work", type=Path, help="keep the scratch folder (state folders, composed frames) here")
    parser.add_argument("--code", help="the code measured, for the table's header (default: the checkout's commit)")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the door's own error log lines would interleave with the table
    if args.fixtures:
        materials, source = [fixture_material()], "the in-repo fixtures (tests/fixtures)"
    else:
        materials = data_materials(args.data, args.quick, args.people)
        source = f"`{args.data.name}/`" + (" (--quick)" if args.quick else "")
    chosen = args.only or [a.id for a in ATTACKS]
    with tempfile.TemporaryDirectory(prefix="kiosk-attacks-") as scratch:
        root = args.work or Path(scratch)
        rows = []
        for attack_id in chosen:
            row = run_attack(attack_id, materials, root)
            rows.append(row)
            print(line(row), f"[{row.seconds:.0f} s]", flush=True)
    failed = [r for r in rows if not r.held]
    opened = [r for r in rows if not r.held and r.opened and not r.attack.opening_expected]
    summary = (f"{len(rows) - len(failed)} of {len(rows)} held; {len(opened)} attack(s) opened the door for someone they "
               f"should not have: {', '.join(r.attack.id for r in opened) or 'none'}")
    print(summary)
    code = args.code or _commit()
    header = (f"Measured {datetime.date.today().isoformat()} by `python -m bench.attacks` on {source}"
              f"{f' at {code}' if code else ''}, "
              f"{platform.machine()}, liveness mode `{Config().liveness.mode}` unless said; residents and strangers: "
              f"{'; '.join(m.label for m in materials)}. {summary}.")
    if not (args.no_write or args.fixtures or args.only):
        write_block(table(rows, header))
        print(f"wrote the table into {SECURITY_MD}")
    return 1 if failed else 0


def _commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"], check=False, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"commit {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else None


if __name__ == "__main__":
    sys.exit(main())
