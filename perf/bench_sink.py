#!/usr/bin/env python
"""Write-behind benchmark: sink throughput into PostgreSQL, and the daemon with the sink on and off.

    python perf/bench_sink.py            # about 5 minutes; writes its section of perf/RESULTS.md
    python perf/bench_sink.py --quick --no-write

Owns: two measurements, each against a baseline taken in the same run.
 1. Sink throughput: ``PostgresStore.write`` (binary COPY + staged upsert, one
    transaction with the watermark) of position-change hand-offs, rows/s, against
    the obvious alternative on the same rows: asyncpg ``executemany`` INSERTs in
    one transaction.
 2. The daemon under an open-loop 100,000 updates/s (column frames of 100 every
    1 ms from one DEALER; latency from each frame's intended send time) with
    sink.backend=none versus postgres + Redis: p50/p99 of both, the sink's lag
    (journal seq - persisted seq) sampled every 250 ms, and its rows/s.
Servers: the machine's PostgreSQL (127.0.0.1:5432, a temporary database per run
with the write-behind, and one for the throughput) and Redis (a key prefix each),
or the harness's throwaway ones (perf/servers.py).
Runs on: this process and one daemon child at a time. Imports: asyncpg, numpy, zmq, hdrh, perf, portfolio_state.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf import results  # noqa: E402
from portfolio_state.persistence.changes import ChangeSet, Positions, tables  # noqa: E402
from portfolio_state.persistence.changes import COLUMNS  # noqa: E402
from portfolio_state.persistence.pgstore import PostgresStore  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"


def records(table: str, cols: dict) -> list[tuple]:
    """The baseline's rows: Python values asyncpg encodes (Decimal, datetime), made before its clock starts."""
    def column(values, kind):
        arr = np.asarray(values)
        if kind == "str":
            return list(values)
        if kind == "f8":
            return [None if x != x else x for x in arr.astype(np.float64).tolist()]
        if kind == "ts":
            return [None if ns == 0 else d for ns, d in
                    zip(arr.tolist(), arr.astype("datetime64[ns]").astype("datetime64[us]").astype(object))]
        if kind in ("cents", "micro"):
            return [Decimal(int(x)).scaleb(-2 if kind == "cents" else -6) for x in arr.tolist()]
        return arr.astype(np.int64).tolist()
    return list(zip(*(column(cols[c], k) for c, k in COLUMNS[table])))


UNIVERSE = 200_000  # positions the desk holds; a change row updates one of them (the steady state)


def synthetic(n_rows: int, seq: int, rng, which: np.ndarray | None = None) -> ChangeSet:
    """n_rows position changes on distinct positions drawn from UNIVERSE (or on ``which``)."""
    pos = rng.choice(UNIVERSE, n_rows, replace=False) if which is None else which
    n_pos = len(pos)
    q = rng.integers(1, 1000, n_pos).astype(np.int64) * 1_000_000
    mv = q // 10_000 * rng.integers(50, 500, n_pos)
    ids = np.array([f"pos-{i}" for i in pos.tolist()], dtype=object)
    p = Positions(ids, np.array([f"P{i % 1000}" for i in pos.tolist()], dtype=object),
                  np.array([f"I{i % 5000}" for i in pos.tolist()], dtype=object), q, mv, mv,
                  rng.random(n_pos) / 100, np.ones(n_pos, np.int8), np.full(n_pos, time.time_ns(), np.int64),
                  np.zeros(n_pos, np.int64), np.zeros(n_pos, np.int64), np.zeros(n_pos), np.ones(n_pos, np.bool_))
    return ChangeSet(seq - 1, seq, time.time_ns(), positions=p)


async def sink_throughput(dsn: str, n_rows: int, rounds: int) -> dict:
    import asyncpg

    rng = np.random.default_rng(1)
    store = PostgresStore(dsn, "bench")
    await store.open()
    # the desk's positions exist already (not timed): every timed change row appends to
    # position_changes_ts and updates its position
    for j, lo in enumerate(range(0, UNIVERSE, 100_000)):
        await store.write(tables([synthetic(0, 0, rng, np.arange(lo, min(UNIVERSE, lo + 100_000)))]), j + 1)
    base = UNIVERSE // 100_000 + 1
    sets = [tables([synthetic(n_rows, base + i + 1, rng)]) for i in range(rounds)]
    out = {"rows_per_txn": n_rows, "rounds": rounds, "positions_held": UNIVERSE}
    t = []
    for i, tabs in enumerate(sets):
        t0 = time.perf_counter()
        await store.write(tabs, base + i + 1)
        t.append(time.perf_counter() - t0)
    out["copy_rows_per_s"] = n_rows / float(np.median(t))  # change rows; each also upserts its position
    await store.close()
    conn = await asyncpg.connect(dsn)
    cols = ["timestamp", "position_id", "portfolio_id", "instrument_id", "quantity", "market_value", "weight",
            "unrealized_pnl", "quantity_change", "value_change", "weight_change", "change_type"]
    sql = f"INSERT INTO position_changes_ts ({', '.join(cols)}) VALUES ({', '.join(f'${i + 1}' for i in range(12))})"
    pcols = ["position_id", "portfolio_id", "instrument_id", "quantity", "cost_basis", "market_value", "unrealized_pnl",
             "weight", "status", "last_updated"]
    upsert = (f"INSERT INTO positions ({', '.join(pcols)}) VALUES ({', '.join(f'${i + 1}' for i in range(10))}) "
              "ON CONFLICT (position_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in pcols[1:]))
    t = []
    for tabs in sets[: max(2, rounds // 3)]:
        recs = records("position_changes_ts", tabs["position_changes_ts"])
        precs = records("positions", tabs["positions"])
        t0 = time.perf_counter()
        async with conn.transaction():  # the same two writes, row by row
            await conn.executemany(sql, recs)
            await conn.executemany(upsert, precs)
        t.append(time.perf_counter() - t0)
    out["executemany_rows_per_s"] = n_rows / float(np.median(t))
    await conn.close()
    return out


def psql_admin(sql: str) -> None:
    import asyncpg

    async def go():
        c = await asyncpg.connect(PG + "/postgres")
        await c.execute(sql)
        await c.close()

    asyncio.run(go())


#: the command that runs the daemon's CLI (--daemon-cmd: another build, for an A/B run)
DAEMON_CMD = [sys.executable, "-m", "portfolio_state.daemon.cli"]


def daemon_run(tmp: str, sink_args: list[str], seconds: float, rate: int) -> dict:
    """One daemon; build a book of 1,000 portfolios x 20 positions; offer `rate` updates/s open loop."""
    import zmq

    from perf.loadgen import histogram, zmq_open_loop
    from perf.servers import free_port
    from portfolio_state.transport.client import Client, _Builders

    port = free_port()
    data = tempfile.mkdtemp(dir=tmp)
    log = open(os.path.join(data, "daemon.log"), "w")
    proc = subprocess.Popen([*DAEMON_CMD, "run", "--command",
                             f"tcp://127.0.0.1:{port}", "--events", f"tcp://127.0.0.1:{free_port()}", "--set",
                             f"journal.data_dir={data}", *sink_args], stdout=log, stderr=subprocess.STDOUT)
    try:
        ep = f"tcp://127.0.0.1:{port}"
        deadline = time.time() + 120
        while "ready:" not in open(os.path.join(data, "daemon.log")).read():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(open(os.path.join(data, "daemon.log")).read())
            time.sleep(0.1)
        rng = np.random.default_rng(3)
        with Client(ep, timeout=30) as c:
            for p in range(1000):
                c.upsert_portfolio(f"P{p}")
            c.upsert_instruments([{"instrument_id": f"I{k}"} for k in range(500)])
            c.prices({f"I{k}": 100.0 for k in range(500)})
            for p in range(0, 1000, 100):
                for q in range(p, p + 100):
                    c.cash_flow(f"P{q}", 10_000_000)
            refs = [{"portfolio_id": f"P{p}", "position_id": f"p{p}-{j}", "instrument_id": f"I{(p * 7 + j) % 500}"}
                    for p in range(1000) for j in range(20)]
            slots, pfs = [], []
            for i in range(0, len(refs), 5000):
                r = c.resolve(positions=refs[i:i + 5000])
                slots += r.slots
                pfs += r.portfolios[: len(r.slots)]
        slots, pfs = np.array(slots, np.int32), np.array(pfs, np.int32)
        per = 100
        n_frames = int(rate * seconds / per)
        bodies = []
        enc = __import__("msgspec").msgpack.Encoder()
        for i in range(n_frames):
            j = rng.integers(0, len(slots), per)
            bodies.append(enc.encode(_Builders.columns(pfs[j], slots[j], np.zeros(per, np.int8), rng.integers(1, 10, per),
                                                       np.full(per, 100.0), key=f"k{i}-{uuid.uuid4().hex[:8]}")))
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.SNDHWM, 0)  # the open loop never blocks on send
        s.connect(ep)
        lags, stop = [], threading.Event()

        def sample_lag():  # the sink's lag every 250 ms, on a socket of its own
            with Client(ep, timeout=10) as mon:
                while not stop.wait(0.25):
                    m = mon.metrics()
                    if m.get("sink"):
                        lags.append(m["sink"]["lag_records"])

        sampler = threading.Thread(target=sample_lag, daemon=True)
        sampler.start()
        # the shared open-loop driver: it sleeps until the next frame is due (a Poller's whole
        # milliseconds made this loop spin a core the daemon needs), latency from the intended send time
        period = int(per * 1e9 / rate)
        t0 = time.perf_counter_ns() + 100_000_000
        lat, _, _, _, send_lag, _ = zmq_open_loop(s, lambda j: bodies[j], n_frames, lambda j: t0 + j * period,
                                                  drain_s=15.0)
        stop.set()
        sampler.join()
        hist = histogram(lat)
        got = len(lat)
        with Client(ep, timeout=10) as mon:
            m = mon.metrics()
        s.close(0)
        ctx.term()
        return {"p50_us": hist.get_value_at_percentile(50), "p99_us": hist.get_value_at_percentile(99),
                "max_us": hist.get_max_value(), "replied": got, "frames": n_frames,
                "send_lag_p99_us": float(np.percentile(send_lag, 99)) / 1000 if len(send_lag) else None,
                "lag_max": max(lags) if lags else None, "lag_median": float(np.median(lags)) if lags else None,
                "sink": m.get("sink")}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3,
                    help="daemon runs with the write-behind, each between two without it (off, on, off, on, ... off); "
                         "the p99 ratio is median(on) / median(off). Default 3")
    ap.add_argument("--no-throughput", action="store_true", help="skip the sink-throughput measurement")
    ap.add_argument("--daemon-cmd", help="command that runs the daemon's CLI (default: this Python, "
                                         "-m portfolio_state.daemon.cli), e.g. another build for an A/B run")
    args = ap.parse_args()
    global DAEMON_CMD
    if args.daemon_cmd:
        DAEMON_CMD = shlex.split(args.daemon_cmd)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    run_id = uuid.uuid4().hex[:8]
    dbs: list[str] = []

    def new_db() -> str:  # every run with the write-behind starts from an empty store, as the first did
        db = f"pstate_bench_{run_id}_{len(dbs)}"
        psql_admin(f"CREATE DATABASE {db}")
        dbs.append(db)
        return db

    tmp = tempfile.mkdtemp(prefix="pstate-bench-sink-")
    thr = None
    off_args = ["--set", "sink.backend=none"]
    off, on = [], []
    try:
        if not args.no_throughput:
            thr = asyncio.run(sink_throughput(f"{PG}/{new_db()}", 20_000 if args.quick else 50_000,
                                              3 if args.quick else 7))
            print("sink throughput", thr, flush=True)
        seconds = 5 if args.quick else 20
        for i in range(2 * args.reps + 1):  # off, on, off, ..., on, off: each on between two offs
            if i % 2:
                db = new_db()
                sink_args = ["--set", "sink.backend=postgres", "--set", f"sink.postgres_dsn={PG}/{db}", "--set",
                             "sink.redis_url=redis://127.0.0.1:6379/0", "--set", f"sink.redis_prefix=bench-{db}:"]
            else:
                sink_args = off_args
            r = daemon_run(tmp, sink_args, seconds, args.rate)
            (on if i % 2 else off).append(r)
            print("postgres + redis" if i % 2 else "sink off", r, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        import redis

        r = redis.Redis()
        for db in dbs:
            psql_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            keys = list(r.scan_iter(f"bench-{db}:*"))
            if keys:
                r.delete(*keys)

    def med(runs, key):
        return float(np.median([x[key] for x in runs]))

    def each(runs, key):
        return ", ".join(f"{x[key]:,}" for x in runs)

    lags = [x for x in on if x["lag_median"] is not None]
    cmd = "python perf/bench_sink.py" + (" --quick" if args.quick else "") + (
        f" --reps {args.reps}" if args.reps != 3 else "") + (" --no-throughput" if args.no_throughput else "") + (
        f" --rate {args.rate}" if args.rate != 100_000 else "") + (
        f" --daemon-cmd '{args.daemon_cmd}'" if args.daemon_cmd else "")
    lines = [
        "## bench_sink.py: write-behind",
        "",
        f"Command: `{cmd}`. {results.stamp()}",
        "",
        "| figure | measured | baseline (same run) | ratio |",
        "|---|---:|---:|---:|",
    ]
    if thr is not None:
        lines.append(
            f"| sink into PostgreSQL, position-change rows/s ({thr['rows_per_txn']:,} per transaction, each also updating "
            f"its position, one of {thr['positions_held']:,} held; median of {thr['rounds']}) | {thr['copy_rows_per_s']:,.0f} | "
            f"executemany of the same rows (INSERT + upsert), conversion excluded: {thr['executemany_rows_per_s']:,.0f} | "
            f"{thr['copy_rows_per_s'] / thr['executemany_rows_per_s']:.1f}x |")
    lines += [
        f"| daemon p99 at {args.rate:,} updates/s offered (frames of 100), write-behind to PostgreSQL + Redis: "
        f"{'median of %d runs' % len(on) if len(on) > 1 else 'one run'} ({each(on, 'p99_us')} us) | "
        f"{med(on, 'p99_us'):,.0f} us | sink off, median of the {len(off)} runs around them ({each(off, 'p99_us')} us): {med(off, 'p99_us'):,.0f} us | "
        f"{med(on, 'p99_us') / max(1.0, med(off, 'p99_us')):.2f}x |",
        f"| daemon p50, same runs (medians) | {med(on, 'p50_us'):,.0f} us | {med(off, 'p50_us'):,.0f} us | |",
        f"| sink lag at {args.rate:,} updates/s (journal records not yet in PostgreSQL; sampled every 250 ms): median "
        f"over the runs of each run's median, and the largest | "
        + (f"median {np.median([x['lag_median'] for x in lags]):.0f}, max {max(x['lag_max'] for x in lags)}" if lags
           else "not sampled") + " | | |",
        "",
        "Replied frames (off runs; on runs): " + ", ".join(f"{x['replied']}/{x['frames']}" for x in off) + "; "
        + ", ".join(f"{x['replied']}/{x['frames']}" for x in on) + ". Client send lag p99 (actual - intended send), "
        "µs, off runs: " + ", ".join(f"{x['send_lag_p99_us']:,.0f}" for x in off if x.get("send_lag_p99_us") is not None)
        + "; on runs: " + ", ".join(f"{x['send_lag_p99_us']:,.0f}" for x in on if x.get("send_lag_p99_us") is not None)
        + ". One client process pacing frames on a 2-core machine shared with the daemon, PostgreSQL and Redis: the "
        "client and the servers compete for the same cores, and one run's p99 can be several times another's on a "
        "shared host, so the runs alternate and the ratio is of medians.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        results.write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
