"""A real daemon process over real ZeroMQ sockets (tcp and ipc): every command,
idempotent retries, events with gap detection, SIGTERM."""
import signal
import time

import msgspec
import numpy as np
import pytest

from portfolio_state.kernels import TradeKind
from portfolio_state.transport import messages as m
from portfolio_state.transport.client import CommandError
from portfolio_state.transport.subscriber import Subscriber
from tests.integration.conftest import seed


def eventually(fn, timeout=10.0, interval=0.02):
    deadline = time.time() + timeout
    while True:
        try:
            result = fn()
            if result:
                return result
        except AssertionError:
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def test_every_command(daemon):
    with daemon.client() as c:
        seed(c)
        r = c.update_position("P1", "pos1", "AAPL", "BUY", 100, 190.5, fee=1.0)
        assert r.updated_position.quantity == 100 and r.updated_position.status == "ACTIVE"
        assert r.portfolio_impact.cash_impact == -19051.0
        assert [x.exposure_type for x in r.exposure_changes] == ["INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS"]
        b = c.update_batch([
            {"portfolio_id": "P1", "position_id": "pos2", "instrument_id": "SAP", "quantity_change": 50, "price": 121.0, "transaction_type": "BUY"},
            {"portfolio_id": "P1", "position_id": "pos3", "instrument_id": "XOM", "quantity_change": 10, "price": 111.0, "transaction_type": "SHORT"},
        ], detail=True)
        assert b.accepted == 2 and b.rejected == [] and len(b.results) == 2
        res = c.resolve(positions=[("P1", "pos1", "AAPL"), ("P1", "pos4", "XOM")])
        assert res.errors == [] and len(res.slots) == 2
        col = c.update_columns(np.array(res.portfolios), np.array(res.slots), np.array([TradeKind.SELL, TradeKind.BUY]),
                               np.array([10.0, 5.0]), np.array([191.0, 112.0]))
        assert col.accepted == 2
        c.set_limit("P1", "SECTOR", "Technology", 0.25)
        c.set_status("P1", "pos3", "XOM", "SUSPENDED")
        with pytest.raises(CommandError) as e:
            c.update_position("P1", "pos3", "XOM", "COVER", 10, 100.0)
        assert e.value.code == "SUSPENDED"
        c.set_status("P1", "pos3", "XOM", "ACTIVE")
        c.set_status("P1", "pos9", "AAPL", "PENDING")
        c.prices({"AAPL": 200.0})
        c.fx({"EUR": 1.2})
        c.cash_flow("P1", 250.0, flow_type="DIVIDEND")
        st = c.state("P1")
        pos = {p.position_id: p for p in st.positions}
        assert pos["pos1"].quantity == 90 and pos["pos1"].market_value == 18000.0
        assert pos["pos2"].market_value == 50 * 120 * 1.2
        assert pos["pos9"].status == "PENDING"
        tech = [x for x in st.exposures["SECTOR"] if x.category == "Technology"][0]
        assert tech.limit_percentage == 0.25 and tech.utilization == pytest.approx(abs(tech.exposure_percentage) / 0.25)
        assert st.cash["USD"] == 1_000_000 - 19051 + 10 * 111 + 10 * 191 - 5 * 112 + 250
        assert st.margin.initial_margin > 0
        ex = c.exposures("P1")
        assert set(ex.exposures) == {"INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS"}
        with pytest.raises(CommandError) as e:
            c.state("P1", as_of_timestamp=1)  # before P1 existed
        assert e.value.code == "UNKNOWN_PORTFOLIO"
        mt = c.metrics()
        assert mt["updates"] == 5 and mt["latency_us"]["count"] > 0 and "p99" in mt["latency_us"]
        assert c.health().status == "ok"


def test_json_requests_get_json_replies(daemon):
    with daemon.client(encoding="json") as c:
        seed(c)
        r = c.update_position("P1", "pos1", "AAPL", "BUY", 10, 190.0)
        assert r.updated_position.quantity == 10
    with daemon.client() as c:
        raw = c.send_raw(b'{"type": "state", "portfolio_id": "P1"}')
        assert raw.startswith(b"{") and msgspec.json.decode(raw)["portfolio_state"]["position_count"] == 1


def test_retries_reuse_the_key_and_apply_once(tcp_daemon):
    with tcp_daemon.client() as c:
        seed(c)
        req = c.position_update("P1", "pos1", "AAPL", "BUY", 10, 190.0, key="retry-1")
        first = c.call(req)
        again = c.call(req)
        assert again == first
        assert c.state("P1").positions[0].quantity == 10
        conflict = c.call(c.position_update("P1", "pos1", "AAPL", "BUY", 11, 190.0, key="retry-1"))
        assert isinstance(conflict, m.ErrorReply) and conflict.code == "KEY_CONFLICT"
        # the same key twice in one batch frame sequence: both answered, applied once
        body = c._enc.encode(c.position_update("P1", "pos1", "AAPL", "BUY", 5, 190.0, key="dup-in-batch"))
        c.sock.send_multipart([b"a", body])
        c.sock.send_multipart([b"b", body])
        got = {}
        while len(got) < 2:
            f = c.sock.recv_multipart()
            got[f[0]] = f[-1]
        assert got[b"a"] == got[b"b"]
        assert c.state("P1").positions[0].quantity == 15
        assert c.metrics()["replays"] >= 2


def test_client_retry_after_timeout_reuses_key(tmp_path):
    """The client times out while the daemon is stopped (SIGSTOP), retries the same bytes, and
    the update is applied exactly once."""
    from tests.integration.daemon_proc import DaemonProcess

    d = DaemonProcess(tmp_path, "tcp")
    d.wait_ready()
    try:
        with d.client(timeout=0.5, retries=20) as c:
            seed(c)
            d.proc.send_signal(signal.SIGSTOP)
            import threading

            threading.Timer(1.2, lambda: d.proc.send_signal(signal.SIGCONT)).start()
            r = c.update_position("P1", "pos1", "AAPL", "BUY", 10, 190.0, key="k-timeout")
            assert r.updated_position.quantity == 10
            time.sleep(0.3)
            assert c.state("P1").positions[0].quantity == 10  # not 20, 30, ...
    finally:
        assert d.stop() == 0, d.output()


def test_events_coalesced_with_sequences_and_gap_resync(tcp_daemon):
    with tcp_daemon.client() as c:
        seed(c)
        sub = Subscriber(tcp_daemon.events, portfolio_ids=["P1"], client=c)
        try:
            def subscribed():
                c.cash_flow("P1", 1.0)
                return sub.recv(0.2) is not None
            eventually(subscribed)
            base = sub.last["P1"]
            b = c.update_batch([{"portfolio_id": "P1", "position_id": f"p{i % 3}", "instrument_id": "AAPL",
                                 "quantity_change": 1, "price": 190.0, "transaction_type": "BUY"} for i in range(30)])
            assert b.accepted == 30
            ev = sub.recv(2.0)
            assert ev.sequence == base + 1  # one event for the whole batch
            assert sorted((p.position_id, p.old_quantity, p.new_quantity) for p in ev.position_changes) == [
                ("p0", 0, 10), ("p1", 0, 10), ("p2", 0, 10)]
            assert {p.change_type for p in ev.position_changes} == {"OPEN"}
            inst = [x for x in ev.exposure_changes if x.exposure_type == "INSTRUMENT"][0]
            assert inst.old_percentage == 0.0 and inst.new_percentage == pytest.approx(30 * 190 / ev.portfolio_state.total_value)
            # a price tick revalues P1: one event, position changes empty
            c.prices({"AAPL": 191.0})
            ev = sub.recv(2.0)
            assert ev.sequence == base + 2 and ev.position_changes == []
            # simulate a lost event: the subscriber skips one, sees the gap and re-syncs
            sub.last["P1"] -= 1
            c.cash_flow("P1", 5.0)
            ev = sub.recv(2.0)
            assert sub.gaps and sub.resyncs == 1
            assert ev is None or ev.sequence > sub.last["P1"] - 1
            assert sub.last["P1"] == c.state("P1").sequence
        finally:
            sub.close()


def test_sigterm_finishes_in_flight_and_exits_zero(tmp_path):
    from tests.integration.daemon_proc import DaemonProcess

    d = DaemonProcess(tmp_path, "tcp")
    d.wait_ready()
    with d.client() as c:
        seed(c)
        c.update_position("P1", "pos1", "AAPL", "BUY", 10, 190.0)
    assert d.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in d.output()
    d2 = DaemonProcess(tmp_path, "tcp")
    d2.wait_ready()
    assert d2.stop(signal.SIGINT) == 0
