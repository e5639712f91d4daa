"""The PostgreSQL command side as a takeover reads it, and the watermark it records afterwards.

Owns: ``CommandSide`` (the rows a new host loads, in the book's units: quantities
int micro-units, money int cents of the row's currency, times int ns since the
epoch), ``read_command_side(dsn)`` (one read-only REPEATABLE READ transaction, so
the rows are one consistent snapshot even while another writer is active, in a
deterministic order) and ``record_loaded(dsn, journal_id, seq)``. Failures raise
``CommandSideError`` with what to check; a password in the DSN is never printed.
Runs on: the main thread at start-up, before the daemon serves (a short asyncio
loop of its own). Imports: asyncpg, stdlib.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import re
from dataclasses import dataclass, field
from decimal import Decimal

_EPOCH = _dt.datetime(1970, 1, 1)

#: what a takeover reads, per schema version that brought the table (pg_schema.MIGRATIONS)
QUERIES = {
    "portfolios": (2, "SELECT portfolio_id, portfolio_name, base_currency, portfolio_type, inception_date, status, "
                      "benchmark, instrument_limit FROM portfolios ORDER BY portfolio_id"),
    "instruments": (2, "SELECT instrument_id, currency, sector, country, asset_class, multiplier, long_initial, "
                       "long_maintenance, short_initial, short_maintenance FROM instruments ORDER BY instrument_id"),
    "limits": (2, "SELECT portfolio_id, exposure_type, category, limit_percentage FROM exposure_limits "
                  "ORDER BY portfolio_id, exposure_type, category"),
    "positions": (1, "SELECT position_id, portfolio_id, instrument_id, quantity, cost_basis, status, last_updated "
                     "FROM positions ORDER BY portfolio_id, position_id"),
    "cash": (2, "SELECT portfolio_id, currency, amount FROM cash_balances ORDER BY portfolio_id, currency"),
    "prices": (4, "SELECT instrument_id, price FROM instrument_prices ORDER BY instrument_id"),
    "fx": (4, "SELECT currency, rate FROM fx_rates ORDER BY currency"),
    "watermarks": (2, "SELECT journal_id, seq FROM sink_watermark ORDER BY journal_id"),
}


class CommandSideError(RuntimeError):
    """PostgreSQL cannot give a takeover its rows (unreachable, no schema, ...)."""


@dataclass
class CommandSide:
    schema_version: int = 0
    portfolios: list[dict] = field(default_factory=list)
    instruments: list[dict] = field(default_factory=list)
    limits: list[dict] = field(default_factory=list)
    positions: list[dict] = field(default_factory=list)   # quantity micro-units, cost_basis base cents, last_updated ns
    cash: list[dict] = field(default_factory=list)        # amount: cents of the row's currency
    prices: list[dict] = field(default_factory=list)      # price: float, units of the instrument's currency
    fx: list[dict] = field(default_factory=list)          # rate: float, one unit in the pivot currency
    watermarks: list[dict] = field(default_factory=list)  # which journals wrote these rows, up to which record


def redact(dsn: str) -> str:
    """The DSN without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def _scaled(x: Decimal | None, places: int) -> int:
    """An exact numeric(15, places) as an integer count of 10**-places units."""
    return 0 if x is None else int(x.scaleb(places).to_integral_value())


def _ns(t: _dt.datetime | None) -> int | None:
    return None if t is None else (t - _EPOCH) // _dt.timedelta(microseconds=1) * 1000


def _convert(name: str, row: dict) -> dict:
    if name == "positions":
        row["quantity"] = _scaled(row["quantity"], 6)
        row["cost_basis"] = _scaled(row["cost_basis"], 2)
        row["last_updated"] = _ns(row["last_updated"])
    elif name == "cash":
        row["amount"] = _scaled(row["amount"], 2)
    elif name == "portfolios" and row["inception_date"] is not None:
        row["inception_date"] = row["inception_date"].isoformat()
    return row


async def _read(dsn: str, timeout: float) -> CommandSide:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=600)
    except Exception as e:
        raise CommandSideError(f"PostgreSQL unreachable at {redact(dsn)}: {type(e).__name__}: {e}") from None
    try:
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        except asyncpg.UndefinedTableError:
            raise CommandSideError(f"{redact(dsn)} holds no command side (no schema_migrations table): is "
                                   "sink.postgres_dsn the database the old host wrote?") from None
        side = CommandSide(schema_version=max(versions, default=0))
        if side.schema_version < 2:
            raise CommandSideError(f"{redact(dsn)} is at schema version {side.schema_version}: a takeover needs "
                                   "the service tables of version 2")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for name, (since, sql) in QUERIES.items():
                if side.schema_version >= since:
                    setattr(side, name, [_convert(name, dict(r)) for r in await conn.fetch(sql)])
        return side
    except CommandSideError:
        raise
    except Exception as e:
        raise CommandSideError(f"reading the command side from {redact(dsn)} failed: {type(e).__name__}: {e}") from None
    finally:
        conn.terminate()


def read_command_side(dsn: str, timeout: float = 10.0) -> CommandSide:
    """Every row a takeover loads, in a deterministic order. Raises CommandSideError."""
    if not dsn:
        raise CommandSideError("sink.postgres_dsn is empty: a takeover reads the old host's PostgreSQL")
    return asyncio.run(_read(dsn, timeout))


async def _record(dsn: str, journal_id: str, seq: int, timeout: float) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as e:
        raise CommandSideError(f"PostgreSQL unreachable at {redact(dsn)}: {type(e).__name__}: {e}") from None
    try:
        await conn.execute("INSERT INTO sink_watermark (journal_id, seq, last_txn) VALUES ($1, $2, 'takeover') "
                           "ON CONFLICT (journal_id) DO UPDATE SET seq = EXCLUDED.seq, last_txn = EXCLUDED.last_txn, "
                           "updated_at = now()", journal_id, seq)
    except Exception as e:
        raise CommandSideError(f"recording the takeover's watermark in {redact(dsn)} failed: "
                               f"{type(e).__name__}: {e}") from None
    finally:
        conn.terminate()


def record_loaded(dsn: str, journal_id: str, seq: int, timeout: float = 10.0) -> None:
    """The store holds this journal's records up to ``seq`` (they were loaded from it): the
    write-behind starts after them instead of copying the book back. Raises CommandSideError."""
    asyncio.run(_record(dsn, journal_id, seq, timeout))
