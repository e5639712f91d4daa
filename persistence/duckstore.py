"""Embedded store: the same tables in a DuckDB file, so the default daemon needs no server.

Owns: ``DuckDBStore``, the ``PostgresStore`` interface (open, watermark, write,
read, close) over one DuckDB file: columns go in as NumPy arrays (DuckDB scans
them in place), converted in SQL (cents -> DECIMAL(15,2) exactly), upserts as an UPDATE
joined on the key, then an INSERT of the keys it did not find (skipped when it
found them all; this writer never inserts a key the table holds, so keys stay
unique without an index), the watermark in the same transaction. No partitions or
secondary indexes: DuckDB prunes by its own min/max zone maps.
Runs on: the write-behind thread (DuckDB calls block that thread's loop, not the
engine's). Imports: duckdb, numpy, persistence.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from .changes import COLUMNS, KEYS
from .pg_schema import COMMAND_SIDE, MARKET_TABLES, SERVICE_TABLES, TS_TABLES

log = logging.getLogger("pstate.sink.duckdb")


def _ddl() -> list[str]:
    """The PostgreSQL DDL, minus what DuckDB does not have (extensions, partitions, indexes);
    uniqueness is kept by the writer (it inserts only keys the table does not hold). FLOAT is PostgreSQL's double
    precision but DuckDB's 4-byte REAL: spelled DOUBLE here."""
    out = []
    for sql in COMMAND_SIDE + SERVICE_TABLES + MARKET_TABLES:
        if sql.startswith(("CREATE EXTENSION", "CREATE INDEX")):
            continue
        sql = sql.replace("NOT NULL UNIQUE", "NOT NULL").replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
        sql = re.sub(r"\bPRIMARY KEY \(([^)]*)\)", "", sql).replace(",\n        )", ")")
        if sql.startswith("ALTER TABLE portfolios ADD COLUMN"):
            sql = sql.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS")
        out.append(re.sub(r"\bFLOAT\b", "DOUBLE", sql))
    for name, (cols, _, _, _) in TS_TABLES.items():
        out.append(re.sub(r"\bFLOAT\b", "DOUBLE", f"CREATE TABLE IF NOT EXISTS {name} ({cols})"))
    return out


def _expr(col: str, kind: str) -> str:
    return {
        "f8": f"CASE WHEN isnan({col}) THEN NULL ELSE {col} END",
        "ts": f"CASE WHEN {col} = 0 THEN NULL ELSE make_timestamp(({col} // 1000)::BIGINT) END",
        "cents": f"({col}::DECIMAL(18, 0) * 0.01::DECIMAL(3, 2))::DECIMAL(15, 2)",
        "micro": f"({col}::DECIMAL(18, 0) * 0.000001::DECIMAL(7, 6))::DECIMAL(15, 6)",
        "date": f"CAST({col} AS DATE)",
    }.get(kind, col)


def _frame(table: str, cols: dict) -> dict[str, np.ndarray]:
    out = {}
    for c, k in COLUMNS[table]:
        v = cols[c]
        if k in ("str", "date"):  # no copy of an object column: a copy holds the GIL for all of it
            out[c] = v if isinstance(v, np.ndarray) and v.dtype == object else np.array(v, dtype=object)
        elif k == "f8":
            out[c] = np.asarray(v, np.float64)
        else:
            out[c] = np.asarray(v, np.int64)
    return out


class DuckDBStore:
    name = "duckdb"
    timescale = False

    def __init__(self, path: str, journal_id: str, checkpoint_mb: int = 256, threads: int = 1):
        self.path, self.journal_id, self.checkpoint_mb, self.threads = path, journal_id, checkpoint_mb, threads
        self.con = None

    async def open(self) -> int:
        import duckdb

        self.con = duckdb.connect(self.path)
        # DuckDB checkpoints its WAL into the file every 16 MiB by default: half of this store's
        # time at 100,000 updates/s (measured); a larger WAL costs a longer replay when it opens
        self.con.execute(f"SET checkpoint_threshold = '{int(self.checkpoint_mb)}MB'")
        if self.threads > 0:  # DuckDB's default (every core) also takes the engine's core on a small host
            self.con.execute(f"SET threads = {int(self.threads)}")
        for sql in _ddl():
            self.con.execute(sql)
        log.info("embedded store %s (DuckDB): query side and command side tables", self.path)
        return await self.watermark()

    async def watermark(self) -> int:
        r = self.con.execute("SELECT seq FROM sink_watermark WHERE journal_id = ?", [self.journal_id]).fetchone()
        return int(r[0]) if r else -1

    async def state_watermark(self) -> int:
        """The journal sequence the keyed tables hold (one transaction writes every table here)."""
        return await self.watermark()

    async def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    async def last_txn(self) -> str | None:
        r = self.con.execute("SELECT last_txn FROM sink_watermark WHERE journal_id = ?", [self.journal_id]).fetchone()
        return r[0] if r else None

    async def write(self, tabs: dict[str, dict], seq_hi: int, txn: str = "") -> None:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            for table, cols in tabs.items():
                frame = _frame(table, cols)  # DuckDB scans the local by name
                names = [c for c, _ in COLUMNS[table]]
                select = ", ".join(_expr(f"frame.{c}", k) for c, k in COLUMNS[table])
                if table in KEYS:
                    key = KEYS[table]
                    match = " AND ".join(f"{table}.{k} = frame.{k}" for k in key)
                    if table == "cash_flows":  # a fact: keep the first
                        con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM frame "
                                    f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {match})")
                        continue
                    if table == "exposure_limits":  # NaN = cleared
                        con.execute(f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM frame WHERE {match})")
                        con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM frame "
                                    "WHERE NOT isnan(frame.limit_percentage)")
                        continue
                    # upsert: known keys updated in place, new ones inserted (delete + insert left
                    # deleted rows for DuckDB's checkpoints to clean up: 1.7x slower, measured).
                    # A frame's keys are distinct, so when the UPDATE matched every row there is
                    # nothing new, and the insert's anti-join (a second scan of the table) is skipped
                    sets = ", ".join(f"{c} = {_expr(f'frame.{c}', k)}" for c, k in COLUMNS[table] if c not in key)
                    if sets:
                        updated = con.execute(f"UPDATE {table} SET {sets} FROM frame WHERE {match}").fetchone()[0]
                        if updated == len(frame[key[0]]):
                            continue
                    con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM frame "
                                f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {match})")
                    continue
                con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM frame")
            con.execute("DELETE FROM sink_watermark WHERE journal_id = ?", [self.journal_id])
            con.execute("INSERT INTO sink_watermark (journal_id, seq, last_txn) VALUES (?, ?, ?)",
                        [self.journal_id, seq_hi, txn])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    async def read(self, table: str, where: str = "") -> list[dict]:
        cur = self.con.execute(f"SELECT * FROM {table} {where}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
