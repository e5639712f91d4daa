"""Open-loop load generator: frames leave on a fixed schedule from one or more client processes,
whatever the replies do, and each latency runs from the frame's *intended* send time to its reply
(no coordinated omission: a stall is charged to every frame it delayed).

Owns: ``LoadGen`` (the parent side: spawns W worker processes, hands them frame sets, runs a
step at an offered rate and merges their HdrHistograms into a ``StepResult``), the worker loop,
and the three wire drivers it runs: ZeroMQ (the daemon and the dict keeper: a DEALER per worker,
an idempotency key spliced into each frame), Redis (pre-encoded RESP pipelines on a raw TCP
socket, replies counted by their CRLFs) and PostgreSQL (asyncpg, one connection per worker, one
transaction per frame: the frames of one worker queue behind each other, and the queueing
counts, since latency is from the intended time). Global frame g is due at t0 + g * period;
worker w sends frames g = w, w + W, ... Every step is bounded: its schedule, then at most
``drain_s`` for the last replies; a reply still missing counts as lost.
Runs on: the benchmark's main process (``LoadGen``) and W spawned processes (``_worker``).
Imports: numpy, zmq, msgspec, hdrh, the standard library; asyncpg in PostgreSQL workers only.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import select
import socket
import time
from dataclasses import dataclass

import msgspec
import numpy as np
import zmq
from hdrh.histogram import HdrHistogram

HIST_MAX_US = 120_000_000
PROTOCOL_ERRORS = {"MALFORMED", "INVALID", "TOO_LARGE", "KEY_CONFLICT", "INTERNAL", "SHUTTING_DOWN", "NOT_SUPPORTED"}
_steps = itertools.count(1)  # step ids, unique in the parent: with the worker index they make every key unique


def histogram(lat_ns: np.ndarray) -> HdrHistogram:
    """An HdrHistogram of latencies in µs (1 µs .. 120 s, 3 significant digits) from ns values."""
    h = HdrHistogram(1, HIST_MAX_US, 3)
    us = np.minimum(np.maximum(1, np.asarray(lat_ns, np.int64) // 1000), HIST_MAX_US)
    vals, counts = np.unique(us, return_counts=True)
    for v, c in zip(vals.tolist(), counts.tolist()):
        h.record_value(v, c)
    return h


def sample_errors(bodies: list[bytes]) -> int:
    """Replies that are protocol or server errors (a business rejection, e.g. LONG_ONLY_OVERSELL, is not)."""
    errs = 0
    for body in bodies:
        r = msgspec.msgpack.decode(body)
        if not isinstance(r, dict) or (r.get("type") == "error" and r.get("code") in PROTOCOL_ERRORS) \
                or r.get("type") not in ("error", "batch_response", "position_update_response", "ack"):
            errs += 1
    return errs


def _wait(fds_r, fds_w, seconds: float) -> None:
    if seconds > 0:
        select.select(fds_r, fds_w, [], seconds)


class _Schedule:
    """How long a driver may wait: until the next frame is due, then (all sent) for replies until a deadline."""

    def __init__(self, intended: list[int], drain_s: float):
        self.intended, self.drain_ns, self.deadline = intended, int(drain_s * 1e9), None

    def wait(self, sent: int) -> float | None:
        """Seconds to wait; None once the drain deadline has passed."""
        now = time.perf_counter_ns()
        if sent < len(self.intended):
            return (self.intended[sent] - now) / 1e9
        if self.deadline is None:
            self.deadline = now + self.drain_ns
        if now >= self.deadline:
            return None
        return min(0.05, (self.deadline - now) / 1e9)


# ---------------------------------------------------------------- drivers (one schedule, three wires)
def zmq_open_loop(sock, body, n: int, due, step: int = 0, drain_s: float = 10.0):
    """Send body(j) at due(j) for j < n; replies matched by a request-id frame (step, j).
    Returns (latencies ns of replied frames, replied indices, lost, last reply ns, send lags ns, sampled replies)."""
    lat = np.full(n, -1, np.int64)
    lag = np.zeros(n, np.int64)
    intended = [due(j) for j in range(n)]
    samples = []
    fd = sock.getsockopt(zmq.FD)
    send, recv, pc, events = sock.send_multipart, sock.recv_multipart, time.perf_counter_ns, sock.getsockopt
    POLLIN, NOBLOCK, EVENTS = zmq.POLLIN, zmq.NOBLOCK, zmq.EVENTS
    tag = step << 32
    sent = done = 0
    last_reply = intended[0] if n else pc()
    sched = _Schedule(intended, drain_s)
    nxt = body(0) if n else b""
    while done < n:
        now = pc()
        while sent < n and intended[sent] <= now:
            send([(tag | sent).to_bytes(8, "little"), nxt], NOBLOCK)
            lag[sent] = pc() - intended[sent]
            sent += 1
            nxt = body(sent) if sent < n else b""  # the next body is built while waiting, not on the clock
        while events(EVENTS) & POLLIN:
            frames = recv(NOBLOCK)
            t = pc()
            rid = int.from_bytes(frames[0], "little")
            if rid >> 32 != step:
                continue  # a late reply of an earlier step
            j = rid & 0xFFFFFFFF
            lat[j] = t - intended[j]
            last_reply = t
            done += 1
            if not done & 63:
                samples.append(frames[-1])
        if done >= n:
            break
        wait = sched.wait(sent)
        if wait is None:
            break
        _wait([fd], [], wait)
    ok = lat >= 0
    return lat[ok], np.flatnonzero(ok), n - done, last_reply, lag[:sent], samples


def redis_open_loop(sock: socket.socket, frame, crlfs, n: int, due, drain_s: float = 10.0):
    """Write the RESP pipeline frame(j) at due(j); frame j is answered once the reply stream holds all
    its CRLFs (every reply to HINCRBYFLOAT is a bulk string: two CRLFs). Same returns as zmq_open_loop,
    samples = the number of error replies seen."""
    lat = np.full(n, -1, np.int64)
    lag = np.zeros(n, np.int64)
    intended = [due(j) for j in range(n)]
    need = np.cumsum([crlfs(j) for j in range(n)]).tolist()
    pc = time.perf_counter_ns
    out = bytearray()
    got = sent = done = errors = 0
    prev_cr = False
    last_reply = intended[0] if n else pc()
    sched = _Schedule(intended, drain_s)
    while done < n:
        now = pc()
        while sent < n and intended[sent] <= now:
            out += frame(sent)
            lag[sent] = pc() - intended[sent]
            sent += 1
        if out:
            try:
                del out[:sock.send(out)]
            except BlockingIOError:
                pass
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                raise ConnectionError("redis closed the connection")
            got += data.count(b"\r\n") + (prev_cr and data[:1] == b"\n")
            prev_cr = data[-1:] == b"\r"
            errors += data.count(b"\r\n-ERR") + data.count(b"\r\n-WRONGTYPE") + data.startswith(b"-")
            t = pc()
            while done < sent and got >= need[done]:
                lat[done] = t - intended[done]
                done += 1
                last_reply = t
        if done >= n:
            break
        wait = sched.wait(sent)
        if wait is None:
            break
        _wait([sock], [sock] if out else [], wait)
    ok = lat >= 0
    return lat[ok], np.flatnonzero(ok), n - done, last_reply, lag[:sent], errors


def pg_open_loop(conn, sql: str, params, n: int, due, drain_s: float = 10.0):
    """Frame j (params(j): rows of one transaction, an UPDATE per row) starts at due(j), or as soon as
    this connection is free when it is behind; latency from due(j) to its COMMIT. Same returns.
    `conn` is (event loop, asyncpg connection)."""
    loop, pg = conn
    lat = np.full(n, -1, np.int64)
    lag = np.zeros(n, np.int64)
    pc = time.perf_counter_ns
    stop_at = due(n - 1) + int(drain_s * 1e9) if n else 0

    async def run():
        done = errors = 0
        last_reply = free_at = due(0) if n else pc()
        for j in range(n):
            d = due(j)
            now = pc()
            if now < d:
                time.sleep((d - now) / 1e9)  # nothing else runs on this loop: a plain sleep wakes sooner
            elif now > stop_at:
                break
            lag[j] = pc() - max(d, free_at)  # the client's own lateness, not the queue behind the last commit
            rows = params(j)
            try:
                async with pg.transaction():
                    if len(rows) == 1:
                        await pg.execute(sql, *rows[0])
                    else:
                        await pg.executemany(sql, rows)
            except Exception:  # noqa: BLE001 - a failed transaction is an error, counted and reported
                errors += 1
                continue
            t = pc()
            lat[j] = t - d
            last_reply = free_at = t
            done += 1
        return done, errors, last_reply
    done, errors, last_reply = loop.run_until_complete(run())
    ok = lat >= 0
    return lat[ok], np.flatnonzero(ok), n - done, last_reply, lag[:n], errors


# ---------------------------------------------------------------- worker process
def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _worker(pipe, kind: str, target: str, widx: int, nworkers: int) -> None:
    """One client process: connect, then serve 'load' (a frame set) and 'step' (run a schedule) commands."""
    try:  # wake-ups on time: the default 50 µs timer slack would add to every send lag
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(29, 1000)  # PR_SET_TIMERSLACK, ns
    except OSError:
        pass
    ctx = sock = conn = None
    if kind == "zmq":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # no limit: the open loop must never block on send
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(target)
    elif kind == "redis":
        host, port = target.split(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
    elif kind == "pg":
        import asyncio

        import asyncpg

        loop = asyncio.new_event_loop()
        conn = (loop, loop.run_until_complete(asyncpg.connect(target)))
    sets = {}
    pipe.send("ready")
    try:
        while True:
            msg = pipe.recv()
            if msg[0] == "close":
                break
            if msg[0] == "load":
                _, name, frames, updates, extra = msg
                if kind == "zmq":
                    from workload import splice_parts  # noqa: PLC0415 - perf/ is on the path of every worker
                    frames = [splice_parts(f) for f in frames]
                sets[name] = (frames, np.asarray(updates, np.int64), extra)
                pipe.send("loaded")
                continue
            _, name, step, t0, period, n_total, drain_s = msg
            frames, updates, extra = sets[name]
            pipe.send(_run(kind, sock, conn, frames, updates, extra, widx, nworkers, step, t0, period, n_total,
                           drain_s))
    finally:
        if ctx is not None:
            sock.close(0)
            ctx.term()
        elif sock is not None:
            sock.close()
        if conn is not None:
            conn[0].run_until_complete(conn[1].close())
            conn[0].close()


def _run(kind, sock, conn, frames, updates, extra, widx, nworkers, step, t0, period, n_total, drain_s) -> dict:
    nt = len(frames)
    n = len(range(widx, n_total, nworkers))
    gidx = lambda j: widx + j * nworkers  # noqa: E731 - this worker's j-th frame is global frame gidx(j)
    due = lambda j: t0 + gidx(j) * period  # noqa: E731
    c0 = _cpu()
    if kind == "zmq":
        key_head = f"{widx:02x}{step:05x}"

        def body(j):
            head, tail = frames[gidx(j) % nt]
            return head + f"{key_head}{j:09x}".encode() + tail
        lat, idx, lost, last, lag, samples = zmq_open_loop(sock, body, n, due, step, drain_s)
        errors, sampled = sample_errors(samples), len(samples)
    elif kind == "redis":
        crlf = extra["crlfs"]
        lat, idx, lost, last, lag, errors = redis_open_loop(sock, lambda j: frames[gidx(j) % nt],
                                                           lambda j: crlf[gidx(j) % nt], n, due, drain_s)
        sampled = n
    else:
        lat, idx, lost, last, lag, errors = pg_open_loop(conn, extra["sql"], lambda j: frames[gidx(j) % nt], n,
                                                         due, drain_s)
        sampled = n
    replied = widx + np.asarray(idx, np.int64) * nworkers  # the replied frames' global indexes
    done_updates = int(updates[replied % nt].sum()) if len(idx) else 0
    return {"hist": histogram(lat).encode(), "lag": histogram(lag).encode(), "frames": n, "done": len(idx),
            "timeline": timeline(lat, replied * period, n_total * period),
            "lost": lost, "updates": done_updates, "last": last, "cpu": _cpu() - c0, "errors": errors,
            "sampled": sampled}


LEAD_NS = 100_000_000  # a step's schedule starts this long after the workers are told
TIMELINE_NS = 100_000_000  # one bucket of a step's timeline: 100 ms of intended send times


def timeline(lat_ns, sent_ns, span_ns: int) -> list[int]:
    """The worst latency (µs) of the frames due in each TIMELINE_NS of the step: where in the
    step a stall was (a checkpoint's fork, its copy-on-write, a flush). -1 where none replied."""
    out = np.full(-(-span_ns // TIMELINE_NS), -1, np.int64)
    if len(lat_ns):
        np.maximum.at(out, np.minimum(np.asarray(sent_ns) // TIMELINE_NS, len(out) - 1),
                      np.asarray(lat_ns, np.int64) // 1000)
    return out.tolist()


# ---------------------------------------------------------------- parent side
@dataclass
class StepResult:
    offered: float          # updates/s on the schedule
    seconds: float          # schedule length
    hist: HdrHistogram      # per-frame latency from the intended send time, µs
    lag: HdrHistogram       # client send lag (actual - intended), µs
    frames: int
    done: int
    lost: int
    updates: int            # updates in the replied frames
    achieved: float         # replied updates / (t0 -> last reply)
    client_cpu: float       # CPU seconds of all client processes over the step / wall (1.0 = one core)
    errors: int
    sampled: int
    wall: float
    timeline: list[int]     # worst latency (µs) of the frames due in each TIMELINE_NS; -1: none replied
    start_wall: float       # the schedule's start, as time.time()

    def pct(self, q: float) -> float:
        return float(self.hist.get_value_at_percentile(q)) if self.hist.get_total_count() else float("nan")

    @property
    def max_us(self) -> float:
        return float(self.hist.get_max_value()) if self.hist.get_total_count() else float("nan")

    @property
    def lag_p99(self) -> float:
        return float(self.lag.get_value_at_percentile(99)) if self.lag.get_total_count() else 0.0


class LoadGen:
    """W client processes of one kind ('zmq', 'redis', 'pg') aimed at one target (endpoint, 'host:port', dsn)."""

    def __init__(self, kind: str, target: str, workers: int):
        self.kind, self.workers = kind, workers
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for w in range(workers):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(b, kind, target, w, workers), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)
        for a in self.pipes:
            self._expect(a, "ready", 120)
        self.sets: dict[str, float] = {}  # frame set -> mean updates per frame

    def _expect(self, pipe, what: str, timeout: float):
        if not pipe.poll(timeout):
            raise TimeoutError(f"load generator worker: no '{what}' after {timeout} s")
        got = pipe.recv()
        if what and got != what:
            raise RuntimeError(f"load generator worker answered {got!r}, expected {what!r}")
        return got

    def load(self, name: str, frames: list, updates, extra: dict | None = None) -> None:
        """Hand every worker the frame set `name` (bodies, updates per frame, driver extras)."""
        for a in self.pipes:
            a.send(("load", name, frames, list(updates), extra or {}))
        for a in self.pipes:
            self._expect(a, "loaded", 300)
        self.sets[name] = float(np.mean(updates))

    def step(self, name: str, rate: float, seconds: float, drain_s: float = 10.0) -> StepResult:
        """Offer `rate` updates/s of frame set `name` for `seconds`, then wait (bounded) for the replies."""
        per = self.sets[name]
        n_total = max(1, int(round(rate / per * seconds)))
        period = int(round(seconds * 1e9 / n_total))
        t0 = time.perf_counter_ns() + LEAD_NS  # every worker has its command by then
        start_wall = time.time() + LEAD_NS / 1e9
        w0 = time.perf_counter()
        step = next(_steps)
        for a in self.pipes:
            a.send(("step", name, step, t0, period, n_total, drain_s))
        res = [self._expect(a, "", seconds + drain_s + 120) for a in self.pipes]
        wall = time.perf_counter() - w0
        hist, lag = HdrHistogram(1, HIST_MAX_US, 3), HdrHistogram(1, HIST_MAX_US, 3)
        for r in res:
            hist.add(HdrHistogram.decode(r["hist"]))
            lag.add(HdrHistogram.decode(r["lag"]))
        last = max(r["last"] for r in res)
        updates = sum(r["updates"] for r in res)
        return StepResult(offered=n_total * per / seconds, seconds=seconds, hist=hist, lag=lag,
                          frames=sum(r["frames"] for r in res), done=sum(r["done"] for r in res),
                          lost=sum(r["lost"] for r in res), updates=updates,
                          achieved=updates / max((last - t0) / 1e9, seconds), client_cpu=sum(r["cpu"] for r in res) / wall,
                          errors=sum(r["errors"] for r in res), sampled=sum(r["sampled"] for r in res), wall=wall,
                          timeline=np.max([r["timeline"] for r in res], axis=0).tolist(), start_wall=start_wall)

    def close(self) -> None:
        for a in self.pipes:
            try:
                a.send(("close",))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
