"""The engine: the single writer. A drained batch of frames in; replies and events out.

Owns: ``Engine.handle`` (decode -> idempotency -> kernels, one call per run of
same-kind commands -> replies -> coalesced events) and the command handlers.
Runs on: the event-loop thread, synchronously (no awaits: a batch is applied
whole before the loop does anything else). Imports: numpy, msgspec, daemon,
transport, kernels.

Order: commands apply in arrival order. Consecutive position updates (single,
batch and column frames alike) are concatenated into one ``apply_trades_nb``
call, consecutive cash flows into one ``apply_cash_flows_nb`` call; any other
command ends the run. Within a batch a repeated key is answered from its first
occurrence.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from itertools import repeat

import msgspec
import numpy as np

from portfolio_state.kernels import (
    EXPOSURE_TYPE_NAMES,
    REASON_NAMES,
    CashFlowType,
    PositionStatus,
    Reason,
    TradeKind,
)
from portfolio_state.persistence.journal import COMMAND, FEED_FX, FEED_PRICES, RUN, JournalError
from portfolio_state.kernels.runs import mask_rejected_nb, run_refs_nb, screen_rows_nb, settle_run_nb
from portfolio_state.kernels.views import cents
from portfolio_state.transport import messages as m
from portfolio_state.transport.codec import Codec

from portfolio_state.analytics.performance import PerformanceBook, day_of

from . import queries, replies
from .book import Book, BookError, Capacity
from .config import Settings
from .events import EventBuilder
from .idempotency import Deferred, IdempotencyWindow

log = logging.getLogger("pstate.engine")

TRADE_CMDS = (m.PositionUpdateRequest, m.PositionUpdateBatch, m.PositionUpdateColumns)
KIND = {name: getattr(TradeKind, name) for name in TradeKind._fields}
FLOW = {name: getattr(CashFlowType, name) for name in CashFlowType._fields}
STATUS = {name: getattr(PositionStatus, name) for name in PositionStatus._fields}
MESSAGES = m.ERROR_CODES


def _err(code: str, key: str | None = None, message: str | None = None) -> m.ErrorReply:
    return m.ErrorReply(code=code, message=message or MESSAGES.get(code, code), key=key)


def _internal(it, what: str) -> None:
    """A bug while executing ``it``: logged, answered INTERNAL, and not recorded as the key's
    result (its digest dropped, so a retry runs again). The daemon keeps serving."""
    log.exception("%s failed: %r", what, it.cmd)
    it.reply = _err("INTERNAL", getattr(it.cmd, "key", None))
    it.digest = None


class _Item:
    """One decoded command of the batch, waiting for its reply."""

    __slots__ = ("idx", "cmd", "is_json", "digest", "reply", "lo", "hi", "body")

    def __init__(self, idx, cmd, is_json, digest, body=b""):
        self.idx, self.cmd, self.is_json, self.digest, self.body = idx, cmd, is_json, digest, body
        self.reply = None
        self.lo = self.hi = 0


class Engine:
    def __init__(self, settings: Settings = Settings(), book: Book | None = None):
        bc = settings.book
        self.settings = settings
        self.book = book or Book(Capacity(portfolios=bc.portfolios, slots=bc.slots, instruments=bc.instruments),
                                 pivot=bc.pivot_currency, shm_name=bc.shm_name or None, shm_dir=bc.shm_dir)
        self.codec = Codec()
        self.window = IdempotencyWindow(settings.engine.idempotency_window)
        self._new_hold_period()           # replay: RUN records' keys held from the window (_flush_replayed)
        self.perf = PerformanceBook()     # daily returns and their statistics (analytics/performance.py)
        self.max_bytes = settings.transport.max_message_bytes
        self.events_on = settings.engine.events
        self.events = EventBuilder(self.book, settings.engine.revaluation_events)
        self.accepting = True
        self.journal = None          # a persistence.journal.JournalWriter, or None (no durability)
        self.last_seq = 0            # journal sequence of the last record this engine wrote or replayed
        self.last_recv_ns = 0        # receive time of the last batch that changed the book
        self.as_of_hook = None       # (portfolio_id, as_of_ns, request) -> PortfolioStateResponse
        self.capture = None          # a daemon.capture.ChangeCapture when a write-behind sink runs
        self.counters = {"messages": 0, "updates": 0, "rejected_updates": 0, "errors": 0, "batches": 0,
                         "replays": 0, "events": 0, "ticks": 0, "revalued_positions": 0}
        self.metrics_hook = None  # the server adds latency and rates
        self.health_hook = None   # the server adds the journal's state
        self.appended_hook = None  # the server starts the group-commit sync as soon as a record is written

    # ------------------------------------------------------------------ batch
    def handle(self, frames: list[tuple[list[bytes], bytes]], recv_ns: int, replay: bool = False):
        """Apply a drained batch. frames: (envelope, body). Returns the replies,
        [(envelope, bytes)] in arrival order. Events wait for ``flush_events``.

        With a journal, each unit that changes the book (a command, or a run of
        position updates as one RUN record of kernel inputs) is appended (written,
        not yet synced) *before* it is applied: a unit the journal refuses is
        answered with the journal's error and leaves memory untouched.
        ``replay`` applies journal records (already journaled, replies unused)."""
        self.counters["batches"] += 1
        self._perf_day(recv_ns)
        self.counters["messages"] += len(frames)
        self._recv_ns = recv_ns
        self.last_recv_ns = max(self.last_recv_ns, recv_ns)
        items: list[_Item | None] = []
        replies: list = [None] * len(frames)
        seen: dict[str, _Item] = {}
        for i, (_, body) in enumerate(frames):
            replies[i] = self._admit(i, body, items, seen)
        run: list[_Item] = []
        flows: list[_Item] = []
        for it in items:
            if isinstance(it.cmd, TRADE_CMDS):
                if flows:
                    self._cash_flows(flows, replay)
                    flows = []
                run.append(it)
                continue
            if run:
                self._trades(run, replay)
                run = []
            if type(it.cmd) is m.CashFlowRequest:
                flows.append(it)
                continue
            if flows:
                self._cash_flows(flows, replay)
                flows = []
            if not replay and _journaled(it.cmd) and not self._append([(recv_ns, COMMAND, it.body)], [it]):
                continue
            self._single(it)
        if run:
            self._trades(run, replay)
        if flows:
            self._cash_flows(flows, replay)
        out = []
        for i, (envelope, _) in enumerate(frames):
            r = replies[i]
            if isinstance(r, _Item):
                data = self._encode(r.reply, r.is_json)
                if r.digest is not None:  # record the key's result, rejections included: as the msgpack
                    # bytes just sent when they are msgpack (no second encoding, a checkpoint writes
                    # them as they are, and bytes weigh far less than the reply's object tree)
                    self.window.put(r.cmd.key, r.digest, r.reply if r.is_json or isinstance(r.reply, Encoded)
                                    else Encoded(data))
                out.append((envelope, data))
            elif isinstance(r, _Replay):
                out.append((envelope, self._encode(r.first.reply, r.is_json)))
            else:
                out.append((envelope, r))
        return out

    def flush_events(self) -> list[tuple[bytes, bytes]]:
        """One event per portfolio changed since the last flush: [(topic, body)]."""
        if not self.events_on:
            return []
        e = self.settings.engine
        events = self.events.flush(e.max_events_per_flush, e.max_positions_per_flush)
        self.counters["events"] += len(events)
        return events

    def _append(self, recs: list, items: list) -> bool:
        """Journal records before applying them; on failure answer ``items`` with the journal's error."""
        if self.journal is None:
            return True
        try:
            self.last_seq = self.journal.append(recs)
        except JournalError as e:
            self.counters["errors"] += len(items)
            for it in items:
                it.reply = _err(e.code, getattr(it.cmd, "key", None), str(e))
                it.digest = None  # not applied: a retry may succeed after recovery
            return False
        if self.appended_hook is not None:  # the sync runs while the batch is applied and answered;
            self.appended_hook()            # it never raises (a failure reaches the replies as JOURNAL_IO)
        return True

    def replay(self, records) -> int:
        """Apply journal records in order (recovery and as-of). Returns how many.

        Consecutive RUN records of one UTC day apply as one kernel call (up to ``_MERGE_ROWS``
        rows): a trade reads reference data (prices, FX, categories) that only other records
        change, so their rows in one call give the state and the replies that one call per
        record gives. Each RUN record first does what ``handle`` did for its batch: it rolls the
        performance day and advances ``last_recv_ns`` (as-of picks checkpoints by it)."""
        n = 0
        group: list = []
        group_ns = None
        runs: list = []
        runs_day = rows = 0
        for rec in records:
            kind = rec.kind
            d = msgspec.msgpack.decode(rec.payload) if kind == RUN else None
            if kind == COMMAND and rec.recv_ns == group_ns:
                group.append(([], rec.payload))
            elif kind == RUN and runs and rows < _MERGE_ROWS and day_of(rec.recv_ns) == runs_day and not d[0]:
                # (a record that allocates starts a new call: a column row of an earlier record may
                # name the slot it allocates, and live that row found no position there)
                runs.append(d)
                rows += len(d[1][0])  # the kind column: one byte a row
                self.last_recv_ns = max(self.last_recv_ns, rec.recv_ns)
            else:
                if group:
                    self._flush_replayed()  # a command's dedupe reads the window: it must be whole
                    self.handle(group, group_ns, replay=True)
                if runs:
                    self._replay_runs(runs)
                group, group_ns, runs = [], None, []
                if kind == COMMAND:
                    group, group_ns = [([], rec.payload)], rec.recv_ns
                elif kind == RUN:
                    self._perf_day(rec.recv_ns)
                    self.last_recv_ns = max(self.last_recv_ns, rec.recv_ns)
                    runs, runs_day, rows = [d], day_of(rec.recv_ns), len(d[1][0])
                else:
                    ticks = dict(msgspec.msgpack.decode(rec.payload))
                    self.apply_market(ticks if kind == FEED_PRICES else {},
                                      ticks if kind == FEED_FX else {}, rec.recv_ns, journal=False)
            self.last_seq = rec.seq
            n += 1
        if group:
            self._flush_replayed()
            self.handle(group, group_ns, replay=True)
        if runs:
            self._replay_runs(runs)
        self._flush_replayed()
        return n

    def _flush_replayed(self) -> None:
        """Put the held RUN records' keys into the window (before a COMMAND record, whose dedupe
        reads the window, and at the end of a replay), and start a new holding period.

        ``_defer_replayed`` drops held blocks once newer ones cover the window's size, and only
        while every key so far was provably new when put: then each put would have appended, the
        newest ``size`` keys are all a window keeps, and the dropped keys would have been trimmed
        before the end. Putting and trimming ten million keys was half of a 10M replay (py-spy).
        A key that is not provably new (journaled twice within a window's span: a batch that
        failed after its record was written, or a window made larger across a restart) ends the
        period: what is held is put, and that block too, one by one as ever (ADR 0021)."""
        blocks, window = self._replayed, self.window
        if self._s0_left <= 0:
            # the period put at least ``size`` keys, each new: none of the window it found is left
            window.clear()
        self._new_hold_period()
        put_many = window.put_many
        for block in blocks:
            put_many(block.keys, repeat(block))

    def _new_hold_period(self) -> None:
        self._replayed: deque = deque()   # _Replayed blocks not yet in the window
        self._replayed_n = 0              # how many keys they hold
        self._held: set = set()           # which keys
        self._s0_left = self.window.size  # how many more keys are checked against the window itself

    def _defer_replayed(self, block: "_Replayed") -> None:
        """Hold a block for ``_flush_replayed``; see there. ``_held`` has the keys of the held blocks
        (always the newest ``size`` keys at least, since a block is dropped only when the newer
        ones cover the size); ``_s0_left`` counts the period's first ``size`` keys, which are also
        checked against the window as the period found it."""
        keys, held = block.keys, self._held
        n0 = len(held)
        held.update(keys)
        new = len(held) - n0 == len(keys)
        if new and self._s0_left > 0:
            new = self.window.holds_none(keys)
        if new:
            self._s0_left -= len(keys)
        if not new:
            self._flush_replayed()
            self.window.put_many(keys, repeat(block))
            return
        blocks = self._replayed
        blocks.append(block)
        self._replayed_n += len(keys)
        size = self.window.size
        while len(blocks) > 1 and self._replayed_n - len(blocks[0].keys) >= size:
            old = blocks.popleft().keys
            self._replayed_n -= len(old)
            held.difference_update(old)

    def _replay_runs(self, decoded: list) -> None:
        """RUN records (decoded; consecutive, one day) applied as one run; their commands enter the
        window as one ``_Replayed`` per record, not one object per command."""
        book = self.book
        parts = []
        for allocs, cols, pre_b, _ in decoded:
            if allocs:  # in journal order, before any of the rows apply: a new slot starts flat, so no
                book.slots(allocs)  # earlier row of the merged run can have touched it
            parts.append([np.frombuffer(b, d) for b, d in zip(cols, RUN_DTYPES)] + [np.frombuffer(pre_b, np.int32)])
        if len(parts) == 1:
            kind, portfolio, slot, qty, price, fee, ts, pre = (x.copy() for x in parts[0])
        else:
            kind, portfolio, slot, qty, price, fee, ts, pre = (np.concatenate(x) for x in zip(*parts))
        run = self._apply_run(kind, portfolio, slot, qty, price, fee, ts, pre)
        base = 0
        for (_, _, _, cmds), cols in zip(decoded, parts):
            if cmds:  # into the window at the next _flush_replayed
                self._defer_replayed(_Replayed(run, base, cmds))
            base += len(cols[0])

    def _encode(self, reply, is_json: bool) -> bytes:
        if isinstance(reply, Encoded):  # written as msgpack already (daemon/replies.py)
            if not is_json:
                return reply.data
            reply = reply.build()
        try:
            return self.codec.encode(reply, is_json)
        except Exception:  # a reply we cannot encode is our bug: say so, keep serving
            log.exception("cannot encode reply %r", reply)
            return self.codec.encode(_err("INTERNAL", getattr(reply, "key", None)), is_json)

    def internal_error(self, frames) -> list:
        """Replies for a batch that failed as a whole (a bug): INTERNAL to every frame."""
        return [(env, self.codec.encode(_err("INTERNAL"), self.codec.is_json(body))) for env, body in frames]

    def _admit(self, i: int, body: bytes, items: list, seen: dict):
        """Decode and check one frame: an _Item to execute, or the reply bytes at once."""
        is_json = self.codec.is_json(body)
        if len(body) > self.max_bytes:
            self.counters["errors"] += 1
            return self.codec.encode(_err("TOO_LARGE", message=f"frame of {len(body)} bytes exceeds {self.max_bytes}"), is_json)
        try:
            cmd = self.codec.decode(body, is_json)
        except msgspec.ValidationError as e:
            self.counters["errors"] += 1
            return self.codec.encode(_err("INVALID", message=str(e)), is_json)
        except msgspec.DecodeError as e:
            self.counters["errors"] += 1
            return self.codec.encode(_err("MALFORMED", message=str(e)), is_json)
        digest = None
        if self.journal is not None and self.journal.failed and _journaled(cmd):
            return self.codec.encode(_err(self.journal.failed.code, getattr(cmd, "key", None),
                                          str(self.journal.failed)), is_json)
        if isinstance(cmd, m.MUTATING):
            if not self.accepting:
                return self.codec.encode(_err("SHUTTING_DOWN", cmd.key), is_json)
            # a stable digest: it outlives the process in checkpoints (hash() is salted per process)
            digest = int.from_bytes(hashlib.blake2b(self.codec.canonical(cmd), digest_size=8).digest(), "little")
            prior = self.window.get(cmd.key)
            if prior is None and cmd.key in seen:
                first = seen[cmd.key]
                prior = (first.digest, first)
            if prior is not None:
                if prior[0] != digest:
                    self.counters["errors"] += 1
                    return self.codec.encode(_err("KEY_CONFLICT", cmd.key), is_json)
                self.counters["replays"] += 1
                if isinstance(prior[1], _Item):  # same batch: answer when the first one is done
                    return _Replay(prior[1], is_json)
                if not is_json and isinstance(prior[1], Encoded):
                    return prior[1].data  # the original reply's bytes
                return self.codec.encode(materialize(prior[1]), is_json)
        it = _Item(i, cmd, is_json, digest, body)
        if digest is not None:
            seen[cmd.key] = it
        items.append(it)
        return it

    # ------------------------------------------------------------------ trades
    def _trades(self, run: list[_Item], replay: bool = False) -> None:
        """Resolve ids, journal the run as one RUN record, apply it with one kernel call, reply."""
        book = self.book
        cols = []
        pre = []
        n = 0
        book.alloc_log = allocs = []
        try:
            i, end = 0, len(run)
            while i < end:
                it = run[i]
                cmd = it.cmd
                if type(cmd) is m.PositionUpdateRequest:  # consecutive single updates: their rows in one go
                    j = i + 1
                    while j < end and type(run[j].cmd) is m.PositionUpdateRequest:
                        j += 1
                    c, r = self._rows([x.cmd for x in run[i:j]])
                    for x in run[i:j]:
                        x.lo = n
                        n += 1
                        x.hi = n
                    cols.append(c)
                    pre.append(r)
                    i = j
                    continue
                i += 1
                it.lo = n
                try:
                    if isinstance(cmd, m.PositionUpdateColumns):
                        c = self._columns(cmd)
                        pre.append(np.zeros(len(c[0]), np.int32))
                    else:
                        c, r = self._rows(cmd.updates)
                        pre.append(r)
                except _BadColumns as e:
                    it.reply = _err("INVALID", cmd.key, str(e))
                    it.hi = n
                    continue
                cols.append(c)
                n += len(c[0])
                it.hi = n
        finally:
            book.alloc_log = None
        if len(cols) == 1 and all(x.flags.writeable for x in cols[0]):  # one run of rows: nothing to join
            (kind, portfolio, slot, qty, price, fee, ts), pre_reason = cols[0], pre[0]
        elif n:
            kind, portfolio, slot, qty, price, fee, ts = (np.concatenate(x) for x in zip(*cols))
            pre_reason = np.concatenate(pre)
        else:
            kind, portfolio, slot, qty, price, fee, ts = (np.zeros(0, d) for d in RUN_DTYPES)
            pre_reason = np.zeros(0, np.int32)
        if not replay and self.journal is not None:
            cmds = _command_columns(run)
            payload = msgspec.msgpack.encode([allocs, [x.tobytes() for x in (kind, portfolio, slot, qty, price, fee, ts)],
                                              pre_reason.tobytes(), cmds])
            if not self._append([(self._recv_ns, RUN, payload)], [it for it in run if it.reply is None]):
                return
        runctx = self._apply_run(kind, portfolio, slot, qty, price, fee, ts, pre_reason)
        reasons = runctx.out["reason"]
        fast = []  # accepted single updates answered in msgpack: their replies written in one compiled call
        for it in run:
            if it.reply is None:
                if type(it.cmd) is m.PositionUpdateRequest and not it.is_json and reasons[it.lo] == 0:
                    fast.append(it)
                    continue
                it.reply = _Lazy(runctx, it.cmd.key, it.lo, it.hi, _TYPE[type(it.cmd)],
                                 bool(getattr(it.cmd, "detail", False))).build()
        if fast:
            data = replies.encode_updates(runctx, np.array([it.lo for it in fast], np.int64),
                                          [it.cmd.key for it in fast], self.events.pools())
            for it, d in zip(fast, data):
                it.reply = Encoded(d)

    def _apply_run(self, kind, portfolio, slot, qty, price, fee, ts, pre_reason) -> "_Run":
        n = len(kind)
        portfolio, given = np.empty(n, np.int32), portfolio
        mask_rejected_nb(given, pre_reason, portfolio)  # the kernel rejects these rows untouched
        t0 = time.perf_counter_ns()
        out, exp_out = self.book.apply_trades(kind, portfolio, slot, qty, price, fee, ts)
        ms = (time.perf_counter_ns() - t0) / 1e6
        ok = np.empty(n, np.bool_)
        n_ok, n_moved = settle_run_nb(kind, pre_reason, out["reason"], ok)
        self.counters["updates"] += n_ok
        self.counters["rejected_updates"] += n - n_ok
        if self.events_on:
            self.events.note_trades(slot, ok)
        if self.capture is not None:
            self.capture.note_trades(slot, ok)
        if n_moved:  # positions moved in or out are external flows, not performance
            moved = ok & ((kind == TradeKind.TRANSFER_IN) | (kind == TradeKind.TRANSFER_OUT))
            self.perf.flow(portfolio[moved], out["value_change"][moved])
        return _Run(self.book, slot, out, exp_out, ms)

    def _rows(self, rows):
        """Kernel columns and pre-rejections (reason per row, 0 = to the kernel) of PositionUpdate rows.
        Ids are looked up column by column; only a position seen for the first time goes through
        ``Book.slot`` (which allocates it), in row order."""
        book = self.book
        pget = book.portfolio_ids.index.get
        iget = book.instrument_ids.index.get
        p_l = [pget(u.portfolio_id, -1) for u in rows]
        k_l = [iget(u.instrument_id, -1) for u in rows]
        portfolio = np.array(p_l, np.int32)
        inst = np.array(k_l, np.int32)
        slot = book.slot_index.find(p_l, [u.position_id for u in rows])
        kind = np.array([KIND[u.transaction_type] for u in rows], np.int8)
        qty = np.array([u.quantity_change for u in rows], np.float64)
        price = np.array([u.price for u in rows], np.float64)
        fee = np.array([u.fee for u in rows], np.float64)
        now = self._recv_ns
        ts = np.array([now if u.timestamp is None else u.timestamp for u in rows], np.int64)
        pre = np.empty(len(rows), np.int32)
        if screen_rows_nb(book.a.positions, portfolio, inst, slot, pre):  # (rejected rows' slots become 0)
            new = np.flatnonzero(slot < 0).tolist()  # first use of a position id: allocate, in row order
            for j, s in zip(new, book.slots([(p_l[j], rows[j].position_id, k_l[j]) for j in new])):
                if s < 0:
                    pre[j], slot[j] = -s, 0
                else:
                    slot[j] = s
        return (kind, portfolio, slot, qty, price, fee, ts), pre

    def _columns(self, cmd: m.PositionUpdateColumns):
        def col(b, dtype, name):
            if len(b) % np.dtype(dtype).itemsize:
                raise _BadColumns(f"column {name} is not a whole number of {np.dtype(dtype).name}")
            return np.frombuffer(b, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)

        portfolio = col(cmd.portfolio, np.int32, "portfolio")
        n = len(portfolio)
        slot = col(cmd.slot, np.int32, "slot")
        kind = col(cmd.kind, np.int8, "kind")
        qty = col(cmd.qty, np.float64, "qty")
        price = col(cmd.price, np.float64, "price")
        fee = col(cmd.fee, np.float64, "fee") if cmd.fee else np.zeros(n)
        ts = col(cmd.timestamp, np.int64, "timestamp") if cmd.timestamp else np.full(n, self._recv_ns, np.int64)
        if not all(len(x) == n for x in (slot, kind, qty, price, fee, ts)):
            raise _BadColumns("columns differ in length")
        return kind, portfolio, slot, qty, price, fee, ts

    # ------------------------------------------------------------------ cash flows
    def _cash_flows(self, run: list[_Item], replay: bool = False) -> None:
        """Consecutive cash flows: journaled in one write (a COMMAND record each, as any command),
        applied in one kernel call, in order (a withdrawal sees the deposit before it), each
        answered as it would be alone."""
        if not replay and not self._append([(self._recv_ns, COMMAND, it.body) for it in run], run):
            return
        book = self.book
        rows = []  # (item, portfolio, currency)
        for it in run:
            cmd = it.cmd
            p = book.portfolio_ids.get(cmd.portfolio_id)
            if p < 0:
                it.reply = _err("UNKNOWN_PORTFOLIO", cmd.key)
                continue
            try:
                rows.append((it, p, book.currency(cmd.currency)))
            except BookError as e:
                it.reply = _err(e.code, cmd.key, e.message)
            except Exception:
                _internal(it, "cash flow")
        if not rows:
            return
        try:
            now = self._recv_ns
            if len(rows) == 1:  # a frame of one, the common case: scalars in, a tuple out
                it, p, c = rows[0]
                cmd = it.cmd
                results = [book.apply_cash_flow(p, c, FLOW[cmd.flow_type], cmd.amount, cmd.timestamp or now)]
            else:
                cmds = [it.cmd for it, _, _ in rows]
                results = book.apply_cash_flows(
                    np.array([p for _, p, _ in rows], np.int32), np.array([c for _, _, c in rows], np.int32),
                    np.array([FLOW[c.flow_type] for c in cmds], np.int8), np.array([c.amount for c in cmds], np.float64),
                    np.array([c.timestamp or now for c in cmds], np.int64)).tolist()  # (reason, amount, cash, impact)
        except Exception:
            for it, _, _ in rows:
                _internal(it, "cash flow")
            return
        for (it, p, _), (reason, amount, cash, impact) in zip(rows, results):
            cmd = it.cmd
            if reason:
                it.reply = _err(REASON_NAMES[reason], cmd.key)
                continue
            try:
                self.events.touch(p)
                if cmd.flow_type in ("DEPOSIT", "WITHDRAWAL"):  # external: not performance
                    self.perf.flow(p, impact)
                if self.capture is not None:
                    self.capture.cash_flows.append((cmd.cash_flow_id, cmd.portfolio_id, amount, cmd.currency,
                                                    cmd.flow_type, cmd.description, cmd.timestamp or now))
            except Exception:  # applied, but its bookkeeping failed
                _internal(it, "cash flow bookkeeping")
                continue
            it.reply = m.Ack(cmd.key, {"cash_flow_id": cmd.cash_flow_id, "portfolio_id": cmd.portfolio_id,
                                       "currency": cmd.currency, "amount": cents(amount), "cash": cents(cash),
                                       "cash_impact": cents(impact)})

    # ------------------------------------------------------------------ other commands
    def _single(self, it: _Item) -> None:
        cmd = it.cmd
        try:
            it.reply = self._dispatch(cmd)
        except BookError as e:
            it.reply = _err(e.code, getattr(cmd, "key", None), e.message)
        except Exception:
            _internal(it, "command")

    def _dispatch(self, cmd):
        book = self.book
        match cmd:
            case m.PriceTicks():
                idx = np.array([book.instrument_ids.get(t.instrument_id) for t in cmd.ticks], np.int32)
                reason, n = book.apply_prices(idx, np.array([t.price for t in cmd.ticks], np.float64),
                                              np.full(len(idx), cmd.timestamp or self._recv_ns, np.int64))
                return self._tick_ack(cmd.key, reason, n)
            case m.FxTicks():
                idx = np.array([book.currency(r.currency) for r in cmd.rates], np.int32)
                reason, n = book.apply_fx(idx, np.array([r.rate for r in cmd.rates], np.float64),
                                          np.full(len(idx), cmd.timestamp or self._recv_ns, np.int64))
                return self._tick_ack(cmd.key, reason, n)
            case m.PortfolioUpsert():
                pf = cmd.portfolio
                p = book.upsert_portfolio(pf.portfolio_id, pf.base_currency, pf.portfolio_type,
                                          portfolio_name=pf.portfolio_name, inception_date=pf.inception_date,
                                          status=pf.status, benchmark=pf.benchmark, instrument_limit=pf.instrument_limit)
                self.events.touch(p)
                if self.capture is not None:
                    self.capture.portfolios.append(book.portfolio_meta(p))
                return m.Ack(cmd.key, {"portfolio_id": pf.portfolio_id, "handle": p})
            case m.InstrumentUpsert():
                handles, rejected = [], []
                for j, ins in enumerate(cmd.instruments):
                    try:
                        handles.append(book.upsert_instrument(ins.instrument_id, ins.currency, ins.sector, ins.country,
                                                              ins.asset_class, ins.multiplier, ins.margin))
                        if self.capture is not None:
                            self.capture.instruments.append(book.instrument_meta(handles[-1]))
                    except BookError as e:
                        handles.append(-1)
                        rejected.append([j, e.code, e.message])
                return m.Ack(cmd.key, {"handles": handles, "rejected": rejected})
            case m.ExposureLimit():
                book.set_limit(cmd.portfolio_id, cmd.exposure_type, cmd.category, cmd.limit_percentage)
                if self.capture is not None:
                    self.capture.limits.append((cmd.portfolio_id, cmd.exposure_type, cmd.category, cmd.limit_percentage))
                return m.Ack(cmd.key, {})
            case m.PositionStatusChange():
                p = book.portfolio_ids.get(cmd.portfolio_id)
                k = book.instrument_ids.get(cmd.instrument_id)
                if p < 0:
                    return _err("UNKNOWN_PORTFOLIO", cmd.key)
                s = book.slot(p, cmd.position_id, k)
                if s < 0:
                    return _err(REASON_NAMES[-s], cmd.key)
                r = book.set_status(np.array([p], np.int32), np.array([s], np.int32),
                                    np.array([STATUS[cmd.status]], np.int8), np.array([self._recv_ns], np.int64))[0]
                if r:
                    return _err(REASON_NAMES[r], cmd.key)
                self.events.note_status(s)
                if self.capture is not None:
                    self.capture.note_status(s)
                return m.Ack(cmd.key, {"status": cmd.status})
            case m.ResolveRequest():
                return self._resolve(cmd)
            case m.PortfolioStateRequest():
                if cmd.as_of_timestamp is not None:
                    if self.as_of_hook is None:
                        return _err("NOT_SUPPORTED", message="as_of_timestamp needs the journal (journal.data_dir is empty)")
                    book._portfolio(cmd.portfolio_id)
                    return self.as_of_hook(cmd.portfolio_id, cmd.as_of_timestamp, cmd)
                return self.state_response(cmd)
            case m.ExposuresRequest():
                p = book._portfolio(cmd.portfolio_id)
                return m.ExposuresResponse(cmd.portfolio_id, self._exposures(cmd.portfolio_id), int(self._seq(p)))
            case m.MetricsRequest():
                return m.MetricsResponse(self.metrics_hook() if self.metrics_hook else self.metrics())
            case m.HealthRequest():
                if self.health_hook is not None:
                    return m.HealthResponse(*self.health_hook())
                return m.HealthResponse("ok" if self.accepting else "unhealthy", {"accepting": self.accepting})
        raise AssertionError(f"unhandled command {type(cmd).__name__}")

    def _count_ticks(self, reason, n) -> None:
        self.counters["ticks"] += int((reason == 0).sum())
        self.counters["revalued_positions"] += int(n)

    def _tick_ack(self, key, reason, n):
        self._count_ticks(reason, n)
        return m.Ack(key, {"accepted": int((reason == 0).sum()), "revalued": int(n),
                           "rejected": [[int(j), REASON_NAMES[int(reason[j])]] for j in np.nonzero(reason)[0]]})

    def _resolve(self, cmd: m.ResolveRequest) -> m.ResolveResponse:
        book = self.book
        portfolios = [book.portfolio_ids.get(ref.portfolio_id) for ref in cmd.positions]
        insts = [book.instrument_ids.get(ref.instrument_id) for ref in cmd.positions]
        ok = [j for j, (p, k) in enumerate(zip(portfolios, insts)) if p >= 0 and k >= 0]
        found = book.slots([(portfolios[j], cmd.positions[j].position_id, insts[j]) for j in ok])
        slots = [-Reason.UNKNOWN_PORTFOLIO if p < 0 else -Reason.UNKNOWN_INSTRUMENT for p in portfolios]
        for j, s in zip(ok, found):
            slots[j] = s
        errors = []
        for j, s in enumerate(slots):
            if s < 0:
                errors.append(m.RowError(j, REASON_NAMES[-s], MESSAGES[REASON_NAMES[-s]]))
                slots[j] = -1
        portfolios += [book.portfolio_ids.get(x) for x in cmd.portfolio_ids]
        return m.ResolveResponse(slots, portfolios, [book.instrument_ids.get(x) for x in cmd.instrument_ids], errors)

    # ------------------------------------------------------------------ queries
    def _seq(self, p: int) -> int:
        return self.events.sequence(p)

    def _exposures(self, portfolio_id: str) -> dict:
        return {t: [m.Exposure(**x) for x in rows] for t, rows in queries.exposures(self.book, portfolio_id).items()}

    def state_response(self, cmd: m.PortfolioStateRequest) -> m.PortfolioStateResponse:
        book = self.book
        p = book._portfolio(cmd.portfolio_id)
        pf = book.a.portfolios[p]
        return m.PortfolioStateResponse(
            portfolio_state=m.PortfolioState(**queries.state(book, cmd.portfolio_id)),
            positions=[m.Position(**x) for x in queries.positions(book, cmd.portfolio_id)] if cmd.include_positions else [],
            exposures=self._exposures(cmd.portfolio_id) if cmd.include_exposures else {},
            performance_metrics=self.performance(p) if cmd.include_performance else None,
            margin=m.MarginRequirement(**queries.margin(book, cmd.portfolio_id)),
            cash=queries.cash(book, cmd.portfolio_id),
            last_updated=queries._iso(pf["updated_ns"]),
            sequence=self._seq(p))

    # ------------------------------------------------------------------ performance
    def _perf_day(self, ns: int) -> None:
        """At the first batch of a new UTC day (receive times: journaled, so replay agrees), close
        the day for every portfolio at its value now."""
        day = day_of(ns)
        if day > self.perf.day:
            P = len(self.book.portfolio_ids)
            pf = self.book.a.portfolios[:P]
            self.perf.roll(day, pf["cash_base"] + pf["long_mv"] + pf["short_mv"], self._bench_prices(P))

    def _bench_prices(self, P: int) -> np.ndarray:
        """Each portfolio's benchmark instrument price now (NaN: no benchmark, or not a priced instrument)."""
        out = np.full(P, np.nan)
        a = self.book.a
        for p, info in self.book.portfolio_info.items():
            k = self.book.instrument_ids.get(info.get("benchmark") or "")
            if p < P and k >= 0 and a.instruments["price"][k] > 0:
                out[p] = float(a.instruments["price"][k])
        return out

    def performance(self, p: int) -> m.PerformanceMetrics:
        pf = self.book.a.portfolios[p]
        return m.PerformanceMetrics(**self.perf.metrics(p, int(pf["cash_base"] + pf["long_mv"] + pf["short_mv"])))

    def performance_columns(self, ps: np.ndarray) -> dict[str, np.ndarray]:
        """PerformanceMetrics of portfolios ps as float64 columns, NaN where undefined (snapshots)."""
        pf = self.book.a.portfolios[ps]
        return self.perf.columns(ps, pf["cash_base"] + pf["long_mv"] + pf["short_mv"])

    def metrics(self) -> dict:
        b = self.book
        return {**self.counters, "portfolios": len(b.portfolio_ids), "instruments": len(b.instrument_ids),
                "slots": len(b.slot_ids), "idempotency_keys": len(self.window), "capacity": b.capacity}

    def apply_market(self, prices: dict[str, float], rates: dict[str, float], ts: int, journal: bool = True) -> None:
        """Conflated ticks from the market-data feeds (no keys, no replies), journaled first."""
        book = self.book
        self._perf_day(ts)
        if journal and self.journal is not None:
            recs = [(ts, kind, msgspec.msgpack.encode(list(d.items()))) for kind, d in ((FEED_FX, rates), (FEED_PRICES, prices)) if d]
            try:
                self.last_seq = self.journal.append(recs)
            except JournalError:
                log.error("feed ticks dropped: the journal refuses writes")
                return
        if rates:
            known = [(book.currency(c), r) for c, r in rates.items() if isinstance(c, str) and len(c) == 3 and c.isupper()]
            if known:
                idx, vals = zip(*known)
                reason, n = book.apply_fx(np.array(idx, np.int32), np.array(vals, np.float64), np.full(len(idx), ts, np.int64))
                self._count_ticks(reason, n)
        if prices:
            idx = np.array([book.instrument_ids.get(i) for i in prices], np.int32)
            reason, n = book.apply_prices(idx, np.array(list(prices.values()), np.float64), np.full(len(idx), ts, np.int64))
            self._count_ticks(reason, n)


class _BadColumns(ValueError):
    pass


RUN_DTYPES = (np.int8, np.int32, np.int32, np.float64, np.float64, np.float64, np.int64)
_MERGE_ROWS = 1 << 14  # replay: rows of consecutive RUN records applied in one kernel call, at most
_TYPE = {m.PositionUpdateRequest: 0, m.PositionUpdateBatch: 1, m.PositionUpdateColumns: 2}


class _Run:
    """One trade run's kernel outputs plus the reference values of that moment (price, FX ratio,
    categories), so a reply built now or much later (a retry of a replayed key) shows that moment."""

    __slots__ = ("book", "slot", "out", "exp", "ms", "inst", "price", "mult", "ratio", "cats")

    def __init__(self, book: Book, slot, out, exp_out, ms):
        self.book, self.slot, self.out, self.exp, self.ms = book, slot, out, exp_out, ms
        n = len(slot)
        self.inst, self.price, self.mult = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
        self.ratio, self.cats = np.empty(n, np.float64), np.empty((n, 5), np.int32)
        a = book.a
        run_refs_nb(a.positions, a.instruments, a.portfolios, a.fx, slot, self.inst, self.price, self.mult, self.ratio,
                    self.cats)

    def response(self, key: str, j: int) -> m.PositionUpdateResponse:
        b = self.book
        (_, old_qty, qty, cost, _, pos_realized, ts, status, _, mv, cash_impact, value_change, old_weight,
         weight) = self.out[j].item()
        k, sec, cty, ccy, acl = self.cats[j].tolist()
        pos = m.Position(**queries.position_fields(
            b.slot_ids[int(self.slot[j])], b.instrument_ids.ids[k], qty, cost, pos_realized, mv, ts, status, weight,
            int(self.price[j]), int(self.mult[j]), float(self.ratio[j])))
        names = (b.instrument_ids.ids[k], b.sector_ids.ids[sec], b.country_ids.ids[cty], b.currency_ids.ids[ccy],
                 b.asset_class_ids.ids[acl])
        ex = self.exp[j].tolist()
        EC = m.ExposureChange
        return m.PositionUpdateResponse(
            key, pos, m.PortfolioImpact(value_change / 100, weight - old_weight, 0.0, cash_impact / 100),
            [EC(EXPOSURE_TYPE_NAMES[t], names[t], ex[t][0], ex[t][1], ex[t][1] - ex[t][0]) for t in range(5)], self.ms)


_RUN_ARRAYS = ("slot", "out", "exp", "inst", "price", "mult", "ratio", "cats")


def run_state(run: _Run) -> list:
    """A run's arrays as plain msgpack values (checkpoints keep replayed replies this way: one copy
    of the run's outputs instead of one built reply per command)."""
    return [run.ms] + [[np.lib.format.dtype_to_descr(x.dtype), list(x.shape), x.tobytes()]
                       for x in (getattr(run, n) for n in _RUN_ARRAYS)]


def run_from_state(book: Book, state: list, dtypes: dict) -> _Run:
    """``dtypes``: parsed descriptions by their repr, shared by the runs of one restore."""
    run = _Run.__new__(_Run)
    run.book, run.ms = book, state[0]
    for name, (descr, shape, data) in zip(_RUN_ARRAYS, state[1:]):
        dt = dtypes.get(key := repr(descr))
        if dt is None:
            if isinstance(descr, list):  # a structured dtype: [[name, type], ...] back to tuples
                descr = [tuple(f) for f in descr]
            dt = dtypes[key] = np.lib.format.descr_to_dtype(descr)
        setattr(run, name, np.frombuffer(data, dt).reshape(shape))
    return run


class _Lazy:
    """A reply kept as (run, rows) until someone needs it: replay stores these in the window,
    so recovery does not build a million replies nobody will ask for again."""

    __slots__ = ("run", "key", "lo", "hi", "typ", "detail")

    def __init__(self, run: _Run, key: str, lo: int, hi: int, typ: int, detail: bool):
        self.run, self.key, self.lo, self.hi, self.typ, self.detail = run, key, lo, hi, typ, detail

    def build(self):
        run = self.run
        reasons = run.out["reason"]
        if self.typ == 0:
            r = int(reasons[self.lo])
            return _err(REASON_NAMES[r], self.key) if r else run.response(self.key, self.lo)
        seg = reasons[self.lo:self.hi]
        bad = np.nonzero(seg)[0]
        results = None
        if self.detail:
            results = [run.response(self.key, self.lo + j) for j in range(self.hi - self.lo) if seg[j] == 0]
        return m.BatchResponse(
            key=self.key, accepted=int(len(seg) - len(bad)),
            rejected=[m.RowError(int(j), REASON_NAMES[int(seg[j])], MESSAGES[REASON_NAMES[int(seg[j])]]) for j in bad],
            processing_time_ms=run.ms, results=results)


def _command_columns(run: list) -> list:
    """A RUN record's commands as columns (ADR 0021): [type int8, keys, digest uint64, lo int32,
    hi int32, detail bool, [[index, error code, message], ...]]. Replay reads them without one
    object per command."""
    n = len(run)
    typ, lo, hi = np.empty(n, np.int8), np.empty(n, np.int32), np.empty(n, np.int32)
    digest, detail = np.empty(n, np.uint64), np.zeros(n, np.bool_)
    errors = []
    for j, it in enumerate(run):
        cmd = it.cmd
        t = typ[j] = _TYPE[type(cmd)]
        lo[j], hi[j], digest[j] = it.lo, it.hi, it.digest
        if t and getattr(cmd, "detail", False):
            detail[j] = True
        if it.reply is not None:
            errors.append([j, it.reply.code, it.reply.message])
    return [typ.tobytes(), [it.cmd.key for it in run], digest.tobytes(), lo.tobytes(), hi.tobytes(),
            detail.tobytes(), errors]


class _Replayed(Deferred):
    """The idempotency-window entries of one replayed RUN record's commands, kept as its columns
    (one object for the record, shared by its keys' window values): a key's (digest, reply) is
    built only when something asks for it (a retry, a checkpoint)."""

    __slots__ = ("run", "base", "keys", "typ", "digest", "lo", "hi", "detail", "errors", "_ix")

    def __init__(self, run: "_Run", base: int, cmds: list):
        """``base``: where the record's rows start in ``run``. ``cmds``: the record's commands, as
        columns (``_command_columns``) or, in records written before them, one list per command
        [type, key, digest, lo, hi, detail, error code, message]."""
        self.run, self.base, self._ix = run, base, None
        if type(cmds[0]) is list:  # the older layout
            typ, keys, digest, lo, hi, detail, code, msg = zip(*cmds)
            self.keys, self.typ, self.digest, self.lo, self.hi, self.detail = list(keys), typ, digest, lo, hi, detail
            self.errors = {j: (c, t) for j, (c, t) in enumerate(zip(code, msg)) if c}
            return
        typ_b, self.keys, digest_b, lo_b, hi_b, detail_b, errors = cmds
        self.typ, self.digest = np.frombuffer(typ_b, np.int8), np.frombuffer(digest_b, np.uint64)
        self.lo, self.hi = np.frombuffer(lo_b, np.int32), np.frombuffer(hi_b, np.int32)
        self.detail = np.frombuffer(detail_b, np.bool_)
        self.errors = {j: (c, t) for j, c, t in errors} if errors else None

    def entry(self, key: str) -> tuple[int, object]:
        """(digest, reply) of ``key``, one of this record's commands."""
        j = self.position(key)
        digest = int(self.digest[j])
        err = self.errors.get(j) if self.errors else None
        if err is not None:
            return digest, _err(err[0], key, err[1])
        return digest, _Lazy(self.run, key, self.base + int(self.lo[j]), self.base + int(self.hi[j]),
                             int(self.typ[j]), bool(self.detail[j]))


class Encoded:
    """A reply restored from a checkpoint as its msgpack bytes: decoded only if a retry asks."""

    __slots__ = ("data",)
    _dec = msgspec.msgpack.Decoder(m.Reply)

    def __init__(self, data: bytes):
        self.data = data

    def build(self):
        return self._dec.decode(self.data)


def materialize(reply):
    return reply.build() if isinstance(reply, (_Lazy, Encoded)) else reply


class _Replay:
    """A repeat of a key first seen earlier in the same batch: encoded once that one is done."""

    __slots__ = ("first", "is_json")

    def __init__(self, first, is_json):
        self.first, self.is_json = first, is_json


def _journaled(cmd) -> bool:
    """Commands that change the book: every mutating one, and resolve (it allocates handles)."""
    return isinstance(cmd, m.MUTATING) or isinstance(cmd, m.ResolveRequest)
