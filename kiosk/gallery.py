"""Enrolled people, their embeddings and the event log, in one SQLite file.

Every write is one transaction, so a crash or a full disk leaves either the
old or the new state, never half of one. The schema carries a version
number; the file is integrity-checked when opened. Embeddings are tied to
the SHA-256 of the model that made them: those of another model are useless
(and are refused) because every model has its own embedding space.
No face images are stored.

Three small files live beside the database (for ``gallery.sqlite3``):

- ``gallery.key``: 32 random bytes (mode 0600). Every stored embedding
  carries an HMAC-SHA256 of its person id, model hash and vector bytes under
  this key, so a flipped bit on the SD card, a row copied to another person
  or a vector written by hand is refused instead of matched.
- ``gallery.created``: written once a gallery exists. A missing or empty
  database while it exists is an error (restore a backup), never a fresh
  start in which the next button press makes an admin.

When the disk is full or the file system read-only, an existing gallery is
opened read-only (:attr:`Gallery.read_only`): the door keeps recognising the
people enrolled, writes raise :class:`GalleryError`, and the gallery goes
back to normal by itself once it can be written again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shlex
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from kiosk.errors import GalleryError, ScheduleError
from kiosk.schedule import Schedule

SCHEMA_VERSION = 4
ROLES = ("admin", "user")
EVENT_KINDS = ("granted", "denied", "unknown", "spoof", "enrolled", "error", "admin")
EMBEDDING_SIZE = 128
"""Numbers per embedding (the shipped encoder's output); a stored vector of another length is refused."""
UNIT_NORM_TOLERANCE = 1e-3
"""Embeddings are L2-normalised; a stored vector whose length is further than this from 1 is refused."""
KEY_BYTES = 32
BACKUP_KEY_ROW = "backup_signing_key"
"""The ``meta`` row that carries the signing key inside a ``kiosk backup`` file (never in a live gallery)."""
REOPEN_SECONDS = 5.0
"""A gallery opened read-only tries to reopen for writing at most this often."""
WAL_HEADER_BYTES = 32

EVENTS_TABLE = f"""CREATE TABLE {{name}} (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(f"'{kind}'" for kind in EVENT_KINDS)})),
        person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
        score REAL,
        detail TEXT NOT NULL DEFAULT ''
    )"""
SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        created REAL NOT NULL,
        schedule TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        model_sha256 TEXT NOT NULL,
        vector BLOB NOT NULL,
        created REAL NOT NULL,
        mac BLOB NOT NULL
    )""",
    EVENTS_TABLE.format(name="events"),
    "CREATE INDEX events_time ON events(time)",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]
MIGRATION_1_TO_2 = [
    "ALTER TABLE embeddings ADD COLUMN mac BLOB NOT NULL DEFAULT x''",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]
MIGRATION_2_TO_3 = ["ALTER TABLE people ADD COLUMN schedule TEXT NOT NULL DEFAULT ''"]
MIGRATION_3_TO_4 = [  # admin actions in the event log: SQLite cannot change a CHECK, so the table is copied
    EVENTS_TABLE.format(name="events_4"),
    "INSERT INTO events_4 SELECT id, time, kind, person_id, score, detail FROM events",
    "DROP TABLE events",
    "ALTER TABLE events_4 RENAME TO events",
    "CREATE INDEX events_time ON events(time)",
]

T = TypeVar("T")


def remove_face_images(snapshot_dir: Path, thumbnail_dir: Path, person_id: int) -> int:
    """Delete every stored picture of one person (event snapshots, the thumbnail they agreed to); how many went."""
    paths = [*(snapshot_dir.glob(f"*_p{person_id}.jpg") if snapshot_dir.is_dir() else []),
             *(path for path in [thumbnail_dir / f"p{person_id}.jpg"] if path.exists())]
    for path in paths:
        path.unlink()
    return len(paths)


def snapshot_name(when: float, kind: str, person_id: int) -> str:
    """The file name of an event's snapshot in ``<state_dir>/snapshots``: the event's logged time, kind and person id
    (0: nobody recognised), so the event log finds it and removing a person finds theirs."""
    return f"{when:.3f}_{kind}_p{person_id}.jpg"


def _stored_schedule(name: str, text: str) -> Schedule:
    """A stored schedule; one that no longer reads (edited by hand) lets the person in at no time, and says why."""
    try:
        return Schedule.parse(text)
    except ScheduleError as error:
        return Schedule(unreadable=f"the schedule stored for {name!r} cannot be read ({error}); set it again with "
                                   f"kiosk people schedule {name} SCHEDULE")


@dataclass(frozen=True)
class Person:
    """One enrolled person."""

    id: int
    name: str
    role: str
    created: float
    embeddings: int
    schedule: Schedule = Schedule()


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
    """All verified embeddings of the current model, for matching: ``vectors[i]`` belongs to ``names[i]``."""

    names: list[str]
    vectors: np.ndarray


class Gallery:
    """The SQLite gallery and event log (see module docstring)."""

    def __init__(self, path: Path, model_sha256: str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.model_sha256 = model_sha256
        self.clock = clock
        self.key_path = self.path.with_suffix(".key")
        self.marker_path = self.path.with_suffix(".created")
        self.read_only = False
        """True while the gallery cannot be written (full disk, read-only file or file system)."""
        self._immutable = False
        self._read_only_reason = ""
        self._reopen_after = 0.0
        self._key: bytes | None = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise GalleryError(f"cannot create the state folder {self.path.parent} ({error})") from error
        existed = self._check_existing_file()
        self._db = self._open(existed)
        try:
            self._prepare_schema()
        except BaseException:
            self._db.close()
            raise
        _make_private(self.path)
        self.read_only = self._immutable or not os.access(self.path, os.W_OK)
        if not self.marker_path.exists():
            try:
                write_private_file(self.marker_path, MARKER_TEXT.format(gallery=self.path.name).encode())
            except OSError:
                pass  # full or read-only disk: the marker is written at the next start that can write

    def close(self) -> None:
        self._db.close()

    # Opening ------------------------------------------------------------------------------------

    def _check_existing_file(self) -> bool:
        """Whether a gallery file with content exists; a missing or empty one where a gallery was created is an error."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = -1
        except OSError as error:
            raise GalleryError(f"cannot read gallery {self.path} ({error})") from error
        if size <= 0 and self.marker_path.exists():
            raise GalleryError(self._lost_message("is missing" if size < 0 else "is empty (0 bytes)"))
        return size > 0

    def _lost_message(self, what: str) -> str:
        return (
            f"gallery {self.path} {what}, but a gallery was created here ({self.marker_path} exists): the enrolled "
            "people are lost, this is not a fresh start. Restore a backup (sudo systemctl stop kiosk; kiosk restore "
            f"BACKUP), or delete {self.marker_path} to start over deliberately with nobody enrolled. "
            "The door stays locked meanwhile."
        )

    def _open(self, existed: bool) -> sqlite3.Connection:
        """Connect and integrity-check; an existing file that cannot be written is opened read-only."""
        try:
            db = self._connect()
        except sqlite3.OperationalError as error:
            if not (existed and _storage_unwritable(error)):
                raise GalleryError(f"gallery {self.path} cannot be opened ({error}); {self._hint(error)}") from error
            if self._wal_has_changes():
                raise GalleryError(
                    f"gallery {self.path} cannot be opened ({error}), not even read-only: its write-ahead log "
                    f"{self.path}-wal holds changes that need space to be read; {self._hint(error)}"
                ) from error
            db = self._connect_read_only(error)
        except sqlite3.DatabaseError as error:
            raise GalleryError(self._damaged_message(str(error))) from error
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.OperationalError as error:
            db.close()
            raise GalleryError(f"gallery {self.path} cannot be read ({error}); {self._hint(error)}") from error
        except sqlite3.DatabaseError as error:
            db.close()
            raise GalleryError(self._damaged_message(str(error))) from error
        if ok != "ok":
            db.close()
            raise GalleryError(self._damaged_message(f"integrity check: {ok}"))
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _connect_read_only(self, cause: sqlite3.Error) -> sqlite3.Connection:
        """Open the file as unchangeable: SQLite then needs no shared-memory file, which a full disk cannot hold.

        Only safe when the write-ahead log holds nothing (checked by the caller):
        everything committed is then in the main file.
        """
        try:
            db = sqlite3.connect(self.path.resolve().as_uri() + "?immutable=1", uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise GalleryError(
                f"gallery {self.path} cannot be opened, not even read-only ({error}); {self._hint(error)}") from error
        self._immutable = True
        self.read_only = True
        self._read_only_reason = f"{cause}; {self._hint(cause)}"
        return db

    def _wal_has_changes(self) -> bool:
        try:
            return Path(f"{self.path}-wal").stat().st_size > WAL_HEADER_BYTES
        except FileNotFoundError:
            return False

    def _damaged_message(self, detail: str) -> str:
        return (
            f"gallery {self.path} is damaged ({' '.join(detail.split())}). Move it aside and restore a backup "
            "(sudo systemctl stop kiosk; kiosk restore BACKUP), or re-enrol; the door stays locked meanwhile."
        )

    def _hint(self, error: sqlite3.Error) -> str:
        """What to do about a storage error; never 'restore a backup' (the file is not known to be damaged)."""
        name = getattr(error, "sqlite_errorname", "")
        folder = self.path.parent
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return "another kiosk command is using it; try again"
        if name in ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"):
            return f"the disk is full: free space (df -h {folder}; sudo journalctl --vacuum-size=100M)"
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
            return f"the file, its folder or the file system is read-only or not readable by this user (ls -la {folder}; mount)"
        return f"the disk may be full or failing: check df -h {folder} and dmesg"

    def _prepare_schema(self) -> None:
        """Create, upgrade or check the schema, and load the signing key."""
        version = self._read(lambda db: _schema_version(db, self.path))
        if version is None:
            if self.marker_path.exists():
                raise GalleryError(self._lost_message("holds no gallery"))
            self._key = load_or_create_key(self.key_path)
            with self._write() as db:
                for statement in SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version > SCHEMA_VERSION:
            raise GalleryError(
                f"gallery {self.path} has schema {version}, newer than this face-kiosk ({SCHEMA_VERSION}); upgrade face-kiosk")
        elif version < SCHEMA_VERSION:
            self._migrate(version)
        else:
            self._load_key()

    def _load_key(self) -> None:
        """The signing key; its loss is an error when there are stored faces it should prove."""
        self._key = read_key(self.key_path)
        has_embeddings = self._read(lambda db: db.execute("SELECT EXISTS (SELECT 1 FROM embeddings)").fetchone()[0])
        if self._key is None and has_embeddings:
            raise GalleryError(
                f"the key {self.key_path} that proves the stored faces in {self.path} were written by face-kiosk is "
                f"missing, so none of them can be trusted. Put it back if you moved it; otherwise restore a backup "
                f"(sudo systemctl stop kiosk; kiosk restore BACKUP) or start over (move {self.path} aside, delete "
                f"{self.marker_path}) and re-enrol everyone."
            )

    def _migrate(self, version: int) -> None:
        """Upgrade to the current schema in one transaction. From schema 1, existing embeddings are signed
        (trusted as they are now); from 2, people get a schedule (always); from 3, the event log takes admin
        actions."""
        if self._immutable:
            raise GalleryError(
                f"gallery {self.path} must be upgraded to schema {SCHEMA_VERSION} (it has {version}) but cannot be "
                f"written now (disk full or read-only); free space (df -h {self.path.parent}) and start again"
            )
        key = load_or_create_key(self.key_path) if version < 2 else None
        with self._write() as db:
            if key is not None:
                for statement in MIGRATION_1_TO_2:
                    db.execute(statement)
                rows = db.execute("SELECT id, person_id, model_sha256, vector FROM embeddings").fetchall()
                db.executemany("UPDATE embeddings SET mac = ? WHERE id = ?",
                               [(template_mac(key, person_id, model, vector), row_id)
                                for row_id, person_id, model, vector in rows if isinstance(vector, bytes)])
            for statement in (MIGRATION_2_TO_3 if version < 3 else []) + MIGRATION_3_TO_4:
                db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        self._load_key()

    # Reading and writing ---------------------------------------------------------------------------

    def _reopen_if_read_only(self) -> None:
        """Once a read-only gallery can be opened normally again (space freed), switch to that connection."""
        if not self._immutable or time.monotonic() < self._reopen_after:
            return
        self._reopen_after = time.monotonic() + REOPEN_SECONDS
        try:
            db = self._connect()
        except sqlite3.Error:
            return
        self._db.close()
        self._db, self._immutable, self.read_only = db, False, False

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return query(self._db)
        except sqlite3.OperationalError as error:
            raise GalleryError(f"cannot read gallery {self.path} ({error}); {self._hint(error)}") from error
        except sqlite3.DatabaseError as error:
            raise GalleryError(self._damaged_message(str(error))) from error

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: all or nothing."""
        self._reopen_if_read_only()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._write_error(error) from error
        try:
            yield self._db
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise self._write_error(error) from error
        self.read_only = False

    def _write_error(self, error: sqlite3.Error) -> GalleryError:
        if _storage_unwritable(error):
            self.read_only = True
        name = getattr(error, "sqlite_errorname", "")
        if self._immutable:
            return GalleryError(f"could not save to gallery {self.path}: it is open read-only, because it could not be "
                                f"opened for writing ({self._read_only_reason}); nothing was changed")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return GalleryError(f"gallery {self.path} is busy ({error}): another kiosk command is writing to it; "
                                "nothing was changed, try again")
        return GalleryError(f"could not save to gallery {self.path} ({error}); nothing was changed. {self._hint(error)}")

    def _rollback(self) -> None:
        """Undo the open transaction; SQLite has already undone it after some errors (a full disk)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _guard(self, action: Callable[[sqlite3.Connection], T], name: str | None = None) -> T:
        """Run ``action`` in one write transaction; ``name`` is the person name it writes, for the duplicate-name message."""
        try:
            with self._write() as db:
                return action(db)
        except sqlite3.IntegrityError as error:
            if name is not None and "people.name" in str(error):
                raise GalleryError(f"{name!r} is already enrolled: pick another name or remove the old one "
                                   f"(kiosk people remove {shlex.quote(name)}); nothing was changed") from error
            raise GalleryError(f"gallery {self.path} refused the change ({error}); nothing was changed") from error
        except sqlite3.Error as error:
            raise self._write_error(error) from error

    def _signing_key(self) -> bytes:
        """The key new embeddings are signed with (created here if a gallery without embeddings lost it)."""
        if self._key is None:
            try:
                self._key = load_or_create_key(self.key_path)
            except GalleryError as error:
                raise GalleryError(f"{error}; nothing was changed") from error
        return self._key

    # People ---------------------------------------------------------------------------------

    def add_person(self, name: str, embeddings: np.ndarray, role: str | None = None) -> Person:
        """Enrol ``name`` with one or more embeddings; the first person ever becomes admin."""
        name = validate_name(name)
        vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if vectors.shape[0] == 0:
            raise GalleryError(f"no face embeddings to enrol {name!r} with")
        for vector in vectors:
            problem = vector_problem(vector)
            if problem is not None:
                raise GalleryError(f"cannot enrol {name!r}: an embedding {problem}")
        key = self._signing_key()

        def action(db: sqlite3.Connection) -> int:
            chosen = role or ("admin" if db.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 0 else "user")
            if chosen not in ROLES:
                raise GalleryError(f"role must be one of {', '.join(ROLES)}, not {chosen!r}")
            now = self.clock()
            person_id = db.execute("INSERT INTO people (name, role, created) VALUES (?, ?, ?)", (name, chosen, now)).lastrowid
            db.executemany(
                "INSERT INTO embeddings (person_id, model_sha256, vector, created, mac) VALUES (?, ?, ?, ?, ?)",
                [(person_id, self.model_sha256, v.tobytes(), now, template_mac(key, person_id, self.model_sha256, v.tobytes()))
                 for v in vectors],
            )
            db.execute("INSERT INTO events (time, kind, person_id, score, detail) VALUES (?, 'enrolled', ?, NULL, ?)",
                       (now, person_id, f"{len(vectors)} embeddings, role {chosen}"))
            return person_id

        self._guard(action, name)
        return self.person(name)

    def next_auto_name(self) -> str:
        """The first free ``person-<n>`` name (button enrolment names people this way)."""
        taken = {p.name for p in self.people()}
        n = 1
        while f"person-{n}" in taken:
            n += 1
        return f"person-{n}"

    def people(self) -> list[Person]:
        rows = self._read(lambda db: db.execute(
            "SELECT p.id, p.name, p.role, p.created, COUNT(e.id), p.schedule FROM people p "
            "LEFT JOIN embeddings e ON e.person_id = p.id GROUP BY p.id ORDER BY p.created, p.id"
        ).fetchall())
        return [Person(*row[:5], _stored_schedule(row[1], row[5])) for row in rows]

    def person(self, name: str) -> Person:
        for person in self.people():
            if person.name == name:
                return person
        raise GalleryError(f"no enrolled person is called {name!r} (see: kiosk people list)")

    def rename(self, old: str, new: str) -> None:
        new = validate_name(new)
        person = self.person(old)
        self._guard(lambda db: db.execute("UPDATE people SET name = ? WHERE id = ?", (new, person.id)), new)

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise GalleryError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        person = self.person(name)
        self._guard(lambda db: db.execute("UPDATE people SET role = ? WHERE id = ?", (role, person.id)))

    def set_schedule(self, name: str, schedule: str) -> Schedule:
        """When ``name`` may be let in (see :mod:`kiosk.schedule`); ``always`` lifts the restriction."""
        parsed = Schedule.parse(schedule)
        person = self.person(name)
        self._guard(lambda db: db.execute("UPDATE people SET schedule = ? WHERE id = ?",
                                          ("" if not parsed.rules else str(parsed), person.id)))
        return parsed

    def remove(self, name: str) -> None:
        """Delete a person: their embeddings go, and events no longer point to them."""
        person = self.person(name)
        self._guard(lambda db: db.execute("DELETE FROM people WHERE id = ?", (person.id,)))

    def admins(self) -> set[str]:
        return {p.name for p in self.people() if p.role == "admin"}

    def templates(self) -> Templates:
        """Every embedding of the current model that passes its checks (damaged ones: :meth:`damaged_templates`)."""
        self._reopen_if_read_only()
        return self._checked_templates()[0]

    def damaged_templates(self) -> list[str]:
        """One message per person with stored embeddings that were refused, saying how to re-enrol them."""
        messages = []
        for name, problems in self._checked_templates()[1].items():
            messages.append(
                f"{name!r}: {len(problems)} stored face embedding(s) refused ({'; '.join(sorted(set(problems)))}), "
                f"so they may not be recognised; re-enrol them: kiosk people remove {shlex.quote(name)}, then "
                f"kiosk enroll {shlex.quote(name)} --images PHOTOS (or --camera)"
            )
        return messages

    def _checked_templates(self) -> tuple[Templates, dict[str, list[str]]]:
        rows = self._read(lambda db: db.execute(
            "SELECT p.name, e.person_id, e.vector, e.mac FROM embeddings e JOIN people p ON p.id = e.person_id "
            "WHERE e.model_sha256 = ? ORDER BY e.id", (self.model_sha256,)
        ).fetchall())
        if rows and self._key is None:
            self._key = read_key(self.key_path)  # another process enrolled the first person and created it
        names, vectors, problems = [], [], {}
        for name, person_id, vector, mac in rows:
            problem = template_problem(self._key, person_id, self.model_sha256, vector, mac)
            if problem is None:
                names.append(name)
                vectors.append(np.frombuffer(vector, dtype=np.float32))
            else:
                problems.setdefault(name, []).append(problem)
        stacked = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        return Templates(names, stacked), problems

    def stale_people(self) -> list[str]:
        """People with no embedding from the current model (enrolled under another model)."""
        current = self._read(lambda db: {row[0] for row in db.execute(
            "SELECT DISTINCT person_id FROM embeddings WHERE model_sha256 = ?", (self.model_sha256,))})
        return [p.name for p in self.people() if p.id not in current]

    # Door state -----------------------------------------------------------------------------

    def load_state(self, key: str) -> str | None:
        """A value the door keeps across restarts (e.g. when a lockout ends), or None."""
        row = self._read(lambda db: db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone())
        return None if row is None else row[0]

    def save_state(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``; raises :class:`GalleryError` if it cannot be written."""
        self._guard(lambda db: db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)))

    # Events ---------------------------------------------------------------------------------

    def log_event(self, kind: str, person: str | None = None, score: float | None = None, detail: str = "",
                  when: float | None = None) -> None:
        """Append an event, stamped ``when`` (default now); :class:`GalleryError` if it cannot be written."""
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

    def events(self, since: float | None = None, limit: int | None = None, until: float | None = None,
               kind: str | None = None, person: str | None = None, newest_first: bool = False,
               offset: int = 0) -> list[EventRecord]:
        """Events from ``since`` to before ``until``, of one ``kind`` or ``person`` if given; oldest first, or the
        newest first when paging (``limit`` rows after skipping ``offset``). Without ``newest_first``, ``limit``
        keeps the last rows."""
        query = "SELECT ev.time, ev.kind, p.name, ev.score, ev.detail FROM events ev LEFT JOIN people p ON p.id = ev.person_id"
        conditions, params = [], []
        for condition, value in (("ev.time >= ?", since), ("ev.time < ?", until), ("ev.kind = ?", kind),
                                 ("p.name = ?", person)):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        if newest_first:
            query += " ORDER BY ev.time DESC, ev.id DESC LIMIT ? OFFSET ?"
            params += [-1 if limit is None else limit, offset]
        else:
            query += " ORDER BY ev.time, ev.id"
        rows = self._read(lambda db: db.execute(query, params).fetchall())
        if limit is not None and not newest_first:
            rows = rows[-limit:]
        return [EventRecord(*row) for row in rows]

    def prune_events(self, retention_days: float) -> int:
        """Delete events older than ``retention_days``; returns how many went."""
        cutoff = self.clock() - retention_days * 86400
        return self._guard(lambda db: db.execute("DELETE FROM events WHERE time < ?", (cutoff,)).rowcount)

    # Backup and restore -----------------------------------------------------------------------

    def backup(self, target: Path) -> Path:
        """Copy the whole gallery to ``target`` (SQLite's online backup: consistent while in use).

        The copy carries the signing key in its ``meta`` table, so ``restore``
        can check every embedding in it on any device. An existing ``target``
        is refused, never overwritten: it may be the only copy of an older gallery.
        """
        target = Path(target)
        if os.path.lexists(target):
            raise GalleryError(f"{target} already exists: delete it first or pick another name; nothing was written")
        if not target.parent.is_dir():
            raise GalleryError(f"cannot back up to {target}: the folder {target.parent} does not exist; nothing was written")
        partial = target.with_name(target.name + ".part")
        key = self._key or read_key(self.key_path)
        try:
            _create_private_empty_file(partial)
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                self._db.backup(copy)
                if key is not None:
                    copy.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (BACKUP_KEY_ROW, key.hex()))
            finally:
                copy.close()
            _fsync_file(partial)
            partial.replace(target)
            _fsync_directory(target.parent)
        except (sqlite3.Error, OSError) as error:
            partial.unlink(missing_ok=True)
            raise GalleryError(f"backup to {target} failed ({error}); nothing was written") from error
        return target

    @staticmethod
    def restore(source: Path, target: Path, model_sha256: str) -> int:
        """Replace the gallery at ``target`` with the backup ``source``; returns the people restored.

        Refuses a file that is not a face-kiosk gallery, fails its integrity
        check, holds embeddings of a different model (they would never match),
        or holds embeddings but no signing key. Each embedding is checked with
        the backup's key and re-signed with this device's key (``target``'s
        ``.key`` file, created if missing); one that fails the check is kept
        but stays refused, and ``damaged_templates`` names its person. A
        schema-1 backup (no keys yet) is signed when it is next opened.
        """
        source, target = Path(source), Path(target)
        if source.is_dir():
            raise GalleryError(f"{source} is a folder, not a backup file: name the file 'kiosk backup' wrote")
        if not source.exists():
            raise GalleryError(f"{source} does not exist: check the backup's path")
        try:
            db = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise GalleryError(f"{source} failed its integrity check; it cannot be restored")
                version = _schema_version(db, source)
                models = {row[0] for row in db.execute("SELECT DISTINCT model_sha256 FROM embeddings")}
                people = db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
                backup_key = db.execute("SELECT value FROM meta WHERE key = ?", (BACKUP_KEY_ROW,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error as error:
            raise GalleryError(f"{source} is not a face-kiosk gallery backup ({error})") from error
        if version is None:
            raise GalleryError(f"{source} is not a face-kiosk gallery backup (it has no schema version)")
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{source} has schema {version}, newer than this face-kiosk ({SCHEMA_VERSION}); upgrade face-kiosk")
        if models and models != {model_sha256}:
            raise GalleryError(
                f"{source} was made with a different face model ({', '.join(m[:12] for m in models)}...); "
                f"its embeddings cannot match this model ({model_sha256[:12]}...). Re-enrol instead."
            )
        signing_key = _backup_key(backup_key)
        if version >= 2 and models and signing_key is None:
            raise GalleryError(f"{source} holds embeddings but no valid signing key (it was not made by 'kiosk backup'), "
                               "so its faces cannot be checked; nothing was restored")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise GalleryError(f"cannot create the state folder {target.parent} ({error}); nothing was restored") from error
        key_path, marker = target.with_suffix(".key"), target.with_suffix(".created")
        device_key = load_or_create_key(key_path) if version >= 2 else None
        partial = target.with_name(target.name + ".restoring")
        try:
            _create_private_empty_file(partial)
            partial.write_bytes(source.read_bytes())
            if device_key is not None:
                _resign(partial, signing_key, device_key)
            _fsync_file(partial)
            for path in (partial, key_path):
                _give_to_folder_owner(path)
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            partial.replace(target)
            _fsync_directory(target.parent)
        except (sqlite3.Error, OSError) as error:
            partial.unlink(missing_ok=True)
            raise GalleryError(
                f"restoring {source} into {target} failed ({error}); the gallery there was not replaced") from error
        try:
            if not marker.exists():
                write_private_file(marker, MARKER_TEXT.format(gallery=target.name).encode())
                _give_to_folder_owner(marker)
        except OSError:
            pass  # the gallery is restored; opening it writes the marker
        return int(people)

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


MARKER_TEXT = (
    "face-kiosk created a gallery ({gallery}) in this folder. If that file is ever missing or empty, the door refuses to\n"
    "start instead of starting over with nobody enrolled: restore a backup (kiosk restore BACKUP). Delete this file\n"
    "only to start over deliberately (the first person enrolled then becomes admin).\n"
)


def validate_name(name: str) -> str:
    """A person's name: printable, 1-64 characters, no leading/trailing blanks."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 64 or not cleaned.isprintable():
        raise GalleryError(f"invalid name {name!r}: use 1-64 printable characters")
    return cleaned


# Template checks ------------------------------------------------------------------------------


def template_mac(key: bytes, person_id: int, model_sha256: str, vector: bytes) -> bytes:
    """HMAC-SHA256 binding a stored vector to its person and model (so a row cannot be moved to another person)."""
    message = b"face-kiosk template\0%d\0%s\0" % (person_id, model_sha256.encode()) + vector
    return hmac.new(key, message, hashlib.sha256).digest()


def mac_ok(key: bytes, person_id: int, model_sha256: str, vector: object, mac: object) -> bool:
    """Whether ``mac`` is the stored vector's check under ``key``."""
    return isinstance(vector, bytes) and isinstance(mac, bytes) \
        and hmac.compare_digest(mac, template_mac(key, person_id, model_sha256, vector))


def vector_problem(vector: np.ndarray) -> str | None:
    """Why ``vector`` is not a usable embedding (wrong length, not finite, not unit length), or None."""
    if vector.shape != (EMBEDDING_SIZE,):
        return f"has {vector.size} numbers instead of {EMBEDDING_SIZE}"
    if not np.all(np.isfinite(vector)):
        return "holds a number that is not finite"
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) >= UNIT_NORM_TOLERANCE:
        return f"has length {norm:.4g} instead of 1"
    return None


def template_problem(key: bytes | None, person_id: int, model_sha256: str, vector: object, mac: object) -> str | None:
    """Why a stored embedding row must not be matched, or None when it passes every check."""
    if key is None:
        return "the key that checks it is missing"
    if not mac_ok(key, person_id, model_sha256, vector, mac):
        return "its check failed: damaged or altered"
    assert isinstance(vector, bytes)
    if len(vector) != EMBEDDING_SIZE * 4:
        return f"{len(vector)} bytes instead of {EMBEDDING_SIZE * 4}"
    problem = vector_problem(np.frombuffer(vector, dtype=np.float32))
    return None if problem is None else f"it {problem}"


# Files in the state folder ----------------------------------------------------------------------


def read_key(path: Path) -> bytes | None:
    """The signing key at ``path``, or None if there is none; a damaged key file is an error."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise GalleryError(f"cannot read the gallery key {path} ({error})") from error
    if len(key) != KEY_BYTES:
        raise GalleryError(
            f"the gallery key {path} is damaged ({len(key)} bytes instead of {KEY_BYTES}), so no stored face can be "
            "checked. Restore a backup (sudo systemctl stop kiosk; kiosk restore BACKUP), or start over and re-enrol everyone."
        )
    _make_private(path)
    return key


def load_or_create_key(path: Path) -> bytes:
    """The signing key at ``path``, created (32 random bytes, mode 0600) if there is none yet.

    Two processes creating it at once end up with the same key: the file is
    linked into place only if it does not exist yet.
    """
    key = read_key(path)
    if key is not None:
        return key
    try:
        write_private_file(path, secrets.token_bytes(KEY_BYTES), keep_existing=True)
    except OSError as error:
        raise GalleryError(f"cannot create the gallery key {path} ({error}); is the disk full or read-only?") from error
    key = read_key(path)
    assert key is not None
    return key


def write_private_file(path: Path, data: bytes, keep_existing: bool = False) -> bool:
    """Write ``data`` to ``path`` (mode 0600) so that a crash leaves the old file or the new one, never half.

    With ``keep_existing`` an existing file wins and False is returned.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if keep_existing:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
        else:
            os.replace(temporary, path)
        _fsync_directory(path.parent)
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)


def _create_private_empty_file(path: Path) -> None:
    """A new empty file readable by this user only from its first moment (no window at the default mode)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _make_private(path: Path) -> None:
    """Take away group and other permissions; on a read-only file system there is nothing to do now."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            path.chmod(mode & 0o700)
    except OSError:
        pass


def _give_to_folder_owner(path: Path) -> None:
    """When root restores (``sudo kiosk restore``), hand the new files to the folder's owner, the service user,
    who could not open them otherwise."""
    if path.exists() and os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_directory(folder: Path) -> None:
    """Make a rename or new file in ``folder`` survive a power cut."""
    _fsync_file(folder)


# SQLite helpers ----------------------------------------------------------------------------------


def _storage_unwritable(error: sqlite3.Error) -> bool:
    """A full disk, a read-only file or file system, or an I/O error: not damage to the gallery itself."""
    return getattr(error, "sqlite_errorname", "").startswith(
        ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM"))


def _schema_version(db: sqlite3.Connection, path: Path) -> int | None:
    """The gallery's schema version; None for a database without tables; an error for any other database."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
    if row is None or not str(row[0]).isdigit():
        raise GalleryError(f"{path} is not a face-kiosk gallery (tables {', '.join(sorted(tables))}, no schema version)")
    return int(row[0])


def _backup_key(row: tuple | None) -> bytes | None:
    try:
        key = bytes.fromhex(row[0]) if row is not None else None
    except (TypeError, ValueError):
        return None
    return key if key is not None and len(key) == KEY_BYTES else None


def _resign(path: Path, backup_key: bytes | None, device_key: bytes) -> None:
    """Re-sign the embeddings of the restored copy at ``path``: those that pass the backup's key get this device's key."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute("SELECT id, person_id, model_sha256, vector, mac FROM embeddings").fetchall()
        db.executemany("UPDATE embeddings SET mac = ? WHERE id = ?", [
            (template_mac(device_key, person_id, model, vector)
             if backup_key is not None and mac_ok(backup_key, person_id, model, vector, mac) else b"", row_id)
            for row_id, person_id, model, vector, mac in rows
        ])
        db.execute("DELETE FROM meta WHERE key = ?", (BACKUP_KEY_ROW,))
        db.execute("COMMIT")
    finally:
        db.close()
