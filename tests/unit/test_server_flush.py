"""A flush first serves the requests waiting on the command socket: an ack waits one flush at most,
however long the backlog of events; with fsync=batch, a flush waiting for a sync publishes when it
lands, writes waiting or not (real ZeroMQ sockets and journal, an in-process server)."""
import asyncio
import threading
import time

import msgspec
import zmq

from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import open_engine
from portfolio_state.daemon.server import Server
from portfolio_state.transport import messages as m


def _settings(tmp_path, *more):
    return load(overrides=[f"transport.command_endpoint=ipc://{tmp_path}/cmd",
                           f"transport.event_endpoint=ipc://{tmp_path}/ev", "sink.backend=none",
                           "engine.max_events_per_flush=1", *more], environ={})


def _changes(server, n=3):
    """n portfolios changed (created and funded), straight through the engine."""
    engine, codec = server.engine, server.engine.codec
    cmds = [m.PortfolioUpsert(f"u{i}", m.Portfolio(f"P{i}")) for i in range(n)]
    cmds += [m.CashFlowRequest(f"c{i}", f"c{i}", f"P{i}", 100.0, "USD", "DEPOSIT") for i in range(n)]
    engine.handle([([b""], codec.encode(c)) for c in cmds], time.time_ns())


def _watch(server, order):
    send, publish = server._send, server._publish
    server._send = lambda replies, t0, n: (order.append(("reply", n)), send(replies, t0, n))
    server._publish = lambda events: (order.append(("events", len(events))), publish(events))


async def _until(cond, what):
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.001)


def test_a_flush_serves_waiting_requests_before_it_builds_events(tmp_path):
    settings = _settings(tmp_path, "journal.data_dir=")
    order = []

    async def main():
        server = Server(settings)
        dealer = server.ctx.socket(zmq.DEALER)
        try:
            engine, codec = server.engine, server.engine.codec
            _changes(server)
            _watch(server, order)
            dealer.connect(settings.transport.command_endpoint)
            dealer.send(codec.encode(m.PortfolioStateRequest("P1")))
            await _until(lambda: server.router.getsockopt(zmq.EVENTS) & zmq.POLLIN, "the request on the socket")
            server._flush_events()
            assert order == [("reply", 1), ("events", 1)] and engine.events.backlog == 2
            assert dealer.poll(5000)
            reply = msgspec.msgpack.decode(dealer.recv())
            assert reply["type"] == "state_response" and reply["portfolio_state"]["portfolio_id"] == "P1"
            order.clear()
            server._flush_events()  # nothing waiting: just the next event
            assert order == [("events", 1)] and engine.events.backlog == 1
        finally:
            dealer.close(0)
            server.close()

    asyncio.run(main())


def test_with_fsync_batch_a_flush_waiting_for_a_sync_publishes_when_it_lands(tmp_path):
    """A write served first makes the state not durable: the flush waits for its sync and then
    publishes, though another write is waiting by then (serving it first would put the events off
    for as long as writes kept coming)."""
    settings = _settings(tmp_path, f"journal.data_dir={tmp_path}/data", "journal.fsync=batch")
    order = []

    async def main():
        server = Server(settings, open_engine(settings)[0])
        assert server.journal is not None and server.fsync == "batch"
        dealer = server.ctx.socket(zmq.DEALER)
        try:
            codec = server.engine.codec
            _changes(server)
            server._start_sync()
            await _until(server._is_durable, "the first sync")
            _watch(server, order)
            dealer.connect(settings.transport.command_endpoint)

            async def write(i):
                dealer.send(codec.encode(m.CashFlowRequest(f"w{i}", f"w{i}", "P0", 1.0, "USD", "DEPOSIT")))
                await _until(lambda: server.router.getsockopt(zmq.EVENTS) & zmq.POLLIN, "the write on the socket")

            gate, real_sync = threading.Event(), server.journal.sync
            server.journal.sync = lambda: (gate.wait(5), real_sync())[1]  # syncs land when the test says
            await write(1)
            server._flush_events()  # serves the write first: held for its sync, and so is the flush
            assert order == [] and not server._is_durable()
            await write(2)  # waiting when the sync lands
            gate.set()
            await _until(lambda: len(order) >= 2, "the sync")
            assert order[:2] == [("reply", 1), ("events", 1)]
            await _until(lambda: order.count(("reply", 1)) == 2, "the second write's reply")
        finally:
            dealer.close(0)
            server.close()

    asyncio.run(main())
