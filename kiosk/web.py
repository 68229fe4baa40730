"""The web admin page, served by the running door for a phone or laptop on the home network.

Off until an admin password is set (``kiosk web-password``; a salted scrypt
hash in ``<state_dir>/web-password.json``, mode 0600). Server-rendered pages
(Flask and Jinja2, whose autoescaping keeps names from becoming markup) and a
few lines of script: status (lock, last decision, camera, speed, lockout with
an end button, remote unlock when ``web.remote_unlock`` is on), people (enrol
from phone photos with the same checks as ``kiosk enroll --images``, or at the
door's camera with live progress; rename, role, schedule, remove) and the event
log (filtered, paged, CSV).

Security: the session cookie is HttpOnly and SameSite=Strict (and Secure over
TLS), every form carries a CSRF token, failed logins are limited per address
and in total, a logout ends the session on the server, no embedding or secret
is ever put in a page, and every change is an ``admin`` event in the log with
the address it came from. Orders to the door (unlock, end a lockout, enrol at
the camera) go through :class:`kiosk.control.DoorControl`; people are changed
through a gallery connection of the page's own, as the CLI does, and the door
picks the change up within seconds.
"""

from __future__ import annotations

import csv
import datetime
import functools
import hashlib
import hmac
import io
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from werkzeug.serving import make_server

from kiosk import assemble
from kiosk.config import Config
from kiosk.control import DoorControl, enrol_at_camera
from kiosk.errors import ConfigError, FaceKioskError
from kiosk.gallery import EVENT_KINDS, ROLES, Gallery, remove_face_images, snapshot_name, write_private_file

MIN_PASSWORD_LENGTH = 10
SCRYPT_PARAMETERS = {"n": 2**14, "r": 8, "p": 1}
"""scrypt's cost (16 MiB of memory, about 50 ms on a Pi 4): slow for a guesser, quick for one login."""
LOGIN_FAILURES_PER_ADDRESS = 5
LOGIN_FAILURES_IN_TOTAL = 20
LOGIN_WINDOW_SECONDS = 900.0
EVENTS_PER_PAGE = 50
MAX_UPLOAD_BYTES = 40 * 1024 * 1024
MAX_PHOTOS = 20
THUMBNAIL_SIZE = 96
TEMPLATES = Path(__file__).with_name("web_templates")
SNAPSHOT_NAME = re.compile(r"[0-9]+\.[0-9]{3}_[a-z]+_p[0-9]+\.jpg")


# The password ----------------------------------------------------------------------------------


def set_password(path: Path, password: str) -> None:
    """Store a salted scrypt hash of ``password`` (the password itself is never stored)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"the web admin password must be at least {MIN_PASSWORD_LENGTH} characters long")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT_PARAMETERS)
    record = {"algorithm": "scrypt", **SCRYPT_PARAMETERS, "salt": salt.hex(), "hash": digest.hex()}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(path, (json.dumps(record) + "\n").encode())


def check_password(path: Path, password: str) -> bool:
    """Whether ``password`` is the admin's (a missing or damaged record matches nothing)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        salt, expected = bytes.fromhex(record["salt"]), bytes.fromhex(record["hash"])
        digest = hashlib.scrypt(password.encode(), salt=salt, n=int(record["n"]), r=int(record["r"]), p=int(record["p"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


class LoginLimiter:
    """Failed logins within a window, per address and in total: past either limit, logins are refused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def _recent(self) -> list[str]:
        now = self.clock()
        while self._failures and now - self._failures[0][0] > LOGIN_WINDOW_SECONDS:
            self._failures.popleft()
        return [address for _, address in self._failures]

    def refused(self, address: str) -> bool:
        with self._lock:
            recent = self._recent()
            return recent.count(address) >= LOGIN_FAILURES_PER_ADDRESS or len(recent) >= LOGIN_FAILURES_IN_TOTAL

    def failed(self, address: str) -> None:
        with self._lock:
            self._failures.append((self.clock(), address))


# The page ---------------------------------------------------------------------------------------


class AdminPage:
    """The Flask app of one door and what it keeps between requests (sessions, the enrolment in progress)."""

    def __init__(self, config: Config, control: DoorControl, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.control = control
        self.clock = clock
        self.limiter = LoginLimiter()
        self.sessions: dict[str, float] = {}
        """Session id -> expiry (wall clock); a logout or expiry removes it, whatever the cookie says."""
        self.enrolment = None
        self._pipeline = None
        self._pipeline_lock = threading.Lock()
        app = self.app = Flask(__name__, template_folder=str(TEMPLATES))
        app.secret_key = secrets.token_bytes(32)  # per start: a restart logs everyone out
        app.config.update(SESSION_COOKIE_NAME="kiosk_session", SESSION_COOKIE_HTTPONLY=True,
                          SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=bool(config.web.tls_cert),
                          MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES)
        app.jinja_env.globals.update(csrf_token=self._csrf_token, when=_when, remote_unlock=config.web.remote_unlock)
        app.before_request(self._check_csrf)
        app.after_request(_security_headers)
        routes: list[tuple[str, str, Callable[..., Any], tuple[str, ...]]] = [
            ("/login", "login", self.login, ("GET", "POST")),
            ("/logout", "logout", self.logout, ("POST",)),
            ("/", "status", self._admin(self.status), ("GET",)),
            ("/status.json", "status_json", self._admin(self.status_json), ("GET",)),
            ("/lockout/end", "end_lockout", self._admin(self.end_lockout), ("POST",)),
            ("/unlock", "unlock", self._admin(self.unlock), ("POST",)),
            ("/people", "people", self._admin(self.people), ("GET",)),
            ("/people/enrol", "enrol_photos", self._admin(self.enrol_photos), ("POST",)),
            ("/people/enrol-camera", "enrol_camera", self._admin(self.enrol_camera), ("POST",)),
            ("/enrolment.json", "enrolment_json", self._admin(self.enrolment_json), ("GET",)),
            ("/people/change", "change_person", self._admin(self.change_person), ("POST",)),
            ("/events", "events", self._admin(self.events), ("GET",)),
            ("/events.csv", "events_csv", self._admin(self.events_csv), ("GET",)),
            ("/snapshots/<name>", "snapshot", self._admin(self.snapshot), ("GET",)),
            ("/thumbnails/<int:person_id>", "thumbnail", self._admin(self.thumbnail), ("GET",)),
        ]
        for rule, name, view, methods in routes:
            app.add_url_rule(rule, name, view, methods=list(methods))

    # Sessions, CSRF and the audit log ---------------------------------------------------------

    def _csrf_token(self) -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def _check_csrf(self) -> None:
        if request.method == "POST":
            sent = request.form.get("csrf", "")
            if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
                abort(400, "the form is out of date or did not come from this page: reload it and try again")

    def _logged_in(self) -> bool:
        sid = session.get("sid")
        expiry = self.sessions.get(sid) if isinstance(sid, str) else None
        if expiry is not None and expiry >= self.clock():
            return True
        if expiry is not None:
            del self.sessions[sid]
        return False

    def _admin(self, view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            if not self._logged_in():
                return redirect(url_for("login", next=request.path if request.method == "GET" else None))
            return view(*args, **kwargs)

        return guarded

    def _who(self) -> str:
        return f"the web admin from {request.remote_addr}"

    def _log(self, what: str) -> None:
        """An ``admin`` event for a change made outside the door's loop (the door logs its own orders)."""
        with self._gallery() as gallery:
            gallery.log_event("admin", None, None, f"{what} by {self._who()}"[:500])

    def _gallery(self) -> _GalleryConnection:
        return _GalleryConnection(self.config)

    # Login ------------------------------------------------------------------------------------

    def login(self):
        if request.method == "GET":
            return render_template("login.html", next=request.args.get("next", ""))
        address = request.remote_addr or "?"
        if self.limiter.refused(address):
            return render_template("login.html", error="too many failed logins: wait 15 minutes and try again"), 429
        if not check_password(self.config.web_password, request.form.get("password", "")):
            self.limiter.failed(address)
            with self._gallery() as gallery:
                gallery.log_event("admin", None, None, f"failed web login from {address}")
            return render_template("login.html", error="wrong password"), 403
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = self.clock() + self.config.web.session_hours * 3600
        session.clear()
        session["sid"] = sid
        self._log("web login")
        target = request.form.get("next", "")
        local = target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target
        return redirect(target if local else url_for("status"))  # never to another site

    def logout(self):
        self.sessions.pop(session.get("sid"), None)
        session.clear()
        return redirect(url_for("login"))

    # Status and orders to the door --------------------------------------------------------------

    def status(self):
        return render_template("status.html", status=self.control.status)

    def status_json(self):
        status = self.control.status
        return jsonify(status.as_dict() if status else None)

    def end_lockout(self):
        why = f"lockout ended by {self._who()}"  # the request is this thread's: read it before the loop runs the order
        self._order(lambda door: door.end_lockout(why), "the lockout is over")
        return redirect(url_for("status"))

    def unlock(self):
        if not self.config.web.remote_unlock:
            abort(403, "remote unlock is off (web.remote_unlock in the config)")
        seconds, why = self.config.decision.unlock_seconds, f"remote unlock by {self._who()}"
        self._order(lambda door: door.open_for(seconds, why), f"the door is open for {seconds:g} s")
        return redirect(url_for("status"))

    def _order(self, action: Callable[[Any], Any], done: str) -> Any:
        try:
            result = self.control.ask(action)
        except FaceKioskError as error:
            flash(str(error), "error")
            return None
        flash(done, "ok")
        return result

    # People -----------------------------------------------------------------------------------

    def people(self):
        with self._gallery() as gallery:
            people = gallery.people()
        folder = self.config.thumbnail_dir
        thumbnails = {p.id for p in people if (folder / f"p{p.id}.jpg").exists()}
        return render_template("people.html", people=people, roles=ROLES, enrolment=self._enrolment_state(),
                               thumbnails=thumbnails)

    def enrol_photos(self):
        from kiosk.enroll import enroll_from_images

        name = request.form.get("name", "").strip()
        role = request.form.get("role") or None
        files = [f for f in request.files.getlist("photos") if f.filename]
        if not name or not files:
            flash("give a name and at least one photo", "error")
            return redirect(url_for("people"))
        if len(files) > MAX_PHOTOS:
            flash(f"at most {MAX_PHOTOS} photos at once", "error")
            return redirect(url_for("people"))
        with tempfile.TemporaryDirectory(prefix="kiosk-enrol-") as folder:
            paths = []
            for index, upload in enumerate(files):
                path = Path(folder) / f"{index:02d}{Path(upload.filename or '').suffix.lower()[:8]}"
                upload.save(path)
                paths.append(path)
            try:
                with self._pipeline_lock, self._gallery() as gallery:
                    person, notes = enroll_from_images(name, paths, self._face_pipeline(), gallery, role,
                                                       force=bool(request.form.get("force")))
                    gallery.log_event("admin", None, None,
                                      f"{person.name!r} enrolled from {len(paths)} photos by {self._who()}"[:500])
                    if request.form.get("thumbnail"):
                        self._keep_thumbnail(paths[0], person.id)
            except FaceKioskError as error:
                flash(_photo_names(str(error), paths, files), "error")
                return redirect(url_for("people"))
        for note in notes:
            flash(_photo_names(note, paths, files), "ok")
        flash(f"enrolled {person.name} ({person.role}) from {person.embeddings} photos", "ok")
        return redirect(url_for("people"))

    def _face_pipeline(self):
        if self._pipeline is None:  # the door's own is busy on the frame loop; this one serves uploads
            self._pipeline = assemble.pipeline(self.config)
        return self._pipeline

    def enrol_camera(self):
        name = request.form.get("name", "").strip()
        role = request.form.get("role") or None
        try:
            self.enrolment = self.control.ask(enrol_at_camera(name, role, self._who()))
        except FaceKioskError as error:
            flash(str(error), "error")
        return redirect(url_for("people"))

    def _enrolment_state(self) -> dict[str, Any] | None:
        session_ = self.enrolment
        if session_ is None:
            return None
        done = session_.person is not None
        return {"name": session_.name, "message": session_.message, "finished": session_.finished, "enrolled": done,
                "pictures": len(session_.kept), "needed": self.config.enrollment.frames}

    def enrolment_json(self):
        return jsonify(self._enrolment_state())

    def change_person(self):
        name = request.form.get("name", "")
        action = request.form.get("action", "")
        try:
            with self._gallery() as gallery:
                if action == "rename":
                    new = request.form.get("new_name", "").strip()
                    gallery.rename(name, new)
                    done = f"renamed {name!r} to {new!r}"
                elif action == "role":
                    role = request.form.get("role", "")
                    gallery.set_role(name, role)
                    done = f"{name!r} is now {role}"
                elif action == "schedule":
                    schedule = gallery.set_schedule(name, request.form.get("schedule", ""))
                    done = f"{name!r} may be let in: {schedule}"
                elif action == "remove":
                    if request.form.get("confirm") != name:
                        raise FaceKioskError(f"type the name {name!r} to confirm the removal")
                    person_id = gallery.person(name).id
                    gallery.remove(name)
                    remove_face_images(self.config.snapshot_dir, self.config.thumbnail_dir, person_id)
                    done = f"removed {name!r} and every embedding of them"
                else:
                    abort(400, f"unknown action {action!r}")
                gallery.log_event("admin", None, None, f"{done} by {self._who()}"[:500])
        except FaceKioskError as error:
            flash(str(error), "error")
        else:
            flash(done, "ok")
        return redirect(url_for("people"))

    def _keep_thumbnail(self, photo: Path, person_id: int) -> None:
        """The face of ``photo`` as a small JPEG (mode 0600), kept only because the person agreed to it."""
        import cv2

        from kiosk.images import read_image

        image = read_image(photo)
        embedded = self._face_pipeline().embed_largest(image)  # the face enrolment took
        if embedded is None:
            return
        face = embedded.face
        margin = 0.25 * face.w
        x0, y0 = max(0, int(face.center[0] - face.w / 2 - margin)), max(0, int(face.center[1] - face.h / 2 - margin))
        crop = image[y0:y0 + int(face.h + 2 * margin), x0:x0 + int(face.w + 2 * margin)]
        folder = self.config.thumbnail_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", cv2.resize(crop, (THUMBNAIL_SIZE, THUMBNAIL_SIZE)))
        if ok:
            write_private_file(folder / f"p{person_id}.jpg", data.tobytes())

    def thumbnail(self, person_id: int):
        return send_from_directory(self.config.thumbnail_dir, f"p{person_id}.jpg", mimetype="image/jpeg")

    # Events -----------------------------------------------------------------------------------

    def _event_filters(self) -> dict[str, Any]:
        args = request.args
        kind = args.get("kind") or None
        return {"person": args.get("person") or None, "kind": kind if kind in EVENT_KINDS else None,
                "since": _day(args.get("from")), "until": _day(args.get("to"), next_day=True)}

    def events(self):
        filters = self._event_filters()
        page = max(1, request.args.get("page", 1, type=int) or 1)
        with self._gallery() as gallery:
            rows = gallery.events(**filters, newest_first=True, limit=EVENTS_PER_PAGE + 1,
                                  offset=(page - 1) * EVENTS_PER_PAGE)
            ids = {person.name: person.id for person in gallery.people()}
        query = {k: v for k, v in request.args.items() if k != "page"}
        folder = self.config.snapshot_dir
        stored = {path.name for path in folder.glob("*.jpg")} if self.config.storage.snapshots and folder.is_dir() else set()
        shots = [name if name in stored else None
                 for name in (snapshot_name(e.time, e.kind, ids.get(e.person or "", 0)) for e in rows[:EVENTS_PER_PAGE])]
        return render_template("events.html", events=list(zip(rows[:EVENTS_PER_PAGE], shots, strict=True)), page=page,
                               more=len(rows) > EVENTS_PER_PAGE, people=list(ids), kinds=EVENT_KINDS, query=query)

    def snapshot(self, name: str):
        """An event's face crop (``storage.snapshots``); only names the door gives its snapshots are served."""
        if not SNAPSHOT_NAME.fullmatch(name):
            abort(404)
        return send_from_directory(self.config.snapshot_dir, name, mimetype="image/jpeg")

    def events_csv(self):
        with self._gallery() as gallery:
            rows = gallery.events(**self._event_filters())
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["time", "kind", "person", "score", "detail"])
        for event in rows:
            writer.writerow([_when(event.time), event.kind, event.person or "",
                             "" if event.score is None else f"{event.score:.3f}", _csv_safe(event.detail)])
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=kiosk-events.csv"})


class _GalleryConnection:
    """A gallery connection for one request (SQLite connections belong to the thread that opens them)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __enter__(self) -> Gallery:
        self.gallery = assemble.gallery(self.config, must_exist=True)
        return self.gallery

    def __exit__(self, *exc) -> None:
        self.gallery.close()


def _security_headers(response: Response) -> Response:
    response.headers.update({
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                                   "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
    return response


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _day(text: str | None, next_day: bool = False) -> float | None:
    """A YYYY-MM-DD date (the door's local time) as a UNIX time: its start, or the next day's start."""
    if not text:
        return None
    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return None
    return (day + datetime.timedelta(days=1 if next_day else 0)).timestamp()


def _csv_safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _photo_names(message: str, paths: list[Path], files) -> str:
    """A message about the uploaded photos with the names the user gave them, not the temporary ones."""
    for path, upload in zip(paths, files, strict=True):
        message = message.replace(str(path), repr(upload.filename or path.name))
    return message


# The server -------------------------------------------------------------------------------------


class WebServer:
    """The admin page on ``web.listen``:``web.port`` (HTTPS with ``web.tls_cert``), served from background threads.

    Werkzeug's threaded server: enough for the one or two admins of a door,
    with no other program to install or configure on the Pi.
    """

    def __init__(self, config: Config, control: DoorControl) -> None:
        web = config.web
        context = None
        if web.tls_cert or web.tls_key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(web.tls_cert, web.tls_key or None)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(f"web.tls_cert {web.tls_cert!r} / web.tls_key {web.tls_key!r} cannot be used for "
                                  f"HTTPS: {error}") from error
        self.page = AdminPage(config, control)
        try:
            self._server = make_server(web.listen, web.port, self.page.app, threaded=True, ssl_context=context)
        except (OSError, SystemExit) as error:  # werkzeug exits on a port in use
            raise ConfigError(f"the web admin page cannot listen on {web.listen}:{web.port} ({error}); "
                              "is another program using the port? change web.port") from error
        self.port = self._server.server_port
        self.url = f"{'https' if context else 'http'}://{web.listen}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="kiosk-web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
