"""The service's local API: a Unix socket for the CLI on the same Pi.

While ``kiosk run`` holds the camera and the pins, the commands that need them
ask the service instead of failing: ``kiosk status``, ``kiosk selftest``,
``kiosk enroll NAME --camera`` and ``kiosk relay-off``. The socket
(``api.socket``; by default ``/run/kiosk/kiosk.sock`` under systemd, else
``<state_dir>/kiosk.sock``) has mode 0660: the service's user and group (add an
admin's account to the ``kiosk`` group) may use it, nobody else. Whoever can
reach it is as trusted as a shell on the door, like the CLI itself; each order
is logged with the caller's user name (from the socket's peer credentials).

Protocol: one request per connection, a JSON line ``{"command": NAME, ...}``;
the reply is JSON lines: any number of ``{"progress": TEXT}``, then one
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": TEXT}``. Orders
reach the door through :class:`kiosk.control.DoorControl`, between two frames;
long work (an enrolment) is watched from the connection's own thread.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kiosk.config import Config
from kiosk.control import DoorControl, DoorStatus, enrol_at_camera
from kiosk.errors import ApiError, DoorNotRunning, FaceKioskError

MAX_REQUEST_BYTES = 65536
SELFTEST_CLICK_SECONDS = 0.5
COMMANDS = ("status", "selftest", "enroll", "relay-off", "end-lockout")


def _caller(connection: socket.socket) -> str:
    """'NAME (uid N)' of the process at the other end of the socket."""
    try:
        _pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                    struct.calcsize("3i")))
    except OSError:
        return "an unknown local user"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class _Handler(socketserver.StreamRequestHandler):
    server: ApiServer

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            request = json.loads(line)
            if not isinstance(request, dict) or request.get("command") not in COMMANDS:
                raise ApiError(f"unknown request {line[:100]!r}: send a JSON line with a command, one of "
                               f"{', '.join(COMMANDS)}")
            result = self.server.answer(request, _caller(self.connection), self._progress)
            self._send({"ok": True, "result": result})
        except (FaceKioskError, ValueError) as error:
            self._send({"ok": False, "error": str(error)})
        except OSError:
            pass  # the client went away

    def _progress(self, text: str) -> None:
        self._send({"progress": text})

    def _send(self, message: dict) -> None:
        self.wfile.write((json.dumps(message) + "\n").encode())
        self.wfile.flush()


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The local API of one running door, served from background threads (:meth:`start`, :meth:`stop`)."""

    daemon_threads = True

    def __init__(self, path: Path, control: DoorControl, config: Config,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = Path(path)
        self.control = control
        self.config = config
        self.sleep = sleep
        if len(str(self.path).encode()) > 100:
            raise ApiError(f"api.socket {self.path} is too long for a Unix socket (at most 100 bytes): choose a "
                           "shorter path")
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by a killed service; the state-folder lock says none runs now
        old_umask = os.umask(0o117)  # born 0660: never a moment when others could connect
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="kiosk-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)

    # The commands -----------------------------------------------------------------------------

    def answer(self, request: dict[str, Any], caller: str, progress: Callable[[str], None]) -> Any:
        command = request["command"]
        if command == "status":
            return self._status().as_dict()
        if command == "selftest":
            return self._selftest(bool(request.get("relay")), caller, progress)
        if command == "enroll":
            return self._enroll(str(request.get("name") or ""), request.get("role"), caller, progress)
        if command == "relay-off":
            self.control.ask(lambda door: door.close_now(f"relay off by {caller} (kiosk relay-off)"))
            return "the relay is off"
        self.control.ask(lambda door: door.end_lockout(f"lockout ended by {caller} over the local API"))
        return "the lockout is over"

    def _status(self) -> DoorStatus:
        status = self.control.status
        if status is None:
            raise ApiError("the door is starting and has not read a frame yet: try again in a few seconds")
        return status

    def _selftest(self, relay: bool, caller: str, progress: Callable[[str], None]) -> list[dict[str, str]]:
        """The self-test of a running door: its own parts, as it runs them (no second camera or pin user)."""
        checks: list[dict[str, str]] = []

        def report(name: str, status: str, detail: str) -> None:
            checks.append({"name": name, "status": status, "detail": detail})
            progress(f"{status:4s}  {name:18s} {detail}")

        def parts(door) -> dict[str, Any]:  # on the frame loop: the door's own model, gallery and pins
            return {"model": f"{door.pipeline.encoder.model_path.name} sha256 matched at start, "
                             f"{door.pipeline.encoder.runtime}, threshold {door.threshold:.3f}",
                    "integrity": door.gallery.integrity_ok(),
                    "database": str(door.gallery.path), "people": door.people_enrolled,
                    "gpio": door.config.gpio, "simulated": door.config.gpio.pin_factory == "mock"}

        found = self.control.ask(parts)
        report("model", "PASS", found["model"])
        mode = self.config.liveness.mode
        report("liveness", "SKIP" if mode == "off" else "PASS",
               "liveness.mode = off: photos held up to the camera are not refused" if mode == "off"
               else f"mode {mode}: liveness model sha256 matched at start")
        report("database", "PASS" if found["integrity"] else "FAIL",
               f"{found['database']}: integrity {'ok' if found['integrity'] else 'FAILED'}, {found['people']} people enrolled")
        before = self._status()
        self.sleep(1.0)
        after = self._status()
        fps = (after.frames - before.frames) / max(1e-6, after.time - before.time)
        if after.camera_up and after.frames > before.frames:
            report("camera", "PASS", f"the door reads {fps:.0f} frames per second")
        else:
            report("camera", "FAIL", f"no new frame in 1 s ({after.camera_error or 'camera stuck'})")
        if after.faces:
            report("face detection", "PASS", f"{after.faces} face(s) in view now")
        else:
            report("face detection", "SKIP", "no face in view (stand in front of the camera and run again to test detection)")
        pins = found["gpio"]
        report("gpio", "PASS", f"relay GPIO {pins.relay_pin} ({'active-high' if pins.relay_active_high else 'active-low'}), "
                               f"LED GPIO {pins.led_pin}, button GPIO {pins.button_pin}"
                               f"{' (simulated)' if found['simulated'] else ''}, held by the running door")
        if relay:
            self.control.ask(lambda door: door.open_for(SELFTEST_CLICK_SECONDS, f"self-test by {caller}: relay clicked"))
            self.sleep(SELFTEST_CLICK_SECONDS + 0.5)
            off = not self._status().relay_on
            report("relay", "PASS" if off else "FAIL",
                   f"clicked once for {SELFTEST_CLICK_SECONDS:g} s by the door, now {'off' if off else 'STILL ON'} (did you hear it?)")
        return checks

    def _enroll(self, name: str, role: Any, caller: str, progress: Callable[[str], None]) -> dict[str, Any]:
        """Enrol NAME at the door's camera (trusted, like ``kiosk enroll --camera`` on a stopped door)."""
        session = self.control.ask(enrol_at_camera(name, role, caller))
        deadline = time.monotonic() + self.config.enrollment.capture_seconds + 30
        said = ""
        while not session.finished:
            message = f"{session.message} ({len(session.kept)} of {self.config.enrollment.frames} pictures)"
            if message != said:
                progress(message)
                said = message
            if time.monotonic() > deadline:
                raise ApiError("the door did not finish the enrolment in time; nobody was enrolled")
            self.sleep(0.2)
        if session.person is None:
            raise ApiError(session.message)
        person = session.person
        return {"name": person.name, "role": person.role, "embeddings": person.embeddings}


def request(path: Path, command: str, progress: Callable[[str], None] = print, timeout: float = 120.0,
            **arguments: Any) -> Any:
    """Send one request to a running door's local API and return its result (progress lines go to ``progress``)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        try:
            connection.connect(str(path))
        except PermissionError as error:
            raise ApiError(f"you may not use the door's local API {path}: run with sudo, or add your account to the "
                           "kiosk group (sudo usermod -aG kiosk $USER, then log in again)") from error
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise DoorNotRunning(f"the door is not running (nothing answers on {path}); start it: "
                                 "sudo systemctl start kiosk") from error
        except OSError as error:
            raise ApiError(f"the door's local API {path} cannot be reached ({error}); see: systemctl status kiosk") from error
        connection.sendall((json.dumps({"command": command, **arguments}) + "\n").encode())
        for message in _lines(connection):
            if "progress" in message:
                progress(str(message["progress"]))
            elif message.get("ok"):
                return message.get("result")
            else:
                raise ApiError(str(message.get("error")))
        raise ApiError(f"the door's local API {path} closed the connection without an answer")
    except TimeoutError as error:
        raise ApiError(f"the door's local API {path} did not answer within {timeout:g} s") from error
    finally:
        connection.close()


def _lines(connection: socket.socket) -> Iterator[dict[str, Any]]:
    with connection.makefile("rb") as replies:
        for line in replies:
            message = json.loads(line)
            if isinstance(message, dict):
                yield message
