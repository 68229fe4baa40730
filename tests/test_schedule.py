"""Per-person schedules: the text form, the windows (also past midnight), the errors, the door's refusal."""

from __future__ import annotations

import datetime
import sqlite3

import numpy as np
import pytest

from kiosk.decision import DecisionSettings, DoorDecision, Liveness, Observation
from kiosk.errors import GalleryError, ScheduleError
from kiosk.gallery import Gallery
from kiosk.schedule import Schedule

MONDAY = datetime.datetime(2026, 11, 30)  # a Monday


def at(day: int, hour: int, minute: int = 0) -> datetime.datetime:
    """``day`` days after Monday 2026-11-30, at hh:mm."""
    return MONDAY + datetime.timedelta(days=day, hours=hour, minutes=minute)


def test_weekday_windows():
    schedule = Schedule.parse("mon-fri 07:00-19:00; sat 09:00-12:30")
    assert schedule.allows(at(0, 7)) and schedule.allows(at(4, 18, 59))
    assert not schedule.allows(at(0, 6, 59)) and not schedule.allows(at(0, 19))
    assert schedule.allows(at(5, 12, 29)) and not schedule.allows(at(5, 12, 30))
    assert not schedule.allows(at(6, 10)), "Sunday is not in the schedule"


def test_a_window_past_midnight_belongs_to_the_day_it_starts():
    schedule = Schedule.parse("fri 22:00-06:00")
    assert schedule.allows(at(4, 23)) and schedule.allows(at(5, 5, 59))
    assert not schedule.allows(at(5, 6)) and not schedule.allows(at(3, 23, 30)) and not schedule.allows(at(4, 5))


def test_day_names_ranges_lists_and_sets():
    assert Schedule.parse("fri-mon 10:00-11:00").rules[0].days == {4, 5, 6, 0}
    assert Schedule.parse("mon,wed,fri 10:00-11:00").rules[0].days == {0, 2, 4}
    assert Schedule.parse("weekends 00:00-24:00").allows(at(6, 23, 59))
    assert Schedule.parse("daily 08:00-09:00 17:00-18:00").allows(at(2, 17, 30))


def test_always_and_the_text_form_round_trips():
    assert Schedule.parse("always") == Schedule.parse("") == Schedule()
    assert Schedule().allows(at(3, 3)) and str(Schedule()) == "always"
    for text in ("weekdays 07:00-19:00; sat 09:00-12:30", "daily 22:00-06:00", "mon,thu 08:15-08:45 12:00-13:00"):
        assert str(Schedule.parse(text)) == text
        assert Schedule.parse(str(Schedule.parse(text))) == Schedule.parse(text)


@pytest.mark.parametrize("text, says", [
    ("mon-fri", "needs days and at least one time window"),
    ("monday 07:00-19:00", "'monday' is not a day"),
    ("mon 7-19", "'7-19' is not a time window"),
    ("mon 25:00-26:00", "not a time of day"),
    ("mon 08:00-08:00", "is empty"),
])
def test_a_bad_schedule_says_what_is_wrong(text, says):
    with pytest.raises(ScheduleError, match=says):
        Schedule.parse(text)


def test_an_unreadable_stored_schedule_lets_nobody_in():
    damaged = Schedule(unreadable="the schedule stored for 'ann' cannot be read")
    assert not damaged.allows(at(0, 12)) and "unreadable" in str(damaged)


# The gallery ------------------------------------------------------------------------------------

def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_the_gallery_stores_schedules_and_a_hand_damaged_one_denies(tmp_path):
    gallery = Gallery(tmp_path / "gallery.db", "model")
    try:
        gallery.add_person("ann", _vector(1))
        assert gallery.person("ann").schedule == Schedule()
        gallery.set_schedule("ann", "mon-fri 07:00-19:00")
        assert str(gallery.person("ann").schedule) == "weekdays 07:00-19:00"
        with pytest.raises(ScheduleError):
            gallery.set_schedule("ann", "someday")
        assert str(gallery.person("ann").schedule) == "weekdays 07:00-19:00", "a bad schedule changes nothing"
        with pytest.raises(GalleryError, match="no enrolled person"):
            gallery.set_schedule("bob", "always")
        gallery.set_schedule("ann", "always")
        assert gallery.person("ann").schedule == Schedule()
    finally:
        gallery.close()
    db = sqlite3.connect(tmp_path / "gallery.db")
    db.execute("UPDATE people SET schedule = 'sometimes' WHERE name = 'ann'")
    db.commit()
    db.close()
    gallery = Gallery(tmp_path / "gallery.db", "model")
    try:
        schedule = gallery.person("ann").schedule
        assert schedule.unreadable and "kiosk people schedule ann" in schedule.unreadable
        assert not schedule.allows(at(0, 12))
    finally:
        gallery.close()


def test_a_schema_2_gallery_is_upgraded_and_keeps_its_people(tmp_path):
    gallery = Gallery(tmp_path / "gallery.db", "model")
    gallery.add_person("ann", _vector(1))
    gallery.close()
    db = sqlite3.connect(tmp_path / "gallery.db")  # back to schema 2: no schedule column
    db.execute("ALTER TABLE people DROP COLUMN schedule")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    gallery = Gallery(tmp_path / "gallery.db", "model")
    try:
        assert [p.name for p in gallery.people()] == ["ann"] and gallery.person("ann").schedule == Schedule()
        assert len(gallery.templates().names) == 1, "the signed embeddings still verify"
        gallery.set_schedule("ann", "daily 08:00-09:00")
    finally:
        gallery.close()


# The decision -----------------------------------------------------------------------------------

def test_outside_the_schedule_is_denied_once_and_never_locks_anyone_out():
    decision = DoorDecision(DecisionSettings(max_denied=2))
    events = []
    for attempt in range(4):
        start = attempt * 10.0
        for frame in range(6):
            obs = Observation(time=start + frame / 15, face=True, person="ann", candidate="ann", score=0.8, near_miss=True,
                              live=Liveness.LIVE, new_attempt=frame == 0, outside_schedule=True)
            events += decision.observe(obs).events
    assert [e.kind for e in events] == ["denied"] * 4
    assert all("outside schedule" in e.detail and e.person == "ann" for e in events)
    assert decision.locked_out_until is None and not decision.relay_on
    later = Observation(time=100.0, face=True, person="ann", candidate="ann", score=0.8, live=Liveness.LIVE, new_attempt=True)
    steps = [decision.observe(Observation(**{**later.__dict__, "time": 100 + i / 15, "new_attempt": i == 0}))
             for i in range(3)]
    assert steps[-1].relay_on and steps[-1].event.kind == "granted", "inside the schedule ann gets in"
