"""TOML configuration: defaults, and errors that name the bad key."""

from __future__ import annotations

import pytest

from kiosk.config import Config, ConfigError, load_config


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
