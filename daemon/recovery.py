"""Start-up and crash recovery, one path: newest valid checkpoint, then replay of later records.

Owns: ``open_engine`` (build the engine from what is on disk and attach a journal
writer), ``write_checkpoint`` (the engine's state -> persistence.checkpoint) and
``state_as_of`` (a scratch engine rebuilt up to a past time).
Runs on: the main thread at start-up; periodic checkpoints are snapshotted and written
by a forked child (daemon/ckptfork.py), or copied on the engine thread and written on a
worker thread. Imports: numpy, msgspec, daemon, persistence, transport.

What a checkpoint holds: every book array, the id maps, the idempotency window
(key, digest, encoded reply; a replayed reply as its run's arrays and rows), the
per-portfolio event sequences, and the journal sequence and receive time it
covers. The window goes in columns: encoded in chunks when every reply is the
bytes sent (the live case), else as one list per field, in window order.
"""
from __future__ import annotations

import gc
import logging
import operator
import os
import resource
import time
from itertools import repeat

import msgspec

from portfolio_state.persistence import checkpoint as ckpt
from portfolio_state.persistence.journal import JournalWriter, read_records
from portfolio_state.transport import messages as m

from .book import Book, Capacity
from .config import Settings
from .idempotency import Deferred, entries
from .engine import Encoded, Engine, _Lazy, materialize, run_from_state, run_state

log = logging.getLogger("pstate.recovery")


def dirs(settings: Settings) -> tuple[str, str]:
    base = settings.journal.data_dir
    return os.path.join(base, "journal"), os.path.join(base, "checkpoints")


def snapshot(engine: Engine, reuse: dict | None = None, window: bool = True,
             copy: bool = True) -> tuple[int, dict, dict]:
    """(journal seq, arrays, meta): a consistent copy taken on the engine thread (into ``reuse``,
    the previous snapshot's arrays, when given). The window's entries are copied as they are;
    encoding them is left to the writer. ``window=False`` leaves the window out, for a forked
    writer that lists it from its own copy; ``copy=False`` takes the arrays as they are, in a
    forked child whose private memory is the engine's state at the fork (daemon/ckptfork.py)."""
    arrays, meta = engine.book.export_state(reuse, copy=copy)
    arrays["event_seq"] = engine.events.seq.copy() if copy else engine.events.seq
    arrays["perf"] = engine.perf.s.copy() if copy else engine.perf.s
    meta["perf_day"] = engine.perf.day
    if window:
        meta["window"] = engine.window.raw_items()
    meta["last_recv_ns"] = engine.last_recv_ns
    meta["counters"] = dict(engine.counters)
    return engine.last_seq, arrays, meta


_CHUNK = 50_000
_DATA = operator.attrgetter("data")


def write_checkpoint(engine: Engine, settings: Settings, snap=None, floor: int | None = None,
                     release=None) -> str:
    """Write a checkpoint (on the checkpoint thread: replies are built and encoded here). With a
    write-behind, ``floor`` is its watermark: the newest checkpoint at or before it is kept too, so
    the journal after it stays (the thread can always resume, like a replication slot).
    ``release``: see persistence.checkpoint.write_checkpoint (a forked writer's arrays only)."""
    t0 = time.perf_counter()
    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seq, arrays, meta = snap or snapshot(engine)
    took = {}

    def encoded_meta() -> bytes:  # called once the arrays are in the file (a forked writer has
        # given the book's memory back by then: ADR 0023)
        t = time.perf_counter()
        b = _encode_meta(meta)
        took["meta"] = time.perf_counter() - t
        return b

    _, cdir = dirs(settings)
    path = ckpt.write_checkpoint(cdir, seq, arrays, encoded_meta, release)
    kept = ckpt.retire_checkpoints(cdir, settings.journal.checkpoints_kept, floor)
    if floor is not None and not any(s <= floor for s in kept):
        kept.append(0)  # no checkpoint at or before the watermark: keep the journal from its start
    log.info("checkpoint %s (seq %d) in %.2fs (meta %.2fs of it; %d page faults here)", path, seq,
             time.perf_counter() - t0, took.get("meta", 0.0),
             resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0)
    return path, (min(kept) if kept else 0)


def _encode_meta(meta: dict) -> bytes:
    """The checkpoint's meta as msgpack: the id maps and the idempotency window, in columns."""
    enc = msgspec.msgpack.Encoder()
    runs, run_ix, chunks = [], {}, []
    items = entries(meta["window"])  # replayed keys' entries built here, not on the engine thread
    keys = [k for k, _ in items]  # comprehensions: zip(*items) over a million rows is 5-20x slower
    digests = [v[0] for _, v in items]
    replies = [v[1] for _, v in items]
    if items and set(map(type, replies)) == {Encoded}:
        # the live case, every reply the bytes that were sent: columns built in C, encoded in
        # chunks, so the thread never holds the GIL long (a Python loop over a 1M-key window
        # took ~1 s of it, and the engine stalled behind it)
        datas = list(map(_DATA, replies))
        for i in range(0, len(keys), _CHUNK):
            chunks.append([enc.encode(keys[i:i + _CHUNK]), enc.encode(digests[i:i + _CHUNK]),
                           enc.encode(datas[i:i + _CHUNK])])
        items = ()
    cols = None
    if items:  # columns, in window order: [keys, digests, run, lo, hi, type, detail, reply bytes]
        cols = [[], [], [], [], [], [], [], []]
        keys_c, dig_c, run_c, lo_c, hi_c, typ_c, det_c, data_c = cols
        for k, (d, r) in items:
            keys_c.append(k)
            dig_c.append(d)
            if type(r) is _Lazy and (r.typ == 0 or r.detail):  # a replayed reply of per-row detail:
                # its run's arrays once and where it sits in them (building it here: ~20 us a key)
                j = run_ix.get(id(r.run))
                if j is None:
                    j = run_ix[id(r.run)] = len(runs)
                    runs.append(run_state(r.run))
                run_c.append(j)
                lo_c.append(r.lo)
                hi_c.append(r.hi)
                typ_c.append(r.typ)
                det_c.append(r.detail)
                data_c.append(None)
            else:  # the bytes sent, or the small reply built now
                run_c.append(-1)
                lo_c.append(0)
                hi_c.append(0)
                typ_c.append(0)
                det_c.append(False)
                data_c.append(r.data if type(r) is Encoded else enc.encode(materialize(r)))
    # ("window": the layout before window_cols, one list per entry; empty now, read for old checkpoints)
    return enc.encode({**meta, "window": [], "window_cols": cols, "runs": runs, "window_chunks": chunks})


def _restore(settings: Settings, loaded, shm: bool) -> Engine:
    seq, arrays, meta_b = loaded
    meta = msgspec.msgpack.decode(meta_b)
    event_seq = arrays.pop("event_seq")
    perf = arrays.pop("perf", None)  # absent from checkpoints written before performance metrics
    bc = settings.book
    book = Book.from_state(arrays, meta, shm_name=(bc.shm_name or None) if shm else None, shm_dir=bc.shm_dir)
    engine = Engine(settings, book)
    engine.events.seq = event_seq
    if perf is not None:
        engine.perf.s, engine.perf.day = perf, meta.get("perf_day", -1)
    engine.events.last_versions = book.a.portfolios["version"].copy()

    def put(cols, runs=None):  # in pieces: the first retry of a piece's key indexes that piece only
        for i in range(0, len(cols[0]), _PIECE):
            chunk = _Restored(*(c[i:i + _PIECE] if c is not None else None for c in cols), runs=runs)
            engine.window.put_many(chunk.keys, repeat(chunk))

    for kb, db, rb in meta.get("window_chunks", ()):  # [keys, digests, reply bytes], msgpack, in order
        put([msgspec.msgpack.decode(kb), msgspec.msgpack.decode(db), msgspec.msgpack.decode(rb)])
    dtypes: dict = {}  # a run's array descriptions repeat: each parsed once
    runs = [run_from_state(book, st, dtypes) for st in meta.get("runs", ())]
    cols = meta.get("window_cols")
    if cols:  # [keys, digests, run, lo, hi, type, detail, reply bytes]: run -1 = the bytes
        keys, digests, js, lo, hi, typ, detail, datas = cols
        put([keys, digests, datas, js, lo, hi, typ, detail], runs)
    window = meta["window"]  # checkpoints before window_cols: one list per entry
    if window and not runs:  # every entry [key, digest, msgpack bytes]
        engine.window.put_many([e[0] for e in window], zip([e[1] for e in window], map(Encoded, [e[2] for e in window])))
    elif window:  # some entries [key, digest, run, lo, hi, type, detail]: a replayed reply
        engine.window.put_many([e[0] for e in window],
                               [(e[1], Encoded(e[2]) if len(e) == 3 else _Lazy(runs[e[2]], e[0], *e[3:]))
                                for e in window])
    engine.counters.update(meta["counters"])
    engine.last_seq = seq
    engine.last_recv_ns = meta["last_recv_ns"]
    return engine


_PIECE = 8192  # restored window keys per _Restored: indexing one on its first retry takes ~1 ms


class _Restored(Deferred):
    """Window entries restored from a checkpoint, kept as the checkpoint's columns (one object for a
    chunk of keys, shared as their window value, like ``engine._Replayed``): a key's (digest, reply)
    is built only when asked for, so a restore costs a dict entry per key and no object."""

    __slots__ = ("keys", "digests", "datas", "runs", "js", "lo", "hi", "typ", "detail", "_ix")

    def __init__(self, keys, digests, datas, js=None, lo=None, hi=None, typ=None, detail=None, runs=None):
        """``datas``: the reply bytes; with ``runs``, a key whose ``js`` entry is >= 0 is a replayed
        reply instead: rows lo..hi of that run, of command type ``typ``, ``detail`` or not."""
        self.keys, self.digests, self.datas, self.runs = keys, digests, datas, runs
        self.js, self.lo, self.hi, self.typ, self.detail = js, lo, hi, typ, detail
        self._ix = None

    def entry(self, key: str) -> tuple[int, object]:
        i = self.position(key)
        j = self.js[i] if self.js is not None else -1
        if j < 0:
            return self.digests[i], Encoded(self.datas[i])
        return self.digests[i], _Lazy(self.runs[j], key, self.lo[i], self.hi[i], self.typ[i], self.detail[i])


def open_engine(settings: Settings) -> tuple[Engine, dict]:
    """The engine as of everything durable on disk, with a journal writer attached.

    The cyclic garbage collector is paused while it runs: recovery creates millions of
    small long-lived objects (the idempotency window), and every full collection would
    rescan all of them; afterwards they are frozen out of future collections."""
    gc.disable()
    try:
        return _open_engine(settings)
    finally:
        gc.freeze()
        gc.enable()


def _open_engine(settings: Settings) -> tuple[Engine, dict]:
    bc = settings.book
    if not settings.journal.data_dir:
        return Engine(settings), {"journal": False}
    jdir, cdir = dirs(settings)
    os.makedirs(jdir, exist_ok=True)
    t0 = time.perf_counter()
    loaded = ckpt.load_newest(cdir)
    if loaded is not None:
        engine = _restore(settings, loaded, shm=True)
        log.info("checkpoint at seq %d loaded in %.2fs", engine.last_seq, time.perf_counter() - t0)
    else:
        engine = Engine(settings, Book(Capacity(portfolios=bc.portfolios, slots=bc.slots, instruments=bc.instruments),
                                       pivot=bc.pivot_currency, shm_name=bc.shm_name or None, shm_dir=bc.shm_dir))
    start_seq = engine.last_seq
    t1 = time.perf_counter()
    ends: dict[str, int] = {}
    n = engine.replay(read_records(jdir, after_seq=engine.last_seq, ends=ends))
    replay_s = time.perf_counter() - t1
    engine.events.last_versions = engine.book.a.portfolios["version"].copy()
    engine.events.marks.clear_all()
    engine.journal = JournalWriter(jdir, engine.last_seq + 1, settings.journal.segment_bytes,
                                   settings.journal.fault_enospc_after_bytes, settings.journal.fault_fsync_fail_after,
                                   preallocate=settings.journal.preallocate, ends=ends)
    stats = {"checkpoint_seq": start_seq, "replayed": n, "replay_s": replay_s,
             "records_per_s": n / replay_s if replay_s > 0 else 0.0, "last_seq": engine.last_seq}
    log.info("recovered: checkpoint seq %d + %d journal records replayed in %.2fs (%.0f records/s); next seq %d",
             start_seq, n, replay_s, stats["records_per_s"], engine.last_seq + 1)
    return engine, stats


def _scratch_engine(settings: Settings, upto_seq: int | None = None, upto_ns: int | None = None) -> Engine:
    """A scratch engine (private memory, events off) restored from the newest valid checkpoint
    covering at most journal record ``upto_seq`` and records received at most at ``upto_ns``; an
    empty engine when there is none. Replay after it is the caller's."""
    _, cdir = dirs(settings)
    loaded = None
    for seq, path in reversed(ckpt.list_checkpoints(cdir)):
        if upto_seq is not None and seq > upto_seq:
            continue
        try:
            cand = ckpt.load_checkpoint(path)
        except (ckpt.CheckpointError, ValueError, OSError):
            continue
        if upto_ns is None or msgspec.msgpack.decode(cand[2])["last_recv_ns"] <= upto_ns:
            loaded = cand
            break
    scratch = msgspec.structs.replace(settings, book=msgspec.structs.replace(settings.book, shm_name=""))
    engine = (_restore(scratch, loaded, shm=False) if loaded is not None
              else Engine(scratch, Book(pivot=settings.book.pivot_currency)))
    engine.events_on = False
    return engine


def state_as_of(settings: Settings, portfolio_id: str, as_of_ns: int, request: m.PortfolioStateRequest):
    """The state of a portfolio after every journal record received at or before ``as_of_ns``.

    Built in a scratch engine (private memory): the newest checkpoint whose last
    record was received at or before as_of_ns, then replay of later records up to it.
    """
    jdir, _ = dirs(settings)
    engine = _scratch_engine(settings, upto_ns=as_of_ns)
    if not _replay_after(engine, jdir, lambda rec: rec.recv_ns > as_of_ns):
        return m.ErrorReply(code="HISTORY_RETIRED", message=m.ERROR_CODES["HISTORY_RETIRED"])
    return engine.state_response(msgspec.structs.replace(request, as_of_timestamp=None))


def engine_at(settings: Settings, seq: int) -> Engine | None:
    """A scratch engine (private memory, no journal, no events) holding the state after journal
    record ``seq``: the newest checkpoint at or before it, then replay up to it. None when what is
    on disk cannot rebuild it (the records after every usable checkpoint were retired)."""
    jdir, _ = dirs(settings)
    engine = _scratch_engine(settings, upto_seq=seq)
    if engine.last_seq == seq:
        return engine
    _replay_after(engine, jdir, lambda rec: rec.seq > seq)
    return engine if engine.last_seq == seq else None


def _replay_after(engine: Engine, jdir: str, past) -> bool:
    """Replay the journal records after ``engine.last_seq`` into a scratch engine, up to the first
    one for which ``past(rec)`` holds. False when the next record is no longer on disk (retired
    behind a checkpoint: nothing is replayed), or when a segment was deleted (by the daemon's
    checkpoint thread) while it was read: the engine is then part-way and must not be used."""
    start, first = engine.last_seq, []

    def upto():
        for rec in read_records(jdir, after_seq=start, repair=False):
            if not first:
                first.append(rec.seq)
                if rec.seq != start + 1:
                    return
            if past(rec):
                return
            yield rec

    try:
        engine.replay(upto())
    except FileNotFoundError:
        return False
    return not first or first[0] == start + 1


def catch_up_sets(settings: Settings, after: int, upto: int, chunk: int = 2000):
    """ChangeSets covering journal records (after, upto], in runs (lists), for a write-behind
    that resumes: replayed through a scratch engine and the same capture as the live path. When
    the state at ``after`` cannot be rebuilt, one full resync at ``upto`` (logged: the time
    series then have a gap)."""
    from .capture import ChangeCapture

    if upto <= after:
        return
    cfg = settings.sink
    engine = engine_at(settings, after)
    if engine is None:
        log.warning("journal records %d..%d can no longer be rebuilt (retired): writing the whole state as of "
                    "%d instead; the time series have a gap there", after + 1, upto, upto)
        engine = engine_at(settings, upto)
        cap = ChangeCapture(engine.book)
        cap.perf_fn = engine.performance_columns
        cap.seq = after
        yield [cap.take(upto, time.time_ns(), full=True)]
        return
    cap = ChangeCapture(engine.book, revalue_max_rows=1 << 62, weight_epsilon=cfg.weight_epsilon)
    cap.perf_fn = engine.performance_columns
    cap.seq = after
    engine.capture = cap
    jdir, _ = dirs(settings)
    batch: list = []

    def take(last_ns):
        engine.replay(batch)
        cs = cap.take(engine.last_seq, last_ns, snapshot=True, revalue=True)
        batch.clear()
        return [cs] if cs is not None else []

    for rec in read_records(jdir, after_seq=after, repair=False):
        if rec.seq > upto:
            break
        batch.append(rec)
        if len(batch) >= chunk:
            yield take(rec.recv_ns)
    if batch:
        yield take(batch[-1].recv_ns)
