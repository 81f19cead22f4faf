"""Instructions per call, counted by valgrind's callgrind: the figure a noisy machine cannot move.

On a shared 2-core machine the same wrk run can give twice or half the requests/s from one minute to the
next, for the service and the trivial endpoint alike. callgrind counts the instructions a process executes,
the same count for the same code and input whatever else the machine is doing. This runs, in-process, the
typical patient-view call (N = 100) of the service as deployed, of the service with its caches off
("cold"), of the trivial endpoint (bench/trivial.py) and a bare `orjson.loads` of the body, each in a
child process under callgrind, twice (W warm-up calls, then `--calls` more, or none): the difference of the
two totals over `--calls` is the cost of one call, start-up and warm-up cancelled out.
It leaves out what gunicorn and HTTP add to both apps and the cache misses, which weigh more on the
service (it touches more memory); the HTTP share has stayed close to this ratio (BENCHMARKS.md).

    sudo apt-get install -y valgrind
    python -m bench.instructions [--calls 50]        # about 4 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 30
SUBJECTS = ("service", "cold", "trivial", "loads")
COLLECTED = re.compile(r"Collected : (\d+)")


def run_calls(subject: str, calls: int) -> None:
    """The child: build the subject, warm it up as a worker would be, then make `calls` calls."""
    from . import trivial
    from .patients import patient_view_request
    from .sweep import call, make_app, production_collector
    logging.disable(logging.WARNING)
    body = orjson.dumps(patient_view_request(100))
    if subject == "loads":
        step = lambda: orjson.loads(body)                                        # noqa: E731
    else:
        app = trivial.create_app() if subject == "trivial" else \
            make_app(**({"model_cache_size": "0"} if subject == "cold" else {}))
        step = lambda: call(app, body)                                           # noqa: E731
    for _ in range(WARM_UP):
        step()
    production_collector()
    for _ in range(calls):
        step()


def callgrind_total(module: str, *child_args: str, timeout: int = 3600, hash_seed: str | None = None) -> int:
    """Total instructions of `python -m <module> --child <args>` under callgrind. `hash_seed` fixes PYTHONHASHSEED
    where set and dict orders decide some paths."""
    env = {**os.environ, **({"PYTHONHASHSEED": hash_seed} if hash_seed is not None else {})}
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           "-m", module, "--child", *child_args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run of {module} {' '.join(child_args)} failed: {done.stderr[-1500:]}")
    return int(found.group(1))


def valgrind_missing(command: str = "valgrind") -> bool:
    """Whether valgrind's `command` is absent (then said on stderr): every callgrind harness needs it."""
    if shutil.which(command) is not None:
        return False
    print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
    return True


def count(subject: str, calls: int) -> int:
    """Total instructions of a child process that makes `calls` calls after the warm-up."""
    return callgrind_total("bench.instructions", subject, str(calls), timeout=1800)


def per_call(subjects=SUBJECTS, calls: int = 50, jobs: int = 2) -> dict[str, int]:
    with ThreadPoolExecutor(jobs) as pool:
        totals = {(s, n): pool.submit(count, s, n) for s in subjects for n in (0, calls)}
        return {s: (totals[s, calls].result() - totals[s, 0].result()) // calls for s in subjects}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50, help="calls counted per subject (after the warm-up)")
    parser.add_argument("--child", nargs=2, metavar=("SUBJECT", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_calls(args.child[0], int(args.child[1]))
        return 0
    if valgrind_missing():
        return 2
    counts = per_call(calls=args.calls)
    print(f"Instructions per typical patient-view call (callgrind, {args.calls} calls after {WARM_UP} warm-up)")
    print(f"{'subject':>10} {'instructions':>14} {'trivial / subject':>18}")
    for subject, n in counts.items():
        print(f"{subject:>10} {n:>14,} {counts['trivial'] / n:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
