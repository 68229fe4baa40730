"""Property-based tests of the decision state machine (hypothesis).

Whatever sequence of frames arrives: the door never opens without k matching
frames of one attempt and a liveness verdict of LIVE (or liveness off), it
always relocks within unlock_seconds, it never opens while locked out, and
a stranger who never comes near a match never locks it out.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.decision import DecisionSettings, DoorDecision, Liveness, Observation

people = st.sampled_from([None, "ann", "bob"])
frame = st.tuples(
    st.floats(min_value=0.01, max_value=0.5),  # time since the previous frame
    st.booleans(),  # a face in view
    people,
    st.sampled_from(list(Liveness)),  # the attempt's liveness verdict
    st.booleans(),  # the door saw a new face track
)
decision_settings = st.builds(
    DecisionSettings,
    k=st.integers(1, 4),
    n=st.just(5),
    window_seconds=st.floats(0.5, 3.0),
    unlock_seconds=st.floats(0.5, 6.0),
    rearm_seconds=st.floats(0.5, 3.0),
    max_denied=st.integers(1, 6),
    lockout_window_minutes=st.floats(5 / 60, 2.0),
    lockout_minutes=st.floats(1 / 60, 1.0),
    liveness_wait_seconds=st.floats(0.5, 5.0),
    track_gap_seconds=st.floats(0.05, 1.0),
)


@settings(max_examples=300, deadline=None)
@given(decision_settings, st.lists(frame, min_size=1, max_size=120))
def test_the_door_opens_only_for_k_live_matches_and_always_relocks(config, frames):
    decision = DoorDecision(config)
    now, attempt, opened_at = 0.0, [], None
    for gap, face, person, live, new_attempt in frames:
        now += gap
        obs = Observation(now, face, person if face else None, 0.7, 0, live, candidate=person, near_miss=person is not None,
                          new_attempt=new_attempt)
        if new_attempt or (attempt and now - attempt[-1].time > config.track_gap_seconds):
            attempt = []
        if face:
            attempt.append(obs)
        was_on = decision.relay_on
        step = decision.observe(obs)
        if step.relay_on and not was_on:
            assert step.event is not None and step.event.kind == "granted"  # the relay never turns on silently
        if step.event is not None and step.event.kind == "granted":
            # A fresh unlock (possibly on the very frame the previous one expired): k of the attempt's last n
            # frames (within the window) show the same person, and the attempt's liveness verdict is LIVE (or off).
            recent = [o for o in attempt[-config.n:] if now - o.time <= config.window_seconds]
            assert sum(o.person == step.event.person for o in recent) >= config.k
            assert obs.live in (Liveness.LIVE, Liveness.OFF)
            assert step.event.kind == "granted"
            opened_at = now
        if step.relay_on:
            assert opened_at is not None and now - opened_at < config.unlock_seconds
        if decision.locked_out_until is not None:
            assert not step.relay_on
    # With no more frames, the clock alone relocks the door on time.
    assert not decision.tick(now + config.unlock_seconds).relay_on


@settings(max_examples=200, deadline=None)
@given(decision_settings, st.lists(frame, min_size=1, max_size=80))
def test_failed_liveness_never_opens(config, frames):
    decision = DoorDecision(config)
    now = 0.0
    for gap, face, person, live, new_attempt in frames:
        now += gap
        verdict = Liveness.SPOOF if live is Liveness.LIVE else live if live is not Liveness.OFF else Liveness.PENDING
        step = decision.observe(Observation(now, face, person if face else None, 0.7, 0, verdict, new_attempt=new_attempt))
        assert not step.relay_on


@settings(max_examples=200, deadline=None)
@given(decision_settings, st.lists(frame, min_size=1, max_size=200))
def test_strangers_who_never_come_near_a_match_never_lock_the_door_out(config, frames):
    decision = DoorDecision(config)
    now = 0.0
    for gap, face, _, live, new_attempt in frames:
        now += gap
        step = decision.observe(Observation(now, face, None, 0.1, 0, live, candidate="ann", new_attempt=new_attempt))
        assert not step.relay_on
        assert decision.locked_out_until is None
