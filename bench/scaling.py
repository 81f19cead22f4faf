"""`python -m bench.scaling`: instructions of a first-seen call of N and 16 N same-code readings (callgrind).

bench/charts.py times the same two charts (`same_code`): 16 times the readings should cost about 16 times as much.
Timed, the ratio moves with the machine (20.2-20.7 x on one, 22-27 x on the next, for the same code); counted in
instructions it does not, so this tells whether the service's work grows linearly (a ratio near 16 here) and a
larger timed ratio is the memory hierarchy (16 N readings outgrow the CPU's caches), or the work itself grows faster.

Each size is one child under callgrind (PYTHONHASHSEED=0) that builds the chart, warms a first app up on a small
chart, makes a new app with the caches off and the collector as in production, as bench/charts.py does, then makes
the call or not: the difference of the two totals is the call.

    python -m bench.scaling [--readings 1000]      # about 5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from .instructions import callgrind_total, valgrind_missing

GROWTH = 16


def run_call(readings: int, call_it: bool) -> None:
    """The child: the chart of `readings` readings answered (or not) by a new app with its caches off."""
    from .charts import same_code_chart
    from .sweep import call, make_app, production_collector
    logging.disable(logging.WARNING)
    body = same_code_chart(readings)
    call(make_app(model_cache_size="0"), same_code_chart(50))
    app = make_app(model_cache_size="0")
    production_collector()
    if call_it:
        status, data = call(app, body)
        if not status.startswith("200"):
            raise RuntimeError(f"the service answered {status}: {data[:300]!r}")


def count(readings: int, call_it: bool) -> int:
    return callgrind_total("bench.scaling", str(readings), str(int(call_it)), timeout=3600, hash_seed="0")


def per_call(readings: int) -> dict[int, int]:
    """Instructions of one first-seen call at `readings` and GROWTH x `readings` readings."""
    sizes = (readings, GROWTH * readings)
    with ThreadPoolExecutor(2) as pool:
        totals = {(n, c): pool.submit(count, n, c) for n in sizes for c in (False, True)}
        return {n: totals[n, True].result() - totals[n, False].result() for n in sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1000)
    parser.add_argument("--child", nargs=2, type=int, metavar=("READINGS", "CALL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_call(args.child[0], bool(args.child[1]))
        return 0
    if valgrind_missing():
        return 2
    counts = per_call(args.readings)
    small, large = counts.values()
    print("Instructions of a first-seen call of same-code readings (callgrind; caches off, collector as in production)")
    for n, total in counts.items():
        print(f"{n:>8} readings {total:>16,} instructions  {total / n:>10,.0f} a reading")
    print(f"{GROWTH} x the readings: x{large / small:.2f} the instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
