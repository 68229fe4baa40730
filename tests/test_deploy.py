"""The systemd unit, the installer, and ``kiosk run`` speaking the notify protocol."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiosk.demo import demo_data
from tests.conftest import NotifySocket, start_kiosk

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "kiosk.service"
INSTALLER = ROOT / "deploy" / "install.sh"


def unit_settings() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_key_settings():
    unit = unit_settings()
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0
    assert service["User"] == "kiosk" and set(service["SupplementaryGroups"].split()) == {"gpio", "video"}
    assert service["StateDirectory"] == "kiosk" and "/etc/kiosk/kiosk.toml" in service["ExecStart"]
    assert "relay-off" in service["ExecStopPost"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    kiosk = Path(sys.executable).with_name("kiosk")
    unit = tmp_path / "kiosk.service"
    unit.write_text(UNIT.read_text().replace("/opt/face-kiosk/.venv/bin/kiosk", str(kiosk)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_no_installer_function_shadows_a_command():
    """A function named like a command a step runs is called instead: ``install()`` made ``step install -m ...``
    run the whole installer again, for ever (a dry run only prints the step; deploy/test-arm64.sh found it)."""
    functions = re.findall(r"^(\w+)\(\) \{", INSTALLER.read_text(), re.MULTILINE)
    assert "need_root" in functions
    assert [name for name in functions if shutil.which(name)] == []


def test_installer_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    done = subprocess.run([shellcheck, str(INSTALLER), str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("args, expected, absent", [
    ([], ["apt-get install", "python3-picamera2", "python3-lgpio", "venv --system-site-packages",
          "usermod -a -G gpio,video kiosk", "systemctl enable kiosk.service"], ["rm -rf /var/lib/kiosk"]),
    (["--uninstall"], ["rm -f /etc/systemd/system/kiosk.service", "rm -rf /opt/face-kiosk", "would keep the gallery"],
     ["rm -rf /var/lib/kiosk", "kept the gallery"]),
    (["--uninstall", "--purge"], ["rm -rf /var/lib/kiosk /etc/kiosk"], []),
])
def test_installer_dry_run_prints_every_step_and_changes_nothing(args, expected, absent):
    done = subprocess.run(["bash", str(INSTALLER), "--dry-run", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout
    for text in absent:
        assert text not in done.stdout
    assert "is installed" not in done.stdout
    assert done.stdout.splitlines()[-1].startswith("dry run: nothing was changed"), done.stdout
    assert not Path("/opt/face-kiosk").exists() and not Path("/etc/systemd/system/kiosk.service").exists()


def test_installer_rejects_unknown_options():
    done = subprocess.run(["bash", str(INSTALLER), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option" in done.stderr


def test_run_notifies_ready_watchdog_status_and_stops_cleanly_on_sigterm(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    source = demo_data() / "frames" / "empty_00.jpg"
    for i in range(400):  # about 27 s at 15 fps: longer than the test
        (frames / f"{i:04d}.jpg").write_bytes(source.read_bytes())
    process, notify = start_kiosk(tmp_path, frames)
    try:
        notify.collect(60, until=lambda n: n.count("STATUS=") >= 2 and n.count("WATCHDOG=1") >= 5)
        assert notify.count("READY=1") == 1
        assert notify.count("WATCHDOG=1") >= 5
        statuses = [m for _, m in notify.messages if m.startswith("STATUS=")]
        assert any("fps" in s and "people enrolled" in s and "last decision: none" in s and "threshold" in s
                   and "expected strangers let in" in s for s in statuses), statuses
        ready_at = next(t for t, m in notify.messages if "READY=1" in m)
        assert all(t >= ready_at for t, m in notify.messages if m == "WATCHDOG=1")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM received; relay off" in output
    notify.collect(0.5)
    assert notify.count("STOPPING=1") == 1


def test_a_stalled_camera_stops_the_watchdog_pings(tmp_path):
    """A camera that hangs inside read() (here: a FIFO nobody writes to after the first frames)."""
    fifo = tmp_path / "stream.mjpeg"
    os.mkfifo(fifo)
    notify = NotifySocket(tmp_path / "notify.sock")
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[camera]\nsource = "{fifo}"\n[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    process = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--simulate", "--config", str(config)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The first open sees an empty stream; the reconnect then blocks in open() for good. Wait for the reader
        # without blocking, so a 'kiosk run' that died at start fails this test instead of hanging it.
        deadline = time.monotonic() + 60
        while True:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                break
            except OSError:  # ENXIO: nobody has the FIFO open for reading yet
                assert process.poll() is None, "kiosk run exited before it opened the camera"
                assert time.monotonic() < deadline, "kiosk run never opened the camera"
                time.sleep(0.05)
        stalled_from = time.monotonic() + 2.0
        notify.collect(7)
    finally:
        process.kill()
        process.wait()
    assert notify.count("READY=1") == 0
    assert not [m for t, m in notify.messages if m == "WATCHDOG=1" and t > stalled_from], "pings must stop while the camera hangs"


def test_selftest_passes_on_simulated_hardware_and_fails_on_a_missing_camera(tmp_path, capsys):
    from kiosk import cli

    frames = str(demo_data() / "frames")
    state = str(tmp_path / "state")
    assert cli.main(["selftest", "--simulate", "--state-dir", state, "--camera", frames, "--relay", "--button"]) == 0
    out = capsys.readouterr().out
    for name in ("model", "database", "camera", "face detection", "led", "relay", "button"):
        assert any(line.startswith("PASS") and name in line for line in out.splitlines()), (name, out)
    assert cli.main(["selftest", "--simulate", "--state-dir", state, "--camera", str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  camera" in out and "FAILED: camera" in out
