"""A flush first serves the requests waiting on the command socket: an ack waits one flush at most,
however long the backlog of events (real ZeroMQ sockets, an in-process server, no journal)."""
import asyncio
import time

import msgspec
import zmq

from portfolio_state.daemon.config import load
from portfolio_state.daemon.server import Server
from portfolio_state.transport import messages as m


def test_a_flush_serves_waiting_requests_before_it_builds_events(tmp_path):
    settings = load(overrides=[f"transport.command_endpoint=ipc://{tmp_path}/cmd",
                               f"transport.event_endpoint=ipc://{tmp_path}/ev", "journal.data_dir=",
                               "sink.backend=none", "engine.max_events_per_flush=1"], environ={})
    order = []

    async def main():
        server = Server(settings)
        dealer = server.ctx.socket(zmq.DEALER)
        try:
            engine, codec = server.engine, server.engine.codec
            cmds = [m.PortfolioUpsert(f"u{i}", m.Portfolio(f"P{i}")) for i in range(3)]
            cmds += [m.CashFlowRequest(f"c{i}", f"c{i}", f"P{i}", 100.0, "USD", "DEPOSIT") for i in range(3)]
            engine.handle([([b""], codec.encode(c)) for c in cmds], time.time_ns())  # three portfolios changed
            send, publish = server._send, server._publish
            server._send = lambda replies, t0, n: (order.append(("reply", n)), send(replies, t0, n))
            server._publish = lambda events: (order.append(("events", len(events))), publish(events))
            dealer.connect(settings.transport.command_endpoint)
            dealer.send(codec.encode(m.PortfolioStateRequest("P1")))
            deadline = time.monotonic() + 5
            while not server.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # the request waits on the socket
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
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
