"""A checkpoint snapshotted by a forked child from the live book (no copy on the engine thread)
holds the state of the fork's instant, however much the engine applies after it: the book's
private memory is copy-on-write. A book in a shared-memory arena is not, which is why the
daemon copies that one before forking (daemon/server.py, ADR 0014 amendment)."""
import ctypes
import os
import time

import msgspec
import numpy as np
import pytest
from portfolio_state.daemon import ckptfork
from portfolio_state.daemon.hugepages import release_pages
from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import (
    _restore,
    dirs,
    open_engine,
    snapshot,
    write_checkpoint,
)
from portfolio_state.persistence import checkpoint as ckpt
from portfolio_state.transport import messages as m

ENC = msgspec.msgpack.Encoder().encode


def _ask(engine, reqs):
    for r in reqs:
        engine.handle([([b""], ENC(r))], time.time_ns())


def _trades(prefix, n):
    return [m.PositionUpdateBatch(f"{prefix}{i}", [m.PositionUpdate(f"P{j % 5}", f"pos{j % 7}", "AAPL", 1.0 + j,
                                                                    190.0 + i, "BUY") for j in range(40)])
            for i in range(n)]


@pytest.mark.skipif(not ckptfork.available(), reason="no fork here")
def _zero(addr, n):  # a release that leaves zeros where a page was given back, in every byte
    ctypes.memset(addr, 0, n)


@pytest.mark.parametrize("release", [None, release_pages, _zero])
def test_the_childs_snapshot_is_the_fork_instant(tmp_path, release):
    """With ``release``, the child gives back each piece of the book it has written (ADR 0023):
    the file is the same, the parent's book is untouched by it, and an engine restored from the
    file answers as the engine did at the fork (nothing built after the arrays read them)."""
    settings = load(overrides=[f"journal.data_dir={tmp_path}", "journal.fsync=off", "engine.events=false",
                               "journal.checkpoint_interval_s=0"], environ={})
    e, _ = open_engine(settings)
    _ask(e, [m.InstrumentUpsert("i", [m.Instrument("AAPL")]), m.PriceTicks("p", [m.PriceTick("AAPL", 190.0)])]
         + [m.PortfolioUpsert(f"pf{j}", m.Portfolio(f"P{j}")) for j in range(5)]
         + [m.CashFlowRequest(f"c{j}", f"c{j}", f"P{j}", 1e6, "USD", "DEPOSIT") for j in range(5)]
         + _trades("a", 20))
    seq, expected, _ = snapshot(e)  # a copy, as the engine thread would take it
    answers = [ENC(e.state_response(m.PortfolioStateRequest(f"P{j}"))) for j in range(5)]
    go_r, go_w = os.pipe()

    def job():  # waits until the parent has changed the book, then snapshots the live arrays
        os.read(go_r, 1)
        return write_checkpoint(e, settings, snapshot(e, copy=False), release=release)

    pid, r = ckptfork.fork_checkpoint(job)
    os.close(go_r)
    _ask(e, _trades("b", 20) + [m.PriceTicks("p2", [m.PriceTick("AAPL", 250.0)])])
    after = snapshot(e)[1]
    assert not np.array_equal(after["positions"]["qty"], expected["positions"]["qty"])
    os.write(go_w, b"x")
    os.close(go_w)
    ckptfork.wait_checkpoint(pid, r)
    for k, v in snapshot(e)[1].items():  # the parent's book: as it was before the child wrote
        assert np.array_equal(v.view(np.uint8), after[k].view(np.uint8)), k
    got_seq, got, meta = ckpt.load_newest(dirs(settings)[1])
    assert got_seq == seq < e.last_seq
    assert set(got) == set(expected)
    for k, v in expected.items():  # field by field: a loaded record's padding bytes are not the book's
        for f in v.dtype.names or [None]:
            assert np.array_equal(got[k][f] if f else got[k], v[f] if f else v, equal_nan=True), (k, f)
    assert len(msgspec.msgpack.decode(meta)["window_chunks"][0][0]) > 0
    restored = _restore(settings, (got_seq, got, meta), shm=False)
    assert [ENC(restored.state_response(m.PortfolioStateRequest(f"P{j}"))) for j in range(5)] == answers
