"""Bad input gets an error reply (code + message), harms nothing, and the daemon keeps serving."""
import math

import msgspec
import pytest
import zmq

from portfolio_state.transport import messages as m
from tests.integration.conftest import seed
from tests.integration.daemon_proc import DaemonProcess

enc = msgspec.msgpack.encode


def snapshot(c):
    st = c.state("P1")
    # not st.sequence: events flush on their own cadence, so it may move with no state change
    return msgspec.to_builtins(st.portfolio_state), [msgspec.to_builtins(p) for p in st.positions], st.cash


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("bad"), "tcp", extra=["--set", "transport.max_message_bytes=4096"])
    d.wait_ready()
    with d.client(timeout=2.0, retries=0) as c:
        seed(c)
        c.update_position("P1", "pos1", "AAPL", "BUY", 100, 190.0)
    yield d
    assert d.stop() == 0, d.output()


_keys = iter(range(10**6))


def upd(**kw):
    """A position update body with its own idempotency key (a shared key would be a KEY_CONFLICT)."""
    return {**UPDATE, "key": f"bad-{next(_keys)}", **kw}


UPDATE = {"type": "position_update", "key": "k", "portfolio_id": "P1", "position_id": "pos1", "instrument_id": "AAPL",
          "quantity_change": 10.0, "price": 190.0, "transaction_type": "BUY"}

CASES = [
    ("malformed msgpack", b"\xc1\xc1\xc1", "MALFORMED"),
    ("truncated msgpack", enc(upd())[:-3], "MALFORMED"),
    ("malformed json", b'{"type": "position_update", "key":', "MALFORMED"),
    ("not an object", enc([1, 2, 3]), "INVALID"),
    ("unknown command", enc({"type": "launch_missiles"}), "INVALID"),
    ("missing type", enc({"key": "k"}), "INVALID"),
    ("missing field", enc({k: v for k, v in upd().items() if k != "price"}), "INVALID"),
    ("wrong type", enc(upd(quantity_change="ten")), "INVALID"),
    ("unknown field", enc(upd(colour="red")), "INVALID"),
    ("bad transaction type", enc(upd(transaction_type="GIFT")), "INVALID"),
    ("too long id", enc(upd(portfolio_id="x" * 51)), "INVALID"),
    ("NUL in an id", enc(upd(position_id="pos\x001")), "INVALID"),
    ("control character in an id", enc(upd(instrument_id="AA\nPL")), "INVALID"),
    ("json wrong type", b'{"type": "state", "portfolio_id": 5}', "INVALID"),
    ("unknown portfolio", enc(upd(portfolio_id="NOPE")), "UNKNOWN_PORTFOLIO"),
    ("unknown instrument", enc(upd(position_id="new", instrument_id="NOPE")), "UNKNOWN_INSTRUMENT"),
    ("instrument mismatch", enc(upd(instrument_id="XOM")), "INSTRUMENT_MISMATCH"),
    ("NaN price", enc(upd(price=math.nan)), "BAD_PRICE"),
    ("inf price", enc(upd(price=math.inf)), "BAD_PRICE"),
    ("zero price", enc(upd(price=0.0)), "BAD_PRICE"),
    ("negative price", enc(upd(price=-1.0)), "BAD_PRICE"),
    ("NaN quantity", enc(upd(quantity_change=math.nan)), "BAD_QUANTITY"),
    ("zero quantity", enc(upd(quantity_change=0.0)), "BAD_QUANTITY"),
    ("negative fee", enc(upd(fee=-1.0)), "BAD_FEE"),
    ("bad currency", enc({"type": "cash_flow", "key": "c", "cash_flow_id": "c", "portfolio_id": "P1", "amount": 5.0,
                          "currency": "usd", "flow_type": "DEPOSIT"}), "INVALID"),
    ("cash no fx", enc({"type": "cash_flow", "key": "c2", "cash_flow_id": "c", "portfolio_id": "P1", "amount": 5.0,
                        "currency": "GBP", "flow_type": "DEPOSIT"}), "NO_FX_RATE"),
    ("unknown portfolio query", enc({"type": "state", "portfolio_id": "NOPE"}), "UNKNOWN_PORTFOLIO"),
    ("bad limit", enc({"type": "exposure_limit", "key": "l", "portfolio_id": "P1", "exposure_type": "SECTOR",
                       "category": "Technology", "limit_percentage": -1.0}), "BAD_LIMIT"),
    ("bad status change", enc({"type": "position_status", "key": "s", "portfolio_id": "P1", "position_id": "pos1",
                               "instrument_id": "AAPL", "status": "PENDING"}), "BAD_STATUS"),
    ("ragged columns", enc({"type": "position_update_columns", "key": "col", "portfolio": b"\0\0\0\0", "slot": b"\0\0\0",
                            "kind": b"\0", "qty": b"\0" * 8, "price": b"\0" * 8}), "INVALID"),
    ("oversized frame", enc(upd(position_id="p" * 10)) + b"\0" * 6000, "TOO_LARGE"),
]


@pytest.mark.parametrize("name,body,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_error_and_changes_nothing(small, name, body, code):
    with small.client(timeout=2.0, retries=0) as c:
        before = snapshot(c)
        raw = c.send_raw(body)
        reply = (msgspec.json if raw.startswith(b"{") else msgspec.msgpack).decode(raw)
        assert reply["type"] == "error" and reply["code"] == code, reply
        assert reply["message"]
        assert snapshot(c) == before
        assert c.health().status == "ok"


def test_key_conflict_changes_nothing(small):
    with small.client(timeout=2.0, retries=0) as c:
        c.update_position("P1", "pos1", "AAPL", "BUY", 1, 190.0, key="same")
        before = snapshot(c)
        reply = c.call(c.position_update("P1", "pos1", "AAPL", "BUY", 2, 190.0, key="same"))
        assert isinstance(reply, m.ErrorReply) and reply.code == "KEY_CONFLICT"
        assert snapshot(c) == before


def test_frame_beyond_zeromq_limit_drops_only_that_peer(small):
    with small.client(timeout=1.0, retries=0) as c:
        before = snapshot(c)
        with pytest.raises(TimeoutError):
            c.send_raw(b"\0" * (4 * 4096 + 10))  # ZeroMQ's MAXMSGSIZE: the peer is disconnected, no reply
    with small.client(timeout=2.0, retries=0) as c:
        assert snapshot(c) == before
        assert c.health().status == "ok"


def test_a_req_socket_client_works_too(small):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(small.command)
    s.send(enc({"type": "health"}))
    assert s.poll(2000)
    assert msgspec.msgpack.decode(s.recv())["status"] == "ok"
    s.close()
