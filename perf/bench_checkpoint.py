#!/usr/bin/env python
"""Checkpoint benchmark: what a checkpoint costs the daemon's open-loop latency, measured by
putting one checkpoint (SIGUSR1) inside a fixed-rate step and comparing the step with a quiet
step of the same load in the same run.

    python perf/bench_checkpoint.py                                  # 1,000 x 1,000 book, batch trades at 100,000/s
    python perf/bench_checkpoint.py --books 10000x1000               # the issue's 10M-position book
    python perf/bench_checkpoint.py --scenario storm --rate 20000    # price-tick storms mixed with trades
    python perf/bench_checkpoint.py --daemon-cmd "python my_cli.py" --no-write   # A/B a change
    python perf/bench_checkpoint.py --quick --no-write               # seconds: proves it runs

The daemon runs with fsync=batch, no write-behind and periodic checkpoints out of the way
(``journal.checkpoint_interval_s`` at a day: the snapshot buffers are still prepared at start,
as in production). After a warm-up step, ``--reps`` pairs of steps alternate: a quiet step, then
the same step with a SIGUSR1 one second in; the next step waits until that checkpoint's file is
written. Reported per pair: p50 / p99 / p99.9 / max of each step, the ratio of their p99s, and
from the daemon's log the engine-thread stall (snapshot copy + fork) and the writer's time.
Also reported: the daemon's transparent huge pages before and after the checkpoints (a fork
splits the huge pages the engine writes while the child lives; ADR 0014 amendment).
Writes its section of perf/RESULTS.md unless --no-write.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep as sw
import targets as tg
import workload as wl
from loadgen import TIMELINE_NS
from results import Terminated, log, machine, on_sigterm, stamp, write_section

SECTION = "## Checkpoint under load (perf/bench_checkpoint.py)"
STALL = re.compile(r"checkpoint at seq (\d+): (.*?)([\d.]+) ms \+ fork ([\d.]+) ms")
REFORMED = re.compile(r"checkpoint: huge pages re-formed in ([\d.]+) ms")
WRITTEN = re.compile(r"checkpoint \S+\.ckpt \(seq (\d+)\) in ([\d.]+)s(?: \(meta ([\d.]+)s of it; (\d+) page faults)?")


def huge_kb(pid: int) -> int:
    """The process's AnonHugePages, kB (0 where the kernel grants none)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_written(server, n: int, timeout: float) -> bool:
    """Until the n-th checkpoint is written and its writer has exited: while a forked writer
    lives, the engine's writes still copy pages, so the next quiet step would not be quiet."""
    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end:
        if len(WRITTEN.findall(server.output())) >= n and not server.ps.children():
            return True
        time.sleep(0.2)
    return False


def stalls_line(timeline, over_us: int = 10_000) -> str:
    """'1.0 s 28 ms, 1.1 s 12 ms': the buckets of a step's timeline whose worst frame waited over over_us."""
    hits = [f"{i * TIMELINE_NS / 1e9:.1f} s {v / 1000:,.0f} ms" for i, v in enumerate(timeline) if v > over_us]
    return ", ".join(hits) or "none"


def run(args, daemon_cmd: list[str], tmp: str) -> dict:
    n_pf, n_pos = (int(x) for x in args.books.split("x"))
    book = wl.make_book(n_pf, n_pos, 5000 if n_pos > 100 else max(200, 2 * n_pos), np.random.default_rng(tg.SEED),
                        popular=True)
    frames = tg.Frames(book, 2000, 2000)
    settings = ["journal.fsync=batch", "journal.checkpoint_interval_s=86400"] + (
        ["sink.backend=none"] if tg.sink_available(daemon_cmd) else [])
    t0 = time.perf_counter()
    target = tg.ZmqTarget("ours", frames, tmp, daemon_cmd, settings, os.path.join(tmp, "journal"),
                          progress=lambda done, total: done % 1_000_000 < 20_000 and log(
                              f"  building the book: {done:,}/{total:,} positions"))
    rec = {"book": args.books, "positions": len(book.refs), "scenario": args.scenario, "rate": args.rate,
           "seconds": args.seconds, "build_s": time.perf_counter() - t0, "pairs": []}
    try:
        server = target.server
        name = target.prepare(args.scenario, "batch")
        log(f"book {args.books} built in {rec['build_s']:.0f} s; warm-up")
        sw.measure(target, name, args.rate, 2.0, 10.0)
        rec["huge_kb_before"] = huge_kb(server.pid)
        for k in range(args.reps):
            quiet = sw.measure(target, name, args.rate, args.seconds, 10.0)
            n_before = len(WRITTEN.findall(server.output()))
            n_reformed = len(REFORMED.findall(server.output()))
            timer = threading.Timer(1.0, os.kill, (server.pid, signal.SIGUSR1))
            timer.start()
            ckpt = sw.measure(target, name, args.rate, args.seconds, 10.0)
            timer.join()
            if not wait_written(server, n_before + 1, 600):
                raise RuntimeError(f"the checkpoint asked in pair {k + 1} was not written:\n{server.output()[-3000:]}")
            stalls = STALL.findall(server.output())
            writes = WRITTEN.findall(server.output())
            _, how, snap_ms, fork_ms = stalls[-1]
            pair = {"quiet": quiet, "ckpt": ckpt, "how": how.strip(" ,"), "snapshot_ms": float(snap_ms),
                    "fork_ms": float(fork_ms), "write_s": float(writes[-1][1]), "huge_kb": huge_kb(server.pid),
                    "meta_s": float(writes[-1][2] or "nan"), "child_faults": int(writes[-1][3] or -1)}
            rec["pairs"].append(pair)
            log(f"pair {k + 1}: quiet {sw.line(quiet)}")
            log(f"        ckpt  {sw.line(ckpt)}")
            t_step = ckpt["start_wall"]
            log(f"        the step started at {time.strftime('%H:%M:%S', time.localtime(t_step))}"
                f"{f'{t_step % 1:.3f}'[1:]} (the daemon's log has the same clock)")
            log(f"        stalls (worst latency of the frames due in each 100 ms, where over 10 ms): "
                f"{stalls_line(ckpt['timeline'])}")
            log(f"        engine thread: snapshot {pair['snapshot_ms']:.1f} ms + fork {pair['fork_ms']:.1f} ms "
                f"({pair['how'] or 'copied'}); written in {pair['write_s']:.2f} s ({pair['meta_s']:.2f} s of meta), "
                f"{pair['child_faults']:,} page faults in the writer; AnonHugePages "
                f"{pair['huge_kb'] / 1024:,.0f} MiB; re-formed in {(REFORMED.findall(server.output())[n_reformed:] or ['?'])[-1]} ms")
        rec["rss_mib"] = server.ps.memory_info().rss / 2**20  # the daemon alone
        if args.daemon_log:
            with open(args.daemon_log, "w") as f:
                f.write(server.output())
    finally:
        target.stop()
    return rec


def render(rec: dict, cmd: str) -> str:
    pairs = rec["pairs"]

    def med(key, which):
        return statistics.median(p[which][key] for p in pairs)

    ratio = [p["ckpt"]["p99"] / max(p["quiet"]["p99"], 1) for p in pairs]
    lines = [SECTION, "", f"{stamp()} Machine: {machine()}. Command: `{cmd}`.", "",
             (f"Book {rec['book']} ({rec['positions']:,} positions), {rec['scenario']} in batch frames offered at "
              f"{rec['rate']:,.0f} updates/s, open loop, steps of {rec['seconds']:g} s; fsync=batch, no write-behind. "
              f"Each pair: a quiet step, then the same step with one checkpoint (SIGUSR1) 1 s in. Latency µs "
              f"from the intended send time."), "",
             ("| pair | quiet p50 / p99 / p99.9 / max | with a checkpoint p50 / p99 / p99.9 / max | p99 ratio | "
              "engine thread: snapshot + fork, ms | written in | huge pages after |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for i, p in enumerate(pairs):
        q, c = p["quiet"], p["ckpt"]
        lines.append(f"| {i + 1} | {q['p50']:,.0f} / {q['p99']:,.0f} / {q['p999']:,.0f} / {q['max']:,.0f} | "
                     f"{c['p50']:,.0f} / {c['p99']:,.0f} / {c['p999']:,.0f} / {c['max']:,.0f} | "
                     f"{ratio[i]:.1f}x | {p['snapshot_ms']:.1f} + {p['fork_ms']:.1f} ({p['how'] or 'copied'}) | "
                     f"{p['write_s']:.2f} s | {p['huge_kb'] / 1024:,.0f} MiB |")
    lines += ["", (f"Medians: quiet p99 {med('p99', 'quiet'):,.0f} µs, with a checkpoint {med('p99', 'ckpt'):,.0f} µs "
              f"(max {med('max', 'ckpt'):,.0f} µs), ratio {statistics.median(ratio):.1f}x; p99 <= 50 ms held "
              f"in {sum(p['ckpt']['ok50'] for p in pairs)} of {len(pairs)} checkpoint steps "
              f"({sum(p['quiet']['ok50'] for p in pairs)} of {len(pairs)} quiet ones). The daemon's "
              f"AnonHugePages: {rec['huge_kb_before'] / 1024:,.0f} MiB before the first checkpoint, "
              f"{pairs[-1]['huge_kb'] / 1024:,.0f} MiB after the last; RSS {rec['rss_mib']:,.0f} MiB."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--books", default="1000x1000", help="portfolios x positions each (default 1000x1000)")
    ap.add_argument("--scenario", default="trades", choices=["trades", "storm"])
    ap.add_argument("--rate", type=float, default=100_000, help="updates/s offered (default 100,000)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each step (default 8)")
    ap.add_argument("--reps", type=int, default=3, help="pairs of steps (default 3)")
    ap.add_argument("--daemon-cmd", metavar="CMD", help="command that runs the daemon's CLI (default: this Python, "
                    "-m portfolio_state.daemon.cli)")
    ap.add_argument("--quick", action="store_true", help="a 100 x 50 book, 5,000 updates/s, one pair of 2 s steps "
                    "(proves the benchmark runs)")
    ap.add_argument("--daemon-log", metavar="PATH", help="keep the daemon's log there (to match its lines with the stalls)")
    ap.add_argument("--no-write", action="store_true", help="print only; RESULTS.md untouched")
    args = ap.parse_args(argv)
    if args.quick:
        args.books, args.rate, args.seconds, args.reps = "100x50", 5000.0, 2.0, 1
    daemon_cmd = shlex.split(args.daemon_cmd) if args.daemon_cmd else [sys.executable, "-m",
                                                                        "portfolio_state.daemon.cli"]
    signal.signal(signal.SIGTERM, on_sigterm)
    with tempfile.TemporaryDirectory(prefix="pstate-ckpt-") as tmp:
        try:
            rec = run(args, daemon_cmd, tmp)
        except Terminated:
            return 143
    cmd = "python perf/bench_checkpoint.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = render(rec, cmd.strip())
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
