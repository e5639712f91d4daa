#!/usr/bin/env python
"""End-to-end benchmark of the daemon over its ROUTER socket, against a plain-Python dict keeper.

    python perf/bench_daemon.py                     # full run (about 4 minutes), writes perf/RESULTS.md
    python perf/bench_daemon.py --quick --no-write  # smoke run, well under 60 s
    python perf/bench_daemon.py --transport tcp     # tcp://127.0.0.1 instead of ipc://
    python perf/bench_daemon.py --profile /tmp/p    # also py-spy each server during each phase
    python perf/bench_daemon.py --servers daemon,dict --daemon-cmd "python my_patched_cli.py"  # A/B a change

Owns: the benchmark driver. It starts each server as a child process on a
private ipc:// endpoint (or loopback tcp) in a temporary directory that is also
its working directory (journal, logs), builds the same book in it through
``transport.client.Client``, drives the same workload through one pipelined
DEALER socket, records per-request latency (HdrHistogram) and throughput, and
stops the child whatever happened (SIGTERM, then SIGKILL; children also get
SIGTERM if this process dies: PR_SET_PDEATHSIG). Servers, one after the other:
``daemon`` (default settings), ``daemon_nojournal`` (journal off),
``daemon_bare`` (journal and events off), ``dict`` (perf/dict_keeper.py) and
``echo`` (dict_keeper.py --echo: the same socket loop answering without doing
anything, the ceiling for one message per update, and in the open loop the
floor this machine's wake-ups put under any server's latency). A server that stalls (no
reply for 10 s) or dies is reported as FAILED and the run goes on; the exit
status is then 1.
Runs on: this process is the only client (one core for it, one for the server
on a 2-core machine, not pinned). Imports: numpy, zmq, hdrh, psutil, transport,
perf/{results, loadgen, servers, workload}; perf/dict_keeper.py runs as a child.

Phases (same order and same request bytes for every server; request bodies are
templates cycled with a fresh idempotency key spliced into each, so no request
is a replay and a phase is bounded by time, not by what was pre-encoded):
 * closed loop, pipelined: a window of W requests in flight; a new request
   leaves as soon as a reply comes back. Max throughput (updates/s) and the
   latency of each request (send -> its reply, queueing in the window included):
   (a) one PositionUpdateRequest per frame (string ids), W = --window-single;
       also W = 1 (ping-pong: the unloaded round trip);
   (b) PositionUpdateColumns frames of 100 and (c) of 1,000 updates (int
       handles from ``resolve``: the fast path); (d) PositionUpdateBatch rows
       of 100 (string ids).
 * open loop: frames leave on a fixed schedule whatever the replies do (a
   frame of 100 column updates every 1 ms = 100,000 updates/s offered; and
   single updates paced at --open-single-rate, 10,000/s by default: 100,000
   single frames/s is beyond what one Python client and one Python server
   can move over pyzmq on 2 cores, see the echo figures); each latency runs
   from the frame's *intended* send time to its reply, so a stall is charged
   to every frame it delayed (no coordinated omission). Bounded:
   --open-seconds of schedule, then at most 10 s for the last replies; a reply
   still missing counts as lost.
Server CPU (psutil, of the child) and client CPU are measured per phase: a
server well below 100% of a core in a closed loop means the client, or the
machine, was the limit.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results as perf_results  # noqa: E402
from results import Terminated as _Terminated  # noqa: E402
from results import log  # noqa: E402
from results import on_sigterm as _on_sigterm  # noqa: E402
from loadgen import histogram as _histogram  # noqa: E402
from loadgen import sample_errors as _sample_errors  # noqa: E402
from loadgen import zmq_open_loop  # noqa: E402
from servers import ServerProcess  # noqa: E402
from workload import (BookSpec, Pool, build_book, encode_columns, encode_rows, encode_single,  # noqa: E402
                      make_book)

from portfolio_state.transport.client import Client  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = perf_results.RESULTS
SECTION = "## Daemon (perf/bench_daemon.py)"
SEED = 20261124
BUY, SELL = 0, 1
BARS = {"single": 200_000, "batch": 1_000_000, "open_p99_us": 1000}


# ---------------------------------------------------------------- workload
@dataclass
class Workload:
    """Request templates, the same bytes for both servers. Column frames carry handles, so they are
    encoded once a server's book is built, per set of handles (both servers number slots and
    portfolios in resolve order, so in practice the daemon's and the dict keeper's are the same)."""

    book: BookSpec
    n_c100: int = 0
    n_c1000: int = 0
    n_open: int = 0
    single: dict = field(default_factory=dict)   # tag -> Pool
    rows: dict = field(default_factory=dict)     # tag -> Pool
    _columns: dict = field(default_factory=dict)  # handles bytes -> {tag: Pool}

    def columns_for(self, handles) -> dict:
        key = (handles[0].tobytes(), handles[1].tobytes())
        if key not in self._columns:
            crng = np.random.default_rng(SEED + 7)
            slots, pfs = handles
            self._columns[key] = {
                "c100": Pool(encode_columns(crng, self.book, slots, pfs, self.n_c100, 100), "c"),
                "c1000": Pool(encode_columns(crng, self.book, slots, pfs, self.n_c1000, 1000), "k"),
                "open100": Pool(encode_columns(crng, self.book, slots, pfs, self.n_open, 100), "o"),
            }
        return self._columns[key]


# ---------------------------------------------------------------- measurement
@dataclass
class Phase:
    name: str
    kind: str                 # "closed" or "open"
    per_frame: int
    window: int = 0
    frames: int = 0           # replies received
    sent: int = 0
    seconds: float = 0.0      # first send -> last reply
    lat_us: HdrHistogram = None
    server_cpu: float = 0.0   # fraction of one core over the phase
    server_cpu_s: float = 0.0  # server CPU seconds over the phase
    client_cpu: float = 0.0
    errors: int = 0           # error replies seen in the sampled replies
    sampled: int = 0
    accepted: int = 0         # server counters, delta over the phase
    rejected: int = 0
    events: int = 0           # portfolio_state_updated events the server published over the phase
    offered_rate: float = 0.0  # open loop: updates/s on the schedule
    sent_rate: float = 0.0     # open loop: updates/s actually sent
    send_lag_us: HdrHistogram = None  # open loop: actual send - intended send
    lost: int = 0
    note: str = ""
    profile: str = ""         # py-spy summary of the server during the phase (--profile)

    @property
    def updates(self) -> int:
        return self.frames * self.per_frame

    @property
    def rate(self) -> float:
        return self.updates / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(self.lat_us.get_value_at_percentile(q)) if self.lat_us and self.lat_us.get_total_count() else float("nan")

    @property
    def max_us(self) -> float:
        return float(self.lat_us.get_max_value()) if self.lat_us and self.lat_us.get_total_count() else float("nan")


def closed_loop(sock, body, window: int, seconds: float, limit: int = 1 << 40):
    """Keep `window` requests in flight (body(i) is the i-th request) until `seconds` have passed
    (or `limit` requests), then drain. Returns (latencies ns, replies, first send -> last reply s,
    sampled reply bodies)."""
    ids = []
    t_send = []
    lat = []
    samples = []
    send, recv, pc = sock.send_multipart, sock.recv_multipart, time.perf_counter_ns
    stop_at = pc() + int(seconds * 1e9)
    sent = done = 0
    stopping = False
    t0 = pc()
    while True:
        if not stopping and sent - done < window:
            if pc() >= stop_at or sent >= limit:
                stopping = True
            else:
                while sent - done < window and sent < limit:
                    rid = sent.to_bytes(4, "little")
                    b = body(sent)
                    t_send.append(pc())
                    send([rid, b])
                    sent += 1
        if done == sent:
            break
        try:
            frames = recv()
        except zmq.Again:
            raise TimeoutError(f"no reply in {sock.getsockopt(zmq.RCVTIMEO) / 1000:g} s with {sent - done} "
                               f"requests in flight") from None
        t = pc()
        lat.append(t - t_send[int.from_bytes(frames[0], "little")])
        done += 1
        if not done & 255:
            samples.append(frames[-1])
    t1 = pc()
    del ids
    return np.array(lat, np.int64), done, (t1 - t0) / 1e9, samples


def open_loop(sock, body, n: int, period_ns: int, drain_s: float = 10.0):
    """Send request i (body(i)) at t0 + i*period whatever the replies do; latency from the intended send time.
    Returns (latencies ns, replies, lost, first intended send -> last reply s, schedule s, send lags ns, samples)."""
    t0 = time.perf_counter_ns() + 2_000_000
    lat, idx, lost, last_reply, lag, samples = zmq_open_loop(sock, body, n, lambda j: t0 + j * period_ns,
                                                             drain_s=drain_s)
    return lat, len(idx), lost, (last_reply - t0) / 1e9, n * period_ns / 1e9, lag, samples


class Session:
    """One server under test: its process, a DEALER for the load, a Client for control."""

    def __init__(self, server: ServerProcess, endpoint: str, ctx: zmq.Context):
        self.server = server
        self.ctx = ctx
        self.control = Client(endpoint, timeout=60.0, retries=0, context=ctx)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # no limit: the open loop must never block on send
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)  # a server silent this long has stalled: fail the phase
        self.sock.connect(endpoint)

    def counters(self) -> tuple[int, int, int]:
        if self.server.name == "echo":
            return 0, 0, 0
        mt = self.control.metrics()
        return mt["updates"], mt["rejected_updates"], mt.get("events", 0)

    def close(self) -> None:
        self.sock.close(0)
        self.control.close()

    def run(self, phase: Phase, fn, profile_dir: str | None = None, profile_s: float = 0.0):
        a0, r0, e0 = self.counters()
        spy = _py_spy(self.server.pid, profile_dir, f"{self.server.name}-{phase.name}", profile_s) if profile_dir else None
        c0, s0, w0 = _client_cpu(), self.server.cpu(), time.perf_counter()
        try:
            fn(phase)
        finally:
            wall = time.perf_counter() - w0
            phase.server_cpu_s = self.server.cpu() - s0
            phase.server_cpu = phase.server_cpu_s / wall
            phase.client_cpu = (_client_cpu() - c0) / wall
            if spy is not None:
                _stop(spy, 30)
                with contextlib.suppress(OSError):
                    phase.profile = profile_summary(spy.args[spy.args.index("-o") + 1])
        a1, r1, e1 = self.counters()
        phase.accepted, phase.rejected, phase.events = a1 - a0, r1 - r0, e1 - e0
        return phase


def _client_cpu() -> float:
    t = os.times()
    return t.user + t.system


#: --profile-gil: sample only the thread holding the GIL (py-spy --gil), to see who keeps the engine waiting
PY_SPY_GIL = False


def _py_spy(pid: int, out_dir: str, name: str, seconds: float):
    exe = shutil.which("py-spy")
    if not exe:
        return None
    os.makedirs(out_dir, exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                             "--rate", "250", "--nonblocking", "--format", "raw", *(["--gil"] if PY_SPY_GIL else []),
                             "-o",
                             os.path.join(out_dir, f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: functions whose inclusive share of the server's samples the profile summary reports
PROFILE_KEYS = ("Engine.handle", "Engine._admit", "Engine._rows", "Engine._update_response", "Book.apply_trades",
                "Engine.flush_events", "Server._flush_events", "Socket.recv_multipart", "Socket.send_multipart",
                "Server._start_sync", "Server._synced", "DictKeeper.serve_one", "DictKeeper.trade")


def profile_summary(path: str) -> str:
    """One line from py-spy's raw (collapsed) stacks: inclusive shares of PROFILE_KEYS and the top self frames."""
    import collections
    total, incl, self_ = 0, collections.Counter(), collections.Counter()
    with open(path) as f:
        for ln in f:
            stack, _, n = ln.rstrip().rpartition(" ")
            if not stack or not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = stack.split(";")
            self_[frames[-1].split(" (")[0]] += n
            names = {fr.split(" (")[0] for fr in frames}
            for k in PROFILE_KEYS:
                if k in names:
                    incl[k] += n
    if not total:
        return "no samples"
    inc = ", ".join(f"{k} {100 * incl[k] / total:.0f}%" for k in PROFILE_KEYS if incl[k])
    top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in self_.most_common(5))
    return f"{total} samples; inclusive: {inc}; top self: {top}"


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_server(name: str, argv: list[str], endpoint: str, tmp: str, args, book: BookSpec, wl: Workload,
               plan: list[dict], ready_timeout: float) -> dict:
    """Start one server, build the book, run every phase of the plan, stop the server."""
    out = {"name": name, "phases": []}
    server = ServerProcess(name, argv, os.path.join(tmp, f"{name}.log"), cwd=tmp)
    ctx = zmq.Context()
    session = None
    try:
        out["ready_s"] = server.wait_ready(ready_timeout)
        session = Session(server, endpoint, ctx)
        if name == "echo":
            # no book: column frames get stand-in handles (the echo answers without reading them),
            # so the open loop's floor is measured with bodies of the daemon's size
            slots = np.arange(len(book.refs), dtype=np.int32)
            pfs = np.zeros(len(book.refs), np.int32)
            plan = [st for st in plan if st["name"] in ECHO_PHASES]
            log(f"[{name}] ready in {out['ready_s']:.1f} s (pid {server.pid})")
        else:
            t0 = time.perf_counter()
            slots, pfs = build_book(session.control, book, np.random.default_rng(SEED + 1))
            out["build_s"] = time.perf_counter() - t0
            out["rss_after_build"] = server.rss()
            log(f"[{name}] ready in {out['ready_s']:.1f} s (pid {server.pid}); book of {len(slots):,} positions "
                f"built through the client in {out['build_s']:.1f} s")
            out["handles"] = (slots, pfs)
        for step in plan:
            out["at"] = step["name"]
            ph = Phase(step["name"], step["kind"], step["per_frame"], window=step.get("window", 0))
            pool = step["pool"](wl, (slots, pfs))
            body = pool.bodies()
            if step["kind"] == "closed":
                def fn(ph, body=body, step=step):
                    lat, done, secs, samples = closed_loop(session.sock, body, step["window"], step["seconds"])
                    ph.frames, ph.sent, ph.seconds = done, done, secs
                    ph.lat_us = _histogram(lat)
                    ph.sampled, ph.errors = len(samples), _sample_errors(samples)
                dur = step["seconds"]
            else:
                def fn(ph, body=body, step=step):
                    lat, done, lost, secs, sched_s, lag, samples = open_loop(session.sock, body, step["frames"],
                                                                             step["period_ns"])
                    ph.frames, ph.sent, ph.lost, ph.seconds = done, step["frames"], lost, secs
                    ph.lat_us = _histogram(lat)
                    ph.send_lag_us = _histogram(lag)
                    ph.offered_rate = ph.per_frame * 1e9 / step["period_ns"]
                    ph.sent_rate = ph.per_frame * len(lag) / max(sched_s, 1e-9)
                    ph.sampled, ph.errors = len(samples), _sample_errors(samples)
                dur = step["frames"] * step["period_ns"] / 1e9
            session.run(ph, fn, args.profile if step.get("record") else None, dur)
            pool.consumed(ph.sent)
            if step.get("record", True):
                out["phases"].append(ph)
                log(f"[{name}] {_line(ph)}")
        out["rss_end"] = server.rss()
    except (_Terminated, KeyboardInterrupt):
        raise
    except Exception as e:  # recorded and reported; the other servers still run
        out["error"] = f"{type(e).__name__}: {e}" + (f" (phase {out['at']})" if out.get("at") else "")
        out["error_log"] = server.output()[-1500:]
        log(f"[{name}] FAILED: {out['error']}; the last lines of its log:\n{out['error_log']}")
        with contextlib.suppress(Exception):
            dump = subprocess.run(["py-spy", "dump", "--pid", str(server.pid)], capture_output=True, text=True,
                                  timeout=20).stdout
            out["error_dump"] = dump
            log(f"[{name}] py-spy dump of the server:\n{dump}")
    finally:
        if session is not None:
            session.close()
        ctx.term()
        # a daemon's clean stop waits for its write-behind to drain (sink.drain_timeout_s, 30 s) and
        # writes a checkpoint: give it that long before calling it a failure
        out["exit"] = server.stop(timeout=90.0)
        out["log_tail"] = server.output()[-2000:]
    return out


def _line(ph: Phase) -> str:
    lag = ""
    if ph.kind == "open":
        lag = (f", offered {ph.offered_rate:,.0f}/s, sent {ph.sent_rate:,.0f}/s, send lag p99 "
               f"{ph.send_lag_us.get_value_at_percentile(99)} us, lost {ph.lost}")
    return (f"{ph.name:<34} {ph.rate:>11,.0f} updates/s  {ph.frames:>8,} frames  p50 {ph.pct(50):>7,.0f}  "
            f"p99 {ph.pct(99):>7,.0f}  p99.9 {ph.pct(99.9):>7,.0f}  max {ph.max_us:>8,.0f} us  "
            f"server cpu {ph.server_cpu:4.0%} client cpu {ph.client_cpu:4.0%}  "
            f"accepted {ph.accepted:,} rejected {ph.rejected:,} events {ph.events:,} err {ph.errors}/{ph.sampled}{lag}")


# ---------------------------------------------------------------- report
NAN = float("nan")
#: server name -> (column title, extra daemon settings); "dict" is perf/dict_keeper.py. Settings that name
#: the journal are dropped for a build without one (and daemon_nojournal is then skipped).
VARIANTS = {"daemon": ("Daemon", []),
            "daemon_nojournal": ("Daemon, no journal", ["journal.data_dir="]),
            "daemon_bare": ("Daemon, no journal, events off", ["journal.data_dir=", "engine.events=false"]),
            "dict": ("Dict keeper", None),
            "echo": ("Echo (socket-loop ceiling)", None)}
ECHO_PHASES = ("warmup", "single_w1", "single", "open_single", "open100")
COLUMNS = tuple((k, v[0]) for k, v in VARIANTS.items())


def _has_journal() -> bool:
    """Does this build of the daemon have a journal (a ``journal`` settings section)?"""
    try:
        from portfolio_state.daemon.config import Settings
    except Exception:
        return False
    return "journal" in Settings.__struct_fields__


def _fs_type(path: str) -> str:
    """'ext4 (/)' etc.: the file system a path is on."""
    best = None
    for part in psutil.disk_partitions(all=True):
        if os.path.realpath(path).startswith(part.mountpoint) and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    return f"{best.fstype} ({best.mountpoint})" if best else "an unknown file system"


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == x else "n/a"


def report(results: dict, args, meta: dict) -> str:
    cols = [(key, label) for key, label in COLUMNS if key in results]
    phases = {key: {p.name: p for p in results[key]["phases"]} for key, _ in cols}

    def val(key, name, what):
        p = phases[key].get(name)
        if p is None:
            return NAN
        return p.pct(what) if isinstance(what, (int, float)) else getattr(p, what)

    lines = [SECTION, ""]
    lines += [f"- Date (UTC): {meta['date']}", f"- Commit: {meta['commit']}", f"- Machine: {meta['machine']}",
              f"- Load average when the run started (1/5/15 min): {meta['load']} (the machine may be shared: "
              f"figures are indicative).",
              f"- Command: `{meta['command']}`",
              f"- Book: {meta['book']}",
              f"- Transport: {meta['transport']}. One client process (this script: one DEALER socket, requests "
              "pre-encoded before timing, a request-id frame echoed back) and one server process at a time, "
              "one after the other: the daemon (`pstate run`, default settings: " + meta["daemon_defaults"]
              + "".join(f"; then again with `{' '.join(v for v in VARIANTS[k][1] if v in results[k]['settings'])}`"
                        for k in results if k.startswith("daemon_"))
              + ") and `perf/dict_keeper.py` (plain Python, one message at a time on the same kind of ROUTER "
              "socket, same bodies, replies of the same shape" + ("; with `--echo`: the same loop answering "
              "without doing anything" if "echo" in results else "") + "). One core each on a 2-core "
              "machine, not pinned.",
              "- Latency: per request, client send -> its reply received (closed loop: queueing behind the "
              "window included; open loop: from the *intended* send time, so no coordinated omission), "
              "HdrHistogram, µs. Closed-loop throughput: replied updates / (first send -> last reply).",
              ""]
    daemons = [key for key, _ in cols if key.startswith("daemon")]
    for key, label in cols:
        if results[key].get("error"):
            lines += [f"**{label} FAILED**: {results[key]['error']} "
                      "(see the notes at the end); its cells show what was measured before.", ""]
    head = ("| Figure | " + " | ".join(label for _, label in cols) + " | "
            + ("Daemon / dict" if len(daemons) == 1 else "Daemon / dict, per daemon column") + " | Bar | "
            + ("" if len(daemons) == 1 else "Per daemon column") + " |")
    lines += [head, "|---|" + "---:|" * len(cols) + "---:|---|---|"]

    def row(label, name, what, bar=None, ok=None, higher=True, extra=()):
        """One table row; extra: more (name, what) shown as ' / '-joined values in the same cell."""
        cells = []
        for key, _ in cols:
            vs = [val(key, name, what)] + [val(key, n2, w2) for n2, w2 in extra]
            cells.append(" / ".join(_num(v) for v in vs))
        ratios = []
        theirs = val("dict", name, what) if "dict" in phases else NAN
        for key in daemons:
            ours = val(key, name, what)
            r = NAN
            if ours == ours and theirs == theirs and ours and theirs:
                r = ours / theirs if higher else theirs / ours
            ratios.append("n/a" if r != r else f"{r:.2f}×")
        verdict = ""
        if ok is not None:
            vs = [val(key, name, what) for key in daemons]
            verdict = " / ".join("not measured" if v != v else "meets" if ok(v) else "**misses**" for v in vs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {' / '.join(ratios)} | {bar or ''} | {verdict} |")

    steps = {st["name"]: st for st in make_plan(argparse.Namespace(**{**vars(args), "phases": None}), None)}
    row(f"(a) one update per frame (PositionUpdateRequest), closed loop, {steps['single']['window']} in flight: "
        "updates/s", "single", "rate", f"≥ {BARS['single']:,}", lambda x: x >= BARS["single"])
    row("(a) … latency p50 / p99 / p99.9, µs", "single", 50, higher=False, extra=(("single", 99), ("single", 99.9)))
    row("(a) one update per frame, ping-pong (1 in flight): latency p50 / p99, µs", "single_w1", 50,
        higher=False, extra=(("single_w1", 99),))
    for name, lab in (("cols100", "(b) column frames of 100 (PositionUpdateColumns)"),
                      ("cols1000", "(c) column frames of 1,000"),
                      ("rows100", "(d) row batches of 100 (PositionUpdateBatch)")):
        bar = f"≥ {BARS['batch']:,}" if name != "rows100" else f"(≥ {BARS['batch']:,})"
        row(f"{lab}, closed loop, {steps[name]['window']} frames in flight: updates/s", name, "rate", bar,
            lambda x: x >= BARS["batch"])
        row(f"{lab.split(' ')[0]} … latency per frame p50 / p99 / p99.9, µs", name, 50, higher=False,
            extra=((name, 99), (name, 99.9)))
    st = steps["open100"]
    rate = st["per_frame"] * 1e9 / st["period_ns"]
    row(f"Open loop, {rate:,.0f} updates/s offered ({st['per_frame']} column updates every "
        f"{st['period_ns'] / 1e6:g} ms, {st['frames']:,} frames): achieved updates/s", "open100", "rate")
    row("… latency from the intended send time p50, µs", "open100", 50, higher=False)
    row("… p99, µs", "open100", 99, f"≤ {BARS['open_p99_us']:,}", lambda x: x <= BARS["open_p99_us"], higher=False)
    row("… p99.9 / max, µs", "open100", 99.9, higher=False, extra=(("open100", "max_us"),))
    if "open_single" in steps:
        st = steps["open_single"]
        row(f"Open loop, single updates paced at {1e9 / st['period_ns']:,.0f}/s ({st['frames']:,} frames): "
            "achieved updates/s", "open_single", "rate")
        row("… latency from the intended send time p50 / p99 / p99.9 / max, µs", "open_single", 50, higher=False,
            extra=(("open_single", 99), ("open_single", 99.9), ("open_single", "max_us")))
    lines += ["", "Ratios: throughput daemon / dict keeper (above 1: the daemon is faster); latency dict keeper / "
              "daemon (above 1: the daemon's is lower).", "",
              "Server CPU per update in the closed loops (the server process's CPU time over the phase / "
              "updates, all its threads), µs: less sensitive to a shared machine than wall-clock rates; "
              "1e6 / it is roughly the rate one free core could sustain if the server were the only limit:", ""]
    lines += ["| Phase | " + " | ".join(label for _, label in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in ("single", "cols100", "cols1000", "rows100"):
        if name in steps:
            cells = []
            for key, _ in cols:
                p = phases[key].get(name)
                cells.append("n/a" if p is None or not p.updates else f"{p.server_cpu_s * 1e6 / p.updates:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Details per phase (server/client CPU = CPU time over the phase's wall time, 100% = one core; "
              "accepted/rejected = the server's own counters over the phase; rejections are business rules "
              "(long-only oversells, more of them the more often a phase cycles its request templates); events = "
              "portfolio_state_updated events the server published over the phase (coalesced within its CPU "
              "budget); err = "
              "protocol or server errors among the sampled replies):", ""]
    for key, label in cols:
        res = results[key]
        facts = [f"ready in {res['ready_s']:.1f} s" if "ready_s" in res else "never ready"]
        if "build_s" in res:
            facts.append(f"book built through the client in {res['build_s']:.1f} s, RSS "
                         f"{res['rss_after_build'] / 2**20:.0f} MiB after the build")
        if "rss_end" in res:
            facts.append(f"RSS {res['rss_end'] / 2**20:.0f} MiB at the end")
        lines.append(f"- {label}: " + ", ".join(facts) + ".")
        for ph in res["phases"]:
            lines.append(f"  - {ph.name}: {ph.updates:,} updates in {ph.frames:,} frames over {ph.seconds:.2f} s; "
                         f"server CPU {ph.server_cpu:.0%}, client CPU {ph.client_cpu:.0%}; " +
                         (f"accepted {ph.accepted:,}, rejected {ph.rejected:,}, events {ph.events:,}; " if key != "echo" else "") +
                         f"err {ph.errors}/{ph.sampled}" +
                         (f"; sent {ph.sent_rate:,.0f} updates/s on a {ph.offered_rate:,.0f}/s schedule, client "
                          f"send lag p50/p99/max {ph.send_lag_us.get_value_at_percentile(50)}/"
                          f"{ph.send_lag_us.get_value_at_percentile(99)}/{ph.send_lag_us.get_max_value()} µs, "
                          f"lost {ph.lost}" if ph.kind == "open" else "") +
                         f"; latency p50/p99/p99.9/max {_num(ph.pct(50))}/{_num(ph.pct(99))}/"
                         f"{_num(ph.pct(99.9))}/{_num(ph.max_us)} µs." +
                         (f" Profile (py-spy, server): {ph.profile}." if ph.profile else ""))
    for extra in meta.get("notes", []):
        lines.append(f"- {extra}")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    perf_results.write_section(text, SECTION)


# ---------------------------------------------------------------- main
def make_plan(args, wl: Workload) -> list[dict]:
    sec = args.seconds
    single = lambda w, h: w.single["s"]  # noqa: E731
    plan = [
        {"name": "warmup", "kind": "closed", "per_frame": 1, "window": args.window_single, "seconds": 0.5,
         "pool": single, "record": False},
        {"name": "single_w1", "kind": "closed", "per_frame": 1, "window": 1, "seconds": min(1.0, sec), "pool": single},
        {"name": "single", "kind": "closed", "per_frame": 1, "window": args.window_single, "seconds": sec,
         "pool": single},
        {"name": "cols100", "kind": "closed", "per_frame": 100, "window": args.window_batch, "seconds": sec,
         "pool": lambda w, h: w.columns_for(h)["c100"]},
        {"name": "cols1000", "kind": "closed", "per_frame": 1000, "window": max(2, args.window_batch // 4),
         "seconds": sec, "pool": lambda w, h: w.columns_for(h)["c1000"]},
        {"name": "rows100", "kind": "closed", "per_frame": 100, "window": args.window_batch, "seconds": sec,
         "pool": lambda w, h: w.rows["r"]},
        {"name": "open100", "kind": "open", "per_frame": 100, "period_ns": 1_000_000,
         "frames": int(args.open_seconds * 1000), "pool": lambda w, h: w.columns_for(h)["open100"]},
    ]
    if args.open_single_rate > 0:
        plan.append({"name": "open_single", "kind": "open", "per_frame": 1,
                     "period_ns": int(round(1e9 / args.open_single_rate)),
                     "frames": int(args.open_single_rate * args.open_seconds), "pool": single})
    if getattr(args, "phases", None):  # a subset, e.g. for an A/B of one phase (the warm-up always runs)
        plan = [st for st in plan if st["name"] == "warmup" or st["name"] in args.phases.split(",")]
    for step in plan:
        step.setdefault("record", True)
    return plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (< 60 s): smaller book, 1 s phases")
    ap.add_argument("--no-write", action="store_true", help=f"do not update {os.path.relpath(RESULTS)}")
    ap.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    ap.add_argument("--portfolios", type=int, help="default 1000 (quick: 200)")
    ap.add_argument("--positions", type=int, default=100, help="positions per portfolio (default 100)")
    ap.add_argument("--instruments", type=int, default=2000)
    ap.add_argument("--seconds", type=float, help="length of each closed-loop phase (default 5, quick 1)")
    ap.add_argument("--open-seconds", type=float, help="length of the open-loop schedule (default 10, quick 2)")
    ap.add_argument("--window-single", type=int, default=128, help="requests in flight, one update per frame")
    ap.add_argument("--window-batch", type=int, default=16, help="frames in flight, batches of 100 (1,000: a quarter)")
    ap.add_argument("--open-single-rate", type=float, default=10_000,
                    help="single updates/s offered in the paced open loop (0: skip)")
    ap.add_argument("--servers", help="servers to run, in order, from daemon (default settings), daemon_nojournal "
                                      "(journal.data_dir=), daemon_bare (journal.data_dir= engine.events=false), "
                                      "dict, echo (default: all; quick: daemon,dict,echo)")
    ap.add_argument("--daemon-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="extra --set for the daemon, e.g. engine.events=false")
    ap.add_argument("--daemon-cmd", metavar="CMD", help="command that runs the daemon's CLI, instead of "
                    "'python -m portfolio_state.daemon.cli' (e.g. a wrapper that patches a build, for an A/B run)")
    ap.add_argument("--phases", help="run only these phases, e.g. open100 (from single_w1, single, cols100, "
                                     "cols1000, rows100, open100, open_single; default: all)")
    ap.add_argument("--profile", metavar="DIR", help="record the server with py-spy (raw collapsed stacks) per phase")
    ap.add_argument("--profile-gil", action="store_true",
                    help="with --profile: sample only the thread holding the GIL (py-spy --gil)")
    args = ap.parse_args(argv)
    if args.profile_gil and not args.profile:
        ap.error("--profile-gil needs --profile DIR")
    global PY_SPY_GIL
    PY_SPY_GIL = args.profile_gil
    args.portfolios = args.portfolios or (200 if args.quick else 1000)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.open_seconds = args.open_seconds or (2.0 if args.quick else 10.0)
    journal = _has_journal()
    default = "daemon,dict,echo" if args.quick else ",".join(
        k for k in VARIANTS if k != "daemon_nojournal" or journal)
    servers = [s.strip() for s in (args.servers or default).split(",") if s.strip()]
    if not servers or not set(servers) <= set(VARIANTS):
        ap.error(f"--servers: a list from {', '.join(VARIANTS)}")
    if "daemon_nojournal" in servers and not journal:
        ap.error("this build of the daemon has no journal: daemon_nojournal means nothing")

    import shlex
    daemon_cmd = shlex.split(args.daemon_cmd) if args.daemon_cmd else [sys.executable, "-m", "portfolio_state.daemon.cli"]
    signal.signal(signal.SIGTERM, _on_sigterm)
    t_run = time.perf_counter()
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "commit": perf_results.git_commit(),
            "machine": perf_results.machine(), "load": "/".join(f"{x:.2f}" for x in os.getloadavg()),
            "command": "python perf/bench_daemon.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                         if (argv if argv is not None else sys.argv[1:]) else ""),
            "notes": []}

    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    book = make_book(args.portfolios, args.positions, args.instruments, rng)
    meta["book"] = (f"{args.portfolios:,} portfolios × {args.positions} positions = {len(book.refs):,} positions "
                    f"(slots), {args.instruments:,} instruments in 6 currencies, FX, a deposit, a sector limit per "
                    f"portfolio, every position opened by a BUY; every 5th portfolio LONG_ONLY, every 7th in EUR. "
                    f"Set up through `transport.client.Client` (fx, instruments, prices, portfolio, cash_flow, "
                    f"exposure_limit, resolve, column BUYs). Trades: random positions, 55% BUY / 45% SELL of 1-19 "
                    f"units at the instrument's price ± 0.2%; seed {SEED}")
    # request templates (cycled; each request gets its own key): 40,000 single updates, 200,000 updates in
    # frames of 100 and 400,000 in frames of 1,000; the open loop's frames are all distinct
    wl = Workload(book, n_c100=2000, n_c1000=400, n_open=int(args.open_seconds * 1000))
    wl.single["s"] = Pool(encode_single(rng, book, 40_000), "s")
    wl.rows["r"] = Pool(encode_rows(rng, book, 1000, 100), "r")
    log(f"book of {len(book.refs):,} positions and workload encoded in {time.perf_counter() - t0:.1f} s")

    meta["daemon_defaults"] = "events on" + (
        ", journal on with its default fsync policy, in the run's temporary directory on "
        f"{_fs_type(tempfile.gettempdir())}" if journal else "")
    meta["transport"] = ("ipc:// (Unix domain sockets) in a private temporary directory" if args.transport == "ipc"
                         else "tcp://127.0.0.1 (loopback)")
    tmp = tempfile.mkdtemp(prefix="pstate-bench-")
    results = {}
    try:
        def endpoint(name):
            if args.transport == "ipc":
                return f"ipc://{tmp}/{name}.sock"
            from socket import socket
            with socket() as s:
                s.bind(("127.0.0.1", 0))
                return f"tcp://127.0.0.1:{s.getsockname()[1]}"

        for name in servers:
            ep = endpoint(name)
            if name.startswith("daemon"):
                argv_ = daemon_cmd + ["run", "--command", ep,
                         "--events", endpoint("events"), "--set", f"book.slots={max(65536, 2 * len(book.refs))}",
                         "--set", f"book.portfolios={max(1024, args.portfolios + 16)}",
                         "--set", f"book.instruments={max(1024, args.instruments + 16)}"]
                if journal:  # a fresh journal per run, in the run's temporary directory (same disk as /tmp)
                    argv_ += ["--set", f"journal.data_dir={tmp}/{name}-data"]
                for s in args.daemon_set + [v for v in VARIANTS[name][1] if journal or not v.startswith("journal.")]:
                    argv_ += ["--set", s]
            else:
                argv_ = [sys.executable, os.path.join(HERE, "dict_keeper.py"), "--command", ep] + (
                    ["--echo"] if name == "echo" else [])
            results[name] = run_server(name, argv_, ep, tmp, args, book, wl, make_plan(args, wl), ready_timeout=120.0)
            results[name]["settings"] = argv_[argv_.index("run") + 1:] if name.startswith("daemon") else []
    except (_Terminated, KeyboardInterrupt):
        log("interrupted: servers stopped")
        return 130
    finally:
        if os.environ.get("PERF_KEEP_TMP"):  # the servers' logs, for a look after the run
            log(f"kept {tmp} (PERF_KEEP_TMP)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if "daemon" in results and "dict" in results:
        hd, hk = results["daemon"]["handles"], results["dict"]["handles"]
        if not (np.array_equal(hd[0], hk[0]) and np.array_equal(hd[1], hk[1])):
            meta["notes"].append("Note: the two servers handed out different handles; column frames were "
                                 "encoded for each (same trades, different handle numbers).")
    failed = False
    for res in results.values():
        if res.get("error"):
            failed = True
            meta["notes"].append(f"**{VARIANTS[res['name']][0]} FAILED** during the run: {res['error']} (its "
                                 f"figures above stop there). Server log tail: "
                                 f"`{' | '.join(res['error_log'].strip().splitlines()[-3:])}`")
        if res.get("exit") not in (0, None):
            failed = True
            meta["notes"].append(f"{VARIANTS[res['name']][0]} exited with status {res['exit']}: "
                                 f"`{' | '.join(res['log_tail'].strip().splitlines()[-3:])}`")
    meta["notes"].append(f"Whole run {time.perf_counter() - t_run:.0f} s.")
    text = report(results, args, meta)
    log("")
    log(text)
    if not args.no_write:
        write_section(text)
        log(f"wrote the section '{SECTION}' of {os.path.relpath(RESULTS)}")
    if failed:
        log("a server failed or exited badly: see the notes above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
