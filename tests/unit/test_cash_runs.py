"""Consecutive cash flows in a batch are one journal write and one kernel call (Engine._cash_flows):
replies, book and performance flows are those of the same commands one batch each (a cash flow
alone takes the scalar kernel, apply_cash_flow_nb: so this also holds the two kernels to each other,
rejections included)."""
import msgspec
import numpy as np

from portfolio_state.daemon.engine import Engine
from portfolio_state.transport import messages as m
from tests.bookfactory import make_book

ENC = msgspec.msgpack.Encoder()
DEC = msgspec.msgpack.Decoder(m.Reply)


def flow(key, portfolio, amount, ccy="USD", kind="DEPOSIT", ts=None, json=False):
    cmd = m.CashFlowRequest(key, f"cf-{key}", portfolio, amount, ccy, kind, timestamp=ts)
    return ([b"id"], (msgspec.json.encode(cmd) if json else ENC.encode(cmd)))


def trade(key, portfolio, qty):
    return ([b"id"], ENC.encode(m.PositionUpdateRequest(key, portfolio, "a", "AAPL", qty, 190.0, "BUY")))


FRAMES = [
    flow("c1", "P0", 1000.0),
    flow("c2", "P0", 2_500_000.0, kind="WITHDRAWAL"),   # more than P0 holds: cash may go negative
    flow("c3", "NOPE", 5.0),                            # unknown portfolio
    flow("c4", "P1", 250.5, ccy="EUR"),
    flow("c5", "P1", 250.5, ccy="GBP"),                 # a currency the book first sees here, no FX rate
    flow("c6", "P1", 100.0, kind="WITHDRAWAL", ccy="EUR"),  # sees c4's deposit
    trade("t1", "P0", 3),                               # a trade ends the run
    flow("c7", "P2", 12.34, kind="DIVIDEND", ts=123),
    flow("c8", "P2", 1.0, kind="FEE", json=True),
    flow("c1", "P0", 1000.0),                           # a retry of c1 in the same batch
    flow("c9", "P0", 1e300),                            # out of range
]


def run(frames_per_batch):
    eng = Engine(book=make_book())
    out = []
    for i in range(0, len(FRAMES), frames_per_batch):
        out += [b for _, b in eng.handle(FRAMES[i:i + frames_per_batch], 1_000 + i)]
    return eng, out


def test_a_run_of_cash_flows_answers_and_applies_as_one_command_per_batch():
    one, replies_one = run(1)
    many, replies_many = run(len(FRAMES))
    dec = [DEC.decode(b) if b[:1] != b"{" else msgspec.json.decode(b, type=m.Reply) for b in replies_many]
    codes = [getattr(r, "code", "ok") for r in dec]
    assert codes == ["ok", "ok", "UNKNOWN_PORTFOLIO", "ok", "NO_FX_RATE", "ok", "ok", "ok", "ok", "ok", "BAD_AMOUNT"]
    assert dec[5].result["cash"] == 150.5  # c6 saw c4's deposit, in the same kernel call
    assert dec[9] == dec[0]  # the retry gets the first reply
    # the same replies as one command per batch (the trade's reply carries its own processing time)
    strip = [i for i, f in enumerate(FRAMES) if f is not FRAMES[6]]
    assert [replies_many[i] for i in strip] == [replies_one[i] for i in strip]
    for name in ("portfolios", "cash", "positions"):
        a, b = getattr(one.book.a, name), getattr(many.book.a, name)
        if name == "portfolios":  # seqlock versions and times differ with the batching, not the money
            for f in ("cash_base", "long_mv", "short_mv", "position_count"):
                assert np.array_equal(a[f], b[f]), f
        else:
            assert np.array_equal(a, b) if a.dtype.names is None else all(
                np.array_equal(a[f], b[f]) for f in a.dtype.names if f != "updated_ns")
    # deposits and withdrawals are external flows for performance, dividends and fees are not
    # (base cents: P0 USD; P1 USD, its EUR flows at 1.1)
    assert many.perf.s["flows"][:3].tolist() == [100_000 - 250_000_000, 27_555 - 11_000, 0]
    a, b = one.perf.s, many.perf.s
    assert all(np.array_equal(a[f], b[f], equal_nan=a[f].dtype.kind == "f") for f in a.dtype.names)


def test_a_journaled_run_of_cash_flows_replays_to_the_same_book_and_a_refused_write_applies_none(tmp_path):
    from portfolio_state.persistence.journal import JournalWriter, read_records

    live = Engine(book=make_book())
    live.journal = JournalWriter(str(tmp_path / "j"), 1)
    live.handle(FRAMES, 1_000)
    live.journal.sync()
    records = list(read_records(str(tmp_path / "j")))
    assert len(records) == 10  # a COMMAND per cash flow (the retry of c1 is not one) and the trade's RUN
    again = Engine(book=make_book())
    again.replay(records)
    for f in ("cash_base", "long_mv", "short_mv", "position_count"):
        assert np.array_equal(live.book.a.portfolios[f], again.book.a.portfolios[f]), f
    assert np.array_equal(live.book.a.cash, again.book.a.cash)
    assert again.window.get("c4") is not None and again.window.get("c3") is not None  # rejections too

    # a journal that refuses the run's write: every cash flow of the run gets its error, none applies
    full = Engine(book=make_book())
    full.journal = JournalWriter(str(tmp_path / "k"), 1, fault_enospc_after=100)
    before = full.book.a.cash.copy()
    codes = [DEC.decode(b).code for _, b in full.handle(FRAMES[:3], 2_000)]
    assert codes == ["DISK_FULL"] * 3 and np.array_equal(full.book.a.cash, before)


def test_a_bug_in_a_cash_flow_run_answers_internal_and_a_retry_runs_again(monkeypatch):
    eng = Engine(book=make_book())
    real = eng.book.apply_cash_flows

    def broken(*a):
        raise RuntimeError("a bug")

    monkeypatch.setattr(eng.book, "apply_cash_flows", broken)
    frames = [flow("b1", "P0", 10.0), flow("b2", "P0", 20.0)]
    assert [DEC.decode(b).code for _, b in eng.handle(frames, 5)] == ["INTERNAL", "INTERNAL"]
    assert eng.window.get("b1") is None  # not the key's result
    monkeypatch.setattr(eng.book, "apply_cash_flows", real)
    r = [DEC.decode(b) for _, b in eng.handle(frames, 6)]
    assert [x.result["amount"] for x in r] == [10.0, 20.0]

    # a bug in the bookkeeping after the kernel: that command answers INTERNAL, the others not
    calls = []

    def touch(p):
        calls.append(p)
        if len(calls) == 1:
            raise RuntimeError("another bug")

    monkeypatch.setattr(eng.events, "touch", touch)
    out = [DEC.decode(b) for _, b in eng.handle([flow("b3", "P0", 1.0), flow("b4", "P1", 2.0)], 7)]
    assert getattr(out[0], "code", None) == "INTERNAL" and out[1].result["amount"] == 2.0
