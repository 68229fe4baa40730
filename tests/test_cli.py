"""The command line's safety commands: relay-off after any crash, restore only while the service is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk import cli, gpio
from kiosk.demo import demo_data
from kiosk.encoder import ModelInfo
from kiosk.gallery import Gallery
from tests.conftest import MODELS

EMPTY_PORCH = demo_data() / "frames" / "empty_00.jpg"


@pytest.fixture
def pins(monkeypatch) -> MockFactory:
    """The mock pins every simulated command in this test uses (so the test can look at them afterwards)."""
    factory = MockFactory()
    monkeypatch.setattr(gpio, "make_pin_factory", lambda simulate: factory)
    return factory


@pytest.fixture
def keep_signal_handlers():
    """'kiosk run' installs SIGTERM/SIGINT handlers; put pytest's back afterwards."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


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
    gallery = Gallery(state / "gallery.sqlite3", ModelInfo.load(MODELS / "encoder.json").sha256)
    gallery.add_person("Ann", np.ones(128, np.float32) / np.sqrt(128))
    backup = gallery.backup(tmp_path / "backup.sqlite3")
    gallery.close()
    return backup


def test_restore_refuses_while_the_service_runs(tmp_path, capsys):
    from tests.test_deploy import start_kiosk

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
    from kiosk.config import Config

    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    held = cli._lock_service(config)  # what a running 'kiosk run' holds
    try:
        assert cli.main([*command, "--state-dir", config.storage.state_dir]) == 2
    finally:
        os.close(held)
    assert "stop it first (sudo systemctl stop kiosk)" in capsys.readouterr().err
