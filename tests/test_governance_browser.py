"""The governance page in headless Chromium (tests/browser.py), on seeded data: it renders, its charts are there,
filters in the URL and in the form change its numbers (to the JSON export's), nothing fails or leaves the
machine, and the browser's own credential prompt (HTTP Basic) opens it. Screenshots: test-artifacts/screenshots/."""
import datetime as dt

import pytest

from bench.governance_data import generate, load
from tests.browser import LiveServer, open_page
from tests.test_governance import TODAY, TOKEN, make_app, storage  # noqa: F401  (both databases)


@pytest.fixture(scope="module")
def seed():
    return generate(cards=4000, entries=900, today=TODAY, days=120, seed=11, unknown_share=0.02, repeat_share=0.05)


@pytest.fixture
def seeded(storage, seed):
    app = make_app(storage, governance_token=TOKEN)
    load(app.extensions["avh"].store, seed)
    yield app
    app.extensions["avh"].store.dispose()


def shown_total(page) -> int:
    return int(page.inner_text("#total-issued").replace(",", ""))


def json_total(app, query: str) -> int:
    response = app.test_client().get(f"/governance?format=json&{query}")
    assert response.status_code == 200
    return response.json["total"]["issued"]


def test_the_page_renders_with_its_charts_and_nothing_fails(seeded, page, storage):
    name = "governance" if "sqlite_path" in storage else "governance-postgresql"
    with LiveServer(seeded) as server:
        report = open_page(page, f"{server.url}/governance", name)
    assert report.status == 200
    assert report.failed == [] and report.console_errors == []
    assert report.screenshot.stat().st_size > 50_000
    charts = page.locator(".chart svg")
    assert charts.count() == 3
    for i in range(3):
        box = charts.nth(i).bounding_box()
        assert box["width"] > 600 and box["height"] > 100            # drawn, and at the page's width
    assert page.locator(".chart svg path").count() > 50              # bars and lines, not empty frames
    assert shown_total(page) == json_total(seeded, "") > 0
    assert page.locator("#topics-table tbody tr[data-topic]").count() >= 8
    assert page.locator("#fatigue-table tr.flagged").count() >= 1 and page.locator(".callout[role=alert]").is_visible()
    assert "comments are free text" in page.inner_text("#comments + p").lower()     # no credential: no comments


def test_filters_in_the_url_and_in_the_form_change_the_numbers(seeded, page):
    with LiveServer(seeded) as server:
        report = open_page(page, f"{server.url}/governance", "governance-default")
        everything = shown_total(page)
        narrow = f"from={TODAY - dt.timedelta(days=27)}&to={TODAY - dt.timedelta(days=7)}&service=avh-order-sign"
        report = open_page(page, f"{server.url}/governance?{narrow}", "governance-filtered")
        assert report.status == 200 and report.failed == [] and report.console_errors == []
        assert shown_total(page) == json_total(seeded, narrow) < everything
        assert page.inner_text("#service-filter") == "avh-order-sign"
        # The form: another service, then Show: the URL carries the filters and the numbers follow.
        page.select_option("select[name=service]", "avh-patient-view")
        page.fill("input[name=from]", str(TODAY - dt.timedelta(days=60)))
        with page.expect_navigation():
            page.click("form.filters button")
        assert "service=avh-patient-view" in page.url and f"from={TODAY - dt.timedelta(days=60)}" in page.url
        query = page.url.split("?", 1)[1]
        assert shown_total(page) == json_total(seeded, query) not in (everything, 0)
        page.screenshot(path=str(report.screenshot.parent / "governance-form.png"), full_page=True)


def test_a_committee_member_opens_it_with_the_browser_credential_prompt(browser, seed, storage):
    app = make_app(storage, environ={"AVH_CDS_AUTH": "required"}, governance_token=TOKEN)
    load(app.extensions["avh"].store, seed)
    with LiveServer(app) as server:
        refused = browser.new_context()             # no credential: the browser would ask, and nothing is shown
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            refused.new_page().goto(f"{server.url}/governance")
        assert refused.request.get(f"{server.url}/governance").status == 401
        wrong = browser.new_context(http_credentials={"username": "committee", "password": TOKEN + "x"})
        assert wrong.request.get(f"{server.url}/governance").status == 401
        refused.close()
        wrong.close()
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      http_credentials={"username": "committee", "password": TOKEN})
        page = context.new_page()
        report = open_page(page, f"{server.url}/governance", "governance-with-comments")
        assert report.status == 200 and report.failed == [] and report.console_errors == []
        assert page.locator("blockquote.comment").count() > 0
        context.close()
    app.extensions["avh"].store.dispose()


# In the rendered DOM: every id given more than once, and every reference to an id (url(#id) in an attribute such
# as clip-path or fill, href="#id" of <use>) made inside a chart that finds no element, or finds one outside the
# <svg> it was made in. getElementById answers the first element with the id in the document, as a browser resolves
# url(#id): with repeated ids, the second chart's clip paths and tick markers were the first chart's.
IDS_AND_REFERENCES = """() => {
  const seen = {};
  for (const element of document.querySelectorAll('[id]')) seen[element.id] = (seen[element.id] || 0) + 1;
  const repeated = Object.keys(seen).filter(id => seen[id] > 1);
  const astray = [];
  let references = 0;
  for (const chart of document.querySelectorAll('.chart svg')) {
    for (const element of chart.querySelectorAll('*')) {
      for (const attribute of element.attributes) {
        const named = attribute.value.match(/url\\(#([^)]+)\\)/) || (attribute.name.endsWith('href')
                      && attribute.value.match(/^#(.+)$/));
        if (!named) continue;
        references += 1;
        const target = document.getElementById(named[1]);
        if (target === null || target.closest('svg') !== chart) astray.push(attribute.name + '=' + attribute.value);
      }
    }
  }
  return {repeated, astray, references};
}"""


def test_the_charts_ids_are_unique_and_each_chart_references_its_own_elements(seeded, page):
    """ui14: matplotlib numbers each figure's ids from 1 (figure_1, axes_1, patch_1 ...) and names tick markers by
    a hash of their shape, so the page's three inline charts repeated hundreds of ids (invalid HTML), and a
    chart's <use href="#m..."> found the first chart's marker."""
    with LiveServer(seeded) as server:
        report = open_page(page, f"{server.url}/governance", "governance-ids")
    assert report.status == 200 and page.locator(".chart svg").count() == 3
    found = page.evaluate(IDS_AND_REFERENCES)
    assert found["repeated"] == []
    assert found["references"] > 100            # clip paths and markers are referenced: the check looked at them
    assert found["astray"] == []
