"""Headless Debian Chromium, driven by Selenium, for tests that use a page as a person would.

Each :class:`Page` is a Chromium process of its own with a fresh profile: two pages are two
browsers, sharing no cookies, storage or connection pool (a browser holds at most six
HTTP/1.1 connections per origin, and every EventSource keeps one). Chromium and chromedriver
come from Debian (``.ci/run`` installs them); nothing is ever downloaded, and Selenium Manager
is never asked, because the driver's path is given.

Every wait has an explicit timeout. A wait that times out saves a screenshot and the page's
HTML to ``tests/.logs/`` and fails with what it waited for.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.server import LOG_DIR

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# Headless, as root, without a GPU, and quiet: no first-run UI and no traffic of its own
# (updates, sync, field trials) on a machine whose only network is the loopback.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
)
WAIT_TIMEOUT = 15.0

T = TypeVar("T")
_serial = itertools.count(1)


class Page:
    """One browser window, and the waits a test needs on it."""

    def __init__(self, name: str) -> None:
        for path in (CHROMIUM, CHROMEDRIVER):
            if not Path(path).is_file():
                pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
        self.name = name
        self.profile_dir = tempfile.mkdtemp(prefix=f"chromium-{name}-")
        LOG_DIR.mkdir(exist_ok=True)
        self.artifact_prefix = LOG_DIR / f"browser-{name}-{os.getpid()}-{next(_serial)}"
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}"):
            options.add_argument(flag)
        # Keep the page's console, so a test can assert that the page logged no error.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=str(self.artifact_prefix) + "-chromedriver.log")
        try:
            self.driver = webdriver.Chrome(options=options, service=service)
        except BaseException:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(WAIT_TIMEOUT)
        self.driver.set_script_timeout(WAIT_TIMEOUT)

    def open(self, url: str) -> Page:
        self.driver.get(url)
        return self

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_until(self, condition: Callable[[], T], what: str, timeout: float = WAIT_TIMEOUT) -> T:
        """Poll ``condition`` until it returns something truthy, and return that."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _driver: condition())
        except TimeoutException:
            saved = self.save_artifacts("timeout")
            raise AssertionError(f"{self.name}: gave up after {timeout}s waiting for {what}; see {saved}*") from None

    def wait_for_attribute(self, css: str, name: str, value: str, timeout: float = WAIT_TIMEOUT) -> None:
        self.wait_until(lambda: self.find(css).get_attribute(name) == value, f"{css} to have {name}={value!r}", timeout)

    def wait_for_text(self, css: str, text: str, timeout: float = WAIT_TIMEOUT) -> WebElement:
        """The first element matching ``css`` whose text is exactly ``text``."""

        def match() -> WebElement | None:
            return next((element for element in self.find_all(css) if element.text == text), None)

        return self.wait_until(match, f"{css} with text {text!r}", timeout)

    def console_errors(self) -> list[str]:
        """What the page logged at error level since the last call."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"{self.name}: no screenshot taken")
        return path

    def save_artifacts(self, label: str) -> str:
        """A screenshot and the HTML of the page, for a failure's post-mortem; never raises."""
        prefix = f"{self.artifact_prefix}-{label}"
        try:
            self.driver.save_screenshot(prefix + ".png")
            Path(prefix + ".html").write_text(self.driver.page_source)
        except (WebDriverException, OSError):
            pass
        return prefix

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)


@contextmanager
def open_pages() -> Iterator[Callable[..., Page]]:
    """``open_(url, name=...)`` opens a page in a new headless Chromium; all close on exit."""
    with ExitStack() as pages:
        count = itertools.count(1)

        def open_(url: str | None = None, name: str | None = None) -> Page:
            page = Page(name or f"page{next(count)}")
            pages.callback(page.close)  # every page closes, even when closing another fails
            return page.open(url) if url else page

        yield open_
