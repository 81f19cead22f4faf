"""`python -m bench.profile`: where a call's CPU goes, in-process, phase by phase (issue 18's profiles).

    python -m bench.profile auth            # an authenticated call against the same call unauthenticated
    python -m bench.profile first-seen      # a chart seen for the first time (caches off), N = 100 and 1,000
    python -m bench.profile big-chart       # charts with 1,000-4,000 relevant readings: warm key, thrash, cold
    ... --cprofile 25                       # also the 25 functions of most own CPU time (cProfile)

Each phase is timed inside real WSGI calls (process time, all threads), by wrapping the function that does it,
so the figures include what a call's surroundings do to it (cold caches after the signature check, a
blocking round trip to Redis), which a hot loop of the phase alone does not show. Phases marked "incl." contain
others. Needs Redis on 127.0.0.1:6379 for `auth` (database 11).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import functools
import io
import logging
import pstats
import sys
import time

import orjson

from . import auth
from .http import DEFAULT_REDIS
from .patients import PATIENT_ID, _observation, _when, patient_view_request
from .sweep import SERVICE_PATH, _environ, make_app, production_collector


class Phases:
    """CPU time spent in wrapped functions, per label, over the calls made; a context manager that puts the
    functions back as they were when it exits."""

    def __init__(self, *wrapped: tuple[object, str, str]):
        """`wrapped`: (owner, attribute name, label) of each function to time."""
        self.spent: dict[str, float] = {}
        self.entered_outside = 0          # timed calls made outside any other: each adds own_cost() to the rest
        self.depth = 0
        self.originals = []
        for owner, name, label in wrapped:
            self.wrap(owner, name, label)

    def __enter__(self) -> "Phases":
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self.originals):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)
        # An attribute of an instance that its class provides is removed again, not set to the bound method.
        own = vars(owner).get(name) if hasattr(owner, "__dict__") else None
        self.originals.append((owner, name, own))
        setattr(owner, name, self.timed(inner, label))

    def timed(self, inner, label: str):
        """inner, its CPU time added to label's."""
        @functools.wraps(inner)
        def timed(*args, **kwargs):
            self.entered_outside += self.depth == 0
            self.depth += 1
            started = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.process_time() - started
                self.depth -= 1
        return timed

    @staticmethod
    def own_cost(calls: int = 2000) -> float:
        """CPU seconds a timed call adds outside the time it records (half of each process_time call, a system call
        of ~1-3 µs here, and the wrapper), measured on a no-op: the profile's own share of "the rest"."""
        probe = Phases()
        noop = probe.timed(lambda: None, "no-op")
        started = time.process_time()
        for _ in range(calls):
            noop()
        return (time.process_time() - started - probe.spent["no-op"]) / calls

    def report(self, calls: int, total_ms: float) -> list[str]:
        rows = sorted(self.spent.items(), key=lambda kv: -kv[1])
        return [f"  {label:58s} {spent / calls * 1000:7.3f} ms  {spent / calls * 1000 / total_ms:5.0%}"
                for label, spent in rows]


def _call(app, body: bytes, token: str | None = None) -> None:
    environ = _environ(body)
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    status = []
    chunks = app(environ, lambda s, headers, exc_info=None: status.append(s))
    b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    if not status[0].startswith("200"):
        raise RuntimeError(f"the call answered {status[0]}")


def _cpu_ms(step, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        step()
    return (time.process_time() - started) / calls * 1000


def _top(step, calls: int, count: int) -> str:
    profile = cProfile.Profile(time.process_time)       # CPU, as the phases: a busy machine does not inflate it
    profile.enable()
    for _ in range(calls):
        step()
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(count)
    return out.getvalue()[out.getvalue().find("   ncalls"):]


def profile_auth(calls: int, top: int) -> None:
    from service.security import tokens
    from service.security.keys import KeySet
    from service.security.replay import PendingRedisClaim
    key, base = auth.new_key(), "http://127.0.0.1:9"
    app = make_app(auth="required", issuers_file=str(auth.issuer_file(key)), public_url=base, redis_url=DEFAULT_REDIS)
    app_off = make_app()
    body = orjson.dumps(patient_view_request(100))
    tokens_left = iter(auth.sign_tokens(key, base + SERVICE_PATH, 200 + calls + (calls if top else 0)))
    for _ in range(200):
        _call(app, body, next(tokens_left))
        _call(app_off, body)
    production_collector()
    verifier = app.extensions["avh_security"].verifier
    with Phases((verifier, "begin", "TokenVerifier.begin (incl. all below but the reply)"),
                (tokens, "_parse", "strict parse of the token (tokens._parse)"),
                (KeySet, "key", "key lookup (KeySet.key)"),
                (verifier, "_check_claims", "claims: iat, nbf, exp, aud, sub, jti"),
                (verifier.replay, "claim", "replay cache: SET NX EX sent to Redis (claim)"),
                (PendingRedisClaim, "first_use", "replay cache: its reply read, after the body checks")) as phases:
        checks = {keys: keys._bound for keys in verifier.keys.values()}     # bound during the warm-up
        for keys, bound in checks.items():
            keys._bound = {kid_alg: (jwk, phases.timed(check, "ES384 signature check (AWS-LC, signatures.py)"))
                           for kid_alg, (jwk, check) in bound.items()}
        off, on = [], []
        for _ in range(2):            # alternated, so both see the same machine
            off.append(_cpu_ms(lambda: _call(app_off, body), calls // 2))
            on.append(_cpu_ms(lambda: _call(app, body, next(tokens_left)), calls // 2))
        for keys, bound in checks.items():
            keys._bound = bound
    off_ms, on_ms = sum(off) / 2, sum(on) / 2
    print(f"Authenticated call (ES384, replay cache Redis), N = 100, warm chart, {calls} calls each, in-process CPU:")
    print(f"  unauthenticated {off_ms:.3f} ms, authenticated {on_ms:.3f} ms: +{on_ms - off_ms:.3f} ms")
    print(*phases.report(calls, on_ms - off_ms), sep="\n")
    print("  (percentages: of the difference)")
    if top:
        print(_top(lambda: _call(app, body, next(tokens_left)), calls, top))


def _first_seen_phases(app) -> Phases:
    import service.api.engine as engine
    from service.api import answer, routes
    from service import security
    from service.clinical import record
    decode = "decode the body (orjson, once a call)"
    return Phases((routes, "request_json", decode), (security, "request_json", decode),
                  (type(app.extensions["avh"].prefetch), "resolve", "prefetch: read every resource, select the relevant"),
                  (engine, "build_record", "record: dedup + validation (incl.)"),
                  (record.Validator, "__call__", "validation of relevant resources (schema, fhir.resources)"),
                  (engine, "chart_facts", "derivation: chart_facts"), (engine, "facts_at", "derivation: facts_at"),
                  (engine, "decide_chart", "decisions: decide_chart"), (engine.Engine, "cards", "rendering the cards"),
                  (answer.Answer, "of", "encoding the answer"))


def profile_first_seen(sizes: list[int], calls: int, top: int) -> None:
    app = make_app(model_cache_size="0")
    production_collector()
    with _first_seen_phases(app) as phases:
        _first_seen_sizes(app, phases, sizes, calls, top)


def _first_seen_sizes(app, phases: Phases, sizes: list[int], calls: int, top: int) -> None:
    for n in sizes:
        body = orjson.dumps(patient_view_request(n))
        count = max(20, calls * 100 // n)
        for _ in range(20):
            _call(app, body)
        phases.spent.clear()
        phases.entered_outside = 0
        total = _cpu_ms(lambda: _call(app, body), count)
        own_ms = phases.entered_outside / count * Phases.own_cost() * 1000
        print(f"First-seen chart (caches off), N = {n} ({len(body) // 1024} KiB, 10 relevant resources), "
              f"{count} calls: {total:.3f} ms CPU a call")
        print(*phases.report(count, total), sep="\n")
        outermost = sum(v for k, v in phases.spent.items() if "fhir.resources" not in k)   # validation is in the record
        print(f"  {'the rest (Flask, guard, schema checks, access line, metrics, ...)':58s} "
              f"{total - outermost / count * 1000 - own_ms:7.3f} ms")
        own = f"the profile's own timing calls ({phases.entered_outside / count:.0f} a call), not in the rest"
        print(f"  {own:58s} {own_ms:7.3f} ms")
        if top:
            print(_top(lambda: _call(app, body), count, top))


def chart_with_readings(readings: int, extra: int = 0) -> bytes:
    """The typical chart plus `readings` (+ `extra`) lower-extremity motor scores, a few minutes apart."""
    from service.clinical.valuesets import LOCAL
    request = patient_view_request(100)
    today = dt.date.today()
    entries = request["prefetch"]["observations"]["entry"]
    for i in range(readings + extra):
        resource = _observation(PATIENT_ID, f"motor-{i}", LOCAL, "lower-extremity-motor-score",
                                "Lower extremity motor score", _when(today, 400 - i * 0.05), {"valueInteger": 40 + i % 5})
        entries.append({"fullUrl": f"https://ehr.example.org/fhir/Observation/motor-{i}", "resource": resource})
    return orjson.dumps(request)


def profile_big_chart(readings: list[int]) -> None:
    import service.api.engine as engine
    production_collector()
    key_time = [0.0]
    dumps = engine.orjson.dumps

    class TimedOrjson:            # the chart key is the engine's only orjson.dumps
        loads = staticmethod(orjson.loads)

        @staticmethod
        def dumps(value, *args, **kwargs):
            started = time.process_time()
            try:
                return dumps(value, *args, **kwargs)
            finally:
                key_time[0] += time.process_time() - started
    engine.orjson = TimedOrjson
    print("Charts with many relevant readings (in-process CPU, ms; chart and answer caches 1,024 entries):")
    print(f"{'readings':>9} {'KiB':>6} {'warm':>8} {'its key':>8} {'+1 new':>8} {'cache off':>10}")
    for k in readings:
        app, cold = make_app(), make_app(model_cache_size="0")
        body, one_more = chart_with_readings(k), chart_with_readings(k, 1)
        _call(app, body)
        key_time[0] = 0.0
        warm = _cpu_ms(lambda: _call(app, body), 3)
        key = key_time[0] / 3 * 1000
        new = _cpu_ms(lambda: _call(app, one_more), 1)
        cold_ms = _cpu_ms(lambda: _call(cold, body), 1)
        print(f"{k:>9} {len(body) // 1024:>6} {warm:>8.1f} {key:>8.1f} {new:>8.1f} {cold_ms:>10.1f}")
    engine.orjson = orjson


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["auth", "first-seen", "big-chart"])
    parser.add_argument("--calls", type=int, default=1000, help="calls timed (first-seen: at N = 100; fewer when larger)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    parser.add_argument("--readings", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 2000, 4000])
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N functions")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.what == "auth":
        profile_auth(args.calls, args.cprofile)
    elif args.what == "first-seen":
        profile_first_seen(args.sizes, args.calls, args.cprofile)
    else:
        profile_big_chart(args.readings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
