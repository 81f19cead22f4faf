"""`python -m bench.percall`: instructions of the fixed part of a hook call, piece by piece (callgrind).

The fixed part is everything a patient-view call does but decoding the body, selecting the relevant resources
(`prefetch.resolve`) and deriving the chart (record, facts, decisions, cards): Flask and werkzeug, the guard
(media type, limits, fhirServer), the schema checks, the answer's uuids and JSON, the metrics, the issued-card
store, the access line. Measured in one child process per chart size under callgrind, in-process WSGI calls
(`bench.sweep.call`), as a worker runs them: the JSON access line written (to /dev/null), Prometheus in
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, as gunicorn.conf.py sets it), the collector as in
`post_worker_init`. Each subject gets a new app, warm-up calls, then `--calls` calls between a zeroing and a dump
of callgrind's counters (`callgrind_control`), so one process counts every subject; an empty segment's count
(the two control commands) is taken off.

Subjects: `first` (the whole first-seen call, caches off), `fixed` (the same with the decode, the selection and
the derivation replaced by what they returned for that body), `fixed - <piece>` (one piece also replaced by a
no-op: the difference is what the piece costs), `bare` (every piece off: Flask and the route's skeleton), the
trivial endpoint, `orjson.loads` of the body, and the peer-style walk (bench/peer.py). The issued-card batch is
written by a separate thread every 0.5 s in production; here it is held back (AVH_CDS_ISSUED_FLUSH_SECONDS=3600)
and one batch of `--calls` calls' cards is counted on its own (`store flush, a batch`).

    python -m bench.percall [--sizes 10,100] [--calls 100]     # ~5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .instructions import valgrind_missing

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 30
SUMMARY = re.compile(r"^summary: (\d+)$", re.M)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


LABELS: list[str] = []       # what each dump counted, in order (callgrind_control's dump hint is one word)


def _counted(label: str, step, calls: int) -> None:
    """`calls` of step between a zeroing and a dump, the label noted for it."""
    _control("-z")
    for _ in range(calls):
        step()
    _control("-d", f"segment{len(LABELS)}")
    LABELS.append(label)
    Path(os.environ["AVH_PERCALL_LABELS"]).write_text("\n".join(LABELS))


def _noop(*args, **kwargs):
    return None


@contextlib.contextmanager
def _patched(*changes):
    """(owner, attribute, value) set for the duration."""
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in changes]
    for owner, name, value in changes:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class _Unobserved:
    def observe(self, value) -> None:
        return None


def _pieces():
    """Each piece of the fixed part, as the attributes that replace it by a no-op."""
    import service
    from service import security
    from service.api import routes
    from service.feedback.store import FeedbackStore
    from service.ops import metrics
    return {
        "schema checks (request, context)": [(routes, "_validate", _noop)],
        "guard body checks (media type, limits, fhirServer)": [(security, "_check_body", _noop)],
        "guard: depth and resource-count limits": [(security, "check_limits", _noop)],
        "access line (JSON, written)": [(service, "access_line", _noop)],     # the app's after_request calls it
        "metrics (request histogram, cards)": [(metrics, "_request_seconds_of", lambda *a: _Unobserved()),
                                               (metrics, "observe_cards", _noop)],
        "issued-card store (record, flush check)": [(FeedbackStore, "record_issued", _noop),
                                                    (FeedbackStore, "flush_if_due", _noop)],
    }


def run_child(n: int, calls: int) -> None:
    """One process, every subject at chart size n, each counted between callgrind_control commands."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="avh-percall-metrics-")
    os.environ["AVH_CDS_ISSUED_FLUSH_SECONDS"] = "3600"
    sys.stderr = open(os.devnull, "w")          # the JSON log lines, written as a worker writes them
    import orjson
    from . import peer, trivial
    from .patients import patient_view_request
    from .sweep import call, make_app, production_collector
    import service.api.engine as engine
    import service.jsonbody as jsonbody
    from service.api.answer import Answer
    from service.clinical.cards import give_uuids
    from service.fhir.prefetch import PrefetchResolver
    body = orjson.dumps(patient_view_request(n))

    def counted(label, app, step=None):
        step = step or (lambda: call(app, body))
        for _ in range(WARM_UP):
            status, data = step() or ("200", b"")
            if not status.startswith("200"):
                raise RuntimeError(f"{label}: {status} {data[:300]!r}")
        production_collector()
        _counted(label, step, calls)

    _counted("empty", _noop, calls)
    first = make_app(model_cache_size="0")
    counted("first", first)
    # What the decode, the selection and the derivation returned for this body, to stand in for them.
    decoded = jsonbody.decode(body)
    resolver = first.extensions["avh"].prefetch
    service = first.extensions["avh"].registry.get("avh-patient-view")
    prefetched = resolver.resolve(service.prefetch, decoded)
    cards = []
    real_cards = engine.Engine.cards
    with _patched((engine.Engine, "cards", lambda *a: cards.extend(real_cards(*a)) or cards)):
        call(first, body)
    stubs = [(jsonbody, "decode", lambda data: decoded),
             (PrefetchResolver, "resolve", lambda self, templates, request: prefetched),
             (engine.Engine, "chart_answer", lambda self, *a: Answer.of(give_uuids(cards)))]
    with _patched(*stubs):
        fixed = make_app(model_cache_size="0")
        counted("fixed", fixed)
        _counted("store flush, a batch", fixed.extensions["avh"].store.flush_issued, 1)
        answer = Answer.of(give_uuids(cards))
        with _patched((engine.Engine, "chart_answer", lambda self, *a: answer)):
            counted("fixed - answer uuids and JSON", make_app(model_cache_size="0"))
        pieces = _pieces()
        for piece, changes in pieces.items():
            with _patched(*changes):
                counted(f"fixed - {piece}", make_app(model_cache_size="0"))
        everything = [c for changes in pieces.values() for c in changes]     # the guard's body checks included
        with _patched(*everything, (engine.Engine, "chart_answer", lambda self, *a: answer)):
            counted("bare (every piece off)", make_app(model_cache_size="0"))
    counted("trivial", trivial.create_app())
    counted("orjson.loads", None, lambda: orjson.loads(body) and None)
    counted("peer", peer.create_app())


def count(n: int, calls: int) -> dict[str, int]:
    """Instructions a call of each subject at size n."""
    with tempfile.TemporaryDirectory(prefix="avh-percall-") as scratch:
        out = Path(scratch) / "cg.out"
        labels = Path(scratch) / "labels"
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               "-m", "bench.percall", "--child", str(n), str(calls)],
                              cwd=ROOT, capture_output=True, text=True, timeout=3600,
                              env={**os.environ, "AVH_PERCALL_LABELS": str(labels)})
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run at N = {n} failed: {done.stderr[-2000:]}")
        totals, names = {}, labels.read_text().splitlines()
        for dump in sorted(Path(scratch).glob("cg.out.*"), key=lambda p: int(p.suffix[1:])):
            text = dump.read_text(errors="replace")
            segment = int(re.search(r"^desc: Trigger: dump segment(\d+)", text, re.M).group(1))
            totals[names[segment]] = int(SUMMARY.search(text).group(1))
    empty = totals.pop("empty")
    calls_of = {"store flush, a batch": 1}
    return {label: (total - empty) // calls_of.get(label, calls) for label, total in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100])
    parser.add_argument("--calls", type=int, default=100, help="calls counted per subject (after the warm-up)")
    parser.add_argument("--child", nargs=2, type=int, metavar=("N", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child)
        return 0
    if valgrind_missing("callgrind_control"):
        return 2
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(args.sizes, pool.map(lambda n: count(n, args.calls), args.sizes)))
    print(f"Instructions a call (callgrind, {args.calls} calls after {WARM_UP} warm-up; the store flush: one batch "
          f"of {args.calls} calls' cards)")
    labels = list(next(iter(counts.values())))
    print(f"{'subject':58s}" + "".join(f"{'N = ' + str(n):>14}" for n in counts))
    for label in labels:
        print(f"{label:58s}" + "".join(f"{counts[n][label]:>14,}" for n in counts))
    for n, c in counts.items():
        print(f"N = {n}: " + ", ".join(f"{piece.removeprefix('fixed - ')} {c['fixed'] - c[piece]:,}"
                                       for piece in labels if piece.startswith("fixed - ")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
