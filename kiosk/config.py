"""Configuration: a TOML file (``/etc/kiosk/kiosk.toml`` on a Pi) over built-in defaults.

Every setting has a default, so an empty file (or none) is a working door.
An unknown section or key, or a value of the wrong type or out of range, is
an error that names it: a typo must never silently fall back to a default
on a security device. ``deploy/kiosk.toml`` is the commented sample.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.camera import CAMERA_BACKENDS, CameraSettings
from kiosk.decision import DecisionSettings
from kiosk.encoder import RUNTIMES
from kiosk.errors import ConfigError
from kiosk.face import DetectorSettings
from kiosk.gpio import PIN_FACTORIES, GpioSettings


@dataclass
class RecognitionConfig:
    model_dir: str = ""  # empty: the model shipped with face-kiosk
    runtime: str = "auto"  # TFLite runtime: "auto" (ai-edge-litert, else tflite-runtime), "ai-edge-litert" or "tflite-runtime"
    false_accept_rate: float = 1e-4  # strangers let in per attempt (1e-7 .. 1e-2); sets the automatic threshold
    threshold: float = 0.0  # 0: automatic (from false_accept_rate and the people enrolled); else a manual cosine in (0, 1)
    allow_threshold_below_model: bool = False  # a manual threshold below the automatic one is refused unless this is true
    margin: float = 0.05  # the best person must lead the second best by this much


@dataclass
class EnrollmentConfig:
    require_admin: bool = True  # an admin must be recognised before the button enrols someone new
    admin_timeout_seconds: float = 10.0
    capture_seconds: float = 10.0
    frames: int = 5  # good frames to store per person
    min_face_pixels: int = 90  # face box side in frame pixels
    min_sharpness: float = 40.0  # variance of the Laplacian of the face crop


@dataclass
class LivenessConfig:
    mode: str = "both"  # "off", "texture" (photo-texture CNNs) or "both" (the CNNs, and the face must move: recommended)
    # With liveness on, the door only considers faces at least this tall (fraction of the frame's shorter side):
    # a smaller face is too far away for the CNNs to judge (they see too little of a small print's paper).
    min_face_fraction: float = 0.25


@dataclass
class StorageConfig:
    state_dir: str = ""  # empty: /var/lib/kiosk if it exists (the Pi install makes it), else ~/.local/state/kiosk
    event_retention_days: float = 90.0
    snapshots: bool = False  # keep the 112x112 face crop of each event in <state_dir>/snapshots (off: only embeddings)


@dataclass
class ApiConfig:
    socket: str = ""  # the local API's Unix socket; empty: /run/kiosk/kiosk.sock under systemd, else <state_dir>/kiosk.sock


@dataclass
class WebConfig:
    enabled: bool = True  # serve the admin page once 'kiosk web-password' has set a password (never before)
    listen: str = "0.0.0.0"  # the address to listen on; "127.0.0.1" keeps the page on the Pi itself
    port: int = 8080
    tls_cert: str = ""  # PEM certificate and key for HTTPS; empty: plain HTTP, for a trusted home network only
    tls_key: str = ""
    remote_unlock: bool = False  # show an "open the door" button to the admin (logged with the address)
    session_hours: float = 12.0  # a login lasts this long


@dataclass
class MqttConfig:
    enabled: bool = False  # publish to Home Assistant over MQTT
    host: str = ""  # the broker, e.g. "homeassistant.local"
    port: int = 1883  # 8883 for TLS
    tls: bool = False
    ca_file: str = ""  # the broker's CA certificate (PEM) for TLS; empty: the system's CAs
    username: str = ""
    password: str = ""
    node_id: str = "face_kiosk"  # this door's id in topics and in Home Assistant (letters, digits, _ and -)
    name: str = "Front door"  # the device's name in Home Assistant
    discovery_prefix: str = "homeassistant"
    remote_unlock: bool = False  # Home Assistant's lock entity may open the door (logged); off: only LOCK is obeyed


@dataclass
class Config:
    camera: CameraSettings = field(default_factory=CameraSettings)
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)

    @property
    def state_dir(self) -> Path:
        """``storage.state_dir``, or the default folder when it is empty (:func:`default_state_dir`)."""
        return Path(self.storage.state_dir) if self.storage.state_dir else default_state_dir()

    @property
    def database(self) -> Path:
        return self.state_dir / "gallery.sqlite3"

    @property
    def snapshot_dir(self) -> Path:
        return self.state_dir / "snapshots"

    @property
    def thumbnail_dir(self) -> Path:
        """Thumbnails of the people who agreed to keep one (the web page's people list); nobody else's face is kept."""
        return self.state_dir / "thumbnails"

    @property
    def relay_record(self) -> Path:
        """Relay pin and polarity of the last good start, for ``kiosk relay-off`` when the config is broken."""
        return self.state_dir / "relay.json"

    @property
    def service_lock(self) -> Path:
        """Held by ``kiosk run`` while it runs; ``kiosk restore`` refuses while it is held."""
        return self.state_dir / "kiosk.lock"


    @property
    def web_password(self) -> Path:
        """The web admin's password hash (``kiosk web-password`` writes it; the page is off while it is missing)."""
        return self.state_dir / "web-password.json"

    @property
    def api_socket(self) -> Path:
        """``api.socket``, or systemd's runtime folder for the service (``RuntimeDirectory=kiosk``) when it exists,
        else the state folder."""
        if self.api.socket:
            return Path(self.api.socket)
        return (SERVICE_RUNTIME_DIR if SERVICE_RUNTIME_DIR.is_dir() else self.state_dir) / "kiosk.sock"


SERVICE_RUNTIME_DIR = Path("/run/kiosk")
"""The service's runtime folder (systemd makes it: ``RuntimeDirectory=kiosk``, mode 0750, group kiosk)."""
SERVICE_STATE_DIR = Path("/var/lib/kiosk")
"""The service's state folder; ``deploy/install.sh`` creates it, owned by the ``kiosk`` user."""


def default_state_dir() -> Path:
    """The service's folder where it exists (a Pi install), else a per-user folder (a desktop trying face-kiosk).

    The per-user folder follows the XDG base directory rule:
    ``$XDG_STATE_HOME/kiosk``, by default ``~/.local/state/kiosk``.
    """
    if SERVICE_STATE_DIR.is_dir():
        return SERVICE_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kiosk"


RANGES: dict[str, tuple[float, float]] = {
    "recognition.false_accept_rate": (1e-7, 1e-2),
    "decision.k": (1, 100),
    "decision.n": (1, 100),
    "decision.window_seconds": (0.1, 10),
    "decision.rearm_seconds": (0.1, 60),
    "decision.max_denied": (1, 50),
    "decision.lockout_window_minutes": (1, 1440),
    "decision.lockout_minutes": (0.5, 1440),
    "decision.liveness_wait_seconds": (1, 30),
    "decision.track_gap_seconds": (0.1, 5),
    "liveness.min_face_fraction": (0.1, 0.8),
    "web.port": (1, 65535),
    "web.session_hours": (0.1, 720),
    "mqtt.port": (1, 65535),
}
"""Keys bounded on both sides (inclusive); the error message names the range."""

CHECKS: dict[str, typing.Callable[[typing.Any], bool]] = {
    "camera.width": lambda v: 64 <= v <= 4096,
    "camera.height": lambda v: 64 <= v <= 4096,
    "camera.max_fps": lambda v: 0 < v <= 120,
    "detector.work_width": lambda v: 80 <= v <= 4096,
    "detector.scale_factor": lambda v: 1.01 <= v <= 2.0,
    "detector.min_neighbors": lambda v: 1 <= v <= 20,
    "detector.min_face_fraction": lambda v: 0.02 <= v <= 0.9,
    "detector.rotations": lambda v: all(-60 <= a <= 60 for a in v),
    "recognition.threshold": lambda v: 0 <= v < 1,
    "recognition.margin": lambda v: 0 <= v < 1,
    "decision.unlock_seconds": lambda v: 0 < v <= 60,
    "gpio.relay_pin": lambda v: 0 <= v <= 27,
    "gpio.led_pin": lambda v: 0 <= v <= 27,
    "gpio.button_pin": lambda v: 0 <= v <= 27,
    "enrollment.admin_timeout_seconds": lambda v: v > 0,
    "enrollment.capture_seconds": lambda v: v > 0,
    "enrollment.frames": lambda v: 1 <= v <= 50,
    "enrollment.min_face_pixels": lambda v: v >= 20,
    "enrollment.min_sharpness": lambda v: v >= 0,
    "storage.event_retention_days": lambda v: v > 0,
    "mqtt.node_id": lambda v: bool(v) and all(c.isascii() and (c.isalnum() or c in "_-") for c in v),
    "mqtt.discovery_prefix": lambda v: bool(v) and not any(c in v for c in "#+ "),
}


CHOICES: dict[str, tuple[str, ...]] = {
    "camera.backend": ("auto", *CAMERA_BACKENDS),
    "recognition.runtime": ("auto", *RUNTIMES),
    "gpio.pin_factory": PIN_FACTORIES,
    "liveness.mode": ("off", "texture", "both"),
}
"""Text keys with a fixed set of values; the error message lists them."""


def _coerce(key: str, value: typing.Any, kind: typing.Any) -> typing.Any:
    origin = typing.get_origin(kind)
    if origin is tuple:  # tuple[X, ...]: a TOML list
        item = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key} must be a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
        return float(value)
    if kind is str:
        if isinstance(value, int) and not isinstance(value, bool) and key == "camera.source":
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"config key {key} must be text, got {value!r}")
        if any(ord(c) < 32 for c in value):
            raise ConfigError(f"config key {key} must not contain control characters, got {value!r}")
        return value
    raise ConfigError(f"config key {key}: unsupported type")  # pragma: no cover - programming error


def from_dict(data: dict) -> Config:
    """Build a :class:`Config` from parsed TOML, validating every key."""
    config = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{section}] must be a table of key = value lines")
        target = getattr(config, section)
        hints = typing.get_type_hints(type(target), vars(sys.modules[type(target).__module__]))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"unknown config key {section}.{key} (known in [{section}]: {', '.join(hints)})")
            full = f"{section}.{key}"
            coerced = _coerce(full, value, hints[key])
            if full in RANGES and not RANGES[full][0] <= coerced <= RANGES[full][1]:
                low, high = RANGES[full]
                raise ConfigError(f"config key {full} has an out-of-range value {value!r} (allowed: {low:g} to {high:g})")
            if full in CHOICES and coerced not in CHOICES[full]:
                raise ConfigError(f"config key {full} has an unknown value {value!r} (choose one of: {', '.join(CHOICES[full])})")
            check = CHECKS.get(full)
            if check is not None and not check(coerced):
                raise ConfigError(f"config key {full} has an out-of-range value {value!r}")
            setattr(target, key, coerced)
    decision = config.decision
    if decision.k > decision.n:
        raise ConfigError(f"config key decision.k ({decision.k}) must not exceed decision.n ({decision.n})")
    if 2 * decision.k < decision.n:
        raise ConfigError(f"config key decision.k ({decision.k}) must be at least half of decision.n ({decision.n}): "
                          "the door opens only when most recent frames agree")
    if config.mqtt.enabled and not config.mqtt.host:
        raise ConfigError("config key mqtt.host is empty but mqtt.enabled is true: name the MQTT broker (e.g. "
                          "\"homeassistant.local\")")
    gpio = config.gpio
    if len({gpio.relay_pin, gpio.led_pin, gpio.button_pin}) < 3:
        raise ConfigError(f"config keys gpio.relay_pin ({gpio.relay_pin}), gpio.led_pin ({gpio.led_pin}) and "
                          f"gpio.button_pin ({gpio.button_pin}) must be three different pins")
    return config


def load_config(path: Path | None) -> Config:
    """Read a TOML config file; None means all defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    try:
        return from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
