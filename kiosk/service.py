"""``kiosk run``: the door as a service, around :class:`kiosk.door.Door`.

:class:`DoorService` is the frame loop: pacing to ``camera.max_fps``, the
limit of failed frames in a row, the systemd watchdog and status line,
reloading the gallery (people enrolled by another process) and pruning old
events. Its clock and sleep are injected, so tests drive it in-process with a
fake clock and mock pins. :func:`run_service` adds what a real start needs:
the state-folder lock, the relay record for ``kiosk relay-off``, start-up
warnings, and signals that stop the loop (their previous handlers restored).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kiosk import assemble
from kiosk.api import ApiServer
from kiosk.config import Config
from kiosk.control import DoorControl
from kiosk.door import Door, FrameReport, stage_summary
from kiosk.errors import EndOfStream, FaceKioskError, GalleryError, ServiceRunning
from kiosk.gallery import write_private_file
from kiosk.notify import SystemdNotifier

MAX_CONSECUTIVE_ERRORS = 10
"""The service exits (door locked; systemd restarts it) after this many failed frames in a row."""
STATUS_SECONDS = 5.0
"""How often the systemd status line is refreshed (and the gallery reloaded)."""
PRUNE_SECONDS = 86400.0
"""How often events older than ``storage.event_retention_days`` are deleted."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stdout(message: str) -> None:
    print(message, flush=True)


@dataclass
class StopFlag:
    """Set by a signal handler (or a test); the loop stops at the next frame."""

    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[StopFlag]:
    """A :class:`StopFlag` raised by ``signals`` while inside; the previous handlers come back on the way out."""
    flag = StopFlag()

    def handler(number: int, _frame) -> None:
        flag.reason = signal.Signals(number).name

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield flag
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@dataclass
class DoorService:
    """The door's frame loop, as ``kiosk run`` runs it (see the module docstring)."""

    door: Door
    config: Config
    notifier: SystemdNotifier = field(default_factory=SystemdNotifier)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    out: Callable[[str], None] = _stdout
    err: Callable[[str], None] = _stderr
    stats: bool = False
    wall_clock: Callable[[], datetime.datetime] = datetime.datetime.now
    control: DoorControl | None = None
    """Orders from the local API and the web page, carried out between frames; the status and events published."""

    def status_line(self, fps: float, report: FrameReport) -> str:
        """The systemd status: speed, people, camera, the last decision and the threshold in force."""
        door = self.door
        last = door.last_event
        camera = "up" if report.camera_up else f"DOWN: {door.camera.last_error}"
        decision = f"{last.kind} {last.person or ''}".strip() if last else "none"
        distant = ", a face too far away to judge (come closer)" if report.distant_faces and not report.faces else ""
        notes = "".join(f"; {note()}" for note in list(self.control.notes.values())) if self.control else ""
        return (f"{fps:.1f} fps, {door.people_enrolled} people enrolled, camera {camera}{distant}, last decision: {decision}, "
                f"threshold {door.threshold:.3f} (expected strangers let in {door.door_threshold.expected_far:.0e} per attempt)"
                f"{notes}")

    def run(self, stop: StopFlag | None = None) -> None:
        """Process frames until ``stop`` is raised or a finite source ends.

        Raises :class:`FaceKioskError` after ``MAX_CONSECUTIVE_ERRORS`` failed
        frames in a row (the door stays locked; systemd restarts the service).
        """
        stop = stop if stop is not None else StopFlag()
        door = self.door
        period = 1.0 / self.config.camera.max_fps
        reports: list[FrameReport] = []
        failures = 0
        last_reload = last_status = last_prune = self.clock()
        frames_at_status = 0
        while not stop:
            started = self.clock()
            try:
                report = door.step()
            except EndOfStream:
                break
            if self.control is not None:
                self.control.serve(door, report)
            if report.error is not None:
                failures += 1
                self.err(f"kiosk: error: {report.error}")
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    raise FaceKioskError(f"stopping after {failures} errors in a row (the door is locked); last: {report.error}")
                self.sleep(max(0.0, period - (self.clock() - started)))
                continue
            failures = 0
            if report.camera_up and door.frames == 1:
                self.notifier.ready(f"watching {self.config.camera.source}, {len(door.gallery.people())} people enrolled")
            self.notifier.watchdog()  # from the frame loop itself: a hung camera or loop stops the pings
            for event in report.events:
                self.out(f"{self.wall_clock():%H:%M:%S} {event.kind} {event.person or '-'} "
                         f"{'' if event.score is None else f'{event.score:.3f}'} {event.detail}")
            now = self.clock()
            if now - last_status >= STATUS_SECONDS:
                self.notifier.status(self.status_line((door.frames - frames_at_status) / (now - last_status), report))
                last_status, frames_at_status = now, door.frames
            if self.stats:
                reports.append(report)
                if len(reports) >= 100:
                    self.out(stats_line(stage_summary(reports)))
                    reports.clear()
            if now - last_reload >= STATUS_SECONDS:
                door.reload_gallery()
                last_reload = now
            if now - last_prune >= PRUNE_SECONDS:
                prune_events(door, self.err)
                last_prune = now
            self.sleep(max(0.0, period - (self.clock() - started)))
        if self.stats and reports:
            self.out(stats_line(stage_summary(reports)))


def stats_line(summary: dict[str, tuple[float, float]]) -> str:
    return "stats (median/p90 ms): " + ", ".join(f"{k} {m:.1f}/{p:.1f}" for k, (m, p) in summary.items())


def prune_events(door: Door, err: Callable[[str], None]) -> None:
    """Delete old events; a full disk must not stop the door, so a failure is only reported."""
    try:
        door.gallery.prune_events(door.config.storage.event_retention_days)
    except GalleryError as error:
        err(f"warning: old events not pruned: {error}")


# Starting for real ---------------------------------------------------------------------------------


def lock_state_dir(config: Config) -> int:
    """Take ``<state_dir>/kiosk.lock`` exclusively, without waiting; the returned descriptor holds it until closed.

    The kernel drops the lock when the holder dies, even by SIGKILL. The file
    is readable by all (it is empty) so that one created by root does not
    keep the service user from locking it.
    """
    path = config.service_lock
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # read-only file system: the file of an earlier start
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        os.close(handle)
        raise ServiceRunning(f"{path} is held by a running 'kiosk run' or 'kiosk restore'") from error
    return handle


def read_relay_record(path: Path) -> tuple[int, bool] | None:
    """(relay pin, active high) recorded by the last good start, or None if there is no usable record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pin, active_high = record["relay_pin"], record["relay_active_high"]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        return None
    if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 27 or not isinstance(active_high, bool):
        return None
    return pin, active_high


def record_relay(config: Config, err: Callable[[str], None] = _stderr) -> None:
    """Remember this good start's relay pin and polarity for ``kiosk relay-off`` (written only when they change)."""
    relay = (config.gpio.relay_pin, config.gpio.relay_active_high)
    if read_relay_record(config.relay_record) == relay:
        return
    record = {"relay_pin": relay[0], "relay_active_high": relay[1]}
    try:
        write_private_file(config.relay_record, (json.dumps(record) + "\n").encode())
    except OSError as error:
        err(f"warning: cannot record the relay pin in {config.relay_record} ({error}); 'kiosk relay-off' uses the "
            "config, or the defaults if the config breaks")


def _startup_warnings(door: Door, config: Config, err: Callable[[str], None]) -> None:
    gallery = door.gallery
    for message in gallery.damaged_templates():
        err(f"warning: {message}")
    if gallery.read_only:
        err(f"warning: gallery {config.database} is read-only (disk full or read-only file system): the door runs "
            "with the people enrolled now, events wait in memory until it can be written, enrolling fails; "
            f"free space (df -h {config.database.parent})")
    stale = gallery.stale_people()
    if stale:
        err(f"warning: {len(stale)} people were enrolled with another model and cannot be recognised until "
            f"re-enrolled: {', '.join(stale)}")


def _start_api(config: Config, control: DoorControl, err: Callable[[str], None]) -> ApiServer | None:
    """The local API for the CLI; the door runs without it (and says so) if its socket cannot be made."""
    try:
        api = ApiServer(config.api_socket, control, config)
    except (OSError, FaceKioskError) as error:
        err(f"warning: no local API ({error}): 'kiosk status', and 'kiosk selftest' or 'kiosk enroll --camera' while "
            "the door runs, will not work")
        return None
    api.start()
    return api


def _start_web(config: Config, control: DoorControl, out: Callable[[str], None], err: Callable[[str], None]):
    """The web admin page, when it is enabled and has a password; the door runs without it (and says why)."""
    if not config.web.enabled:
        return None
    if not config.web_password.exists():
        out("kiosk: web admin page off: set its password with 'kiosk web-password' and restart")
        return None
    from kiosk.web import WebServer  # Flask is loaded only when the page is on

    try:
        server = WebServer(config, control)
    except FaceKioskError as error:
        err(f"warning: no web admin page: {error}")
        return None
    server.start()
    out(f"kiosk: web admin page on {server.url}" + ("" if server.url.startswith("https") else
                                                     " (plain HTTP: use it on a trusted home network only)"))
    return server


def _start_mqtt(config: Config, control: DoorControl, out: Callable[[str], None], err: Callable[[str], None]):
    """The Home Assistant bridge when ``mqtt.enabled``; it connects in the background and the door never waits for it."""
    if not config.mqtt.enabled:
        return None
    from kiosk.mqtt import HomeAssistantBridge  # paho-mqtt is loaded only when the bridge is on

    try:
        bridge = HomeAssistantBridge(config, control)
        bridge.start()
    except FaceKioskError as error:
        err(f"warning: no Home Assistant bridge: {error}")
        return None
    out(f"kiosk: publishing to Home Assistant through MQTT broker {config.mqtt.host}:{config.mqtt.port} "
        f"(topics {bridge.base}/...)")
    return bridge


def run_service(config: Config, stats: bool = False, out: Callable[[str], None] = _stdout,
                err: Callable[[str], None] = _stderr) -> None:
    """Run the door until SIGTERM/SIGINT or the end of a finite camera source; the relay is off when it returns or raises."""
    notifier = SystemdNotifier()
    with stop_on_signals() as stop:
        try:
            lock = lock_state_dir(config)  # before any GPIO: a second 'kiosk run' must not touch the running door's relay
        except ServiceRunning as error:
            raise FaceKioskError(f"the door is already running ({error}); see: systemctl status kiosk") from error
        except OSError as error:
            lock = None
            err(f"warning: cannot lock {config.service_lock} ({error}); 'kiosk restore' cannot tell that the door runs")
        door = None
        try:
            hardware = assemble.hardware(config)
            record_relay(config, err)
            door = assemble.door(config, door_hardware=hardware)
            prune_events(door, err)
            _startup_warnings(door, config, err)
            simulated = " (simulated GPIO)" if config.gpio.pin_factory == "mock" else ""
            out(f"kiosk: watching {config.camera.source} with {len(door.gallery.people())} people enrolled{simulated}; "
                "Ctrl-C to stop")
            out(f"kiosk: similarity threshold {door.threshold:.3f} from {door.door_threshold.source}: expected strangers "
                f"let in {door.door_threshold.expected_far:.1e} per attempt")
            control = DoorControl()
            neighbours = [server for server in (_start_api(config, control, err), _start_web(config, control, out, err),
                                                _start_mqtt(config, control, out, err)) if server is not None]
            try:
                DoorService(door, config, notifier, out=out, err=err, stats=stats, control=control).run(stop)
            finally:
                for server in neighbours:
                    server.stop()
            if stop:
                out(f"kiosk: {stop.reason} received; relay off, stopping")
        finally:
            notifier.stopping()
            try:
                if door is not None:
                    door.close()
                    door.gallery.close()
            finally:
                if lock is not None:
                    os.close(lock)
                notifier.close()
