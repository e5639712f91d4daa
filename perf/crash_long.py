#!/usr/bin/env python
"""The long crash test: >= 1,000 kill -9 points and >= 1,000,000 acknowledged updates.

    python perf/crash_long.py                   # 1,000 kill points, at least 1M updates
    python perf/crash_long.py --kills 50 --updates 50000 --no-write

The same harness as tests/integration/test_crash.py (tests/crash_harness.py): a client streams
random batches, cash flows and ticks with unique keys; the daemon is SIGKILLed at random moments
and restarted; the request in flight is retried with its key; the final state must equal the
Decimal reference model over all acknowledged updates. Writes its figures to perf/RESULTS.md.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))
from results import machine, stamp, write_section  # noqa: E402
from tests.crash_harness import run_crash_test  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--updates", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pstate-crash-long-"))
    try:
        stats = run_crash_test(tmp, kill_points=args.kills, seed=args.seed, min_updates=args.updates)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(stats)
    if not args.no_write:
        cmd = "python perf/crash_long.py" + ("" if (args.kills, args.updates) == (1000, 1_000_000)
                                             else f" --kills {args.kills} --updates {args.updates}")
        write_section("\n".join([
            "## Crash test, long (perf/crash_long.py)", "",
            f"{stamp()} Machine: {machine()}. Command: `{cmd}`.", "",
            "Result: the recovered state equals the Decimal reference model over every acknowledged update "
            "(0 lost, 0 applied twice; positions equal the tally of acknowledged fills; reason codes of every "
            "row equal the model's).", "",
            "| kill -9 points | acknowledged requests | acknowledged updates | rejected rows (business rules) | "
            "requests retried after a kill | seconds |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {stats['kills']:,} | {stats['acked_requests']:,} | {stats['acked_updates']:,} | "
            f"{stats['rejected_rows']:,} | {stats['retried_after_kill']:,} | {stats['seconds']:,.0f} |"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
