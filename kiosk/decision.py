"""When to open the door: per-frame recognitions combined over time.

A pure state machine with no I/O and no clock of its own: the door loop feeds
it one :class:`Observation` per frame (with the frame's time) and applies the
:class:`Step` it returns (relay on or off, LED pattern, an event to log).
That makes every rule here testable with a fake clock, and keeps the rules
in one place:

- **Grant** when the same enrolled person is recognised in at least ``k`` of
  the last ``n`` frames, all within ``window_seconds``, and the liveness
  check passed. The relay stays on for ``unlock_seconds``, then goes off.
- **No re-trigger** while the granted person stays in view: they must be
  out of view for ``rearm_seconds`` before they can open the door again.
- **Deny** an attempt when ``n`` frames with a face pass without a grant;
  after ``max_denied`` denials within ``lockout_window_seconds`` the door
  is **locked out** for ``lockout_seconds`` (as phones do).
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


@dataclass(frozen=True)
class Observation:
    """What one frame showed.

    ``person`` is the recognised enrolled person (None: no face, or an
    unknown face); ``face`` says whether any face was seen; ``others`` counts
    further faces besides the largest; ``live`` is the liveness verdict for
    the attempt so far (None when no check ran).
    """

    time: float
    face: bool
    person: str | None = None
    score: float | None = None
    others: int = 0
    live: bool | None = None


@dataclass(frozen=True)
class Event:
    """Something worth logging: kind is granted / denied / unknown / spoof."""

    kind: str
    person: str | None
    score: float | None
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """What the door should do after one observation."""

    relay_on: bool
    led: Led
    event: Event | None = None


@dataclass
class DecisionSettings:
    """The decision rules' parameters (see the module docstring)."""

    k: int = 3
    n: int = 5
    window_seconds: float = 1.5
    unlock_seconds: float = 5.0
    rearm_seconds: float = 2.0
    max_denied: int = 5
    lockout_window_seconds: float = 300.0
    lockout_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"decision: need 1 <= k <= n, got k={self.k}, n={self.n}")
        for name in ("window_seconds", "unlock_seconds", "rearm_seconds", "lockout_window_seconds", "lockout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"decision: {name} must be positive, got {getattr(self, name)}")
        if self.max_denied < 1:
            raise ValueError(f"decision: max_denied must be at least 1, got {self.max_denied}")


@dataclass
class DoorDecision:
    """The state machine. Call :meth:`observe` once per frame, :meth:`tick` when no frame came."""

    settings: DecisionSettings = field(default_factory=DecisionSettings)
    unlocked_until: float | None = None
    locked_out_until: float | None = None
    granted_person: str | None = None
    granted_last_seen: float = float("-inf")

    def __post_init__(self) -> None:
        self._recent: deque[Observation] = deque(maxlen=self.settings.n)
        self._denials: deque[float] = deque()
        self._attempt_frames = 0

    def observe(self, obs: Observation) -> Step:
        """Take one frame's observation; return what the door should do now."""
        now = obs.time
        self._expire(now)
        if self.locked_out_until is not None:
            return Step(False, Led.LOCKED_OUT)
        if self.granted_person is not None and now - self.granted_last_seen >= self.settings.rearm_seconds:
            self.granted_person = None  # the person let in has been out of view long enough
        if self.granted_person is not None and obs.face and obs.person in (self.granted_person, None):
            # The person we let in (or an unrecognised frame of them) is still in view: no re-trigger.
            self.granted_last_seen = now
        if self.unlocked_until is not None:
            return Step(True, Led.GRANTED)
        if not obs.face:
            self._recent.clear()
            self._attempt_frames = 0
            return Step(False, Led.IDLE)
        if self.granted_person is not None:
            return Step(False, Led.FACE_SEEN)
        self._recent.append(obs)
        self._attempt_frames += 1
        recent = [o for o in self._recent if now - o.time <= self.settings.window_seconds]
        candidate, votes = _majority(recent)
        others = f"{max(o.others for o in recent)} other face(s) in view" if any(o.others for o in recent) else ""
        if candidate is not None and votes >= self.settings.k:
            scores = [o.score for o in recent if o.person == candidate and o.score is not None]
            score = max(scores) if scores else None
            if obs.live is False:
                self._reset_attempt()
                return self._deny(now, Event("spoof", candidate, score, _join("liveness check failed", others)))
            self.unlocked_until = now + self.settings.unlock_seconds
            self.granted_person, self.granted_last_seen = candidate, now
            self._reset_attempt()
            detail = "liveness check not configured (always passes)" if obs.live is None else ""
            return Step(True, Led.GRANTED, Event("granted", candidate, score, _join(detail, others)))
        if self._attempt_frames >= self.settings.n:
            best = max((o.score for o in recent if o.score is not None), default=None)
            kind = "denied" if candidate is not None else "unknown"
            self._reset_attempt()
            return self._deny(now, Event(kind, candidate, best, _join(f"fewer than {self.settings.k} of {self.settings.n} frames matched", others)))
        return Step(False, Led.FACE_SEEN)

    def tick(self, now: float) -> Step:
        """Advance the clock without a frame (camera down): relock on time, forget the attempt."""
        self._expire(now)
        self._recent.clear()
        self._attempt_frames = 0
        if self.locked_out_until is not None:
            return Step(False, Led.LOCKED_OUT)
        return Step(self.unlocked_until is not None, Led.GRANTED if self.unlocked_until is not None else Led.IDLE)

    @property
    def relay_on(self) -> bool:
        """Whether the relay should be energised right now (as of the last call)."""
        return self.unlocked_until is not None

    def _deny(self, now: float, event: Event) -> Step:
        self._denials.append(now)
        while self._denials and now - self._denials[0] > self.settings.lockout_window_seconds:
            self._denials.popleft()
        if len(self._denials) >= self.settings.max_denied:
            self.locked_out_until = now + self.settings.lockout_seconds
            self._denials.clear()
            detail = _join(event.detail, f"locked out for {self.settings.lockout_seconds:g} s after {self.settings.max_denied} denied attempts")
            return Step(False, Led.LOCKED_OUT, Event(event.kind, event.person, event.score, detail))
        return Step(False, Led.DENIED, event)

    def _reset_attempt(self) -> None:
        self._recent.clear()
        self._attempt_frames = 0

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
