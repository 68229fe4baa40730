"""The decision state machine with a fake clock: attempts, K of N, liveness, unlock timing, no re-trigger, lockout."""

from __future__ import annotations

import pytest

from kiosk.config import from_dict
from kiosk.decision import DecisionSettings, DoorDecision, Led, Liveness, Observation
from kiosk.errors import ConfigError

FPS = 15
LIVE, SPOOF, PENDING = Liveness.LIVE, Liveness.SPOOF, Liveness.PENDING


def frames(decision, start, count, new_attempt=False, **obs):
    """Feed ``count`` frames at 15 fps from time ``start`` (the first may start a new attempt); return the steps."""
    if obs.get("person") is not None:
        obs = {"candidate": obs["person"], "near_miss": True, **obs}
    return [decision.observe(Observation(time=start + i / FPS, new_attempt=new_attempt and i == 0, **obs))
            for i in range(count)]


def events(steps):
    return [e for s in steps for e in s.events]


def kinds(steps):
    return [e.kind for e in events(steps)]


def test_grants_on_the_kth_matching_frame():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 3, face=True, person="ann", score=0.7)
    assert [s.relay_on for s in steps] == [False, False, True]
    assert steps[-1].event.kind == "granted" and steps[-1].event.person == "ann"
    assert "not configured" in steps[-1].event.detail  # liveness off is said out loud


def test_a_stranger_standing_in_view_is_one_logged_attempt_and_never_locks_the_door():
    decision = DoorDecision(DecisionSettings(k=3, n=5, max_denied=1))
    steps = frames(decision, 0, 150, face=True, person=None, candidate="ann", score=0.1)  # 10 s in view
    assert not any(s.relay_on for s in steps)
    assert kinds(steps) == ["unknown"]
    assert decision.locked_out_until is None and not decision.suspicious
    # The resident arriving next is let in, and the stranger's leaving adds nothing.
    arrival = frames(decision, 20, 3, new_attempt=True, face=True, person="ann", score=0.8, live=LIVE)
    assert arrival[-1].relay_on and kinds(arrival) == ["granted"]


def test_a_near_miss_is_denied_and_names_the_runner_up():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    people = ["ann", None, "ann", None, None]
    steps = [decision.observe(Observation(i / FPS, True, p, 0.6, candidate="ann", runner_up="bob", near_miss=p is not None))
             for i, p in enumerate(people)]
    assert not any(s.relay_on for s in steps)
    assert steps[-1].event.kind == "denied" and steps[-1].event.person == "ann"
    assert "runner-up bob" in steps[-1].event.detail
    assert len(decision.suspicious) == 1


def test_votes_outside_the_window_do_not_count():
    decision = DoorDecision(DecisionSettings(k=3, n=5, window_seconds=1.0, track_gap_seconds=5.0))
    decision.observe(Observation(0.0, True, "ann", 0.7))
    decision.observe(Observation(0.1, True, "ann", 0.7))
    step = decision.observe(Observation(2.0, True, "ann", 0.7))
    assert not step.relay_on


def test_relay_goes_off_after_unlock_seconds_and_does_not_retrigger_while_in_view():
    decision = DoorDecision(DecisionSettings(unlock_seconds=5.0, rearm_seconds=2.0))
    frames(decision, 0, 3, face=True, person="ann", score=0.7)
    granted_at = 2 / FPS
    later = frames(decision, 3 / FPS, 150, face=True, person="ann", score=0.7)  # ann stays for 10 s
    on = [s.relay_on for s in later]
    assert all(on[: int(4.8 * FPS)])
    assert not any(on[int((5.0 - granted_at) * FPS) + 1:]), "relay must relock after 5 s and not re-trigger"
    # ann leaves for 3 s, comes back: the door opens again.
    frames(decision, 11.0, 45, face=False)
    back = frames(decision, 14.0, 3, new_attempt=True, face=True, person="ann", score=0.7)
    assert back[-1].relay_on and back[-1].event.kind == "granted"


def test_tick_relocks_on_time_without_frames():
    decision = DoorDecision(DecisionSettings(unlock_seconds=5.0))
    frames(decision, 0, 3, face=True, person="ann", score=0.7)
    assert decision.tick(3.0).relay_on
    assert not decision.tick(5.2).relay_on


def test_a_spoofed_attempt_is_logged_once_and_never_unlocks_even_if_it_later_looks_live():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 6, face=True, person="ann", score=0.8, live=SPOOF)
    steps += frames(decision, 6 / FPS, 30, face=True, person="ann", score=0.8, live=LIVE)
    assert not any(s.relay_on for s in steps)
    assert kinds(steps) == ["spoof"]
    # Only a new face track (the face left, or jumped) gets a new chance.
    again = frames(decision, 5.0, 3, new_attempt=True, face=True, person="ann", score=0.8, live=LIVE)
    assert again[-1].relay_on


def test_pending_liveness_waits_and_a_still_face_is_refused_as_a_spoof():
    settings = DecisionSettings(k=3, n=5, liveness_wait_seconds=2.0)
    decision = DoorDecision(settings)
    steps = frames(decision, 0, 60, face=True, person="ann", score=0.8, live=PENDING)  # 4 s without motion
    assert not any(s.relay_on for s in steps)
    assert kinds(steps) == ["spoof"] and "no proof of life" in events(steps)[0].detail
    # Evidence of life arriving within the wait opens the door.
    decision = DoorDecision(settings)
    waiting = frames(decision, 0, 15, face=True, person="ann", score=0.8, live=PENDING)
    live = frames(decision, 1.0, 1, face=True, person="ann", score=0.8, live=LIVE)
    assert not any(s.relay_on for s in waiting) and live[-1].relay_on


def test_lockout_counts_suspicious_attempts_persists_through_attempts_and_expires():
    settings = DecisionSettings(k=3, n=5, max_denied=3, lockout_window_minutes=1, lockout_minutes=0.5)
    decision = DoorDecision(settings)
    steps = []
    for attempt in range(3):  # three photo attempts, each a new face track
        steps += frames(decision, attempt, 6, new_attempt=True, face=True, person="ann", score=0.9, live=SPOOF)
    assert steps[-1].led is Led.LOCKED_OUT and "locked out" in events(steps)[-1].detail
    # Even the owner cannot open while locked out, and the attempt is logged ...
    during = frames(decision, 5, 10, new_attempt=True, face=True, person="ann", score=0.9, live=LIVE)
    during += frames(decision, 6, 1, face=False)
    during += frames(decision, 7, 1, face=False)
    assert not any(s.relay_on for s in during) and all(s.led is Led.LOCKED_OUT for s in during)
    assert kinds(during) == ["denied"] and "locked out" in events(during)[0].detail
    # ... and can once it has expired.
    after = frames(decision, 40, 3, new_attempt=True, face=True, person="ann", score=0.9, live=LIVE)
    assert after[-1].relay_on


def test_stepping_out_of_view_makes_each_return_a_logged_attempt():
    settings = DecisionSettings(k=3, n=5, track_gap_seconds=0.5)
    decision = DoorDecision(settings)
    steps = []
    for visit in range(6):  # 4 frames in view, 1 s out of view
        start = visit * (4 / FPS + 1.0)
        steps += frames(decision, start, 4, face=True, person=None, candidate="ann", score=0.1)
        steps += frames(decision, start + 4 / FPS, 15, face=False)
    assert kinds(steps) == ["unknown"] * 6


def test_a_blip_shorter_than_k_frames_is_not_an_attempt_but_a_near_miss_blip_is():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 2, face=True, person=None, score=0.1)
    steps += frames(decision, 2 / FPS, 15, face=False)
    assert kinds(steps) == []
    steps = frames(decision, 5, 1, new_attempt=True, face=True, person="ann", score=0.6)
    steps += frames(decision, 5 + 1 / FPS, 15, face=False)
    assert kinds(steps) == ["denied"]


def test_a_second_face_restarts_the_evidence():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 2, face=True, person="ann", score=0.7)
    steps += frames(decision, 2 / FPS, 1, face=True, person="ann", score=0.7, others=1, restart=True)
    assert not any(s.relay_on for s in steps)  # the third vote came with a second face: evidence restarted
    steps += frames(decision, 3 / FPS, 2, face=True, person="ann", score=0.7)
    assert steps[-1].relay_on and "more than one face" in steps[-1].event.detail


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=6, n=5), dict(unlock_seconds=0), dict(max_denied=0),
                                 dict(liveness_wait_seconds=0), dict(track_gap_seconds=-1), dict(k=1, n=5)])
def test_bad_settings_are_refused_by_the_config(bad):
    with pytest.raises(ConfigError, match="decision"):
        from_dict({"decision": bad})


def test_a_replayed_frame_refuses_the_attempt_as_a_spoof():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 1, face=True, person="ann", score=0.8, live=LIVE, replayed=True)
    steps += frames(decision, 1 / FPS, 10, face=True, person="ann", score=0.8, live=LIVE)
    assert not any(s.relay_on for s in steps)
    assert kinds(steps) == ["spoof"] and "replayed" in events(steps)[0].detail
