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
