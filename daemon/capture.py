"""Change capture for the write-behind thread: what changed since the last hand-off, as a ChangeSet.

Owns: ``ChangeCapture``. On the hot path it only marks traded slots dirty (one
vectorized store per run) and appends the few non-trade commands it must copy
(cash flows, portfolios, instruments, limits). ``take`` then builds one
``persistence.changes.ChangeSet`` with NumPy gathers: the dirty positions (old
values are the ones last handed off, so a hand-off that waited coalesces, never
loses), and on snapshot hand-offs the changed portfolios' state, margin,
exposures and cash. Cost depends on what changed, never on how many updates
changed it, except the revaluation pass, which compares a bounded window of
slots per call.
Runs on: the engine thread (the live book), or the write-behind thread over a
private scratch book during catch-up. Imports: numpy, daemon.book, persistence.changes.
"""
from __future__ import annotations

import numpy as np

from portfolio_state.kernels import EXPOSURE_TYPE_NAMES, PositionStatus
from portfolio_state.kernels.enums import PF_LONG_ONLY
from portfolio_state.persistence.changes import ChangeSet, Exposures, Positions, States

from .book import Book


def _grow(x: np.ndarray, n: int, fill=0) -> np.ndarray:
    return x if len(x) >= n else np.concatenate([x, np.full(max(n, 2 * len(x)) - len(x), fill, x.dtype)])


class ChangeCapture:
    def __init__(self, book: Book, redis_positions_per_flush: int = 0, revalue_max_rows: int = 1_000_000,
                 weight_epsilon: float = 1e-4):
        self.book = book
        self.k_redis = redis_positions_per_flush
        self.reval_rows = revalue_max_rows
        self.eps = weight_epsilon
        self.reval_cursor = 0
        self.dirty = np.zeros(0, np.bool_)
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
        self.cash_flows: list = []
        self.portfolios: list = []
        self.instruments: list = []
        self.limits: list = []
        self.seq = 0
        self._fit()
        self.mark_persisted()

    def _fit(self) -> None:
        a = self.book.a
        n = len(a.positions)
        if len(self.dirty) < n:
            self.dirty = _grow(self.dirty, n)
            self.last_qty, self.last_mv, self.last_cost = (_grow(x, n) for x in (self.last_qty, self.last_mv, self.last_cost))
            self.last_w, self.last_status = _grow(self.last_w, n), _grow(self.last_status, n)
        P = len(a.portfolios)
        if len(self.versions) < P:
            self.versions = _grow(self.versions, P, -1)
            self.snap_dirty, self.redis_dirty = _grow(self.snap_dirty, P), _grow(self.redis_dirty, P)
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
        self.dirty[:] = False

    # -------------------------------------------------------------- hot path
    def note_trades(self, slot: np.ndarray, ok: np.ndarray) -> None:
        if len(self.dirty) < len(self.book.a.positions):
            self._fit()
        self.dirty[slot[ok]] = True

    def note_status(self, s: int) -> None:
        self._fit()
        self.dirty[s] = True

    # -------------------------------------------------------------- hand-off
    def take(self, seq_hi: int, now_ns: int, snapshot: bool = False, revalue: bool = False, full: bool = False,
             metrics: dict | None = None) -> ChangeSet | None:
        """A ChangeSet of everything since the last take, covering journal records up to seq_hi;
        None when nothing changed. ``full``: every position and portfolio (a resync)."""
        self._fit()
        book = self.book
        a = book.a
        n = len(book.slot_ids)
        P = len(book.portfolio_ids)
        moved = a.portfolios["version"][:P] != self.versions[:P]
        self.snap_dirty[:P] |= moved
        self.redis_dirty[:P] |= moved
        self.versions[:P] = a.portfolios["version"][:P]
        slots = np.flatnonzero(self.dirty[:n])
        if full:
            live = a.positions["status"][:n] != PositionStatus.FREE
            slots = np.flatnonzero(live)
        elif revalue and n:
            slots = np.union1d(slots, self._revalued(n))
        cs = ChangeSet(self.seq, seq_hi, now_ns, full=full, metrics=metrics)
        if len(slots):
            cs.positions = self._positions(slots, change=self.dirty[slots].copy())
            self.dirty[slots] = False
        if snapshot or full:
            ps = np.arange(P) if full else np.flatnonzero(self.snap_dirty[:P])
            if len(ps):
                cs.states = self.states(ps)
                cs.exposures = self.exposures(ps)
                cs.cash = self._cash(ps)
                self.snap_dirty[ps] = False
            if self.k_redis:
                cs.redis_positions = self._redis_positions(P)
        cs.cash_flows, self.cash_flows = self.cash_flows, []
        cs.portfolios, self.portfolios = self.portfolios, []
        cs.instruments, self.instruments = self.instruments, []
        cs.limits, self.limits = self.limits, []
        if full:
            cs.portfolios = [book.portfolio_meta(p) for p in range(P)]
            cs.instruments = [book.instrument_meta(k) for k in range(len(book.instrument_ids))]
            cs.limits = book.limit_rows()
        self.seq = seq_hi
        if not cs.rows() and not cs.redis_positions and metrics is None and not full:
            return None
        return cs

    def exact(self) -> None:
        """From now on, revaluation passes scan every slot and rewrite any weight that moved at all
        (the final hand-off at shutdown)."""
        self.eps, self.reval_rows, self.reval_cursor = 0.0, 1 << 62, 0

    def heartbeat(self) -> None:
        """Every portfolio gets a snapshot at the next snapshot hand-off."""
        self.snap_dirty[: len(self.book.portfolio_ids)] = True

    # -------------------------------------------------------------- pieces
    def _ratio(self, inst: np.ndarray, base: np.ndarray) -> np.ndarray:
        a = self.book.a
        ccy = a.instruments["currency"][inst]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ccy == base, 1.0, a.fx[ccy] / a.fx[base])

    def _cost_base(self, slots: np.ndarray) -> np.ndarray:
        """Cost basis in base cents, rounded half-even like the queries (a flat position needs no rate)."""
        a = self.book.a
        pos = a.positions[slots]
        owner = np.maximum(pos["portfolio"], 0)
        ratio = self._ratio(pos["instrument"], a.portfolios["base_ccy"][owner])
        cost = pos["cost"]
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

    def _revalued(self, n: int) -> np.ndarray:
        """Slots in the next window whose value, quantity, cost or status differs from what was
        handed off, or whose weight moved more than epsilon (a bounded, resumable scan)."""
        lo = self.reval_cursor if self.reval_cursor < n else 0
        hi = min(n, lo + self.reval_rows)
        self.reval_cursor = hi if hi < n else 0
        pos = self.book.a.positions[lo:hi]
        w = self._weights(pos)
        idx = np.arange(lo, hi)
        differs = ((pos["mv"] != self.last_mv[lo:hi]) | (pos["qty"] != self.last_qty[lo:hi])
                   | (pos["status"] != self.last_status[lo:hi]) | (np.abs(w - self.last_w[lo:hi]) > self.eps))
        differs &= pos["status"] != PositionStatus.FREE
        return idx[differs]

    def _positions(self, slots: np.ndarray, change: np.ndarray) -> Positions:
        book = self.book
        a = book.a
        pos = a.positions[slots]
        w = self._weights(pos)
        cost = self._cost_base(slots)
        out = Positions(
            position_id=[book.slot_ids[s] for s in slots.tolist()],
            portfolio_id=[book.portfolio_ids.ids[p] for p in pos["portfolio"].tolist()],
            instrument_id=[book.instrument_ids.ids[k] for k in pos["instrument"].tolist()],
            qty=pos["qty"].copy(), cost=cost, mv=pos["mv"].copy(), weight=w, status=pos["status"].copy(),
            updated_ns=pos["updated_ns"].copy(), old_qty=self.last_qty[slots].copy(),
            old_mv=self.last_mv[slots].copy(), old_weight=self.last_w[slots].copy(), change=change)
        self.last_qty[slots], self.last_mv[slots], self.last_w[slots] = out.qty, out.mv, w
        self.last_cost[slots], self.last_status[slots] = cost, out.status
        return out

    def states(self, ps: np.ndarray) -> States:
        """PortfolioState and MarginRequirement numbers, vectorized (the formulas of kernels.views)."""
        book = self.book
        rows = book.a.portfolios[ps]
        cash = rows["cash_base"]
        invested = rows["long_mv"] + rows["short_mv"]
        gross = rows["long_mv"] - rows["short_mv"]
        total = cash + invested
        im, mm = rows["init_margin"], rows["maint_margin"]
        avail = np.maximum(0, total - im)
        avail_cash = np.maximum(0, np.minimum(cash, total - im))
        with np.errstate(invalid="ignore", divide="ignore"):
            lev = np.where(gross == 0, 0.0, np.where(total <= 0, np.inf, gross / np.where(total == 0, 1, total)))
        long_only = (rows["flags"] & PF_LONG_ONLY) != 0
        bp = np.where(long_only, avail_cash, avail * 2)  # Reg T: excess / 0.5
        return States([book.portfolio_ids.ids[p] for p in ps.tolist()], total, cash, invested, avail_cash, im, avail,
                      lev, rows["position_count"].copy(), im.copy(), mm.copy(), total - mm, bp, rows["updated_ns"].copy())

    def exposures(self, ps: np.ndarray) -> Exposures:
        """Every non-zero exposure category of the portfolios ps."""
        book = self.book
        a = book.a
        totals = self._totals(ps).astype(np.float64)
        pid, typ, cat, val, lim = [], [], [], [], []
        # INSTRUMENT: head slots with a non-zero net exposure
        segs = [a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]] for p in ps.tolist()]
        own = np.repeat(np.arange(len(ps)), [len(s) for s in segs])
        sl = np.concatenate(segs).astype(np.int64) if segs else np.zeros(0, np.int64)
        heads = a.positions["head"][sl] == sl
        ie = a.positions["inst_exp"][sl]
        keep = heads & (ie != 0)
        sl, own, ie = sl[keep], own[keep], ie[keep]
        inst = a.positions["instrument"][sl]
        pids = book.portfolio_ids.ids
        for j, s_own, k, v in zip(range(len(sl)), own.tolist(), inst.tolist(), ie.tolist()):
            p = int(ps[s_own])
            pid.append(pids[p])
            typ.append("INSTRUMENT")
            cat.append(book.instrument_ids.ids[k])
            val.append(v)
            lim.append(book.instrument_limits.get((p, k), float(a.portfolios["inst_limit"][p])))
        tot_rows = [totals[own]]
        for t in EXPOSURE_TYPE_NAMES[1:]:
            interner, lims = book._exposure_axis(t)
            vals = {"SECTOR": a.exp_sector, "GEOGRAPHIC": a.exp_country, "CURRENCY": a.exp_currency,
                    "ASSET_CLASS": a.exp_asset}[t][ps]
            r, c = np.nonzero(vals)
            pid += [pids[p] for p in ps[r].tolist()]
            typ += [t] * len(r)
            cat += [interner.ids[x] for x in c.tolist()]
            val += vals[r, c].tolist()
            lim += lims[ps[r], c].tolist()
            tot_rows.append(totals[r])
        value = np.array(val, np.int64)
        limit = np.array(lim, np.float64)
        tot = np.concatenate(tot_rows) if tot_rows else np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = np.where(tot != 0, value / np.where(tot == 0, 1, tot), 0.0)
            util = np.where(limit > 0, np.abs(pct) / limit, np.nan)
        return Exposures(pid, typ, cat, value, pct, limit, util)

    def _cash(self, ps: np.ndarray) -> list:
        book = self.book
        c = book.a.cash[ps][:, : len(book.currency_ids)]
        # non-zero balances, and zero ones of currencies the portfolio has held (a balance back at 0
        # must overwrite the old row): a currency with any exposure row or cash ever is cheap to include
        C = c.shape[1]
        held = (c != 0) | (book.a.exp_currency[ps][:, :C] != 0) | self.ccy_seen[ps, :C]
        self.ccy_seen[ps, :C] |= c != 0
        r, k = np.nonzero(held)
        return [(book.portfolio_ids.ids[p], book.currency_ids.ids[x], int(v))
                for p, x, v in zip(ps[r].tolist(), k.tolist(), c[r, k].tolist())]

    def _redis_positions(self, P: int) -> dict:
        """Whole position lists (ACTIVE, PENDING, SUSPENDED; not CLOSED or FREE) of up to k changed
        portfolios, round robin, for positions:{id}."""
        book = self.book
        a = book.a
        cand = np.flatnonzero(self.redis_dirty[:P])
        if not len(cand):
            return {}
        cand = np.concatenate([cand[cand >= self.redis_cursor], cand[cand < self.redis_cursor]])[: self.k_redis]
        self.redis_cursor = int(cand[-1]) + 1
        self.redis_dirty[cand] = False
        out = {}
        for p in cand.tolist():
            sl = a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]].astype(np.int64)
            st = a.positions["status"][sl]
            sl = sl[(st != PositionStatus.FREE) & (st != PositionStatus.CLOSED)]
            pos = a.positions[sl]
            w = self._weights(pos)
            out[book.portfolio_ids.ids[p]] = Positions(
                [book.slot_ids[s] for s in sl.tolist()], [], [book.instrument_ids.ids[k] for k in pos["instrument"].tolist()],
                pos["qty"], self._cost_base(sl), pos["mv"], w, pos["status"], pos["updated_ns"],
                pos["qty"], pos["mv"], w, np.zeros(len(sl), np.bool_))
        return out
