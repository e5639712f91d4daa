"""Redis cache: the spec's keys, JSON values, the spec's TTLs, written in pipelines.

Owns: ``RedisCache``: ``stage`` turns a ChangeSet into key -> JSON (a later value
of a key replaces a pending one: the cache holds current values only, so it
coalesces while Redis is away and catches up with the latest), ``flush``
writes what is pending in one non-transactional pipeline (SET .. EX), keeping it
pending when Redis fails.
Runs on: the write-behind thread's asyncio loop. Imports: msgspec, redis, persistence.

Keys (after the configured prefix), values readable without our code:
  portfolio_state:{id}   PortfolioState              TTL 5 min
  positions:{id}         List<Position>              TTL 5 min
  exposures:{id}         Map<ExposureType, List<Exposure>>  TTL 10 min
  margin:{id}            MarginRequirement           TTL 10 min
  performance:{id}       PerformanceMetrics          TTL 15 min
  performance:current    the daemon's service metrics TTL 1 min
"""
from __future__ import annotations

import msgspec

from .changes import (EXPOSURE_TYPES, ChangeSet, exposure_docs, margin_doc, performance_doc, position_docs,
                      state_doc)

TTL_S = {"portfolio_state": 300, "positions": 300, "exposures": 600, "performance": 900, "margin": 600,
         "performance:current": 60}


class RedisCache:
    def __init__(self, url: str, prefix: str = ""):
        self.url, self.prefix = url, prefix
        self.r = None
        self.pending: dict[str, tuple[bytes, int]] = {}
        self._enc = msgspec.json.Encoder()

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)
        await self.r.ping()

    async def close(self) -> None:
        if self.r is not None:
            try:
                await self.r.aclose()
            except Exception:
                pass
            self.r = None

    def _put(self, kind: str, pid: str | None, value) -> None:
        key = f"{self.prefix}{kind}" if pid is None else f"{self.prefix}{kind}:{pid}"
        self.pending[key] = (self._enc.encode(value), TTL_S[kind if pid is not None else "performance:current"])

    def stage(self, cs: ChangeSet) -> None:
        s = cs.states
        if s is not None:
            for j, pid in enumerate(s.portfolio_id):
                self._put("portfolio_state", pid, state_doc(s, j))
                self._put("margin", pid, margin_doc(s, j, cs.ts_ns))
                perf = performance_doc(s, j)
                if perf is not None:
                    self._put("performance", pid, perf)
        if cs.redis_exposures is not None:  # whole maps, of the portfolios whose lists are rebuilt
            docs = exposure_docs(cs.redis_exposures.resolve())
            for pid in cs.redis_positions:  # a portfolio with no exposure at all still gets its (empty) map
                self._put("exposures", pid, docs.get(pid) or {t: [] for t in EXPOSURE_TYPES})
        for pid, rows in cs.redis_positions.items():
            self._put("positions", pid, position_docs(rows))
        if cs.metrics is not None:
            self._put("performance:current", None, cs.metrics)

    async def flush(self, chunk: int = 5000, chunk_bytes: int = 256 << 10) -> int:
        """Write what is pending; raises (and keeps it pending) if Redis fails. Pipelines of at most
        ``chunk`` keys and about ``chunk_bytes`` of values: asyncio's socket transport (Python 3.11)
        trims its send buffer from the front, so one multi-megabyte pipeline costs quadratic copying
        on this thread, under the GIL the engine needs."""
        n = 0
        while self.pending:
            keys, size = [], 0
            for k, (v, _) in self.pending.items():
                keys.append(k)
                size += len(v)
                if len(keys) >= chunk or size >= chunk_bytes:
                    break
            pipe = self.r.pipeline(transaction=False)
            for k in keys:
                v, ttl = self.pending[k]
                pipe.set(k, v, ex=ttl)
            await pipe.execute()
            for k in keys:
                self.pending.pop(k, None)
            n += len(keys)
        return n
