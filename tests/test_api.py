"""The local API: a real door loop in a thread (recorded frames, mock pins), the CLI and clients on its socket."""

from __future__ import annotations

import json
import socket
import stat
import time

import pytest

from kiosk import api, assemble
from kiosk.cli import main
from kiosk.config import Config
from kiosk.control import DoorControl, DoorStatus, EventListener
from kiosk.demo import demo_data
from kiosk.enroll import enroll_from_images
from kiosk.errors import ApiError, DoorNotAnswering, DoorNotRunning
from kiosk.gallery import EventRecord
from kiosk.service import run_service

DATA = demo_data()
OWNER = sorted((DATA / "frames").glob("a1_*.jpg"))
EMPTY = DATA / "frames" / "empty_00.jpg"
ENROL = sorted((DATA / "enrol").glob("*.jpg"))


def test_the_socket_is_for_the_service_user_and_group_only(running):
    door = running([EMPTY])
    mode = door.config.api_socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_status_says_what_the_running_door_is_doing(running):
    door = running([EMPTY])
    status, _ = door.ask("status")
    assert status["people"] == 1 and status["camera_up"] and not status["relay_on"]
    assert status["frames"] > 0 and status["locked_out_until"] is None
    line = DoorStatus.from_dict(status).summary()
    assert line.startswith("door locked, camera up") and "1 people enrolled" in line


def test_an_admin_ends_a_lockout_and_the_log_says_who(running):
    door = running([EMPTY])
    door.control.ask(lambda d: setattr(d.decision, "locked_out_until", d.clock() + 300))
    time.sleep(0.2)
    assert door.ask("status")[0]["locked_out_until"] is not None
    answer, _ = door.ask("end-lockout")
    assert answer == "the lockout is over"
    assert door.ask("status")[0]["locked_out_until"] is None
    events = door.events()
    assert events[-1].kind == "admin" and "lockout ended by" in events[-1].detail and "uid" in events[-1].detail


def test_relay_off_through_the_api_ends_an_unlock(running):
    door = running([EMPTY])
    door.control.ask(lambda d: d.open_for(30, "test: remote unlock"))
    time.sleep(0.2)
    assert door.ask("status")[0]["relay_on"]
    door.ask("relay-off")
    time.sleep(0.2)
    assert not door.ask("status")[0]["relay_on"]


def test_enrol_at_the_running_door_s_camera(running):
    door = running(OWNER)
    result, progress = door.ask("enroll", name="guest", role="user")
    assert result == {"name": "guest", "role": "user", "embeddings": 3}
    assert any("look at the camera" in line for line in progress), progress
    assert door.people() == {"owner", "guest"}
    assert any(e.kind == "admin" and "'guest'" in e.detail for e in door.events())
    with pytest.raises(ApiError, match="already enrolled"):
        door.ask("enroll", name="owner")


def test_a_bad_request_is_refused_with_the_commands_it_knows(running):
    door = running([EMPTY])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(door.config.api_socket))
        client.sendall(b'{"command": "open-sesame"}\n')
        reply = json.loads(client.makefile().readline())
    assert not reply["ok"] and "status, selftest, enroll" in reply["error"]


def test_a_failing_order_reaches_its_asker_and_the_door_goes_on(running):
    door = running([EMPTY])
    with pytest.raises(ZeroDivisionError):
        door.control.ask(lambda d: 1 / 0)
    frames = door.ask("status")[0]["frames"]
    time.sleep(0.3)
    assert door.ask("status")[0]["frames"] > frames and door.thread.is_alive()


def test_the_cli_asks_the_running_door(running, capsys):
    door = running([EMPTY])
    state = ["--state-dir", door.config.storage.state_dir]
    assert main(["status", *state]) == 0
    assert "door locked, camera up" in capsys.readouterr().out
    assert main(["selftest", *state, "--simulate", "--relay"]) == 0
    out = capsys.readouterr().out
    assert "checking it through its local API" in out and "PASS  relay" in out and "FAIL" not in out
    assert any("relay clicked" in e.detail for e in door.events())
    assert main(["relay-off", *state, "--simulate"]) == 0
    assert "the relay is off" in capsys.readouterr().out


def test_the_cli_says_when_no_door_runs(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path)]) == 3
    assert "the door is not running" in capsys.readouterr().out
    with pytest.raises(DoorNotRunning):
        api.request(tmp_path / "kiosk.sock", "status")


def test_an_order_nobody_takes_times_out_with_a_message():
    control = DoorControl()
    with pytest.raises(DoorNotAnswering, match="did not take the order"):
        control.ask(lambda door: None, timeout=0.05)


def test_a_slow_listener_loses_its_oldest_events_and_counts_them():
    listener = EventListener(size=3)
    listener.put([EventRecord(float(i), "unknown", None, None, "") for i in range(5)])
    assert [e.time for e in listener.get(0)] == [2.0, 3.0, 4.0] and listener.dropped == 2
    assert listener.get(0.01) == []


def test_kiosk_run_serves_the_api_while_it_runs_and_removes_the_socket_after(tmp_path, door_pipeline):
    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.gpio.pin_factory = "mock"
    config.liveness.mode = "off"
    config.camera.source = str(DATA / "frames")
    gallery = assemble.gallery(config)
    enroll_from_images("owner", ENROL, door_pipeline, gallery)
    gallery.close()
    seen: list[dict] = []

    def out(line: str) -> None:  # the loop prints each event; ask the API from there, as another process would
        if " granted " in line and not seen:
            seen.append(api.request(config.api_socket, "status", progress=lambda text: None))

    run_service(config, out=out, err=lambda line: None)
    assert seen and seen[0]["people"] == 1 and seen[0]["camera_up"]
    assert not config.api_socket.exists()
