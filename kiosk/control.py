"""The one way into the running door for its neighbours: the local API, the web page, Home Assistant.

The frame loop owns the camera, the pins and the decision, and no other thread
touches them. :class:`DoorControl` connects the two sides without making the
door wait for anyone:

- other threads queue orders (:meth:`DoorControl.ask`); the loop carries them
  out between two frames (:meth:`DoorControl.serve`) and hands back the result;
- after every frame the loop publishes a :class:`DoorStatus` (an immutable
  snapshot any thread may read) and gives the frame's events to each
  :class:`EventListener`. A listener's queue is bounded: one that falls behind
  loses its oldest events and counts them, but never slows the door.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kiosk.decision import Event
from kiosk.errors import ApiError, DoorNotAnswering, GalleryError
from kiosk.gallery import EventRecord

if TYPE_CHECKING:
    from kiosk.door import Door, FrameReport
    from kiosk.enroll import ButtonEnrollment

ORDER_TIMEOUT_SECONDS = 10.0
"""How long an order waits for the frame loop to take it (a frame takes well under a second)."""
LISTENER_EVENTS_KEPT = 1000
"""Events a listener's queue holds before it drops the oldest."""


@dataclass(frozen=True)
class DoorStatus:
    """What the door is doing, as of its last frame (for ``kiosk status``, the web page and Home Assistant)."""

    time: float
    relay_on: bool
    led: str
    camera_up: bool
    camera_error: str
    fps: float
    frames: int
    faces: int
    people: int
    threshold: float
    expected_far: float
    locked_out_until: float | None
    enrolling: str | None
    last_event: EventRecord | None
    liveness_threshold: float | None = None  # None: liveness off; below the shipped one when fitted to this camera

    @property
    def locked_out(self) -> bool:
        return self.locked_out_until is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DoorStatus:
        last = data.get("last_event")
        return cls(**{**data, "last_event": EventRecord(**last) if last else None})

    def summary(self) -> str:
        """One line for people: lock state, camera, speed, lockout and the last decision."""
        lock = "UNLOCKED" if self.relay_on else "locked"
        camera = f"camera {'up' if self.camera_up else 'DOWN: ' + self.camera_error}"
        lockout = ""
        if self.locked_out_until is not None:
            lockout = f", LOCKED OUT until {time.strftime('%H:%M:%S', time.localtime(self.locked_out_until))}"
        last = "none"
        if self.last_event is not None:
            event = self.last_event
            last = f"{event.kind} {event.person or ''}".strip()
            last += f" at {time.strftime('%H:%M:%S', time.localtime(event.time))}"
        enrolling = f", enrolling: {self.enrolling}" if self.enrolling else ""
        liveness = "" if self.liveness_threshold is None else f", liveness threshold {self.liveness_threshold:.2f}"
        return (f"door {lock}, {camera}, {self.fps:.1f} fps, {self.people} people enrolled{lockout}{enrolling}, "
                f"last decision: {last}, threshold {self.threshold:.3f}{liveness}")


class EventListener:
    """A bounded queue of the door's events for one consumer (a web page, the MQTT bridge)."""

    def __init__(self, size: int = LISTENER_EVENTS_KEPT) -> None:
        self._events: deque[EventRecord] = deque(maxlen=size)
        self._ready = threading.Condition()
        self.dropped = 0
        """Events lost because this listener fell behind."""

    def put(self, events: list[EventRecord]) -> None:
        with self._ready:
            for event in events:
                if len(self._events) == self._events.maxlen:
                    self.dropped += 1
                self._events.append(event)
            self._ready.notify_all()

    def get(self, timeout: float | None = None) -> list[EventRecord]:
        """The events since the last call, waiting up to ``timeout`` seconds for one."""
        with self._ready:
            if not self._events:
                self._ready.wait(timeout)
            events = list(self._events)
            self._events.clear()
            return events


@dataclass
class _Order:
    action: Callable[[Door], Any]
    future: concurrent.futures.Future


class DoorControl:
    """Orders to the frame loop, its status and its events (see the module docstring)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock
        self._orders: queue.SimpleQueue[_Order] = queue.SimpleQueue()
        self._listeners: list[EventListener] = []
        self._listeners_lock = threading.Lock()
        self.status: DoorStatus | None = None
        """The snapshot after the last frame; None until the door has read one."""
        self.notes: dict[str, Callable[[], str]] = {}
        """What the door's neighbours add to the service's status line (e.g. the MQTT connection), by name."""
        self._last_frame: float | None = None
        self._fps = 0.0
        self._last_event: EventRecord | None = None
        self._pending: list[Event] = []
        """Events the door logged since the last frame was published (the loop's thread only)."""

    # Other threads ----------------------------------------------------------------------------

    def ask(self, action: Callable[[Door], Any], timeout: float = ORDER_TIMEOUT_SECONDS) -> Any:
        """Run ``action(door)`` on the frame loop between two frames and return its result (or raise its error)."""
        order = _Order(action, concurrent.futures.Future())
        self._orders.put(order)
        try:
            return order.future.result(timeout)
        except concurrent.futures.TimeoutError as error:
            if order.future.cancel():
                raise DoorNotAnswering(f"the door did not take the order within {timeout:g} s (is it stopping, or is "
                                       "the camera stuck? see: systemctl status kiosk)") from error
            return order.future.result()  # taken just now: wait for it

    def listen(self, size: int = LISTENER_EVENTS_KEPT) -> EventListener:
        """A new listener that gets every event from now on (until :meth:`stop_listening`)."""
        listener = EventListener(size)
        with self._listeners_lock:
            self._listeners.append(listener)
        return listener

    def stop_listening(self, listener: EventListener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # The frame loop ---------------------------------------------------------------------------

    def serve(self, door: Door, report: FrameReport | None = None) -> None:
        """Carry out the queued orders, then publish the status and this frame's events (the loop's thread only).

        An order that fails hands its exception to whoever asked; the door goes on.
        """
        while True:
            try:
                order = self._orders.get_nowait()
            except queue.Empty:
                break
            if not order.future.set_running_or_notify_cancel():
                continue  # its asker gave up
            try:
                order.future.set_result(order.action(door))
            except Exception as error:  # noqa: BLE001 - the asker gets it; the door must go on
                order.future.set_exception(error)
        self._publish(door, report)

    def _publish(self, door: Door, report: FrameReport | None) -> None:
        if door.event_sink != self._collect:
            door.event_sink = self._collect
        wall = self.wall_clock()
        events = [EventRecord(wall, e.kind, e.person, e.score, e.detail) for e in self._pending]
        self._pending.clear()
        if events:
            self._last_event = events[-1]
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener.put(events)
        if report is not None:
            if self._last_frame is not None and report.time > self._last_frame:
                rate = 1.0 / (report.time - self._last_frame)
                self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
            self._last_frame = report.time
        decision = door.decision
        locked_out = None if decision.locked_out_until is None else wall + decision.locked_out_until - door.clock()
        threshold = door.door_threshold
        camera_up = report.camera_up if report else True
        self.status = DoorStatus(
            time=wall, relay_on=door.hardware.relay_on, led=door.hardware.pattern.value if door.hardware.pattern else "",
            camera_up=camera_up, camera_error="" if camera_up else str(door.camera.last_error),
            fps=self._fps, frames=door.frames, faces=report.faces if report else 0, people=door.people_enrolled, threshold=door.threshold,
            expected_far=threshold.expected_far if threshold else 0.0, locked_out_until=locked_out,
            enrolling=door.enrollment.phase.value if door.enrollment else None, last_event=self._last_event,
            liveness_threshold=door.liveness_threshold)

    def _collect(self, event: Event) -> None:
        self._pending.append(event)


def enrol_at_camera(name: str, role: str | None, who: str) -> Callable[[Door], ButtonEnrollment]:
    """The order that starts a trusted enrolment of ``name`` at the door's camera (from the API or the web page).

    Refused while the door already enrols someone, or when the name is taken
    (the door would fail only after the capture). Logged with ``who``.
    """
    if not name or any(ord(c) < 32 for c in name) or len(name) > 100:
        raise ApiError("a person's name is 1 to 100 printable characters")
    if role not in (None, "admin", "user"):
        raise ApiError(f"role must be admin or user, not {role!r}")

    def start(door: Door) -> ButtonEnrollment:
        if door.enrollment is not None:
            raise ApiError(f"the door is already enrolling ({door.enrollment.phase.value}): wait for it to finish")
        if name in {person.name for person in door.gallery.people()}:
            raise GalleryError(f"{name!r} is already enrolled: pick another name or remove them first")
        door.log_admin(f"enrolment of {name!r} at the camera started by {who}")
        return door.start_enrollment(door.clock(), name=name, role=role, trusted=True)

    return start
