"""Event subscriber with gap detection and re-sync.

Owns: ``Subscriber``: SUB socket on the daemon's event endpoint, decoding
``portfolio_state_updated`` events and checking each portfolio's sequence.
Runs on: the caller's thread. Imports: zmq, msgspec, transport.

Sequences are per portfolio and grow by one per event. When an event's sequence
is not last + 1 the subscriber counts a gap and, given a ``Client``, re-syncs:
it asks for the portfolio's state (which carries the sequence it includes),
and from then on drops events at or below that sequence.
"""
from __future__ import annotations

import msgspec
import zmq

from .messages import PortfolioStateUpdatedEvent


class Subscriber:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:7756", portfolio_ids=(), client=None, curve=None,
                 context: zmq.Context | None = None):
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            curve.apply(self.sock)
        for pid in portfolio_ids or [""]:
            # topic is the portfolio id; ZeroMQ matches prefixes, so exact ids are checked on receipt
            self.sock.setsockopt(zmq.SUBSCRIBE, pid.encode())
        self.only = set(portfolio_ids)
        self.sock.connect(endpoint)
        self.client = client
        self.last: dict[str, int] = {}
        self.gaps: list[tuple[str, int, int]] = []   # (portfolio, expected, got)
        self.resyncs = 0
        self._dec = msgspec.msgpack.Decoder(PortfolioStateUpdatedEvent)

    def recv(self, timeout: float = 1.0) -> PortfolioStateUpdatedEvent | None:
        """The next in-order event, or None after timeout seconds."""
        while self.sock.poll(int(timeout * 1000)):
            topic, body = self.sock.recv_multipart()
            pid = topic.decode()
            if self.only and pid not in self.only:
                continue
            ev = self._dec.decode(body)
            last = self.last.get(pid)
            if last is not None and ev.sequence <= last:
                continue  # already covered by a re-sync
            if last is not None and ev.sequence != last + 1:
                self.gaps.append((pid, last + 1, ev.sequence))
                if self.client is not None:
                    self.resync(pid)
                    if ev.sequence <= self.last[pid]:
                        continue
            self.last[pid] = ev.sequence
            return ev
        return None

    def resync(self, portfolio_id: str):
        """Fetch the portfolio's state; later events continue from its sequence."""
        state = self.client.state(portfolio_id)
        self.last[portfolio_id] = state.sequence
        self.resyncs += 1
        return state

    def close(self) -> None:
        self.sock.close(0)
