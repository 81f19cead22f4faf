"""Hostile review of first16 (HTTP first-hour fixes) and bench16 (the benchmark's interleaved slices): each test
failed on the merged code and passes with its fix."""
from collections import Counter

from bench import http, loadgen


class FakeSocket:
    def __init__(self, port: int):
        self.port = port

    def close(self) -> None:
        pass


class FakeServers:
    """The load generator and /proc as http.Slicer sees them, for servers that are not started: each app's one
    worker (pid = its index + 1) answers `rate` requests a second at `cost` CPU seconds each, and spends `background`
    CPU seconds a request after its slice (as the service's feedback store flushes the cards a slice issued), while
    the next app's slice runs."""

    def __init__(self, monkeypatch, apps: dict[str, dict]):
        self.apps, self.cpu, self.pending = apps, Counter(), Counter()
        self.pids = {name: i + 1 for i, name in enumerate(apps)}
        self.by_port = {spec["port"]: name for name, spec in apps.items()}
        monkeypatch.setattr(loadgen, "connect", lambda port, count, workers, even: (
            [FakeSocket(port) for _ in range(count)], workers * count))
        monkeypatch.setattr(loadgen, "closed", lambda sock: False)
        monkeypatch.setattr(loadgen, "run", self.run)
        monkeypatch.setattr(loadgen, "worker_cpu_seconds", lambda pids: {p: self.cpu[p] for p in pids})
        monkeypatch.setattr(loadgen, "worker_stat_seconds", lambda pids: {p: self.cpu[p] for p in pids})

    def run(self, sockets, request, seconds, max_requests=None, reopen=None):
        name = self.by_port[sockets[0].port]
        for other, pid in self.pids.items():        # the other apps' work left over from their slices
            if other != name:
                self.cpu[pid] += self.pending.pop(pid, 0.0)
        spec, pid = self.apps[name], self.pids[name]
        n = int(spec["rate"] * seconds)
        if max_requests is not None:
            n = min(n, max_requests)
        for i in range(n):
            request(i)                              # an auth request past its tokens: IndexError
        self.cpu[pid] += n * spec["cost"]
        self.pending[pid] += n * spec.get("background", 0.0)
        used = n / spec["rate"]
        return {"requests": n, "seconds": used, "latencies": [0.001] * n, "statuses": {"200": n} if n else {},
                "errors": 0, "resent": 0, "per_connection": [n]}


def _clients(apps: dict[str, dict]) -> tuple[dict, dict]:
    known = {app.name: app for app in http.APPS}
    clients = {name: http.Client(known[name], spec["port"], 10, key=None) for name, spec in apps.items()}
    return clients, {name: [i + 1] for i, name in enumerate(apps)}


def test_an_auth_app_faster_than_guessed_has_tokens_for_every_slice(monkeypatch):
    """The tokens were signed once a round, for 1.3 x the fastest rate seen (500 requests/s before any): an auth
    server answering 2,000 a second used them up in the round's second slice, the third had no token to send, 0
    requests, and the round's summary divided by zero (the benchmark stopped with ZeroDivisionError; with a few
    tokens left, a slice cut short: not the time the other apps got). Now each slice is topped up first."""
    signed = iter(range(10 ** 9))
    monkeypatch.setattr(http.auth, "sign_tokens", lambda key, audience, count: [f"t{next(signed)}"
                                                                                 for _ in range(count)])
    apps = {"auth": {"port": 1, "rate": 2000, "cost": 0.0005}, "trivial": {"port": 2, "rate": 4000, "cost": 0.0002}}
    FakeServers(monkeypatch, apps)
    clients, workers = _clients(apps)
    slicer = http.Slicer(clients, workers, 1, True, 3)
    slices = http.measure(list(apps), 2, 3, 0.5, slicer)
    assert [s["requests"] for done in slices["auth"] for s in done] == [1000] * 12
    for done, info in zip(slices["auth"], slicer.rounds):
        assert http._round_summary(workers["auth"], 1, done, info["auth"])["cpu_ms_per_request"] == 0.5


def test_the_cpu_a_server_spends_between_its_slices_is_counted(monkeypatch):
    """A slice's CPU was read around the slice alone: what the service's workers spent after it, while the other
    apps' slices ran (the feedback store's flush thread writing the cards it issued, every 0.5 s), was counted
    nowhere, and the service looked cheaper than it is against the trivial endpoint and the peer (here 2.0 x for a
    true 2.5 x; before interleaving, a 3-s run in one piece counted all but its last flush). Now each slice owns
    its workers' CPU up to the app's next slice (or the round's end)."""
    apps = {"first_seen": {"port": 1, "rate": 500, "cost": 0.002, "background": 0.0005},
            "trivial": {"port": 2, "rate": 1000, "cost": 0.001}}
    servers = FakeServers(monkeypatch, apps)
    clients, workers = _clients(apps)
    slices = http.measure(list(apps), 2, 3, 0.5, http.Slicer(clients, workers, 1, True, 3))
    assert http.spread(http.paired(slices["first_seen"], slices["trivial"]))["median"] == 2.5
    # all the CPU its worker spent is in its slices (what it spent after the last round, in the last slice)
    assert abs(sum(s["cpu_seconds"] for done in slices["first_seen"] for s in done) - servers.cpu[1]) < 1e-9


def test_every_405_of_the_fixture_fhir_server_names_what_its_url_answers(tmp_path):
    """The fixture FHIR server's read-only 405 (PUT /fhir/metadata, a POST to /fhir) had no Allow header, which HTTP
    requires of a 405 and first16 promised of every 405; a method no route takes (TRACE /fhir/metadata) got an
    Allow naming POST, PUT, PATCH and DELETE, the methods its catch-all takes only to refuse them. Now every 405
    under /fhir is the FHIR one, its Allow what the URL answers: GET (HEAD, OPTIONS), and POST for a type's _search."""
    from service import create_app
    from service.config import Settings
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    client = app.test_client()
    for method, path, allowed in (("PUT", "/fhir/metadata", "GET, HEAD, OPTIONS"), ("DELETE", "/fhir/Patient/avh-01",
                                  "GET, HEAD, OPTIONS"), ("POST", "/fhir", "GET, HEAD, OPTIONS"),
                                  ("PATCH", "/fhir/Condition/_search", "GET, HEAD, OPTIONS, POST"),
                                  ("TRACE", "/fhir/metadata", "GET, HEAD, OPTIONS"),
                                  ("PROPFIND", "/fhir/Patient/_search", "GET, HEAD, OPTIONS, POST")):
        answer = client.open(path, method=method)
        assert answer.status_code == 405 and answer.headers.get("Allow") == allowed, (method, path, answer.headers)
        assert answer.content_type == "application/fhir+json; charset=utf-8"
        assert answer.json["issue"][0]["code"] == "not-supported"
        for named in allowed.split(", "):          # what Allow names is not refused
            assert client.open(path, method=named).status_code != 405, (named, path)
    # the app's own 405s are as they were
    answer = client.open("/pathway", method="TRACE")
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD, OPTIONS" and answer.is_json


def test_a_doubled_slash_redirect_keeps_the_query_as_sent(tmp_path):
    """The redirect of a path with doubled slashes took its query from werkzeug's absolute URL through urlsplit,
    which drops tabs and newlines, ends the query at a '#' and had a byte not UTF-8 replaced: `?a=<TAB>b&c=<E9>#x`
    came back as `?a=b&c=%EF%BF%BD`, another search than the one sent. Now its query is the trailing-slash redirect's:
    the bytes as sent, escaped."""
    from service import create_app
    from service.config import Settings
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    client = app.test_client()
    for raw in ("a=\tb&c=\xe9#x", "patient=avh-01&code=a%23b", "a=\r\nb"):
        doubled = client.get("/", environ_overrides={"PATH_INFO": "/fhir//Condition", "QUERY_STRING": raw})
        slashed = client.get("/", environ_overrides={"PATH_INFO": "/fhir/Condition/", "QUERY_STRING": raw})
        assert doubled.status_code == slashed.status_code == 308
        assert doubled.headers["Location"] == slashed.headers["Location"], raw
        assert doubled.json["location"] == doubled.headers["Location"]
    assert doubled.headers["Location"] == "/fhir/Condition?a=%0D%0Ab"


def test_a_slice_round_or_run_of_no_time_is_refused_before_any_server_starts(capsys):
    """`--slice 0` divided by zero in slice_plan once every server had started and warmed up (minutes in); `--seconds
    0` or `--rounds 0` left no request to divide by. Now argparse refuses them, naming the value."""
    import pytest
    from bench import __main__ as bench_main
    parser = bench_main.build_parser()
    for option in ("--slice", "--seconds", "--rounds"):
        for value in ("0", "-1"):
            with pytest.raises(SystemExit):
                parser.parse_args([option, value])
            assert "is not above zero" in capsys.readouterr().err
    args = parser.parse_args(["--slice", "0.25", "--seconds", "1.5", "--rounds", "2"])
    assert (args.slice, args.seconds, args.rounds) == (0.25, 1.5, 2)


def test_options_on_the_fixture_fhir_server_names_what_its_405_names(tmp_path):
    """OPTIONS /fhir/metadata (a CORS preflight, a probe) answered Allow: DELETE, GET, HEAD, OPTIONS, PATCH, POST,
    PUT, the methods of every rule the URL matches, the catch-all's taken only to refuse them: each a 405 if tried.
    Now the methods the URL answers, as its 405 names them."""
    from service import create_app
    from service.config import Settings
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    client = app.test_client()
    for path in ("/fhir/metadata", "/fhir/Patient/avh-01", "/fhir/Condition/_search", "/fhir", "/fhir/nothing/"):
        allow = client.options(path).headers["Allow"]
        assert allow == client.open(path, method="TRACE").headers["Allow"], path
        for method in allow.split(", "):
            assert client.open(path, method=method).status_code != 405, (method, path)
    assert set(client.options("/pathway").headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}   # as it was


def test_a_slice_that_reopened_a_connection_counts_it_and_never_sends_its_token_again(monkeypatch):
    """A connection the server closed as idle just before a slice (loadgen.run reopens it and sends a new request:
    the token sent on the closed one may have been used) is counted in the round's reconnects, and the next slice
    starts past that token too."""
    signed = iter(range(10 ** 9))
    monkeypatch.setattr(http.auth, "sign_tokens", lambda key, audience, count: [f"t{next(signed)}"
                                                                                 for _ in range(count)])
    apps = {"auth": {"port": 1, "rate": 200, "cost": 0.0005}, "trivial": {"port": 2, "rate": 400, "cost": 0.0002}}
    servers = FakeServers(monkeypatch, apps)
    sent, reopened = [], []
    answered = servers.run

    def run(sockets, request, seconds, max_requests=None, reopen=None):
        if servers.by_port[sockets[0].port] != "auth":
            return answered(sockets, request, seconds, max_requests)
        reopen(0)                                    # the first request met a closed connection: a new one sent
        reopened.append(request(0)[0])
        done = answered(sockets, lambda i: sent.append(request(i + 1)[0]), seconds,
                        None if max_requests is None else max_requests - 1)
        return {**done, "resent": 1}

    monkeypatch.setattr(loadgen, "run", run)
    monkeypatch.setattr(loadgen, "reconnect", lambda port, worker, workers: FakeSocket(port))
    clients, workers = _clients(apps)
    slicer = http.Slicer(clients, workers, 1, True, 1)
    http.measure(list(apps), 1, 1, 0.5, slicer)
    assert slicer.rounds[0]["auth"]["reconnects"] == 2 and len(reopened) == 2
    assert len(set(sent + reopened)) == len(sent) + len(reopened)       # no token sent twice
