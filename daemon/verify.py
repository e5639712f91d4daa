"""``pstate verify``: compare the store and the Redis cache with the journal (and a running daemon).

Owns: ``verify(settings, command)``. What it compares:
 * the store's command side (positions, cash_balances, portfolios, instruments,
   exposure_limits, and the instrument_prices / fx_rates a takeover replays) with
   the state rebuilt from checkpoint + journal *at the watermark of those keyed
   tables* (``state_watermark``; a
   scratch engine, the same capture as the live path), so a
   store that is behind is not "different", only behind (its lag is reported);
 * the Redis keys (portfolio_state, margin, positions) with the state at the end
   of the journal;
 * with ``--command``, a running daemon's memory (portfolio states) with the
   state at the end of the journal, when the daemon has not moved on meanwhile.
Every difference is listed; the exit status is 1 if there is any.
Weights match within sink.weight_epsilon (what the sink rewrites on). While the
daemon runs, market_value / unrealized_pnl of the positions table may trail
memory by sink.revalue_interval_ms, instrument_prices / fx_rates by
sink.state_interval_ms, and Redis by its cadences: verify after a clean stop
(everything drained exactly) to demand equality.
An embedded DuckDB file is locked by its daemon: verify it when the daemon is stopped.
Runs on: the main thread of the ``pstate verify`` process. Imports: daemon, persistence.
"""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import numpy as np

from portfolio_state.persistence.changes import COLUMNS, KEYS, tables

from .capture import ChangeCapture
from .config import Settings
from .recovery import dirs, engine_at
from .writebehind import journal_id, make_store

COMPARED = ("positions", "cash_balances", "portfolios", "instruments", "exposure_limits", "instrument_prices",
            "fx_rates")


def _norm(value, kind: str):
    if value is None:
        return None
    if kind == "cents":
        return Decimal(int(value)).scaleb(-2) if not isinstance(value, Decimal) else value.quantize(Decimal("0.01"))
    if kind == "micro":
        return Decimal(int(value)).scaleb(-6) if not isinstance(value, Decimal) else value.quantize(Decimal("0.000001"))
    if kind == "f8":
        v = float(value)
        return None if v != v else round(v, 9)
    if kind == "date":
        return str(value)[:10]
    return value


def _expected_rows(table: str, cols: dict) -> dict:
    kinds = dict(COLUMNS[table])
    key = KEYS[table]
    out = {}
    n = len(next(iter(cols.values())))
    for j in range(n):
        row = {c: _norm(v.item() if isinstance(v := cols[c][j], np.generic) else v, k)
               for c, k in kinds.items() if k != "ts"}
        if table == "exposure_limits" and row["limit_percentage"] is None:
            continue
        out[tuple(row[k] for k in key)] = row
    return out


def _store_rows(table: str, rows: list[dict]) -> dict:
    kinds = dict(COLUMNS[table])
    out = {}
    for r in rows:
        row = {c: _norm(r.get(c), k) for c, k in kinds.items() if k != "ts"}
        out[tuple(row[k] for k in KEYS[table])] = row
    return out


def _diff(table: str, want: dict, got: dict, out: list[str], weight_eps: float = 0.0) -> None:
    for key, w in want.items():
        g = got.get(key)
        if g is None:
            out.append(f"{table} {key}: missing from the store")
            continue
        for c, v in w.items():
            if c == "weight" and g.get(c) is not None and v is not None and abs(g[c] - v) <= weight_eps:
                continue  # weights are rewritten when they move more than sink.weight_epsilon
            if g.get(c) != v:
                out.append(f"{table} {key}: {c} is {g.get(c)!r} in the store, {v!r} in the journal")
    for key in got.keys() - want.keys():
        out.append(f"{table} {key}: in the store, not in the journal")


def _full(engine) -> dict:
    cap = ChangeCapture(engine.book, redis_positions_per_flush=1 << 30)
    cap.redis_dirty[:] = True
    return cap, cap.take(engine.last_seq, time.time_ns(), full=True)


async def _check_store(settings: Settings, out: list[str], summary: dict) -> None:
    store = make_store(settings, journal_id(settings.journal.data_dir))
    await store.open()
    try:
        # the compared tables are the keyed ones: PostgreSQL commits them just before the appended
        # ones, so after a crash between the two they hold a later state (ADR 0019)
        watermark = await store.state_watermark()
        summary["store"] = store.name
        summary["store_watermark"] = watermark
        engine = engine_at(settings, max(watermark, 0))
        if engine is None:
            out.append(f"the journal can no longer rebuild the state at the store's watermark {watermark}")
            return
        _, cs = _full(engine)
        want = tables([cs])
        for t in COMPARED:
            _diff(t, _expected_rows(t, want[t]) if t in want else {}, _store_rows(t, await store.read(t)), out,
                  settings.sink.weight_epsilon)
    finally:
        await store.close()


async def _check_redis(settings: Settings, engine, out: list[str]) -> None:
    from portfolio_state.persistence.rediscache import RedisCache
    import redis.asyncio as aioredis

    cfg = settings.sink
    _, cs = _full(engine)
    expected = RedisCache(cfg.redis_url, cfg.redis_prefix)
    expected.stage(cs)
    r = aioredis.from_url(cfg.redis_url)
    try:
        for key, (value, _) in expected.pending.items():
            kind = key[len(cfg.redis_prefix):].split(":")[0]
            if kind not in ("portfolio_state", "margin", "positions"):
                continue
            got = await r.get(key)
            if got is None:
                out.append(f"redis {key}: missing (expired or never written)")
                continue
            w, g = json.loads(value), json.loads(got)
            if kind == "positions":
                w = {p["position_id"]: (p["quantity"], p["market_value"], p["status"]) for p in w}
                g = {p["position_id"]: (p["quantity"], p["market_value"], p["status"]) for p in g}
            else:
                w.pop("last_updated", None)
                g.pop("last_updated", None)
            if w != g:
                out.append(f"redis {key}: {g} in Redis, {w} in the journal")
    finally:
        await r.aclose()


def verify(settings: Settings, command: str | None = None) -> tuple[list[str], dict]:
    """(differences, summary)."""
    out: list[str] = []
    summary: dict = {}
    jdir, _ = dirs(settings)
    if settings.sink.backend != "none":
        asyncio.run(_check_store(settings, out, summary))
    end = engine_at(settings, _last_seq(jdir, settings))
    summary["journal_seq"] = end.last_seq if end is not None else None
    if settings.sink.redis_url and end is not None:
        asyncio.run(_check_redis(settings, end, out))
    if command and end is not None:
        _check_daemon(command, end, out, summary)
    return out, summary


def _last_seq(jdir: str, settings: Settings) -> int:
    """The journal's last sequence, or the newest checkpoint's when every segment was retired."""
    from portfolio_state.persistence import checkpoint as ckpt
    from portfolio_state.persistence.journal import last_seq

    last = last_seq(jdir, repair=False)
    if last == 0:
        cps = ckpt.list_checkpoints(dirs(settings)[1])
        last = cps[-1][0] if cps else 0
    return last


def _check_daemon(command: str, engine, out: list[str], summary: dict) -> None:
    from portfolio_state.transport.client import Client

    from . import queries

    with Client(command, timeout=5.0) as c:
        seq = c.metrics()["journal"]["last_seq"]
        summary["daemon_seq"] = seq
        if seq != engine.last_seq:
            summary["daemon"] = "moved on since the journal was read: memory not compared"
            return
        for pid in engine.book.portfolio_ids.ids:
            want = queries.state(engine.book, pid)
            got = c.state(pid, include_positions=False, include_exposures=False).portfolio_state
            for k, v in want.items():
                if getattr(got, k) != v:
                    out.append(f"memory {pid}: {k} is {getattr(got, k)!r} in the daemon, {v!r} in the journal")
