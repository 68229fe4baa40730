"""Enrolled people, their embeddings and the event log, in one SQLite file.

Every write is one transaction, so a crash or a full disk leaves either the
old or the new state, never half of one. The schema carries a version
number; the file is integrity-checked when opened. Embeddings are tied to
the SHA-256 of the model that made them: those of another model are useless
(and are refused) because every model has its own embedding space.
No face images are stored.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.face import FaceKioskError

SCHEMA_VERSION = 1
ROLES = ("admin", "user")
EVENT_KINDS = ("granted", "denied", "unknown", "spoof", "enrolled", "error")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    model_sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('granted', 'denied', 'unknown', 'spoof', 'enrolled', 'error')),
    person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
    score REAL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
"""


class GalleryError(FaceKioskError):
    """The gallery database cannot be used (corrupt, locked, full disk, bad request)."""


@dataclass(frozen=True)
class Person:
    """One enrolled person."""

    id: int
    name: str
    role: str
    created: float
    embeddings: int


@dataclass(frozen=True)
class EventRecord:
    """One row of the event log."""

    time: float
    kind: str
    person: str | None
    score: float | None
    detail: str


@dataclass(frozen=True)
class Templates:
    """All embeddings of the current model, for matching: ``vectors[i]`` belongs to ``names[i]``."""

    names: list[str]
    vectors: np.ndarray


class Gallery:
    """The SQLite gallery and event log (see module docstring)."""

    def __init__(self, path: Path, model_sha256: str, clock=time.time) -> None:
        self.path = Path(path)
        self.model_sha256 = model_sha256
        self.clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
            self.path.chmod(0o600)  # biometric data: the service user only
        except sqlite3.DatabaseError as error:
            raise GalleryError(
                f"gallery {self.path} cannot be opened ({error}). If it is corrupt, move it aside and restore "
                "a backup (kiosk restore), or re-enrol; the door stays locked meanwhile."
            ) from error
        if ok != "ok":
            raise GalleryError(f"gallery {self.path} failed its integrity check ({ok}); restore a backup (kiosk restore)")
        with self._write() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) > SCHEMA_VERSION:
                raise GalleryError(f"gallery {self.path} has schema {version[0]}, newer than this face-kiosk ({SCHEMA_VERSION}); upgrade face-kiosk")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: all or nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise GalleryError(f"gallery {self.path} is busy or read-only ({error})") from error
        try:
            yield self._db
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            self._rollback()
            raise GalleryError(f"could not save to gallery {self.path} ({error}); nothing was changed. Is the disk full?") from error

    def _rollback(self) -> None:
        """Undo the open transaction; SQLite has already undone it after some errors (a full disk)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _guard(self, action):
        try:
            with self._write() as db:
                return action(db)
        except sqlite3.IntegrityError as error:
            raise GalleryError(str(error)) from error
        except sqlite3.OperationalError as error:
            raise GalleryError(f"could not save to gallery {self.path} ({error}); nothing was changed. Is the disk full?") from error

    # People ---------------------------------------------------------------------------------

    def add_person(self, name: str, embeddings: np.ndarray, role: str | None = None) -> Person:
        """Enrol ``name`` with one or more embeddings; the first person ever becomes admin."""
        name = validate_name(name)
        vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if vectors.shape[0] == 0:
            raise GalleryError(f"no face embeddings to enrol {name!r} with")

        def action(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchone():
                raise GalleryError(f"{name!r} is already enrolled; pick another name or remove them first")
            chosen = role or ("admin" if db.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 0 else "user")
            if chosen not in ROLES:
                raise GalleryError(f"role must be one of {', '.join(ROLES)}, not {chosen!r}")
            now = self.clock()
            person_id = db.execute("INSERT INTO people (name, role, created) VALUES (?, ?, ?)", (name, chosen, now)).lastrowid
            db.executemany(
                "INSERT INTO embeddings (person_id, model_sha256, vector, created) VALUES (?, ?, ?, ?)",
                [(person_id, self.model_sha256, v.tobytes(), now) for v in vectors],
            )
            db.execute("INSERT INTO events (time, kind, person_id, score, detail) VALUES (?, 'enrolled', ?, NULL, ?)",
                       (now, person_id, f"{len(vectors)} embeddings, role {chosen}"))
            return person_id

        self._guard(action)
        return self.person(name)

    def next_auto_name(self) -> str:
        """The first free ``person-<n>`` name (button enrolment names people this way)."""
        taken = {p.name for p in self.people()}
        n = 1
        while f"person-{n}" in taken:
            n += 1
        return f"person-{n}"

    def people(self) -> list[Person]:
        rows = self._db.execute(
            "SELECT p.id, p.name, p.role, p.created, COUNT(e.id) FROM people p "
            "LEFT JOIN embeddings e ON e.person_id = p.id GROUP BY p.id ORDER BY p.created, p.id"
        ).fetchall()
        return [Person(*row) for row in rows]

    def person(self, name: str) -> Person:
        for person in self.people():
            if person.name == name:
                return person
        raise GalleryError(f"no enrolled person is called {name!r} (see: kiosk people list)")

    def rename(self, old: str, new: str) -> None:
        new = validate_name(new)
        person = self.person(old)
        self._guard(lambda db: db.execute("UPDATE people SET name = ? WHERE id = ?", (new, person.id)))

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise GalleryError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        person = self.person(name)
        self._guard(lambda db: db.execute("UPDATE people SET role = ? WHERE id = ?", (role, person.id)))

    def remove(self, name: str) -> None:
        """Delete a person: their embeddings go, and events no longer point to them."""
        person = self.person(name)
        self._guard(lambda db: db.execute("DELETE FROM people WHERE id = ?", (person.id,)))

    def admins(self) -> set[str]:
        return {p.name for p in self.people() if p.role == "admin"}

    def templates(self) -> Templates:
        """Every embedding made by the current model."""
        rows = self._db.execute(
            "SELECT p.name, e.vector FROM embeddings e JOIN people p ON p.id = e.person_id WHERE e.model_sha256 = ? ORDER BY e.id",
            (self.model_sha256,),
        ).fetchall()
        if not rows:
            return Templates([], np.zeros((0, 0), np.float32))
        return Templates([r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))

    def stale_people(self) -> list[str]:
        """People with no embedding from the current model (enrolled under another model)."""
        return [p.name for p in self.people() if p.name not in set(self.templates().names)]

    # Events ---------------------------------------------------------------------------------

    def log_event(self, kind: str, person: str | None = None, score: float | None = None, detail: str = "",
                  when: float | None = None) -> None:
        """Append an event, stamped ``when`` (default now)."""
        if kind not in EVENT_KINDS:
            raise GalleryError(f"unknown event kind {kind!r}")

        def action(db: sqlite3.Connection) -> None:
            person_id = None
            if person is not None:
                row = db.execute("SELECT id FROM people WHERE name = ?", (person,)).fetchone()
                person_id = row[0] if row else None
            db.execute("INSERT INTO events (time, kind, person_id, score, detail) VALUES (?, ?, ?, ?, ?)",
                       (self.clock() if when is None else when, kind, person_id, score, detail))

        self._guard(action)

    def events(self, since: float | None = None, limit: int | None = None) -> list[EventRecord]:
        query = "SELECT ev.time, ev.kind, p.name, ev.score, ev.detail FROM events ev LEFT JOIN people p ON p.id = ev.person_id"
        params: list = []
        if since is not None:
            query += " WHERE ev.time >= ?"
            params.append(since)
        query += " ORDER BY ev.time, ev.id"
        rows = self._db.execute(query, params).fetchall()
        if limit is not None:
            rows = rows[-limit:]
        return [EventRecord(*row) for row in rows]

    def prune_events(self, retention_days: float) -> int:
        """Delete events older than ``retention_days``; returns how many went."""
        cutoff = self.clock() - retention_days * 86400
        return self._guard(lambda db: db.execute("DELETE FROM events WHERE time < ?", (cutoff,)).rowcount)

    def backup(self, target: Path) -> Path:
        """Copy the whole gallery to ``target`` (SQLite's online backup: consistent while in use)."""
        target = Path(target)
        partial = target.with_name(target.name + ".part")
        try:
            copy = sqlite3.connect(partial)
            with copy:
                self._db.backup(copy)
            copy.close()
            partial.chmod(0o600)
            partial.replace(target)
        except (sqlite3.Error, OSError) as error:
            partial.unlink(missing_ok=True)
            raise GalleryError(f"backup to {target} failed ({error}); nothing was written") from error
        return target

    @staticmethod
    def restore(source: Path, target: Path, model_sha256: str) -> int:
        """Replace the gallery at ``target`` with the backup ``source``; returns the people restored.

        Refuses a file that is not a face-kiosk gallery, fails its integrity
        check, or holds embeddings of a different model (they would never match).
        """
        source, target = Path(source), Path(target)
        try:
            db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            try:
                if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise GalleryError(f"{source} failed its integrity check; it cannot be restored")
                db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                models = {row[0] for row in db.execute("SELECT DISTINCT model_sha256 FROM embeddings")}
                people = db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error as error:
            raise GalleryError(f"{source} is not a face-kiosk gallery backup ({error})") from error
        if models and models != {model_sha256}:
            raise GalleryError(
                f"{source} was made with a different face model ({', '.join(m[:12] for m in models)}...); "
                f"its embeddings cannot match this model ({model_sha256[:12]}...). Re-enrol instead."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".restoring")
        partial.write_bytes(source.read_bytes())
        partial.chmod(0o600)
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        partial.replace(target)
        return int(people)

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def validate_name(name: str) -> str:
    """A person's name: printable, 1-64 characters, no leading/trailing blanks."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 64 or not cleaned.isprintable():
        raise GalleryError(f"invalid name {name!r}: use 1-64 printable characters")
    return cleaned
