"""The red-team suite of issue 11 (``bench/attacks.py``), one test per attack, on the in-repo fixtures.

Each test plays one attack through the real door (mock pins, a fake clock at
15 frames per second, frames from disk) and asserts that it *held*, as the
attack defines it (see ``bench.attacks.ATTACKS``: mostly "the relay was never
energised", read from the relay pin itself; some "every attempt was logged",
"the resident still got in", "nobody was stored"). The outcome line says
what the door did and logged.

Attacks that succeed against the door as it is today are marked
``xfail(strict=True)`` with what is missing: when a fix lands, the test
XPASSes, which fails the run until the mark is removed. Every attack of
issue 11's table holds since the fixes of that issue landed, and on these
fixtures every later one too (none is marked); the full run on the shared data
is in docs/security.md.

Material (tests/fixtures, see the READMEs there): NUAA subject 0006 is the
resident (enrolled from three live frames of one session, walking up with
another), 0006's print-attack frames are the printed photo, NUAA subject 0009
is the live stranger (tests/fixtures/attacks); the look-alike attack enrols
the three LFW people of tests/fixtures/faces. The button attacks use
3-second admin and capture windows instead of 10 s (the stranger is in view
for all of them either way).
"""

from __future__ import annotations

import pytest

from bench import attacks
from bench.attacks import ATTACKS, fixture_material, line, run_attack

MATERIAL = fixture_material()


def play(attack_id: str, tmp_path) -> attacks.Row:
    row = run_attack(attack_id, [MATERIAL], tmp_path)
    assert row.trials, f"attack {attack_id} was not played"
    return row


def assert_held(attack_id: str, tmp_path) -> attacks.Row:
    row = play(attack_id, tmp_path)
    assert row.held, line(row)
    return row


# Controls: the rig is a faithful door -------------------------------------------------------------------


def test_control_the_resident_live_is_let_in(tmp_path):
    row = assert_held("C1", tmp_path)
    assert row.opened == 1


def test_control_the_resident_is_let_in_among_four_people(tmp_path):
    assert_held("C3", tmp_path)


def test_control_a_plain_printed_photo_is_refused(tmp_path):
    row = assert_held("C2", tmp_path)
    assert "spoof" in row.trials[0].events


# 1. Liveness belongs to the attempt ---------------------------------------------------------------------


def test_live_stranger_then_printed_photo(tmp_path):
    assert_held("1a", tmp_path)


def test_printed_photo_beside_a_live_face(tmp_path):
    assert_held("1b", tmp_path)


def test_live_stranger_ducks_and_raises_a_printed_photo(tmp_path):
    assert_held("1c", tmp_path)


def test_still_photo_on_a_stand(tmp_path):
    assert_held("2", tmp_path)


def test_identity_switch_mid_attempt(tmp_path):
    assert_held("11a", tmp_path)


def test_printed_photo_held_over_the_strangers_face(tmp_path):
    assert_held("11b", tmp_path)


# 3. Enrolment is as strict as an unlock ------------------------------------------------------------------


def test_enrol_button_with_a_printed_photo_of_the_admin(tmp_path):
    assert_held("3a", tmp_path)


def test_enrol_button_during_a_lockout(tmp_path):
    assert_held("3b", tmp_path)


def test_enrol_button_with_an_empty_gallery(tmp_path):
    assert_held("3c", tmp_path)


def test_enrol_button_capture_refuses_a_printed_photo(tmp_path):
    assert_held("3d", tmp_path)


# 4. Stored embeddings are verified -----------------------------------------------------------------------


def test_one_bit_flipped_in_a_stored_embedding(tmp_path):
    assert_held("4a", tmp_path)


def test_stored_embedding_of_the_wrong_length(tmp_path):
    assert_held("4b", tmp_path)


# 6. False accepts per door (recognition alone, liveness off) ------------------------------------------------


def test_lookalikes(tmp_path):
    """At the default false_accept_rate (1e-4) the fixtures' closest look-alikes stay outside."""
    assert_held("5", tmp_path)


@pytest.mark.xfail(strict=True, reason="known hole at the non-default 1e-3 (since session 11): with the stride-2 stem "
                   "encoder Jim Calhoun scores 0.457 against George W Bush, above the 3-people 1e-3 threshold 0.437; the "
                   "default 1e-4 holds (test_lookalikes_never_get_in)")
def test_lookalikes_at_a_looser_setting(tmp_path, monkeypatch):
    """At 1e-3 (the default until session 8, where the old encoder let Jim Calhoun in as George W Bush) they should
    stay outside too; a look-alike at 1e-3 per attempt is what that setting allows for one stranger in a thousand."""
    from kiosk import config

    class Looser(config.Config):
        def __init__(self):
            super().__init__()
            self.recognition.false_accept_rate = 1e-3

    monkeypatch.setattr(attacks, "Config", Looser)
    assert_held("5", tmp_path)


# 5. Attempts, logging and the lockout -----------------------------------------------------------------------


def test_stranger_stepping_out_of_view_every_4th_frame(tmp_path):
    assert_held("6a", tmp_path)


def test_printed_photo_stepping_out_of_view_every_4th_frame(tmp_path):
    assert_held("6b", tmp_path)


def test_stranger_leaving_and_coming_back_is_logged_every_time(tmp_path):
    assert_held("6c", tmp_path)


def test_stranger_standing_in_view_does_not_lock_the_resident_out(tmp_path):
    assert_held("7", tmp_path)


def test_restart_or_reboot_during_a_lockout(tmp_path):
    row = assert_held("8", tmp_path)
    assert len(row.trials) == 2


def test_attempts_during_a_lockout_are_logged(tmp_path):
    assert_held("11h", tmp_path)


# 7. Enrolment photos must agree ---------------------------------------------------------------------------


def test_a_strangers_photo_among_the_enrolment_photos(tmp_path):
    assert_held("9", tmp_path)


# 3. A lost gallery is an error, not a fresh start ------------------------------------------------------------


def test_zero_byte_gallery(tmp_path):
    assert_held("10a", tmp_path)


def test_deleted_gallery(tmp_path):
    assert_held("10b", tmp_path)


# 11. Further holes an intruder tries ------------------------------------------------------------------------


def test_small_printed_photo_far_from_the_camera(tmp_path):
    assert_held("11c", tmp_path)


def test_blurred_printed_photo(tmp_path):
    assert_held("11d", tmp_path)


def test_printed_photo_to_a_grayscale_camera(tmp_path):
    assert_held("11e", tmp_path)


def test_screen_replay_of_the_residents_video(tmp_path):
    """Held since motion no longer adds to the texture score: a replay moves like a live face (issue 14)."""
    assert_held("11f", tmp_path)


def test_print_of_the_residents_live_picture_held_up_by_hand(tmp_path):
    assert_held("11i", tmp_path)


def test_exact_replay_of_a_granted_attempt(tmp_path):
    assert_held("11g", tmp_path)


# The suite itself -----------------------------------------------------------------------------------------------


def test_every_attack_has_a_test():
    tested = {"C1", "C2", "C3", "1a", "1b", "1c", "2", "3a", "3b", "3c", "3d", "4a", "4b", "5", "6a", "6b", "6c", "7", "8", "9", "10a",
              "10b", "11a", "11b", "11c", "11d", "11e", "11f", "11g", "11h", "11i"}
    assert {a.id for a in ATTACKS} == tested


def test_cli_prints_the_table_and_writes_only_between_the_markers(tmp_path, capsys, monkeypatch):
    doc = tmp_path / "security.md"
    doc.write_text(f"before\n{attacks.MARK_START}\nold table\n{attacks.MARK_END}\nafter\n")
    row = play("C2", tmp_path / "c2")
    attacks.write_block(attacks.table([row], "header line"), doc)
    text = doc.read_text()
    assert text.startswith(f"before\n{attacks.MARK_START}\nheader line\n") and text.endswith(f"{attacks.MARK_END}\nafter\n")
    assert "old table" not in text and "| C2 |" in text
    assert attacks.main(["--fixtures", "--only", "C1", "C2"]) == 0
    out = capsys.readouterr().out
    assert "C1 control: the resident walks up, live -> opened yes" in out and "2 of 2 held" in out
    with pytest.raises(SystemExit) as exit_:
        attacks.main(["--help"])
    assert exit_.value.code == 0
