"""The benchmark harness runs end to end on tiny inputs (so it never rots). No speed thresholds here."""
import gc
import json
import logging
import shutil

import orjson

from bench import __main__ as bench_main
from bench import instructions
from bench import sweep
from bench.patients import PATIENT_ID, patient_view_request


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
    assert shutil.which("wrk"), "wrk (Debian package) drives the HTTP part: apt-get install wrk (.ci/run does)"
    out = tmp_path / "results.json"
    assert bench_main.main(["--quick", "--skip", "fetch", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["n"] for r in results["sweep"]] == [10, 50]
    for r in results["sweep"]:
        assert r["service_median_ms"] > 0 and r["cold_median_ms"] > 0 and r["loads_median_ms"] > 0
        assert r["ratio_median"] > 1 and r["cold_ratio_median"] > 1
        assert r["service_p99_ms"] >= r["service_median_ms"] and r["cold_p99_ms"] >= r["cold_median_ms"]
        assert "surgical-decompression" in r["cards"]
    for name in ("service", "service_cold", "trivial"):
        assert [r["concurrency"] for r in results["http"][name]] == [1, 4]
        for r in results["http"][name]:
            assert r["requests_per_s"] > 0 and r["errors"] == 0 and r["p99_ms"] >= r["p50_ms"] > 0
    for r in results["http"]["service"] + results["http"]["service_cold"]:
        assert 0 < r["share_of_trivial"] and 0 < r["share_of_trivial_best"]
    memory = results["memory"]
    assert set(memory["rss_kib"]) == {"1", *(str(i) for i in range(30, 301, 30))}
    assert memory["distinct_patients"] == 20 and all(v > 0 for v in memory["rss_kib"].values())
    table = capsys.readouterr().out
    assert "In-process size sweep" in table and "HTTP, typical prefetch" in table and "Worker memory" in table


def test_auth_required_load_sends_a_fresh_token_per_request_and_all_are_served(capsys):
    from bench import auth_load
    assert auth_load.main(["--requests", "30", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == {"service_auth_required", "service_auth_off", "trivial"}
    for line in rows.values():
        assert line.rstrip().endswith("{200: 30}")         # no 401: no token was reused or refused
        assert float(line.split()[4]) > 0                    # server CPU per call was measured


def test_instruction_count_children_run_every_subject_and_the_difference_is_per_call(monkeypatch):
    threshold = gc.get_threshold()
    try:
        for subject in instructions.SUBJECTS:      # what each callgrind child runs, without valgrind
            instructions.run_calls(subject, 1)
    finally:                  # the child quiets logging and sets the collector as a worker does: undo both here
        logging.disable(logging.NOTSET)
        gc.unfreeze()
        gc.set_threshold(*threshold)
    totals = {("service", 0): 1_000, ("service", 10): 81_000, ("trivial", 0): 1_000, ("trivial", 10): 31_000}
    monkeypatch.setattr(instructions, "count", lambda subject, calls: totals[subject, calls])
    assert instructions.per_call(("service", "trivial"), calls=10) == {"service": 8_000, "trivial": 3_000}


def test_instruction_count_reads_callgrinds_total():
    found = instructions.COLLECTED.search("==1== Events    : Ir\n==1== Collected : 8297207\n")
    assert found and int(found.group(1)) == 8297207


def test_governance_benchmark_seeds_and_measures_a_tiny_database(tmp_path, capsys):
    from bench import governance
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    assert governance.main(["--url", url, "--cards", "300", "--entries", "60", "--days", "30", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "seeded 300 cards" in out and "60 feedback entries" in out
    assert "page, a year, charts drawn anew" in out and "of which the queries, a year" in out
