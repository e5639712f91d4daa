"""The daemon's loop: ZeroMQ sockets in and out around the engine, on one uvloop thread.

Owns: ``Server`` (sockets, CURVE, wake-up on the ROUTER's file descriptor,
draining, replies, events, market-data feeds, latency histogram, signals,
readiness) and ``run(settings)``.
Runs on: the main thread's event loop; the engine runs inside its callbacks.
Imports: zmq, uvloop, hdrh, daemon, transport.

Why not zmq.asyncio: measured here, it adds 15-40 us per round trip. The loop
instead watches the socket's FD (edge-triggered: after any socket operation we
re-check ZMQ_EVENTS) and drains up to ``max_drain`` frames with non-blocking
calls, so one wake-up applies a whole batch.
Durability (fsync=batch): a batch's book-changing commands are written to the
journal before it is applied; its replies wait in order until a group-commit
fdatasync on the sync thread covers it, while the loop applies the next batch.
Events and checkpoint snapshots are taken only when everything applied is
durable (intake pauses for at most one sync to reach that point), so nothing
not durable leaves the process; shared-memory readers are the one exception
(they may see at most the batches whose sync is in flight). An fsync error is
fail-stop: every held reply becomes JOURNAL_IO, the process exits 1, and a
restart recovers from disk. A full disk refuses changes and keeps serving reads.
Lifecycle: recover (checkpoint + replay) -> on a new host, take over the book
from the command side (daemon/takeover.py) -> warm the JIT -> bind -> ready; on
SIGTERM/SIGINT stop intake, wait for the last sync, flush replies and events,
write a checkpoint, close, exit 0.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import msgspec
import numpy as np
import zmq
from hdrh.histogram import HdrHistogram

from portfolio_state.persistence import syncthread
from portfolio_state.persistence.journal import JournalError
from portfolio_state.transport.frames import readable, recv_message, send_message

from . import ckptfork, hugepages
from .config import Settings
from .cowreserve import CowReserve, reserve_bytes
from .engine import Engine

log = logging.getLogger("pstate.server")


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) our state, when it is listening."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(state.encode())


class Server:
    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        t = settings.transport
        self.engine = engine or Engine(settings)
        self.journal = self.engine.journal
        self.fsync = settings.journal.fsync if self.journal else "off"
        self._held: deque = deque()            # (journal seq required, replies) in arrival order
        self._durable = self.engine.last_seq   # everything replayed at start is on disk
        self._syncing = False
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="pstate-sync")  # where syncthread is unavailable
        self._syncer: syncthread.SyncThread | None = None  # started by serve() with fsync=batch
        self._sync_target = 0
        self._ckpt_pool = ThreadPoolExecutor(1, thread_name_prefix="pstate-ckpt")
        self._quiesce: list = []               # callbacks waiting for "everything applied is durable"
        self._checkpointing = False
        self._ckpt_arrays: dict | None = None  # the last snapshot's arrays, reused by the next
        self._reserve: CowReserve | None = None  # freed before a forked checkpoint (ADR 0023)
        self.exit_code = 0
        self.ctx = zmq.Context()
        self.auth = None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, 4 * t.max_message_bytes)
        self.router.setsockopt(zmq.SNDHWM, t.sndhwm)
        self.router.setsockopt(zmq.RCVHWM, t.sndhwm)
        self.router.setsockopt(zmq.LINGER, 2000)
        if t.curve_secret_key_file:
            self._curve(self.router)
        self.router.bind(t.command_endpoint)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, t.sndhwm)
        self.pub.setsockopt(zmq.LINGER, 2000)
        if t.curve_secret_key_file:
            self._curve(self.pub)
        self.pub.bind(t.event_endpoint)
        self.feeds = []
        for kind, endpoints in (("price", t.price_feeds), ("fx", t.fx_feeds)):
            for ep in endpoints:
                s = self.ctx.socket(zmq.SUB)
                s.setsockopt(zmq.SUBSCRIBE, b"")
                s.connect(ep)
                self.feeds.append((kind, s))
        self._feed_dec = msgspec.msgpack.Decoder(list[tuple[str, float]])
        self.latency = HdrHistogram(1, 60_000_000, 3)  # microseconds
        self.dropped_events = 0
        self.started = time.time()
        self._rate = (time.time(), 0, 0.0)  # (sample time, updates then, updates/s)
        self._drain_pending = False
        self._flush_pending = False
        self._draining = False
        self._drains = self._drains_at_flush = 0  # drains so far, and at the last flush
        self._flush_cost = 0.0
        self._stopped: asyncio.Future | None = None
        self.sink = None
        if self.journal is not None and settings.sink.backend != "none":
            from .sinkpump import SinkPump

            self.sink = SinkPump(settings, self.engine)
            self.sink.metrics_fn = self._service_metrics

    def _curve(self, sock) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        t = self.settings.transport
        if self.auth is None:
            if not t.curve_clients_dir:
                raise ValueError("CURVE needs transport.curve_clients_dir (allowed client public keys)")
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=t.curve_clients_dir)
        public, secret = zmq.auth.load_certificate(t.curve_secret_key_file)
        if secret is None:
            raise ValueError(f"{t.curve_secret_key_file} holds no secret key")
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    # --------------------------------------------------------------- hot path
    def _on_readable(self) -> None:
        if not self._drain_pending:
            self._drain()

    def _drain(self) -> None:
        self._drains += 1
        self._draining = True
        try:
            self._drain_batch()
        finally:
            self._draining = False

    def _drain_batch(self) -> None:
        self._drain_pending = False
        if self._quiesce and not self._is_durable():
            return  # paused until the sync in flight lands (see _synced)
        router = self.router
        frames = []
        limit = self.settings.transport.max_drain
        t0 = time.perf_counter_ns()
        try:
            while len(frames) < limit:
                msg = recv_message(router)
                frames.append((msg[:-1], msg[-1]))
        except zmq.Again:
            pass
        if frames:
            try:
                replies = self.engine.handle(frames, time.time_ns())
            except Exception:
                log.exception("batch of %d failed", len(frames))
                replies = self.engine.internal_error(frames)
            if self.fsync == "batch" and (self._held or self.engine.last_seq > self._durable):
                self._held.append((self.engine.last_seq, replies, t0, len(frames)))
                self._start_sync()
            else:
                self._send(replies, t0, len(frames))
            self._events_due()
        self._rearm(router, self._drain)

    def _send(self, replies, t0: int, n: int) -> None:
        router = self.router
        for envelope, body in replies:
            try:
                send_message(router, envelope, body)
            except zmq.Again:  # the client stopped reading; ROUTER cannot queue for it
                pass
        self.latency.record_value(max(1, (time.perf_counter_ns() - t0) // 1000), n)

    # --------------------------------------------------------------- group commit
    def _is_durable(self) -> bool:
        return self.fsync != "batch" or (self.engine.last_seq <= self._durable and not self._held)

    def _start_sync(self) -> None:
        if self._syncing or self.journal is None or self.journal.failed:
            return
        target = self.engine.last_seq
        if target <= self._durable:
            return
        self._syncing = True
        if self._syncer is not None:  # fdatasync off the GIL; _sync_done runs when it lands
            try:
                fd = self.journal.begin_sync()
                self._sync_target = target
                self._syncer.request(fd)
            except Exception as e:  # after the current batch is held: its replies then carry the error
                err = e if isinstance(e, JournalError) else JournalError("JOURNAL_IO", f"starting a sync failed: {e!r}")
                if self.journal.failed is None:
                    self.journal.failed = err  # never believe a later sync
                asyncio.get_running_loop().call_soon(self._synced, target, err)
            return
        loop = asyncio.get_running_loop()
        fut = self._sync_pool.submit(self.journal.sync)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._synced, target, f.exception()))

    def _sync_done(self) -> None:
        res = self._syncer.collect()
        if res is None:
            return
        try:
            self.journal.end_sync(*res)
            error = None
        except JournalError as e:
            error = e
        self._synced(self._sync_target, error)

    def _synced(self, target: int, error) -> None:
        self._syncing = False
        if error is not None:
            self._fail_stop(error)
            return
        self._durable = max(self._durable, target)
        if self.sink is not None:
            self.sink.release(self._durable)
        while self._held and self._held[0][0] <= self._durable:
            _, replies, t0, n = self._held.popleft()
            self._send(replies, t0, n)
        # sending consumed the ROUTER's edge-triggered readiness: re-check, or requests that
        # arrived meanwhile would never wake the loop
        self._rearm(self.router, self._drain)
        if self.engine.last_seq > self._durable and self.fsync == "batch":
            self._start_sync()
        if self._quiesce and self._is_durable():
            waiting, self._quiesce = self._quiesce, []
            for fn in waiting:
                fn()
            self._rearm(self.router, self._drain)
            if not self._drain_pending:
                self._drain_pending = True
                asyncio.get_running_loop().call_soon(self._drain)

    def _when_durable(self, fn) -> None:
        """Run fn once everything applied is durable (now, or after the sync in flight)."""
        if self._is_durable():
            fn()
        else:
            self._quiesce.append(fn)
            self._start_sync()

    def _fail_stop(self, error) -> None:
        log.critical("journal sync failed (%s): no reply of an unsynced batch is acknowledged; stopping", error)
        codec = self.engine.codec
        from .engine import _err
        for _, replies, t0, n in self._held:
            failed = [(env, codec.encode(_err("JOURNAL_IO", message=str(error)), body[:1] == b"{"))
                      for env, body in replies]
            self._send(failed, t0, n)
        self._held.clear()
        self._rearm(self.router, self._drain)
        self.engine.accepting = False
        self.exit_code = 1
        self.stop()

    def _freeze(self) -> None:
        """Move everything alive into the GC's permanent generation, once a second (ADR 0008)."""
        if self._stopping():
            return
        gc.freeze()
        asyncio.get_running_loop().call_later(1.0, self._freeze)

    def _interval_sync(self) -> None:
        if self._stopping():
            return
        self._start_sync()
        asyncio.get_running_loop().call_later(self.settings.journal.fsync_interval_ms / 1000, self._interval_sync)

    # --------------------------------------------------------------- checkpoints
    def _checkpoint_due(self) -> None:
        if self._stopping():
            return
        if not self._checkpointing:
            self._checkpoint_soon()
        asyncio.get_running_loop().call_later(self.settings.journal.checkpoint_interval_s, self._checkpoint_due)

    def _cow_checkpoints(self) -> bool:
        """Checkpoints forked from a book in private memory: the fork itself is the snapshot, no copy."""
        return self.settings.journal.checkpoint_fork and ckptfork.available() and self.engine.book.arena is None

    def _checkpoint_asked(self) -> None:
        """SIGUSR1: a checkpoint now (an operator before maintenance; perf/bench_checkpoint.py)."""
        if self._stopping():
            log.info("SIGUSR1: the daemon is stopping (its last checkpoint is written at shutdown)")
        elif self.journal is None:
            log.warning("SIGUSR1: no journal, so no checkpoint to write")
        elif self._checkpointing:
            log.info("SIGUSR1: a checkpoint is being written already")
        else:
            log.info("SIGUSR1: checkpoint asked")
            self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """A checkpoint once everything applied is durable; before a forked one, the copy-on-write
        reserve is freed on the checkpoint thread (ADR 0023), so its pages are there for the copies."""
        res = self._reserve  # (there is one only where checkpoints are forked copy-on-write)
        if res is None:
            self._when_durable(self._checkpoint_now)
            return
        loop = asyncio.get_running_loop()

        def freed(f):  # (on the checkpoint thread, after a fill still running at start-up: one thread)
            if f.exception() is not None:
                log.error("checkpoint: freeing the copy-on-write reserve failed", exc_info=f.exception())
            try:
                loop.call_soon_threadsafe(self._when_durable, self._checkpoint_now)
            except RuntimeError:  # the loop has closed: the daemon is gone
                pass

        self._ckpt_pool.submit(res.release).add_done_callback(freed)

    def _stopping(self) -> bool:
        return self._stopped is None or self._stopped.done()

    def _fill_reserve(self) -> None:
        """(checkpoint thread) Fault the copy-on-write reserve in again (ADR 0023)."""
        if self._reserve is None:
            return
        t0 = time.perf_counter()
        try:
            if not self._reserve.fill():
                return
        except Exception:  # an optimisation: a failure leaves the reserve empty, nothing else
            log.exception("checkpoint: filling the copy-on-write reserve failed")
            return
        log.info("checkpoint: copy-on-write reserve of %d MiB filled in %.0f ms", self._reserve.nbytes >> 20,
                 1e3 * (time.perf_counter() - t0))

    def _checkpoint_now(self) -> None:
        from .recovery import snapshot, write_checkpoint

        if self._checkpointing or self.journal is None or self.journal.failed or self._stopping():
            if self._reserve is not None and not self._stopping():
                self._ckpt_pool.submit(self._fill_reserve)  # freed for a fork that is not happening
            return
        self._checkpointing = True
        engine, settings = self.engine, self.settings
        forked = settings.journal.checkpoint_fork and ckptfork.available()
        cow = self._cow_checkpoints()
        floor = self.sink.wb.persisted if self.sink is not None else None
        t0 = time.perf_counter()
        snap = None
        if not cow:
            # a copy, on this thread: consistent (a forked child lists the window from its copy)
            snap = snapshot(engine, self._ckpt_arrays, window=not forked)
            self._ckpt_arrays = snap[1]  # reused by the next one (never while this one is being written)
        t_snap = time.perf_counter()
        loop = asyncio.get_running_loop()

        def done(f):
            loop.call_soon_threadsafe(self._checkpointed, f)

        def job():  # in the child
            if cow:  # the child gives back each piece of the book once written (ADR 0023)
                return write_checkpoint(engine, settings, snapshot(engine, copy=False), floor,
                                        release=hugepages.release_pages)
            seq, arrays, meta = snap
            return write_checkpoint(engine, settings, (seq, arrays, {**meta, "window": engine.window.raw_items()}),
                                    floor)

        if forked:
            try:
                pid, r = ckptfork.fork_checkpoint(job)
            except OSError as e:  # e.g. no memory for the child's page tables: write it from a thread
                # (the reserve stays empty until a forked checkpoint succeeds: memory is short)
                log.warning("checkpoint: fork failed (%s); writing it from a thread", e)
                if snap is None:
                    snap = snapshot(engine, self._ckpt_arrays)
                    self._ckpt_arrays = snap[1]
                else:
                    snap[2]["window"] = engine.window.raw_items()
                forked = False
        if forked:
            log.info("checkpoint at seq %d: %s %.1f ms + fork %.1f ms on the engine thread (child %d)",
                     engine.last_seq, "copy-on-write, snapshot in the child," if cow else "snapshot",
                     1e3 * (t_snap - t0), 1e3 * (time.perf_counter() - t_snap), pid)
            self._ckpt_pool.submit(self._wait_child, pid, r, cow).add_done_callback(done)
        else:
            self._ckpt_pool.submit(write_checkpoint, engine, settings, snap, floor).add_done_callback(done)

    def _wait_child(self, pid: int, r: int, cow: bool):
        """(checkpoint thread) The child's report; then, if it shared the private book, the huge
        pages the engine split meanwhile are re-formed (off the GIL), before the next fork, and
        the copy-on-write reserve is filled again from what the child's exit freed."""
        try:
            return ckptfork.wait_checkpoint(pid, r)
        finally:
            if cow:
                try:
                    t0 = time.perf_counter()
                    done = self.engine.book.collapse_huge()
                    log.info("checkpoint: huge pages re-formed in %.0f ms%s", 1e3 * (time.perf_counter() - t0),
                             "" if done else " (in part at most: unused capacity, THP never, or no MADV_COLLAPSE)")
                except Exception:  # an optimisation: it must not turn a written checkpoint into a failed one
                    log.exception("checkpoint: re-forming huge pages failed")
                self._fill_reserve()

    def _checkpointed(self, fut) -> None:
        self._checkpointing = False
        try:
            _, oldest_kept = fut.result()
        except Exception:
            log.exception("checkpoint failed; the journal still holds everything")
            return
        if oldest_kept:  # on the checkpoint thread: after the first checkpoint of a big build that is
            # dozens of 64 MiB files and a directory fsync, which held the engine ~150 ms (ADR 0023)
            try:
                self._ckpt_pool.submit(self._retire, oldest_kept + 1)
            except RuntimeError:  # close() has shut the pool: the next start's first checkpoint retires them
                pass

    def _retire(self, seq: int) -> None:
        """(checkpoint thread) Delete the journal segments a kept checkpoint covers. The writer on
        the engine thread only ever adds the newest segment, which is never one of them."""
        try:
            n = self.journal.retire_before(seq)
        except Exception:  # noqa: BLE001 - logged; the segments stay, the next checkpoint tries again
            log.exception("checkpoint: deleting old journal segments failed; they stay on disk")
            return
        if n:
            log.info("checkpoint: %d journal segments before seq %d deleted", n, seq)

    # --------------------------------------------------------------- write-behind
    def _durable_seq(self) -> int:
        return self.engine.last_seq if self.fsync == "off" else self._durable

    def _sink_tick(self) -> None:
        if self._stopping():
            return
        try:
            self.sink.tick(self._durable_seq())
        except Exception:
            log.exception("write-behind capture failed")
        asyncio.get_running_loop().call_later(self.settings.sink.flush_interval_ms / 1000, self._sink_tick)

    def _service_metrics(self) -> dict:
        """performance:current: the service-level part of ``metrics``."""
        full = self.metrics()
        return {"updates_per_sec": full["updates_per_sec"], "updates": full["updates"],
                "latency_us": full["latency_us"], "journal_seq": self.engine.last_seq,
                "persisted_seq": self.sink.wb.persisted if self.sink else None, "uptime_s": full["uptime_s"]}

    def _rearm(self, sock, fn) -> None:
        if readable(sock) and not self._drain_pending:
            self._drain_pending = True
            asyncio.get_running_loop().call_soon(fn)

    def _events_due(self) -> None:
        """Flush now (interval 0) or once the interval since the last flush has passed."""
        if not self.engine.events_on or self._flush_pending:
            return
        e = self.settings.engine
        # keep flushing within the CPU budget: a flush that took c seconds waits c * (1/budget - 1);
        # with portfolios left over (a capped flush) that is the only wait: they have coalesced already
        interval = 0.0 if self.engine.events.backlog else e.event_interval_ms / 1000
        delay = max(interval, self._flush_cost * (1.0 / max(e.event_cpu_budget, 1e-3) - 1.0))
        if delay <= 0 and not self.engine.events.backlog:
            self._flush_events()
        else:  # (a backlog comes back through the loop, so replies and input interleave with it)
            self._flush_pending = True
            asyncio.get_running_loop().call_later(max(delay, 0.0), self._flush_events)

    def _flush_events(self, serve_first: bool = True) -> None:
        if self.router.closed:  # a flush still scheduled when the server closed
            return
        if serve_first and not self._draining:
            # Requests first. A backlog is worked off by a run of flushes: the loop's timers count whole
            # milliseconds, so the budget's waits under half of one are none, and without a yield the run held
            # this core for ~3 ms while ZeroMQ's I/O thread, woken onto it, waited to hand over the
            # requests that had come in (p99 3 ms at 100,000 updates/s). Inside such a run (no drain
            # since the last flush), give the core up for that thread; not after a drain, where a yield
            # could hand the core to a client for its whole time slice (single frames 32k -> 20k/s).
            # Then serve what is waiting (with _flush_pending set, so the drain schedules no other
            # flush). An ack waits for one flush at most.
            if self._drains == self._drains_at_flush:
                os.sched_yield()
            if self._is_durable() and readable(self.router):
                self._flush_pending = True
                self._drain()
        if not self._is_durable():
            # events show durable state only: this flush runs when the sync in flight lands, and then
            # serves nothing first (a write served then would put it off again, as long as writes came)
            self._flush_pending = True
            self._when_durable(self._flush_durable)
            return
        self._flush_pending = False
        self._drains_at_flush = self._drains
        t0 = time.perf_counter()
        try:
            self._publish(self.engine.flush_events())
        except Exception:
            log.exception("event flush failed")
        self._flush_cost = time.perf_counter() - t0
        if self.engine.events.backlog:  # portfolios left for the next flush: come back even if no input does
            self._events_due()

    def _flush_durable(self) -> None:
        self._flush_events(serve_first=False)

    def _publish(self, events) -> None:
        for topic, body in events:
            try:
                send_message(self.pub, (topic,), body)
            except zmq.Again:
                self.dropped_events += 1

    def _on_feed(self, kind, sock) -> None:
        prices: dict[str, float] = {}
        rates: dict[str, float] = {}
        target = prices if kind == "price" else rates
        try:
            for _ in range(self.settings.transport.max_drain):
                body = sock.recv_multipart(zmq.NOBLOCK)[-1]
                try:
                    target.update(self._feed_dec.decode(body))  # conflated: last value per id wins
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    log.warning("bad %s feed frame dropped: %s", kind, e)
        except zmq.Again:
            pass
        if prices or rates:
            self.engine.apply_market(prices, rates, time.time_ns())
            self._events_due()
        if readable(sock):
            asyncio.get_running_loop().call_soon(self._on_feed, kind, sock)

    # --------------------------------------------------------------- metrics
    def metrics(self) -> dict:
        h = self.latency
        now = time.time()
        t_prev, n_prev, rate = self._rate
        updates = self.engine.counters["updates"]
        if now - t_prev >= 1.0:
            rate = (updates - n_prev) / (now - t_prev)
            self._rate = (now, updates, rate)
        return {
            **self.engine.metrics(),
            "latency_us": {"p50": h.get_value_at_percentile(50), "p90": h.get_value_at_percentile(90),
                           "p99": h.get_value_at_percentile(99), "p99_9": h.get_value_at_percentile(99.9),
                           "max": h.get_max_value(), "count": h.get_total_count()},
            "updates_per_sec": rate,
            "updates_per_sec_since_start": updates / max(1e-9, now - self.started),
            "dropped_events": self.dropped_events,
            "journal": {"fsync": self.fsync, "last_seq": self.engine.last_seq, "durable_seq": self._durable,
                        "held_batches": len(self._held),
                        "failed": self.journal.failed.code if self.journal and self.journal.failed else None},
            "sink": self.sink.status() if self.sink is not None else None,
            "uptime_s": now - self.started,
        }

    # --------------------------------------------------------------- lifecycle
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self.engine.metrics_hook = self.metrics
        loop.add_reader(self.router.getsockopt(zmq.FD), self._on_readable)
        for kind, s in self.feeds:
            loop.add_reader(s.getsockopt(zmq.FD), self._on_feed, kind, s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        loop.add_signal_handler(signal.SIGUSR1, self._checkpoint_asked)
        self.engine.health_hook = self.health
        t = self.settings.transport
        if self.fsync == "off" and self.journal is not None:
            log.warning("journal.fsync=off: acknowledged updates are NOT durable (benchmarks only)")
        if self.fsync == "batch" and self.journal is not None and syncthread.available():
            self._syncer = syncthread.SyncThread()
            loop.add_reader(self._syncer.fileno(), self._sync_done)
            self.engine.appended_hook = self._start_sync
        if self.fsync == "interval":
            loop.call_later(self.settings.journal.fsync_interval_ms / 1000, self._interval_sync)
        mb = self.settings.journal.checkpoint_cow_reserve_mb
        if self.journal is not None and mb != 0 and self._cow_checkpoints():
            try:
                self._reserve = CowReserve(reserve_bytes(mb, sum(a.nbytes for a in self.engine.book.a)))
                self._ckpt_pool.submit(self._fill_reserve)
            except OSError as e:  # an optimisation: never a reason not to start
                log.warning("checkpoint: no copy-on-write reserve (%s)", e)
        if self.journal is not None and self.settings.journal.checkpoint_interval_s > 0:
            if not self._cow_checkpoints():
                # the snapshot's buffers, faulted in now while idle: the first checkpoint under load
                # otherwise copies into fresh pages (measured 0.5 s against 0.1 s on the engine thread)
                self._ckpt_arrays, _ = self.engine.book.export_state()
            loop.call_later(self.settings.journal.checkpoint_interval_s, self._checkpoint_due)
        loop.call_later(1.0, self._freeze)
        if self.sink is not None:
            self.sink.start()
            loop.call_later(self.settings.sink.flush_interval_ms / 1000, self._sink_tick)
        log.info("ready: commands on %s, events on %s, pid %d", t.command_endpoint, t.event_endpoint, os.getpid())
        sd_notify("READY=1")
        loop.call_soon(self._drain)
        await self._stopped
        sd_notify("STOPPING=1")
        self.engine.accepting = False
        await self._settle()
        if self.sink is not None:  # after a fail-stop only what was already handed off, briefly
            drain = self.sink.final if self.exit_code == 0 else (lambda _seq: self.sink.wb.drain(2.0))
            await asyncio.get_running_loop().run_in_executor(None, drain, self._durable_seq())
        self._publish(self.engine.flush_events())
        while self.engine.events.backlog:
            self._publish(self.engine.flush_events())
        loop.remove_reader(self.router.getsockopt(zmq.FD))
        for _, s in self.feeds:
            loop.remove_reader(s.getsockopt(zmq.FD))
        self.close()
        log.info("stopped cleanly after %d messages", self.engine.counters["messages"])

    async def _settle(self) -> None:
        """Let the sync in flight land and its replies leave; then a last sync and checkpoint."""
        deadline = time.time() + 30
        while (self._held or self._syncing) and self.exit_code == 0 and time.time() < deadline:
            self._start_sync()
            await asyncio.sleep(0.001)
        if self.journal is not None and not self.journal.failed and self.exit_code == 0:
            from .recovery import write_checkpoint

            while self._checkpointing and time.time() < deadline:
                await asyncio.sleep(0.01)
            try:
                self.journal.sync()
                self._durable = self.engine.last_seq
                write_checkpoint(self.engine, self.settings)
            except Exception:
                log.exception("final sync or checkpoint failed; recovery will replay the journal")

    def health(self) -> tuple[str, dict]:
        j = self.journal
        details = {"accepting": self.engine.accepting, "fsync": self.fsync}
        if j is not None and j.failed:
            return "unhealthy", {**details, "journal": j.failed.code, "reason": str(j.failed)}
        if not self.engine.accepting:
            return "unhealthy", details
        if self.sink is not None:
            details["sink"] = self.sink.status()
            why = self.sink.degraded()
            if why:
                return "degraded", {**details, "reason": why}
        return "ok", details

    def stop(self, sig=None) -> None:
        log.info("signal %s: stopping intake", signal.Signals(sig).name if sig else "stop")
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def close(self) -> None:
        if self._syncer is not None:
            asyncio.get_running_loop().remove_reader(self._syncer.fileno())
            self._syncer.close()
            self._syncer = None
        self._sync_pool.shutdown(wait=True)
        self._ckpt_pool.shutdown(wait=True)
        if self._reserve is not None:
            self._reserve.close()
        if self.journal is not None:
            self.journal.close()
        for _, s in self.feeds:
            s.close(0)
        self.router.close()  # LINGER lets queued replies and events leave
        self.pub.close()
        if self.auth:
            self.auth.stop()
        self.ctx.term()
        if self.engine.book.arena:
            self.engine.book.arena.close()


def warm_up() -> None:
    """Compile (or load from cache) every kernel before binding, so no request pays for it."""
    from portfolio_state.daemon.book import Book, Capacity
    from portfolio_state.transport import messages as m

    e = Engine(Settings(), Book(Capacity(portfolios=2, slots=4, instruments=2)))
    codec = e.codec
    cmds = [
        m.PortfolioUpsert("w1", m.Portfolio("W")),
        m.InstrumentUpsert("w2", [m.Instrument("X")]),
        m.PriceTicks("w3", [m.PriceTick("X", 10.0)]),
        m.FxTicks("w4", [m.FxRate("EUR", 1.1)]),
        m.CashFlowRequest("w5", "c", "W", 100.0, "USD", "DEPOSIT"),
        m.PositionUpdateRequest("w6", "W", "p", "X", 1.0, 10.0, "BUY"),
        m.PositionStatusChange("w7", "W", "p", "X", "SUSPENDED"),
        m.PortfolioStateRequest("W"),
    ]
    e.handle([([b""], codec.encode(c)) for c in cmds], time.time_ns())
    e.handle([([b""], codec.encode(m.CashFlowRequest(f"w{8 + i}", f"c{i}", "W", 1.0, "USD", "FEE"))) for i in range(2)],
             time.time_ns())  # a run of two: the batch cash-flow kernel (one alone takes the scalar one)
    e.flush_events()  # the event builder's compiled part too
    from .capture import ChangeCapture

    cap = ChangeCapture(e.book)  # and the write-behind capture's rows
    cap.note_trades(np.zeros(1, np.int64), np.ones(1, np.bool_))
    cap.take(0, time.time_ns(), snapshot=True)
    np.zeros(1)


def run(settings: Settings) -> int:
    import uvloop

    from .recovery import open_engine, state_as_of
    from .takeover import TakeoverError, discard_unfinished, take_over

    try:
        discard_unfinished(settings)
    except TakeoverError as e:
        log.critical("cannot start: %s", e)
        return 4
    warm_up()  # the kernels loaded first: replay runs them at full speed from its first record
    try:
        engine, stats = open_engine(settings)
    except Exception as e:  # a damaged journal stops start-up: never skip data silently
        log.critical("cannot recover: %s", e)
        return 3
    try:  # a new host (empty journal, sink.takeover): load the book before anything is served (ADR 0011)
        take_over(settings, engine)
    except TakeoverError as e:
        log.critical("takeover failed, not starting: %s", e)
        if engine.journal is not None:
            engine.journal.close()
        if engine.book.arena:
            engine.book.arena.close()
        return 4
    if settings.journal.data_dir:
        engine.as_of_hook = lambda pid, ns, req: state_as_of(settings, pid, ns, req)
    # the recovered book's ids, encoded before anything is served: events and single-update replies
    # (daemon/replies.py, events on or off) both write them from these pools
    engine.events.prepare()
    gc.freeze()  # what recovery and warm-up built lives for good: keep it out of every collection
    server = Server(settings, engine)
    uvloop.run(server.serve())
    if server.sink is not None and server.sink.wb.thread.is_alive():
        # the write-behind did not finish its transaction in time. Interpreter shutdown would kill
        # that thread inside the store's C++ code (DuckDB aborts the process on that); the journal
        # and the checkpoint are on disk, so leave now: the next start resumes from the watermark
        log.warning("write-behind still busy at exit; leaving it (the next start resumes from the watermark)")
        logging.shutdown()
        os._exit(server.exit_code)
    return server.exit_code
