"""Home Assistant over MQTT: a real broker (amqtt, in-process), a running door (recorded frames, mock pins)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from kiosk.demo import demo_data

paho = pytest.importorskip("paho.mqtt.client")
amqtt_broker = pytest.importorskip("amqtt.broker", reason="amqtt is not installed (pip install -e '.[test]')")

from kiosk.mqtt import EVENT_TYPES, HomeAssistantBridge

pytestmark = pytest.mark.filterwarnings("ignore:.*BrokerSysPlugin.*:DeprecationWarning")  # amqtt's own, not ours

DATA = demo_data()
OWNER = sorted((DATA / "frames").glob("a1_*.jpg"))
EMPTY = DATA / "frames" / "empty_00.jpg"

# What Home Assistant's MQTT discovery requires of each component (homeassistant/components/mqtt/*.py schemas),
# and the keys this door may send; anything else would be rejected or ignored by Home Assistant.
REQUIRED = {"lock": {"command_topic"}, "event": {"state_topic", "event_types"}, "sensor": {"state_topic"},
            "binary_sensor": {"state_topic"}, "image": {"image_topic"}}
ALLOWED = {"name", "unique_id", "state_topic", "command_topic", "payload_lock", "payload_unlock", "payload_open",
           "state_locked", "state_unlocked", "event_types", "icon", "payload_on", "payload_off", "device_class",
           "image_topic", "content_type", "availability_topic", "device"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broker():
    """An MQTT broker on a free local port, in a thread of its own."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    async def serve():
        holder["broker"] = amqtt_broker.Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}})
        await holder["broker"].start()
        ready.set()

    thread = threading.Thread(target=lambda: (asyncio.set_event_loop(loop), loop.run_until_complete(serve()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(20), "the test broker did not start"
    yield port
    asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


class Listener:
    """A Home Assistant stand-in: subscribed to everything, keeps every message."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda client, userdata, m: self.messages.append((m.topic, m.payload, m.retain))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("#", qos=1)
        assert subscribed.wait(10)

    def last(self, topic: str) -> bytes | None:
        payloads = [payload for t, payload, _ in self.messages if t == topic]
        return payloads[-1] if payloads else None

    def wait(self, predicate, seconds: float = 20.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def home_assistant(broker):
    made: list[Listener] = []

    def make() -> Listener:
        made.append(Listener(broker))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def bridged(running, port: int, frames, **settings):
    def configure(config):
        config.mqtt.enabled, config.mqtt.host, config.mqtt.port = True, "127.0.0.1", port
        for key, value in settings.items():
            section, name = key.split("__")
            setattr(getattr(config, section), name, value)

    bridges: list[HomeAssistantBridge] = []

    def attach(door) -> None:  # before the first frame, so that no decision happens before the bridge listens
        bridges.append(HomeAssistantBridge(door.config, door.control))
        bridges[0].start()

    door = running(frames, configure, before_start=attach)
    return door, bridges[0]


def test_discovery_announces_one_device_with_its_entities(running, broker, home_assistant):
    ha = home_assistant()
    _door, bridge = bridged(running, broker, [EMPTY], storage__snapshots=True)
    try:
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/availability") == b"online")
        configs = {topic: json.loads(payload) for topic, payload, _ in ha.messages if topic.endswith("/config")}
        components = {topic.split("/")[1] for topic in configs}
        assert components == set(REQUIRED)
        for topic, config in configs.items():
            component = topic.split("/")[1]
            assert REQUIRED[component] <= set(config) and set(config) <= ALLOWED, (topic, config)
            assert config["availability_topic"] == "kiosk/face_kiosk/availability"
            assert config["device"]["identifiers"] == ["face_kiosk"] and config["unique_id"].startswith("face_kiosk_")
        assert configs["homeassistant/event/face_kiosk/decision/config"]["event_types"] == list(EVENT_TYPES)
        late = home_assistant()  # a Home Assistant that starts later still finds the device: the configs are retained
        assert late.wait(lambda: {t for t, _, retain in late.messages if retain and t.endswith("/config")} == set(configs))
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/lock") == b"LOCKED")
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/lockout") == b"OFF")  # published after the lock state
        count = len(configs)
        ha.publish("homeassistant/status", "online")  # Home Assistant restarted
        assert ha.wait(lambda: sum(t.endswith("/config") for t, _, _ in ha.messages) >= 2 * count)
        assert "mqtt connected, 0 messages dropped" == bridge.note()
    finally:
        bridge.stop()
    assert ha.wait(lambda: ha.last("kiosk/face_kiosk/availability") == b"offline")


def test_a_decision_is_an_event_and_the_states_follow(running, broker, home_assistant):
    ha = home_assistant()
    _door, bridge = bridged(running, broker, OWNER + [EMPTY] * 60, storage__snapshots=True)
    try:
        assert ha.wait(lambda: any(json.loads(p).get("event_type") == "granted"
                                   for t, p, _ in ha.messages if t == "kiosk/face_kiosk/event"))
        event = next(json.loads(p) for t, p, _ in ha.messages if t == "kiosk/face_kiosk/event")
        assert event["person"] == "owner" and event["score"] > 0.4 and event["time"]
        assert not any(retain for t, _, retain in ha.messages if t == "kiosk/face_kiosk/event")
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/last_person") == b"owner")
        assert ha.wait(lambda: b"UNLOCKED" in [p for t, p, _ in ha.messages if t == "kiosk/face_kiosk/lock"])
        assert ha.wait(lambda: (ha.last("kiosk/face_kiosk/snapshot") or b"")[:3] == b"\xff\xd8\xff")
    finally:
        bridge.stop()


def test_a_lockout_is_announced(running, broker, home_assistant):
    ha = home_assistant()
    door, bridge = bridged(running, broker, [EMPTY])
    try:
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/lockout") == b"OFF")
        door.control.ask(lambda d: setattr(d.decision, "locked_out_until", d.clock() + 300))
        assert ha.wait(lambda: ha.last("kiosk/face_kiosk/lockout") == b"ON")
        events = [json.loads(p) for t, p, _ in ha.messages if t == "kiosk/face_kiosk/event"]
        assert [e["event_type"] for e in events] == ["lockout"] and "locked out until" in events[0]["detail"]
    finally:
        bridge.stop()


def test_unlock_from_home_assistant_only_when_allowed_and_always_logged(running, broker, home_assistant):
    ha = home_assistant()
    door, bridge = bridged(running, broker, [EMPTY])
    try:
        assert ha.wait(lambda: bridge.connected and ha.last("kiosk/face_kiosk/lock") == b"LOCKED")
        ha.publish("kiosk/face_kiosk/lock/set", "OPEN")
        assert ha.wait(lambda: any("refused: mqtt.remote_unlock is off" in e.detail for e in door.events()))
        assert not door.ask("status")[0]["relay_on"]
    finally:
        bridge.stop()
    ha.messages.clear()  # the first bridge's (retained) state must not stand in for the second's
    door, bridge = bridged(running, broker, [EMPTY], mqtt__remote_unlock=True)
    try:
        # The bridge subscribes to lock/set before it publishes its state, and the broker handles one client's
        # packets in order: once its state arrives, a command reaches it (``connected`` alone comes before that).
        assert ha.wait(lambda: bridge.connected and ha.last("kiosk/face_kiosk/lock") == b"LOCKED")
        ha.publish("kiosk/face_kiosk/lock/set", "UNLOCK")
        assert ha.wait(lambda: door.ask("status")[0]["relay_on"])
        ha.publish("kiosk/face_kiosk/lock/set", "LOCK")
        assert ha.wait(lambda: not door.ask("status")[0]["relay_on"])
        log = [e.detail for e in door.events() if e.kind == "admin"]
        assert any("remote unlock (UNLOCK) by Home Assistant" in line for line in log)
        assert any("locked by Home Assistant" in line for line in log)
    finally:
        bridge.stop()


def test_the_door_keeps_deciding_while_the_broker_is_down(running):
    door, bridge = bridged(running, free_port(), OWNER + [EMPTY] * 60)  # nothing listens there
    try:
        deadline = time.monotonic() + 20
        while not any(e.kind == "granted" for e in door.events()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(e.kind == "granted" for e in door.events())
        assert bridge.note().startswith("mqtt DISCONNECTED (retrying)")
    finally:
        bridge.stop()


def test_the_status_line_carries_the_bridge_s_note(running):
    door = running([EMPTY])
    door.control.notes["mqtt"] = lambda: "mqtt connected, 3 messages dropped"
    from kiosk.service import DoorService

    line = DoorService(door.door, door.config, control=door.control).status_line(15.0, door_report())
    assert line.endswith("; mqtt connected, 3 messages dropped")


def door_report():
    from kiosk.door import FrameReport

    return FrameReport(0.0)
