"""The SQLite gallery: people, embeddings, events, transactions, integrity."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from kiosk.clock import FakeClock
from kiosk.gallery import Gallery, GalleryError
from kiosk.match import match


def unit(seed: int, size: int = 8) -> np.ndarray:
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
    with pytest.raises(GalleryError, match="already enrolled"):
        gallery.add_person("Ann", unit(2))
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
    assert row == ("1",)
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


def test_gallery_file_is_private(gallery):
    assert (gallery.path.stat().st_mode & 0o777) == 0o600
