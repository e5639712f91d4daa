"""Market-data SUB feeds (conflated per batch), the asyncio client, and the demo end to end."""
import asyncio
import subprocess
import sys
import time

import msgspec
import zmq

from portfolio_state.transport.client import AsyncClient
from tests.integration.conftest import seed
from tests.integration.daemon_proc import DaemonProcess, free_port


def test_price_and_fx_feeds_revalue_the_book(tmp_path):
    ctx = zmq.Context.instance()
    price_pub, fx_pub = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
    p_ep, f_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    price_pub.bind(p_ep)
    fx_pub.bind(f_ep)
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", f'transport.price_feeds=["{p_ep}"]',
                                               "--set", f'transport.fx_feeds=["{f_ep}"]'])
    d.wait_ready()
    try:
        with d.client() as c:
            seed(c)
            c.update_position("P1", "a", "AAPL", "BUY", 10, 190.0)
            c.update_position("P1", "s", "SAP", "BUY", 10, 120.0)
            enc = msgspec.msgpack.encode
            deadline = time.time() + 15
            while True:  # PUB/SUB joins late: publish until the daemon has seen it
                price_pub.send_multipart([b"px", enc([["AAPL", 199.0], ["AAPL", 200.0], ["NOPE", 5.0]])])
                fx_pub.send_multipart([b"fx", enc([["EUR", 1.25]])])
                fx_pub.send_multipart([b"fx", b"\xc1 not msgpack"])  # dropped with a warning, harmless
                time.sleep(0.1)
                pos = {p.position_id: p for p in c.state("P1").positions}
                if pos["a"].market_value == 2000.0 and pos["s"].market_value == 1500.0:
                    break
                assert time.time() < deadline, pos
            assert c.metrics()["ticks"] >= 2
            assert c.health().status == "ok"
    finally:
        price_pub.close(0)
        fx_pub.close(0)
        assert d.stop() == 0, d.output()
    assert "bad fx feed frame dropped" in d.output()


def test_async_client_pipelines_requests(tcp_daemon):
    with tcp_daemon.client() as c:
        seed(c)

    async def main():
        ac = AsyncClient(tcp_daemon.command, timeout=5.0)
        try:
            replies = await asyncio.gather(*[
                ac.update_position("P1", f"p{i % 5}", "AAPL", "BUY", 1, 190.0, key=f"async-{i}") for i in range(200)])
            assert len({r.key for r in replies}) == 200
            again = await ac.update_position("P1", "p0", "AAPL", "BUY", 1, 190.0, key="async-0")
            assert again == replies[0]
            st = await ac.state("P1")
            assert sum(p.quantity for p in st.positions) == 200
        finally:
            await ac.close()

    asyncio.run(main())


def test_demo_runs_end_to_end():
    out = subprocess.run([sys.executable, "-m", "portfolio_state.daemon.cli", "demo", "--portfolios", "30",
                          "--instruments", "60", "--positions", "5", "--seconds", "2", "--batch", "100"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "updates/s offered" in out.stdout and "p99" in out.stdout and "top sector exposures" in out.stdout
