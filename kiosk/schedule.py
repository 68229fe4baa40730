"""When a person may be let in: weekdays and time windows in the door's local time.

A schedule is written as text, one or more rules separated by ``;``, each a set
of days and one or more time windows::

    mon-fri 07:00-19:00; sat 09:00-12:30
    daily 22:00-06:00          # a window may run past midnight: it belongs to the day it starts
    always                     # the default: no restriction

Days are ``mon`` .. ``sun``, ranges (``mon-fri``, ``fri-mon``), lists (``mon,wed,fri``),
``daily`` or ``weekdays``/``weekends``. The decision refuses an enrolled person outside
their schedule with the reason ``outside schedule`` (logged, and not suspicious: it never
counts towards a lockout).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from kiosk.errors import ScheduleError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {"daily": frozenset(range(7)), "weekdays": frozenset(range(5)), "weekends": frozenset({5, 6})}
ALWAYS = "always"
MINUTES_PER_DAY = 24 * 60
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Rule:
    """Days (0 = Monday) and windows of [start, end) minutes after midnight; end <= start runs past midnight."""

    days: frozenset[int]
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Schedule:
    """A person's allowed times; no rules means always. ``unreadable`` (why a stored one could not be read)
    allows no time at all: a damaged schedule must not widen anyone's access."""

    rules: tuple[Rule, ...] = ()
    unreadable: str = ""

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read the text form (see the module docstring); :class:`ScheduleError` names what is wrong."""
        text = text.strip().lower()
        if text in ("", ALWAYS):
            return cls()
        return cls(tuple(_parse_rule(part.strip()) for part in text.split(";") if part.strip()))

    def allows(self, when: datetime.datetime) -> bool:
        """Whether ``when`` (the door's local time) falls inside the schedule."""
        if self.unreadable:
            return False
        if not self.rules:
            return True
        minute = when.hour * 60 + when.minute
        today, yesterday = when.weekday(), (when.weekday() - 1) % 7
        for rule in self.rules:
            for start, end in rule.windows:
                if end > start:
                    if today in rule.days and start <= minute < end:
                        return True
                elif (today in rule.days and minute >= start) or (yesterday in rule.days and minute < end):
                    return True
        return False

    def __str__(self) -> str:
        if self.unreadable:
            return "unreadable (nobody let in)"
        if not self.rules:
            return ALWAYS
        return "; ".join(f"{_days_text(rule.days)} {' '.join(_window_text(w) for w in rule.windows)}" for rule in self.rules)


HELP = ("write it as DAYS HH:MM-HH:MM, e.g. 'mon-fri 07:00-19:00; sat 09:00-12:00', 'daily 22:00-06:00' "
        "or 'always'; days are mon..sun, ranges, lists, daily, weekdays, weekends")


def _parse_rule(part: str) -> Rule:
    words = part.split()
    if len(words) < 2:
        raise ScheduleError(f"schedule rule {part!r} needs days and at least one time window: {HELP}")
    return Rule(_parse_days(words[0], part), tuple(_parse_window(word, part) for word in words[1:]))


def _parse_days(text: str, part: str) -> frozenset[int]:
    if text in DAY_SETS:
        return DAY_SETS[text]
    days: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleError(f"schedule rule {part!r}: {item!r} is not a day or a range of days: {HELP}")
        start, stop = DAYS.index(first), DAYS.index(last or first)
        days |= {(start + offset) % 7 for offset in range((stop - start) % 7 + 1)}
    return frozenset(days)


def _parse_window(text: str, part: str) -> tuple[int, int]:
    match = _WINDOW.match(text)
    if match is None:
        raise ScheduleError(f"schedule rule {part!r}: {text!r} is not a time window HH:MM-HH:MM: {HELP}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ScheduleError(f"schedule rule {part!r}: {text!r} is not a time of day (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % MINUTES_PER_DAY and end != MINUTES_PER_DAY:
        raise ScheduleError(f"schedule rule {part!r}: the window {text!r} is empty")
    return start, end


def _days_text(days: frozenset[int]) -> str:
    for name, members in DAY_SETS.items():
        if days == members:
            return name
    return ",".join(DAYS[d] for d in sorted(days))


def _window_text(window: tuple[int, int]) -> str:
    (h1, m1), (h2, m2) = divmod(window[0], 60), divmod(window[1], 60)
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"
