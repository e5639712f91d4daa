"""The Redis and PostgreSQL baselines: their data, how the book is loaded into them, and the frames
the load generator sends them for the same trades as ours.

Redis: one hash per position (``pos:<position id>``, fields portfolio, instrument, qty, cost);
an update is two HINCRBYFLOAT on its hash (qty += signed quantity, cost += signed notional), the
least a fill changes; a frame of k updates is one pipeline of 2k commands. PostgreSQL: a
``positions`` table (one row per position, primary key on the slot number, fillfactor 70 so that
updates stay HOT); an update is one ``UPDATE positions SET quantity = quantity + $1, cost_basis =
cost_basis + $2 ... WHERE slot = $3``; a frame of k updates is one transaction of k UPDATEs (rows
in slot order, so concurrent transactions lock in one order and never deadlock), committed with
synchronous_commit=on. Both do less per update than the daemon (no cash, P&L, exposures, margin,
limits, events or idempotency): the comparison favours them.
Runs on: the harness's main process (loading) and its load-generator processes (sending).
Imports: numpy, asyncpg (PostgreSQL only), perf/workload.py, the standard library.
"""
from __future__ import annotations

import socket

import numpy as np

from workload import BUY, BookSpec, trades

PG_SQL = "UPDATE positions SET quantity = quantity + $1, cost_basis = cost_basis + $2, updated_at = now() WHERE slot = $3"
PG_SCHEMA = """
DROP TABLE IF EXISTS positions;
CREATE TABLE positions (
    slot integer PRIMARY KEY,
    position_id varchar(100) NOT NULL,
    portfolio_id varchar(50) NOT NULL,
    instrument_id varchar(20) NOT NULL,
    quantity double precision NOT NULL,
    cost_basis double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
"""


def resp(*args) -> bytes:
    """One command in RESP (the Redis wire protocol)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _signed(b: BookSpec, pick, kind, qty, px):
    dq = np.where(kind == BUY, qty, -qty)
    return dq, dq * px


# ---------------------------------------------------------------- Redis
def redis_load(port: int, b: BookSpec, chunk: int = 20_000) -> None:
    """HSET every position's hash (pipelined); waits for every reply."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        n = len(b.refs)
        px = b.price_arr[b.ref_inst]
        for k in range(0, n, chunk):
            refs = b.refs[k:k + chunk]
            buf = b"".join(resp("HSET", f"pos:{pos}", "portfolio", pid, "instrument", iid, "qty", q, "cost", q * p)
                           for (pid, pos, iid), q, p in zip(refs, b.opening_qty[k:k + chunk].tolist(),
                                                            px[k:k + chunk].tolist()))
            s.sendall(buf)
            _await_replies(s, len(refs))
        s.sendall(resp("DBSIZE"))
        _await_replies(s, 1)


def redis_command(port: int, *args) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(resp(*args))
        return _await_replies(s, 1)


def _await_replies(s: socket.socket, n: int) -> bytes:
    """Read until n one-line replies (integers, simple strings, errors) have arrived; returns the bytes."""
    got, data = 0, bytearray()
    while got < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk
        got = data.count(b"\r\n")
    if b"-ERR" in data or data.startswith(b"-"):
        raise RuntimeError(f"redis error: {bytes(data[:200])!r}")
    return bytes(data)


def redis_frames(rng, b: BookSpec, n_frames: int, per: int) -> tuple[list[bytes], list[int], list[int]]:
    """(RESP pipelines, updates per frame, CRLFs expected in the replies per frame)."""
    pick, kind, qty, px = trades(rng, b, n_frames * per)
    dq, dc = _signed(b, pick, kind, qty, px)
    frames = []
    for f in range(n_frames):
        parts = []
        for i in range(f * per, (f + 1) * per):
            key = f"pos:{b.refs[int(pick[i])][1]}"
            parts.append(resp("HINCRBYFLOAT", key, "qty", repr(float(dq[i]))))
            parts.append(resp("HINCRBYFLOAT", key, "cost", repr(round(float(dc[i]), 4))))
        frames.append(b"".join(parts))
    return frames, [per] * n_frames, [4 * per] * n_frames  # 2 commands per update, a bulk reply (2 CRLFs) each


# ---------------------------------------------------------------- PostgreSQL
def pg_load(dsn: str, b: BookSpec) -> None:
    """Create the positions table and COPY the book into it."""
    import asyncio

    import asyncpg

    async def load():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(PG_SCHEMA)
            px = b.price_arr[b.ref_inst]
            chunk = 200_000
            for k0 in range(0, len(b.refs), chunk):
                refs = b.refs[k0:k0 + chunk]
                q = b.opening_qty[k0:k0 + chunk].tolist()
                c = (b.opening_qty[k0:k0 + chunk] * px[k0:k0 + chunk]).tolist()
                await conn.copy_records_to_table(
                    "positions", columns=["slot", "position_id", "portfolio_id", "instrument_id", "quantity",
                                          "cost_basis"],
                    records=[(k0 + i, pos, pid, iid, q[i], c[i]) for i, (pid, pos, iid) in enumerate(refs)])
            await conn.execute("VACUUM ANALYZE positions")
        finally:
            await conn.close()
    asyncio.run(load())


def pg_frames(rng, b: BookSpec, n_frames: int, per: int) -> tuple[list[list[tuple]], list[int]]:
    """(per frame: the parameter rows of its UPDATEs, in slot order; updates per frame)."""
    pick, kind, qty, px = trades(rng, b, n_frames * per)
    dq, dc = _signed(b, pick, kind, qty, px)
    frames = []
    for f in range(n_frames):
        sl = slice(f * per, (f + 1) * per)
        frames.append(sorted(zip(dq[sl].tolist(), np.round(dc[sl], 4).tolist(), pick[sl].tolist()),
                             key=lambda r: r[2]))
    return frames, [per] * n_frames
