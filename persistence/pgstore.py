"""PostgreSQL store: migrations at open; each write is two transactions, each with its watermark.

Owns: ``PostgresStore`` (asyncpg): ``open`` (connect twice, advisory-locked
migrations, TimescaleDB detection logged, native partitions ahead), ``watermark``,
``write``, ``read`` (a table as dicts, for verify and takeover).
``write`` splits a hand-off's tables in two groups, written at the same time on two
connections (two server backends, so PostgreSQL works on two cores; ADR 0019):
 - the keyed tables (``KEYS``: upserts, and cash flows inserted once), with the
   journal sequence in ``sink_state_watermark``;
 - the appended tables (the time series, margin requirements), with it in
   ``sink_watermark``.
The keyed group commits first, so its watermark is never behind the appended one.
A crash between the two commits leaves the keyed tables ahead; the sink resumes
from ``sink_watermark`` (``watermark``) and writes the keyed rows again, which
changes nothing in the end, while the appended rows go exactly once.
Every table's rows go by binary COPY, encoded from the NumPy columns by
persistence/pgcopy.py: the appended time-series tables of text, float and
timestamp columns straight into the table, every other one into a temporary
staging table of raw int64 / float8 / text columns, then one INSERT .. SELECT (or
MERGE) converts them exactly (cents to numeric, ns to timestamp) into the table,
upserting where the table has a key.
Runs on: the write-behind thread's asyncio loop. Imports: asyncpg, numpy, persistence.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import io
import logging

import numpy as np

from . import pg_schema, pgcopy
from .changes import COLUMNS, KEYS

log = logging.getLogger("pstate.sink.postgres")

_LOCK = 0x70737461  # advisory lock id for migrations ("psta")
_EPOCH = _dt.datetime(1970, 1, 1)


#: how each column kind travels (binary COPY into a staging table) and becomes its column type in SQL
_STAGE = {"str": ("TEXT", pgcopy.TEXT), "date": ("TEXT", pgcopy.TEXT), "f8": ("FLOAT8", pgcopy.FLOAT8),
          "i8": ("BIGINT", pgcopy.INT8), "ts": ("BIGINT", pgcopy.INT8), "cents": ("BIGINT", pgcopy.INT8),
          "micro": ("BIGINT", pgcopy.INT8)}


def _convert(col: str, kind: str) -> str:
    """SQL turning a staged column into its table's type, exactly: int64 cents and micro-units
    into numeric by a numeric product, int64 ns into a timestamp by whole microseconds."""
    return {
        "ts": f"CASE WHEN {col} = 0 THEN NULL ELSE timestamp '1970-01-01' + ({col} / 1000) * interval '1 microsecond' END",
        "cents": f"({col} * 0.01)::numeric(15, 2)",
        "micro": f"({col} * 0.000001)::numeric(15, 6)",
        "date": f"{col}::date",
    }.get(kind, col)


def copy_data(table: str, cols: dict) -> bytes:
    """A table's columns as a binary COPY stream for its staging table."""
    return pgcopy.encode([(_STAGE[k][1], cols[c]) for c, k in COLUMNS[table]])


#: column kinds binary COPY can write in their table's own type (TEXT/VARCHAR, FLOAT, TIMESTAMP)
_DIRECT = {"str": pgcopy.TEXT, "f8": pgcopy.FLOAT8, "ts": pgcopy.TIMESTAMP}
#: appended, never upserted, every column in a _DIRECT kind: COPY goes straight into the table
#: (into its partitions or chunks), no staging table and no INSERT .. SELECT. COPY inserts rows in
#: batches where an INSERT .. SELECT inserts them one by one: 50,000 position-change rows took
#: 293 ms through the staging table and the INSERT, 193-202 ms straight (perf/bench_sink.py's workload).
DIRECT_TABLES = frozenset(t for t, cols in COLUMNS.items()
                          if t not in KEYS and all(k in _DIRECT for _, k in cols))


def direct_data(table: str, cols: dict) -> bytes:
    """A table's columns as a binary COPY stream in the table's own column types."""
    return pgcopy.encode([(_DIRECT[k], cols[c]) for c, k in COLUMNS[table]])


class PostgresStore:
    name = "postgres"

    def __init__(self, dsn: str, journal_id: str, partitions_ahead: int = 3, connect_timeout: float = 5.0):
        self.dsn, self.journal_id, self.ahead, self.timeout = dsn, journal_id, partitions_ahead, connect_timeout
        self.conn = None         # the appended tables, the watermark, migrations, reads
        self.keyed = None        # the keyed tables and their watermark
        self.keyed_seq = -1      # the keyed tables' watermark
        self.timescale = False
        self.merge = False  # PostgreSQL 15+: upserts by MERGE (a join), else INSERT .. ON CONFLICT
        self._parts: set[str] = set()

    # ------------------------------------------------------------------ open
    async def open(self) -> int:
        try:
            return await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> int:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn, timeout=self.timeout, command_timeout=60)
        self.keyed = await asyncpg.connect(self.dsn, timeout=self.timeout, command_timeout=60)
        for c in (self.conn, self.keyed):
            # the journal, not PostgreSQL, is what makes an update durable: a commit need not wait for
            # PostgreSQL's WAL flush. A server crash loses whole transactions, rows and watermark
            # together, and the sink copies them again from the journal (ADR 0009)
            await c.execute("SET synchronous_commit = off")
        self.merge = self.conn.get_server_version().major >= 15
        await self.migrate()
        for c in (self.conn, self.keyed):
            await self._staging(c)
        await self.ensure_partitions(_dt.datetime.utcnow(), _dt.datetime.utcnow())
        v = await self.conn.fetchval("SELECT seq FROM sink_state_watermark WHERE journal_id = $1", self.journal_id)
        self.keyed_seq = -1 if v is None else int(v)
        return await self.watermark()

    async def migrate(self) -> None:
        c = self.conn
        async with c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                            "name TEXT NOT NULL, applied_at TIMESTAMP DEFAULT now())")
            applied = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
            available = await c.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
            installed = await c.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            if 3 not in applied:
                self.timescale = bool(available)
            else:
                self.timescale = bool(installed)
            (log.info if not self._parts else log.debug)("timescaledb %s: time series are %s", "available" if self.timescale else "not available",
                     "hypertables (1 day / 1 hour chunks, 8 space partitions)" if self.timescale
                     else "natively range-partitioned (1 day / 1 hour partitions, created ahead)")
            for version, name, statements in pg_schema.MIGRATIONS:
                if version in applied:
                    continue
                for sql in statements(self.timescale):
                    await c.execute(sql)
                await c.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
                log.info("migration %d applied: %s", version, name)

    async def _staging(self, conn) -> None:
        for t in COLUMNS:
            if t == "exposure_limits" or t in DIRECT_TABLES:
                continue
            cols = ", ".join(f"{c} {_STAGE[k][0]}" for c, k in COLUMNS[t])
            await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{t} ({cols}) ON COMMIT DELETE ROWS")

    async def ensure_partitions(self, lo: _dt.datetime, hi: _dt.datetime) -> None:
        """Native partitions covering [lo, hi] and `ahead` intervals past now (a bounded range:
        a row outside it goes to the table's DEFAULT partition)."""
        if self.timescale:
            return
        now = _dt.datetime.utcnow()
        for table in pg_schema.TS_TABLES:
            step = pg_schema.step(table)
            lo_t = max(lo, now - 7 * step)
            hi_t = min(max(hi, now) + self.ahead * step, now + (self.ahead + 1) * step)
            t = lo_t
            while t <= hi_t:
                for sql in pg_schema.partition_ddl(table, t, self._parts):
                    try:
                        async with self.conn.transaction():
                            await self.conn.execute(sql)
                    except Exception as e:  # rows already in DEFAULT for that range: they stay there
                        log.warning("partition not created (%s): %s", sql.split(" PARTITION")[0], e)
                self._parts.add(pg_schema._bounds(table, t)[0])
                t += step

    async def watermark(self) -> int:
        """The journal sequence every table covers (the appended ones'; the keyed ones may be ahead)."""
        v = await self.conn.fetchval("SELECT seq FROM sink_watermark WHERE journal_id = $1", self.journal_id)
        return int(v) if v is not None else -1

    async def state_watermark(self) -> int:
        """The journal sequence the keyed tables hold the state of: theirs, or the appended tables'
        where theirs is behind (a takeover records only that one). It never goes back: a write
        the keyed tables already cover leaves them alone."""
        v = await self.conn.fetchval("SELECT seq FROM sink_state_watermark WHERE journal_id = $1", self.journal_id)
        return max(int(v) if v is not None else -1, await self.watermark())

    async def close(self) -> None:
        for name in ("keyed", "conn"):
            c = getattr(self, name)
            if c is not None:
                try:
                    await c.close(timeout=2)
                except Exception:
                    c.terminate()
                setattr(self, name, None)

    # ------------------------------------------------------------------ write
    async def last_txn(self) -> str | None:
        return await self.conn.fetchval("SELECT last_txn FROM sink_watermark WHERE journal_id = $1", self.journal_id)

    async def write(self, tabs: dict[str, dict], seq_hi: int, txn: str = "") -> None:
        stamps = [np.asarray(tabs[t]["timestamp"]) for t in pg_schema.TS_TABLES if t in tabs]
        stamps = [s[s > 0] for s in stamps if len(s)]
        if stamps and not self.timescale:
            lo, hi = min(int(s.min()) for s in stamps if len(s)), max(int(s.max()) for s in stamps if len(s))
            await self.ensure_partitions(_EPOCH + _dt.timedelta(microseconds=lo // 1000),
                                         _EPOCH + _dt.timedelta(microseconds=hi // 1000))
        # after a crash between the two commits the keyed tables are ahead: the resume's writes below
        # their watermark would only put older values back, so they leave them alone. A write AT it
        # goes in: a hand-off holds the state as of its seq_hi, and one that covers no new record
        # (a snapshot, the exact pass at shutdown) carries rows the earlier one did not
        keyed = {t: cols for t, cols in tabs.items() if t in KEYS} if seq_hi >= self.keyed_seq else None
        appended = {t: cols for t, cols in tabs.items() if t not in KEYS}
        tk, ta = self.keyed.transaction(), self.conn.transaction()
        done = 0  # transactions committed
        try:
            await tk.start()
            await ta.start()
            got = await asyncio.gather(self._tables(self.keyed, keyed or {}), self._tables(self.conn, appended),
                                       return_exceptions=True)  # both finish before either rolls back
            for g in got:
                if isinstance(g, BaseException):
                    raise g
            if keyed is not None:
                await self.keyed.execute("INSERT INTO sink_state_watermark (journal_id, seq) VALUES ($1, $2) ON "
                                         "CONFLICT (journal_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()",
                                         self.journal_id, seq_hi)
            await self.conn.execute("INSERT INTO sink_watermark (journal_id, seq, last_txn) VALUES ($1, $2, $3) ON "
                                    "CONFLICT (journal_id) DO UPDATE SET seq = EXCLUDED.seq, last_txn = "
                                    "EXCLUDED.last_txn, updated_at = now()", self.journal_id, seq_hi, txn)
            await tk.commit()  # the keyed group first: a crash before the next commit only repeats upserts
            done = 1
            if keyed is not None:
                self.keyed_seq = seq_hi
            await ta.commit()
            done = 2
        finally:
            for tr in (tk, ta)[done:]:
                with contextlib.suppress(Exception):  # not started, or a broken connection: the sink reconnects
                    await tr.rollback()

    async def _tables(self, c, tabs: dict[str, dict]) -> None:
        """One group's tables, inside the caller's transaction on ``c``."""
        for table, cols in tabs.items():
            names = [n for n, _ in COLUMNS[table]]
            if table == "exposure_limits":
                await self._limits(c, cols)
                continue
            n = len(cols[names[0]])
            if not n:
                continue
            if table in DIRECT_TABLES:
                await c.copy_to_table(table, source=io.BytesIO(direct_data(table, cols)), columns=names,
                                      format="binary")
                continue
            await c.copy_to_table(f"stage_{table}", source=io.BytesIO(copy_data(table, cols)), columns=names,
                                  format="binary")
            select = ", ".join(f"{_convert(n_, k)} AS {n_}" for n_, k in COLUMNS[table])
            insert = f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM stage_{table}"
            if table not in KEYS:
                await c.execute(insert)
                continue
            key = ", ".join(KEYS[table])
            if table == "cash_flows":  # a cash flow is a fact: never rewritten
                await c.execute(f"{insert} ON CONFLICT ({key}) DO NOTHING")
                continue
            stamp = "updated_at = now()" if table != "positions" else "last_updated = {}.last_updated"
            if self.merge:  # the staged rows joined to the table: 8% faster than ON CONFLICT's probes
                on = " AND ".join(f"t.{k} = s.{k}" for k in KEYS[table])
                sets = [f"{n_} = s.{n_}" for n_ in names if n_ not in KEYS[table]] + [stamp.format("s")]
                await c.execute(f"MERGE INTO {table} t USING (SELECT {select} FROM stage_{table}) s ON {on} "
                                f"WHEN MATCHED THEN UPDATE SET {', '.join(dict.fromkeys(sets))} "
                                f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
                                f"VALUES ({', '.join('s.' + n_ for n_ in names)})")
                continue
            sets = [f"{n_} = EXCLUDED.{n_}" for n_ in names if n_ not in KEYS[table]] + [stamp.format("EXCLUDED")]
            await c.execute(f"{insert} ON CONFLICT ({key}) DO UPDATE SET {', '.join(dict.fromkeys(sets))}")

    async def _limits(self, c, cols: dict) -> None:
        for pid, typ, cat, lim in zip(cols["portfolio_id"], cols["exposure_type"], cols["category"],
                                      np.asarray(cols["limit_percentage"]).tolist()):
            if lim != lim:
                await c.execute("DELETE FROM exposure_limits WHERE portfolio_id = $1 AND exposure_type = $2 "
                                "AND category = $3", pid, typ, cat)
            else:
                await c.execute("INSERT INTO exposure_limits (portfolio_id, exposure_type, category, limit_percentage) "
                                "VALUES ($1, $2, $3, $4) ON CONFLICT (portfolio_id, exposure_type, category) DO UPDATE "
                                "SET limit_percentage = EXCLUDED.limit_percentage, updated_at = now()",
                                pid, typ, cat, lim)

    # ------------------------------------------------------------------ read
    async def read(self, table: str, where: str = "") -> list[dict]:
        return [dict(r) for r in await self.conn.fetch(f"SELECT * FROM {table} {where}")]
