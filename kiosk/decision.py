"""When to open the door: per-frame recognitions combined over one attempt.

A pure state machine with no I/O and no clock of its own: the door loop feeds
it one :class:`Observation` per frame (with the frame's time) and applies the
:class:`Step` it returns (relay on or off, LED pattern, events to log). That
makes every rule here testable with a fake clock, and keeps the rules in one
place.

**An attempt is one face track's stay in view.** The door starts a new
attempt when a face appears, jumps in position or size, or is recognised as
another person (``Observation.new_attempt``); a second face in view restarts
the attempt's evidence (``Observation.restart``). Only the frames of the
current attempt vote, and the liveness verdict passed in is the current
attempt's (the door resets its liveness check whenever the attempt starts or
restarts). A face may vanish for up to ``track_gap_seconds`` (a detector
miss) without ending the attempt.

- **Grant** when the same enrolled person is recognised in at least ``k`` of
  the attempt's last ``n`` frames, all within ``window_seconds``, and the
  liveness verdict is LIVE (or liveness is off). The relay stays on for
  ``unlock_seconds``, then goes off.
- **No motion is no proof of life**: while liveness is PENDING the attempt
  waits; if it is still pending ``liveness_wait_seconds`` after the attempt
  began, the attempt is refused as a spoof (a photo or phone on a stand, a
  repeated frame). A SPOOF verdict refuses the attempt at once, and an
  attempt once refused as a spoof never opens the door: the face must leave.
  So does a frame bit-identical to one of an earlier granted attempt (a
  replayed camera feed: a real camera never repeats itself exactly).
- **Schedules**: a person recognised (and live) outside their schedule is
  refused with the reason ``outside schedule``; that refusal is logged but
  not suspicious (it never counts towards a lockout).
- **No re-trigger** while the granted person stays in view: they must be
  out of view for ``rearm_seconds`` before they can open the door again.
- **Every attempt is logged once** with its outcome (granted, denied,
  unknown, spoof), when it is decided or when it ends, including attempts
  during a lockout. Attempts shorter than ``k`` face frames that nothing
  suspicious happened in are not logged (a detector flicker is not a visitor).
- **Lockout counts suspicious attempts, not frames**: an attempt is
  suspicious when it was refused as a spoof, or when an enrolled person's
  score cleared the threshold in some frame without the attempt being
  granted (a look-alike or a partial match). A stranger who merely stands in
  view scores far below the threshold and is only logged as ``unknown``: it
  must not lock the residents out. After ``max_denied`` suspicious attempts
  within ``lockout_window_seconds`` the door is locked out for
  ``lockout_seconds``; the door persists the lockout across restarts.
- Anything unexpected leaves the relay off: the relay is on only between
  a grant and its ``unlock_seconds`` deadline.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class Led(enum.Enum):
    """What the status LED shows (the patterns live in :mod:`kiosk.gpio`)."""

    IDLE = "idle"
    FACE_SEEN = "face seen"
    GRANTED = "granted"
    DENIED = "denied"
    ENROLLING = "enrolling"
    LOCKED_OUT = "locked out"
    ERROR = "error"


class Liveness(enum.Enum):
    """The liveness verdict of the current attempt."""

    LIVE = "live"
    SPOOF = "spoof"
    PENDING = "pending"  # not enough evidence yet (e.g. no motion seen): no unlock
    OFF = "off"  # no check configured: the decision proceeds and says so


@dataclass(frozen=True)
class Observation:
    """What one frame showed.

    ``person`` is the enrolled person accepted in this frame (None: no face,
    or no one cleared both bars); ``candidate`` is the best-scoring enrolled
    person either way, with ``score``; ``runner_up`` the second best (named in
    logs of margin refusals); ``near_miss`` says the candidate's score cleared
    the threshold (accepted or refused by the margin); ``others`` counts
    further faces besides the tracked one; ``live`` is the current attempt's
    liveness verdict; ``new_attempt`` and ``restart`` are the door's track
    boundaries (see the module docstring); ``replayed`` says the frame is
    bit-identical to a frame of an earlier granted attempt (a camera never
    repeats itself exactly: a replayed or injected feed); ``outside_schedule``
    says ``person`` may not be let in at this time (their schedule);
    ``live_score`` is the liveness check's score of the attempt so far (its
    mean texture logit; None when liveness is off or nothing was scored).
    """

    time: float
    face: bool
    person: str | None = None
    score: float | None = None
    others: int = 0
    live: Liveness = Liveness.OFF
    candidate: str | None = None
    runner_up: str | None = None
    near_miss: bool = False
    new_attempt: bool = False
    restart: bool = False
    replayed: bool = False
    outside_schedule: bool = False
    live_score: float | None = None


@dataclass(frozen=True)
class Event:
    """Something worth logging: kind is granted / denied / unknown / spoof (or enrolled / error)."""

    kind: str
    person: str | None
    score: float | None
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """What the door should do after one observation."""

    relay_on: bool
    led: Led
    events: tuple[Event, ...] = ()

    @property
    def event(self) -> Event | None:
        """The last event of this step (an attempt's outcome), if any."""
        return self.events[-1] if self.events else None


@dataclass
class DecisionSettings:
    """The decision rules' parameters (the ``[decision]`` config section; see the module docstring)."""

    k: int = 3  # frames that must recognise the same person ...
    n: int = 5  # ... among the last n frames
    window_seconds: float = 1.5
    unlock_seconds: float = 5.0
    rearm_seconds: float = 2.0  # the person let in must leave the view this long before another unlock
    max_denied: int = 5  # suspicious attempts ...
    lockout_window_minutes: float = 5.0  # ... within this many minutes lock the door out
    lockout_minutes: float = 5.0
    liveness_wait_seconds: float = 4.0  # a face with no proof of life (no motion) this long is refused as a spoof
    track_gap_seconds: float = 0.5  # a face gone longer than this comes back as a new attempt

    @property
    def lockout_window_seconds(self) -> float:
        return self.lockout_window_minutes * 60

    @property
    def lockout_seconds(self) -> float:
        return self.lockout_minutes * 60


@dataclass
class Attempt:
    """One face track's stay in view, and what it has shown so far."""

    started: float
    last_seen: float
    frames: int = 0
    votes: deque[Observation] = field(default_factory=deque)
    candidate: str | None = None
    best_score: float | None = None
    runner_up: str | None = None
    near_miss: bool = False
    second_face: bool = False
    logged: bool = False
    spoofed: bool = False
    granted: bool = False
    counted: bool = False
    replayed: bool = False
    outside_schedule: bool = False


@dataclass
class DoorDecision:
    """The state machine. Call :meth:`observe` once per frame, :meth:`tick` when no frame came."""

    settings: DecisionSettings = field(default_factory=DecisionSettings)
    unlocked_until: float | None = None
    locked_out_until: float | None = None
    granted_person: str | None = None
    granted_last_seen: float = float("-inf")

    def __post_init__(self) -> None:
        self.suspicious: deque[float] = deque()
        """Times of the suspicious attempts within the lockout window."""
        self.attempt: Attempt | None = None

    # The frame loop's entry points ---------------------------------------------------------------

    def observe(self, obs: Observation) -> Step:
        """Take one frame's observation; return what the door should do now."""
        now = obs.time
        self._expire(now)
        events: list[Event] = []
        attempt = self.attempt
        if attempt is not None and (obs.new_attempt or now - attempt.last_seen > self.settings.track_gap_seconds):
            events += self._end_attempt(now)
            attempt = None
        if self.granted_person is not None and now - self.granted_last_seen >= self.settings.rearm_seconds:
            self.granted_person = None  # the person let in has been out of view long enough
        if self.granted_person is not None and obs.face and obs.person in (self.granted_person, None):
            # The person we let in (or an unrecognised frame of them) is still in view: no re-trigger, no attempt.
            self.granted_last_seen = now
            self.attempt = None
            return self._step(now, events, Led.FACE_SEEN)
        if self.unlocked_until is not None:
            self.attempt = None  # the door is open: nobody is trying to get in
            return self._step(now, events, Led.GRANTED)
        if not obs.face:
            return self._step(now, events, Led.IDLE)
        if attempt is None:
            attempt = self.attempt = Attempt(started=now, last_seen=now)
        self._add(attempt, obs)
        if self.locked_out_until is not None:
            if attempt.frames >= self.settings.n and not attempt.logged:
                events += self._log_outcome(now, attempt, "door locked out")
            return self._step(now, events, Led.LOCKED_OUT)
        events += self._decide(now, obs, attempt)
        led = Led.GRANTED if self.unlocked_until is not None else Led.DENIED if events else Led.FACE_SEEN
        return self._step(now, events, led)

    def tick(self, now: float) -> Step:
        """Advance the clock without a frame (camera down): relock on time, end the attempt."""
        self._expire(now)
        events = self._end_attempt(now) if self.attempt is not None else []
        return self._step(now, events, Led.IDLE)

    @property
    def relay_on(self) -> bool:
        """Whether the relay should be energised right now (as of the last call)."""
        return self.unlocked_until is not None

    # An admin's orders (the local API and the web page, through kiosk.control) -------------------

    def open_for(self, now: float, seconds: float) -> None:
        """Open the door now for ``seconds`` (a remote unlock or the self-test's click), whatever is in view."""
        self.unlocked_until = max(self.unlocked_until or now, now + seconds)
        self.attempt = None

    def close_now(self) -> None:
        """End an unlock at once (``kiosk relay-off`` while the service runs)."""
        self.unlocked_until = None

    def end_lockout(self) -> None:
        """Lift a lockout and forget the suspicious attempts counting towards the next one."""
        self.locked_out_until = None
        self.suspicious.clear()

    # The rules ---------------------------------------------------------------------------------

    def _add(self, attempt: Attempt, obs: Observation) -> None:
        """Count the frame into the attempt; a second face throws away the evidence so far."""
        attempt.frames += 1
        attempt.last_seen = obs.time
        if obs.restart:
            attempt.votes.clear()
            attempt.second_face = True
        attempt.votes.append(obs)
        while len(attempt.votes) > self.settings.n:
            attempt.votes.popleft()
        if obs.candidate is not None and (attempt.best_score is None or (obs.score or -1.0) > attempt.best_score):
            attempt.candidate, attempt.best_score, attempt.runner_up = obs.candidate, obs.score, obs.runner_up
        attempt.near_miss = attempt.near_miss or obs.near_miss
        attempt.replayed = attempt.replayed or obs.replayed

    def _decide(self, now: float, obs: Observation, attempt: Attempt) -> list[Event]:
        if attempt.spoofed or attempt.granted or attempt.outside_schedule:
            return []  # a spoofed attempt never opens; a granted or out-of-schedule one is over
        recent = [o for o in attempt.votes if now - o.time <= self.settings.window_seconds]
        candidate, votes = _majority(recent)
        if candidate is not None and votes >= self.settings.k:
            scores = [o.score for o in recent if o.person == candidate and o.score is not None]
            score = max(scores) if scores else None
            if attempt.replayed:
                return self._refuse_spoof(now, attempt, candidate, score, "a frame identical to one of an earlier granted "
                                          "attempt: a replayed or injected camera feed")
            if obs.live is Liveness.SPOOF:
                return self._refuse_spoof(now, attempt, candidate, score, "liveness check failed")
            if obs.live is Liveness.PENDING:
                if now - attempt.started >= self.settings.liveness_wait_seconds:
                    return self._refuse_spoof(now, attempt, candidate, score, f"no proof of life in "
                                              f"{self.settings.liveness_wait_seconds:g} s (a face that does not move "
                                              "is not taken as live)")
                return []
            if any(o.outside_schedule for o in recent if o.person == candidate):
                # Logged, but not suspicious: a resident early for their window is no attacker.
                attempt.outside_schedule = attempt.logged = True
                return [Event("denied", candidate, score, _join("outside schedule", self._context(attempt)))]
            self.unlocked_until = now + self.settings.unlock_seconds
            self.granted_person, self.granted_last_seen = candidate, now
            attempt.granted = attempt.logged = True
            detail = "liveness check not configured (always passes)" if obs.live is Liveness.OFF else ""
            return [Event("granted", candidate, score, _join(detail, self._context(attempt)))]
        if attempt.frames >= self.settings.n and not attempt.logged:
            return self._log_outcome(now, attempt, f"fewer than {self.settings.k} of {self.settings.n} frames matched")
        return []

    def _refuse_spoof(self, now: float, attempt: Attempt, person: str, score: float | None, why: str) -> list[Event]:
        attempt.spoofed = attempt.logged = True
        attempt.votes.clear()
        return [self._count(now, attempt, Event("spoof", person, score, _join(why, self._context(attempt))))]

    def _log_outcome(self, now: float, attempt: Attempt, why: str) -> list[Event]:
        """Log a refused attempt once: ``denied`` when an enrolled person nearly matched, else ``unknown``."""
        attempt.logged = True
        if attempt.near_miss:
            return [self._count(now, attempt, Event("denied", attempt.candidate, attempt.best_score,
                                                    _join(why, self._context(attempt))))]
        closest = f"closest enrolled person {attempt.candidate}" if attempt.candidate else ""
        return [Event("unknown", None, attempt.best_score, _join(why, closest, self._context(attempt)))]

    def _end_attempt(self, now: float) -> list[Event]:
        """The face left (or a new one took its place): log the attempt if nothing was logged yet."""
        attempt, self.attempt = self.attempt, None
        if attempt is None or attempt.logged:
            return []
        if attempt.frames < self.settings.k and not attempt.near_miss:
            return []  # too short to be a visit, and nothing suspicious in it
        why = f"left after {attempt.frames} frame(s)" + (" during a lockout" if self.locked_out_until is not None else "")
        return self._log_outcome(now, attempt, why)

    def _count(self, now: float, attempt: Attempt, event: Event) -> Event:
        """Count a suspicious attempt towards the lockout (once), and lock out after ``max_denied``."""
        if event.kind not in ("spoof", "denied") or attempt.counted or self.locked_out_until is not None:
            return event
        attempt.counted = True
        self.suspicious.append(now)
        while self.suspicious and now - self.suspicious[0] > self.settings.lockout_window_seconds:
            self.suspicious.popleft()
        if len(self.suspicious) < self.settings.max_denied:
            return event
        self.locked_out_until = now + self.settings.lockout_seconds
        self.suspicious.clear()
        return Event(event.kind, event.person, event.score, _join(
            event.detail, f"locked out for {self.settings.lockout_seconds:g} s after {self.settings.max_denied} "
                          "suspicious attempts (spoofs or near matches)"))

    def _context(self, attempt: Attempt) -> str:
        parts = []
        if attempt.runner_up:
            parts.append(f"runner-up {attempt.runner_up}")
        if attempt.second_face:
            parts.append("more than one face in view")
        return _join(*parts)

    def _step(self, now: float, events: list[Event], led: Led) -> Step:
        if self.locked_out_until is not None and self.unlocked_until is None:
            led = Led.LOCKED_OUT
        elif self.unlocked_until is not None:
            led = Led.GRANTED
        return Step(self.unlocked_until is not None, led, tuple(events))

    def _expire(self, now: float) -> None:
        if self.unlocked_until is not None and now >= self.unlocked_until:
            self.unlocked_until = None
        if self.locked_out_until is not None and now >= self.locked_out_until:
            self.locked_out_until = None


def _majority(observations: list[Observation]) -> tuple[str | None, int]:
    """The most often recognised person among ``observations`` and their count."""
    counts: dict[str, int] = {}
    for obs in observations:
        if obs.person is not None:
            counts[obs.person] = counts.get(obs.person, 0) + 1
    if not counts:
        return None, 0
    person = max(counts, key=counts.get)
    return person, counts[person]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
