"""Rate sweeps: offer a system rising rates, one bounded open-loop step each, until p99 passes 50 ms
(or frames are lost, or the achieved rate falls behind the offered one), and report the highest
offered rate at which p99 stayed ≤ 1 ms (ours) and ≤ 50 ms (the spec).

Owns: ``LADDERS`` (offered updates/s per frame shape and mode), ``measure`` (one step: the load
generator's latency histogram plus the server's CPU and its accepted/rejected counters over the
step), ``sweep`` and ``fixed`` (one rate held for a while: the 100,000 updates/s check).
Runs on: the harness's main process. Imports: psutil (through perf/servers.py), the standard library.
"""
from __future__ import annotations

import math
import os
import time

P99_SPEC_US = 50_000
P99_OURS_US = 1_000
#: offered updates/s; a sweep climbs until a step fails. Low rungs exist for the slow baselines.
LADDERS = {
    ("single", "smoke"): [1_000, 2_000],
    ("batch", "smoke"): [5_000, 20_000],
    ("single", "quick"): [500, 2_000, 5_000, 10_000, 20_000, 40_000, 80_000],
    ("single", "full"): [250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000, 60_000,
                         80_000, 100_000],
    ("batch", "quick"): [5_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 4_000_000],
    ("batch", "full"): [2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000, 700_000,
                        1_000_000, 1_500_000, 2_000_000, 3_000_000, 4_000_000, 6_000_000],
}
CLIENT_LAG_US = 5_000  # a step whose sends ran this late (p99) measured the client as much as the server


def settle(server, timeout: float = 10.0) -> None:
    """Wait until the server is idle (under 10% of a core over 0.1 s), so one step's backlog is not the next one's."""
    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end:
        c0 = server.cpu()
        time.sleep(0.1)
        if server.cpu() - c0 < 0.01:
            return


def measure(target, name: str, rate: float, seconds: float, drain_s: float) -> dict:
    if getattr(target, "backlog", True):  # the first step, or one after frames went unanswered
        settle(target.server)
    c0 = target.counters()
    s0 = target.server.cpu()
    r = target.gen.step(name, rate, seconds, drain_s)
    s1 = target.server.cpu()
    c1 = target.counters()
    target.backlog = r.lost > 0
    ok50 = (r.pct(99) <= P99_SPEC_US and r.lost == 0 and r.errors == 0 and r.achieved >= 0.9 * r.offered)
    st = {"offered": r.offered, "achieved": r.achieved, "p50": r.pct(50), "p90": r.pct(90), "p99": r.pct(99),
          "p999": r.pct(99.9), "max": r.max_us, "frames": r.frames, "done": r.done, "lost": r.lost,
          "errors": r.errors, "sampled": r.sampled, "server_cpu": (s1 - s0) / r.wall, "client_cpu": r.client_cpu,
          "lag_p99": r.lag_p99, "seconds": seconds, "ok50": ok50, "ok1": ok50 and r.pct(99) <= P99_OURS_US,
          "client_limited": r.lag_p99 > CLIENT_LAG_US, "load1": os.getloadavg()[0], "timeline": r.timeline,
          "start_wall": r.start_wall}
    if c0 is not None and c1 is not None:
        st["accepted"], st["rejected"] = c1[0] - c0[0], c1[1] - c0[1]
    sink = target.sink() if hasattr(target, "sink") else None
    if sink:  # how far the write-behind trails the journal right after the step (records)
        st["sink_lag"] = sink.get("lag_records")
    return st


def line(st: dict) -> str:
    return (f"offered {st['offered']:>11,.0f}/s achieved {st['achieved']:>11,.0f}/s  p50 {st['p50']:>8,.0f} "
            f"p99 {st['p99']:>8,.0f} p99.9 {st['p999']:>8,.0f} max {st['max']:>8,.0f} µs  lost {st['lost']} "
            f"err {st['errors']}  server cpu {st['server_cpu']:4.0%} client cpu {st['client_cpu']:4.0%} "
            f"send lag p99 {st['lag_p99']:,.0f} µs" + ("  FAIL" if not st["ok50"] else ""))


def sweep(target, scenario: str, shape: str, mode: str, seconds: float, drain_s: float, log,
          refine: bool = False) -> dict | None:
    """Climb the ladder; None when the system has no such workload."""
    name = target.prepare(scenario, shape)
    if name is None:
        return None
    ladder = LADDERS[(shape, mode)]
    if not getattr(target, "warm", False):  # once per server: JIT, caches, connections; not kept
        target.gen.step(name, ladder[0], min(0.5, seconds), drain_s)
        target.warm = True
    steps = []
    for rate in ladder:
        st = measure(target, name, rate, seconds, drain_s)
        steps.append(st)
        log(f"  [{target.system} {scenario}/{shape}] {line(st)}")
        if not st["ok50"]:  # confirmed once: on a shared machine one burst of someone else's work fails a step
            st = measure(target, name, rate, seconds, drain_s)
            st["retry"] = True
            steps.append(st)
            log(f"  [{target.system} {scenario}/{shape}] {line(st)}  (again)")
            if not st["ok50"]:
                break
    passed = [s for s in steps if s["ok50"]]
    if refine and passed and not steps[-1]["ok50"] and passed[-1]["offered"] < steps[-1]["offered"]:
        # one more step between the last pass and the failure
        mid = math.sqrt(passed[-1]["offered"] * steps[-1]["offered"])
        st = measure(target, name, mid, seconds, drain_s)
        steps.insert(len(steps) - 1, st)
        log(f"  [{target.system} {scenario}/{shape}] {line(st)}  (refine)")
    return summarize(steps, ladder)


def summarize(steps: list[dict], ladder: list[float]) -> dict:
    ok50 = [s for s in steps if s["ok50"]]
    ok1 = [s for s in steps if s["ok1"]]
    fail = steps[-1] if steps and not steps[-1]["ok50"] else None
    if fail is None:
        limit = "ladder top reached: the system was not saturated"
    elif fail["lost"]:
        limit = f"server: {fail['lost']:,} frames unanswered at the failing step"
    elif fail["server_cpu"] >= 0.85:
        limit = f"server: CPU-bound ({fail['server_cpu']:.0%} of a core)"
    elif fail["client_limited"]:
        limit = (f"machine: the client's sends ran late too (p99 {fail['lag_p99'] / 1000:,.1f} ms; server "
                 f"{fail['server_cpu']:.0%}, client {fail['client_cpu']:.0%} of a core): CPU contention")
    else:
        limit = f"waits, not CPU (server at {fail['server_cpu']:.0%} of a core): fsync, or the shared machine"
    return {"steps": steps, "max_1ms": max((s["offered"] for s in ok1), default=None),
            "max_50ms": max((s["offered"] for s in ok50), default=None), "limit": limit,
            "below_ladder": not ok50, "ladder_top": ladder[-1]}


def fixed(target, scenario: str, shape: str, rate: float, seconds: float, drain_s: float, log) -> dict | None:
    """One rate held for `seconds` (after a short warm-up)."""
    name = target.prepare(scenario, shape)
    if name is None:
        return None
    target.gen.step(name, rate, min(1.0, seconds), drain_s)
    target.warm = True
    st = measure(target, name, rate, seconds, drain_s)
    log(f"  [{target.system} {scenario}/{shape} fixed] {line(st)}")
    return st
