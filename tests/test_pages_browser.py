"""Every HTML page the service serves, opened in headless Chromium (tests/browser.py)."""
from tests.browser import LiveServer, open_page


def test_healthz_opens_in_the_browser(app, page):
    # The harness itself: a page that exists loads with its status and a screenshot, and nothing fails.
    with LiveServer(app) as server:
        report = open_page(page, f"{server.url}/healthz", "healthz")
    assert report.status == 200
    assert report.failed == [] and report.console_errors == []
    assert report.screenshot.stat().st_size > 0
