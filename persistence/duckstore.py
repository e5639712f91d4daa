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

from portfolio_state.kernels.enums import STATUS_NAMES

from .changes import CHANGE_TYPES, COLUMNS, EXPOSURE_TYPES, ID_CHUNK, KEYS, Names
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


def _texts(codes) -> str:
    """A DuckDB list literal of texts, indexed by code + 1."""
    return "[" + ", ".join("'" + str(x) + "'" for x in codes) + "]"


#: id columns of int-id rows (persistence.changes.tables(int_ids=True)): the SQL that gives each,
#: and the join it needs (f: the frame; s, p, k, c: this connection's id tables)
_ID_SQL = {
    "position_id": ("s.v", "JOIN _id_slot s ON s.i = f._slot_id"),
    "portfolio_id": ("p.v", "JOIN _id_pf p ON p.i = f._pf"),
    "instrument_id": ("k.v", "JOIN _id_cat k ON k.t = 0 AND k.i = f._inst"),
    "category": ("c.v", "JOIN _id_cat c ON c.t = f._etype AND c.i = f._cat"),
    "exposure_type": (f"{_texts(EXPOSURE_TYPES)}[f._etype + 1]", ""),
    "status": (f"{_texts(STATUS_NAMES)}[f._status + 1]", ""),
    "change_type": (f"{_texts(CHANGE_TYPES)}[f._change + 1]", ""),
}


def _int_source(table: str) -> str:
    """The SELECT that turns a frame of int-id rows into the table's named columns."""
    cols, joins = [], []
    for c, _ in COLUMNS[table]:
        expr, join = _ID_SQL.get(c, (f"f.{c}", ""))
        cols.append(f"{expr} AS {c}")
        if join:
            joins.append(join)
    order = " ORDER BY f._slot_id" if table == "positions" else ""  # table order: see changes._by_slot
    return f"(SELECT {', '.join(cols)} FROM frame f {' '.join(joins)}{order})"


class DuckDBStore:
    """Int-id rows (``int_ids``): the ids they name are copied once per connection into temporary
    tables (``_id_slot``, ``_id_pf``, ``_id_cat``: index -> id, the ids written so far), and the
    writes join them in SQL, so no Python string is scanned per row: DuckDB converts an object
    column holding the GIL."""

    name = "duckdb"
    timescale = False
    int_ids = True

    def __init__(self, path: str, journal_id: str, checkpoint_mb: int = 256, threads: int = 1):
        self.path, self.journal_id, self.checkpoint_mb, self.threads = path, journal_id, checkpoint_mb, threads
        self.con = None
        self._sent: dict = {}   # id table key -> (the id list, bool per index: the table holds its id)

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
        for sql in ("CREATE OR REPLACE TEMP TABLE _id_slot (i BIGINT, v VARCHAR)",
                    "CREATE OR REPLACE TEMP TABLE _id_pf (i BIGINT, v VARCHAR)",
                    "CREATE OR REPLACE TEMP TABLE _id_cat (t TINYINT, i BIGINT, v VARCHAR)"):
            self.con.execute(sql)
        self._sent = {}
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

    def _ids(self, cols: dict, pend: dict) -> None:
        """Copy into the id tables the ids int-id rows name that they do not hold yet, by chunks
        (the ids a write names, not every id below them: a 10M-slot book's first write copies
        what it writes). A list whose object changed, a catch-up's scratch book, starts its table
        over. ``pend`` collects what this transaction adds: it counts as held after COMMIT."""
        names: Names = cols["_names"]
        wanted = [("slot", "_id_slot", None, names.slots, cols.get("_slot_id")),
                  ("pf", "_id_pf", None, names.portfolios, cols.get("_pf")),
                  (0, "_id_cat", 0, names.categories[0], cols.get("_inst"))]
        if "_etype" in cols:  # the types present, by a count (no sort of every row)
            for t in np.flatnonzero(np.bincount(cols["_etype"])).tolist():
                wanted.append((t, "_id_cat", t, names.categories[t], cols["_cat"][cols["_etype"] == t]))
        for key, tab, t, ids, idx in wanted:
            if idx is None or not len(idx):
                continue
            held, mask = self._sent.get(key, (None, None))
            p = pend.get(key)
            if p is None:
                p = pend[key] = (ids, [], held is not ids)
                if p[2]:
                    self.con.execute(f"DELETE FROM {tab}" + ("" if t is None else f" WHERE t = {int(t)}"))
            new = np.asarray(idx, np.int64)
            if not p[2]:  # drop what the table held before this transaction, before any sort:
                known = new < len(mask)  # a write names mostly ids written before
                known[known] = mask[new[known]]
                new = new[~known]
            new = np.unique(new)
            if p[1]:
                new = np.setdiff1d(new, np.concatenate(p[1]), assume_unique=True)
            if not len(new):
                continue
            p[1].append(new)
            v = names.take(ids, new)
            for lo in range(0, len(new), ID_CHUNK):
                chunk = {"i": new[lo: lo + ID_CHUNK], "v": v[lo: lo + ID_CHUNK]}  # noqa: F841
                self.con.execute(f"INSERT INTO {tab} SELECT {'' if t is None else f'{int(t)}, '}i, v FROM chunk")

    def _held(self, pend: dict) -> None:
        """After COMMIT: what the transaction added is held."""
        for key, (ids, adds, reset) in pend.items():
            _, mask = self._sent.get(key, (None, None))
            if reset or mask is None:
                mask = np.zeros(0, np.bool_)
            top = max(int(a.max()) for a in adds) + 1 if adds else 0
            if top > len(mask):
                grown = np.zeros(max(top, 2 * len(mask)), np.bool_)
                grown[: len(mask)] = mask
                mask = grown
            for a in adds:
                mask[a] = True
            self._sent[key] = (ids, mask)

    async def write(self, tabs: dict[str, dict], seq_hi: int, txn: str = "") -> None:
        con = self.con
        pend: dict = {}  # ids this transaction copies into the id tables
        con.execute("BEGIN TRANSACTION")
        try:
            for table, cols in tabs.items():
                names = [c for c, _ in COLUMNS[table]]
                if "_names" in cols:  # int-id rows: ids joined from this connection's id tables
                    self._ids(cols, pend)
                    frame = {c: np.asarray(v) for c, v in cols.items() if c != "_names"}  # noqa: F841
                    source = _int_source(table) + " AS frame"
                else:
                    frame = _frame(table, cols)  # DuckDB scans the local by name  # noqa: F841
                    source = "frame"
                select = ", ".join(_expr(f"frame.{c}", k) for c, k in COLUMNS[table])
                if table in KEYS:
                    key = KEYS[table]
                    match = " AND ".join(f"{table}.{k} = frame.{k}" for k in key)
                    if table == "cash_flows":  # a fact: keep the first
                        con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {source} "
                                    f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {match})")
                        continue
                    if table == "exposure_limits":  # NaN = cleared
                        con.execute(f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {source} WHERE {match})")
                        con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {source} "
                                    "WHERE NOT isnan(frame.limit_percentage)")
                        continue
                    # upsert: known keys updated in place, new ones inserted (delete + insert left
                    # deleted rows for DuckDB's checkpoints to clean up: 1.7x slower, measured).
                    # A frame's keys are distinct, so when the UPDATE matched every row there is
                    # nothing new, and the insert's anti-join (a second scan of the table) is skipped
                    sets = ", ".join(f"{c} = {_expr(f'frame.{c}', k)}" for c, k in COLUMNS[table] if c not in key)
                    if sets:
                        updated = con.execute(f"UPDATE {table} SET {sets} FROM {source} WHERE {match}").fetchone()[0]
                        if updated == len(next(iter(frame.values()))):
                            continue
                    con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {source} "
                                f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {match})")
                    continue
                con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {source}")
            con.execute("DELETE FROM sink_watermark WHERE journal_id = ?", [self.journal_id])
            con.execute("INSERT INTO sink_watermark (journal_id, seq, last_txn) VALUES (?, ?, ?)",
                        [self.journal_id, seq_hi, txn])
            con.execute("COMMIT")
            self._held(pend)
        except Exception:
            con.execute("ROLLBACK")
            raise

    async def read(self, table: str, where: str = "") -> list[dict]:
        cur = self.con.execute(f"SELECT * FROM {table} {where}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
