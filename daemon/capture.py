"""Change capture for the write-behind thread: what changed since the last hand-off, as a ChangeSet.

Owns: ``ChangeCapture``. On the hot path it only marks traded slots dirty (one
vectorized store per run) and appends the few non-trade commands it must copy
(cash flows, portfolios, instruments, limits). ``take`` then builds one
``persistence.changes.ChangeSet`` with compiled row builders (kernels/capture.py):
the dirty positions (old values are the ones last handed off, so a hand-off that
waited coalesces, never loses), and on snapshot hand-offs the changed portfolios'
state, margin, exposures and cash. Cost depends on what changed, never on how
many updates changed it, except the revaluation pass, which compares a bounded
window of slots per call.
Runs on: the engine thread (the live book), or the write-behind thread over a
private scratch book during catch-up. Imports: numpy, kernels, daemon.book,
daemon.marks, daemon.marketcapture, persistence.changes.
"""
from __future__ import annotations

import numpy as np

from portfolio_state.kernels import PositionStatus
from portfolio_state.kernels.capture import (aggregate_rows_nb, cash_rows_nb, instrument_rows_nb, position_rows_nb,
                                             revalue_scan_nb, state_rows_nb)
from portfolio_state.kernels.enums import EXPOSURE_TYPE_NAMES, PF_LONG_ONLY
from portfolio_state.persistence.changes import ChangeSet, Exposures, Names, Positions, States

from .book import Book
from .marks import DirtySet
from .marketcapture import MarketCapture


#: the (value, percentage) "last written" arrays a whole-map ``aggregate_exposures`` reads none of
_NO_LAST_AGG = (np.zeros((0, 0), np.int64), np.zeros((0, 0)))


def _grow(x: np.ndarray, n: int, fill=0) -> np.ndarray:
    return x if len(x) >= n else np.concatenate([x, np.full(max(n, 2 * len(x)) - len(x), fill, x.dtype)])


def _union(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Sorted union of two sets of slots below n (a mask, not a sort: they can be a million long)."""
    if not len(b):
        return a
    if not len(a):
        return b
    mask = np.zeros(n, np.bool_)
    mask[a] = True
    mask[b] = True
    return np.flatnonzero(mask)


class ChangeCapture:
    def __init__(self, book: Book, redis_positions_per_flush: int = 0, revalue_max_rows: int = 1_000_000,
                 weight_epsilon: float = 1e-4):
        self.book = book
        self.k_redis = redis_positions_per_flush
        self.reval_rows = revalue_max_rows
        self.eps = weight_epsilon
        self.reval_cursor = 0
        self.dirty = DirtySet()                     # slots traded since the last hand-off
        self.last_qty = np.zeros(0, np.int64)
        self.last_mv = np.zeros(0, np.int64)
        self.last_w = np.zeros(0, np.float64)
        self.last_cost = np.zeros(0, np.int64)
        self.last_status = np.zeros(0, np.int8)
        self.versions = np.zeros(0, np.int64)
        self.snap_dirty = np.zeros(0, np.bool_)    # per portfolio: changed since its last snapshot
        self.redis_dirty = np.zeros(0, np.bool_)   # per portfolio: positions:{id} to rebuild
        self.redis_cursor = 0
        self.ccy_seen = np.zeros((0, 0), np.bool_)  # per portfolio x currency: non-zero at some hand-off
        self.head_dirty = DirtySet()                # head slots traded since their INSTRUMENT row was written
        self.last_ie = np.zeros(0, np.int64)        # per head slot: INSTRUMENT exposure last written
        self.last_ie_pct = np.zeros(0, np.float64)  # and its percentage of the portfolio
        self._id_cache: dict[int, np.ndarray] = {}  # id(list) -> object-array mirror (the id lists only grow)
        self._names: Names | None = None            # the book's id lists, for the write-behind to resolve by
        self.exp_force = np.zeros(0, np.bool_)      # per portfolio: next snapshot writes every exposure row
        self.perf_fn = None                         # ps -> PerformanceMetrics columns (the engine's)
        self.last_agg: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # aggregate rows last written
        self.cash_flows: list = []
        self.portfolios: list = []
        self.instruments: list = []
        self.limits: list = []
        self.seq = 0
        self._fit()
        self.mark_persisted()
        self.market = MarketCapture(book, self.ids)  # last prices and FX rates, for a takeover (ADR 0011)

    def _fit(self) -> None:
        a = self.book.a
        n = len(a.positions)
        if len(self.last_qty) < n:
            self.dirty.fit(n)
            self.head_dirty.fit(n)
            self.last_qty, self.last_mv, self.last_cost = (_grow(x, n) for x in (self.last_qty, self.last_mv, self.last_cost))
            self.last_w, self.last_status = _grow(self.last_w, n), _grow(self.last_status, n)
            self.last_ie = _grow(self.last_ie, n)
            self.last_ie_pct = _grow(self.last_ie_pct, n)
        P = len(a.portfolios)
        if len(self.versions) < P:
            self.versions = _grow(self.versions, P, -1)
            self.snap_dirty, self.redis_dirty = _grow(self.snap_dirty, P), _grow(self.redis_dirty, P)
            self.exp_force = _grow(self.exp_force, P)
        C = a.cash.shape[1]
        if self.ccy_seen.shape != (P, C):
            seen = np.zeros((P, C), np.bool_)
            seen[: self.ccy_seen.shape[0], : self.ccy_seen.shape[1]] = self.ccy_seen
            self.ccy_seen = seen

    def mark_persisted(self) -> None:
        """Take the book as it is now as what the stores hold (start-up: old values for the next diffs)."""
        a = self.book.a
        n = len(self.book.slot_ids)
        pos = a.positions[:n]
        self.last_qty[:n], self.last_mv[:n], self.last_status[:n] = pos["qty"], pos["mv"], pos["status"]
        self.last_cost[:n] = self._cost_base(np.arange(n))
        self.last_w[:n] = self._weights(pos)
        P = len(self.book.portfolio_ids)
        self.versions[:P] = a.portfolios["version"][:P]
        self.dirty.clear_all()
        self.last_ie[:n] = pos["inst_exp"]
        self.last_ie_pct[:n] = self._pct(np.arange(n), self.last_ie[:n])
        self.head_dirty.clear_all()

    def ids(self, names: list) -> np.ndarray:
        """An object-array mirror of an append-only id list (slot ids, an interner's ids), so that
        resolving a column of indexes is one NumPy gather, not a Python loop."""
        arr = self._id_cache.get(id(names))
        if arr is None or len(arr) < len(names):
            old = 0 if arr is None else len(arr)
            tail = np.empty(len(names) - old, object)
            tail[:] = names[old:]
            arr = tail if arr is None else np.concatenate([arr, tail])
            self._id_cache[id(names)] = arr
        return arr

    def names(self) -> Names:
        """The book's id lists, as the hand-offs' rows refer to them (one Names while the lists are
        the same objects, so the write-behind's mirrors of them last)."""
        book = self.book
        cats = (book.instrument_ids.ids,) + tuple(book._exposure_axis(t)[0].ids for t in EXPOSURE_TYPE_NAMES[1:])
        if self._names is None or not self._names.same(book.slot_ids, book.portfolio_ids.ids, cats):
            self._names = Names(book.slot_ids, book.portfolio_ids.ids, cats)
        return self._names

    # -------------------------------------------------------------- hot path
    def note_trades(self, slot: np.ndarray, ok: np.ndarray) -> None:
        if len(self.last_qty) < len(self.book.a.positions):
            self._fit()
        traded = slot[ok]
        self.dirty.mark(traded)
        self.head_dirty.mark(self.book.a.positions["head"][traded])

    def note_status(self, s: int) -> None:
        self._fit()
        self.dirty.mark(np.array([s], np.int64))
        self.head_dirty.mark(self.book.a.positions["head"][[s]])

    # -------------------------------------------------------------- hand-off
    def take(self, seq_hi: int, now_ns: int, snapshot: bool | tuple[int, int] = False, revalue: bool = False,
             full: bool = False, metrics: dict | None = None) -> ChangeSet | None:
        """A ChangeSet of everything since the last take, covering journal records up to seq_hi;
        None when nothing changed. ``snapshot``: True for every changed portfolio, or (phase, k)
        for the changed portfolios whose index is phase mod k (snapshots staggered over k takes).
        ``full``: every position and portfolio (a resync)."""
        self._fit()
        book = self.book
        a = book.a
        n = len(book.slot_ids)
        P = len(book.portfolio_ids)
        moved = a.portfolios["version"][:P] != self.versions[:P]
        self.snap_dirty[:P] |= moved
        self.redis_dirty[:P] |= moved
        self.versions[:P] = a.portfolios["version"][:P]
        slots = self.dirty.slots(n)
        heads = np.zeros(0, np.int64)
        if full:
            live = a.positions["status"][:n] != PositionStatus.FREE
            slots = np.flatnonzero(live)
            heads = np.flatnonzero(a.positions["head"][:n] == np.arange(n))
        elif revalue and n:
            moved, heads = self._revalued(n)
            slots = _union(slots, moved, n)
        if snapshot and not full:
            heads = _union(heads, self.head_dirty.slots(n), n)
        cs = ChangeSet(self.seq, seq_hi, now_ns, full=full, metrics=metrics)
        if len(slots):
            cs.positions = self._positions(slots, change=self.dirty.bits[slots].copy())
            self.dirty.clear(slots)
        parts = []
        if snapshot or full:
            if full:
                ps = np.arange(P)
                self.exp_force[:P] = True
            elif snapshot is True or snapshot[1] <= 1:
                ps = np.flatnonzero(self.snap_dirty[:P])
            else:
                phase, k = snapshot
                ps = phase + k * np.flatnonzero(self.snap_dirty[phase:P:k])
            if len(ps):
                cs.states = self.states(ps)
                parts.append(self.aggregate_exposures(ps))
                cs.cash = self._cash(ps)
                self.snap_dirty[ps] = False
            if self.k_redis:
                cs.redis_positions, cs.redis_exposures = self._redis_lists(P)
        if len(heads):
            parts.insert(0, self.instrument_exposures(heads))
            self.head_dirty.clear(heads)
        if parts:
            cs.exposures = parts[0] if len(parts) == 1 else Exposures.concat(parts)
        cs.cash_flows, self.cash_flows = self.cash_flows, []
        cs.portfolios, self.portfolios = self.portfolios, []
        cs.instruments, self.instruments = self.instruments, []
        cs.limits, self.limits = self.limits, []
        if full:
            cs.portfolios = [book.portfolio_meta(p) for p in range(P)]
            cs.instruments = [book.instrument_meta(k) for k in range(len(book.instrument_ids))]
            cs.limits = book.limit_rows()
        if full or snapshot is True or (snapshot and snapshot[0] == 0):  # once per state interval
            cs.prices, cs.fx = self.market.take(full)
        self.seq = seq_hi
        if not cs.rows() and not cs.redis_positions and metrics is None and not full:
            return None
        return cs

    def exact(self) -> None:
        """From now on, revaluation passes scan every slot and rewrite any weight that moved at all
        (the final hand-off at shutdown)."""
        self.eps, self.reval_rows, self.reval_cursor = 0.0, 1 << 62, 0

    def heartbeat(self) -> None:
        """Every portfolio gets a snapshot at its next snapshot hand-off, every exposure row included."""
        self.snap_dirty[: len(self.book.portfolio_ids)] = True
        self.exp_force[: len(self.book.portfolio_ids)] = True

    # -------------------------------------------------------------- pieces
    def _ratio(self, inst: np.ndarray, base: np.ndarray) -> np.ndarray:
        a = self.book.a
        ccy = a.instruments["currency"][inst]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ccy == base, 1.0, a.fx[ccy] / a.fx[base])

    def _cost_base(self, slots: np.ndarray) -> np.ndarray:
        """Cost basis in base cents, rounded half-even like the queries (a flat position needs no rate)."""
        a = self.book.a
        owner = np.maximum(a.positions["portfolio"][slots], 0)
        ratio = self._ratio(a.positions["instrument"][slots], a.portfolios["base_ccy"][owner])
        cost = a.positions["cost"][slots]
        with np.errstate(invalid="ignore"):
            conv = np.rint(cost * ratio)
        return np.where((ratio == 1.0) | (cost == 0) | ~np.isfinite(conv), cost, conv).astype(np.int64)

    def _totals(self, p: np.ndarray) -> np.ndarray:
        pf = self.book.a.portfolios
        return pf["cash_base"][p] + pf["long_mv"][p] + pf["short_mv"][p]

    def _weights(self, pos) -> np.ndarray:
        total = self._totals(np.maximum(pos["portfolio"], 0)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total != 0, pos["mv"] / total, 0.0)

    def _revalued(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots, heads) in the next window: slots whose value, quantity, cost or status differs
        from what was handed off, or whose weight moved more than epsilon; head slots whose
        INSTRUMENT exposure percentage moved more than epsilon, or to or from zero (a bounded,
        resumable scan, compiled: ``revalue_scan_nb``)."""
        lo = self.reval_cursor if self.reval_cursor < n else 0
        hi = min(n, lo + self.reval_rows)
        self.reval_cursor = hi if hi < n else 0
        slots, heads = np.empty(hi - lo, np.int64), np.empty(hi - lo, np.int64)
        ns, nh = revalue_scan_nb(self.book.a.positions, self.book.a.portfolios, lo, hi, PositionStatus.FREE, self.eps,
                                 self.last_qty, self.last_mv, self.last_w, self.last_status, self.last_ie,
                                 self.last_ie_pct, slots, heads)
        return slots[:ns], heads[:nh]

    def _pct(self, slots: np.ndarray, value: np.ndarray) -> np.ndarray:
        total = self._totals(np.maximum(self.book.a.positions["portfolio"][slots], 0)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total != 0, value / np.where(total == 0, 1, total), 0.0)

    def _positions(self, slots: np.ndarray, change: np.ndarray) -> Positions:
        a = self.book.a
        n = len(slots)
        P = a.positions.dtype
        pf, inst = np.empty(n, P["portfolio"]), np.empty(n, P["instrument"])
        qty, cost, mv, upd = (np.empty(n, np.int64) for _ in range(4))
        w, old_w = np.empty(n, np.float64), np.empty(n, np.float64)
        status = np.empty(n, P["status"])
        old_qty, old_mv = np.empty(n, np.int64), np.empty(n, np.int64)
        position_rows_nb(a.positions, a.portfolios, a.instruments, a.fx, slots, self.last_qty, self.last_mv,
                         self.last_w, self.last_cost, self.last_status, pf, inst, qty, cost, mv, w, status, upd,
                         old_qty, old_mv, old_w)
        return Positions(  # ids stay ints: the write-behind resolves them (persistence.changes.Names)
            position_id=None, portfolio_id=None, instrument_id=None, qty=qty, cost=cost, mv=mv, weight=w,
            status=status, updated_ns=upd, old_qty=old_qty, old_mv=old_mv, old_weight=old_w, change=change,
            slot=slots, pf=pf, inst=inst, names=self.names())

    def states(self, ps: np.ndarray) -> States:
        """PortfolioState and MarginRequirement numbers (the formulas of kernels.views, compiled:
        ``state_rows_nb``)."""
        book = self.book
        ps = np.asarray(ps, np.int64)
        n = len(ps)
        F = book.a.portfolios.dtype
        money = [np.empty(n, F["cash_base"]) for _ in range(10)]
        total, cash, invested, avail_cash, im, avail, im2, mm, excess, bp = money
        lev, count, upd = np.empty(n, np.float64), np.empty(n, F["position_count"]), np.empty(n, F["updated_ns"])
        state_rows_nb(book.a.portfolios, ps, PF_LONG_ONLY, total, cash, invested, avail_cash, im, avail, lev, count,
                      im2, mm, excess, bp, upd)
        states = States(self.ids(book.portfolio_ids.ids)[ps], total, cash, invested, avail_cash, im, avail,
                        lev, count, im2, mm, excess, bp, upd)
        if self.perf_fn is not None:
            states.performance = self.perf_fn(ps)
        return states

    def instrument_exposures(self, heads: np.ndarray, record: bool = True, nonzero: bool = False) -> Exposures:
        """INSTRUMENT exposure rows of head slots (one per (portfolio, instrument)). ``record``: these
        become the values last written (the time series); ``nonzero``: drop zero rows (a whole list)."""
        book = self.book
        a = book.a
        heads = np.asarray(heads, np.int64)
        if nonzero:
            heads = heads[a.positions["inst_exp"][heads] != 0]
        n = len(heads)
        pf, inst, ie = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        pct, limit, util = np.empty(n), np.empty(n), np.empty(n)
        instrument_rows_nb(a.positions, a.portfolios, heads, record, self.last_ie, self.last_ie_pct,
                           pf, inst, ie, pct, limit, util)
        if book.instrument_limits and n:  # per-instrument overrides of the portfolio's default
            K = np.int64(max(1, len(book.instrument_ids)))
            keys = np.array([p * K + k for p, k in book.instrument_limits], np.int64)
            vals = np.array(list(book.instrument_limits.values()), np.float64)
            order = np.argsort(keys)
            keys, vals = keys[order], vals[order]
            row = pf * K + inst
            at = np.minimum(np.searchsorted(keys, row), len(keys) - 1)
            hit = np.flatnonzero(keys[at] == row)
            limit[hit] = vals[at[hit]]
            with np.errstate(invalid="ignore", divide="ignore"):
                util[hit] = np.where(limit[hit] > 0, np.abs(pct[hit]) / limit[hit], np.nan)
        return Exposures(None, None, None, ie, pct, limit, util, pf=pf, etype=np.zeros(n, np.int8), cat=inst,
                         names=self.names())

    _AGGREGATES = (("SECTOR", "exp_sector"), ("GEOGRAPHIC", "exp_country"), ("CURRENCY", "exp_currency"),
                   ("ASSET_CLASS", "exp_asset"))

    def aggregate_exposures(self, ps: np.ndarray, record: bool = True) -> Exposures:
        """SECTOR, GEOGRAPHIC, CURRENCY and ASSET_CLASS rows of the portfolios ps. ``record`` (the
        time series): the categories whose value changed since their last row and whose percentage
        moved more than epsilon, or to or from zero; every non-zero one of a portfolio whose
        heartbeat is due. Otherwise (a whole map): every non-zero category. One compiled pass per
        type (``aggregate_rows_nb``) into columns sized for every category of every portfolio."""
        book = self.book
        a = book.a
        ps = np.asarray(ps, np.int64)
        totals = self._totals(ps).astype(np.float64)
        force = self.exp_force[ps] if record else np.zeros(len(ps), np.bool_)
        axes = [(etype, getattr(a, field), book._exposure_axis(t)[1], t)
                for etype, (t, field) in enumerate(self._AGGREGATES, 1)]
        m = len(ps) * sum(vals.shape[1] for _, vals, _, _ in axes)
        pf, cat, value = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64)
        et = np.empty(m, np.int8)
        pct, limit, util = np.empty(m), np.empty(m), np.empty(m)
        k = 0
        for etype, vals, lims, t in axes:
            last_v, last_p = self._last_agg(t, vals.shape[1]) if record else _NO_LAST_AGG
            k = aggregate_rows_nb(ps, totals, vals, lims, last_v, last_p, force, self.eps, record, etype, k,
                                  pf, et, cat, value, pct, limit, util)
        if record:
            self.exp_force[ps] = False
        return Exposures(None, None, None, value[:k], pct[:k], limit[:k], util[:k], pf=pf[:k], etype=et[:k],
                         cat=cat[:k], names=self.names())

    def _last_agg(self, t: str, C: int) -> tuple[np.ndarray, np.ndarray]:
        """(value, percentage) last written per (portfolio, category) of an aggregate type."""
        P = len(self.exp_force)
        v, pc = self.last_agg.get(t, (np.zeros((0, 0), np.int64), np.zeros((0, 0))))
        if v.shape[0] < P or v.shape[1] < C:
            nv, npc = np.zeros((P, max(C, v.shape[1])), np.int64), np.zeros((P, max(C, v.shape[1])))
            nv[: v.shape[0], : v.shape[1]], npc[: v.shape[0], : v.shape[1]] = v, pc
            v, pc = nv, npc
            self.last_agg[t] = (v, pc)
        return v, pc

    def exposures(self, ps: np.ndarray) -> Exposures:
        """Every non-zero exposure category, all five types, of the portfolios ps (a whole map), ids
        as ints: only the write-behind thread resolves a Names (its mirrors are not shared)."""
        a = self.book.a
        segs = [a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]] for p in ps.tolist()]
        sl = np.concatenate(segs).astype(np.int64) if segs else np.zeros(0, np.int64)
        heads = sl[a.positions["head"][sl] == sl]
        return Exposures.concat([self.instrument_exposures(heads, record=False, nonzero=True),
                                 self.aggregate_exposures(ps, record=False)])

    def _cash(self, ps: np.ndarray) -> list:
        """(portfolio id, currency, cents) rows: non-zero balances, and zero ones of currencies the
        portfolio has held or has exposure in (a balance back at 0 must overwrite the old row)."""
        book = self.book
        a = book.a
        ps = np.asarray(ps, np.int64)
        C = min(len(book.currency_ids), a.cash.shape[1])
        m = len(ps) * C
        pf, ccy, amount = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, a.cash.dtype)
        k = cash_rows_nb(a.cash, a.exp_currency, self.ccy_seen, ps, C, pf, ccy, amount)
        return list(zip(self.ids(book.portfolio_ids.ids)[pf[:k]].tolist(),
                        self.ids(book.currency_ids.ids)[ccy[:k]].tolist(), amount[:k].tolist()))

    def _redis_lists(self, P: int) -> tuple[dict, Exposures | None]:
        """Whole position lists (ACTIVE, PENDING, SUSPENDED; not CLOSED or FREE) and whole exposure
        maps of up to k changed portfolios, round robin, for positions:{id} and exposures:{id}."""
        book = self.book
        a = book.a
        cand = np.flatnonzero(self.redis_dirty[:P])
        if not len(cand):
            return {}, None
        cand = np.concatenate([cand[cand >= self.redis_cursor], cand[cand < self.redis_cursor]])[: self.k_redis]
        self.redis_cursor = int(cand[-1]) + 1
        self.redis_dirty[cand] = False
        segs = [a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]] for p in cand.tolist()]
        sl = np.concatenate(segs).astype(np.int64)
        own = np.repeat(np.arange(len(cand)), [len(x) for x in segs])
        st = a.positions["status"][sl]
        keep = (st != PositionStatus.FREE) & (st != PositionStatus.CLOSED)
        sl, own = sl[keep], own[keep]
        P_ = a.positions
        qty, mv, status, upd = P_["qty"][sl], P_["mv"][sl], P_["status"][sl], P_["updated_ns"][sl]
        w = self._pct(sl, mv)
        cost = self._cost_base(sl)
        pids, inst = self.ids(book.slot_ids)[sl], self.ids(book.instrument_ids.ids)[P_["instrument"][sl]]
        cuts = np.searchsorted(own, np.arange(len(cand) + 1))
        out = {}
        for j, p in enumerate(cand.tolist()):
            r = slice(cuts[j], cuts[j + 1])
            out[book.portfolio_ids.ids[p]] = Positions(pids[r], [], inst[r], qty[r], cost[r], mv[r], w[r], status[r],
                                                       upd[r], qty[r], mv[r], w[r], np.zeros(r.stop - r.start, np.bool_))
        return out, self.exposures(cand)
