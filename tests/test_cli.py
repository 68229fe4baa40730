"""The command line in-process: relay-off after any crash, backup/restore, people, events, enrolment at the camera,
and the status line 'kiosk run' gives systemd."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk import cli
from kiosk.demo import demo_data
from tests.conftest import FIXTURES, shipped_model_gallery, start_kiosk

EMPTY_PORCH = demo_data() / "frames" / "empty_00.jpg"
ANN, BOB = np.eye(128, dtype=np.float32)[:2]  # two unit-length embeddings, far apart


def stuck_on(factory: MockFactory, pin: int, active_high: bool) -> None:
    """The level a SIGKILLed door leaves on a released relay line in the middle of an unlock."""
    if active_high:
        factory.pin(pin).drive_high()
    else:
        factory.pin(pin).drive_low()


def is_off(factory: MockFactory, pin: int, active_high: bool) -> bool:
    return factory.pin(pin).state == (not active_high)


def short_run(tmp_path, config_path, frames: int = 3) -> int:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for i in range(frames):
        (folder / f"{i:02d}.jpg").write_bytes(EMPTY_PORCH.read_bytes())
    return cli.main(["run", "--simulate", "--config", str(config_path), "--camera", str(folder)])


def test_relay_off_uses_a_valid_config(tmp_path, pins, capsys):
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[gpio]\nrelay_pin = 5\nrelay_active_high = true\n[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    stuck_on(pins, 5, active_high=True)
    assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 0
    assert is_off(pins, 5, active_high=True)
    assert "relay on GPIO 5 (active-high, from the config) is off" in capsys.readouterr().out


def test_a_good_start_records_the_relay_and_relay_off_uses_it_when_the_config_breaks(tmp_path, pins, capsys,
                                                                                  keep_signal_handlers):
    state = tmp_path / "state"
    config = tmp_path / "kiosk.toml"
    good = f'[gpio]\nrelay_pin = 6\nrelay_active_high = true\nled_pin = 27\n[storage]\nstate_dir = "{state}"\n'
    config.write_text(good)
    assert short_run(tmp_path, config) == 0
    record = state / "relay.json"
    assert json.loads(record.read_text()) == {"relay_pin": 6, "relay_active_high": True}
    assert (record.stat().st_mode & 0o777) == 0o600
    capsys.readouterr()
    for broken in (good.replace("relay_pin", "relay_pni"), "[gpio\n", None):  # a typo, bad TOML, the file deleted
        if broken is None:
            config.unlink()
        else:
            config.write_text(broken)
        stuck_on(pins, 6, active_high=True)
        assert cli.main(["relay-off", "--simulate", "--config", str(config), "--state-dir", str(state)]) == 0
        assert is_off(pins, 6, active_high=True), broken
        out = capsys.readouterr()
        assert "the config cannot be used" in out.err
        assert f"relay on GPIO 6 (active-high, from the record of the last good start, {record}) is off" in out.out


def test_relay_off_finds_the_record_through_a_broken_config_and_falls_back_to_the_defaults(tmp_path, pins, capsys):
    state = tmp_path / "state"
    state.mkdir()
    (state / "relay.json").write_text('{"relay_pin": 23, "relay_active_high": false}')
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[decision]\nk = "three"\n[storage]\nstate_dir = "{state}"\n')  # invalid, but names its state folder
    stuck_on(pins, 23, active_high=False)
    assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 0
    assert is_off(pins, 23, active_high=False) and "from the record of the last good start" in capsys.readouterr().out
    for damaged in ('{"relay_pin": 99, "relay_active_high": false}', '{"relay_pin": true}', "\x00garbage", None):
        if damaged is None:
            (state / "relay.json").unlink()
        else:
            (state / "relay.json").write_text(damaged)
        stuck_on(pins, 17, active_high=False)
        assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 0
        assert is_off(pins, 17, active_high=False), damaged
        out = capsys.readouterr()
        assert "relay on GPIO 17 (active-low, from the built-in defaults) is off" in out.out and "using the defaults" in out.err


def test_relay_off_also_switches_off_the_pin_of_the_last_start_when_the_config_was_edited(tmp_path, pins, capsys):
    state = tmp_path / "state"
    state.mkdir()
    (state / "relay.json").write_text('{"relay_pin": 17, "relay_active_high": false}')
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[gpio]\nrelay_pin = 5\n[storage]\nstate_dir = "{state}"\n')
    stuck_on(pins, 17, active_high=False)
    stuck_on(pins, 5, active_high=False)
    assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 0
    assert is_off(pins, 5, active_high=False) and is_off(pins, 17, active_high=False)
    out = capsys.readouterr().out
    assert "GPIO 5 (active-low, from the config)" in out and "GPIO 17 (active-low, from the last good start" in out
    config.write_text(f'[gpio]\nrelay_pin = 5\nbutton_pin = 17\n[storage]\nstate_dir = "{state}"\n')  # 17 is a button now
    pins.pin(17).drive_low()
    assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 0
    assert pins.pin(17).function == "input" and pins.pin(17).state is False, "a button pin is never driven"


def test_relay_off_reports_a_gpio_it_cannot_drive(tmp_path, pins, capsys):
    from gpiozero import OutputDevice

    config = tmp_path / "kiosk.toml"
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    holder = OutputDevice(17, pin_factory=pins)  # another program holds the line
    assert cli.main(["relay-off", "--simulate", "--config", str(config)]) == 2
    assert "cannot drive the relay on GPIO 17 off" in capsys.readouterr().err
    holder.close()


def backup_of_ann(tmp_path, state):
    """A backup of a gallery in ``state`` with one person, Ann, enrolled under the shipped model."""
    gallery = shipped_model_gallery(state)
    gallery.add_person("Ann", ANN)
    backup = gallery.backup(tmp_path / "backup.sqlite3")
    gallery.close()
    return backup


def test_restore_refuses_while_the_service_runs(tmp_path, capsys):
    state = tmp_path / "state"
    backup = backup_of_ann(tmp_path, state)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(400):
        (frames / f"{i:04d}.jpg").write_bytes(EMPTY_PORCH.read_bytes())
    process, notify = start_kiosk(tmp_path, frames)
    try:
        notify.collect(60, until=lambda n: n.count("READY=1") >= 1)
        assert notify.count("READY=1") == 1
        assert cli.main(["restore", str(backup), "--state-dir", str(state)]) == 2
        assert "stop the service first: sudo systemctl stop kiosk" in capsys.readouterr().err
        second = subprocess.run([sys.executable, "-m", "kiosk.cli", "run", "--simulate", "--state-dir", str(state),
                                 "--camera", str(frames)], check=False, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "the door is already running" in second.stderr
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert cli.main(["restore", str(backup), "--state-dir", str(state)]) == 0
    assert "restored 1 people" in capsys.readouterr().out


def test_restore_names_the_people_whose_faces_failed_their_check(tmp_path, capsys):
    state = tmp_path / "state"
    backup = backup_of_ann(tmp_path, state)
    import sqlite3

    db = sqlite3.connect(backup, isolation_level=None)
    db.execute("UPDATE embeddings SET vector = zeroblob(512)")
    db.close()
    assert cli.main(["restore", str(backup), "--state-dir", str(state)]) == 0
    err = capsys.readouterr().err
    assert "'Ann'" in err and "kiosk people remove Ann" in err
    assert cli.main(["people", "--state-dir", str(state), "list"]) == 0
    assert "kiosk enroll Ann" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["selftest", "--simulate"], ["enroll", "someone", "--camera"]])
def test_commands_that_need_the_camera_or_pins_refuse_while_the_door_runs(tmp_path, capsys, command):
    state = tmp_path / "state"
    state.mkdir()
    held = os.open(state / "kiosk.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running 'kiosk run' holds
    try:
        assert cli.main([*command, "--state-dir", str(state)]) == 2
    finally:
        os.close(held)
    assert "stop it first (sudo systemctl stop kiosk)" in capsys.readouterr().err


# The status line systemd shows -------------------------------------------------------------------


def test_the_status_line_names_the_last_decision(tmp_path, capsys):
    """'systemctl status kiosk' shows who was let in last: the status carries the door's real last decision."""
    state = tmp_path / "state"
    enrol = sorted((demo_data() / "enrol").glob("*.jpg"))
    assert cli.main(["enroll", "Colin Powell", "--state-dir", str(state), "--images", *map(str, enrol)]) == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    walk_up = sorted((demo_data() / "frames").glob("a1_*.jpg"))  # Colin Powell walks up: granted by the third frame
    for i, path in enumerate(walk_up + [EMPTY_PORCH] * 300):  # then 20 s of an empty porch at 15 fps
        (frames / f"{i:04d}.jpg").write_bytes(path.read_bytes())
    process, notify = start_kiosk(tmp_path, frames, extra_config='[liveness]\nmode = "off"\n')  # the frames are photos
    try:
        notify.collect(60, until=lambda n: bool(n.statuses()))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert " granted Colin Powell " in output, output
    statuses = notify.statuses()
    assert statuses and "last decision: granted Colin Powell," in statuses[0], statuses


# Backup and restore ------------------------------------------------------------------------------


def test_backup_and_restore_bring_back_people_and_events(tmp_path, capsys):
    state = tmp_path / "state"
    gallery = shipped_model_gallery(state)
    gallery.add_person("Ann", ANN)
    gallery.add_person("Bob", np.stack([BOB, -BOB]))
    gallery.log_event("granted", "Ann", 0.91)
    gallery.close()
    backup = tmp_path / "backup.sqlite3"
    assert cli.main(["backup", str(backup), "--state-dir", str(state)]) == 0
    assert f"backed up 2 people to {backup}" in capsys.readouterr().out
    assert cli.main(["people", "--state-dir", str(state), "remove", "Bob"]) == 0
    gallery = shipped_model_gallery(state)
    gallery.log_event("denied", None, 0.2, detail="after the backup")
    gallery.close()
    assert cli.main(["restore", str(backup), "--state-dir", str(state)]) == 0
    assert f"restored 2 people into {state / 'gallery.sqlite3'}" in capsys.readouterr().out
    gallery = shipped_model_gallery(state)
    assert [(p.name, p.role, p.embeddings) for p in gallery.people()] == [("Ann", "admin", 1), ("Bob", "user", 2)]
    assert [(e.kind, e.person) for e in gallery.events()] == [("enrolled", "Ann"), ("enrolled", "Bob"), ("granted", "Ann")]
    assert gallery.templates().names == ["Ann", "Bob", "Bob"] and gallery.damaged_templates() == []
    gallery.close()


def test_backup_refuses_to_overwrite_a_file(tmp_path, capsys):
    state = tmp_path / "state"
    backup = backup_of_ann(tmp_path, state)
    before = backup.read_bytes()
    assert cli.main(["backup", str(backup), "--state-dir", str(state)]) == 2
    assert f"kiosk backup: error: {backup} already exists: delete it first or pick another name" in capsys.readouterr().err
    assert backup.read_bytes() == before


def test_restore_of_a_missing_file_says_it_does_not_exist(tmp_path, capsys):
    state = tmp_path / "state"
    backup_of_ann(tmp_path, state)
    missing = tmp_path / "no-such-backup.sqlite3"
    assert cli.main(["restore", str(missing), "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"kiosk restore: error: {missing} does not exist" in err and "not a" not in err
    gallery = shipped_model_gallery(state)
    assert [p.name for p in gallery.people()] == ["Ann"]
    gallery.close()


# People and events -------------------------------------------------------------------------------


def people_lines(state: Path, capsys) -> list[str]:
    """``kiosk people list``'s lines, one per person, each split into words."""
    assert cli.main(["people", "--state-dir", str(state), "list"]) == 0
    return [line.split()[:3] for line in capsys.readouterr().out.splitlines() if "embeddings" in line]


def test_people_list_set_role_rename_and_remove(tmp_path, capsys):
    state = tmp_path / "state"
    gallery = shipped_model_gallery(state)
    assert cli.main(["people", "--state-dir", str(state), "list"]) == 0
    out = capsys.readouterr().out
    assert "nobody is enrolled yet: enrol the first admin with kiosk enroll NAME --camera --role admin" in out
    gallery.add_person("Ann", ANN)
    gallery.add_person("Bob", np.stack([BOB, -BOB]))
    bob_id = gallery.person("Bob").id
    gallery.close()
    snapshot = state / "snapshots" / f"20261128-080000_p{bob_id}.jpg"
    snapshot.parent.mkdir()
    snapshot.write_bytes(EMPTY_PORCH.read_bytes())

    def people(*args: str) -> int:
        return cli.main(["people", "--state-dir", str(state), *args])

    assert people_lines(state, capsys) == [["Ann", "admin", "1"], ["Bob", "user", "2"]]
    assert people("set-role", "Bob", "admin") == 0 and "'Bob' is now admin" in capsys.readouterr().out
    assert people_lines(state, capsys) == [["Ann", "admin", "1"], ["Bob", "admin", "2"]]
    assert people("rename", "Bob", "Robert") == 0 and "renamed 'Bob' to 'Robert'" in capsys.readouterr().out
    assert people("rename", "Robert", "Ann") == 2
    assert "'Ann' is already enrolled: pick another name or remove the old one" in capsys.readouterr().err
    assert people("remove", "Robert") == 0
    assert "removed 'Robert': every embedding, their name on past events, and 1 pictures (snapshots, thumbnail)" in capsys.readouterr().out
    assert not snapshot.exists()
    assert people_lines(state, capsys) == [["Ann", "admin", "1"]]
    assert people("remove", "Robert") == 2 and "no enrolled person is called 'Robert'" in capsys.readouterr().err
    assert people("schedule", "Ann", "mon-fri 07:00-19:00; sat 09:00-12:00") == 0
    assert "'Ann' may be let in: weekdays 07:00-19:00; sat 09:00-12:00" in capsys.readouterr().out
    assert people("list") == 0 and "schedule: weekdays 07:00-19:00; sat 09:00-12:00" in capsys.readouterr().out
    assert people("schedule", "Ann", "mon 7-19") == 2
    assert "'7-19' is not a time window HH:MM-HH:MM" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["people", "list"], ["events"], ["backup", "copy.db"]])
def test_a_mistyped_state_folder_is_an_error_not_an_empty_door(tmp_path, capsys, command):
    typo = tmp_path / "stat"
    assert cli.main([*command, "--state-dir", str(typo)]) == 2
    assert f"there is no gallery in {typo}" in capsys.readouterr().err
    assert not typo.exists()


def test_options_are_taken_before_or_after_the_people_action(tmp_path, capsys):
    state = tmp_path / "state"
    shipped_model_gallery(state).close()
    assert cli.main(["people", "--state-dir", str(state), "list"]) == 0
    before = capsys.readouterr().out
    assert cli.main(["people", "list", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out == before and "nobody is enrolled yet" in before


def test_enrolling_a_taken_name_says_whose_it_is(tmp_path, capsys):
    state = tmp_path / "state"
    gallery = shipped_model_gallery(state)
    gallery.add_person("Ann", ANN)
    gallery.close()
    photos = sorted((demo_data() / "enrol").glob("*.jpg"))  # someone else's face, under Ann's name
    assert cli.main(["enroll", "Ann", "--state-dir", str(state), "--images", *map(str, photos)]) == 2
    err = capsys.readouterr().err
    assert "'Ann' is already enrolled: pick another name or remove the old one (kiosk people remove Ann)" in err
    assert "UNIQUE" not in err
    gallery = shipped_model_gallery(state)
    assert [(p.name, p.embeddings) for p in gallery.people()] == [("Ann", 1)]
    gallery.close()


def event_kinds(state: Path, capsys, *args: str) -> list[str]:
    """The kinds of the events ``kiosk events ARGS`` lists, in its order (each line: date time kind ...)."""
    assert cli.main(["events", "--state-dir", str(state), *args]) == 0
    return [line.split()[2] for line in capsys.readouterr().out.splitlines()]


def test_events_lists_the_log_oldest_first_and_since_and_limit_narrow_it(tmp_path, capsys):
    state = tmp_path / "state"
    now = time.time()
    gallery = shipped_model_gallery(state)
    gallery.add_person("Ann", ANN)  # an 'enrolled' event, now
    gallery.log_event("granted", "Ann", 0.912, when=now - 3 * 86400)
    gallery.log_event("denied", None, 0.2, detail="stranger at the door", when=now - 2 * 3600)
    gallery.log_event("spoof", None, None, detail="a photo", when=now - 600)
    gallery.close()
    assert cli.main(["events", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:5] for line in lines[:2]] == [["granted", "Ann", "0.912"], ["denied", "-", "0.200"]]
    assert lines[0].startswith(datetime.datetime.fromtimestamp(now - 3 * 86400).strftime("%Y-%m-%d %H:%M"))
    assert lines[1].endswith("stranger at the door") and lines[2].endswith("a photo")
    assert [line.split()[2] for line in lines] == ["granted", "denied", "spoof", "enrolled"]
    assert event_kinds(state, capsys, "--since", "1d") == ["denied", "spoof", "enrolled"]
    assert event_kinds(state, capsys, "--since", "30m") == ["spoof", "enrolled"]
    since = datetime.datetime.fromtimestamp(now - 4 * 3600).isoformat(timespec="minutes")
    assert event_kinds(state, capsys, "--since", since) == ["denied", "spoof", "enrolled"]
    assert event_kinds(state, capsys, "--limit", "1") == ["enrolled"]
    assert event_kinds(state, capsys, "--since", "7d", "--limit", "3") == ["denied", "spoof", "enrolled"]
    with pytest.raises(SystemExit):
        cli.main(["events", "--state-dir", str(state), "--since", "yesterday"])
    assert "--since takes e.g. 30m, 12h, 7d or 2026-11-28T08:00, not 'yesterday'" in capsys.readouterr().err


# Enrolment at the camera -------------------------------------------------------------------------


def camera_config(tmp_path: Path, frames: list[Path]) -> Path:
    """A config whose camera is a folder holding ``frames``; liveness is off (the frames are photos on disk)."""
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, path in enumerate(frames):
        (folder / f"{i:03d}.jpg").write_bytes(path.read_bytes())
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[camera]\nsource = "{folder}"\n[liveness]\nmode = "off"\n'
                      f'[enrollment]\nframes = 3\nmin_face_pixels = 60\n[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    return config


def test_enroll_at_the_camera_stores_one_face_track(tmp_path, capsys):
    live = sorted((FIXTURES / "liveness" / "live").glob("*.jpg"))  # one person turning their head a little
    config = camera_config(tmp_path, live * 3)
    assert cli.main(["enroll", "Alice", "--camera", "--role", "admin", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "look at the camera" in out and "enrolled 'Alice' as admin with 3 face embeddings" in out
    gallery = shipped_model_gallery(tmp_path / "state")
    assert [(p.name, p.role, p.embeddings) for p in gallery.people()] == [("Alice", "admin", 3)]
    gallery.close()


def test_enroll_at_the_camera_with_nobody_in_view_enrols_nobody(tmp_path, capsys):
    config = camera_config(tmp_path, [EMPTY_PORCH] * 5)
    assert cli.main(["enroll", "Alice", "--camera", "--config", str(config)]) == 2
    assert "kiosk enroll: error:" in capsys.readouterr().err
    gallery = shipped_model_gallery(tmp_path / "state")
    assert gallery.people() == []
    gallery.close()
