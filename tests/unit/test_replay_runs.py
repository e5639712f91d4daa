"""Replay of RUN records (ADR 0021): consecutive records apply as one kernel call and their keys
enter the idempotency window as one entry object per record. What a recovered engine holds and
answers must be what the live engine held and answered: the book, the performance state, the
receive time as-of reads, and every key's reply (digest conflicts included), for records written
in the command-column layout and in the older one-list-per-command layout."""
import time

import msgspec
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from portfolio_state.daemon import engine as engine_mod
from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import open_engine, write_checkpoint
from portfolio_state.kernels import TradeKind
from portfolio_state.persistence.journal import RUN, read_records
from portfolio_state.transport import messages as m
from portfolio_state.transport.client import _Builders
from tests.unit.test_window_checkpoint import _same as _stripped

ENC = msgspec.msgpack.Encoder().encode
DEC = msgspec.msgpack.Decoder(m.Reply).decode
DAY = 86_400 * 10**9
T0 = 20_000 * DAY + 3_600 * 10**9  # 01:00 UTC on some day


def _settings(d, **kw):
    over = [f"journal.data_dir={d}", "journal.fsync=off", "engine.events=false", "journal.checkpoint_interval_s=0"]
    return load(overrides=over + [f"{k}={v}" for k, v in kw.items()], environ={})


def _same(raw: bytes):
    """A reply as plain values without processing_time_ms (a replayed run times its own call)."""
    return _stripped([DEC(raw)])[0]


def _setup(e, ns):
    cmds = [m.InstrumentUpsert("i", [m.Instrument("AAPL", sector="Tech"), m.Instrument("SAP", currency="EUR"),
                                     m.Instrument("MSFT", sector="Tech")]),
            m.FxTicks("fx", [m.FxRate("EUR", 1.1)]),
            m.PriceTicks("p", [m.PriceTick("AAPL", 190.0), m.PriceTick("SAP", 120.0), m.PriceTick("MSFT", 400.0)]),
            m.PortfolioUpsert("pf1", m.Portfolio("P1", benchmark="MSFT")),
            m.PortfolioUpsert("pf2", m.Portfolio("P2", portfolio_type="LONG_ONLY")),
            m.CashFlowRequest("c1", "c1", "P1", 1e6, "USD", "DEPOSIT"),
            m.CashFlowRequest("c2", "c2", "P2", 1e6, "USD", "DEPOSIT")]
    e.handle([([b""], ENC(c)) for c in cmds], ns)
    r = msgspec.msgpack.decode(e.handle([([b""], ENC(m.ResolveRequest([m.PositionRef("P1", "a", "AAPL"),
                                                                        m.PositionRef("P2", "m", "MSFT")])))], ns)[0][1])
    return np.array(r["slots"], np.int32), np.array(r["portfolios"], np.int32)


def _workload(e, rng, slots, pfs):
    """Batches of mixed position-update frames over two days: (key, frame) of every command sent,
    with the reply bytes each got."""
    sent = []
    ns = T0
    n = 0
    for batch in range(40):
        if batch == 25:
            ns += DAY  # a new day: its first batch is a run of trades only
        ns += 1_000_000
        frames = []
        for _ in range(int(rng.integers(1, 8))):
            n += 1
            key = f"k{n}"
            pick = rng.integers(0, 6)
            if pick <= 1:
                c = m.PositionUpdateRequest(key, "P1", f"x{n % 5}", ["AAPL", "SAP"][n % 2], float(rng.integers(1, 9)),
                                            100.0 + n, ["BUY", "SELL", "SHORT"][n % 3])
            elif pick == 2:
                c = m.PositionUpdateRequest(key, "P2", "m", "MSFT", 5.0, 400.0, "SELL")  # long-only: oversells rejected
            elif pick == 3:
                c = m.PositionUpdateBatch(key, [m.PositionUpdate("P1", "a", "AAPL", 2.0, 191.0, "BUY"),
                                                m.PositionUpdate("P1", "q", "NOPE", 1.0, 1.0, "BUY"),
                                                m.PositionUpdate("P1", f"n{n}", "MSFT", 1.0, 401.0, "BUY"),
                                                m.PositionUpdate("P2", f"n{n}", "SAP", 1.0, 119.0, "BUY")],
                                          detail=bool(n % 2))
            elif pick == 4:
                c = _Builders.columns(pfs, slots, np.full(2, TradeKind.BUY, np.int8), np.ones(2), np.full(2, 150.0),
                                      key=key)
            else:  # columns of unequal length: INVALID inside the run, journaled with it
                c = m.PositionUpdateColumns(key, portfolio=np.array([0], np.int32).tobytes(),
                                            slot=np.array([0, 1], np.int32).tobytes(),
                                            kind=np.array([1], np.int8).tobytes(), qty=np.ones(1).tobytes(),
                                            price=np.ones(1).tobytes())
            frames.append((key, ENC(c)))
        out = e.handle([([b""], body) for _, body in frames], ns)
        sent += [(key, body, data) for (key, body), (_, data) in zip(frames, out)]
    return sent, ns


def _journal(tmp_path, seed=3):
    rng = np.random.default_rng(seed)
    e, _ = open_engine(_settings(tmp_path))
    slots, pfs = _setup(e, T0)
    sent, ns = _workload(e, rng, slots, pfs)
    e.journal.sync()
    e.journal.close()
    return e, sent, ns


def _check(live, sent, rec):
    assert np.array_equal(rec.book.a.positions.view(np.uint8), live.book.a.positions.view(np.uint8))
    assert np.array_equal(rec.book.a.portfolios.view(np.uint8), live.book.a.portfolios.view(np.uint8))
    assert np.array_equal(rec.perf.s.view(np.uint8), live.perf.s.view(np.uint8)) and rec.perf.day == live.perf.day
    assert rec.last_recv_ns == live.last_recv_ns
    assert rec.counters["updates"] == live.counters["updates"]
    if not sent:
        return
    retry = rec.handle([([b""], body) for _, body, _ in sent], time.time_ns())
    assert [_same(d) for _, d in retry] == [_same(d) for _, _, d in sent]
    assert rec.counters["replays"] == len(sent)
    # the same key with another body: a conflict, read through the replayed entry's digest
    key, body, _ = next(x for x in sent if DEC(x[2]).__class__ is m.PositionUpdateResponse)
    other = m.PositionUpdateRequest(key, "P1", "zz", "AAPL", 1.0, 1.0, "BUY")
    assert DEC(rec.handle([([b""], ENC(other))], time.time_ns())[0][1]).code == "KEY_CONFLICT"


def test_replay_matches_the_live_engine_runs_merged(tmp_path):
    live, sent, _ = _journal(tmp_path)
    kinds = [r.kind for r in read_records(str(tmp_path / "journal"), repair=False)]
    assert kinds.count(RUN) >= 30  # consecutive RUN records: merged into few kernel calls on replay
    calls = []
    real = engine_mod.Engine._apply_run
    engine_mod.Engine._apply_run = lambda self, *a: calls.append(len(a[0])) or real(self, *a)
    try:
        rec, stats = open_engine(_settings(tmp_path))
    finally:
        engine_mod.Engine._apply_run = real
    assert len(calls) < kinds.count(RUN)
    _check(live, sent, rec)
    rec.journal.close()


def test_a_small_merge_limit_and_a_checkpoint_of_replayed_entries_change_nothing(tmp_path, monkeypatch):
    live, sent, _ = _journal(tmp_path, seed=5)
    monkeypatch.setattr(engine_mod, "_MERGE_ROWS", 3)
    rec, _ = open_engine(_settings(tmp_path))
    _check(live, sent[:0], rec)  # state only: the retries below would add replays to this engine
    write_checkpoint(rec, _settings(tmp_path))  # replayed entries built on the writer's side
    rec.journal.close()
    again, stats = open_engine(_settings(tmp_path))
    assert stats["replayed"] == 0
    _check(live, sent, again)
    again.journal.close()


def _old_layout(run):
    """A RUN record's commands as journals before the column layout wrote them."""
    return [[engine_mod._TYPE[type(it.cmd)], it.cmd.key, it.digest, it.lo, it.hi,
             bool(getattr(it.cmd, "detail", False)), it.reply.code if it.reply else None,
             it.reply.message if it.reply else None] for it in run]


def test_records_in_the_older_layout_replay_the_same(tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setattr(engine_mod, "_command_columns", _old_layout)
        live, sent, _ = _journal(tmp_path, seed=9)
    payload = next(r.payload for r in read_records(str(tmp_path / "journal"), repair=False) if r.kind == RUN)
    assert type(msgspec.msgpack.decode(payload)[3][0]) is list
    rec, _ = open_engine(_settings(tmp_path))
    _check(live, sent, rec)
    rec.journal.close()


def test_a_window_smaller_than_the_replay_forgets_the_oldest_replayed_keys(tmp_path):
    live, sent, _ = _journal(tmp_path, seed=11)
    rec, _ = open_engine(_settings(tmp_path, **{"engine.idempotency_window": 10}))
    assert len(rec.window) == 10
    keys = [k for k, _, _ in sent]
    assert [k for k, _ in rec.window.items()] == keys[-10:]
    assert rec.window.get(keys[0]) is None
    rec.journal.close()


def test_a_column_row_naming_a_slot_a_later_record_allocates_stays_rejected(tmp_path):
    # live: the column row names a slot nobody holds yet (UNKNOWN_POSITION); the next record
    # allocates that very slot. Replay must not let the allocation run before the row.
    e, _ = open_engine(_settings(tmp_path))
    slots, pfs = _setup(e, T0)
    nxt = len(e.book.slot_ids)
    cols = _Builders.columns(pfs[:1], np.array([nxt], np.int32), np.full(1, TradeKind.BUY, np.int8), np.ones(1),
                             np.full(1, 190.0), key="cols")
    new = m.PositionUpdateRequest("new", "P1", "fresh", "AAPL", 1.0, 190.0, "BUY")
    sent = []
    for i, c in enumerate((cols, new)):
        body = ENC(c)
        sent.append((c.key, body, e.handle([([b""], body)], T0 + (i + 1) * 1_000_000)[0][1]))
    assert DEC(sent[0][2]).rejected[0].code == "UNKNOWN_POSITION"
    assert e.book.slot_index[(int(pfs[0]), "fresh")] == nxt
    e.journal.sync()
    e.journal.close()
    rec, _ = open_engine(_settings(tmp_path))
    _check(e, sent, rec)
    rec.journal.close()


def _window(e):
    return [(k, v[0]) for k, v in e.window.items()]


def test_replay_leaves_the_window_the_live_engine_had(tmp_path, monkeypatch):
    """A window far smaller than the replay, RUN records between cash-flow COMMAND records (whose
    dedupe reads the window mid-replay), retries of keys still held (answered, not journaled) and of
    keys long forgotten (applied and journaled again): the recovered window holds the live one's keys,
    digests and order, as does a replay that puts every record's keys as it goes."""
    size = 7
    rng = np.random.default_rng(17)
    e, _ = open_engine(_settings(tmp_path, **{"engine.idempotency_window": size}))
    slots, pfs = _setup(e, T0)
    ns, n, sent_keys = T0, 0, []
    for batch in range(60):
        ns += 1_000_000
        frames = []
        for _ in range(int(rng.integers(1, 6))):
            r = rng.random()
            if sent_keys and r < 0.15:  # a retry: of a recent key (held) or an old one (forgotten)
                key = sent_keys[-1] if rng.random() < 0.5 else sent_keys[int(rng.integers(0, len(sent_keys)))]
            else:
                n += 1
                key = f"k{n}"
                sent_keys.append(key)
            if int(key[1:]) % 4 == 0:
                c = m.CashFlowRequest(key, key, "P1", 10.0, "USD", "DEPOSIT")
            else:
                c = m.PositionUpdateRequest(key, "P1", f"x{int(key[1:]) % 3}", "AAPL", 1.0, 100.0, "BUY")
            frames.append(([b""], ENC(c)))
        e.handle(frames, ns)
    for _ in range(20):  # a tail of RUN records only, one key each
        ns += 1_000_000
        n += 1
        e.handle([([b""], ENC(m.PositionUpdateRequest(f"k{n}", "P1", "x1", "AAPL", 1.0, 100.0, "BUY")))], ns)
    live = _window(e)
    assert len(live) == size
    e.journal.sync()
    e.journal.close()
    rec, _ = open_engine(_settings(tmp_path, **{"engine.idempotency_window": size}))
    assert _window(rec) == live
    assert np.array_equal(rec.book.a.positions.view(np.uint8), e.book.a.positions.view(np.uint8))
    rec.journal.close()
    # the same replay putting each record's keys at once (before _flush_replayed) agrees
    monkeypatch.setattr(engine_mod.Engine, "_defer_replayed",
                        lambda self, block: self.window.put_many(block.keys, [block] * len(block.keys)))
    eager, _ = open_engine(_settings(tmp_path, **{"engine.idempotency_window": size}))
    assert _window(eager) == live
    eager.journal.close()


def _eager(monkeypatch):
    """Replay as before the holding: every record's keys put at once."""
    monkeypatch.setattr(engine_mod.Engine, "_defer_replayed",
                        lambda self, block: self.window.put_many(block.keys, [block] * len(block.keys)))


def _trades(e, keys, ns):
    e.handle([([b""], ENC(m.PositionUpdateRequest(k, "P1", "x1", "AAPL", 1.0, 100.0, "BUY"))) for k in keys], ns)


@pytest.mark.parametrize("case", ["journaled twice", "window grown", "window of 0", "after a checkpoint"])
def test_replay_holds_keys_only_while_it_can_prove_them_new(tmp_path, monkeypatch, case):
    """Where a key is journaled twice within a window's span (a batch that failed after its record
    was written: here its keys are simply not put), or the window grew across a restart, or is 0,
    or a checkpoint's window comes first: the recovered window is the one a replay putting every
    record at once gives (found in review: dropping held blocks by count lost keys)."""
    live_size, rec_size = {"window grown": (3, 10), "window of 0": (4, 0)}.get(case, (5, 5))
    e, _ = open_engine(_settings(tmp_path, **{"engine.idempotency_window": live_size}))
    _setup(e, T0)
    ns = T0
    for i in range(12):
        ns += 1_000_000
        _trades(e, [f"a{i}", f"b{i}"], ns)
        if case == "after a checkpoint" and i == 5:
            write_checkpoint(e, _settings(tmp_path, **{"engine.idempotency_window": live_size}))
    if case == "journaled twice":
        with monkeypatch.context() as mp:
            mp.setattr(type(e.window), "put", lambda self, k, *a: None)
            _trades(e, ["w1", "w2"], ns + 1)  # applied and journaled, never put: as after an INTERNAL
        for i in range(2):
            ns += 1_000_000
            _trades(e, [f"c{i}"], ns)
        _trades(e, ["w1"], ns + 2)  # the client's retry: applied and journaled again
        _trades(e, ["d0", "d1"], ns + 3)
    for i in range(3):  # the tail: single-key runs
        _trades(e, [f"t{i}"], ns + 10 + i)
    e.journal.sync()
    e.journal.close()
    s = _settings(tmp_path, **{"engine.idempotency_window": rec_size})
    rec, _ = open_engine(s)
    got = _window(rec)
    rec.journal.close()
    with monkeypatch.context() as mp:
        _eager(mp)
        ref, _ = open_engine(s)
    want = _window(ref)
    ref.journal.close()
    assert got == want and len(got) == min(rec_size, len(want))
    if case == "after a checkpoint":
        assert got == _window(e)


class _Block:
    def __init__(self, keys):
        self.keys = keys


@settings(max_examples=300, deadline=None)
@example(size=2, start=["a"], steps=[["b"], ["c"], ["a"]])  # a key of the first window, put after it is gone
@example(size=2, start=["a"], steps=[["b"], ["a"], ["c"]])  # ... and while it is still there
@example(size=0, start=[], steps=[["a"], ["b"]])
@given(size=st.integers(0, 6), start=st.lists(st.sampled_from("abcdefgh"), max_size=8),
       steps=st.lists(st.one_of(st.lists(st.sampled_from("abcdefghijklmnop"), min_size=1, max_size=4),
                                st.just("flush")), max_size=40))
def test_held_blocks_give_the_window_that_putting_each_gives(size, start, steps):
    """The holding logic alone, against putting every block at once: any window size, a window
    that starts full of keys, keys repeated within and across blocks, flushes at any point."""
    from portfolio_state.daemon.idempotency import IdempotencyWindow

    e = engine_mod.Engine.__new__(engine_mod.Engine)
    e.window, ref = IdempotencyWindow(size), IdempotencyWindow(size)
    for w in (e.window, ref):
        w.put_many(list(start), [(0, "s")] * len(start))
    e._new_hold_period()  # as in __init__
    for step in steps:
        if step == "flush":
            e._flush_replayed()
            assert list(e.window._d.items()) == list(ref._d.items())
            continue
        block = _Block(list(step))
        e._defer_replayed(block)
        ref.put_many(block.keys, [block] * len(block.keys))
    e._flush_replayed()
    assert list(e.window._d.items()) == list(ref._d.items())
