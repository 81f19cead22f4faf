"""Every HTML page the service serves, opened in headless Chromium (tests/browser.py).

The pages are found, not listed: every GET route without a parameter is asked for, and those answering
text/html are the HTML pages. The cards' Source links come from real card responses over HTTP.
"""
import json
from urllib.parse import urlsplit

import pytest

from service import create_app
from service.clinical.cards import UNCHECKED_TOPIC
from service.config import Settings
from service.fhir.fixtures import load_fixtures
from service.fhir.replay import Remote, hook_request, prefetch_templates, replay
from tests.browser import SCREENSHOTS, LiveServer, open_page

PHONE = {"width": 375, "height": 812}
FAILED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app as `avh-cds serve` runs it (auth off, the fixture FHIR endpoint on), on a live server."""
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path_factory.mktemp("pages") / "avh-cds.sqlite3"))
    with LiveServer(app) as server:
        yield app, server


def html_pages(app) -> list[str]:
    client = app.test_client()
    paths = [rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods and not rule.arguments]
    return sorted(p for p in paths if client.get(p).mimetype == "text/html")


def test_the_html_pages_are_found_from_the_routes(served):
    app, _ = served
    assert "/pathway" in html_pages(app)
    assert "/healthz" not in html_pages(app)       # JSON routes are not pages


def test_every_html_page_opens_with_200_and_nothing_failing(served, page):
    app, server = served
    for path in html_pages(app):
        report = open_page(page, server.url + path, "page" + path.replace("/", "-"))
        assert report.status == 200, path
        assert report.failed == [], (path, report.failed)
        assert report.console_errors == [], (path, report.console_errors)
        assert report.screenshot.stat().st_size > 0


def test_every_html_page_typed_with_a_slash_lands_on_it(served, page):
    """/pathway/ and /governance/, as a person types them: the browser follows the 308 to the page itself."""
    app, server = served
    pages = [p for p in html_pages(app) if p != "/"]
    assert {"/pathway", "/governance"} <= set(pages)
    for path in pages:
        report = open_page(page, server.url + path + "/", "slash" + path.replace("/", "-"))
        assert report.status == 200 and page.url == server.url + path, (path, page.url)
        assert report.failed == [] and report.console_errors == [], (path, report.failed, report.console_errors)


def card_source_urls(server) -> set[str]:
    """source.url of the cards the running service returns: every fixture patient, and a patient whose
    MRI reports could not be fetched (the data-unavailable card)."""
    transport = Remote(server.url)
    fixtures = load_fixtures(Settings().fixtures_dir)
    urls = {c["source"]["url"] for outcome in replay(fixtures, transport) for c in outcome.cards}
    [preop] = [f for f in fixtures if f.name.startswith("01-")]
    request = hook_request(preop, prefetch_templates(transport))
    request["prefetch"]["diagnosticReports"] = FAILED
    status, answer = transport.call("POST", "/cds-services/avh-patient-view", request)
    assert status == 200
    return urls | {c["source"]["url"] for c in answer["cards"]}


def test_every_cards_source_link_lands_on_its_section(served, page):
    app, server = served
    urls = card_source_urls(server)
    topics = {urlsplit(u).fragment for u in urls}
    assert UNCHECKED_TOPIC in topics and "surgical-decompression" in topics and len(topics) >= 8
    for url in sorted(urls):
        assert urlsplit(url)._replace(fragment="").geturl() == f"{server.url}/pathway"
        page.goto("about:blank")        # a fresh load each time, as a click from the EHR is, not a jump within the page
        report = open_page(page, url, "source-" + urlsplit(url).fragment, full_page=False)
        assert report.status == 200 and report.failed == [] and report.console_errors == []
        top = page.evaluate("id => { const e = document.getElementById(id); return e && "
                            "e.getBoundingClientRect().top; }", urlsplit(url).fragment)
        assert top is not None, f"{url}: no section with that id"
        assert 0 <= top < 40, f"{url}: the section starts {top}px from the top of the window, not at it"


def test_every_topic_of_the_card_library_has_its_section(served, page):
    app, server = served
    open_page(page, f"{server.url}/pathway", "pathway-topics", full_page=False)
    ids = set(page.evaluate("Array.from(document.querySelectorAll('section[id]'), e => e.id)"))
    assert set(app.extensions["avh"].engine.library.definitions) | {UNCHECKED_TOPIC} <= ids


def test_the_pathway_picture_and_every_link_inside_the_page_resolve(served, page):
    app, server = served
    open_page(page, f"{server.url}/pathway", "pathway", full_page=True)
    data = json.loads((Settings().cards_dir / "pathway-page.json").read_text())
    for stage in data["stages"]:
        assert page.locator(f"#stage-{stage['id']}").is_visible()
        assert page.locator(f"#stage-{stage['id']} .chip").count() == len(stage["topics"])
    for decision in data["decisions"]:
        assert page.locator(f"#decision-{decision['id']}").is_visible()
    broken = page.evaluate("Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                           ".map(a => a.getAttribute('href').slice(1)).filter(id => !document.getElementById(id))")
    assert broken == []
    text = page.inner_text("main")
    assert "**" not in text and "{level}" not in text          # card markdown rendered, placeholders named
    assert "96 mg IV bolus" in text and "30 Gy in 10 fractions" in text and "2424 ml" in text
    hrefs = page.evaluate("Array.from(document.querySelectorAll('#references a'), a => a.href)")
    refs = json.loads((Settings().cards_dir / "references.json").read_text())["references"]
    assert sorted(hrefs) == sorted(r["url"] for r in refs.values() if "url" in r)


def test_every_html_page_fits_a_phone_without_sideways_scrolling(served, browser):
    app, server = served
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        page = context.new_page()
        for path in html_pages(app):
            report = open_page(page, server.url + path, "phone" + path.replace("/", "-"))
            assert report.status == 200 and report.failed == []
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path}: {width}px wide on a {PHONE['width']}px screen"
    finally:
        context.close()


def test_the_pathway_prints(served, page):
    app, server = served
    open_page(page, f"{server.url}/pathway", "pathway-before-print", full_page=False)
    page.emulate_media(media="print")
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    assert page.evaluate("getComputedStyle(document.querySelector('.stage')).breakInside") == "avoid"
    pdf = page.pdf(format="A4", print_background=False)
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    (SCREENSHOTS / "pathway.pdf").write_bytes(pdf)


def test_card_text_is_markdown_and_can_inject_no_html():
    from service.api.pages import card_html
    html = card_html("**Dexamethasone** at {level}: <script>alert(1)</script>\n\n- one\n- two")
    assert "<strong>Dexamethasone</strong> at ‹level›" in html and "<li>one</li>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_favicon_is_an_svg_icon_the_pages_can_show(served):
    app, _ = served
    response = app.test_client().get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.data.startswith(b"<svg") and b"</svg>" in response.data


def test_a_page_that_does_not_exist_is_a_json_404_not_a_page(served, page):
    app, server = served
    report = open_page(page, f"{server.url}/no-such-page", "not-found", full_page=False)
    assert report.status == 404
    assert json.loads(page.inner_text("body"))["error"]


def test_the_healthz_json_opens_in_the_browser(served, page):
    # The harness itself: a JSON route loads with its status and a screenshot, and nothing fails.
    _, server = served
    report = open_page(page, f"{server.url}/healthz", "healthz")
    assert report.status == 200
    assert report.failed == [] and report.console_errors == []
    assert report.screenshot.stat().st_size > 0




def test_the_base_url_the_readme_names_is_a_page_whose_every_link_opens(served, page):
    """A newcomer opens http://127.0.0.1:8080, the address the README starts the service on: it was a JSON 404.
    Now a page lists what a person can open; every link on it that stays on the server answers 200."""
    app, server = served
    report = open_page(page, f"{server.url}/", "index")
    assert report.status == 200 and report.failed == [] and report.console_errors == []
    hrefs = page.evaluate("Array.from(document.querySelectorAll('a'), a => a.href)")
    local = [h for h in hrefs if h.startswith(server.url + "/")]
    assert {f"{server.url}/cds-services", f"{server.url}/pathway", f"{server.url}/governance",
            f"{server.url}/fhir/metadata"} <= set(local)
    for href in local:
        assert app.test_client().get(urlsplit(href).path).status_code == 200, href
    [sandbox] = [h for h in hrefs if h.startswith("https://sandbox.cds-hooks.org/")]
    assert f"fhirServiceUrl={server.url}/fhir&patientId=avh-01&serviceDiscoveryURL={server.url}/cds-services" in sandbox
    for service in app.extensions["avh"].registry:
        assert f"/cds-services/{service.id}" in page.inner_text("main")
