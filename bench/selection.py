"""Instructions of decoding a body and of prefetch's read and selection (callgrind): what a first-seen call spends
before the record, as `bench.profile`'s "decode the body" and "prefetch: read every resource, select the relevant".

    python -m compileall -q service bench      # a .pyc written during one run and not the other moves the figure
    python -m bench.selection [--sizes 100,1000] [--calls 50]

For each N, children under callgrind (PYTHONHASHSEED=0) decode the typical body (`service.lazyjson.decode`, as
`request_json` does) and, for "read", resolve its prefetch with the app's selector (`PrefetchResolver.resolve`, no
fhirServer contacted): the same warm-up, then none or `--calls` calls; the difference over `--calls` is one call.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

from .instructions import ROOT, WARM_UP, callgrind_total

SUBJECTS = ("decode", "read")


def run_calls(subject: str, n: int, calls: int) -> None:
    """The child: decode (and read) the body of N resources `calls` times after the warm-up."""
    import logging
    import orjson
    from service.api.registry import prefetch_templates
    from service.clinical.record import Selector
    from service.clinical.valuesets import load_valuesets
    from service.fhir.prefetch import PrefetchResolver
    from service.lazyjson import decode
    from .patients import patient_view_request
    from .sweep import production_collector
    logging.disable(logging.WARNING)
    valuesets = load_valuesets(ROOT / "cards" / "valuesets")
    templates, resolver = prefetch_templates(valuesets), PrefetchResolver(wanted=Selector(valuesets).wanted)
    body = orjson.dumps(patient_view_request(n))
    if subject == "decode":
        step = lambda: decode(body)                                          # noqa: E731
    else:
        step = lambda: resolver.resolve(templates, decode(body))             # noqa: E731
    for _ in range(WARM_UP):
        step()
    production_collector()
    for _ in range(calls):
        step()


def _instructions(subject: str, n: int, calls: int) -> int:
    return callgrind_total("bench.selection", subject, str(n), str(calls), hash_seed="0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    parser.add_argument("--calls", type=int, default=50, help="calls counted (fewer above N = 1,000)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_calls(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    print(f"{'N':>7} {'decode':>12} {'read + select':>14}   (instructions a call, callgrind)")
    for n in args.sizes:
        calls = max(5, args.calls * 1000 // max(n, 1000))
        with ThreadPoolExecutor(2) as pool:
            runs = {(s, c): pool.submit(_instructions, s, n, c) for s in SUBJECTS for c in (0, calls)}
            each = {s: (runs[s, calls].result() - runs[s, 0].result()) // calls for s in SUBJECTS}
        print(f"{n:>7,} {each['decode']:>12,} {each['read'] - each['decode']:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
