"""A key's reply survives every path the window can take: sent live (kept as the bytes sent),
rebuilt lazily by replay, written to a checkpoint (a replayed reply as its run's arrays plus its
rows) and restored. A retry at each stage gets the same reply as the first answer."""
import time

import msgspec

from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import open_engine, write_checkpoint
from portfolio_state.persistence import checkpoint as ckpt
from portfolio_state.transport import messages as m


def _settings(d):
    return load(overrides=[f"journal.data_dir={d}", "journal.fsync=off", "engine.events=false",
                           "journal.checkpoint_interval_s=0"], environ={})


def _requests():
    setup = [m.InstrumentUpsert("i", [m.Instrument("AAPL", sector="Tech"), m.Instrument("SAP", currency="EUR")]),
             m.FxTicks("fx", [m.FxRate("EUR", 1.1)]),
             m.PriceTicks("p", [m.PriceTick("AAPL", 190.0), m.PriceTick("SAP", 120.0)]),
             m.PortfolioUpsert("pf", m.Portfolio("P1")),
             m.CashFlowRequest("c", "c1", "P1", 1e6, "USD", "DEPOSIT")]
    trades = [m.PositionUpdateRequest("t1", "P1", "a", "AAPL", 10.0, 190.0, "BUY"),
              m.PositionUpdateRequest("t2", "P1", "s", "SAP", 5.0, 121.0, "SHORT"),
              m.PositionUpdateBatch("b1", [m.PositionUpdate("P1", "a", "AAPL", 3.0, 191.0, "SELL"),
                                           m.PositionUpdate("P1", "x", "NOPE", 1.0, 1.0, "BUY")]),
              m.PositionUpdateBatch("b2", [m.PositionUpdate("P1", "s", "SAP", 1.0, 119.0, "COVER")], detail=True)]
    return setup, trades


def _same(replies):
    """Replies as plain values, without processing_time_ms (a replayed run times its own kernel call)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "processing_time_ms"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return [strip(msgspec.to_builtins(r)) for r in replies]


def _ask(engine, reqs, enc):
    return [engine.handle([([b""], enc(r))], time.time_ns())[0][1] for r in reqs]


ENC = msgspec.msgpack.Encoder().encode
DEC = msgspec.msgpack.Decoder(m.Reply).decode


def _answered(tmp_path):
    """An engine that took the setup and answered the trades once: (engine, trades, replies)."""
    setup, trades = _requests()
    e, _ = open_engine(_settings(tmp_path))
    _ask(e, setup, ENC)
    return e, trades, [DEC(b) for b in _ask(e, trades, ENC)]


def test_replies_survive_live_replay_checkpoint_and_restore(tmp_path):
    enc, dec = ENC, DEC
    e, trades, first = _answered(tmp_path)
    assert [dec(b) for b in _ask(e, trades, enc)] == first  # live: the bytes that were sent
    write_checkpoint(e, _settings(tmp_path))  # live replies: columns in chunks
    meta = msgspec.msgpack.decode(ckpt.load_newest(str(tmp_path / "checkpoints"))[2])
    assert meta["window_chunks"] and not meta["window"]
    e.journal.close()
    e1, stats = open_engine(_settings(tmp_path))
    assert stats["replayed"] == 0 and [dec(b) for b in _ask(e1, trades, enc)] == first
    e1.journal.close()
    for f in (tmp_path / "checkpoints").iterdir():  # from here on: recover by replay, as before
        f.unlink()

    e2, _ = open_engine(_settings(tmp_path))  # replay: lazy replies
    assert _same(dec(b) for b in _ask(e2, trades, enc)) == _same(first)
    write_checkpoint(e2, _settings(tmp_path))  # replayed replies as runs + rows
    meta = msgspec.msgpack.decode(ckpt.load_newest(str(tmp_path / "checkpoints"))[2])
    # single updates and detailed batches as run rows; the plain batch (b1) as its small reply's bytes
    assert meta["runs"] and not meta["window"] and sum(j >= 0 for j in meta["window_cols"][2]) == 3
    e2.journal.close()

    e3, stats = open_engine(_settings(tmp_path))
    assert stats["replayed"] == 0  # restored from the checkpoint alone
    assert _same(dec(b) for b in _ask(e3, trades, enc)) == _same(first)
    # a JSON retry of the same key gets the same reply, in JSON
    js = msgspec.json.encode(trades[0])
    assert _same([msgspec.json.decode(e3.handle([([b""], js)], time.time_ns())[0][1], type=m.Reply)]) == _same(first[:1])
    e3.journal.close()


def test_a_checkpoint_with_the_window_as_one_list_per_entry_still_restores(tmp_path):
    # checkpoints written before the window went in columns: [key, digest, bytes] or
    # [key, digest, run, lo, hi, type, detail] per entry
    enc, dec = ENC, DEC
    e, trades, first = _answered(tmp_path)
    e.journal.close()
    e2, _ = open_engine(_settings(tmp_path))  # replay: lazy replies
    write_checkpoint(e2, _settings(tmp_path))
    e2.journal.close()
    cdir = str(tmp_path / "checkpoints")
    seq, arrays, meta_b = ckpt.load_newest(cdir)
    meta = msgspec.msgpack.decode(meta_b)
    keys, digests, js, lo, hi, typ, detail, datas = meta.pop("window_cols")
    meta["window"] = [[k, d, b] if j < 0 else [k, d, j, a, z, t, x]
                      for k, d, j, a, z, t, x, b in zip(keys, digests, js, lo, hi, typ, detail, datas)]
    for f in (tmp_path / "checkpoints").iterdir():
        f.unlink()
    ckpt.write_checkpoint(cdir, seq, arrays, enc(meta))
    e3, stats = open_engine(_settings(tmp_path))
    assert stats["replayed"] == 0
    assert _same(dec(b) for b in _ask(e3, trades, enc)) == _same(first)
    e3.journal.close()


def test_a_window_restored_in_many_pieces_answers_the_same(tmp_path, monkeypatch):
    # a restored window is kept as pieces of the checkpoint's columns (daemon/recovery.py _Restored)
    from portfolio_state.daemon import recovery

    monkeypatch.setattr(recovery, "_PIECE", 2)
    test_replies_survive_live_replay_checkpoint_and_restore(tmp_path)
    e, _ = open_engine(_settings(tmp_path))
    assert len({id(v) for v in e.window._d.values()}) >= 3  # several pieces, each shared by its keys
    e.journal.close()
