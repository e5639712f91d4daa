"""The write-behind thread: committed ChangeSets -> the store (watermarked) and the Redis cache.

Owns: ``WriteBehind``: a thread with its own asyncio loop and connections, fed by
a bounded queue the engine never blocks on (``offer`` refuses when full and the
engine's capture keeps coalescing). It connects with backoff, resumes from the
store's watermark (catch-up: a private scratch engine rebuilt at the watermark
replays the journal up to where the live hand-offs begin, through the same
capture), writes what is queued as one store write (the store's transaction or,
for PostgreSQL, its two, each with its watermark: ADR 0019), retries a failed
write after reconnecting (and skips it if the watermark shows it committed; a
write never committed stops everything after it), keeps Redis current
(coalesced while Redis is away), rests after each live write so that writing
takes at most sink.max_busy of its time (ADR 0018), can run under SCHED_IDLE once
caught up (sink.sched_idle, ADR 0024), and drains on shutdown.
Runs on: its own thread ("pstate-sink"). Imports: daemon.capture, daemon.recovery, persistence.
"""
from __future__ import annotations

import asyncio
import sys
import logging
import os
import queue
import threading
import time
import uuid

from portfolio_state.persistence.changes import ChangeSet, tables

from .config import Settings

GIL_SWITCH_S = 0.0005

log = logging.getLogger("pstate.sink")

_STOP = object()


class _Stopped(Exception):
    """The thread was told to stop while a transaction had not committed: nothing after it may be
    written (a later watermark would skip its rows for good)."""


def journal_id(data_dir: str) -> str:
    """The identity of this data directory's journal (its sequence numbers mean something only
    with it): created once, kept in <data_dir>/journal.id."""
    path = os.path.join(data_dir, "journal.id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        jid = uuid.uuid4().hex
        os.makedirs(data_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(jid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return jid


def make_store(settings: Settings, jid: str):
    cfg = settings.sink
    if cfg.backend == "postgres":
        from portfolio_state.persistence.pgstore import PostgresStore

        return PostgresStore(cfg.postgres_dsn, jid, cfg.partitions_ahead)
    from portfolio_state.persistence.duckstore import DuckDBStore

    return DuckDBStore(cfg.duckdb_path or os.path.join(settings.journal.data_dir, "store.duckdb"), jid,
                       cfg.duckdb_checkpoint_mb, cfg.duckdb_threads)


class WriteBehind:
    def __init__(self, settings: Settings, start_seq: int, jid: str, store=None, cache=None):
        cfg = settings.sink
        self.settings, self.cfg, self.start_seq, self.jid = settings, cfg, start_seq, jid
        self.store = store if store is not None else make_store(settings, jid)
        if cache is None and cfg.redis_url:
            from portfolio_state.persistence.rediscache import RedisCache

            cache = RedisCache(cfg.redis_url, cfg.redis_prefix)
        self.cache = cache
        self.q: queue.Queue = queue.Queue(cfg.queue_max)
        self.persisted = -1          # the store's watermark (-1: not known yet)
        self.store_error: str | None = None   # set by a failed attempt (connecting is not an outage)
        self.cache_error: str | None = None
        self.catching_up = True
        self.rows = 0
        self.transactions = 0
        self.write_s = 0.0
        self.rest_s = 0.0            # time spent waiting after writes (sink.max_busy)
        self.retries = 0
        self.sched = "normal"      # the thread's scheduling policy: "idle" once caught up (sink.sched_idle)
        self._run_id = uuid.uuid4().hex[:16]   # with a counter: names each transaction (the lost-answer check)
        self._txns = 0
        self._stopping = threading.Event()
        self._draining = threading.Event()   # the final drain: no more resting between writes
        self.thread = threading.Thread(target=self._main, name="pstate-sink", daemon=True)

    # ------------------------------------------------------------------ engine side
    def start(self) -> None:
        # The thread's Python work (Redis documents, row batches) shares the GIL with the engine.
        # CPython hands the GIL to a waiting thread only every switch interval (5 ms by default),
        # and the engine waits for it after each socket call: a busy thread turns into 5 ms steps
        # of engine latency. A shorter interval bounds that wait (ADR 0010).
        if sys.getswitchinterval() > GIL_SWITCH_S:
            sys.setswitchinterval(GIL_SWITCH_S)
        self.thread.start()

    def has_room(self) -> bool:
        return not self.q.full()

    def offer(self, cs: ChangeSet) -> bool:
        try:
            self.q.put_nowait(cs)
            return True
        except queue.Full:
            return False

    def drain(self, timeout: float) -> bool:
        """Persist what was handed off, then stop the thread. False if it could not in time
        (the journal still holds everything: the next start resumes from the watermark)."""
        deadline = time.time() + timeout
        self.hurry()
        while time.time() < deadline:
            try:
                self.q.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join(max(0.0, deadline - time.time()))
        if self.thread.is_alive():
            self._stopping.set()  # stop after the transaction in flight
            self.thread.join(10.0)
            return False
        return True

    def status(self, committed_seq: int) -> dict:
        lag = committed_seq - max(self.persisted, 0)
        return {"backend": self.store.name, "persisted_seq": self.persisted, "lag_records": lag,
                "store_error": self.store_error, "cache": self.cache is not None, "cache_error": self.cache_error,
                "catching_up": self.catching_up, "sched": self.sched, "queued": self.q.qsize(), "rows_written": self.rows,
                "transactions": self.transactions, "retries": self.retries,
                "busy": self.write_s / (self.write_s + self.rest_s) if self.write_s else 0.0,
                "rows_per_s_writing": self.rows / self.write_s if self.write_s else 0.0,
                "timescaledb": getattr(self.store, "timescale", False)}

    def degraded(self, committed_seq: int) -> str | None:
        if self.store_error:
            return f"store: {self.store_error}"
        if committed_seq - max(self.persisted, 0) > self.cfg.lag_degraded:
            return f"store lag {committed_seq - max(self.persisted, 0)} records"
        if self.cache_error:
            return f"cache: {self.cache_error}"
        return None

    # ------------------------------------------------------------------ thread
    def _yield_cpu(self) -> None:
        """SCHED_IDLE for this thread once it has caught up (sink.sched_idle, ADR 0024); threads
        it starts from then on inherit it. The catch-up after a start runs at the normal policy:
        it holds the GIL for whole chunks, and a starved holder would keep the engine waiting."""
        sched = "normal"
        if self.cfg.sched_idle:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                sched = "idle"
            except (AttributeError, OSError) as e:  # not Linux, or refused: the normal policy, said once
                log.warning("write-behind thread: SCHED_IDLE not available (%s); it runs at the normal policy", e)
        self.sched = sched

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("write-behind thread failed; the journal holds everything, a restart resumes")
            self.store_error = "thread failed (see log)"

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(self.cfg.retry_max_s, 0.05 * 2 ** min(attempt, 10)))

    async def _connect_store(self) -> bool:
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self.store.close()
                self.persisted = await self.store.open()
                self.store_error = None
                return True
            except Exception as e:
                self.store_error = f"{type(e).__name__}: {e}"
                if attempt == 0:
                    log.warning("store unreachable (%s); retrying with backoff, the journal holds everything",
                                self.store_error)
                attempt += 1
                await self._backoff(attempt)
        return False

    async def _connect_cache(self) -> None:
        try:
            await self.cache.close()
            await self.cache.open()
            self.cache_error = None
        except Exception as e:
            self.cache_error = f"{type(e).__name__}: {e}"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if not await self._connect_store():
            return
        if self.cache is not None:
            await self._connect_cache()
        try:
            if self.persisted < self.start_seq:
                await self._catch_up()
            self._yield_cpu()
            self.catching_up = False
            await self._serve(loop)
        except _Stopped:
            log.warning("write-behind stopped with a transaction not committed; the next start resumes "
                        "from the watermark")
        await self.store.close()
        if self.cache is not None:
            await self.cache.close()

    async def _serve(self, loop) -> None:
        """The live loop: queued hand-offs -> one transaction (or a few), Redis, then the rest."""
        cache_next = 0.0
        cache_attempt = 0
        stop = False
        while not stop:
            items = await loop.run_in_executor(None, self._take, 0.05)
            if items and items[-1] is _STOP:
                items.pop()
                stop = True
            took = 0.0
            if items:
                if self.cache is not None:
                    for cs in items:
                        self.cache.stage(cs)
                took = await self._write(items)
            if self.cache is not None and self.cache.pending and time.monotonic() >= cache_next:
                try:
                    if self.cache_error:
                        await self._connect_cache()
                    if not self.cache_error:
                        await self.cache.flush()
                        cache_attempt = 0
                except Exception as e:
                    self.cache_error = f"{type(e).__name__}: {e}"
                if self.cache_error:
                    cache_attempt += 1
                    cache_next = time.monotonic() + min(self.cfg.retry_max_s, 0.05 * 2 ** min(cache_attempt, 10))
            if self._stopping.is_set():
                break
            await self._rest(took)  # after Redis has what this write had

    def _take(self, wait: float) -> list:
        """What is queued now (at least one item if any arrives within ``wait``)."""
        out = []
        try:
            out.append(self.q.get(timeout=wait))
            while out[-1] is not _STOP and len(out) < 1000:
                out.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return out

    async def _write(self, items: list[ChangeSet]) -> float:
        """Runs of hand-offs up to batch_rows rows, one store write each, in order; the seconds the
        writes took. (A hand-off may cover no new journal record, e.g. a snapshot or the exact final
        pass: it is still written.)"""
        run: list[ChangeSet] = []
        rows = 0
        took = 0.0
        for cs in items:
            run.append(cs)
            rows += cs.rows()
            if rows >= self.cfg.batch_rows:
                took += await self._commit(run)
                run, rows = [], 0
        if run:
            took += await self._commit(run)
        return took

    async def _commit(self, run: list[ChangeSet]) -> float:
        seq_hi = run[-1].seq_hi
        tabs = tables(run, int_ids=getattr(self.store, "int_ids", False))
        n = sum(len(next(iter(c.values()))) for c in tabs.values() if c)
        attempt = 0
        self._txns += 1
        txn = f"{self._run_id}:{self._txns}"
        while True:
            try:
                t0 = time.perf_counter()
                await self.store.write(tabs, seq_hi, txn)
                took = time.perf_counter() - t0
                self.write_s += took
                self.persisted = max(self.persisted, seq_hi)
                self.rows += n
                self.transactions += 1
                self.store_error = None
                return took
            except Exception as e:
                self.store_error = f"{type(e).__name__}: {e}"
                self.retries += 1
                if attempt == 0:
                    log.warning("store write failed (%s); reconnecting with backoff", self.store_error)
                attempt += 1
                if self._stopping.is_set():
                    raise _Stopped from None
                await self._backoff(attempt)
                if not await self._connect_store():
                    raise _Stopped
                try:
                    if await self.store.last_txn() == txn:
                        return 0.0  # it had committed: the answer was lost, not the rows
                except Exception:
                    continue

    def hurry(self) -> None:
        """Shutdown has begun: no more resting between writes."""
        self._draining.set()

    async def _rest(self, took: float) -> None:
        """Wait took * (1 / max_busy - 1) after the live loop's writes (at most retry_max_s), unless
        draining or stopping: the thread then writes at most max_busy of the wall time. What the
        engine hands off meanwhile waits in the queue and goes in the next transaction; only when
        the queue is full does it coalesce in the capture (ADR 0018). The catch-up never rests."""
        busy = self.cfg.max_busy
        if busy >= 1.0 or took <= 0.0:
            return
        t0 = time.perf_counter()
        end = t0 + min(self.cfg.retry_max_s, took * (1.0 / busy - 1.0))
        while not (self._draining.is_set() or self._stopping.is_set()):
            left = end - time.perf_counter()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.02))
        self.rest_s += time.perf_counter() - t0

    async def _catch_up(self) -> None:
        """Copy journal records (watermark, start_seq] through a scratch engine, or resync whole."""
        from .recovery import catch_up_sets

        t0 = time.perf_counter()
        n = 0
        start = max(self.persisted, 0)
        for run in catch_up_sets(self.settings, start, self.start_seq):
            if self._stopping.is_set():
                raise _Stopped
            await self._write(run)
            n += len(run)
            await asyncio.sleep(0)
        log.info("write-behind caught up from seq %d to %d (%d hand-offs) in %.2fs",
                 start, self.start_seq, n, time.perf_counter() - t0)
