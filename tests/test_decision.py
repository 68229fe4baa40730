"""The decision state machine with a fake clock: K of N, unlock timing, no re-trigger, lockout."""

from __future__ import annotations

import pytest

from kiosk.decision import DecisionSettings, DoorDecision, Led, Observation

FPS = 15


def frames(decision, start, count, **obs):
    """Feed ``count`` frames at 15 fps from time ``start``; return the steps."""
    return [decision.observe(Observation(time=start + i / FPS, **obs)) for i in range(count)]


def test_grants_on_the_kth_matching_frame():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 3, face=True, person="ann", score=0.7)
    assert [s.relay_on for s in steps] == [False, False, True]
    assert steps[-1].event.kind == "granted" and steps[-1].event.person == "ann"
    assert "not configured" in steps[-1].event.detail  # liveness None is said out loud


def test_unknown_faces_never_unlock_and_are_denied_after_n_frames():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 10, face=True, person=None, score=0.1)
    assert not any(s.relay_on for s in steps)
    kinds = [s.event.kind for s in steps if s.event]
    assert kinds == ["unknown", "unknown"]


def test_mixed_votes_below_k_do_not_unlock():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    people = ["ann", "bob", "ann", "bob", None]
    steps = [decision.observe(Observation(i / FPS, True, p, 0.6)) for i, p in enumerate(people)]
    assert not any(s.relay_on for s in steps)
    assert steps[-1].event.kind == "denied"


def test_votes_outside_the_window_do_not_count():
    decision = DoorDecision(DecisionSettings(k=3, n=5, window_seconds=1.0))
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
    back = frames(decision, 14.0, 3, face=True, person="ann", score=0.7)
    assert back[-1].relay_on and back[-1].event.kind == "granted"


def test_tick_relocks_on_time_without_frames():
    decision = DoorDecision(DecisionSettings(unlock_seconds=5.0))
    frames(decision, 0, 3, face=True, person="ann", score=0.7)
    assert decision.tick(3.0).relay_on
    assert not decision.tick(5.2).relay_on


def test_failed_liveness_is_a_spoof_and_never_unlocks():
    decision = DoorDecision(DecisionSettings(k=3, n=5))
    steps = frames(decision, 0, 6, face=True, person="ann", score=0.8, live=False)
    assert not any(s.relay_on for s in steps)
    assert [s.event.kind for s in steps if s.event] == ["spoof", "spoof"]


def test_lockout_engages_after_max_denied_and_expires():
    settings = DecisionSettings(k=3, n=5, max_denied=3, lockout_window_seconds=60, lockout_seconds=30)
    decision = DoorDecision(settings)
    steps = frames(decision, 0, 15, face=True, person=None, score=0.1)
    assert steps[-1].led is Led.LOCKED_OUT and "locked out" in steps[-1].event.detail
    # Even the owner cannot open while locked out ...
    during = frames(decision, 5, 10, face=True, person="ann", score=0.9)
    assert not any(s.relay_on for s in during) and all(s.led is Led.LOCKED_OUT for s in during)
    # ... and can once it has expired.
    after = frames(decision, 40, 3, face=True, person="ann", score=0.9)
    assert after[-1].relay_on


def test_other_faces_are_recorded():
    decision = DoorDecision()
    steps = frames(decision, 0, 3, face=True, person="ann", score=0.7, others=2)
    assert "2 other face(s)" in steps[-1].event.detail


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=6, n=5), dict(unlock_seconds=0), dict(max_denied=0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DecisionSettings(**bad)
