"""The SQLite gallery: people, embeddings, events, transactions, integrity."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kiosk.clock import FakeClock
from kiosk.errors import GalleryError
from kiosk.gallery import SCHEMA_VERSION, Gallery, template_mac
from kiosk.match import match
from tests.conftest import fill_the_disk


def unit(seed: int, size: int = 128) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=size).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def gallery(tmp_path):
    g = Gallery(tmp_path / "state" / "gallery.sqlite3", "model-a", clock=FakeClock())
    yield g
    g.close()


def test_first_person_is_admin_then_users(gallery):
    ann = gallery.add_person("Ann", np.stack([unit(1), unit(2)]))
    bob = gallery.add_person("Bob", unit(3))
    assert (ann.role, ann.embeddings) == ("admin", 2)
    assert (bob.role, bob.embeddings) == ("user", 1)
    assert gallery.admins() == {"Ann"}
    assert [e.kind for e in gallery.events()] == ["enrolled", "enrolled"]


def test_duplicate_and_bad_names_are_refused(gallery):
    gallery.add_person("Ann", unit(1))
    with pytest.raises(GalleryError) as error:
        gallery.add_person("Ann", unit(2))
    assert str(error.value).startswith("'Ann' is already enrolled: pick another name or remove the old one")
    assert "UNIQUE" not in str(error.value)
    for bad in ["", "   ", "x" * 65, "tab\tname"]:
        with pytest.raises(GalleryError, match="invalid name"):
            gallery.add_person(bad, unit(2))
    assert len(gallery.people()) == 1


def test_odd_but_printable_names_round_trip(gallery):
    for name in ["Zoë O'Brien", "李雷", "Robert'); DROP TABLE people;--"]:
        gallery.add_person(name, unit(len(name)))
    assert {p.name for p in gallery.people()} == {"Zoë O'Brien", "李雷", "Robert'); DROP TABLE people;--"}


def test_rename_set_role_remove_and_auto_names(gallery):
    gallery.add_person("person-1", unit(1))
    assert gallery.next_auto_name() == "person-2"
    gallery.rename("person-1", "Ann")
    gallery.add_person("Bob", unit(2))
    gallery.set_role("Bob", "admin")
    assert gallery.admins() == {"Ann", "Bob"}
    gallery.log_event("granted", "Bob", 0.8)
    gallery.remove("Bob")
    assert [p.name for p in gallery.people()] == ["Ann"]
    assert gallery.templates().names == ["Ann"]
    # Bob's events stay but no longer point at him.
    assert [e.person for e in gallery.events() if e.kind == "granted"] == [None]
    with pytest.raises(GalleryError, match="no enrolled person"):
        gallery.remove("Bob")


def test_renaming_to_a_taken_name_names_the_person_and_changes_nothing(gallery):
    gallery.add_person("Ann", unit(1))
    gallery.add_person("Bob", unit(2))
    with pytest.raises(GalleryError) as error:
        gallery.rename("Bob", "Ann")
    assert str(error.value).startswith("'Ann' is already enrolled: pick another name or remove the old one")
    assert "kiosk people remove Ann" in str(error.value) and "UNIQUE" not in str(error.value)
    assert [(p.name, p.embeddings) for p in gallery.people()] == [("Ann", 1), ("Bob", 1)]
    gallery.rename("Bob", "Bob")  # renaming to one's own name is no conflict
    assert [p.name for p in gallery.people()] == ["Ann", "Bob"]


def test_templates_of_another_model_are_not_used(tmp_path):
    path = tmp_path / "g.sqlite3"
    old = Gallery(path, "model-a")
    old.add_person("Ann", unit(1))
    old.close()
    new = Gallery(path, "model-b")
    assert new.templates().names == [] and new.stale_people() == ["Ann"]
    new.close()


def test_matching_needs_threshold_and_margin(gallery):
    gallery.add_person("Ann", unit(1))
    gallery.add_person("Bob", unit(2))
    templates = gallery.templates()
    probe = unit(1) + 0.05 * unit(5)
    probe /= np.linalg.norm(probe)
    result = match(probe, templates, threshold=0.5)
    assert result.person == "Ann" and result.score > 0.9
    assert match(probe, templates, threshold=0.9999).person is None
    twin = (unit(1) + unit(2)) / np.linalg.norm(unit(1) + unit(2))
    assert match(twin, templates, threshold=0.1, margin=0.05).person is None  # too close to call


def test_a_template_with_its_own_stricter_bar_needs_a_closer_match_and_the_runner_up_is_named(gallery):
    gallery.add_person("Ann", np.stack([unit(1), unit(3)]))
    gallery.add_person("Bob", unit(2))
    templates = gallery.templates()
    probe = unit(1) + 0.6 * unit(5)
    probe /= np.linalg.norm(probe)  # cosine 0.86 with Ann's first template
    assert match(probe, templates, threshold=0.5).person == "Ann"
    strict_first = np.array([0.9, 0.5, 0.5])  # Ann's first template resembles many strangers
    result = match(probe, templates, threshold=0.5, template_thresholds=strict_first)
    assert result.person is None and result.best == "Ann" and result.above(0.5)
    assert result.runner_up_name == "Bob"


def test_event_retention(gallery):
    gallery.log_event("denied", None, 0.2)
    gallery.clock.advance(40 * 86400)
    gallery.log_event("granted", None, 0.9)
    assert gallery.prune_events(30) >= 1
    assert [e.kind for e in gallery.events()] == ["granted"]


def test_failed_write_changes_nothing(gallery):
    gallery.add_person("Ann", unit(1))
    with pytest.raises(GalleryError):
        gallery.add_person("Bob", np.zeros((0, 8), np.float32))
    with pytest.raises(GalleryError):
        gallery.log_event("party")
    assert [p.name for p in gallery.people()] == ["Ann"]


def test_corrupt_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(GalleryError, match="restore a backup|cannot be opened"):
        Gallery(path, "model-a")
    assert path.read_bytes().startswith(b"this is not a database")


def test_schema_version_is_recorded(gallery):
    row = sqlite3.connect(gallery.path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert row == (str(SCHEMA_VERSION),) == ("4",)
    assert gallery.integrity_ok()


def test_backup_and_restore_round_trip_and_refuse_another_model(tmp_path):
    live = Gallery(tmp_path / "live.sqlite3", "model-a")
    live.add_person("Ann", unit(1))
    backup = live.backup(tmp_path / "backup.sqlite3")
    live.add_person("Bob", unit(2))
    live.close()
    assert (backup.stat().st_mode & 0o777) == 0o600
    assert Gallery.restore(backup, tmp_path / "live.sqlite3", "model-a") == 1
    restored = Gallery(tmp_path / "live.sqlite3", "model-a")
    assert [p.name for p in restored.people()] == ["Ann"]
    restored.close()
    with pytest.raises(GalleryError, match="different face model"):
        Gallery.restore(backup, tmp_path / "other.sqlite3", "model-b")
    assert not (tmp_path / "other.sqlite3").exists()
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(GalleryError, match="not a face-kiosk gallery"):
        Gallery.restore(junk, tmp_path / "other.sqlite3", "model-a")


def test_a_backup_never_overwrites_an_existing_file(tmp_path):
    live = Gallery(tmp_path / "live.sqlite3", "model-a")
    live.add_person("Ann", unit(1))
    older = tmp_path / "backup.sqlite3"
    older.write_bytes(b"the only copy of last year's gallery")
    with pytest.raises(GalleryError) as error:
        live.backup(older)
    assert str(error.value) == f"{older} already exists: delete it first or pick another name; nothing was written"
    assert older.read_bytes() == b"the only copy of last year's gallery"
    with pytest.raises(GalleryError, match="the folder .*missing does not exist; nothing was written"):
        live.backup(tmp_path / "missing" / "backup.sqlite3")
    assert sorted(path.name for path in tmp_path.iterdir() if "backup" in path.name) == ["backup.sqlite3"]  # no .part
    live.close()


def test_restoring_a_missing_file_or_a_folder_says_so_and_keeps_the_gallery(tmp_path):
    live = Gallery(tmp_path / "state" / "gallery.sqlite3", "model-a")
    live.add_person("Ann", unit(1))
    live.close()
    before = live.path.read_bytes()
    missing = tmp_path / "no-such-backup.sqlite3"
    with pytest.raises(GalleryError) as error:
        Gallery.restore(missing, live.path, "model-a")
    assert str(error.value).startswith(f"{missing} does not exist") and "not a" not in str(error.value)
    with pytest.raises(GalleryError, match="is a folder, not a backup file"):
        Gallery.restore(tmp_path, live.path, "model-a")
    assert live.path.read_bytes() == before


def test_gallery_file_is_private(gallery):
    assert (gallery.path.stat().st_mode & 0o777) == 0o600


# Stored embeddings are verified ------------------------------------------------------------------


def raw(gallery: Gallery) -> sqlite3.Connection:
    """A second connection to the gallery file, as someone editing it behind face-kiosk's back."""
    return sqlite3.connect(gallery.path, isolation_level=None)


def test_the_key_is_private_and_every_row_carries_a_check(gallery):
    gallery.add_person("Ann", np.stack([unit(1), unit(2)]))
    assert gallery.key_path.name == "gallery.key" and len(gallery.key_path.read_bytes()) == 32
    assert (gallery.key_path.stat().st_mode & 0o777) == 0o600
    macs = raw(gallery).execute("SELECT person_id, model_sha256, vector, mac FROM embeddings").fetchall()
    key = gallery.key_path.read_bytes()
    assert [mac for *_, mac in macs] == [template_mac(key, p, m, v) for p, m, v, _ in macs]
    assert gallery.damaged_templates() == []


def test_one_flipped_bit_does_not_let_strangers_in(gallery):
    """The SD-card rot from issue 11: one exponent bit flipped gave strangers a score of 1.9e36."""
    gallery.add_person("Ann", unit(1))
    gallery.add_person("Bob", unit(2))
    db = raw(gallery)
    (row_id, vector), = db.execute("SELECT e.id, e.vector FROM embeddings e JOIN people p ON p.id = e.person_id "
                                   "WHERE p.name = 'Ann'").fetchall()
    damaged = bytearray(vector)
    damaged[3] ^= 0x40  # the top exponent bit of the first number
    db.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (bytes(damaged), row_id))
    templates = gallery.templates()
    assert templates.names == ["Bob"]
    assert np.all(np.abs(templates.vectors) <= 1)
    for seed in range(10, 30):  # strangers
        assert match(unit(seed), templates, threshold=0.5).person is None
    (message,) = gallery.damaged_templates()
    assert "'Ann'" in message and "damaged or altered" in message
    assert "kiosk people remove Ann" in message and "kiosk enroll Ann" in message
    assert gallery.stale_people() == []  # damaged is not the same as enrolled under another model


def test_rows_of_the_wrong_length_moved_to_another_person_or_written_by_hand_are_refused(gallery):
    gallery.add_person("Ann", unit(1))
    gallery.add_person("Bob", unit(2))
    gallery.add_person("Carol", unit(3))
    gallery.add_person("Dan Ó'Neil", unit(4))
    db = raw(gallery)
    ids = dict(db.execute("SELECT name, id FROM people").fetchall())
    db.execute("UPDATE embeddings SET vector = x'00112233' WHERE person_id = ?", (ids["Ann"],))  # was a traceback
    db.execute("UPDATE embeddings SET person_id = ? WHERE person_id = ?", (ids["Carol"], ids["Bob"]))  # Bob's face as Carol
    key_thief_forgets_nothing = gallery.key_path.read_bytes()
    for name, vector in (("Dan Ó'Neil", np.full(128, np.nan, np.float32)), ("Dan Ó'Neil", 2 * unit(9))):
        db.execute("INSERT INTO embeddings (person_id, model_sha256, vector, created, mac) VALUES (?, ?, ?, 0, ?)",
                   (ids[name], "model-a", vector.tobytes(), template_mac(key_thief_forgets_nothing, ids[name], "model-a",
                                                                         vector.tobytes())))
    assert gallery.templates().names == ["Carol", "Dan Ó'Neil"]  # their own rows still pass
    messages = {m.split(":")[0]: m for m in gallery.damaged_templates()}
    assert set(messages) == {"'Ann'", "'Carol'", "\"Dan Ó'Neil\""}
    assert "kiosk people remove 'Dan Ó'\"'\"'Neil'" in messages["\"Dan Ó'Neil\""]
    assert "not finite" in messages["\"Dan Ó'Neil\""] and "length 2" in messages["\"Dan Ó'Neil\""]


def test_embeddings_that_would_be_refused_later_are_not_stored(gallery):
    for bad, why in ((unit(1, size=8), "128"), (np.full(128, np.inf, np.float32), "not finite"), (3 * unit(1), "length 3")):
        with pytest.raises(GalleryError, match=why):
            gallery.add_person("Ann", bad)
    assert gallery.people() == []


def test_a_missing_key_with_embeddings_is_refused_and_a_damaged_key_is_named(tmp_path):
    path = tmp_path / "state" / "gallery.sqlite3"
    Gallery(path, "model-a").add_person("Ann", unit(1))
    key = path.with_suffix(".key")
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(GalleryError, match=r"gallery\.key .* is missing.*kiosk restore"):
        Gallery(path, "model-a")
    key.write_bytes(saved[:5])
    with pytest.raises(GalleryError, match=r"gallery\.key is damaged \(5 bytes"):
        Gallery(path, "model-a")
    key.write_bytes(saved)
    assert Gallery(path, "model-a").templates().names == ["Ann"]


def schema_1_gallery(path: Path, names: list[str]) -> sqlite3.Connection:
    """A gallery as face-kiosk schema 1 wrote it (no checks on embeddings), people ids 1, 2, ...; add embeddings, close."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE embeddings (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
                                 model_sha256 TEXT NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, person_id INTEGER, score REAL,
                             detail TEXT NOT NULL DEFAULT '');
        INSERT INTO meta VALUES ('schema_version', '1');
    """)
    db.executemany("INSERT INTO people VALUES (?, ?, ?, 0)",
                   [(i, name, "admin" if i == 1 else "user") for i, name in enumerate(names, start=1)])
    return db


def test_a_schema_1_gallery_is_migrated_and_its_rows_signed(tmp_path):
    path = tmp_path / "state" / "gallery.sqlite3"
    path.parent.mkdir()
    db = schema_1_gallery(path, ["Ann", "Bob"])
    db.execute("INSERT INTO embeddings VALUES (1, 1, 'model-a', ?, 0)", (unit(1).tobytes(),))
    db.execute("INSERT INTO embeddings VALUES (2, 2, 'model-a', ?, 0)", (unit(2).tobytes()[:100],))  # already bad in v1
    db.close()
    gallery = Gallery(path, "model-a")
    assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert gallery.templates().names == ["Ann"]
    assert len(gallery.damaged_templates()) == 1 and "100 bytes instead of 512" in gallery.damaged_templates()[0]
    assert gallery.marker_path.exists() and gallery.key_path.exists()
    gallery.save_state("lockout_until", "12.5")
    assert gallery.load_state("lockout_until") == "12.5"


# A gallery that existed does not silently start over ---------------------------------------------


def test_a_missing_or_empty_gallery_where_one_existed_is_an_error(tmp_path):
    path = tmp_path / "state" / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.add_person("Ann", unit(1))
    gallery.close()  # checkpoints the write-ahead log into the file before the test empties it
    assert path.with_suffix(".created").exists()
    path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(GalleryError) as error:
        Gallery(path, "model-a")
    assert str(path) in str(error.value) and "empty (0 bytes)" in str(error.value)
    assert "kiosk restore BACKUP" in str(error.value) and "gallery.created" in str(error.value)
    assert path.read_bytes() == b""  # not turned into a new gallery
    path.unlink()
    with pytest.raises(GalleryError, match="is missing"):
        Gallery(path, "model-a")
    assert not path.exists()
    path.with_suffix(".created").unlink()  # deliberately starting over
    fresh = Gallery(path, "model-a")
    assert fresh.people() == [] and fresh.marker_path.exists()


def test_another_database_at_the_gallery_path_is_refused(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE notes (x)")
    with pytest.raises(GalleryError, match="not a face-kiosk gallery"):
        Gallery(path, "model-a")


# Door state -------------------------------------------------------------------------------------


def test_state_survives_reopening_and_a_failed_write_is_a_gallery_error(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    assert gallery.load_state("lockout_until") is None
    gallery.save_state("lockout_until", "1700000000.5")
    gallery.save_state("lockout_until", "1700000300.5")
    gallery.close()
    gallery = Gallery(path, "model-a")
    assert gallery.load_state("lockout_until") == "1700000300.5"
    fill_the_disk(gallery)
    with pytest.raises(GalleryError, match="disk is full"):
        gallery.save_state("lockout_until", "1" * 5000)
    assert gallery.read_only and gallery.load_state("lockout_until") == "1700000300.5"
    gallery.close()


# Backups carry their key -------------------------------------------------------------------------


def test_a_backup_restores_on_a_new_device_with_its_faces_checked_and_re_signed(tmp_path):
    live = Gallery(tmp_path / "pi" / "gallery.sqlite3", "model-a")
    live.add_person("Ann", np.stack([unit(1), unit(2)]))
    live.add_person("Bob", unit(3))
    backup = live.backup(tmp_path / "backup.sqlite3")
    live.close()
    assert (backup.stat().st_mode & 0o777) == 0o600
    new_device = tmp_path / "new-pi" / "gallery.sqlite3"  # an empty SD card: no key, no marker
    assert Gallery.restore(backup, new_device, "model-a") == 2
    assert new_device.with_suffix(".key").read_bytes() != (tmp_path / "pi" / "gallery.key").read_bytes()
    assert new_device.with_suffix(".created").exists()
    restored = Gallery(new_device, "model-a")
    assert restored.templates().names == ["Ann", "Ann", "Bob"] and restored.damaged_templates() == []
    assert sqlite3.connect(new_device).execute("SELECT COUNT(*) FROM meta WHERE key = 'backup_signing_key'").fetchone() == (0,)


def test_a_tampered_backup_row_stays_refused_and_a_backup_without_its_key_is_refused(tmp_path):
    live = Gallery(tmp_path / "pi" / "gallery.sqlite3", "model-a")
    live.add_person("Ann", unit(1))
    live.add_person("Bob", unit(2))
    backup = live.backup(tmp_path / "backup.sqlite3")
    live.close()
    db = sqlite3.connect(backup, isolation_level=None)
    db.execute("UPDATE embeddings SET person_id = (SELECT id FROM people WHERE name = 'Bob') "
               "WHERE person_id = (SELECT id FROM people WHERE name = 'Ann')")  # Ann's face now opens for Bob
    db.close()
    target = tmp_path / "pi" / "gallery.sqlite3"
    Gallery.restore(backup, target, "model-a")
    restored = Gallery(target, "model-a")
    assert restored.templates().names == ["Bob"]  # only Bob's own row
    assert [m.split(":")[0] for m in restored.damaged_templates()] == ["'Bob'"]
    restored.close()
    db = sqlite3.connect(backup, isolation_level=None)
    db.execute("DELETE FROM meta WHERE key = 'backup_signing_key'")
    db.close()
    before = target.read_bytes()
    with pytest.raises(GalleryError, match="no valid signing key"):
        Gallery.restore(backup, target, "model-a")
    assert target.read_bytes() == before


def test_a_schema_1_backup_is_restored_and_signed_when_opened(tmp_path):
    backup = tmp_path / "old-backup.sqlite3"
    db = schema_1_gallery(backup, ["Ann"])
    db.execute("INSERT INTO embeddings VALUES (1, 1, 'model-a', ?, 0)", (unit(1).tobytes(),))
    db.close()
    target = tmp_path / "state" / "gallery.sqlite3"
    assert Gallery.restore(backup, target, "model-a") == 1
    assert Gallery(target, "model-a").templates().names == ["Ann"]


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring as root (sudo kiosk restore) needs root")
def test_a_restore_by_root_leaves_the_files_to_the_service_user(tmp_path):
    live = Gallery(tmp_path / "pi" / "gallery.sqlite3", "model-a")
    live.add_person("Ann", unit(1))
    backup = live.backup(tmp_path / "backup.sqlite3")
    live.close()
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service user's state folder
    Gallery.restore(backup, state / "gallery.sqlite3", "model-a")
    for name in ("gallery.sqlite3", "gallery.key", "gallery.created"):
        assert ((state / name).stat().st_uid, (state / name).stat().st_mode & 0o777) == (65534, 0o600), name


def test_a_schema_3_gallery_keeps_its_events_and_then_logs_admin_actions(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    gallery = Gallery(path, "model-a")
    gallery.log_event("unknown", None, 0.2, "a stranger")
    gallery.close()
    db = sqlite3.connect(path)  # back to schema 3: the event log's CHECK without 'admin'
    with db:
        db.executescript("""
            CREATE TABLE old (id INTEGER PRIMARY KEY, time REAL NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('granted', 'denied', 'unknown', 'spoof', 'enrolled', 'error')),
                person_id INTEGER REFERENCES people(id) ON DELETE SET NULL, score REAL, detail TEXT NOT NULL DEFAULT '');
            INSERT INTO old SELECT * FROM events; DROP TABLE events; ALTER TABLE old RENAME TO events;
            CREATE INDEX events_time ON events(time);
            UPDATE meta SET value = '3' WHERE key = 'schema_version';
        """)
    db.close()
    gallery = Gallery(path, "model-a")
    gallery.log_event("admin", None, None, "lockout ended by alice (uid 1000)")
    assert [(e.kind, e.detail) for e in gallery.events()] == [("unknown", "a stranger"),
                                                             ("admin", "lockout ended by alice (uid 1000)")]
    assert gallery.integrity_ok()
    gallery.close()
