"""The web admin page on a running door (recorded frames, mock pins): login, CSRF, people, events, orders."""

from __future__ import annotations

import csv
import io
import re
import stat
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from kiosk import assemble
from kiosk.config import Config
from kiosk.demo import demo_data
from kiosk.service import run_service
from kiosk.web import LOGIN_FAILURES_PER_ADDRESS, AdminPage, WebServer, check_password, set_password

DATA = demo_data()
OWNER = sorted((DATA / "frames").glob("a1_*.jpg"))
EMPTY = DATA / "frames" / "empty_00.jpg"
FACES = Path(__file__).parent / "fixtures" / "faces"
PASSWORD = "correct horse battery"


def csrf(page: bytes) -> str:
    return re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()


class Admin:
    """A browser session on the page of a running door (Flask's test client: real requests, no sockets)."""

    def __init__(self, door) -> None:
        self.door = door
        set_password(door.config.web_password, PASSWORD)
        self.page = AdminPage(door.config, door.control)
        self.client = self.page.app.test_client()

    def token(self, path: str = "/login") -> str:
        return csrf(self.client.get(path).data)

    def login(self, password: str = PASSWORD):
        return self.client.post("/login", data={"password": password, "csrf": self.token()})

    def post(self, path: str, **data):
        return self.client.post(path, data={"csrf": self.token("/people"), **data}, follow_redirects=True)

    def events(self):
        gallery = assemble.gallery(self.door.config)
        try:
            return gallery.events()
        finally:
            gallery.close()


@pytest.fixture
def admin(running):
    made = []

    def make(frames=(EMPTY,), configure=None) -> Admin:
        made.append(Admin(running(list(frames), configure)))
        return made[-1]

    return make


def test_the_password_is_stored_as_a_salted_hash_for_the_service_only(tmp_path):
    path = tmp_path / "web-password.json"
    set_password(path, PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and PASSWORD not in path.read_text()
    assert check_password(path, PASSWORD) and not check_password(path, PASSWORD + "!")
    with pytest.raises(Exception, match="at least 10 characters"):
        set_password(path, "short")
    assert not check_password(tmp_path / "missing.json", PASSWORD)


def test_every_page_needs_a_login(admin):
    a = admin()
    for path in ("/", "/people", "/events", "/events.csv", "/status.json", "/enrolment.json"):
        response = a.client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_a_wrong_password_is_refused_logged_and_limited(admin):
    a = admin()
    for _ in range(LOGIN_FAILURES_PER_ADDRESS):
        assert a.login("wrong password").status_code == 403
    assert a.login().status_code == 429, "the limit holds even for the right password"
    assert a.client.get("/").status_code == 302
    assert sum("failed web login" in e.detail for e in a.events()) == LOGIN_FAILURES_PER_ADDRESS


def test_a_login_goes_back_to_the_page_asked_for_but_never_to_another_site(admin):
    a = admin()
    for target, expected in (("/events", "/events"), ("//evil.example/", "/"), ("/\\evil.example/", "/"),
                             ("https://evil.example/", "/")):
        a.client.post("/logout", data={"csrf": a.token()})
        response = a.client.post("/login", data={"password": PASSWORD, "csrf": a.token(), "next": target})
        assert response.headers["Location"] == expected, target


def test_a_form_without_its_csrf_token_is_refused(admin):
    a = admin()
    a.login()
    response = a.client.post("/lockout/end", data={})
    assert response.status_code == 400 and b"reload it" in response.data


def test_the_status_page_shows_the_door(admin):
    a = admin()
    assert a.login().status_code == 302
    page = a.client.get("/").data.decode()
    assert "Locked" in page and "1 people enrolled" in page and "camera" in page.lower()
    assert a.client.get("/status.json").get_json()["people"] == 1
    assert b"Open the door" not in a.client.get("/").data, "remote unlock is off by default"
    assert a.post("/unlock").status_code == 403


def test_remote_unlock_opens_the_door_and_logs_the_address(admin):
    a = admin(configure=lambda config: setattr(config.web, "remote_unlock", True))
    a.login()
    assert b"Open the door" in a.client.get("/").data
    page = a.post("/unlock").data.decode()
    assert "the door is open for 5 s" in page
    time.sleep(0.2)
    assert a.client.get("/status.json").get_json()["relay_on"]
    assert any(e.kind == "admin" and "remote unlock by the web admin from" in e.detail for e in a.events())


def test_an_admin_ends_a_lockout_from_the_page(admin):
    a = admin()
    a.login()
    a.door.control.ask(lambda door: setattr(door.decision, "locked_out_until", door.clock() + 300))
    time.sleep(0.2)
    assert b"End the lockout" in a.client.get("/").data
    assert b"the lockout is over" in a.post("/lockout/end").data
    time.sleep(0.2)
    assert a.client.get("/status.json").get_json()["locked_out_until"] is None


def upload(paths: list[Path]) -> list[tuple]:
    return [(path.open("rb"), path.name) for path in paths]


def test_enrol_from_phone_photos_and_manage_the_person(admin):
    a = admin()
    a.login()
    photos = sorted((FACES / "Hugo_Chavez").glob("*.jpg"))
    page = a.post("/people/enrol", name="Hugo", role="user", photos=upload(photos), thumbnail="1").data.decode()
    assert f"enrolled Hugo (user) from {len(photos)} photos" in page
    thumbnail = re.search(r'<img src="(/thumbnails/(\d+))"', page)
    assert thumbnail, "the person agreed to a thumbnail: the list shows it"
    assert a.client.get(thumbnail.group(1)).data[:3] == b"\xff\xd8\xff"
    stored = a.door.config.thumbnail_dir / f"p{thumbnail.group(2)}.jpg"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert a.post("/people/change", name="Hugo", action="schedule", new_name="",
                  schedule="mon-fri 07:00-19:00").status_code == 200
    a.post("/people/change", name="Hugo", action="rename", new_name="Hugo C")
    a.post("/people/change", name="Hugo C", action="role", role="admin")
    page = a.client.get("/people").data.decode()
    assert "Hugo C" in page and "mon-fri 07:00-19:00" in page
    assert "refused" not in page
    refused = a.post("/people/change", name="Hugo C", action="remove", confirm="Hugo").data.decode()
    assert "type the name" in refused
    a.post("/people/change", name="Hugo C", action="remove", confirm="Hugo C")
    assert "Hugo C" not in a.client.get("/people").data.decode()
    assert not stored.exists(), "removing a person removes their thumbnail"
    log = [e.detail for e in a.events() if e.kind == "admin"]
    for change in ("enrolled from", "renamed 'Hugo' to 'Hugo C'", "is now admin", "may be let in", "removed 'Hugo C'"):
        assert any(change in line and "by the web admin from" in line for line in log), change


def test_no_thumbnail_without_consent(admin):
    a = admin()
    a.login()
    page = a.post("/people/enrol", name="Hugo", photos=upload(sorted((FACES / "Hugo_Chavez").glob("*.jpg")))).data
    assert b"enrolled Hugo" in page and b"/thumbnails/" not in page
    assert not a.door.config.thumbnail_dir.exists()


def test_photos_that_do_not_agree_are_named_and_nobody_is_enrolled(admin):
    a = admin()
    a.login()
    photos = sorted((FACES / "Hugo_Chavez").glob("*.jpg"))[:2] + sorted((FACES / "George_W_Bush").glob("*.jpg"))[:1]
    page = a.post("/people/enrol", name="Mixed", photos=upload(photos)).data.decode()
    assert "Mixed" not in re.sub(r'<div class="flash error">.*?</div>', "", page, flags=re.DOTALL).split("<h2>")[0]
    assert photos[-1].name in page, "the odd photo is named by the name it was uploaded with"


def test_enrol_at_the_door_with_live_progress(admin):
    a = admin(frames=OWNER)
    a.login()
    a.post("/people/enrol-camera", name="guest", role="user")
    deadline = time.monotonic() + 20
    state = a.client.get("/enrolment.json").get_json()
    while not state["finished"] and time.monotonic() < deadline:
        time.sleep(0.2)
        state = a.client.get("/enrolment.json").get_json()
    assert state["enrolled"] and state["pictures"] == 3, state
    assert "guest" in a.client.get("/people").data.decode()


def test_events_are_filtered_paged_and_exported(admin):
    a = admin()
    gallery = assemble.gallery(a.door.config)
    try:
        for i in range(60):
            gallery.log_event("unknown", None, 0.1, f"stranger {i}")
        gallery.log_event("denied", "owner", 0.3, "=HYPERLINK(\"x\")")
    finally:
        gallery.close()
    a.login()
    page = a.client.get("/events?kind=unknown").data.decode()
    assert "stranger 59" in page and "stranger 9<" not in page and "older" in page
    assert "stranger 9<" in a.client.get("/events?kind=unknown&page=2").data.decode()
    assert "stranger" not in a.client.get("/events?person=owner").data.decode()
    rows = list(csv.reader(io.StringIO(a.client.get("/events.csv?person=owner").data.decode())))
    assert rows[0] == ["time", "kind", "person", "score", "detail"]
    assert rows[-1][1:] == ["denied", "owner", "0.300", "'=HYPERLINK(\"x\")"], "no formula is handed to a spreadsheet"


def test_the_real_server_sets_safe_cookies_and_headers(running):
    door = running([EMPTY], lambda config: (setattr(config.web, "listen", "127.0.0.1"), setattr(config.web, "port", 0)))
    set_password(door.config.web_password, PASSWORD)
    server = WebServer(door.config, door.control)
    server.start()
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        base = f"http://127.0.0.1:{server.port}"
        response = opener.open(f"{base}/")  # redirected to the login page, which starts a session for its CSRF token
        page = response.read()
        assert response.url.startswith(f"{base}/login") and b"Admin password" in page
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("kiosk_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"
        body = urllib.parse.urlencode({"password": PASSWORD, "csrf": csrf(page)}).encode()
        assert b"Locked" in opener.open(f"{base}/login", data=body).read()
    finally:
        server.stop()


def test_kiosk_run_serves_the_page_only_once_a_password_is_set(tmp_path, door_pipeline):
    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.gpio.pin_factory = "mock"
    config.camera.source = str(DATA / "frames")
    config.web.listen, config.web.port = "127.0.0.1", 0
    lines: list[str] = []
    run_service(config, out=lines.append, err=lines.append)
    assert any("web admin page off: set its password with 'kiosk web-password'" in line for line in lines)
    set_password(config.web_password, PASSWORD)
    lines.clear()
    run_service(config, out=lines.append, err=lines.append)
    assert any(line.startswith("kiosk: web admin page on http://127.0.0.1:") and "trusted home network" in line
               for line in lines), lines


def test_kiosk_web_password_sets_the_password(tmp_path, monkeypatch, capsys):
    from kiosk.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["web-password", "--stdin", "--state-dir", str(tmp_path)]) == 0
    assert check_password(tmp_path / "web-password.json", PASSWORD)
    assert "sudo systemctl restart kiosk" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["web-password", "--stdin", "--state-dir", str(tmp_path)]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert check_password(tmp_path / "web-password.json", PASSWORD), "a refused password changes nothing"


def test_events_show_their_snapshot_when_snapshots_are_on(admin):
    a = admin(frames=OWNER, configure=lambda config: setattr(config.storage, "snapshots", True))
    a.login()
    deadline = time.monotonic() + 20
    while not any(e.kind == "granted" for e in a.events()) and time.monotonic() < deadline:
        time.sleep(0.2)
    page = a.client.get("/events?kind=granted").data.decode()
    link = re.search(r'<img src="(/snapshots/[^"]+_granted_p1\.jpg)"', page)
    assert link, page
    image = a.client.get(link.group(1))
    assert image.status_code == 200 and image.data[:3] == b"\xff\xd8\xff"
    assert a.client.get("/snapshots/..%2Fgallery.key").status_code == 404
    assert a.client.get("/snapshots/gallery.key").status_code == 404
