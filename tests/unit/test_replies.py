"""Replies to single position updates written by compiled code (daemon/replies.py) are the bytes
msgspec writes for the Structs ``_Run.response`` builds; the engine's single-row path (``_rows``,
one call per run of single frames) answers every id error as before."""
import time

import msgspec
import numpy as np
import pytest

from portfolio_state.daemon import engine as engine_mod
from portfolio_state.daemon import replies
from portfolio_state.daemon.engine import Engine
from portfolio_state.kernels import STATUS_NAMES
from portfolio_state.transport import messages as m
from tests.bookfactory import make_book

ENC = msgspec.msgpack.Encoder()
JENC = msgspec.json.Encoder()
DEC = msgspec.msgpack.Decoder(m.Reply)
INSTRUMENTS = ("AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6")


@pytest.fixture
def checked(monkeypatch):
    """Every call of encode_updates is held against the Struct path, byte for byte; yields the count."""
    seen = {"replies": 0}
    real = replies.encode_updates

    def check(run, rows, keys, pools):
        got = real(run, rows, keys, pools)
        want = [ENC.encode(run.response(k, int(j))) for k, j in zip(keys, rows)]
        assert got == want
        seen["replies"] += len(got)
        return got

    monkeypatch.setattr(engine_mod.replies, "encode_updates", check)
    return seen


def engine(n_portfolios=6):
    eng = Engine(book=make_book(n_portfolios=n_portfolios))
    eng.events_on = False
    return eng


def frame(key, portfolio, position, instrument, qty, price, kind, fee=0.0, ts=None, json=False):
    req = m.PositionUpdateRequest(key, portfolio, position, instrument, qty, price, kind, fee=fee, timestamp=ts)
    return ([b"id"], (JENC if json else ENC).encode(req))


def test_random_single_updates_reply_as_the_struct_path_does(checked):
    rng = np.random.default_rng(11)
    eng = engine()
    kinds = ("BUY", "SELL", "SHORT", "COVER")
    k = 0
    for batch in range(60):
        frames = []
        for _ in range(int(rng.integers(1, 40))):
            inst = INSTRUMENTS[int(rng.integers(len(INSTRUMENTS)))]
            pos = f"{inst}-{int(rng.integers(3))}"  # a position keeps its instrument
            qty = float(rng.choice([1, 3, 7.5, 100, 12345.678901]))
            price = round(float(rng.uniform(0.5, 9000)), 4)
            ts = None if rng.random() < 0.5 else int(rng.integers(1, 4_000_000_000_000_000_000))
            frames.append(frame(f"k-{k}-{'é' * int(rng.integers(0, 40))}", f"P{int(rng.integers(6))}", pos, inst,
                                qty, price, kinds[int(rng.integers(4))], fee=float(rng.choice([0.0, 1.25])), ts=ts))
            k += 1
        out = eng.handle(frames, time.time_ns())
        assert len(out) == len(frames)
        for env, body in out:
            assert isinstance(DEC.decode(body), (m.PositionUpdateResponse, m.ErrorReply))
    assert checked["replies"] > 500  # most rows were accepted and answered by the compiled writer


def test_a_reply_carries_the_position_the_book_holds():
    eng = engine()
    out = eng.handle([frame("a1", "P2", "sap", "SAP", 10, 121.5, "BUY", fee=2.0)], 1_700_000_000_123_456_789)
    r = DEC.decode(out[0][1])
    assert isinstance(r, m.PositionUpdateResponse) and r.key == "a1"
    p = r.updated_position
    assert (p.position_id, p.instrument_id, p.quantity, p.status) == ("sap", "SAP", 10.0, "ACTIVE")
    assert p.last_updated == "2023-11-14T22:13:20.123456Z"
    # marked at the book's last price (a trade's price does not move the mark), cost at the trade's
    assert (p.last_price, p.market_value, p.average_price, p.cost_basis) == (120.0, 1200.0, 121.5, 1215.0)
    assert [(x.exposure_type, x.category) for x in r.exposure_changes] == [
        ("INSTRUMENT", "SAP"), ("SECTOR", "Technology"), ("GEOGRAPHIC", "DE"), ("CURRENCY", "EUR"),
        ("ASSET_CLASS", "EQUITY")]
    assert r.portfolio_impact.cash_impact == -1217.0  # 10 x 121.5 + 2.0 fee, in EUR (P2's base)
    # closing it: status and quantity follow
    out = eng.handle([frame("a2", "P2", "sap", "SAP", 10, 125.0, "SELL")], 1_700_000_001_000_000_000)
    p = DEC.decode(out[0][1]).updated_position
    assert (p.quantity, p.status, p.market_value, p.cost_basis) == (0.0, STATUS_NAMES[3], 0.0, 0.0)


def test_json_requests_and_retries_get_the_same_reply_as_the_msgpack_one(checked):
    eng = engine()
    first = eng.handle([frame("r1", "P0", "x", "ESZ6", 2, 6010.25, "BUY")], 5)[0][1]
    # a retry of the key, in the same encoding and in JSON, in a later batch and within one batch
    again = eng.handle([frame("r1", "P0", "x", "ESZ6", 2, 6010.25, "BUY")], 6)[0][1]
    as_json = eng.handle([frame("r1", "P0", "x", "ESZ6", 2, 6010.25, "BUY", json=True)], 7)[0][1]
    assert again == first
    assert msgspec.json.decode(as_json, type=m.Reply) == DEC.decode(first)
    out = eng.handle([frame("r2", "P0", "y", "AAPL", 1, 190, "BUY"), frame("r2", "P0", "y", "AAPL", 1, 190, "BUY",
                                                                          json=True)], 8)
    assert msgspec.json.decode(out[1][1], type=m.Reply) == DEC.decode(out[0][1])
    assert eng.book.a.positions["qty"][eng.book.slot_index[(0, "y")]] == 1_000_000  # applied once


def test_id_errors_in_a_run_of_single_frames_reject_only_their_own_row(checked):
    eng = engine()
    frames = [
        frame("e1", "P0", "a", "AAPL", 1, 190, "BUY"),
        frame("e2", "NOPE", "a", "AAPL", 1, 190, "BUY"),          # unknown portfolio
        frame("e3", "P0", "b", "NOPE", 1, 190, "BUY"),            # unknown instrument
        frame("e4", "P0", "a", "MSFT", 1, 410, "BUY"),            # position a holds AAPL
        frame("e5", "P0", "c", "MSFT", 1, 410, "BUY"),            # a new position
        frame("e6", "P0", "c", "XOM", 1, 110, "BUY"),             # c was just allocated for MSFT
        frame("e7", "P1", "d", "AAPL", 5, 190, "SHORT"),          # P1 is long-only
        frame("e8", "P0", "a", "AAPL", 2, 191, "BUY"),
    ]
    out = [DEC.decode(b) for _, b in eng.handle(frames, 9)]
    codes = [getattr(r, "code", None) for r in out]
    assert codes == [None, "UNKNOWN_PORTFOLIO", "UNKNOWN_INSTRUMENT", "INSTRUMENT_MISMATCH", None,
                     "INSTRUMENT_MISMATCH", "LONG_ONLY_SHORT", None]
    assert out[7].updated_position.quantity == 3.0 and out[4].updated_position.instrument_id == "MSFT"
    assert checked["replies"] == 3


def test_long_astral_ids_and_keys_fit_the_size_bound_and_match_msgspec(checked, monkeypatch):
    calls = []
    real_nb = replies.encode_responses_nb

    def spy(buf, ends, *args):
        calls.append(args)
        return real_nb(buf, ends, *args)

    monkeypatch.setattr(replies, "encode_responses_nb", spy)
    book = make_book(n_portfolios=3)
    inst = "\U0001F600" * 20           # 20 characters, 80 bytes of UTF-8
    sector = "\U0001F4C8" * 100        # the longest category, 400 bytes
    book.upsert_instrument(inst, "EUR", sector, "D" * 100, "EQUITY")
    k = book.instrument_ids.get(inst)
    book.apply_prices(np.array([k], np.int32), np.array([50.0]), np.array([1], np.int64))
    eng = Engine(book=book)
    eng.events_on = False
    key = "\U0001F511" * 128           # the longest key, 512 bytes: a str16 header
    position = "\U0001F4BC" * 100
    out = eng.handle([frame(key, "P2", position, inst, 3, 50.5, "BUY", ts=2**63 - 1)], 7)
    body = out[0][1]
    r = DEC.decode(body)
    assert r.key == key and r.updated_position.position_id == position and checked["replies"] == 1
    assert r.updated_position.last_updated == "2262-04-11T23:47:16.854775Z"
    enc = msgspec.msgpack.encode
    names = (enc(inst), enc(sector), enc("D" * 100), enc("EUR"), enc("EQUITY"))
    bound = replies._FIXED + len(key.encode()) + len(enc(position)) + len(names[0]) + sum(len(x) for x in names)
    assert len(body) <= bound < len(body) + 64
    # the writer's own bound: given any buffer, it writes the whole reply inside it or refuses
    # (returns minus a size), never past its end (the bytes after the view stay untouched)
    for size in range(len(body) - 3, bound + 3):
        big = np.full(size + 4096, 0xEE, np.uint8)
        w = real_nb(big[:size], np.empty(1, np.int64), *calls[-1])
        assert (big[size:] == 0xEE).all(), size
        assert w < 0 or big[:w].tobytes() == body
        assert (w < 0) == (size < bound), (size, w)  # refuses exactly below the bound (the one above)


@pytest.mark.parametrize("ts", [-1, 2**63, 2**64 - 1])
def test_a_timestamp_outside_int64_nanoseconds_is_invalid_and_allocates_nothing(ts):
    eng = engine()
    slots = len(eng.book.slot_ids)
    for f in (frame("t1", "P0", "fresh", "AAPL", 1, 190, "BUY", ts=ts),
              ([b"id"], ENC.encode(m.CashFlowRequest("t2", "cf", "P0", 5.0, "USD", "DEPOSIT", timestamp=ts)))):
        r = DEC.decode(eng.handle([f], 9)[0][1])
        assert isinstance(r, m.ErrorReply) and r.code == "INVALID" and "timestamp" in r.message
    assert len(eng.book.slot_ids) == slots and (0, "fresh") not in eng.book.slot_index
