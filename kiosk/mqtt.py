"""Home Assistant over MQTT: the door as one device, found by MQTT discovery (``[mqtt]``, off by default).

Entities (discovery configs retained under ``<discovery_prefix>/<component>/<node_id>/...``):

- ``lock``: LOCKED / UNLOCKED from the relay. Its LOCK command ends an unlock;
  UNLOCK and OPEN open the door only when ``mqtt.remote_unlock`` is on, and each
  is an ``admin`` event in the log either way (obeyed or refused);
- ``event``: every decision (granted, denied, unknown, spoof) and each lockout,
  with the person, score and reason; published, never retained;
- ``sensor``: the last person let in; ``binary_sensor``: the lockout;
- ``image``: the last snapshot, when ``storage.snapshots`` is on.

Availability is ``online`` while the door runs and ``offline`` through the
broker's last will when it dies. Discovery is published again when Home
Assistant announces itself (``<discovery_prefix>/status`` = ``online``).

The door never waits for the broker: events reach the bridge through a bounded
:class:`kiosk.control.EventListener`, and paho-mqtt (2.x: Debian's apt package
is 1.6, with another callback API) reconnects with backoff in its own thread
and keeps a bounded queue of unsent messages; what is dropped is counted on the
service's status line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from kiosk.config import Config
from kiosk.control import DoorControl, DoorStatus
from kiosk.errors import ConfigError, FaceKioskError
from kiosk.gallery import EventRecord

EVENT_TYPES = ("granted", "denied", "unknown", "spoof", "lockout")
"""The ``event`` entity's types: the door's decisions and its lockouts."""
QUEUED_MESSAGES = 500
"""Unsent messages paho keeps while the broker is away; past that new ones are dropped (and counted)."""
RECONNECT_SECONDS = (1, 60)
"""paho's reconnect backoff: first and longest wait."""


class HomeAssistantBridge:
    """Publishes the running door to Home Assistant and takes its lock commands (see the module docstring)."""

    def __init__(self, config: Config, control: DoorControl,
                 client_factory: Callable[[str], paho.Client] | None = None) -> None:
        self.config = config
        self.settings = settings = config.mqtt
        self.control = control
        self.base = f"kiosk/{settings.node_id}"
        self.dropped = 0
        """Messages lost: the broker was away too long, or the bridge fell behind the door."""
        self.connected = False
        self._published: dict[str, Any] = {}
        self._last_snapshot: Path | None = None
        self._stop = threading.Event()
        self._listener = control.listen()
        client = self.client = (client_factory or _client)(f"face-kiosk-{settings.node_id}")
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if settings.tls:
            try:
                client.tls_set(ca_certs=settings.ca_file or None)
            except (OSError, ValueError) as error:
                raise ConfigError(f"mqtt.ca_file {settings.ca_file!r} cannot be used for TLS: {error}") from error
        client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        client.max_queued_messages_set(QUEUED_MESSAGES)
        client.reconnect_delay_set(*RECONNECT_SECONDS)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._thread = threading.Thread(target=self._publish_loop, name="kiosk-mqtt", daemon=True)

    def topic(self, name: str) -> str:
        return f"{self.base}/{name}"

    # Running ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (the door starts whether or not the broker answers)."""
        try:
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        except (OSError, ValueError) as error:
            raise FaceKioskError(f"MQTT broker {self.settings.host}:{self.settings.port} cannot be used: {error}") from error
        self.client.loop_start()
        self._thread.start()
        self.control.notes["mqtt"] = self.note

    def stop(self) -> None:
        """Say ``offline`` (retained), then disconnect."""
        self.control.notes.pop("mqtt", None)
        self._stop.set()
        self._thread.join(5)
        self.control.stop_listening(self._listener)
        if self.connected:
            self.client.publish(self.topic("availability"), "offline", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def note(self) -> str:
        """For the service's status line."""
        state = "connected" if self.connected else "DISCONNECTED (retrying)"
        return f"mqtt {state}, {self.dropped + self._listener.dropped} messages dropped"

    # paho's thread ----------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self.connected = False
            return
        self.connected = True
        client.subscribe([(self.topic("lock/set"), 1), (f"{self.settings.discovery_prefix}/status", 1)])
        self._announce()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.connected = False

    def _on_message(self, client, userdata, message) -> None:
        payload = message.payload.decode(errors="replace").strip()
        if message.topic == f"{self.settings.discovery_prefix}/status":
            if payload == "online":  # Home Assistant restarted: it forgot the device
                self._announce()
            return
        self._command(payload)

    def _command(self, payload: str) -> None:
        """LOCK, UNLOCK or OPEN from Home Assistant's lock entity."""
        who = f"Home Assistant over MQTT ({self.settings.host})"
        try:
            if payload == "LOCK":
                self.control.ask(lambda door: door.close_now(f"locked by {who}"))
            elif payload in ("UNLOCK", "OPEN") and self.settings.remote_unlock:
                seconds = self.config.decision.unlock_seconds
                self.control.ask(lambda door: door.open_for(seconds, f"remote unlock ({payload}) by {who}"))
            elif payload in ("UNLOCK", "OPEN"):
                self.control.ask(lambda door: door.log_admin(
                    f"remote unlock ({payload}) by {who} refused: mqtt.remote_unlock is off"))
        except FaceKioskError:
            pass  # the door is stopping or stuck: it stays locked, and the command is not obeyed
        self._published.pop("lock", None)  # the state may not have changed: say it again

    # Publishing -------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: str | bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1

    def _announce(self) -> None:
        """Availability, the discovery configs and the current states (all retained)."""
        for topic, config in self.discovery().items():
            self._publish(topic, json.dumps(config), retain=True)
        self._publish(self.topic("availability"), "online", retain=True)
        self._published.clear()

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant's MQTT discovery configs of this door, by topic."""
        node, prefix = self.settings.node_id, self.settings.discovery_prefix
        try:
            version = metadata.version("face-kiosk")
        except metadata.PackageNotFoundError:
            version = "unknown"
        common = {"availability_topic": self.topic("availability"),
                  "device": {"identifiers": [node], "name": self.settings.name, "manufacturer": "face-kiosk",
                             "model": "face-recognition door lock", "sw_version": version}}
        entities: dict[str, dict[str, Any]] = {
            f"{prefix}/lock/{node}/door/config": {
                "name": "Door", "unique_id": f"{node}_door", "state_topic": self.topic("lock"),
                "command_topic": self.topic("lock/set"), "payload_lock": "LOCK", "payload_unlock": "UNLOCK",
                "payload_open": "OPEN", "state_locked": "LOCKED", "state_unlocked": "UNLOCKED"},
            f"{prefix}/event/{node}/decision/config": {
                "name": "Decision", "unique_id": f"{node}_decision", "state_topic": self.topic("event"),
                "event_types": list(EVENT_TYPES)},
            f"{prefix}/sensor/{node}/last_person/config": {
                "name": "Last person", "unique_id": f"{node}_last_person", "state_topic": self.topic("last_person"),
                "icon": "mdi:account-check"},
            f"{prefix}/binary_sensor/{node}/lockout/config": {
                "name": "Lockout", "unique_id": f"{node}_lockout", "state_topic": self.topic("lockout"),
                "payload_on": "ON", "payload_off": "OFF", "device_class": "problem"},
        }
        if self.config.storage.snapshots:
            entities[f"{prefix}/image/{node}/snapshot/config"] = {
                "name": "Last face", "unique_id": f"{node}_snapshot", "image_topic": self.topic("snapshot"),
                "content_type": "image/jpeg"}
        return {topic: {**config, **common} for topic, config in entities.items()}

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            events = self._listener.get(timeout=0.5)
            try:
                self._publish_events(events)
                self._publish_states(self.control.status)
            except (OSError, ValueError):
                self.dropped += len(events)

    def _publish_events(self, events: list[EventRecord]) -> None:
        for event in events:
            if event.kind in EVENT_TYPES:
                payload = {"event_type": event.kind, "person": event.person, "detail": event.detail,
                           "score": None if event.score is None else round(event.score, 3),
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(event.time))}
                self._publish(self.topic("event"), json.dumps(payload), retain=False)
            if event.kind == "granted" and event.person:
                self._publish_state("last_person", event.person)
        if events and self.config.storage.snapshots:
            self._publish_snapshot()

    def _publish_states(self, status: DoorStatus | None) -> None:
        if status is None:
            return
        self._publish_state("lock", "UNLOCKED" if status.relay_on else "LOCKED")
        lockout = "ON" if status.locked_out else "OFF"
        if lockout == "ON" and self._published.get("lockout") == "OFF":
            until = time.strftime("%H:%M:%S", time.localtime(status.locked_out_until or 0))
            self._publish(self.topic("event"), json.dumps({"event_type": "lockout", "person": None, "score": None,
                                                           "detail": f"locked out until {until}"}), retain=False)
        self._publish_state("lockout", lockout)

    def _publish_state(self, name: str, value: str) -> None:
        """A retained state, published only when it changed."""
        if self._published.get(name) != value:
            self._published[name] = value
            self._publish(self.topic(name), value, retain=True)

    def _publish_snapshot(self) -> None:
        folder = self.config.snapshot_dir
        shots = sorted(folder.glob("*.jpg"), key=lambda path: path.stat().st_mtime) if folder.is_dir() else []
        if shots and shots[-1] != self._last_snapshot:
            self._last_snapshot = shots[-1]
            self._publish(self.topic("snapshot"), shots[-1].read_bytes(), retain=True)


def _client(client_id: str) -> paho.Client:
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
