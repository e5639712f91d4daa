"""Event building: coalesce what changed since the last flush into one event per portfolio.

Owns: ``EventBuilder``: on the hot path it only marks traded slots dirty (one
vectorized store per batch); at flush it finds the changed portfolios (seqlock
versions moved), diffs each dirty position against the quantity last published
and each touched exposure category against the percentage last published (all
five exposure types in one compiled call, ``exposure_changes_nb``), and encodes
one ``portfolio_state_updated`` event per portfolio with its next sequence
number. Flush cost depends on what changed, never on how many updates changed it.

Meanings: ``old_quantity`` / ``old_percentage`` are the values in the previous
event that carried that position / category (0 before any), ``new_*`` are the
values now.
Runs on: the engine thread (flush runs after the batch's replies have left).
Imports: numpy, numba, msgspec, daemon.book, daemon.marks, kernels, persistence.changes, transport.

A flush happens after every batch when ``engine.event_interval_ms`` is 0, else at
most once per interval: either way at most one event per portfolio per applied
batch, and fewer under load, which is what keeps events off the critical path.
"""
from __future__ import annotations

import math
import os
import time

import msgspec
import numpy as np
from numba import njit

from portfolio_state.kernels import EXPOSURE_TYPE_NAMES
from portfolio_state.kernels.enums import QTY_SCALE
from portfolio_state.kernels.views import leverage
from portfolio_state.persistence.changes import change_type as _change_type
from portfolio_state.transport import messages as m

from .book import Book
from .marks import PortfolioMarks


class EventBuilder:
    def __init__(self, book: Book, revaluation_events: bool = True):
        self.book = book
        self.reval = revaluation_events
        self.seq = np.zeros(0, np.int64)
        self.last_versions = book.a.portfolios["version"].copy()
        self.marks = PortfolioMarks()             # per portfolio: slots traded or re-statused since its last event
        self.last_qty = np.zeros(0, np.int64)     # per slot: quantity in the last event
        self.pub_inst = np.zeros(0, np.float64)   # per head slot: INSTRUMENT percentage in the last event
        self.pub = [np.zeros((0, 0))] * 4         # per portfolio x category: last SECTOR..ASSET_CLASS percentages
        self._touched: set[int] = set()           # portfolios changed by non-trade commands
        self._cursor = 0                          # round robin: the next flush starts at this portfolio
        self._total = np.zeros(0)                 # per portfolio: total_value at this flush (those reported)
        self.backlog = 0                          # changed portfolios left for the next flush
        self._enc = msgspec.msgpack.Encoder()
        self._run = os.urandom(4).hex()
        self.count = 0

    def _fit(self) -> None:
        """Follow the book's growth (rare): keep the per-slot and per-category arrays its size."""
        a = self.book.a
        n = a.positions.shape[0]
        self.marks.fit(n, a.portfolios.shape[0])
        if len(self.last_qty) < n:
            grow = lambda x: np.concatenate([x, np.zeros(n - len(x), x.dtype)])  # noqa: E731
            self.last_qty, self.pub_inst = grow(self.last_qty), grow(self.pub_inst)
        for i, arr in enumerate((a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset)):
            if self.pub[i].shape != arr.shape:
                new = np.zeros(arr.shape)
                old = self.pub[i]
                new[: old.shape[0], : old.shape[1]] = old
                self.pub[i] = new

    # -------------------------------------------------------------- hot path
    def note_trades(self, slot, ok) -> None:
        a = self.book.a
        if len(self.marks.nxt) < a.positions.shape[0] or len(self.marks.head) < a.portfolios.shape[0]:
            self._fit()
        self.marks.mark(slot[ok], a.positions["portfolio"])

    def note_status(self, s: int) -> None:
        self._fit()
        self.marks.mark(np.array([s], np.int64), self.book.a.positions["portfolio"])

    def touch(self, p: int) -> None:
        self._touched.add(p)

    def sequence(self, p: int) -> int:
        return int(self.seq[p]) if p < len(self.seq) else 0

    # -------------------------------------------------------------- flush
    def flush(self, max_events: int = 0, max_positions: int = 0) -> list[tuple[bytes, bytes]]:
        """Events for the changed portfolios, taken round robin: at most ``max_events`` of them and,
        past the first, no more than ``max_positions`` changed positions in all (0: no cap). The
        rest keep their marks for the next flush (``backlog`` says how many), so one flush never
        holds the loop for long, every changed portfolio is reported within a bounded number of
        flushes, and a flush costs what it reports, not what is still waiting."""
        book = self.book
        a = book.a
        self._fit()
        versions = a.portfolios["version"]
        n_pf = len(book.portfolio_ids)
        if len(self.seq) < n_pf:
            self.seq = np.concatenate([self.seq, np.zeros(max(n_pf, 2 * len(self.seq)) - len(self.seq), np.int64)])
        if len(self.last_versions) < len(versions):
            self.last_versions = np.concatenate([self.last_versions,
                                                 np.full(len(versions) - len(self.last_versions), -2, np.int64)])
        changed = self.marks.count[:n_pf] != 0
        if self.reval:
            changed |= versions[:n_pf] != self.last_versions[:n_pf]
        for p in self._touched:
            if 0 <= p < n_pf:
                changed[p] = True
        ps_all = np.flatnonzero(changed)
        ps = ps_all
        if (max_events and len(ps) > max_events) or max_positions:
            k = int(np.searchsorted(ps_all, self._cursor))
            ps = np.concatenate([ps_all[k:], ps_all[:k]])  # from the cursor on, wrapping around
            if max_events:
                ps = ps[:max_events]
            if max_positions:
                ps = ps[:max(1, int(np.searchsorted(np.cumsum(self.marks.count[ps]), max_positions, "right")))]
            if len(ps):
                self._cursor = int(ps[-1]) + 1
            ps.sort()
        self.backlog = len(ps_all) - len(ps)
        if not len(ps):
            return []
        rows = a.portfolios[ps]
        cash, lmv, smv = rows["cash_base"], rows["long_mv"], rows["short_mv"]
        total = cash + lmv + smv
        if len(self._total) < n_pf:
            self._total = np.zeros(max(n_pf, 2 * len(self._total)))
        self._total[ps] = total  # total_value of each reported portfolio, for the percentages below
        with np.errstate(invalid="ignore", divide="ignore"):  # x / 0 is masked out wherever it happens
            pos_changes, exp_changes = self._diff(self.marks.take(ps))
        self.last_versions[ps] = versions[ps]
        if self._touched:
            self._touched.difference_update(ps.tolist())
        self.seq[ps] += 1
        seqs = self.seq[ps].tolist()
        upd = rows["updated_ns"]
        stamps = np.datetime_as_string(upd.astype("datetime64[ns]"), unit="us").tolist()
        now = np.datetime_as_string(np.datetime64(time.time_ns(), "ns"), unit="ms") + "Z"
        ids = book.portfolio_ids.ids
        out = []
        enc = self._enc.encode
        for p, seq, tv, cb, lm, sm, cnt, u, stamp in zip(ps.tolist(), seqs, total.tolist(), cash.tolist(), lmv.tolist(),
                                                         smv.tolist(), rows["position_count"].tolist(), upd.tolist(),
                                                         stamps):
            pid = ids[p]
            ev = m.PortfolioStateUpdatedEvent(
                f"{self._run}-{p}-{seq}", now, seq,
                m.PortfolioStatePayload(pid, tv / 100, cb / 100, (lm + sm) / 100, leverage(lm - sm, tv), cnt,
                                        stamp + "Z" if u else None),
                pos_changes.get(p, []), exp_changes.get(p, []))
            out.append((pid.encode(), enc(ev)))
        self.count += len(out)
        return out

    def _diff(self, ds):
        """{portfolio: [PositionChangePayload]}, {portfolio: [ExposureChangePayload]} for the marked
        slots ``ds`` (ascending) of the portfolios being reported."""
        book = self.book
        a = book.a
        if not len(ds):
            return {}, {}
        pos = a.positions[ds]
        p = pos["portfolio"].astype(np.int64)
        new_q = pos["qty"]
        old_q = self.last_qty[ds]
        self.last_qty[ds] = new_q
        total = self._total[p]
        weight = np.where(total != 0, pos["mv"] / total, 0.0)
        P = m.PositionChangePayload
        ids, inst_ids = book.slot_ids, book.instrument_ids.ids
        positions: dict[int, list] = {}
        for s, pp, o, n, mv, w, k in zip(ds.tolist(), p.tolist(), old_q.tolist(), new_q.tolist(), pos["mv"].tolist(),
                                         weight.tolist(), pos["instrument"].tolist()):
            positions.setdefault(pp, []).append(P(ids[s], inst_ids[k], o / QTY_SCALE, n / QTY_SCALE, (n - o) / QTY_SCALE,
                                                  mv / 100, w, _change_type(o, n)))
        return positions, self._exposure_changes(ds, p, pos)

    def _exposure_changes(self, ds, p, pos) -> dict:
        book = self.book
        a = book.a
        names = (book.instrument_ids.ids, book.sector_ids.ids, book.country_ids.ids, book.currency_ids.ids,
                 book.asset_class_ids.ids)
        out: dict[int, list] = {}
        E = m.ExposureChangePayload
        # every row in one compiled call: a handful of NumPy calls per exposure type cost more than
        # the rows they compute at a flush's sizes
        keys, vals, ends = exposure_changes_nb(  # contiguous columns: the signature warm-up compiled
            np.ascontiguousarray(pos["head"]), p, np.ascontiguousarray(pos["instrument"]), a.positions, a.portfolios,
            a.instruments, self._total,
            (a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset),
            (a.lim_sector, a.lim_country, a.lim_currency, a.lim_asset), self.pub_inst, tuple(self.pub))
        keys, vals, lo = keys.tolist(), vals.tolist(), 0
        limits = book.instrument_limits
        for t, hi in enumerate(ends.tolist()):
            tname, tnames = EXPOSURE_TYPE_NAMES[t], names[t]
            for (pp, c), (o, n, li, u) in zip(keys[lo:hi], vals[lo:hi]):
                if t == 0 and limits and (pp, c) in limits:  # a limit for this one instrument
                    li = limits[pp, c]
                    u = abs(n) / li if li > 0 else math.nan
                out.setdefault(pp, []).append(E(tname, tnames[c], o, n, n - o, li, u))
            lo = hi
        return out


@njit(cache=True)
def exposure_changes_nb(heads, p, inst, positions, portfolios, instruments, total, exps, lims, pub_inst,
                        pubs):  # pragma: no cover - compiled
    """The exposure rows of one flush, by type: INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY, ASSET_CLASS.

    heads, p, inst: the head slot, portfolio and instrument of each changed slot; total: total_value
    per portfolio (float). INSTRUMENT: one row per distinct head slot, ascending, keyed
    (portfolio, instrument), its value the head's ``inst_exp``, its limit the portfolio's
    ``inst_limit`` (the caller applies per-instrument limits), published in ``pub_inst`` per head.
    The other types: one row per distinct (portfolio, category) of the slots, ascending, from
    ``exps``, ``lims`` and ``pubs`` ([portfolio, category] per type). Each row: keys = (portfolio,
    instrument or category), vals = (old percentage (the published one), new = value / total (0
    when total is 0), limit, utilization = |new| / limit (NaN without a limit)); the published
    percentage becomes the new one. Type t's rows end at ends[t].
    """
    n = p.shape[0]
    keys = np.empty((5 * n, 2), np.int64)
    vals = np.empty((5 * n, 4), np.float64)
    ends = np.empty(5, np.int64)
    m = 0
    for h in np.unique(heads):
        pos = positions[h]
        tot = total[pos.portfolio]
        new = pos.inst_exp / tot if tot != 0 else 0.0
        li = portfolios[pos.portfolio].inst_limit
        keys[m, 0] = pos.portfolio
        keys[m, 1] = pos.instrument
        vals[m, 0] = pub_inst[h]
        vals[m, 1] = new
        vals[m, 2] = li
        vals[m, 3] = abs(new) / li if li > 0 else np.nan
        pub_inst[h] = new
        m += 1
    ends[0] = m
    key = np.empty(n, np.int64)
    for t in range(4):
        for j in range(n):
            ins = instruments[inst[j]]
            c = ins.sector if t == 0 else ins.country if t == 1 else ins.currency if t == 2 else ins.asset_class
            key[j] = (p[j] << 32) | np.int64(c)
        exp, lim, pub = exps[t], lims[t], pubs[t]
        for k in np.unique(key):
            pp = k >> 32
            c = k & 0xFFFFFFFF
            tot = total[pp]
            new = exp[pp, c] / tot if tot != 0 else 0.0
            li = lim[pp, c]
            keys[m, 0] = pp
            keys[m, 1] = c
            vals[m, 0] = pub[pp, c]
            vals[m, 1] = new
            vals[m, 2] = li
            vals[m, 3] = abs(new) / li if li > 0 else np.nan
            pub[pp, c] = new
            m += 1
        ends[t + 1] = m
    return keys[:m], vals[:m], ends


def _iso(ns: int) -> str | None:
    if not ns:
        return None
    return np.datetime_as_string(np.datetime64(ns, "ns"), unit="us") + "Z"
