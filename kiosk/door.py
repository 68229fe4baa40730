"""The door loop: camera -> detect -> encode -> match -> decide -> relay and LED.

:class:`Door` composes the modules and owns nothing else: one call of
:meth:`Door.process_frame` reads one frame and applies one decision. The
clock is injected (a fake clock in tests and the demo). Fail-secure: the
relay is switched off before anything else on an exception, on a lost
camera, on enrolment, and on :meth:`Door.close`; it is on only while the
decision says so.

The door also draws the boundaries of attempts (:mod:`kiosk.decision`): a
face that appears, jumps (:func:`kiosk.face.same_track`) or is recognised as
someone else starts a new attempt, a second face restarts it, and the
liveness check is reset with it, so its verdict is that one face track's. A
lockout is saved in the gallery (as wall-clock time) and survives a restart.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kiosk.camera import FrameSource
from kiosk.config import Config
from kiosk.decision import DoorDecision, Event, Led, Liveness, Observation, Step
from kiosk.enroll import ButtonEnrollment, door_live_scores
from kiosk.errors import ConfigError, EndOfStream, FaceKioskError, GalleryError
from kiosk.face import AttemptBoundary, Face, FaceTracker
from kiosk.gallery import Gallery, snapshot_name
from kiosk.gpio import DoorHardware
from kiosk.liveness import LivenessCheck, NoLivenessCheck
from kiosk.match import Match, match
from kiosk.openset import Cohort, DoorThreshold, door_threshold
from kiosk.pipeline import FacePipeline, without_refused

log = logging.getLogger(__name__)

UNSAVED_EVENTS_KEPT = 1000
"""Events kept in memory while the event log cannot be written (a full disk)."""
GRANTED_FRAMES_KEPT = 20_000
"""Digests of the face crops of granted attempts kept to recognise a replayed feed (about 20 minutes of frames)."""
LOCKOUT_STATE = "lockout"
"""The gallery state key of the saved lockout (wall-clock end and recent suspicious attempts)."""


@dataclass
class FrameReport:
    """What happened on one frame (for ``--stats``, the demo and tests)."""

    time: float
    faces: int = 0
    match: Match | None = None
    step: Step | None = None
    relay_on: bool = False
    led: Led = Led.IDLE
    camera_up: bool = True
    enrolling: str | None = None
    event: Event | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    events: tuple[Event, ...] = ()
    distant_faces: int = 0


class Door:
    """One door: call :meth:`process_frame` in a loop (or :meth:`step`)."""

    def __init__(self, config: Config, camera: FrameSource, pipeline: FacePipeline, gallery: Gallery,
                 hardware: DoorHardware, clock: Callable[[], float] = time.monotonic,
                 liveness: LivenessCheck | None = None,
                 wall_clock: Callable[[], datetime.datetime] = datetime.datetime.now) -> None:
        self.config = config
        self.camera = camera
        self.pipeline = pipeline
        self.gallery = gallery
        self.hardware = hardware
        self.clock = clock
        self.wall_clock = wall_clock
        """The door's local time, for schedules (``clock`` is monotonic, for the decision's intervals)."""
        self.liveness = liveness or NoLivenessCheck()
        self.tracker = FaceTracker(pipeline.finder)
        self.decision = DoorDecision(config.decision)
        self.enrollment: ButtonEnrollment | None = None
        self._button_was_pressed = False
        self._camera_was_up = True
        self.boundary = AttemptBoundary(self.decision.settings.track_gap_seconds, pipeline.encoder.threshold)
        self._saved_lockout: tuple[float | None, tuple[float, ...]] | None = None
        self.unsaved_events: deque[tuple[float, Event]] = deque(maxlen=UNSAVED_EVENTS_KEPT)
        """Events not yet written to the event log (the disk was full); retried with the next one."""
        self.frames = 0
        self.last_event: Event | None = None
        self.last_event_time = 0.0
        """The wall-clock time the last event was logged with (its snapshot is named after it)."""
        self.event_sink: Callable[[Event], None] | None = None
        """Called with every event the door logs (the service's :class:`kiosk.control.DoorControl`)."""
        self._damaged_reported: set[str] = set()
        self._attempt_frames: list[bytes] = []
        self._granted_frames: set[bytes] = set()
        self._granted_order: deque[bytes] = deque()
        self.door_threshold: DoorThreshold | None = None
        self.cohort = Cohort.load(pipeline.encoder.model_dir)
        self._thresholds_for: tuple[float, bytes] | None = None
        self._template_thresholds: np.ndarray | None = None
        self.liveness_threshold: float | None = None
        """The liveness check's threshold in use (None: liveness off), fitted to this camera by :meth:`_adapt_liveness`."""
        hardware.lock()
        hardware.show(Led.IDLE)
        self.reload_gallery()
        self._restore_lockout()

    # The loop ----------------------------------------------------------------------------------

    def step(self) -> FrameReport:
        """:meth:`process_frame`, surviving faults the door can recover from.

        A camera, GPIO or storage error (:class:`FaceKioskError`) becomes a
        report with ``error`` set: the relay is off, the LED shows ERROR and an
        ``error`` event is logged; the next call tries again. Anything else
        propagates, with the relay off.
        """
        try:
            return self.process_frame()
        except EndOfStream:
            raise
        except FaceKioskError as error:
            self.hardware.show(Led.ERROR)
            event = Event("error", None, None, str(error)[:500])
            self._record(event)
            return FrameReport(self.clock(), relay_on=self.hardware.relay_on, led=Led.ERROR, event=event, error=str(error),
                               events=(event,))

    def process_frame(self) -> FrameReport:
        """Read one frame and act on it. Any exception leaves the relay off and propagates."""
        try:
            return self._process_frame()
        except BaseException:
            self.hardware.lock()
            raise

    def _process_frame(self) -> FrameReport:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        frame = self.camera.read()
        timings["camera"] = _ms(start)
        now = self.clock()
        if frame is None:
            return self._camera_down(now, timings)
        if not self._camera_was_up:
            self._camera_was_up = True
        self.frames += 1
        self._check_button(now)

        start = time.perf_counter()
        faces, distant = self._close_enough(frame, self.tracker.find(frame))
        timings["detect"] = _ms(start)
        embedded = None
        if faces:
            start = time.perf_counter()
            embedded = self.pipeline.embed_faces(frame, faces)
            if embedded.usable:  # the tracker follows the face the door uses (perhaps not the largest box: no face)
                self.tracker.follow(embedded.face)
            if embedded.face is not faces[0]:
                faces = without_refused(faces, embedded)
            timings["encode"] = _ms(start)

        start = time.perf_counter()
        usable = embedded is not None and embedded.usable
        result = (match(embedded.embedding, self._templates, self.threshold, self.config.recognition.margin,
                        self._template_thresholds) if usable else None)
        timings["match"] = _ms(start)
        new_attempt, restart = self.boundary.update(now, faces, embedded.embedding if usable else None,
                                                    result.person if result else None)
        live = Liveness.OFF
        if faces:
            start = time.perf_counter()
            if new_attempt or restart:
                self.liveness.reset()
            live = self.liveness.check(frame, faces[0], now)
            timings["liveness"] = _ms(start)
        replayed = self._replay_check(embedded, new_attempt)
        obs = Observation(time=now, face=bool(faces), person=result.person if result else None,
                          score=result.score if result else None, others=max(0, len(faces) - 1), live=live,
                          candidate=result.best if result else None, runner_up=result.runner_up_name if result else None,
                          near_miss=bool(result and result.above(self.threshold)), new_attempt=new_attempt, restart=restart,
                          replayed=replayed, outside_schedule=bool(result and result.person and not self._allowed_now(result.person)),
                          live_score=self.liveness.score() if faces else None)
        if self.enrollment is not None:
            return self._enrolment_frame(obs, len(faces), embedded, frame, timings)

        start = time.perf_counter()
        step = self.decision.observe(obs)
        if any(event.kind == "granted" for event in step.events):
            self._remember_granted_frames()
        self._apply(step)
        timings["decide"] = _ms(start)
        if step.event is not None and embedded is not None and self.config.storage.snapshots:
            self._snapshot(step.event, embedded.crop)
        return FrameReport(now, len(faces), result, step, self.hardware.relay_on, self.hardware.pattern, True, None,
                           step.event, timings, events=step.events, distant_faces=distant)

    def _close_enough(self, frame: np.ndarray, faces: list[Face]) -> tuple[list[Face], int]:
        """(faces the liveness check can judge, how many were too far away): a face too small to judge is not an
        attempt (see :meth:`kiosk.liveness.LivenessChecker.close_enough`)."""
        close = [face for face in faces if self.liveness.close_enough(frame, face)]
        return close, len(faces) - len(close)

    def _allowed_now(self, person: str) -> bool:
        """Whether ``person``'s schedule lets them in at this moment of the door's local time."""
        schedule = self._schedules.get(person)
        return schedule is None or schedule.allows(self.wall_clock())

    def _replay_check(self, embedded, new_attempt: bool) -> bool:
        """Whether this frame's face crop is bit-identical to one of an earlier granted attempt (a replayed feed)."""
        if new_attempt:
            self._attempt_frames.clear()
        if embedded is None:
            return False
        digest = hashlib.blake2b(embedded.crop.tobytes(), digest_size=16).digest()
        self._attempt_frames.append(digest)
        return digest in self._granted_frames

    def _remember_granted_frames(self) -> None:
        """Keep the digests of a granted attempt's frames (the most recent ``GRANTED_FRAMES_KEPT``)."""
        for digest in self._attempt_frames:
            if digest not in self._granted_frames:
                if len(self._granted_order) == GRANTED_FRAMES_KEPT:
                    self._granted_frames.discard(self._granted_order.popleft())
                self._granted_order.append(digest)
                self._granted_frames.add(digest)
        self._attempt_frames.clear()

    def _apply(self, step: Step) -> None:
        if step.relay_on:
            self.hardware.unlock()
        else:
            self.hardware.lock()
        self.hardware.show(step.led)
        for event in step.events:
            self._record(event)
        self._save_lockout()

    def _record(self, event: Event) -> None:
        """Make ``event`` the last event and write it to the log; if the disk is full, keep it in memory.

        The door's decisions never wait on the event log: a full disk must not
        lock people out (nor let anyone in). Unsaved events are written, oldest
        first, as soon as a write succeeds again.
        """
        self._announce(event)
        self.last_event_time = self.gallery.clock()
        self.unsaved_events.append((self.last_event_time, event))
        try:
            while self.unsaved_events:
                when, pending = self.unsaved_events[0]
                self.gallery.log_event(pending.kind, pending.person, pending.score, pending.detail, when=when)
                self.unsaved_events.popleft()
        except GalleryError as error:
            log.error("event log not saved (%d event(s) waiting in memory): %s", len(self.unsaved_events), error)

    def _announce(self, event: Event) -> None:
        """Make ``event`` the last event and pass it to :attr:`event_sink` (the service's neighbours)."""
        self.last_event = event
        if self.event_sink is not None:
            self.event_sink(event)

    # Lockout across restarts ------------------------------------------------------------------

    def _save_lockout(self) -> None:
        """Save the lockout (and the suspicious attempts counting towards one) as wall-clock times, when they change."""
        decision = self.decision
        saved = (decision.locked_out_until, tuple(decision.suspicious))
        if saved == self._saved_lockout:
            return
        now, wall = self.clock(), self.gallery.clock()
        state = {"until": None if decision.locked_out_until is None else wall + decision.locked_out_until - now,
                 "suspicious": [wall - (now - t) for t in decision.suspicious]}
        try:
            self.gallery.save_state(LOCKOUT_STATE, json.dumps(state))
            self._saved_lockout = saved
        except GalleryError as error:
            log.error("lockout not saved (it holds until the service restarts): %s", error)

    def _restore_lockout(self) -> None:
        """Resume a lockout saved before a restart (a damaged record is logged and ignored, never an unlock)."""
        try:
            saved = self.gallery.load_state(LOCKOUT_STATE)
            state = json.loads(saved) if saved else {}
            until = None if state.get("until") is None else float(state["until"])
            suspicious = [float(t) for t in state.get("suspicious", [])]
        except (GalleryError, ValueError, TypeError, AttributeError) as error:
            log.error("saved lockout unreadable, ignored: %s", error)
            return
        now, wall = self.clock(), self.gallery.clock()
        window = self.decision.settings.lockout_window_seconds
        self.decision.suspicious.extend(now - (wall - t) for t in sorted(suspicious) if 0 <= wall - t <= window)
        if until is not None and until > wall:
            remaining = min(until - wall, self.decision.settings.lockout_seconds)
            self.decision.locked_out_until = now + remaining
            self.hardware.show(Led.LOCKED_OUT)
            log.warning("locked out for another %.0f s (saved before the restart)", remaining)

    # Snapshots and the camera -------------------------------------------------------------------

    def _snapshot(self, event: Event, crop: np.ndarray) -> None:
        """Keep the face crop of an event (only when ``storage.snapshots`` is on); a failed write is logged."""
        import cv2

        folder = self.config.snapshot_dir
        person_id = self.gallery.person(event.person).id if event.person else 0
        path = folder / snapshot_name(self.last_event_time, event.kind, person_id)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
                raise OSError(f"OpenCV could not write {path}")
            path.chmod(0o600)
        except (OSError, cv2.error) as error:
            path.unlink(missing_ok=True)
            log.error("snapshot not saved (is the disk full?): %s", error)

    def _camera_down(self, now: float, timings: dict[str, float]) -> FrameReport:
        step = self.decision.tick(now)
        if not step.relay_on:
            self.hardware.lock()
        self.hardware.show(Led.ERROR)
        self.boundary.forget()
        events = list(step.events)
        for event in events:
            self._record(event)
        if self._camera_was_up:
            self._camera_was_up = False
            events.append(Event("error", None, None, f"camera lost: {self.camera.last_error}"))
            self._record(events[-1])
        return FrameReport(now, relay_on=self.hardware.relay_on, led=Led.ERROR, camera_up=False,
                           event=events[-1] if events else None, timings=timings, events=tuple(events))

    # Enrolment -----------------------------------------------------------------------------------

    def _check_button(self, now: float) -> None:
        pressed = self.hardware.button_pressed
        if pressed and not self._button_was_pressed and self.enrollment is None:
            if self.decision.locked_out_until is not None:
                self._record(Event("denied", None, None, "enrol button pressed during a lockout: ignored"))
            else:
                self.start_enrollment(now)
        self._button_was_pressed = pressed

    def start_enrollment(self, now: float, name: str | None = None, role: str | None = None,
                         trusted: bool = False) -> ButtonEnrollment:
        """Begin an enrolment at the camera (the door stays locked throughout).

        The button starts an untrusted one (an admin must be recognised first);
        the local API starts a trusted one for ``kiosk enroll NAME --camera``,
        whose caller is as trusted as a shell on the door.
        """
        self.hardware.lock()
        self.decision.attempt = None
        self.boundary.forget()  # the admin check starts a fresh attempt
        self.enrollment = ButtonEnrollment(self.gallery, self.config.enrollment, self.decision.settings, now,
                                           name=name, trusted=trusted, role=role)
        self.hardware.show(Led.ENROLLING)
        return self.enrollment

    # An admin's orders (kiosk.control queues them to the frame loop) -------------------------------

    def open_for(self, seconds: float, why: str) -> Event:
        """Open the door for ``seconds`` on an admin's order; logged as an ``admin`` event saying who and why."""
        self.decision.open_for(self.clock(), seconds)
        self.hardware.unlock()
        self.hardware.show(Led.GRANTED)
        return self.log_admin(why)

    def close_now(self, why: str) -> Event:
        """Relay off now, ending any unlock (logged)."""
        self.decision.close_now()
        self.hardware.lock()
        return self.log_admin(why)

    def end_lockout(self, why: str) -> Event:
        """Lift a lockout on an admin's order (logged, and saved so that a restart does not bring it back)."""
        self.decision.end_lockout()
        self._save_lockout()
        self.hardware.show(Led.IDLE)
        return self.log_admin(why)

    def log_admin(self, what: str) -> Event:
        """Log an admin's action (``admin`` event): every change made from the API or the web page is in the log."""
        event = Event("admin", None, None, what[:500])
        self._record(event)
        return event

    def _enrolment_frame(self, obs: Observation, faces: int, embedded, frame: np.ndarray,
                         timings: dict[str, float]) -> FrameReport:
        enrollment = self.enrollment
        assert enrollment is not None
        self.hardware.lock()
        if enrollment.feed(obs, faces, embedded):
            self.liveness.reset()  # the capture's liveness verdict is the new face's alone
            self.boundary.forget()
        event = None
        if enrollment.finished:
            self.enrollment = None
            if enrollment.person is not None:
                self.reload_gallery()
                event = Event("enrolled", enrollment.person.name, None, enrollment.message)
                self._announce(event)  # the gallery logged it
                self.hardware.show(Led.GRANTED)
            else:
                event = Event("error", None, None, f"enrolment: {enrollment.message}")
                self._record(event)
                self.hardware.show(Led.DENIED)
        else:
            self.hardware.show(Led.ENROLLING)
        return FrameReport(obs.time, faces, None, None, self.hardware.relay_on, self.hardware.pattern, True,
                           enrollment.phase.value, event, timings, events=(event,) if event else ())

    def reload_gallery(self) -> None:
        """Pick up people enrolled or removed by another process (``kiosk enroll`` / ``people``), and the threshold.

        Stored embeddings that fail their check (a damaged SD card, a tampered
        row) are left out by the gallery; each damaged person is logged once as
        an ``error`` event saying how to re-enrol them.
        """
        self._templates = self.gallery.templates()
        self._schedules = {person.name: person.schedule for person in self.gallery.people()}
        self.people_enrolled = len(self._schedules)
        self._set_threshold()
        self._adapt_liveness()
        for schedule in self._schedules.values():
            if schedule.unreadable:
                self._report_damage(schedule.unreadable)
        for message in self.gallery.damaged_templates():
            self._report_damage(f"damaged enrolment refused: {message}")

    def _adapt_liveness(self) -> None:
        """Fit the liveness threshold to this camera's live faces, from the camera enrolments' scores (bounded)."""
        threshold = self.liveness.adapt(door_live_scores(self.gallery))
        if threshold is not None and threshold != self.liveness_threshold:
            log.info("liveness threshold %.3f (fitted to this camera's enrolments, within the model's bound)", threshold)
        self.liveness_threshold = threshold

    def _report_damage(self, message: str) -> None:
        """Log a damaged part of the gallery once (as an ``error`` event)."""
        if message not in self._damaged_reported:
            self._damaged_reported.add(message)
            log.error("gallery: %s", message)
            self._record(Event("error", None, None, message[:500]))


    def _set_threshold(self) -> None:
        """The cosine for ``recognition.false_accept_rate`` per stranger attempt with the people enrolled now.

        At start a bad setting stops the door (:class:`ConfigError`); later (more
        people enrolled make a manual threshold too low) the door logs it and
        uses the automatic threshold, which is stricter.
        """
        people, templates = len(set(self._templates.names)), len(self._templates.names)
        try:
            self.door_threshold = door_threshold(self.pipeline.encoder.info, self.config.recognition, people, templates)
        except ConfigError as error:
            if self.door_threshold is None:
                raise
            automatic = dataclasses.replace(self.config.recognition, threshold=0.0)
            self.door_threshold = door_threshold(self.pipeline.encoder.info, automatic, people, templates)
            self._record(Event("error", None, None, f"{error}; using the automatic threshold {self.door_threshold.value:.3f}"))
        self.threshold = self.door_threshold.value
        key = (self.threshold, self._templates.vectors.tobytes())
        if key != self._thresholds_for:  # the cohort comparison is the costly part: only when the gallery changed
            self._thresholds_for = key
            self._template_thresholds = (self.cohort.template_thresholds(self._templates.vectors, self.threshold)
                                         if self._templates.names else None)

    def close(self) -> None:
        """Relay off, LED off, release the camera and pins (the gallery is its opener's to close)."""
        try:
            self.hardware.lock()
        finally:
            self.camera.close()
            self.hardware.close()


def _ms(start: float) -> float:
    return 1000 * (time.perf_counter() - start)


def stage_summary(reports: list[FrameReport]) -> dict[str, tuple[float, float]]:
    """Median and p90 milliseconds per stage over frames that ran it, plus the total."""
    stages: dict[str, list[float]] = {}
    for report in reports:
        for stage, value in report.timings.items():
            stages.setdefault(stage, []).append(value)
        stages.setdefault("total", []).append(sum(report.timings.values()))
    return {stage: (float(np.median(v)), float(np.percentile(v, 90))) for stage, v in stages.items()}
