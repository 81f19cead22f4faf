"""rev17b: hostile review of mend17 (the access log names a path by the pattern of the app's route it matches)."""
import pytest

from service.api.accesslog import NOT_A_ROUTE

from tests.test_mend17 import served  # noqa: F401  the app as `avh-cds serve` runs it (fixture FHIR on)


@pytest.mark.parametrize("method, path, logged", [
    ("POST", "/fhir/Condition/_search", "/fhir/Condition/_search"),
    ("POST", "/fhir//Condition//_search", "/fhir/Condition/_search"),
    ("GET", "/fhir/Condition/_search", "/fhir/Condition/{id}"),             # a GET there reads the id "_search"
    ("POST", "/cds-services/avh-patient-view", "/cds-services/{id}"),        # a route of other methods than GET
    ("PUT", "/fhir/Condition/_search", "/fhir/Condition/{id}"),              # answers no PUT: the first rule's name
])
def test_a_path_is_logged_as_the_route_its_method_matches(served, method, path, logged):
    """`POST /fhir/Condition/_search` (the sandbox's FHIR search, the fixture endpoint's most frequent request) was
    logged as /fhir/Condition/{id}: Routes matched every path as a GET, and a GET of that path is the read of a
    resource whose id is `_search`. Now the path is matched for the request's method first, in each access line
    (gunicorn's, `avh-cds serve`'s, the app's)."""
    from service.api.accesslog import logged_path, logged_target
    assert logged_path({"PATH_INFO": path, "REQUEST_METHOD": method}) == logged
    assert logged_target(path + "?patient=avh-01", method) == logged


@pytest.mark.parametrize("target, logged", [
    ("//fhir//metadata?patient=avh-01", "/fhir/metadata"),
    ("//cds-services/avh-patient-view", "/cds-services/{id}"),
    ("//cds-services/fhir/Patient/avh-01", NOT_A_ROUTE),       # was named the FHIR read /fhir/Patient/{id}
    ("http://localhost:8000//fhir/Patient/avh-01?x=1", "/fhir/Patient/{id}"),
])
def test_a_target_with_leading_doubled_slashes_is_logged_as_its_path(served, target, logged):
    """gunicorn's DEBUG line of each request (pre_request) and its `Error handling request` line name a path from the
    request target as sent (gunicorn keeps `//fhir/metadata`): urlsplit read it as a network-path reference (host
    `fhir`, path `/metadata`), so those lines said NOT_A_ROUTE where the access line (from PATH_INFO) said
    /fhir/metadata, and `//cds-services/fhir/Patient/x` was logged as the FHIR read of a route it is not. Now the
    first segment is part of the path."""
    from service.api.accesslog import logged_target
    assert logged_target(target) == logged


def test_gunicorn_s_debug_line_of_a_request_names_its_path_as_the_access_line_does(served):
    """gunicorn.conf.py's pre_request (the DEBUG line of each request) named the path matched as a GET: `POST
    /fhir/Condition/_search` was `/fhir/Condition/{id}` there while the access line said /fhir/Condition/_search."""
    import runpy
    from pathlib import Path
    from types import SimpleNamespace
    lines = []
    worker = SimpleNamespace(log=SimpleNamespace(debug=lambda msg, *args: lines.append(msg % args),
                                                 error_log=SimpleNamespace(isEnabledFor=lambda level: True)))
    pre_request = runpy.run_path(str(Path(__file__).parents[1] / "gunicorn.conf.py"))["pre_request"]
    pre_request(worker, SimpleNamespace(method="POST", path="/fhir/Condition/_search"))
    assert lines == ["POST /fhir/Condition/_search"]


def test_gunicorn_s_debug_line_is_not_made_when_debug_is_off(served, monkeypatch):
    """pre_request runs for every request; naming its path by the URL map (~9 us) was done even at INFO, where
    gunicorn drops the line: a cost on every CDS call for nothing."""
    import logging
    import runpy
    from pathlib import Path
    from types import SimpleNamespace
    from service.api import accesslog

    def never(*args):
        raise AssertionError("the path was named for a line that is not written")
    monkeypatch.setattr(accesslog, "logged_target", never)
    error_log = logging.getLogger("test.gunicorn.error")
    error_log.setLevel(logging.INFO)
    lines = []
    worker = SimpleNamespace(log=SimpleNamespace(debug=lambda msg, *args: lines.append(msg % args),
                                                 error_log=error_log))
    pre_request = runpy.run_path(str(Path(__file__).parents[1] / "gunicorn.conf.py"))["pre_request"]
    pre_request(worker, SimpleNamespace(method="POST", path="/cds-services/avh-patient-view"))
    assert lines == []


@pytest.mark.parametrize("method, target, status", [
    ("GET", "//fhir/metadata?patient=avh-01", 308), ("GET", "///fhir/metadata", 308),
    ("POST", "//cds-services/avh-patient-view", 404), ("GET", "//", 308), ("GET", "/fhir/metadata", 200),
])
def test_avh_cds_serve_answers_a_path_with_leading_doubled_slashes_as_gunicorn_does(served, method, target, status):
    """docs/deployment.md: a path with leading doubled slashes (`//fhir/metadata`, `POST //cds-services/{id}`) is a
    GET's 308, a call's 404 (SlashesMerged), and so it is under gunicorn. `avh-cds serve` served both: werkzeug's
    development server read `//fhir/metadata` as host `fhir` and path `/metadata` and put them back as
    /fhir/metadata, one slash fewer; `///fhir/metadata` lost two. Now PATH_INFO is the target's path as sent there
    too, so a client tried against `avh-cds serve` gets the answer production gives."""
    import http.client
    import threading
    from werkzeug.serving import make_server
    from service.api.accesslog import DevelopmentAccessLog
    server = make_server("127.0.0.1", 0, served, threaded=True, request_handler=DevelopmentAccessLog)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.request(method, target, body=b"{}" if method == "POST" else None,
                           headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == status
        if status == 308:
            assert answer.getheader("Location") == "/" + target.lstrip("/")
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
