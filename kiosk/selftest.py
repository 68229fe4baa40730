"""``kiosk selftest``: check every part of the door once, print a pass/fail table.

Camera frames, face detection on a live frame (when someone is in view),
model file and hash, database integrity, the LED, and on request the relay
(one click) and the button (waits for a press).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kiosk import assemble
from kiosk.config import Config
from kiosk.decision import Led


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def run_selftest(config: Config, relay: bool, button: bool, button_timeout: float = 30.0,
                 out: Callable[[str], None] = print) -> list[Check]:
    """Run the checks in order; each failure is reported, never raised."""
    checks: list[Check] = []

    def check(name: str, action: Callable[[], tuple[str, str]]) -> None:
        try:
            status, detail = action()
        except Exception as error:  # noqa: BLE001 - a self-test reports every failure
            status, detail = "FAIL", f"{type(error).__name__}: {error}"
        checks.append(Check(name, status, detail))
        out(f"{status:4s}  {name:18s} {detail}")

    state: dict = {}

    def model() -> tuple[str, str]:
        state["pipeline"] = assemble.pipeline(config)
        encoder = state["pipeline"].encoder
        return "PASS", f"{encoder.model_path.name} sha256 matches, {encoder.runtime}, threshold {encoder.threshold:.3f}"

    def liveness() -> tuple[str, str]:
        if config.liveness.mode == "off":
            return "SKIP", "liveness.mode = off: photos held up to the camera are not refused"
        assemble.liveness(config)
        return "PASS", f"mode {config.liveness.mode}: liveness model sha256 matches"

    def database() -> tuple[str, str]:
        gallery = assemble.gallery(config)
        try:
            if not gallery.integrity_ok():
                return "FAIL", f"{config.database} failed PRAGMA integrity_check"
            return "PASS", f"{config.database}: integrity ok, {len(gallery.people())} people enrolled"
        finally:
            gallery.close()

    def camera() -> tuple[str, str]:
        cam = assemble.frames(config)
        try:
            start = time.monotonic()
            frames = [cam.read() for _ in range(10)]
            fps = len(frames) / max(1e-6, time.monotonic() - start)
        finally:
            cam.close()
        state["frame"] = frames[-1]
        height, width = frames[-1].shape[:2]
        return "PASS", f"{cam.name}: 10 frames of {width}x{height}, {fps:.0f} fps"

    def face() -> tuple[str, str]:
        if "frame" not in state or "pipeline" not in state:
            return "SKIP", "needs the camera and the model"
        faces = state["pipeline"].finder.find(state["frame"])
        if not faces:
            return "SKIP", "no face in view (stand in front of the camera and run again to test detection)"
        return "PASS", f"{len(faces)} face(s), largest {faces[0].w:.0f} px"

    check("model", model)
    check("liveness", liveness)
    check("database", database)
    check("camera", camera)
    check("face detection", face)

    pins = config.gpio
    simulated = pins.pin_factory == "mock"
    hardware = None

    def gpio() -> tuple[str, str]:
        nonlocal hardware
        hardware = assemble.hardware(config)
        return "PASS", f"relay GPIO {pins.relay_pin} ({'active-high' if pins.relay_active_high else 'active-low'}), " \
                       f"LED GPIO {pins.led_pin}, button GPIO {pins.button_pin}{' (simulated)' if simulated else ''}"

    def led() -> tuple[str, str]:
        for _ in range(3):
            hardware.led.on()
            time.sleep(0.2)
            hardware.led.off()
            time.sleep(0.2)
        hardware.show(Led.IDLE)
        return "PASS", "blinked 3 times (did you see it?)"

    def click() -> tuple[str, str]:
        hardware.unlock()
        time.sleep(0.5)
        hardware.lock()
        return ("PASS" if not hardware.relay_on else "FAIL"), "clicked once for 0.5 s, now off (did you hear it?)"

    def press() -> tuple[str, str]:
        if simulated:
            return "SKIP", "simulated pins: there is no button to press"
        out(f"      press the enrol button within {button_timeout:.0f} s ...")
        if hardware.button.wait_for_press(timeout=button_timeout):
            return "PASS", "press seen"
        return "FAIL", f"no press within {button_timeout:.0f} s (check wiring to GPIO {pins.button_pin} and ground)"

    check("gpio", gpio)
    try:
        if hardware is not None:
            check("led", led)
            if relay:
                check("relay", click)
            if button:
                check("button", press)
    finally:
        if hardware is not None:
            hardware.close()
    return checks
