"""Client library: sync and asyncio clients for the command socket.

Owns: ``Client`` (blocking, lazy-pirate retries), ``AsyncClient`` (pipelined,
many requests in flight), ``CommandError``, ``CurveKeys`` and request builders.
Runs on: the caller's thread (one client per thread). Imports: zmq, msgspec, numpy, transport.

Retries resend the *same bytes*, so the same idempotency key: a retry of an
update that was applied returns its original reply and changes nothing.
Frames: [request id, body]; the daemon echoes every frame before the body, so a
reply is matched to its request and late replies of timed-out tries are dropped.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from dataclasses import dataclass

import msgspec
import numpy as np
import zmq

from . import messages as m


class CommandError(Exception):
    def __init__(self, reply: m.ErrorReply):
        super().__init__(f"{reply.code}: {reply.message}")
        self.code = reply.code
        self.message = reply.message
        self.reply = reply


@dataclass(frozen=True)
class CurveKeys:
    """Client CURVE keys (z85 bytes) and the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    def apply(self, sock) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


def new_key() -> str:
    return uuid.uuid4().hex


class _Builders:
    """Request constructors shared by both clients (return Structs, send nothing)."""

    @staticmethod
    def position_update(portfolio_id, position_id, instrument_id, transaction_type, quantity, price, fee=0.0,
                        key=None, timestamp=None):
        return m.PositionUpdateRequest(key or new_key(), portfolio_id, position_id, instrument_id, float(quantity),
                                       float(price), transaction_type, float(fee), timestamp)

    @staticmethod
    def batch(updates, key=None, detail=False):
        rows = [u if isinstance(u, m.PositionUpdate) else m.PositionUpdate(**u) for u in updates]
        return m.PositionUpdateBatch(key or new_key(), rows, detail)

    @staticmethod
    def columns(portfolio, slot, kind, qty, price, fee=None, timestamp=None, key=None):
        le = lambda a, t: np.ascontiguousarray(a, dtype=np.dtype(t).newbyteorder("<")).tobytes()  # noqa: E731
        return m.PositionUpdateColumns(key or new_key(), le(portfolio, np.int32), le(slot, np.int32), le(kind, np.int8),
                                       le(qty, np.float64), le(price, np.float64),
                                       le(fee, np.float64) if fee is not None else b"",
                                       le(timestamp, np.int64) if timestamp is not None else b"")


class Client(_Builders):
    """Blocking client. ``call`` returns the reply Struct; helpers raise CommandError on an error reply."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:7755", timeout: float = 5.0, retries: int = 3,
                 encoding: str = "msgpack", curve: CurveKeys | None = None, context: zmq.Context | None = None):
        self.endpoint, self.timeout, self.retries, self.curve = endpoint, timeout, retries, curve
        self.ctx = context or zmq.Context.instance()
        self.json = encoding == "json"
        self._enc = msgspec.json.Encoder() if self.json else msgspec.msgpack.Encoder()
        self._dec = (msgspec.json if self.json else msgspec.msgpack).Decoder(m.Reply)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4)
        self.sock = None
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            self.curve.apply(self.sock)
        self.sock.connect(self.endpoint)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, body: bytes) -> bytes:
        """Send one frame as is and return the reply body (for tests of bad input)."""
        rid = self._prefix + next(self._ids).to_bytes(8, "little")
        for _ in range(self.retries + 1):
            self.sock.send_multipart([rid, body])
            deadline = self.timeout * 1000
            while self.sock.poll(deadline):
                frames = self.sock.recv_multipart()
                if frames[0] == rid:
                    return frames[-1]
            self._connect()  # lazy pirate: a fresh socket, then the same bytes again
        raise TimeoutError(f"no reply from {self.endpoint} after {self.retries + 1} tries")

    def call(self, request):
        return self._dec.decode(self.send_raw(self._enc.encode(request)))

    def _ok(self, request):
        reply = self.call(request)
        if isinstance(reply, m.ErrorReply):
            raise CommandError(reply)
        return reply

    # -- commands
    def update_position(self, *args, **kw) -> m.PositionUpdateResponse:
        return self._ok(self.position_update(*args, **kw))

    def update_batch(self, updates, key=None, detail=False) -> m.BatchResponse:
        return self._ok(self.batch(updates, key, detail))

    def update_columns(self, *args, **kw) -> m.BatchResponse:
        return self._ok(self.columns(*args, **kw))

    def resolve(self, positions=(), portfolio_ids=(), instrument_ids=()) -> m.ResolveResponse:
        return self._ok(m.ResolveRequest([m.PositionRef(*p) for p in positions], list(portfolio_ids), list(instrument_ids)))

    def cash_flow(self, portfolio_id, amount, currency="USD", flow_type="DEPOSIT", cash_flow_id=None, key=None,
                  description="", timestamp=None) -> m.Ack:
        return self._ok(m.CashFlowRequest(key or new_key(), cash_flow_id or new_key(), portfolio_id, float(amount),
                                          currency, flow_type, description, timestamp))

    def prices(self, ticks: dict[str, float], key=None, timestamp=None) -> m.Ack:
        return self._ok(m.PriceTicks(key or new_key(), [m.PriceTick(k, float(v)) for k, v in ticks.items()], timestamp))

    def fx(self, rates: dict[str, float], key=None, timestamp=None) -> m.Ack:
        return self._ok(m.FxTicks(key or new_key(), [m.FxRate(k, float(v)) for k, v in rates.items()], timestamp))

    def upsert_portfolio(self, portfolio_id, key=None, **fields) -> m.Ack:
        return self._ok(m.PortfolioUpsert(key or new_key(), m.Portfolio(portfolio_id, **fields)))

    def upsert_instruments(self, instruments, key=None) -> m.Ack:
        return self._ok(m.InstrumentUpsert(key or new_key(),
                                           [i if isinstance(i, m.Instrument) else m.Instrument(**i) for i in instruments]))

    def set_limit(self, portfolio_id, exposure_type, category, limit_percentage, key=None) -> m.Ack:
        return self._ok(m.ExposureLimit(key or new_key(), portfolio_id, exposure_type, category, limit_percentage))

    def set_status(self, portfolio_id, position_id, instrument_id, status, key=None) -> m.Ack:
        return self._ok(m.PositionStatusChange(key or new_key(), portfolio_id, position_id, instrument_id, status))

    # -- queries
    def state(self, portfolio_id, include_positions=True, include_exposures=True, include_performance=False,
              as_of_timestamp=None) -> m.PortfolioStateResponse:
        return self._ok(m.PortfolioStateRequest(portfolio_id, include_positions, include_exposures,
                                                include_performance, as_of_timestamp))

    def exposures(self, portfolio_id) -> m.ExposuresResponse:
        return self._ok(m.ExposuresRequest(portfolio_id))

    def metrics(self) -> dict:
        return self._ok(m.MetricsRequest()).metrics

    def health(self) -> m.HealthResponse:
        return self._ok(m.HealthRequest())


class AsyncClient(_Builders):
    """asyncio client: many requests in flight on one socket, replies matched by id."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:7755", timeout: float = 5.0, retries: int = 3,
                 curve: CurveKeys | None = None):
        import zmq.asyncio

        self.endpoint, self.timeout, self.retries = endpoint, timeout, retries
        self.ctx = zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            curve.apply(self.sock)
        self.sock.connect(endpoint)
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(m.Reply)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4)
        self._waiting: dict[bytes, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            fut = self._waiting.pop(frames[0], None)
            if fut is not None and not fut.done():
                fut.set_result(frames[-1])

    async def call(self, request):
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        body = self._enc.encode(request)
        rid = self._prefix + next(self._ids).to_bytes(8, "little")
        for _ in range(self.retries + 1):
            fut = asyncio.get_running_loop().create_future()
            self._waiting[rid] = fut
            await self.sock.send_multipart([rid, body])
            try:
                return self._dec.decode(await asyncio.wait_for(fut, self.timeout))
            except asyncio.TimeoutError:
                continue
        self._waiting.pop(rid, None)
        raise TimeoutError(f"no reply from {self.endpoint} after {self.retries + 1} tries")

    async def _ok(self, request):
        reply = await self.call(request)
        if isinstance(reply, m.ErrorReply):
            raise CommandError(reply)
        return reply

    async def update_position(self, *args, **kw):
        return await self._ok(self.position_update(*args, **kw))

    async def update_batch(self, updates, key=None, detail=False):
        return await self._ok(self.batch(updates, key, detail))

    async def update_columns(self, *args, **kw):
        return await self._ok(self.columns(*args, **kw))

    async def state(self, portfolio_id, **kw):
        return await self._ok(m.PortfolioStateRequest(portfolio_id, **kw))

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        self.sock.close(0)
