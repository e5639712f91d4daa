"""Soak: ours (fsync=batch) held at a fixed share of its max rate for a bounded time, to catch leaks
and drift: the daemon's RSS sampled every 10 s, and p99 per minute from the intended send times.

    python -m perf --soak 30                  # 30 minutes at 50% of the max rate of a short sweep
    python -m perf --soak 5 --soak-rate 200000

Owns: ``run`` (book, sweep of trades in batch frames unless --soak-rate is given, then one open-loop
step per minute while a thread samples RSS), ``render`` (RESULTS.md section) and its plot.
Runs on: the harness's main process and an RSS sampling thread. Imports: numpy, matplotlib (plot
only), perf/{sweep, targets, workload, report}, the standard library.
"""
from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

import sweep as sw
import targets as tg
import workload as wl

SECTION = "## Soak (python -m perf --soak)"


def run(args, daemon_cmd: list[str], tmp: str, log) -> dict:
    n_pf, n_pos = (int(x) for x in (args.books or "1000x1000").split(",")[0].split("x"))
    book = wl.make_book(n_pf, n_pos, 5000 if n_pos > 100 else max(200, 2 * n_pos), np.random.default_rng(tg.SEED),
                        popular=True)
    frames = tg.Frames(book, 2000, 2000)
    settings = ["journal.fsync=batch"] + (["sink.backend=none"] if tg.sink_available(daemon_cmd) else [])
    rec = {"mode": "soak", "book": f"{n_pf}x{n_pos}", "slots": len(book.refs), "minutes": [], "rss": []}
    target = tg.ZmqTarget("ours", frames, tmp, daemon_cmd, settings, os.path.join(tmp, "journal-soak"))
    try:
        if args.soak_rate:
            rate = args.soak_rate
        else:
            got = sw.sweep(target, "trades", "batch", "quick", 1.0, 3.0, log)
            rate = args.soak_fraction * (got["max_50ms"] or got["steps"][0]["offered"])
            rec["sweep_max_50ms"] = got["max_50ms"]
        rec["rate"] = rate
        name = target.prepare("trades", "batch")
        log(f"soak: {rate:,.0f} updates/s for {args.soak:g} minutes")
        stop = threading.Event()
        t0 = time.perf_counter()

        def sample():
            while not stop.is_set():
                rec["rss"].append(((time.perf_counter() - t0) / 60, target.server.rss()))
                stop.wait(10.0)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            left = args.soak * 60
            for k in range(math.ceil(args.soak)):
                st = sw.measure(target, name, rate, min(60.0, left), 10.0)
                left -= st["seconds"]
                rec["minutes"].append(st)
                log(f"  minute {k + 1}: {sw.line(st)}  RSS {target.server.rss() / 2**20:,.0f} MiB")
        finally:
            stop.set()
            th.join()
    finally:
        target.stop()
    return rec


def render(rec: dict, out_dir: str) -> str:
    mins, rss = rec["minutes"], rec["rss"]
    lines = [SECTION, "",
             f"- Date (UTC): {rec['date']}; commit {rec['commit']}; machine: {rec['machine']}; load average at the "
             f"end {rec['load']} (shared, noisy machine).",
             f"- Command: `{rec['command']}`. Ours, fsync=batch, {rec['slots']:,} positions ({rec['book']}), trades in "
             f"column frames of 100 offered open loop at {rec['rate']:,.0f} updates/s"
             + (f" (a fraction of the {rec['sweep_max_50ms']:,.0f}/s a short sweep sustained at p99 ≤ 50 ms)"
                if rec.get("sweep_max_50ms") else "") + "; one step per minute, latency from the intended send time.",
             ""]
    if rss:
        mib = [r / 2**20 for _, r in rss]
        lines.append(f"RSS of the daemon: {mib[0]:,.0f} MiB at the start, {max(mib):,.0f} MiB at most, {mib[-1]:,.0f} "
                     f"MiB at the end ({len(rss)} samples, every 10 s).")
    lines += ["", "| Minute | Achieved updates/s | p50 µs | p99 µs | p99.9 µs | max µs | lost | server CPU |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, st in enumerate(mins, 1):
        lines.append(f"| {k} | {st['achieved']:,.0f} | {st['p50']:,.0f} | {st['p99']:,.0f} | {st['p999']:,.0f} | "
                     f"{st['max']:,.0f} | {st['lost']} | {st['server_cpu']:.0%} |")
    if mins and _plot(rec, os.path.join(out_dir, "plots", "soak.png")):
        lines += ["", "![Soak: RSS and p99 per minute](plots/soak.png)"]
    return "\n".join(lines) + "\n"


def _plot(rec: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    t = [m for m, _ in rec["rss"]]
    ax.plot(t, [r / 2**20 for _, r in rec["rss"]], color="tab:blue", label="daemon RSS, MiB")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(range(1, len(rec["minutes"]) + 1), [st["p99"] for st in rec["minutes"]], "o-", color="tab:red")
    ax2.set_ylabel("p99 of the minute, µs", color="tab:red")
    ax.set_title(f"Soak at {rec['rate']:,.0f} updates/s offered (column frames of 100)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
