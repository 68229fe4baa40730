"""TOML configuration: defaults, and errors that name the bad key."""

from __future__ import annotations

import pytest

from kiosk.config import Config, load_config
from kiosk.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    return path


def test_no_file_and_empty_file_mean_defaults(tmp_path):
    assert load_config(None) == Config()
    assert load_config(write(tmp_path, "")) == Config()


def test_values_are_read(tmp_path):
    config = load_config(write(tmp_path, '[camera]\nsource = 0\n[decision]\nk = 2\nn = 4\nunlock_seconds = 3\n[gpio]\nrelay_active_high = true\n'))
    assert config.camera.source == "0" and config.decision.k == 2 and config.decision.unlock_seconds == 3.0
    assert config.gpio.relay_active_high is True


@pytest.mark.parametrize(
    "text, names",
    [
        ("[camera]\nsorce = 'picamera'\n", "camera.sorce"),
        ("[cameras]\nsource = 'x'\n", "[cameras]"),
        ("[decision]\nk = 'three'\n", "decision.k"),
        ("[decision]\nk = 6\nn = 5\n", "decision.k"),
        ("[decision]\nunlock_seconds = -1\n", "decision.unlock_seconds"),
        ("[gpio]\nrelay_pin = 99\n", "gpio.relay_pin"),
        ("[gpio]\nrelay_active_high = 'yes'\n", "gpio.relay_active_high"),
        ("[detector]\nrotations = 'all'\n", "detector.rotations"),
        ("camera = 3\n", "[camera]"),
        ("[camera\nsource = 1", "not valid TOML"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, text, names):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert names in str(error.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_sample_config_in_deploy_is_valid():
    from pathlib import Path

    sample = Path(__file__).resolve().parent.parent / "deploy" / "kiosk.toml"
    config = load_config(sample)
    assert config == Config()


@pytest.mark.parametrize(
    "text, names",
    [
        ("[decision]\nlockout_minutes = inf\n", "decision.lockout_minutes must be a finite number"),
        ("[decision]\nunlock_seconds = nan\n", "decision.unlock_seconds must be a finite number"),
        ("[recognition]\nthreshold = -inf\n", "recognition.threshold must be a finite number"),
        ("[decision]\nk = 99999999999999999999\n", "decision.k"),
        ('[storage]\nstate_dir = "/var/lib/kiosk\\u0000/etc"\n', "storage.state_dir must not contain control characters"),
        ('[camera]\nsource = "rtsp://x\\nInjected: header"\n', "camera.source must not contain control characters"),
        ("[camera.deep.deeper]\nx = 1\n", "camera.deep"),
        ("[camera]\nsource = 1\nsource = 2\n", "not valid TOML"),
        ("[[camera]]\nsource = 1\n", "[camera] must be a table"),
        ("[decision]\nk = [1, 2]\n", "decision.k must be a whole number"),
    ],
)
def test_hostile_configs_are_refused_with_the_key_named(tmp_path, text, names):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert names in str(error.value)


def test_binary_and_enormous_config_files_are_clear_errors(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(path)
    path.write_text("# padding\n" * 200_000 + "[camera]\nsorce = 1\n")  # 2 MB of comments, then a typo
    with pytest.raises(ConfigError, match="camera.sorce"):
        load_config(path)


def test_recognition_settings_for_the_false_accept_rate(tmp_path):
    assert (Config().recognition.false_accept_rate, Config().recognition.threshold) == (1e-4, 0.0)
    assert Config().recognition.allow_threshold_below_model is False
    config = load_config(write(tmp_path, "[recognition]\nfalse_accept_rate = 1e-6\nthreshold = 0.6\n"
                                         "allow_threshold_below_model = true\n"))
    assert (config.recognition.false_accept_rate, config.recognition.threshold) == (1e-6, 0.6)
    assert config.recognition.allow_threshold_below_model is True


@pytest.mark.parametrize(
    "text, names",
    [
        ("[recognition]\nfalse_accept_rate = 0.5\n",
         "recognition.false_accept_rate has an out-of-range value 0.5 (allowed: 1e-07 to 0.01)"),
        ("[recognition]\nfalse_accept_rate = 1e-9\n", "recognition.false_accept_rate"),
        ("[recognition]\nfalse_accept_rate = 0\n", "recognition.false_accept_rate"),
        ("[recognition]\nthreshold = 1.0\n", "recognition.threshold"),
        ("[recognition]\nallow_threshold_below_model = 1\n", "recognition.allow_threshold_below_model must be true or false"),
        ("[decision]\nlockout_minutes = 0.1\n", "decision.lockout_minutes has an out-of-range value 0.1 (allowed: 0.5 to 1440)"),
        ("[decision]\nlockout_minutes = 100000\n", "decision.lockout_minutes"),
        ("[decision]\nlockout_window_minutes = 0.5\n", "decision.lockout_window_minutes"),
        ("[decision]\nlockout_window_minutes = 2000\n", "decision.lockout_window_minutes"),
        ("[decision]\nmax_denied = 0\n", "decision.max_denied"),
        ("[decision]\nmax_denied = 51\n", "decision.max_denied"),
        ("[decision]\nrearm_seconds = 0.01\n", "decision.rearm_seconds"),
        ("[decision]\nrearm_seconds = 61\n", "decision.rearm_seconds"),
        ("[decision]\nwindow_seconds = 0.05\n", "decision.window_seconds"),
        ("[decision]\nwindow_seconds = 11\n", "decision.window_seconds"),
        ("[decision]\nk = 0\n", "decision.k"),
        ("[decision]\nk = 1\nn = 5\n", "decision.k (1) must be at least half of decision.n (5)"),
        ("[decision]\nn = 101\nk = 60\n", "decision.n"),
        ("[gpio]\nled_pin = 17\n", "gpio.relay_pin (17), gpio.led_pin (17) and gpio.button_pin (22) must be three different"),
    ],
)
def test_thresholds_lockouts_and_pins_are_bounded(tmp_path, text, names):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert names in str(error.value)


def test_bounds_are_inclusive(tmp_path):
    config = load_config(write(tmp_path, "[recognition]\nfalse_accept_rate = 1e-7\n[decision]\nlockout_minutes = 1440\n"
                                         "lockout_window_minutes = 1\nmax_denied = 50\nrearm_seconds = 0.1\nwindow_seconds = 10\n"
                                         "k = 2\nn = 4\n"))
    assert (config.recognition.false_accept_rate, config.decision.lockout_minutes, config.decision.max_denied) == (1e-7, 1440, 50)


def test_sample_config_lists_every_key():
    import dataclasses
    import tomllib
    from pathlib import Path

    sample = tomllib.loads((Path(__file__).resolve().parent.parent / "deploy" / "kiosk.toml").read_text())
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(sample[section.name]) == keys, section.name


def test_state_files_live_in_the_state_folder(tmp_path):
    config = load_config(write(tmp_path, f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'))
    assert config.database == tmp_path / "state" / "gallery.sqlite3"
    assert config.relay_record == tmp_path / "state" / "relay.json"
    assert config.service_lock == tmp_path / "state" / "kiosk.lock"
