"""``kiosk bench``: how fast this machine runs each stage of the door, in a form Pi owners can report.

The Pi figures in the README are estimates made without a Pi; this command
measures the real ones. It runs the door's per-frame work stage by stage
(capture, detect, align, encode, liveness, match, decide) on the demo's
recorded scene, the same 640x480 frames on every machine so that reports
compare, or with ``--camera`` on the configured camera. It prints the
median and p90 milliseconds of each stage, frames per second, and what
slows a Pi down unseen: the CPU temperature, clock and, on a Pi, the
firmware's throttling flags (under-voltage, heat) before and after the run.

The work is the door's own (:class:`DoorStages`: the tracked Haar
detection, the encoder input the model asks for, the int8 encoder, the
configured liveness check, matching against a gallery and the decision
state machine), so a figure here is what ``kiosk run --stats`` would show,
without the pins, the gallery file or the service. ``bench/speed.py``
times face-kiosk beside its peers through the same class.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kiosk import assemble
from kiosk.camera import Camera, FolderCamera
from kiosk.config import Config
from kiosk.decision import DoorDecision, Liveness, Observation
from kiosk.demo import demo_data
from kiosk.door import FrameReport, stage_summary
from kiosk.face import FaceTracker
from kiosk.gallery import Templates
from kiosk.match import match

STAGES = ("capture", "detect", "align", "encode", "liveness", "match", "decide")
THROTTLE_FLAGS = {
    0: "under-voltage now", 1: "ARM clock capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage since boot", 17: "ARM clock capped since boot", 18: "throttled since boot",
    19: "soft temperature limit since boot",
}
"""The bits of ``vcgencmd get_throttled`` (Raspberry Pi firmware) and what each means."""


class DoorStages:
    """The door's per-frame work on one frame at a time, each stage timed.

    Detection is tracked as the door tracks it (a window around the last face,
    a full scan every 5th frame, for faces that could replace the one in use
    while a usable face is tracked); the largest face gets the encoder input the
    model asks for (``align``: the Haar crop, or the landmark stage and the
    aligned crop), the int8 embedding, the liveness check of
    ``liveness.mode`` (skipped when it is off), a match against
    ``gallery_size`` synthetic templates (five per person) and the decision
    step. No gallery file, camera or pins are touched.
    """

    def __init__(self, config: Config, num_threads: int = 2, gallery_size: int = 50) -> None:
        self.pipeline = assemble.pipeline(config, num_threads=num_threads)
        self.tracker = FaceTracker(self.pipeline.finder)
        self.liveness = assemble.liveness(config) if config.liveness.mode != "off" else None
        vectors = np.random.default_rng(0).normal(size=(gallery_size, self.pipeline.encoder.info.embedding_size))
        self.templates = Templates([f"person-{i // 5}" for i in range(gallery_size)],
                                   (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
        self.decision = DoorDecision(config.decision)

    def run(self, frame: np.ndarray, now: float) -> FrameReport:
        """One frame through every stage; the report's ``timings`` hold each stage's milliseconds."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        faces = self.tracker.find(frame)
        timings["detect"] = _since(start)
        result, live = None, Liveness.OFF
        if faces:
            start = time.perf_counter()
            crop = self.pipeline.encoder_input(frame, faces[0])
            timings["align"] = _since(start)
            start = time.perf_counter()
            embedding, strength = self.pipeline.encoder.embed_with_strength(crop)
            timings["encode"] = _since(start)
            if strength >= self.pipeline.encoder.min_strength:
                self.tracker.follow(faces[0])  # as the door does with the face it uses
            if self.liveness is not None:
                start = time.perf_counter()
                live = self.liveness.check(frame, faces[0], now)
                timings["liveness"] = _since(start)
            start = time.perf_counter()
            if strength >= self.pipeline.encoder.min_strength:
                result = match(embedding, self.templates, self.pipeline.encoder.threshold)
            timings["match"] = _since(start)
        start = time.perf_counter()
        step = self.decision.observe(Observation(now, bool(faces), result.person if result else None,
                                                 result.score if result else None, live=live))
        timings["decide"] = _since(start)
        return FrameReport(now, len(faces), result, step, timings=timings)


def _since(start: float) -> float:
    return 1000 * (time.perf_counter() - start)


@dataclass(frozen=True)
class SystemState:
    """What throttles a CPU unseen, read at one moment (None where this machine does not say)."""

    temperature_c: float | None
    clock_mhz: float | None
    throttled: int | None


def cpu_temperature(sys_root: Path = Path("/sys")) -> float | None:
    """The CPU's temperature in degrees Celsius from the kernel's thermal zones (a Pi's ``cpu-thermal``)."""
    zones = sorted((sys_root / "class" / "thermal").glob("thermal_zone*"))
    readable = [z for z in zones if (z / "temp").is_file()]
    preferred = [z for z in readable if any(word in _read(z / "type").lower() for word in ("cpu", "x86_pkg", "soc"))]
    for zone in preferred + readable:
        value = _read(zone / "temp")
        if value.lstrip("-").isdigit():
            return int(value) / 1000
    return None


def cpu_clock_mhz(sys_root: Path = Path("/sys")) -> float | None:
    """CPU 0's current clock in MHz (cpufreq), which falls when a Pi throttles."""
    value = _read(sys_root / "devices" / "system" / "cpu" / "cpu0" / "cpufreq" / "scaling_cur_freq")
    return int(value) / 1000 if value.isdigit() else None


def throttled(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int | None:
    """The Raspberry Pi firmware's throttling bits (``vcgencmd get_throttled``); None off a Pi."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        done = run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    _, _, value = done.stdout.strip().partition("=")
    try:
        return int(value, 16)
    except ValueError:
        return None


def throttle_flags(value: int) -> list[str]:
    """The meanings of the bits set in a ``get_throttled`` value."""
    return [name for bit, name in THROTTLE_FLAGS.items() if value >> bit & 1]


def system_state(sys_root: Path = Path("/sys")) -> SystemState:
    return SystemState(cpu_temperature(sys_root), cpu_clock_mhz(sys_root), throttled())


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().strip("\0")
    except OSError:
        return ""


def machine(config: Config, stages: DoorStages, num_threads: int) -> dict[str, str]:
    """The board, OS and versions a reader needs to compare one report with another."""
    model = _read(Path("/proc/device-tree/model"))
    if not model:
        lines = _read(Path("/proc/cpuinfo")).splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("model name")), platform.processor())
    os_release = dict(line.split("=", 1) for line in _read(Path("/etc/os-release")).splitlines() if "=" in line)
    found = {"board": model or "unknown", "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
             "os": os_release.get("PRETTY_NAME", platform.platform()).strip('"'), "python": platform.python_version()}
    for package in ("numpy", "opencv-python-headless", stages.pipeline.encoder.runtime):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    found["settings"] = (f"encoder on {num_threads} thread(s), liveness {config.liveness.mode}, "
                         f"{'landmark' if stages.pipeline.landmarker else 'Haar-crop'} alignment")
    return found


@dataclass
class BenchResult:
    """One run of ``kiosk bench``: per-stage (median ms, p90 ms, frames that ran it), rate and the machine's state."""

    source: str
    frames: int
    frames_with_face: int
    seconds: float
    stages: dict[str, tuple[float, float, int]]
    total_with_face: tuple[float, float] | None
    machine: dict[str, str]
    before: SystemState
    after: SystemState
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def report(self) -> str:
        """The text to paste into a report: machine, stages, rate, temperature and throttling."""
        lines = [f"kiosk bench {self.date}: {self.frames} frames of {self.source}",
                 *(f"  {key}: {value}" for key, value in self.machine.items()),
                 f"  {'stage':9s} {'median ms':>9s} {'p90 ms':>7s} {'frames':>7s}"]
        for stage in STAGES:
            if stage in self.stages:
                median, p90, count = self.stages[stage]
                lines.append(f"  {stage:9s} {median:9.1f} {p90:7.1f} {count:7d}")
        if self.total_with_face:
            lines.append(f"  {'frame with a face':17s} {self.total_with_face[0]:.1f} ms median, {self.total_with_face[1]:.1f} ms p90")
        lines.append(f"  {self.fps:.1f} frames per second ({self.frames} frames in {self.seconds:.1f} s, "
                     f"{self.frames_with_face} with a face)")
        lines.append("  " + _state_line(self.before, self.after))
        flags = throttle_flags(self.after.throttled or 0)
        if flags:
            lines.append(f"  THROTTLED: {', '.join(flags)} (check the power supply and cooling; these figures are low)")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps(asdict(self) | {"fps": self.fps}, indent=2)


def _state_line(before: SystemState, after: SystemState) -> str:
    parts = []
    if before.temperature_c is not None and after.temperature_c is not None:
        parts.append(f"CPU {before.temperature_c:.1f} -> {after.temperature_c:.1f} C")
    if before.clock_mhz is not None and after.clock_mhz is not None:
        parts.append(f"clock {before.clock_mhz:.0f} -> {after.clock_mhz:.0f} MHz")
    if after.throttled is not None:
        parts.append(f"get_throttled {before.throttled or 0:#x} -> {after.throttled:#x}")
    else:
        parts.append("no throttling flags (vcgencmd not found: not a Raspberry Pi OS)")
    return ", ".join(parts) if parts else "no temperature or clock readings on this machine"


def recorded_scene() -> FolderCamera:
    """The demo's recorded 640x480 frames, looped: the same input on every machine, so reports compare."""
    return FolderCamera(demo_data() / "frames", loop=True)


def run_bench(config: Config, camera: Camera, source: str, count: int = 200, warmup: int = 10,
              num_threads: int = 2, sys_root: Path = Path("/sys")) -> BenchResult:
    """Time ``count`` frames of ``camera`` through :class:`DoorStages` (after ``warmup`` untimed ones)."""
    stages = DoorStages(config, num_threads=num_threads)
    for _ in range(warmup):
        stages.run(camera.read(), time.monotonic())
    before = system_state(sys_root)
    reports: list[FrameReport] = []
    began = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        frame = camera.read()
        capture = _since(start)
        report = stages.run(frame, time.monotonic())
        report.timings = {"capture": capture} | report.timings
        reports.append(report)
    seconds = time.perf_counter() - began
    after = system_state(sys_root)
    summary = stage_summary(reports)
    ran = {stage: sum(stage in r.timings for r in reports) for stage in STAGES}
    with_face = [r for r in reports if r.faces]
    return BenchResult(source, count, len(with_face), seconds,
                       {stage: (*summary[stage], ran[stage]) for stage in STAGES if stage in summary},
                       stage_summary(with_face)["total"] if with_face else None,
                       machine(config, stages, num_threads), before, after)
