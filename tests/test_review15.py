"""Hostile review of int15 (ui15 + orders15): each test failed on int15."""
import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_dexamethasone_course import dosed
from tests.test_order_hooks import post, signed_as_suggested


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


# --- a trailing-slash redirect stays on this site -------------------------------------------------------------------

@pytest.mark.parametrize("typed, canonical", [("//pathway/", "/pathway"), ("///governance//", "/governance"),
                                              ("//fhir/Patient/x/", "/fhir/Patient/x")])
def test_a_path_typed_with_leading_slashes_is_redirected_on_this_site(typed, canonical, tmp_path):
    """Attack (rev15): a request line `GET //pathway/` (a link an attacker sends) was redirected to `//pathway`: a
    browser reads a Location starting with two slashes as another host's URL (http://pathway/, a name the hospital's
    DNS search domain completes), an open redirect. The Location is this site's path, with one leading slash."""
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    answer = app.test_client().get("/", environ_overrides={"PATH_INFO": typed})
    assert answer.status_code == 308 and answer.headers["Location"] == canonical, answer.headers.get("Location")


