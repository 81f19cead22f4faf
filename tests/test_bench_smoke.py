"""The benchmark harness runs end to end on tiny inputs (so it never rots). No speed thresholds here."""
import gc
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import orjson
import pytest

from bench import __main__ as bench_main
from bench import auth, http, instructions, loadgen, peer, sweep
from bench.patients import PATIENT_ID, patient_view_request

SMOKE_REDIS = "redis://127.0.0.1:6379/12"     # not the benchmark's default database (bench/http.py)


def test_synthetic_request_holds_n_resources_and_an_in_scope_patient():
    request = patient_view_request(200, seed=3)
    prefetch = request["prefetch"]
    count = 1 + sum(len(b["entry"]) for key, b in prefetch.items() if key != "patient")
    assert count == 200
    assert prefetch["patient"]["id"] == PATIENT_ID
    assert patient_view_request(200, seed=3) == request          # deterministic: runs compare


def test_sweep_answers_the_in_scope_patient_with_cards():
    body = orjson.dumps(patient_view_request(40))
    status, data = sweep.call(sweep.make_app(), body)
    assert status.startswith("200")
    assert "surgical-decompression" in {c["source"]["topic"]["code"] for c in orjson.loads(data)["cards"]}


def test_quick_run_prints_the_table_and_writes_results(tmp_path, capsys):
    # As on a new machine: a Redis the service has never used, which refuses tokens issued before it began
    # remembering (the benchmark signs its probe's token only once the service has answered /readyz). Its own
    # database: deleting the mark in the benchmark's default one would refuse the tokens of a benchmark running then.
    import redis
    from service.security.replay import REMEMBERING_SINCE
    redis.Redis.from_url(SMOKE_REDIS).delete(REMEMBERING_SINCE)
    out = tmp_path / "results.json"
    assert bench_main.main(["--quick", "--skip", "fetch", "--redis-url", SMOKE_REDIS, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["n"] for r in results["sweep"]] == [10, 50]
    for r in results["sweep"]:
        assert r["service_median_ms"] > 0 and r["cold_median_ms"] > 0 and r["loads_median_ms"] > 0
        assert r["peer_median_ms"] > 0 and r["cold_vs_peer"] > 0
        assert all(r[f"{x}_cpu_median_ms"] > 0 for x in ("service", "cold", "peer", "loads")) and r["cold_vs_peer_cpu"] > 0
        assert r["ratio_median"] > 1 and r["cold_ratio_median"] > 1
        assert r["service_p99_ms"] >= r["service_median_ms"] and r["cold_p99_ms"] >= r["cold_median_ms"]
        assert "surgical-decompression" in r["cards"]
    http = results["http"]
    assert set(http["results"]) == {"first_seen", "auth", "warm", "trivial", "peer"}
    assert http["replay_cache"].startswith("redis://") and http["even_connections"]
    # --quick: 0.5 s an app a round, in two slices of 0.25 s (one window: a pass and its mirror).
    assert http["slices_per_round"] == 2 and http["slice_seconds"] == 0.25
    tick = 1 / os.sysconf("SC_CLK_TCK")
    for name, runs in http["results"].items():
        assert [r["concurrency"] for r in runs] == [1, 4]
        for r in runs:
            low, median, high = r["cpu_ms_per_request"]
            assert 0 < low <= median <= high and r["requests_per_s"][1] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
            for base in ("trivial", "peer"):
                paired = r[f"cpu_vs_{base}"]
                assert paired["pairs"] == 1 and paired["median"] > 0
                assert paired["range"][0] <= paired["quartiles"][0] <= paired["median"] <= paired["quartiles"][1]
            if name == "auth":
                assert r["cpu_over_warm_ms"]["pairs"] == 1
            for one in r["per_round"]:
                # Every request answered 200: no token refused or reused, no chart refused.
                assert r["errors"] == 0 and one["statuses"] == {"200": one["requests"]}
                assert sum(one["per_connection"]) == one["requests"]
                assert len(one["slice_cpu_ms_per_request"]) == 2 and all(x > 0 for x in one["slice_cpu_ms_per_request"])
                assert one["window_cpu_ms_per_request"] == [one["cpu_ms_per_request"]]
                # The CPU source agrees with /proc/<pid>/stat over the round, within the ticks' rounding.
                clock, stat = one["cpu_check_ms"]
                assert abs(clock - stat) <= loadgen.STAT_ERROR_TICKS * http["workers"][name] * tick * 1000 + 0.5
                # Spread evenly: no worker holds more than its share of the connections.
                share = -(-r["concurrency"] // http["workers"][name])
                assert max(one["connection_workers"].count(w) for w in one["connection_workers"]) <= share
                assert abs(sum(one["worker_cpu_share"]) - 1) < 0.05
    memory = results["memory"]
    assert set(memory["rss_kib"]) == {"1", *(str(i) for i in range(30, 301, 30))}
    assert memory["distinct_patients"] == 20 and all(v > 0 for v in memory["rss_kib"].values())
    table = capsys.readouterr().out
    assert "HTTP, typical prefetch" in table and "In-process size sweep" in table and "Worker memory" in table
    assert table.index("first_seen") < table.index("warm") and "Against the targets" in table


def test_first_seen_requests_are_charts_never_sent_before_and_auth_requests_carry_fresh_tokens():
    first = http.Client(http.App("first_seen", http.SERVICE_APP, "distinct"), 1, 30)
    bodies = [first.request(i)[1] for i in range(3)]
    ids = [orjson.loads(b)["context"]["patientId"] for b in bodies]
    assert len(set(ids)) == 3 and http.FIRST_SEEN_ID not in ids
    for body, patient in zip(bodies, ids):
        request = orjson.loads(body)
        assert request["prefetch"]["patient"]["id"] == patient
        refs = {e["resource"]["subject"]["reference"] for key, bundle in request["prefetch"].items()
                if key != "patient" for e in bundle["entry"]}
        assert refs == {f"Patient/{patient}"}
    authed = http.Client(http.App("auth", http.SERVICE_APP, "auth"), 1, 30, auth.new_key())
    authed.sign(3)
    heads = {authed.request(i)[0] for i in range(3)}
    assert len(heads) == 3 and all(b"Authorization: Bearer " in h for h in heads)


def test_the_sweep_runs_under_the_production_collector_settings():
    threshold = gc.get_threshold()
    try:
        sweep.production_collector()
        assert gc.get_threshold() != threshold and gc.get_freeze_count() > 0
    finally:
        sweep.default_collector(threshold)
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0


def test_peer_style_walk_answers_one_card_for_a_vertebral_hemangioma_and_none_without():
    app = peer.create_app()
    request = patient_view_request(40)
    status, data = sweep.call(app, orjson.dumps(request))
    assert status.startswith("200") and len(orjson.loads(data)["cards"]) == 1
    request["prefetch"]["conditions"]["entry"] = [e for e in request["prefetch"]["conditions"]["entry"]
                                                  if e["resource"]["id"] != "avh-hem"]
    status, data = sweep.call(app, orjson.dumps(request))
    assert status.startswith("200") and orjson.loads(data)["cards"] == []


def test_instruction_count_children_run_every_subject_and_the_difference_is_per_call(monkeypatch):
    threshold = gc.get_threshold()
    try:
        for subject in instructions.SUBJECTS:      # what each callgrind child runs, without valgrind
            instructions.run_calls(subject, 1)
    finally:                  # the child quiets logging and sets the collector as a worker does: undo both here
        logging.disable(logging.NOTSET)
        sweep.default_collector(threshold)
    totals = {("service", 0): 1_000, ("service", 10): 81_000, ("trivial", 0): 1_000, ("trivial", 10): 31_000}
    monkeypatch.setattr(instructions, "count", lambda subject, calls: totals[subject, calls])
    assert instructions.per_call(("service", "trivial"), calls=10) == {"service": 8_000, "trivial": 3_000}


def test_instruction_count_reads_callgrinds_total():
    found = instructions.COLLECTED.search("==1== Events    : Ir\n==1== Collected : 8297207\n")
    assert found and int(found.group(1)) == 8297207


def test_profiles_time_each_phase_inside_real_calls(capsys):
    from bench import profile
    threshold = gc.get_threshold()
    try:
        assert profile.main(["auth", "--calls", "20"]) == 0
        assert profile.main(["first-seen", "--sizes", "30", "--calls", "20"]) == 0
        assert profile.main(["big-chart", "--readings", "20"]) == 0
    finally:
        logging.disable(logging.NOTSET)
        sweep.default_collector(threshold)
    out = capsys.readouterr().out
    phases = {line[:60].strip(): float(line[60:].split()[0]) for line in out.splitlines()
              if line.startswith("  ") and line[60:].strip().endswith("%")}
    for phase in ("ES384 signature check (AWS-LC, signatures.py)", "replay cache: SET NX EX sent to Redis (claim)",
                  "replay cache: its reply read, after the body checks",
                  "validation of relevant resources (schema, fhir.resources)", "rendering the cards"):
        assert phases[phase] > 0, phase
    # The signature check and the parse are part of begin: nested phases are no larger.
    assert phases["ES384 signature check (AWS-LC, signatures.py)"] + phases["strict parse of the token (tokens._parse)"] \
        <= phases["TokenVerifier.begin (incl. all below but the reply)"]
    assert "readings" in out and "cache off" in out
    # The profile's own timing calls are told apart from the rest (the phases timed outside any other: 9 a call).
    assert re.search(r"the profile's own timing calls \([1-9]\d* a call\), not in the rest +\d+\.\d{3} ms", out)


def test_chart_benchmark_runs_on_small_charts():
    """bench/charts.py end to end on tiny charts: every resource relevant, every reading answered (no timing)."""
    from bench import charts
    chart = orjson.loads(charts.limit_chart(300, seed=1))
    assert 1 + sum(len(b["entry"]) for key, b in chart["prefetch"].items() if key != "patient") == 300
    result = charts.run(limit=300, base_readings=20, repeats=1)
    assert result["limit"]["resources"] == 300 and [r["readings"] for r in result["same_code"]["runs"]] == [20, 320]
    assert "16x the readings cost" in "\n".join(charts.table(result))


def test_governance_benchmark_seeds_and_measures_a_tiny_database(tmp_path, capsys):
    from bench import governance
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    assert governance.main(["--url", url, "--cards", "300", "--entries", "60", "--days", "30", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "seeded 300 cards" in out and "60 feedback entries" in out
    assert "page, a year, charts drawn anew" in out and "of which the queries, a year" in out


def test_no_http_target_is_read_off_a_run_with_refused_requests():
    def run(c, cpu, errors=0):
        paired = {"median": 1.5, "quartiles": [1.4, 1.6], "range": [1.3, 1.7], "pairs": 15}
        return {"concurrency": c, "cpu_vs_trivial": paired, "cpu_over_warm_ms": {**paired, "median": cpu - 1.0},
                "errors": errors, "per_round": [{"cpu_ms_per_request": cpu}]}
    results = {"http": {"results": {"first_seen": [run(1, 1.5)], "trivial": [run(1, 1.0)],
                                    "auth": [run(1, 1.1, errors=10)], "warm": [run(1, 1.0)]}}}
    lines = bench_main._targets(results)
    assert any("NOT READABLE" in line and "auth c=1: 10" in line for line in lines)
    assert not any(line.endswith(": met") or line.endswith("NOT met") for line in lines)
    results["http"]["results"]["auth"] = [run(1, 1.1)]
    lines = bench_main._targets(results)
    assert any("first-seen chart, c=1: CPU 1.50 x" in line and line.endswith(": met") for line in lines)
    assert any("authentication, c=1: +0.100 ms" in line and line.endswith(": met") for line in lines)


def test_installed_peer_comparison_runs_a_peer_started_by_its_command(capsys):
    """bench.installed_peer against a peer started by a command (here bench/peer.py under gunicorn: HealthChain
    is not installed with the suite): both answer every first-seen body with a card, each side's CPU is its own.
    The ports it used to take from (18700-18750) all held, as another run's servers held some: it takes others."""
    from bench import installed_peer
    held = []
    try:
        for port in range(18700, 18751):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
                held.append(sock)
            except OSError:         # held by another process already
                sock.close()
        command = (f"{sys.executable} -m gunicorn --workers 1 --bind 127.0.0.1:{{port}} 'bench.peer:create_app()'")
        assert installed_peer.main(["--peer-cmd", command, "--peer-path", sweep.SERVICE_PATH, "--sizes", "10,40",
                                    "--rounds", "1"]) == 0
    finally:
        for sock in held:
            sock.close()
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [r["n"] for r in rows] == [10, 40]
    for r in rows:
        assert r["avh-cds_wall_ms"] > 0 and r["peer_wall_ms"] > 0 and r["avh-cds_cpu_ms"] > 0 and r["peer_cpu_ms"] > 0
        assert r["wall_ratio"] == round(r["avh-cds_wall_ms"] / r["peer_wall_ms"], 2)
    bodies = installed_peer.distinct_bodies(10, 3, "t")
    assert len(set(bodies)) == 3 and all(http.FIRST_SEEN_ID.encode() not in b for b in bodies)


def test_scaling_children_answer_the_chart_and_the_difference_is_the_call(monkeypatch):
    from bench import scaling
    threshold = gc.get_threshold()
    try:
        for call_it in (False, True):          # what each callgrind child runs, without valgrind
            scaling.run_call(20, call_it)
    finally:
        logging.disable(logging.NOTSET)
        sweep.default_collector(threshold)
    totals = {(10, False): 5_000, (10, True): 25_000, (160, False): 9_000, (160, True): 329_000}
    monkeypatch.setattr(scaling, "count", lambda readings, call_it: totals[readings, call_it])
    assert scaling.per_call(10) == {10: 20_000, 160: 320_000}


def test_the_callgrind_harnesses_say_valgrind_is_missing_and_stop(monkeypatch, capsys):
    from bench import flushbench, percall, scaling
    monkeypatch.setattr(instructions.shutil, "which", lambda command: None)
    for harness in (instructions, percall, scaling, flushbench):
        assert harness.main([]) == 2
        assert "valgrind is not installed" in capsys.readouterr().err


def test_flushbench_fills_a_file_and_writes_each_batch_in_full(tmp_path):
    """bench.flushbench's child without callgrind: the prefill and every counted batch are stored, 4 cards a call."""
    from sqlalchemy import create_engine
    from bench import flushbench
    flushbench.fill(tmp_path, prefill=7, calls=3)
    flushbench.run_child(tmp_path, calls=5, batches=2, counted=False)
    engine = create_engine(f"sqlite:///{tmp_path / 'flushbench.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT card_uuid FROM avh_issued_card").all()
    engine.dispose()
    assert len(rows) == (7 + 2 * 5) * len(flushbench.CARDS)


class DriftingMachine:
    """A fake machine for the HTTP benchmark's scheduling (what `http.Slicer` is to real servers): an app's CPU per
    request is its own cost times the machine's slowness at that moment, on a fake clock that each slice moves
    on. Both cores are busy in every slice, as under load; no sockets, no servers. `slowness`: its value every
    `period` seconds, linear in between (and over again after the last)."""
    STEP = 0.01

    def __init__(self, costs: dict[str, float], slowness: list[float], period: float):
        self.costs, self.points, self.period, self.now = costs, slowness, period, 0.0

    def slowness(self) -> float:
        x = self.now / self.period
        i = int(x) % (len(self.points) - 1)
        return self.points[i] + (self.points[i + 1] - self.points[i]) * (x - int(x))

    @contextmanager
    def round(self):
        yield

    def slice(self, name: str, seconds: float) -> dict:
        requests, cpu = 0.0, 0.0
        for _ in range(round(seconds / self.STEP)):
            cpu += 2 * self.STEP
            requests += 2 * self.STEP / (self.costs[name] * self.slowness() / 1000)
            self.now += self.STEP
        return {"requests": requests, "cpu_seconds": cpu, "seconds": seconds}


COSTS = {"first_seen": 2.0, "auth": 1.6, "warm": 1.1, "trivial": 1.0, "peer": 1.3}      # first-seen: 2.0 x trivial
# The first-seen server alone at c = 4 on the 2-core VM, CPU ms a request in 3-s rounds one after another (issue 18,
# 2026-11-30 morning): the machine's speed drifting, not the server ageing.
MEASURED_DRIFT = [1.63, 1.53, 1.53, 1.73, 2.03, 2.04, 1.53, 1.39, 1.37, 1.41, 1.44, 1.44]


def _first_seen_vs_trivial(slowness: list[float], period: float, slice_seconds: float) -> dict:
    slices = http.measure([app.name for app in http.APPS], 5, 3, slice_seconds, DriftingMachine(COSTS, slowness, period))
    return http.spread(http.paired(slices["first_seen"], slices["trivial"]))


def test_a_drifting_machine_moved_the_ratio_of_whole_rounds_and_no_longer_moves_the_interleaved_one():
    """The machine's speed drifting over tens of seconds: with each app's 3-s round in one piece (the method before,
    --slice 3) the first-seen / trivial ratio read off the same true 2.0 x came out 1.77 x (the measured drift) or
    2.10 x (a steady slowdown); interleaved in 0.5-s slices in mirrored passes it is 2.0 x within 1 %."""
    assert _first_seen_vs_trivial([1.0, 1.0], 75, 3)["median"] == _first_seen_vs_trivial([1.0, 1.0], 75, 0.5)["median"] == 2.0
    for slowness, period in ((MEASURED_DRIFT, 3), ([1.0, 2.0], 75)):      # as measured; twice as slow over the run
        before, now = _first_seen_vs_trivial(slowness, period, 3), _first_seen_vs_trivial(slowness, period, 0.5)
        assert abs(before["median"] - 2.0) > 0.09, before
        assert abs(now["median"] - 2.0) < 0.02 and now["pairs"] == 15, now
        assert now["quartiles"][1] - now["quartiles"][0] < before["quartiles"][1] - before["quartiles"][0]
    # A steady slowdown cancels exactly in every window: a pass and its mirror are centred on the same instant.
    steady = _first_seen_vs_trivial([1.0, 2.0], 75, 0.5)
    assert steady["range"][1] - steady["range"][0] < 0.005


def test_each_app_gets_the_same_time_centred_on_the_same_instant_in_every_window():
    names = [app.name for app in http.APPS]
    count, plan = http.slice_plan(names, rounds=3, seconds=3, slice_seconds=0.5)
    assert count == 6
    for r, order in enumerate(plan):
        assert len(order) == count * len(names) and order[0][0] == names[r % len(names)]     # starts one app later
        for window in range(count // 2):
            at = {name: [i for i, slot in enumerate(order) if slot == (name, window)] for name in names}
            assert all(len(slots) == 2 for slots in at.values())
            assert len({sum(slots) for slots in at.values()}) == 1          # the same centre for every app
    # One piece an app a round when the slice is the round (the method before): the round is the window.
    assert http.slice_plan(names, 2, 3, 3) == (1, [[(n, 0) for n in names], [(n, 0) for n in names[1:] + names[:1]]])


def test_the_cpu_source_counts_every_thread_of_a_worker_to_the_nanosecond_as_proc_stat_does_to_the_tick():
    """A child busy in three threads that then end: the process CPU clock (http's source) agrees with
    /proc/<pid>/stat within its ticks' rounding and keeps the ended threads' time; /proc/<pid>/schedstat counts the
    main thread only."""
    assert loadgen.CPU_SOURCE == "process CPU clock (ns)"
    child = subprocess.Popen([sys.executable, "-c", (
        "import threading, time\n"
        "def spin():\n    t = time.thread_time()\n    while time.thread_time() - t < 0.3: pass\n"
        "threads = [threading.Thread(target=spin) for _ in range(3)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\nprint('done', flush=True)\ntime.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        clock = loadgen.worker_cpu_seconds([child.pid])[child.pid]
        stat = loadgen.worker_stat_seconds([child.pid])[child.pid]
        main_thread = int(open(f"/proc/{child.pid}/schedstat").read().split()[0]) / 1e9
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert clock >= 0.9 and clock != round(clock / tick) * tick       # the threads' 0.9 s, not in whole ticks
        assert 0 <= clock - stat < loadgen.STAT_ERROR_TICKS * tick
        assert main_thread < 0.5 * clock
    finally:
        child.kill()
        child.wait()


def test_a_kept_connection_the_server_closed_is_told_from_one_still_open():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        try:
            assert not loadgen.closed(client)
            server_side.close()
            deadline = time.monotonic() + 5
            while not loadgen.closed(client) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert loadgen.closed(client)
        finally:
            client.close()


def test_a_connection_closed_as_idle_just_before_a_slice_is_reopened_and_its_request_sent_anew():
    """gunicorn closes a kept-alive connection idle for its keepalive (5 s, checked about every second): closed
    between the slicer's `closed` check and the slice's first send, the slice's request met the closed connection
    and `run` raised "the server closed connection 0", stopping the whole benchmark. Now the connection is
    reopened, a new request (a new index: an auth app's token sent may have been used) is sent on it, and the
    reopening is counted; a connection closed after answering is still an error."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve(conn):
            with conn:
                while True:
                    try:
                        if not conn.recv(1 << 16):
                            return
                    except OSError:
                        return
                    conn.sendall(answer)

        client = socket.create_connection(("127.0.0.1", port))
        first, _ = listener.accept()
        first.close()                                           # the keep-alive timer's close, just after the check
        accepted = []

        def reopen(index):
            sock = loadgen.reconnect(port, None, [])
            conn, _ = listener.accept()
            accepted.append(index)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
            return sock

        post = (b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", b"{}")
        sockets, sent = [client], []
        try:
            done = loadgen.run(sockets, lambda i: sent.append(i) or post, 5, 3,
                               reopen=reopen)
        finally:
            sockets[0].close()
        assert accepted == [0] and sockets[0] is not client
        assert done["resent"] == 1 and done["requests"] == 2 and done["statuses"] == {"200": 2}
        assert sent == [0, 1, 2]                                # request 0 went to the closed one: not sent again

        client = socket.create_connection(("127.0.0.1", port))
        second, _ = listener.accept()

        def answer_once():
            with second:                                        # closed after an answer: not an idle close
                second.recv(1 << 16)
                second.sendall(answer)

        threading.Thread(target=answer_once, daemon=True).start()
        try:
            with pytest.raises(RuntimeError, match="closed connection 0 after 1 requests"):
                loadgen.run([client], lambda i: post, 5, 3, reopen=reopen)
        finally:
            client.close()
