"""What the engine hands to the write-behind thread: one ``ChangeSet`` per hand-off, and its rows.

Owns: ``ChangeSet`` (committed changes covering journal records seq_lo..seq_hi,
as NumPy columns: built on the engine thread, read-only afterwards), ``Names``
(turns the int columns that stand for ids into ids, on the reading thread) and
the row builders every store shares (``position_rows``,
``state_rows``, ...), so PostgreSQL, DuckDB and Redis write the same numbers.
Runs on: built on the engine thread, read on the write-behind thread. Imports: numpy, kernels.enums.

Ids leave the engine as ints (ADR 0020). The capture's position and exposure rows
carry book slots, portfolio, instrument and category indexes and the ``Names`` of
their book; the write-behind thread turns them into ids after it has merged and
deduplicated a run of hand-offs, and only for the rows it writes. A NumPy gather
of an object array holds the GIL for its whole length (about 80 ns a row: every
id's reference count is a cache miss), and the engine waits out whatever another
thread holds; so these gathers go in chunks, with a chance to switch between them.

Units in a ChangeSet are the book's: quantities micro-units, money base cents
(int64), weights and percentages fractions. ``tables`` gives the spec's Float
columns as floats in currency units and its Decimal columns as integer cents /
micro-units (kinds in ``COLUMNS``), which each store converts exactly, so
numeric(15,2) receives exactly the cents memory holds. Last prices (units of the
instrument's currency) and FX rates go as floats, as the feeds send them: a
takeover replays them to the same nano-unit price and the same rate (ADR 0011).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

import numpy as np

from portfolio_state.kernels.enums import EXPOSURE_TYPE_NAMES as EXPOSURE_TYPES
from portfolio_state.kernels.enums import QTY_SCALE, STATUS_NAMES


#: rows per gather of an object array: each chunk holds the GIL ~0.2 ms at most (then it may switch)
ID_CHUNK = 2048


class Names:
    """The append-only id lists of one book, to turn int columns into ids off the engine thread.

    A list only grows, and an index never changes its id (slots are never reused; interners only
    append), so a reader on another thread sees every id a hand-off refers to. Each list gets an
    object-array mirror, grown in place by chunks (capacity doubles) on the reading thread; one
    thread reads a Names (the write-behind), so the mirrors need no lock."""

    __slots__ = ("slots", "portfolios", "categories", "_mirrors")

    def __init__(self, slots: list, portfolios: list, categories: tuple):
        self.slots, self.portfolios = slots, portfolios
        self.categories = categories   # per ExposureType (EXPOSURE_TYPES order): its category ids
        self._mirrors: dict[int, list] = {}

    def same(self, slots: list, portfolios: list, categories: tuple) -> bool:
        return (self.slots is slots and self.portfolios is portfolios
                and all(a is b for a, b in zip(self.categories, categories)))

    def _mirror(self, names: list, need: int) -> np.ndarray:
        m = self._mirrors.get(id(names))
        if m is None:
            m = self._mirrors[id(names)] = [np.empty(0, object), 0, names]  # the list held: its id stays its own
        arr, filled = m[0], m[1]
        if filled < need:
            # up to the highest index asked for, no further: a slot the engine is allocating right
            # now stands in the list as "" until its id is set (Book.slot); every slot a hand-off
            # names, and every one below it, had its id before the hand-off was taken
            n = need
            if len(arr) < n:
                grown = np.empty(max(n, 2 * len(arr)), object)
                for lo in range(0, filled, ID_CHUNK):
                    grown[lo: min(filled, lo + ID_CHUNK)] = arr[lo: min(filled, lo + ID_CHUNK)]
                arr = m[0] = grown
            for lo in range(filled, n, ID_CHUNK):
                arr[lo: min(n, lo + ID_CHUNK)] = names[lo: min(n, lo + ID_CHUNK)]
            m[1] = n
        return arr

    def take(self, names: list, idx: np.ndarray) -> np.ndarray:
        """names[idx] as an object array, gathered by chunks."""
        idx = np.asarray(idx, np.int64)
        if not len(idx):
            return np.empty(0, object)
        return take_objects(self._mirror(names, int(idx.max()) + 1), idx)

    def category(self, etype: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Category ids of exposure rows (each type's own list)."""
        out = np.empty(len(cat), object)
        for t in np.flatnonzero(np.bincount(etype, minlength=1)).tolist():
            rows = np.flatnonzero(etype == t)
            out[rows] = self.take(self.categories[t], cat[rows])
        return out

    def ids(self, slot=None, pf=None, inst=None, etype=None, cat=None) -> dict:
        """The id columns the given int columns stand for: position_id (slot), portfolio_id (pf),
        instrument_id (inst), exposure_type and category (etype with cat)."""
        out = {}
        if slot is not None:
            out["position_id"] = self.take(self.slots, slot)
        if pf is not None:
            out["portfolio_id"] = self.take(self.portfolios, pf)
        if inst is not None:
            out["instrument_id"] = self.take(self.categories[0], inst)
        if etype is not None:
            out["exposure_type"] = take_objects(_ETYPE, etype)
            out["category"] = self.category(etype, cat)
        return out


def take_objects(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """arr[idx] of an object array, by chunks (see ID_CHUNK)."""
    out = np.empty(len(idx), object)
    for lo in range(0, len(idx), ID_CHUNK):
        out[lo: lo + ID_CHUNK] = arr[idx[lo: lo + ID_CHUNK]]
    return out


@dataclass
class Positions:
    """Position rows: ``change`` rows are position changes (trades, status) for position_changes_ts;
    every row is also the position's current value for the positions table. The three id columns
    are None when the rows came from the capture: ``pf``, ``inst`` (and ``slot``) stand for them,
    with the ``names`` to resolve them by (``resolve``)."""
    position_id: list | None
    portfolio_id: list | None
    instrument_id: list | None
    qty: np.ndarray          # int64 micro-units
    cost: np.ndarray         # int64 base cents
    mv: np.ndarray           # int64 base cents
    weight: np.ndarray       # float64
    status: np.ndarray       # int8 PositionStatus
    updated_ns: np.ndarray   # int64
    old_qty: np.ndarray
    old_mv: np.ndarray
    old_weight: np.ndarray
    change: np.ndarray       # bool
    slot: np.ndarray | None = None   # int64 book slots: the order the positions upsert goes in
    pf: np.ndarray | None = None     # portfolio indexes (with names: the ids not resolved yet)
    inst: np.ndarray | None = None   # instrument indexes
    names: Names | None = None

    def __len__(self) -> int:
        return len(self.qty)

    def resolve(self) -> "Positions":
        """Fill the id columns from the int ones (on the reading thread)."""
        if self.position_id is None:
            for k, v in self.names.ids(slot=self.slot, pf=self.pf, inst=self.inst).items():
                setattr(self, k, v)
        return self


@dataclass
class States:
    """Portfolio snapshots (PortfolioState + MarginRequirement numbers), base cents unless noted."""
    portfolio_id: list
    total: np.ndarray
    cash: np.ndarray
    invested: np.ndarray
    available_cash: np.ndarray
    margin_used: np.ndarray
    margin_available: np.ndarray
    leverage: np.ndarray     # float64
    position_count: np.ndarray
    init_margin: np.ndarray
    maint_margin: np.ndarray
    excess_liquidity: np.ndarray
    buying_power: np.ndarray
    updated_ns: np.ndarray
    performance: dict | None = None  # PerformanceMetrics field -> float64 column, NaN = null

    def __len__(self) -> int:
        return len(self.portfolio_id)


@dataclass
class Exposures:
    """Exposure rows. The id columns are None when the rows came from the capture: ``pf``,
    ``etype`` (ExposureType) and ``cat`` (an index into that type's category list) stand for
    them, with the ``names`` to resolve them by (``resolve``)."""
    portfolio_id: list | None
    exposure_type: list | None
    category: list | None
    value: np.ndarray        # int64 base cents
    pct: np.ndarray          # float64
    limit: np.ndarray        # float64, NaN = none
    util: np.ndarray         # float64, NaN = no limit
    pf: np.ndarray | None = None
    etype: np.ndarray | None = None
    cat: np.ndarray | None = None
    names: Names | None = None

    def __len__(self) -> int:
        return len(self.value)

    def resolve(self) -> "Exposures":
        """Fill the id columns from the int ones (on the reading thread)."""
        if self.portfolio_id is None:
            for k, v in self.names.ids(pf=self.pf, etype=self.etype, cat=self.cat).items():
                setattr(self, k, v)
        return self

    @staticmethod
    def concat(parts: list["Exposures"]) -> "Exposures":
        parts = [x for x in parts if x is not None]
        lazy = all(x.portfolio_id is None and x.names is parts[0].names for x in parts)
        if not lazy:
            parts = [x.resolve() for x in parts]
        fields = _LAZY_FIELDS if lazy else _EAGER_FIELDS
        cols = {f: np.concatenate([np.asarray(getattr(x, f), dtype=object if f in _ID_FIELDS else None)
                                   for x in parts]) for f in fields}
        kw = {f: None for f in _ID_FIELDS}
        kw.update(cols)
        return Exposures(**kw, names=parts[0].names if lazy else None)


_ID_FIELDS = ("portfolio_id", "exposure_type", "category")
_NUM_FIELDS = ("value", "pct", "limit", "util")
_EAGER_FIELDS = _ID_FIELDS + _NUM_FIELDS
_LAZY_FIELDS = _NUM_FIELDS + ("pf", "etype", "cat")
_ETYPE = np.array(EXPOSURE_TYPES, dtype=object)


@dataclass
class ChangeSet:
    """Everything committed in journal records (seq_lo, seq_hi] that the stores copy."""
    seq_lo: int
    seq_hi: int
    ts_ns: int
    positions: Positions | None = None
    states: States | None = None                 # only on snapshot hand-offs
    exposures: Exposures | None = None           # exposures_ts rows: the aggregate types of snapshot
                                                 # portfolios, INSTRUMENT rows of traded or drifted heads
    cash: list = field(default_factory=list)     # (portfolio_id, currency, cents) of snapshot portfolios
    cash_flows: list = field(default_factory=list)   # (cash_flow_id, portfolio_id, cents, currency, flow_type, description, ts_ns)
    portfolios: list = field(default_factory=list)   # dicts: the spec's Portfolio fields (+ instrument_limit)
    instruments: list = field(default_factory=list)  # dicts: Instrument fields
    limits: list = field(default_factory=list)       # (portfolio_id, exposure_type, category, limit or None)
    redis_positions: dict = field(default_factory=dict)  # portfolio_id -> Positions rows (its whole list)
    redis_exposures: Exposures | None = None     # whole exposure maps of the redis_positions portfolios
    metrics: dict | None = None                  # the daemon's metrics (performance:current)
    full: bool = False                           # a resync: every portfolio and position is in it
    prices: dict | None = None                   # instrument_prices columns (instrument_id, price in units of its
                                                 # currency, price_time ns) of prices moved since the last ones
    fx: list = field(default_factory=list)       # (currency, rate: one unit in the pivot currency) moved since

    def resolve(self) -> "ChangeSet":
        """Every id column filled (a reader that wants the rows as they are, not ``tables``)."""
        for x in (self.positions, self.exposures, self.redis_exposures):
            if x is not None:
                x.resolve()
        return self

    def rows(self) -> int:
        return (len(self.positions or ()) + len(self.states or ()) + len(self.exposures or ())
                + len(self.cash_flows) + len(self.portfolios) + len(self.instruments) + len(self.limits)
                + (len(self.prices["instrument_id"]) if self.prices else 0) + len(self.fx))


# ------------------------------------------------------------------ tables (columns)
# kinds: str, f8 (float, NaN = NULL), i8, ts (int64 ns since epoch), cents (int64 -> DECIMAL(15,2)),
# micro (int64 -> DECIMAL(15,6)), date (ISO text), bool

#: the spec's PerformanceMetrics fields, as portfolio_state_ts columns and performance:{id} keys
PERFORMANCE_FIELDS = ("daily_return", "total_return", "volatility", "sharpe_ratio", "max_drawdown", "beta", "alpha")

#: table -> [(column, kind)]: what each store writes, in this order
COLUMNS = {
    "positions": [("position_id", "str"), ("portfolio_id", "str"), ("instrument_id", "str"), ("quantity", "micro"),
                  ("cost_basis", "cents"), ("market_value", "cents"), ("unrealized_pnl", "cents"), ("weight", "f8"),
                  ("status", "str"), ("last_updated", "ts")],
    "position_changes_ts": [("timestamp", "ts"), ("position_id", "str"), ("portfolio_id", "str"),
                            ("instrument_id", "str"), ("quantity", "f8"), ("market_value", "f8"), ("weight", "f8"),
                            ("unrealized_pnl", "f8"), ("quantity_change", "f8"), ("value_change", "f8"),
                            ("weight_change", "f8"), ("change_type", "str")],
    "portfolio_state_ts": [("timestamp", "ts"), ("portfolio_id", "str"), ("total_value", "f8"), ("cash_balance", "f8"),
                           ("invested_value", "f8"), ("available_cash", "f8"), ("margin_used", "f8"),
                           ("margin_available", "f8"), ("leverage_ratio", "f8"), ("position_count", "i8"),
                           *((f, "f8") for f in PERFORMANCE_FIELDS)],
    "margin_requirements": [("portfolio_id", "str"), ("initial_margin", "cents"), ("maintenance_margin", "cents"),
                            ("excess_liquidity", "cents"), ("buying_power", "cents"), ("last_updated", "ts")],
    "exposures_ts": [("timestamp", "ts"), ("portfolio_id", "str"), ("exposure_type", "str"), ("category", "str"),
                     ("exposure_value", "f8"), ("exposure_percentage", "f8"), ("limit_percentage", "f8"),
                     ("utilization", "f8")],
    "cash_flows": [("cash_flow_id", "str"), ("portfolio_id", "str"), ("amount", "cents"), ("currency", "str"),
                   ("flow_type", "str"), ("description", "str"), ("timestamp", "ts")],
    "cash_balances": [("portfolio_id", "str"), ("currency", "str"), ("amount", "cents")],
    "portfolios": [("portfolio_id", "str"), ("portfolio_name", "str"), ("base_currency", "str"),
                   ("portfolio_type", "str"), ("inception_date", "date"), ("status", "str"), ("benchmark", "str"),
                   ("instrument_limit", "f8")],
    "instruments": [("instrument_id", "str"), ("currency", "str"), ("sector", "str"), ("country", "str"),
                    ("asset_class", "str"), ("multiplier", "i8"), ("long_initial", "f8"), ("long_maintenance", "f8"),
                    ("short_initial", "f8"), ("short_maintenance", "f8")],
    "exposure_limits": [("portfolio_id", "str"), ("exposure_type", "str"), ("category", "str"),
                        ("limit_percentage", "f8")],
    "instrument_prices": [("instrument_id", "str"), ("price", "f8"), ("price_time", "ts")],
    "fx_rates": [("currency", "str"), ("rate", "f8")],
}
#: upserted tables and their keys (a later row replaces an earlier one); the rest are appended
KEYS = {"positions": ("position_id",), "cash_balances": ("portfolio_id", "currency"), "portfolios": ("portfolio_id",),
        "instruments": ("instrument_id",), "exposure_limits": ("portfolio_id", "exposure_type", "category"),
        "cash_flows": ("cash_flow_id",), "instrument_prices": ("instrument_id",), "fx_rates": ("currency",)}


#: position_changes_ts.change_type, by the code change_codes gives
CHANGE_TYPES = np.array(["STATUS", "OPEN", "CLOSE", "REVERSE", "INCREASE", "DECREASE"], dtype=object)


def change_type(old: int, new: int) -> str:
    """What a change of quantity from old to new is: STATUS (unchanged: a status change), OPEN
    (from flat), CLOSE (to flat), REVERSE (through zero), INCREASE or DECREASE (in size)."""
    return str(CHANGE_TYPES[change_codes(np.array([old]), np.array([new]))[0]])


def change_codes(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """change_type of each row, as an index into CHANGE_TYPES."""
    return np.select([old == new, old == 0, new == 0, (old > 0) != (new > 0), np.abs(new) > np.abs(old)],
                     [0, 1, 2, 3, 4], 5).astype(np.int8)


_STATUS = np.array(STATUS_NAMES, dtype=object)


def _take(ids, idx: np.ndarray) -> np.ndarray:
    """Rows idx of an id column (an object array, or a list)."""
    arr = ids if isinstance(ids, np.ndarray) else np.array(ids, dtype=object)
    return arr[idx]


def _cat(parts: list[dict]) -> dict:
    """Concatenate column dicts of one table."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if any(isinstance(v, np.ndarray) for v in vals):
            out[k] = np.concatenate([v if isinstance(v, np.ndarray) else np.array(v, dtype=object) for v in vals])
        else:
            out[k] = [x for v in vals for x in v]
    return out


def _dedupe(cols: dict, key: tuple) -> dict:
    """Keep the last row of each key (a transaction upserts a row once)."""
    keys = cols[key[0]] if len(key) == 1 else zip(*(cols[k] for k in key))
    keys = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
    last = dict(zip(keys, range(len(keys))))  # later rows overwrite earlier ones, in C
    if len(last) == len(keys):
        return cols
    idx = np.fromiter(last.values(), np.int64, len(last))
    idx.sort()
    return _rows(cols, idx)


def _rows(cols: dict, idx: np.ndarray) -> dict:
    return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx.tolist()]) for k, v in cols.items()}


def _by_slot(cols: dict) -> dict:
    """Position rows in book-slot order, which is the order the stores first inserted them in
    (slots are handed out in creation order). DuckDB applies an UPDATE whose rows arrive in table
    order one 2,048-row vector at a time, and out of order one vector per row and column
    (duckdb/duckdb#11275): 50,000 of 100,000 rows took 7 s shuffled, 0.12 s in order (measured).
    One hand-off is in slot order already; a run of several, deduplicated, is not."""
    slot = cols.pop("_slot")
    if len(slot) < 2 or bool((slot[1:] >= slot[:-1]).all()):
        return cols
    return _rows(cols, np.argsort(slot, kind="stable"))


def tables(sets: list[ChangeSet], int_ids: bool = False) -> dict[str, dict]:
    """The rows of a run of ChangeSets, per table, as columns (NumPy arrays or lists) in COLUMNS
    order; upserted tables keep the last row per key.

    ``int_ids`` (a store that resolves ids itself: DuckDB): the capture's positions,
    position_changes_ts and exposures_ts rows keep their int columns in place of ids (``_slot_id``,
    ``_pf``, ``_inst``, ``_etype``, ``_cat``) and codes in place of texts (``_status``: PositionStatus,
    ``_change``: an index into CHANGE_TYPES), and carry the ``Names`` to resolve them by under
    ``_names``."""
    parts: dict[str, list[dict]] = {}
    put = lambda t, cols: parts.setdefault(t, []).append(cols)  # noqa: E731
    # One book's hand-offs (every live run) keep their ids as ints until the rows are final
    names = _shared_names(sets)
    for cs in sets:
        p = cs.positions
        if p is not None and len(p):
            ids = _position_ids(p, names)
            put("positions", {**ids, "quantity": p.qty, "cost_basis": p.cost,
                              "market_value": p.mv, "unrealized_pnl": p.mv - p.cost, "weight": p.weight,
                              "_status": p.status, "last_updated": p.updated_ns,
                              "_slot": p.slot if p.slot is not None else np.full(len(p), -1, np.int64)})
            ch = np.flatnonzero(p.change)
            if len(ch):
                q, o, mv, omv = p.qty[ch], p.old_qty[ch], p.mv[ch], p.old_mv[ch]
                put("position_changes_ts", {
                    "timestamp": p.updated_ns[ch], **{k: _take(v, ch) for k, v in ids.items()},
                    "quantity": q / QTY_SCALE, "market_value": mv / 100, "weight": p.weight[ch],
                    "unrealized_pnl": (mv - p.cost[ch]) / 100, "quantity_change": (q - o) / QTY_SCALE,
                    "value_change": (mv - omv) / 100, "weight_change": p.weight[ch] - p.old_weight[ch],
                    "_change": change_codes(o, q)})
        s = cs.states
        if s is not None and len(s):
            at = np.full(len(s), cs.ts_ns, np.int64)
            lev = s.leverage.astype(np.float64)
            put("portfolio_state_ts", {"timestamp": at, "portfolio_id": s.portfolio_id, "total_value": s.total / 100,
                                       "cash_balance": s.cash / 100, "invested_value": s.invested / 100,
                                       "available_cash": s.available_cash / 100, "margin_used": s.margin_used / 100,
                                       "margin_available": s.margin_available / 100,
                                       "leverage_ratio": np.where(np.isfinite(lev), lev, np.nan),
                                       "position_count": s.position_count.astype(np.int64),
                                       **{f: (s.performance[f] if s.performance else np.full(len(s), np.nan))
                                          for f in PERFORMANCE_FIELDS}})
            put("margin_requirements", {"portfolio_id": s.portfolio_id, "initial_margin": s.init_margin,
                                        "maintenance_margin": s.maint_margin, "excess_liquidity": s.excess_liquidity,
                                        "buying_power": s.buying_power.astype(np.int64), "last_updated": at})
        e = cs.exposures
        if e is not None and len(e):
            if names is None or e.portfolio_id is not None:
                ids = {"portfolio_id": e.resolve().portfolio_id, "exposure_type": e.exposure_type,
                       "category": e.category}
            else:
                ids = {"_pf": e.pf, "_etype": e.etype, "_cat": e.cat}
            put("exposures_ts", {"timestamp": np.full(len(e), cs.ts_ns, np.int64), **ids,
                                 "exposure_value": e.value / 100, "exposure_percentage": e.pct,
                                 "limit_percentage": e.limit, "utilization": e.util})
        if cs.cash:
            pid, ccy, amt = zip(*cs.cash)
            put("cash_balances", {"portfolio_id": list(pid), "currency": list(ccy), "amount": np.array(amt, np.int64)})
        if cs.cash_flows:
            cfid, pid, amt, ccy, typ, desc, t = zip(*cs.cash_flows)
            put("cash_flows", {"cash_flow_id": list(cfid), "portfolio_id": list(pid), "amount": np.array(amt, np.int64),
                               "currency": list(ccy), "flow_type": list(typ), "description": list(desc),
                               "timestamp": np.array(t, np.int64)})
        if cs.portfolios:
            put("portfolios", {
                "portfolio_id": [x["portfolio_id"] for x in cs.portfolios],
                "portfolio_name": [x.get("portfolio_name") or x["portfolio_id"] for x in cs.portfolios],
                "base_currency": [x.get("base_currency", "USD") for x in cs.portfolios],
                "portfolio_type": [x.get("portfolio_type", "LONG_SHORT") for x in cs.portfolios],
                "inception_date": [_date(x.get("inception_date")) for x in cs.portfolios],
                "status": [x.get("status") or "ACTIVE" for x in cs.portfolios],
                "benchmark": [x.get("benchmark") for x in cs.portfolios],
                "instrument_limit": np.array([np.nan if x.get("instrument_limit") is None else x["instrument_limit"]
                                              for x in cs.portfolios], np.float64)})
        if cs.instruments:
            m = [x.get("margin") or (np.nan,) * 4 for x in cs.instruments]
            put("instruments", {
                "instrument_id": [x["instrument_id"] for x in cs.instruments],
                "currency": [x.get("currency", "USD") for x in cs.instruments],
                "sector": [x.get("sector", "UNKNOWN") for x in cs.instruments],
                "country": [x.get("country", "UNKNOWN") for x in cs.instruments],
                "asset_class": [x.get("asset_class", "EQUITY") for x in cs.instruments],
                "multiplier": np.array([int(x.get("multiplier", 1)) for x in cs.instruments], np.int64),
                **{c: np.array([r[i] for r in m], np.float64)
                   for i, c in enumerate(("long_initial", "long_maintenance", "short_initial", "short_maintenance"))}})
        if cs.limits:
            pid, typ, cat, lim = zip(*cs.limits)
            put("exposure_limits", {"portfolio_id": list(pid), "exposure_type": list(typ), "category": list(cat),
                                    "limit_percentage": np.array([np.nan if x is None else x for x in lim], np.float64)})
        if cs.prices is not None and len(cs.prices["instrument_id"]):
            put("instrument_prices", cs.prices)
        if cs.fx:
            ccy, rate = zip(*cs.fx)
            put("fx_rates", {"currency": list(ccy), "rate": np.array(rate, np.float64)})
    out = {t: _cat(v) for t, v in parts.items()}
    if "positions" in out:
        pos = out["positions"]
        if "_pf" in pos:  # ints: the last row of each slot, in slot order, by a sort of ints
            out["positions"] = _last_by_slot(pos)
        else:
            out["positions"] = _by_slot(_dedupe(pos, KEYS["positions"]))
    for t, key in KEYS.items():
        if t in out and t != "positions":
            out[t] = _dedupe(out[t], key)
    for t in ("positions", "position_changes_ts", "exposures_ts"):
        if t in out:
            out[t] = _final(out[t], names, int_ids)
    return out


def _final(cols: dict, names: Names | None, int_ids: bool) -> dict:
    """A table's columns as the store takes them: ids and texts, or (int_ids) ints, codes and the Names."""
    if int_ids and names is not None and "_pf" in cols:
        cols["_names"] = names
        return cols
    cols = _resolve(cols, names)
    if "_status" in cols:
        cols["status"] = take_objects(_STATUS, cols.pop("_status"))
    if "_change" in cols:
        cols["change_type"] = take_objects(CHANGE_TYPES, cols.pop("_change"))
    return cols


def _shared_names(sets: list[ChangeSet]) -> Names | None:
    """The Names every capture-built row of a run refers to, or None when the run mixes books
    (each set then resolves its own ids first)."""
    parts = [x for cs in sets for x in (cs.positions, cs.exposures) if x is not None and len(x)]
    lazy = [x for x in parts if x.portfolio_id is None]
    found = {id(x.names): x.names for x in lazy}
    if len(found) > 1 or len(lazy) < len(parts):
        for cs in sets:
            cs.resolve()
        return None
    return next(iter(found.values()), None)


def _position_ids(p: Positions, names: Names | None) -> dict:
    if names is None or p.position_id is not None:
        p.resolve()
        return {"position_id": p.position_id, "portfolio_id": p.portfolio_id, "instrument_id": p.instrument_id}
    return {"_slot_id": p.slot, "_pf": p.pf, "_inst": p.inst}


def _last_by_slot(cols: dict) -> dict:
    """The last row of each slot, in slot order (slots are handed out in creation order: see _by_slot)."""
    slot = cols.pop("_slot")
    order = np.argsort(slot, kind="stable")
    s = slot[order]
    last = np.ones(len(s), np.bool_)
    last[:-1] = s[1:] != s[:-1]
    idx = order[last]
    if len(idx) == len(slot) and bool((idx[1:] > idx[:-1]).all()):
        return cols
    return _rows(cols, idx)


def _resolve(cols: dict, names: Names | None) -> dict:
    """Int columns standing for ids (_slot_id, _pf, _inst; _etype, _cat) -> the id columns."""
    if names is None or "_pf" not in cols:
        return cols
    out = names.ids(**{k: cols.pop("_" + k, None) for k in ("pf", "inst", "etype", "cat")},
                    slot=cols.pop("_slot_id", None))
    out.update(cols)
    return out


def _date(d) -> str:
    try:
        return _dt.date.fromisoformat(str(d)[:10]).isoformat() if d else "1970-01-01"
    except ValueError:
        return "1970-01-01"


def nan_none(x: float):
    return None if x != x or math.isinf(x) else x


# ------------------------------------------------------------------ JSON documents (Redis)

def iso(ns: int) -> str | None:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="ms") + "Z" if ns else None


def isos(ns: np.ndarray) -> list:
    """iso() of a column, in one NumPy call."""
    ns = np.asarray(ns, np.int64)
    out = np.char.add(np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ms"), "Z").astype(object)
    out[ns == 0] = None
    return out.tolist()


def state_doc(s: States, j: int) -> dict:
    """The spec's PortfolioState as JSON-ready values."""
    return {"portfolio_id": s.portfolio_id[j], "total_value": int(s.total[j]) / 100,
            "cash_balance": int(s.cash[j]) / 100, "invested_value": int(s.invested[j]) / 100,
            "available_cash": int(s.available_cash[j]) / 100, "margin_used": int(s.margin_used[j]) / 100,
            "margin_available": int(s.margin_available[j]) / 100, "leverage_ratio": nan_none(float(s.leverage[j])),
            "position_count": int(s.position_count[j]), "last_updated": iso(s.updated_ns[j])}


def performance_doc(s: States, j: int) -> dict | None:
    """The spec's PerformanceMetrics (null where undefined), or None when the snapshot has none."""
    if not s.performance:
        return None
    return {f: nan_none(float(s.performance[f][j])) for f in PERFORMANCE_FIELDS}


def margin_doc(s: States, j: int, at_ns: int) -> dict:
    pid = s.portfolio_id[j]
    return {"requirement_id": pid, "portfolio_id": pid, "initial_margin": int(s.init_margin[j]) / 100,
            "maintenance_margin": int(s.maint_margin[j]) / 100, "excess_liquidity": int(s.excess_liquidity[j]) / 100,
            "buying_power": int(s.buying_power[j]) / 100, "last_updated": iso(at_ns)}


def position_docs(p: Positions) -> list[dict]:
    st = _STATUS[p.status].tolist()
    return [{"position_id": pid, "instrument_id": inst, "quantity": q, "market_value": mv,
             "cost_basis": c, "unrealized_pnl": u, "weight": w, "status": s_, "last_updated": t}
            for pid, inst, q, c, mv, u, w, s_, t in zip(
                _list(p.position_id), _list(p.instrument_id), (p.qty / QTY_SCALE).tolist(), (p.cost / 100).tolist(),
                (p.mv / 100).tolist(), ((p.mv - p.cost) / 100).tolist(), p.weight.tolist(), st, isos(p.updated_ns))]


def _list(ids) -> list:
    return ids.tolist() if isinstance(ids, np.ndarray) else list(ids)


def exposure_docs(e: Exposures) -> dict[str, dict[str, list]]:
    """portfolio_id -> Map<ExposureType, List<Exposure>> (every type present, maybe empty)."""
    out: dict[str, dict[str, list]] = {}
    for pid, typ, cat, v, pct, lim, u in zip(e.portfolio_id, e.exposure_type, e.category, e.value.tolist(),
                                             e.pct.tolist(), e.limit.tolist(), e.util.tolist()):
        d = out.setdefault(pid, {t: [] for t in EXPOSURE_TYPES})
        d[typ].append({"exposure_id": f"{pid}:{typ}:{cat}", "exposure_type": typ, "category": cat,
                       "exposure_value": v / 100, "exposure_percentage": pct, "limit_percentage": nan_none(lim),
                       "utilization": nan_none(u)})
    return out
