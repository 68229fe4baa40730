"""A real browser on the web admin page: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

It logs in, enrols a person from photos, and sees the event of their unlock appear when the running door
(recorded frames of that person, mock pins) lets them in. With KIOSK_SCREENSHOTS=FOLDER it saves the pages'
screenshots there (the README's pictures come from docs/screenshots).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from kiosk.demo import demo_data
from kiosk.web import WebServer, set_password

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="headless Chromium is missing: sudo apt-get install chromium chromium-driver")

DATA = demo_data()
WALKS_UP = sorted((DATA / "frames").glob("a1_*.jpg"))
EMPTY = DATA / "frames" / "empty_00.jpg"
PHOTOS = sorted((DATA / "enrol").glob("*.jpg"))
PASSWORD = "correct horse battery"


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shoot(driver, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("KIOSK_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def wait_for(predicate, seconds: float = 30.0) -> bool:
    """Poll a page condition; an element replaced by a navigation in the middle of a check counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except StaleElementReferenceException:
            pass
        time.sleep(0.3)
    return False


def test_log_in_enrol_from_photos_and_see_the_unlock(running, browser, tmp_path):
    from selenium.webdriver.common.by import By

    # The person walks up again and again; nobody is enrolled until the browser enrols them.
    door = running([EMPTY] * 10 + WALKS_UP + [EMPTY] * 40,
                   lambda config: (setattr(config.web, "listen", "127.0.0.1"), setattr(config.web, "port", 0),
                                   setattr(config.liveness, "mode", "off")), owner=False)
    set_password(door.config.web_password, PASSWORD)
    server = WebServer(door.config, door.control)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        browser.get(f"{base}/events")
        assert browser.current_url.startswith(f"{base}/login"), "a page without login redirects to the login"
        shoot(browser, "login", tmp_path)
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        # The click only starts the navigation (the password hash takes a moment): wait for the page it leads to.
        assert wait_for(lambda: browser.current_url.startswith(f"{base}/events")), "the login leads to the page asked for"

        browser.get(f"{base}/people")
        browser.find_element(By.ID, "enrol-name").send_keys("Colin Powell")
        browser.find_element(By.ID, "enrol-files").send_keys("\n".join(str(p) for p in PHOTOS))
        browser.find_element(By.ID, "enrol-submit").click()
        assert wait_for(lambda: "enrolled Colin Powell" in browser.find_element(By.TAG_NAME, "main").text)
        shoot(browser, "people", tmp_path)

        def unlock_shown() -> bool:
            browser.get(f"{base}/events?kind=granted")
            return "Colin Powell" in browser.find_element(By.ID, "events").text

        assert wait_for(unlock_shown), "the door let the enrolled person in and the event appeared"
        shoot(browser, "events", tmp_path)
        browser.get(f"{base}/")
        assert "Last decision" in browser.find_element(By.ID, "status").text
        shoot(browser, "status", tmp_path)
    finally:
        server.stop()
