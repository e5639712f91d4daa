"""The systems the harness measures, each behind its own wire with its own load generator: the
daemon (in several settings), the dict keeper, Redis and PostgreSQL.

Owns: ``SYSTEMS`` (key -> label, wire, durability), ``Frames`` (the request bodies of every
scenario for every wire, made once per book from fixed seeds: the same trades for every system),
``ZmqTarget`` (a daemon or the dict keeper: started, book built through the client, or recovered
from the daemon's journal on a restart with other settings), ``RedisTarget`` and ``PgTarget``
(throwaway servers, book loaded), and ``sink_available`` (does this build's ``pstate run`` know the
``sink.*`` settings?).
Runs on: the harness's main process. Imports: numpy, zmq, perf/{servers, workload, baselines, loadgen}, transport.
"""
from __future__ import annotations

import os
import shutil
import zlib
import subprocess
import sys
import time

import numpy as np

import baselines as bl
import workload as wl
from loadgen import LoadGen
from portfolio_state.transport.client import Client
from servers import ServerProcess, free_port, start_postgres, start_redis

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261124
#: system -> (label, wire, durability of an acknowledged update)
SYSTEMS = {
    "ours": ("ours, fsync=batch", "zmq", "durable: fdatasync before the reply (group commit)"),
    "ours_nofsync": ("ours, fsync=off", "zmq", "journal written, never fsynced (an OS crash or power loss loses what the page cache held)"),
    "ours_wb": ("ours, fsync=batch + write-behind", "zmq", "durable; PostgreSQL/Redis written behind"),
    "dict": ("dict keeper (plain Python)", "zmq", "none (memory only)"),
    "redis_always": ("Redis, appendfsync always", "redis", "durable: AOF fsync before the reply"),
    "redis_everysec": ("Redis, appendfsync everysec", "redis", "AOF fsync once a second (a power loss loses up to about a second)"),
    "pg": ("PostgreSQL 15, synchronous_commit=on", "pg", "durable: WAL flush at COMMIT"),
}
BATCH = 100          # updates per batch frame
TICKS_PER_FRAME = 10  # ticks per PriceTicks frame in the storm (batch shape; 1 in the single shape)
STORM_EVERY = 10      # every 10th frame of the storm is a tick frame
WORKERS = {"zmq": 2, "redis": 2, "pg": 4}


def sink_available(daemon_cmd: list[str]) -> bool:
    out = subprocess.run(daemon_cmd + ["run", "--help"], capture_output=True, text=True, timeout=120)
    return "sink.backend" in out.stdout


class Frames:
    """Request bodies per (wire, scenario, shape), encoded once per book (column frames per set of handles)."""

    def __init__(self, book: wl.BookSpec, n_single: int, n_batch_frames: int):
        self.book, self.n_single, self.n_batch = book, n_single, n_batch_frames
        self._cache: dict = {}

    def get(self, wire: str, scenario: str, shape: str, handles=None):
        """(bodies, updates per frame, driver extras) or None where the wire has no such workload."""
        key = (wire, scenario, shape, None if handles is None else (handles[0][:64].tobytes(), len(handles[0])))
        if key not in self._cache:
            self._cache[key] = self._make(wire, scenario, shape, handles)
        return self._cache[key]

    def _make(self, wire, scenario, shape, handles):
        b, rng = self.book, np.random.default_rng(SEED + zlib.crc32(f"{scenario}/{shape}".encode()))
        per = 1 if shape == "single" else BATCH
        n = self.n_single if shape == "single" else self.n_batch
        if wire == "redis":
            if scenario != "trades":
                return None
            fr, up, cr = bl.redis_frames(rng, b, n, per)
            return fr, up, {"crlfs": cr}
        if wire == "pg":
            if scenario != "trades":
                return None
            fr, up = bl.pg_frames(rng, b, n, per)
            return fr, up, {"sql": bl.PG_SQL}

        def trade_frames(k):
            if shape == "single":
                return wl.encode_single(rng, b, k)
            return wl.encode_columns(rng, b, handles[0], handles[1], k, BATCH)
        if scenario == "trades":
            return trade_frames(n), [per] * n, {}
        if scenario == "storm":
            n_ticks = n // STORM_EVERY
            tpf = 1 if shape == "single" else TICKS_PER_FRAME
            trades, ticks = trade_frames(n - n_ticks), wl.encode_ticks(rng, b, n_ticks, tpf)
            bodies, updates = [], []
            for i in range(n):
                tick = i % STORM_EVERY == STORM_EVERY - 1 and ticks
                bodies.append(ticks.pop() if tick else trades.pop())
                updates.append(tpf if tick else per)
            return bodies, updates, {}
        if scenario == "cash":
            if shape != "single":
                return None  # the protocol has no batch frame for cash flows
            return wl.encode_cash_flows(rng, b, n), [1] * n, {}
        raise ValueError(scenario)


class Target:
    """A system under test: its server, its load generator, the frame sets loaded into it."""

    system: str
    wire: str
    server: ServerProcess
    gen: LoadGen

    def __init__(self, system: str, frames: Frames):
        self.system, self.frames = system, frames
        self.wire = SYSTEMS[system][1]
        self.loaded: set = set()
        self.handles = None
        self.gen = None
        self.server = None

    def prepare(self, scenario: str, shape: str) -> str | None:
        """The name of the frame set for (scenario, shape), loaded into the generator; None: not applicable."""
        name = f"{scenario}/{shape}"
        if name not in self.loaded:
            got = self.frames.get(self.wire, scenario, shape, self.handles if shape != "single" else None)
            if got is None:
                return None
            self.gen.load(name, *got)
            self.loaded.add(name)
        return name

    def counters(self):
        return None

    def stop(self) -> None:
        if self.gen is not None:
            self.gen.close()
        if self.server is not None:
            self.server.stop()


class ZmqTarget(Target):
    """The daemon (`settings`: extra --set values) or, with daemon_cmd None, perf/dict_keeper.py."""

    def __init__(self, system, frames, tmp, daemon_cmd, settings=(), data_dir=None, handles=None, progress=None,
                 extra=None):
        super().__init__(system, frames)
        b = frames.book
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        if daemon_cmd is None:
            argv = [sys.executable, os.path.join(HERE, "dict_keeper.py"), "--command", self.endpoint]
        else:
            argv = daemon_cmd + ["run", "--command", self.endpoint, "--events", f"tcp://127.0.0.1:{free_port()}",
                                 "--set", f"book.slots={max(65536, 2 * len(b.refs))}",
                                 "--set", f"book.portfolios={max(1024, b.n_portfolios + 16)}",
                                 "--set", f"book.instruments={max(1024, b.n_instruments + 16)}",
                                 "--set", f"journal.data_dir={data_dir}"]
            for s in settings:
                argv += ["--set", s]
        self.argv = argv
        self.extra = extra  # servers this target needs besides its own (write-behind), stopped with it
        self.control = None
        self.server = ServerProcess(system, argv, os.path.join(tmp, f"{system}.log"), cwd=tmp)
        try:
            self.ready_s = self.server.wait_ready(900)  # a restart recovers the book from the journal first
            self.control = Client(self.endpoint, timeout=300.0, retries=0)
            if handles is None:
                handles = wl.build_book(self.control, b, np.random.default_rng(SEED + 1), chunk=20_000,
                                        progress=progress)
            else:  # recovered: the slots must be the ones handed out at the build
                r = self.control.resolve(positions=b.refs[:1000])
                if list(r.slots) != handles[0][:1000].tolist():
                    raise RuntimeError(f"{system}: recovered slots differ from the built ones")
            self.handles = handles
            self.rss_built = self.server.rss()
            self.gen = LoadGen("zmq", self.endpoint, WORKERS["zmq"])
        except BaseException:
            self.stop()
            raise

    def counters(self):
        mt = self.control.metrics()
        return mt["updates"], mt["rejected_updates"]

    def sink(self) -> dict | None:
        """The daemon's write-behind status (lag_records, catching_up, rows_written...), None without a sink."""
        return self.control.metrics().get("sink") if self.extra is not None else None

    def wait_sink(self, timeout: float) -> float:
        """Wait until the write-behind has caught up with the journal; returns the seconds waited."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            st = self.sink()
            if st is None or (not st.get("catching_up") and st.get("lag_records", 0) <= 10):
                break
            time.sleep(0.5)
        return time.perf_counter() - t0

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        super().stop()
        if self.extra is not None:
            self.extra.stop()


class WriteBehindServers:
    """The throwaway PostgreSQL and Redis the daemon's write-behind sink writes to."""

    def __init__(self, tmp: str):
        self.pg, self.dsn, self.root = start_postgres(tmp)
        try:
            self.redis, self.port = start_redis(tmp, "everysec")
        except Exception:
            self.pg.stop()
            raise

    def settings(self) -> list[str]:
        return ["sink.backend=postgres", f"sink.postgres_dsn={self.dsn}",
                f"sink.redis_url=redis://127.0.0.1:{self.port}/0"]

    def stop(self) -> None:
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisTarget(Target):
    """One Redis server, loaded once; ``switch`` changes its appendfsync policy (CONFIG SET) and its system key."""

    def __init__(self, system, frames, tmp):
        super().__init__(system, frames)
        self.server, self.port = start_redis(tmp, "everysec")
        self.ready_s = 0.0
        try:
            bl.redis_load(self.port, frames.book)
            self.rss_built = self.server.rss()
            self.gen = LoadGen("redis", f"127.0.0.1:{self.port}", WORKERS["redis"])
            self.switch(system)
        except BaseException:
            self.stop()
            raise

    def switch(self, system: str) -> None:
        self.system = system
        bl.redis_command(self.port, "CONFIG", "SET", "appendfsync", "always" if system == "redis_always" else "everysec")


class PgTarget(Target):
    def __init__(self, system, frames, tmp):
        super().__init__(system, frames)
        self.server, self.dsn, self.root = start_postgres(tmp)
        self.ready_s = 0.0
        try:
            bl.pg_load(self.dsn, frames.book)
            self.rss_built = self.server.rss()
            self.gen = LoadGen("pg", self.dsn, WORKERS["pg"])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)
