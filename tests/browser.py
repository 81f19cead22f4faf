"""Pages in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright's Python package.

The app runs on a werkzeug server on 127.0.0.1 in a thread; `open_page` loads one URL and reports its
HTTP status, every request that failed or left the machine, and every console error, and saves a
screenshot under test-artifacts/screenshots/ for people to look at. Playwright never downloads a
browser here: `executable_path` points at the system one, which the README's test command installs.
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: the README's test command installs Debian's `chromium`")
    return path


class LiveServer:
    """A Flask app served on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@dataclass
class PageReport:
    status: int
    failed: list[str] = field(default_factory=list)      # requests that failed, or went off 127.0.0.1
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def open_page(page, url: str, name: str, full_page: bool = True) -> PageReport:
    """Load `url` in `page`; report status, failed or external requests and console errors; save a screenshot."""
    report = PageReport(status=0)
    host = urlsplit(url).hostname

    def on_request(request):
        target = urlsplit(request.url)
        if target.scheme in ("http", "https") and target.hostname != host:
            report.failed.append(f"external request: {request.url}")

    page.on("request", on_request)
    page.on("requestfailed", lambda request: report.failed.append(f"failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: response.status >= 400 and response.url != url
            and report.failed.append(f"{response.status}: {response.url}"))
    page.on("console", lambda message: message.type == "error" and report.console_errors.append(message.text))
    page.on("pageerror", lambda error: report.console_errors.append(str(error)))
    response = page.goto(url, wait_until="load")
    report.status = response.status if response is not None else 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report.screenshot = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(report.screenshot), full_page=full_page)
    return report
