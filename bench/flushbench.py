"""`python -m bench.flushbench`: instructions of the issued-card batch (`FeedbackStore.flush_issued`) on SQLite.

Every hook call's cards are queued and written in batches after the answer (service/feedback/store.py). Here a
store on a new SQLite file is first filled with `--prefill` calls' rows (in this process, not counted), then `--batches` batches of
`--calls` calls each are queued and each `flush_issued()` is counted on its own between a zeroing and a dump of
callgrind's counters (`callgrind_control -z/-d` with this process's pid), in one child process run under
callgrind. Each call is 4 cards of 2 suggestions each, with version-7 uuids, as the benchmark's chart gets. Batches
of 500 calls are what the 0.5 s flush holds at ~1,000 requests/s. An empty segment's count is taken off.

    python -m compileall -q service bench && PYTHONHASHSEED=0 python -m bench.flushbench [--prefill 20000]
        [--calls 500] [--batches 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .instructions import valgrind_missing

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^summary: (\d+)$", re.M)
CARDS = ("steroid-duration", "spine-mri", "opioid-first", "red-flags")      # 4 cards a call
SUGGESTIONS_PER_CARD = 2
SERVICE = "avh-patient-view"


def queue_calls(store, calls: int, first: int) -> None:
    """Queue `calls` hook calls' issued cards and suggestions, as routes.invoke records them."""
    from service.uuids import new_uuids
    when = dt.datetime.now(dt.timezone.utc)
    for n in range(first, first + calls):
        uuids = new_uuids(len(CARDS) * (1 + SUGGESTIONS_PER_CARD))
        cards = list(zip(uuids[:len(CARDS)], CARDS))
        suggestions = [(uuids[len(CARDS) + i * SUGGESTIONS_PER_CARD + k], card, f"{topic}-option-{k}")
                       for i, (card, topic) in enumerate(cards) for k in range(SUGGESTIONS_PER_CARD)]
        store.record_issued(SERVICE, f"hook-{n}", cards, when, suggestions)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _store(folder: Path, calls: int):
    from service.feedback.store import FeedbackStore, database_url
    store = FeedbackStore(database_url("", folder / "flushbench.sqlite3"), flush_seconds=3600,
                          max_pending=calls * len(CARDS))
    store.start()
    return store


def fill(folder: Path, prefill: int, calls: int) -> None:
    """The store's file made and filled with `prefill` calls' rows, in batches of `calls` (not counted)."""
    store = _store(folder, calls)
    for first in range(0, prefill, calls):
        queue_calls(store, min(calls, prefill - first), first)
        assert store.flush_issued()
    store.dispose()


def run_child(folder: Path, calls: int, batches: int, counted: bool = True) -> None:
    """Each batch's flush counted (when `counted`: under callgrind), on the file `fill` made."""
    store = _store(folder, calls)
    for label in ["empty"] + [f"batch{b}" for b in range(batches)]:
        if label != "empty":
            queue_calls(store, calls, 0)
        if counted:
            _control("-z")
        if label != "empty":
            assert store.flush_issued()
        if counted:
            _control("-d", label)
    store.dispose()


def count(prefill: int, calls: int, batches: int) -> dict[str, int]:
    """Instructions of each batch's flush, the empty segment's taken off."""
    with tempfile.TemporaryDirectory(prefix="avh-flushbench-") as scratch:
        fill(Path(scratch), prefill, calls)
        out = Path(scratch) / "cg.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               "-m", "bench.flushbench", "--child", scratch, "--calls", str(calls), "--batches", str(batches)],
                              cwd=ROOT, capture_output=True, text=True, timeout=3600,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed: {done.stderr[-2000:]}")
        totals = {}
        for dump in Path(scratch).glob("cg.out.*"):
            text = dump.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: dump (\S+)", text, re.M).group(1)
            totals[label] = int(SUMMARY.search(text).group(1))
    empty = totals.pop("empty")
    return {label: totals[label] - empty for label in sorted(totals, key=lambda name: int(name[5:]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flushbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefill", type=int, default=20_000, help="calls' rows in the file before counting")
    parser.add_argument("--calls", type=int, default=500, help="calls a batch")
    parser.add_argument("--batches", type=int, default=3, help="batches counted")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.calls, args.batches)
        return 0
    if valgrind_missing("callgrind_control"):
        return 2
    batches = count(args.prefill, args.calls, args.batches)
    print(f"Instructions of flush_issued (callgrind; SQLite file holding {args.prefill:,} calls' rows, batches of "
          f"{args.calls} calls of {len(CARDS)} cards and {len(CARDS) * SUGGESTIONS_PER_CARD} suggestions)")
    for label, total in batches.items():
        print(f"{label:10s} {total:>14,} a batch {total // args.calls:>10,} a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
