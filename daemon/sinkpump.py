"""The engine-thread side of the write-behind: when to capture, and when a capture may leave.

Owns: ``SinkPump``: on a timer (sink.flush_interval_ms) it takes a ChangeSet from
the capture, but only when the thread's queue has room (otherwise changes keep
coalescing in the capture: the engine never waits); a ChangeSet covering records
not yet durable is held until the group commit covering them lands (``released``),
so no store ever holds what the journal might lose. Snapshots, revaluation passes
and heartbeats run on their own cadences; ``final`` hands off everything (exact
weights too) at shutdown.
Runs on: the engine (event-loop) thread. Imports: daemon.capture, daemon.writebehind.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from .capture import ChangeCapture
from .config import Settings
from .writebehind import WriteBehind, journal_id

log = logging.getLogger("pstate.sink")


class SinkPump:
    def __init__(self, settings: Settings, engine, writebehind: WriteBehind | None = None):
        cfg = settings.sink
        self.cfg = cfg
        self.engine = engine
        self.capture = ChangeCapture(engine.book, cfg.redis_positions_per_flush if cfg.redis_url else 0,
                                     cfg.revalue_max_rows, cfg.weight_epsilon)
        self.capture.seq = engine.last_seq
        self.capture.perf_fn = engine.performance_columns
        engine.capture = self.capture
        self.wb = writebehind or WriteBehind(settings, engine.last_seq, journal_id(settings.journal.data_dir))
        self.held: deque = deque()   # ChangeSets waiting for their records to be durable
        now = time.monotonic()
        self._last_reval = self._last_beat = now
        # the snapshot cadence in ticks, and the revaluation window per tick
        tick_ms = max(1e-3, cfg.flush_interval_ms)
        self.phases = max(1, round(cfg.state_interval_ms / tick_ms))
        per_pass = max(1, round(cfg.revalue_interval_ms / tick_ms))
        self.capture.reval_rows = max(1, -(-cfg.revalue_max_rows // per_pass))
        self.reval_every_s = tick_ms / 1000 if per_pass > 1 else cfg.revalue_interval_ms / 1000
        if self.capture.k_redis:  # whole Redis lists: redis_positions_per_flush per state interval
            self.capture.k_redis = max(1, -(-self.capture.k_redis // self.phases))
        self._tick = 0
        self.metrics_fn = None       # the server's metrics, for performance:current

    def start(self) -> None:
        self.wb.start()
        log.info("write-behind to %s%s", self.wb.store.name, " and Redis" if self.wb.cache is not None else "")

    def tick(self, durable_seq: int) -> None:
        """The timer: release what became durable, then take a new ChangeSet if there is room.

        The snapshot and revaluation work is spread over the ticks of its interval, so that no
        tick stalls the engine for long: each tick snapshots the changed portfolios of one phase
        (portfolio index mod the ticks per state_interval_ms) and revalues its share of
        revalue_max_rows."""
        self.release(durable_seq)
        if self.held or not self.wb.has_room():
            return  # back-pressure: the capture keeps coalescing (the phases wait too)
        now = time.monotonic()
        cfg = self.cfg
        if cfg.heartbeat_s > 0 and now - self._last_beat >= cfg.heartbeat_s:
            self.capture.heartbeat()
            self._last_beat = now
        phase = self._tick % self.phases
        reval = now - self._last_reval >= self.reval_every_s
        metrics = (self.metrics_fn() if phase == 0 and self.metrics_fn and self.wb.cache is not None else None)
        cs = self.capture.take(self.engine.last_seq, time.time_ns(), snapshot=(phase, self.phases), revalue=reval,
                               metrics=metrics)
        self._tick += 1
        if reval:
            self._last_reval = now
        if cs is not None:
            self.held.append(cs)
            self.release(durable_seq)

    def release(self, durable_seq: int) -> None:
        while self.held and self.held[0].seq_hi <= durable_seq and self.wb.offer(self.held[0]):
            self.held.popleft()

    def final(self, durable_seq: int) -> bool:
        """At shutdown, everything applied being durable: hand off all that is left, with an exact
        revaluation pass, and wait for the thread to persist it."""
        self.wb.hurry()  # no resting while the last hand-offs wait for room in the queue
        cap = self.capture
        cap.exact()
        cs = cap.take(self.engine.last_seq, time.time_ns(), snapshot=True, revalue=True)
        if cs is not None:
            self.held.append(cs)
        deadline = time.time() + self.cfg.drain_timeout_s
        while self.held and time.time() < deadline:
            self.release(durable_seq)
            if self.held:
                time.sleep(0.01)
        ok = self.wb.drain(max(0.1, deadline - time.time())) and not self.held
        if not ok:
            log.warning("write-behind did not drain in %.0fs; the next start resumes from the watermark",
                        self.cfg.drain_timeout_s)
        return ok

    def status(self) -> dict:
        return {**self.wb.status(self.engine.last_seq), "held": len(self.held)}

    def degraded(self) -> str | None:
        return self.wb.degraded(self.engine.last_seq)
