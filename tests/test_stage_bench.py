"""``kiosk bench``: the door's stages timed on recorded frames, with the machine's temperature and throttling."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kiosk import stage_bench
from kiosk.cli import main
from kiosk.config import Config
from kiosk.demo import demo_data
from kiosk.images import read_image
from kiosk.service import lock_state_dir
from kiosk.stage_bench import BenchResult, DoorStages, SystemState, recorded_scene, run_bench


@pytest.fixture(scope="module")
def stages() -> DoorStages:
    return DoorStages(Config(), num_threads=1)


def face_frame() -> np.ndarray:
    return read_image(min((demo_data() / "frames").glob("*.jpg")))


def test_a_frame_with_a_face_goes_through_every_stage(stages):
    report = stages.run(face_frame(), 100.0)
    assert report.faces >= 1
    assert list(report.timings) == ["detect", "align", "encode", "liveness", "match", "decide"]
    assert all(ms >= 0 for ms in report.timings.values())


def test_a_frame_without_a_face_is_only_detected_and_decided(stages):
    report = stages.run(np.full((480, 640, 3), 127, np.uint8), 200.0)
    assert report.faces == 0
    assert list(report.timings) == ["detect", "decide"]


def test_liveness_off_skips_that_stage():
    config = Config()
    config.liveness.mode = "off"
    report = DoorStages(config, num_threads=1).run(face_frame(), 0.0)
    assert "liveness" not in report.timings and "encode" in report.timings


def test_the_bench_times_each_stage_on_the_recorded_scene():
    result = run_bench(Config(), recorded_scene(), "the demo scene", count=6, warmup=1, num_threads=1)
    assert result.frames == 6 and 0 < result.frames_with_face <= 6
    assert set(result.stages) == set(stage_bench.STAGES)
    assert result.stages["capture"][2] == 6 and result.stages["encode"][2] == result.frames_with_face
    assert result.fps > 0 and result.total_with_face is not None
    text = result.report()
    assert all(stage in text for stage in stage_bench.STAGES)
    assert "frames per second" in text and result.machine["board"] in text


def fake_sys(tmp_path: Path) -> Path:
    zones = tmp_path / "class" / "thermal"
    for name, kind, milli in (("thermal_zone0", "acpitz", "30000"), ("thermal_zone1", "cpu-thermal", "51234")):
        (zones / name).mkdir(parents=True)
        (zones / name / "type").write_text(kind + "\n")
        (zones / name / "temp").write_text(milli + "\n")
    freq = tmp_path / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_cur_freq").write_text("1800000\n")
    return tmp_path


def test_temperature_is_the_cpu_zone_and_clock_in_mhz(tmp_path):
    root = fake_sys(tmp_path)
    assert stage_bench.cpu_temperature(root) == pytest.approx(51.234)
    assert stage_bench.cpu_clock_mhz(root) == 1800.0


def test_no_thermal_zones_or_cpufreq_reads_as_unknown(tmp_path):
    assert stage_bench.cpu_temperature(tmp_path) is None
    assert stage_bench.cpu_clock_mhz(tmp_path) is None


def test_throttling_flags_come_from_vcgencmd_on_a_pi(monkeypatch):
    monkeypatch.setattr(stage_bench.shutil, "which", lambda name: "/usr/bin/vcgencmd")
    def run(command, **kwargs):
        assert command == ["vcgencmd", "get_throttled"]
        return subprocess.CompletedProcess(command, 0, stdout="throttled=0x50005\n")
    value = stage_bench.throttled(run)
    assert value == 0x50005
    assert stage_bench.throttle_flags(value) == ["under-voltage now", "throttled now", "under-voltage since boot",
                                                 "throttled since boot"]


def test_off_a_pi_there_are_no_throttling_flags(monkeypatch):
    monkeypatch.setattr(stage_bench.shutil, "which", lambda name: None)
    assert stage_bench.throttled() is None


def test_a_throttled_run_says_its_figures_are_low():
    result = BenchResult("frames", 10, 10, 1.0, {"detect": (5.0, 6.0, 10)}, (20.0, 25.0), {"board": "Raspberry Pi 4"},
                         SystemState(45.0, 1800.0, 0), SystemState(81.5, 1000.0, 0x40004))
    text = result.report()
    assert "CPU 45.0 -> 81.5 C" in text and "clock 1800 -> 1000 MHz" in text and "0x0 -> 0x40004" in text
    assert "THROTTLED: throttled now, throttled since boot" in text


def test_kiosk_bench_prints_the_report_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--count", "4", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the demo's recorded scene" in printed and "frames per second" in printed
    assert "report" in printed.lower()
    saved = json.loads(out.read_text())
    assert saved["frames"] == 4 and "encode" in saved["stages"] and saved["fps"] > 0


def test_kiosk_bench_camera_reads_the_given_source(tmp_path, capsys):
    frames = demo_data() / "frames"
    assert main(["bench", "--camera", str(frames), "--state-dir", str(tmp_path), "--count", "3", "--threads", "1"]) == 0
    assert f"frames of the camera {str(frames)!r}" in capsys.readouterr().out


def test_kiosk_bench_camera_is_refused_while_the_door_runs(tmp_path, capsys):
    config = Config()
    config.storage.state_dir = str(tmp_path)
    held = lock_state_dir(config)
    try:
        assert main(["bench", "--camera", str(demo_data() / "frames"), "--state-dir", str(tmp_path), "--count", "2"]) == 2
    finally:
        os.close(held)
    assert "stop it first (sudo systemctl stop kiosk)" in capsys.readouterr().err
