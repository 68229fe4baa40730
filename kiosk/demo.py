"""``kiosk demo``: the real door loop on a recorded scene, no camera or Pi needed.

Real Haar detection, the real int8 encoder, a real SQLite gallery in a
temporary folder, gpiozero's mock pins and a clock that advances one frame
period per frame. It enrols a person from three photos, then plays them
walking up (the door must open), a stranger (it must stay shut) and the
person again (open), and prints every decision. It exits non-zero, saying
why, when any decision is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kiosk import assemble
from kiosk.camera import PlaylistCamera, ReconnectingCamera
from kiosk.clock import FakeClock
from kiosk.config import Config
from kiosk.door import FrameReport, stage_summary
from kiosk.enroll import enroll_from_images


def demo_data() -> Path:
    return Path(str(resources.files("kiosk") / "demo_data"))


@dataclass
class SegmentResult:
    name: str
    expect: str
    granted: list[str]
    relay_seen_on: bool
    relay_on_at_end: bool
    first_grant_frame: int | None

    @property
    def ok(self) -> bool:
        if self.expect == "granted":
            return bool(self.granted) and self.relay_seen_on
        if self.expect == "no unlock":
            return not self.granted and not self.relay_seen_on
        return not self.relay_on_at_end  # "locked"


def run_demo(config: Config | None = None, data: Path | None = None, out=print) -> bool:
    """Play the demo scene on a door built from ``config`` (default: the defaults); True when every decision was right.

    The demo always uses its own temporary state folder, mock pins and no
    liveness check (its frames are photos), whatever ``config`` says.
    """
    config = dataclasses.replace(config or Config())
    data = data or demo_data()
    manifest = json.loads((data / "demo.json").read_text())
    fps = manifest["fps"]
    clock = FakeClock()
    with tempfile.TemporaryDirectory(prefix="kiosk-demo-") as state:
        config.storage = dataclasses.replace(config.storage, state_dir=state)
        config.gpio = dataclasses.replace(config.gpio, pin_factory="mock")
        config.liveness = dataclasses.replace(config.liveness, mode="off")
        pipeline = assemble.pipeline(config)
        gallery = assemble.gallery(config, clock=clock)
        name = manifest["enrol"]["name"]
        person, notes = enroll_from_images(name, [data / p for p in manifest["enrol"]["images"]], pipeline, gallery)
        for note in notes:
            out(f"  {note}")
        out(f"enrolled {person.name!r} ({person.role}) from {person.embeddings} photos; "
            f"model {pipeline.encoder.runtime}, threshold {pipeline.encoder.threshold:.3f}")
        out("(the demo's frames are photos composed onto a background, so it runs with the liveness check off: "
            "'kiosk run' refuses photos by default)")
        segments = manifest["segments"]
        playlist = [(i, data / f) for i, segment in enumerate(segments) for f in segment["frames"]]
        camera = ReconnectingCamera(lambda: PlaylistCamera([f for _, f in playlist], on_frame=lambda: clock.advance(1 / fps)), clock)
        door = assemble.door(config, face_pipeline=pipeline, door_gallery=gallery, door_camera=camera, clock=clock)
        hardware = door.hardware
        results: list[SegmentResult] = []
        reports: list[FrameReport] = []
        try:
            for index, segment in enumerate(segments):
                count = len(segment["frames"])
                out(f"-- {segment['name']} ({count} frames, {count / fps:.1f} s): expect {segment['expect']}")
                granted, seen_on, first = [], False, None
                for frame_number in range(1, count + 1):
                    report = door.process_frame()
                    reports.append(report)
                    seen_on |= report.relay_on
                    if report.event is not None:
                        out(describe(report, frame_number))
                        if report.event.kind == "granted":
                            granted.append(report.event.person)
                            first = first if first is not None else frame_number
                result = SegmentResult(segment["name"], segment["expect"], granted, seen_on, hardware.relay_on, first)
                out(f"   relay at the end: {'ON' if hardware.relay_on else 'off'} -> {'ok' if result.ok else 'WRONG'}")
                results.append(result)
        finally:
            door.close()
            gallery.close()
    timings = stage_summary([r for r in reports if r.faces])
    out("per-frame time with a face (median / p90 ms): "
        + ", ".join(f"{stage} {m:.1f}/{p:.1f}" for stage, (m, p) in timings.items()))
    wrong = [r for r in results if not r.ok]
    for r in wrong:
        out(f"WRONG: {r.name}: expected {r.expect}, got granted={r.granted} relay_seen_on={r.relay_seen_on} "
            f"relay_on_at_end={r.relay_on_at_end}")
    out("demo passed: every decision was right" if not wrong else f"demo FAILED: {len(wrong)} wrong decision(s)")
    return not wrong


def describe(report: FrameReport, frame_number: int) -> str:
    """One printed line per decision."""
    event = report.event
    score = f"score {event.score:.3f}" if event.score is not None else "no score   "
    line = (f"   t={report.time - 1000:6.2f}s frame {frame_number:3d}: {event.kind.upper():8s} {event.person or '-':14s} {score}"
            f"  ({sum(report.timings.values()):.0f} ms this frame)  relay {'ON ' if report.relay_on else 'off'}  LED {report.led.value}")
    return line + (f"  [{event.detail}]" if event.detail else "")
