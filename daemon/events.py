"""Event building: coalesce what changed since the last flush into one event per portfolio.

Owns: ``EventBuilder``: on the hot path it only marks traded slots dirty (one
vectorized store per batch); at flush it finds the changed portfolios (marked
slots, or seqlock versions moved: one compiled pass, ``changed_portfolios_nb``,
and compiled bookkeeping after it, since a flush of one event used to spend most
of its ~60 µs in a chain of small NumPy calls), diffs each dirty position against the quantity last published
and each touched exposure category against the percentage last published (all
five exposure types in one compiled call, ``exposure_changes_nb``), and writes
one ``portfolio_state_updated`` event per portfolio with its next sequence
number, the msgpack bytes msgspec would write for the Structs, in a second
compiled call (``encode_events_nb``; ids and names pre-encoded once, in
``transport.msgpack_nb.Pool``s). No Python object per event or row is built.
Flush cost depends on what changed, never on how many updates changed it.

Meanings: ``old_quantity`` / ``old_percentage`` are the values in the previous
event that carried that position / category (0 before any), ``new_*`` are the
values now.
Runs on: the engine thread (flush runs after the batch's replies have left).
Imports: numpy, numba, daemon.book, daemon.marks, kernels, transport (messages, msgpack_nb).

A flush happens after every batch when ``engine.event_interval_ms`` is 0, else at
most once per interval: either way at most one event per portfolio per applied
batch, and fewer under load, which is what keeps events off the critical path.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from numba import njit

from portfolio_state.kernels import EXPOSURE_TYPE_NAMES
from portfolio_state.kernels.enums import QTY_SCALE
from portfolio_state.transport import messages as m
from portfolio_state.transport.msgpack_nb import (Pool, decimal_digits_nb, literals, put_array_header_nb, put_float_nb,
                                                  put_int_nb, put_iso_nb, put_item_nb, put_nil_nb,
                                                  put_str_header_nb)

from .book import Book
from .marks import PortfolioMarks


#: a flush's slot rows when no slot is marked: (slots, old quantities, exposure keys, values, ends)
_NO_ROWS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros((0, 4)),
            np.zeros(5, np.int64))  # (writeable, as the compiled encoder's other callers pass them: no new specialization)


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
        self._touched = np.zeros(0, np.int8)      # per portfolio: 1 = changed by a non-trade command since its event
        self._cursor = 0                          # round robin: the next flush starts at this portfolio
        self._total = np.zeros(0)                 # per portfolio: total_value at this flush (those reported)
        self._ps = np.zeros(0, np.int64)          # scratch: the changed portfolios of a flush
        self._fitted = None                       # the BookArrays _fit last followed
        self.backlog = 0                          # changed portfolios left for the next flush
        self._pools = [Pool([]) for _ in range(7)]  # encoded ids and names (see pools)
        self._names = None                        # the category pools' (data, offs) tuples, for the encoder
        self._buf = np.empty(1 << 16, np.uint8)   # the flush's encoded events, grown when one does not fit
        self.run = os.urandom(4).hex()            # event_id = run-portfolio-sequence
        self._run_id = np.frombuffer(self.run.encode(), np.uint8)
        self.count = 0

    def _fit(self) -> None:
        """Follow the book's growth (rare): keep the per-slot and per-category arrays its size."""
        a = self._fitted = self.book.a
        n = a.positions.shape[0]
        self.marks.fit(n, a.portfolios.shape[0])
        if len(self.last_versions) < a.portfolios.shape[0]:  # -2: no version seen, reported at the next flush
            self.last_versions = np.concatenate([self.last_versions, np.full(
                a.portfolios.shape[0] - len(self.last_versions), -2, np.int64)])
        if len(self._touched) < a.portfolios.shape[0]:
            self._touched = np.concatenate([self._touched, np.zeros(a.portfolios.shape[0] - len(self._touched), np.int8)])
        if len(self.last_qty) < n:
            grow = lambda x: np.concatenate([x, np.zeros(n - len(x), x.dtype)])  # noqa: E731
            self.last_qty, self.pub_inst = grow(self.last_qty), grow(self.pub_inst)
        for i, arr in enumerate((a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset)):
            if self.pub[i].shape != arr.shape:
                new = np.zeros(arr.shape)
                old = self.pub[i]
                new[: old.shape[0], : old.shape[1]] = old
                self.pub[i] = new

    def _follow(self) -> None:
        """_fit when the book grew since the last one (growth builds a new BookArrays)."""
        if self.book.a is not self._fitted:
            self._fit()

    # -------------------------------------------------------------- hot path
    def note_trades(self, slot, ok) -> None:
        self._follow()
        self.marks.mark(slot[ok], self.book.a.positions["portfolio"])

    def note_status(self, s: int) -> None:
        self._follow()
        self.marks.mark(np.array([s], np.int64), self.book.a.positions["portfolio"])

    def touch(self, p: int) -> None:
        """Portfolio p (a book index) changed by a command other than a trade."""
        if p >= 0:
            self._follow()
            self._touched[p] = 1

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
        self._follow()
        a = book.a
        n_pf = len(book.portfolio_ids)
        if len(self.seq) < n_pf:
            self.seq = np.concatenate([self.seq, np.zeros(max(n_pf, 2 * len(self.seq)) - len(self.seq), np.int64)])
        if len(self._ps) < n_pf:  # scratch, per portfolio (sized apart from seq, which a checkpoint restores)
            self._total = np.zeros(max(n_pf, 2 * len(self._ps)))
            self._ps = np.empty(len(self._total), np.int64)
        n, marked = changed_portfolios_nb(self.marks.count, a.portfolios, self.last_versions, self._touched, n_pf,
                                          self.reval, self._ps)
        ps = ps_all = self._ps[:n]
        if (max_events and len(ps) > max_events) or (max_positions and marked > max_positions):
            k = int(np.searchsorted(ps_all, self._cursor))
            ps = np.concatenate([ps_all[k:], ps_all[:k]])  # from the cursor on, wrapping around
            if max_events:
                ps = ps[:max_events]
            if max_positions:
                ps = ps[:max(1, int(np.searchsorted(np.cumsum(self.marks.count[ps]), max_positions, "right")))]
            if len(ps):
                self._cursor = int(ps[-1]) + 1
            ps.sort()
        else:
            ps = ps.copy()  # (the scratch buffer is the next flush's)
        self.backlog = len(ps_all) - len(ps)
        if not len(ps):
            return []
        seqs = np.empty(len(ps), np.int64)
        # total_value of each reported portfolio (for the percentages below), its version seen, its next sequence
        stamp_portfolios_nb(ps, a.portfolios, self._total, self.last_versions, self._touched, self.seq, seqs)
        if marked:  # (over every changed portfolio, so over the ones reported too)
            ds = self.marks.take(ps)
            keys, vals, ends = self._exposure_rows(ds)
            old_q = np.empty(len(ds), np.int64)
            advance_quantities_nb(ds, a.positions, self.last_qty, old_q)
        else:  # no slot marked (cash flows, portfolio changes): the state part of the events only
            ds, old_q, keys, vals, ends = _NO_ROWS
        pools = self.pools()
        names = self._names
        if names is None:  # INSTRUMENT .. ASSET_CLASS, as the compiled encoder takes them; re-made when a pool grows
            names = self._names = (tuple(pools[i].data for i in range(2, 7)), tuple(pools[i].offs for i in range(2, 7)))
        args = (ps, seqs, a.portfolios, pools[0].data, pools[0].offs, self._run_id, time.time_ns(),
                ds, old_q, a.positions, self._total, pools[1].data, pools[1].offs,
                names[0], names[1], keys, vals, ends)
        ev_end = np.empty(len(ps), np.int64)
        w = encode_events_nb(self._buf, ev_end, *args)
        while w < 0:  # the buffer was too small (a flush larger than any before): grow it, write again
            self._buf = np.empty(max(2 * -w, 2 * len(self._buf)), np.uint8)
            w = encode_events_nb(self._buf, ev_end, *args)
        buf, ids, lo, out = self._buf, book.portfolio_ids.ids, 0, []
        for p, hi in zip(ps.tolist(), ev_end.tolist()):
            out.append((ids[p].encode(), buf[lo:hi].tobytes()))
            lo = hi
        self.count += len(out)
        return out

    def prepare(self) -> None:
        """Encode every id and name the book holds now (at start, before requests are served), so
        the first flush or single-update reply does not: ~0.2 s per million positions."""
        self._fit()
        self.pools()

    def pools(self) -> list[Pool]:
        """The encoded ids and names the events (and the replies to single updates) carry:
        portfolio, slot, instrument, then the four category axes; new ids encoded once, here."""
        book = self.book
        lists = (book.portfolio_ids.ids, book.slot_ids, book.instrument_ids.ids, book.sector_ids.ids,
                 book.country_ids.ids, book.currency_ids.ids, book.asset_class_ids.ids)
        pools = self._pools
        for i, names in enumerate(lists):
            if pools[i].names is not names:  # a book's lists are its own for life; this is a new book's
                pools[i] = Pool(names)
                self._names = None
            if len(names) != pools[i].n:
                pools[i].sync()
                self._names = None
        return pools

    def _exposure_rows(self, ds):
        """(keys, vals, ends) of ``exposure_changes_nb`` for the marked slots ``ds``, with the
        per-instrument limits applied (the published percentages move to the new ones)."""
        a = self.book.a
        if not len(ds):
            return np.zeros((0, 2), np.int64), np.zeros((0, 4)), np.zeros(5, np.int64)
        # every row in one compiled call: a handful of NumPy calls per exposure type cost more than
        # the rows they compute at a flush's sizes
        keys, vals, ends = exposure_changes_nb(
            np.ascontiguousarray(ds, np.int64), a.positions, a.portfolios, a.instruments, self._total,
            (a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset),
            (a.lim_sector, a.lim_country, a.lim_currency, a.lim_asset), self.pub_inst, tuple(self.pub))
        limits = self.book.instrument_limits
        if limits:  # a limit for one instrument replaces the portfolio's default for it
            for i, (pp, k) in enumerate(keys[:ends[0]].tolist()):
                li = limits.get((pp, k))
                if li is not None:
                    vals[i, 2] = li
                    vals[i, 3] = abs(vals[i, 1]) / li if li > 0 else math.nan
        return keys, vals, ends


@njit(cache=True)
def changed_portfolios_nb(count, portfolios, last_versions, touched, n_pf, reval, out):  # pragma: no cover
    """Write to ``out`` the portfolios below n_pf, ascending, with marked slots, ``touched`` (a
    non-trade command changed them) or (``reval``) a version moved since their last event; return
    how many, and how many slots they have marked."""
    n = 0
    marked = 0
    for p in range(n_pf):
        if count[p] != 0 or touched[p] != 0 or (reval and portfolios[p].version != last_versions[p]):
            out[n] = p
            n += 1
            marked += count[p]
    return n, marked


@njit(cache=True)
def stamp_portfolios_nb(ps, portfolios, total, last_versions, touched, seq, seqs):  # pragma: no cover - compiled
    """For each reported portfolio p of ``ps``: total[p] = its total_value now (cash_balance +
    long_mv + short_mv, cents, as float), last_versions[p] = its version, touched[p] cleared, and
    its next event sequence number, in seq[p] and seqs[i]."""
    for i in range(ps.shape[0]):
        p = ps[i]
        pf = portfolios[p]
        total[p] = np.float64(pf.cash_base + pf.long_mv + pf.short_mv)
        last_versions[p] = pf.version
        touched[p] = 0
        seq[p] += 1
        seqs[i] = seq[p]


@njit(cache=True)
def advance_quantities_nb(ds, positions, last_qty, old_q):  # pragma: no cover - compiled
    """old_q[j] = the quantity slot ds[j] had in its last event; that becomes its quantity now."""
    for j in range(ds.shape[0]):
        s = ds[j]
        old_q[j] = last_qty[s]
        last_qty[s] = positions[s].qty


@njit(cache=True)
def exposure_changes_nb(ds, positions, portfolios, instruments, total, exps, lims, pub_inst,
                        pubs):  # pragma: no cover - compiled
    """The exposure rows of one flush, by type: INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY, ASSET_CLASS.

    ds: the changed slots; total: total_value per portfolio (float). INSTRUMENT: one row per distinct head slot, ascending, keyed
    (portfolio, instrument), its value the head's ``inst_exp``, its limit the portfolio's
    ``inst_limit`` (the caller applies per-instrument limits), published in ``pub_inst`` per head.
    The other types: one row per distinct (portfolio, category) of the slots, ascending, from
    ``exps``, ``lims`` and ``pubs`` ([portfolio, category] per type). Each row: keys = (portfolio,
    instrument or category), vals = (old percentage (the published one), new = value / total (0
    when total is 0), limit, utilization = |new| / limit (NaN without a limit)); the published
    percentage becomes the new one. Type t's rows end at ends[t].
    """
    n = ds.shape[0]
    heads = np.empty(n, np.int64)
    p = np.empty(n, np.int64)
    inst = np.empty(n, np.int64)
    for j in range(n):
        pos = positions[ds[j]]
        heads[j], p[j], inst[j] = pos.head, pos.portfolio, pos.instrument
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


# the constant items of an event, pre-encoded: map keys in the Structs' field order, the tag, the names
_E, _S, _P, _X = (m.PortfolioStateUpdatedEvent, m.PortfolioStatePayload, m.PositionChangePayload,
                  m.ExposureChangePayload)
_EKd, _EKo = literals(_E.__struct_config__.tag_field, _E.__struct_config__.tag, *_E.__struct_fields__)
_SKd, _SKo = literals(*_S.__struct_fields__)
_PKd, _PKo = literals(*_P.__struct_fields__)
_XKd, _XKo = literals(*_X.__struct_fields__)
_E_MAP, _S_MAP, _P_MAP, _X_MAP = (0x80 | n for n in (len(_E.__struct_fields__) + 1, len(_S.__struct_fields__),
                                                     len(_P.__struct_fields__), len(_X.__struct_fields__)))
CHANGE_TYPES = ("OPEN", "INCREASE", "DECREASE", "CLOSE", "REVERSE", "STATUS")  # indexed by change_type_nb
_CTd, _CTo = literals(*CHANGE_TYPES)
_TYd, _TYo = literals(*EXPOSURE_TYPE_NAMES)
_FIXED = 1024  # bytes an event, a position row or an exposure row needs beyond its ids and names (~300, ~200, ~160)


@njit(cache=True)
def encode_events_nb(buf, ev_end, ps, seqs, portfolios, pid_data, pid_offs, run, now_ns, ds, old_q,
                     positions, total, slot_data, slot_offs, name_data, name_offs, keys, vals, ends):  # pragma: no cover
    """The msgpack bytes of one ``PortfolioStateUpdatedEvent`` per portfolio of ``ps`` (ascending),
    each ending at ev_end[e], exactly as msgspec encodes the Structs. Returns the bytes written, or
    minus a size ``buf`` must at least reach when it is too small (then only ``buf`` and ``ev_end``
    were written to, and the caller grows ``buf`` and calls again: the size covers the events up to
    the first that did not fit, and ~1 KiB for each after it).

    seqs: the events' sequence numbers; run: the run's id (ASCII), event_id = run-portfolio-sequence;
    now_ns: the events' timestamp (ISO, to the millisecond); last_updated: updated_ns, to the microsecond.
    ds / old_q: the reported slots (ascending) and their quantities in the last event; total: float
    total_value per portfolio. keys / vals / ends: ``exposure_changes_nb``'s rows. name_data /
    name_offs: encoded names per exposure type (instrument ids first), like the pools of portfolio
    ids (pid_*) and slot ids (slot_*).

    Money and quantities are float(x) / scale: the correctly rounded quotient Python's x / scale
    gives while |x| < 2**53 (90 trillion in cents, 9 billion units of quantity), within an ulp past it.
    """
    fbits = np.empty(1, np.float64)
    ibits = fbits.view(np.int64)
    idbuf = np.empty(64, np.uint8)
    n_ds = ds.shape[0]
    owner = np.empty(n_ds, np.int64)
    for j in range(n_ds):
        owner[j] = positions[ds[j]].portfolio
    order = np.argsort(owner, kind="mergesort")  # by portfolio, slots ascending within each
    xorder = np.empty(keys.shape[0], np.int64)     # exposure rows by type, by portfolio within a type
    cur = np.zeros(5, np.int64)
    lo = 0
    for t in range(5):
        hi = ends[t]
        o = np.argsort(keys[lo:hi, 0], kind="mergesort")
        for j in range(hi - lo):
            xorder[lo + j] = lo + o[j]
        cur[t] = lo
        lo = hi
    cnt = np.zeros(5, np.int64)
    cp = 0
    w = 0
    for e in range(ps.shape[0]):
        p = ps[e]
        pf = portfolios[p]
        # this event's rows, and a bound on its size
        need = _FIXED + pid_offs[p + 1] - pid_offs[p]
        npos = 0
        while cp + npos < n_ds and owner[order[cp + npos]] == p:
            s = ds[order[cp + npos]]
            k = positions[s].instrument
            need += _FIXED + slot_offs[s + 1] - slot_offs[s] + name_offs[0][k + 1] - name_offs[0][k]
            npos += 1
        nx = 0
        for t in range(5):
            c = 0
            while cur[t] + c < ends[t] and keys[xorder[cur[t] + c], 0] == p:
                i = keys[xorder[cur[t] + c], 1]
                need += _FIXED + name_offs[t][i + 1] - name_offs[t][i]
                c += 1
            cnt[t] = c
            nx += c
        if w + need > buf.shape[0]:
            return -(w + need + (ps.shape[0] - e) * _FIXED)
        # the event
        buf[w] = _E_MAP
        w += 1
        w = put_item_nb(buf, w, _EKd, _EKo, 0)
        w = put_item_nb(buf, w, _EKd, _EKo, 1)
        w = put_item_nb(buf, w, _EKd, _EKo, 2)  # event_id
        o = 0
        for j in range(run.shape[0]):
            idbuf[o] = run[j]
            o += 1
        idbuf[o] = 45  # '-'
        o = decimal_digits_nb(idbuf, o + 1, p)
        idbuf[o] = 45
        o = decimal_digits_nb(idbuf, o + 1, seqs[e])
        w = put_str_header_nb(buf, w, o)
        for j in range(o):
            buf[w + j] = idbuf[j]
        w += o
        w = put_item_nb(buf, w, _EKd, _EKo, 3)  # timestamp
        w = put_iso_nb(buf, w, now_ns, 3)
        w = put_item_nb(buf, w, _EKd, _EKo, 4)
        w = put_int_nb(buf, w, seqs[e])
        w = put_item_nb(buf, w, _EKd, _EKo, 5)  # portfolio_state
        buf[w] = _S_MAP
        w += 1
        tv = pf.cash_base + pf.long_mv + pf.short_mv
        gross = pf.long_mv - pf.short_mv
        w = put_item_nb(buf, w, _SKd, _SKo, 0)
        w = put_item_nb(buf, w, pid_data, pid_offs, p)
        w = put_item_nb(buf, w, _SKd, _SKo, 1)
        w = put_float_nb(buf, w, tv / 100, fbits, ibits)
        w = put_item_nb(buf, w, _SKd, _SKo, 2)
        w = put_float_nb(buf, w, pf.cash_base / 100, fbits, ibits)
        w = put_item_nb(buf, w, _SKd, _SKo, 3)
        w = put_float_nb(buf, w, (pf.long_mv + pf.short_mv) / 100, fbits, ibits)
        w = put_item_nb(buf, w, _SKd, _SKo, 4)  # leverage_ratio, as kernels.views.leverage
        w = put_float_nb(buf, w, 0.0 if gross == 0 else np.inf if tv <= 0 else gross / tv, fbits, ibits)
        w = put_item_nb(buf, w, _SKd, _SKo, 5)
        w = put_int_nb(buf, w, pf.position_count)
        w = put_item_nb(buf, w, _SKd, _SKo, 6)  # last_updated
        if pf.updated_ns == 0:
            w = put_nil_nb(buf, w)
        else:
            w = put_iso_nb(buf, w, pf.updated_ns, 6)
        w = put_item_nb(buf, w, _EKd, _EKo, 6)  # position_changes
        w = put_array_header_nb(buf, w, npos)
        tot = total[p]
        for j in range(cp, cp + npos):
            s = ds[order[j]]
            pos = positions[s]
            o = old_q[order[j]]
            n = pos.qty
            buf[w] = _P_MAP
            w += 1
            w = put_item_nb(buf, w, _PKd, _PKo, 0)
            w = put_item_nb(buf, w, slot_data, slot_offs, s)
            w = put_item_nb(buf, w, _PKd, _PKo, 1)
            w = put_item_nb(buf, w, name_data[0], name_offs[0], pos.instrument)
            w = put_item_nb(buf, w, _PKd, _PKo, 2)
            w = put_float_nb(buf, w, o / QTY_SCALE, fbits, ibits)
            w = put_item_nb(buf, w, _PKd, _PKo, 3)
            w = put_float_nb(buf, w, n / QTY_SCALE, fbits, ibits)
            w = put_item_nb(buf, w, _PKd, _PKo, 4)
            w = put_float_nb(buf, w, (n - o) / QTY_SCALE, fbits, ibits)
            w = put_item_nb(buf, w, _PKd, _PKo, 5)
            w = put_float_nb(buf, w, pos.mv / 100, fbits, ibits)
            w = put_item_nb(buf, w, _PKd, _PKo, 6)
            w = put_float_nb(buf, w, pos.mv / tot if tot != 0 else 0.0, fbits, ibits)
            w = put_item_nb(buf, w, _PKd, _PKo, 7)
            w = put_item_nb(buf, w, _CTd, _CTo, change_type_nb(o, n))
        cp += npos
        w = put_item_nb(buf, w, _EKd, _EKo, 7)  # exposure_changes
        w = put_array_header_nb(buf, w, nx)
        for t in range(5):
            for j in range(cur[t], cur[t] + cnt[t]):
                i = xorder[j]
                buf[w] = _X_MAP
                w += 1
                w = put_item_nb(buf, w, _XKd, _XKo, 0)
                w = put_item_nb(buf, w, _TYd, _TYo, t)
                w = put_item_nb(buf, w, _XKd, _XKo, 1)
                w = put_item_nb(buf, w, name_data[t], name_offs[t], keys[i, 1])
                w = put_item_nb(buf, w, _XKd, _XKo, 2)
                w = put_float_nb(buf, w, vals[i, 0], fbits, ibits)
                w = put_item_nb(buf, w, _XKd, _XKo, 3)
                w = put_float_nb(buf, w, vals[i, 1], fbits, ibits)
                w = put_item_nb(buf, w, _XKd, _XKo, 4)
                w = put_float_nb(buf, w, vals[i, 1] - vals[i, 0], fbits, ibits)
                w = put_item_nb(buf, w, _XKd, _XKo, 5)
                w = put_float_nb(buf, w, vals[i, 2], fbits, ibits)
                w = put_item_nb(buf, w, _XKd, _XKo, 6)
                w = put_float_nb(buf, w, vals[i, 3], fbits, ibits)
            cur[t] += cnt[t]
        ev_end[e] = w
    return w


@njit(cache=True, inline="always")
def change_type_nb(old, new):
    """Index into CHANGE_TYPES, as ``persistence.changes.change_type``."""
    if old == new:
        return 5
    if old == 0:
        return 0
    if new == 0:
        return 3
    if (old > 0) != (new > 0):
        return 4
    return 1 if abs(new) > abs(old) else 2
