"""Instructions per call of the pathway after selection (callgrind): what a first-seen patient-view call at N = 100
spends once its resources are selected: the record, chart_facts, facts_at, decide_chart, the cards, the answer.

    python -m compileall -q service bench      # a .pyc written during one run and not the other moves the figure
    python -m bench.pathway [--calls 100]      # about 3 minutes on 2 cores

Two children under callgrind (PYTHONHASHSEED=0), the same warm-up, then `--calls` calls of `Engine.chart_answer`
with the caches off or none; the difference over `--calls` is one call.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from concurrent.futures import ThreadPoolExecutor

from .instructions import ROOT, WARM_UP, callgrind_total


def run_calls(calls: int) -> None:
    """The child: the typical chart's selected resources, the engine with its caches off, `calls` answers."""
    import logging
    from service.api.engine import Engine
    from service.fhir.prefetch import Prefetched
    from .patients import PATIENT_ID, patient_view_request
    from .sweep import production_collector
    logging.disable(logging.WARNING)
    engine = Engine.load(ROOT / "cards")
    prefetch = patient_view_request(100)["prefetch"]
    sent = [e["resource"] for b in prefetch.values() if b.get("resourceType") == "Bundle" for e in b.get("entry", [])]
    sent += [r for r in prefetch.values() if r.get("resourceType") == "Patient"]
    prefetched = Prefetched(resources=[r for r in sent if engine.selector.wanted(r)], selected_by=engine.selector.wanted)
    now = dt.datetime.now(dt.timezone.utc)
    for _ in range(WARM_UP):
        engine.chart_answer(prefetched, PATIENT_ID, now, "http://127.0.0.1/pathway")
    production_collector()
    for _ in range(calls):
        engine.chart_answer(prefetched, PATIENT_ID, now, "http://127.0.0.1/pathway")


def _instructions(calls: int) -> int:
    """Total instructions of a child making `calls` calls after the warm-up (hash seed fixed: set and dict orders
    decide some paths)."""
    return callgrind_total("bench.pathway", str(calls), timeout=1800, hash_seed="0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pathway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        run_calls(args.child)
        return 0
    with ThreadPoolExecutor(2) as pool:
        none, some = pool.map(_instructions, (0, args.calls))
    print(f"pathway after selection (N = 100, caches off): {(some - none) // args.calls:,} instructions a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
