"""Performance metrics against a plain-Python reference over scripted days, through the engine:
Modified Dietz day returns with deposits, withdrawals and transfers as external flows, chained
into a time-weighted index; volatility, Sharpe, drawdown, beta and alpha from completed days;
the same numbers after a replay of the journal and after a checkpoint."""
import math
import statistics

import msgspec
import pytest

from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import open_engine, write_checkpoint
from portfolio_state.transport import messages as m

DAY = 86_400 * 10**9
T0 = 20_000 * DAY + 3_600 * 10**9  # 01:00 UTC


def _settings(d):
    return load(overrides=[f"journal.data_dir={d}", "journal.fsync=off", "engine.events=false",
                           "journal.checkpoint_interval_s=0"], environ={})


def _h(e, req, t):
    return msgspec.msgpack.decode(e.handle([([b""], msgspec.msgpack.encode(req))], t)[0][1])


def _script(e):
    """Day 0: deposit 10,000, buy 50 AAPL at 100. Day 1: AAPL 110, benchmark 1,050; deposit 2,000.
    Day 2: AAPL 99, benchmark 1,000; withdraw 1,000; 5 more AAPL transferred in. Day 3: AAPL 105,
    benchmark 1,020 (today)."""
    _h(e, m.InstrumentUpsert("i", [m.Instrument("AAPL"), m.Instrument("SPX")]), T0)
    _h(e, m.PriceTicks("p0", [m.PriceTick("AAPL", 100.0), m.PriceTick("SPX", 1000.0)]), T0)
    _h(e, m.PortfolioUpsert("pf", m.Portfolio("P1", benchmark="SPX")), T0)
    _h(e, m.PortfolioUpsert("pf2", m.Portfolio("P2")), T0)
    _h(e, m.CashFlowRequest("c0", "c0", "P1", 10_000.0, "USD", "DEPOSIT"), T0)
    _h(e, m.PositionUpdateRequest("t0", "P1", "a", "AAPL", 50.0, 100.0, "BUY"), T0)
    _h(e, m.PriceTicks("p1", [m.PriceTick("AAPL", 110.0), m.PriceTick("SPX", 1050.0)]), T0 + DAY)
    _h(e, m.CashFlowRequest("c1", "c1", "P1", 2_000.0, "USD", "DEPOSIT"), T0 + DAY)
    _h(e, m.PriceTicks("p2", [m.PriceTick("AAPL", 99.0), m.PriceTick("SPX", 1000.0)]), T0 + 2 * DAY)
    _h(e, m.CashFlowRequest("c2", "c2", "P1", 1_000.0, "USD", "WITHDRAWAL"), T0 + 2 * DAY)
    _h(e, m.PositionUpdateRequest("t2", "P1", "a", "AAPL", 5.0, 99.0, "TRANSFER_IN"), T0 + 2 * DAY)
    _h(e, m.CashFlowRequest("c3", "c3", "P1", 25.0, "USD", "DIVIDEND"), T0 + 2 * DAY)  # performance, not a flow
    _h(e, m.PriceTicks("p3", [m.PriceTick("AAPL", 105.0), m.PriceTick("SPX", 1020.0)]), T0 + 3 * DAY)


def _reference() -> dict:
    def dietz(v0, v1, f):
        return (v1 - v0 - f) / (v0 + f / 2) if v0 + f / 2 > 0 else 0.0
    # values at each day's first batch (before it), flows during the day
    r0 = dietz(0, 10_000, 10_000)                       # day 0 closes at 5,000 cash + 50 x 100
    r1 = dietz(10_000, 7_000 + 50 * 110, 2_000)         # day 1: 12,500
    v2 = 6_000 + 25 + 55 * 99                           # day 2: 11,470 (after withdrawal, transfer, dividend)
    r2 = dietz(12_500, v2, -1_000 + 5 * 99)
    v3 = 6_025 + 55 * 105
    r3 = dietz(v2, v3, 0)                               # today so far
    days = [r0, r1, r2]
    idx = (1 + r0) * (1 + r1) * (1 + r2)
    peak, mdd, i = 1.0, 0.0, 1.0
    for r in days:
        i *= 1 + r
        peak = max(peak, i)
        mdd = max(mdd, 1 - i / peak)
    now = idx * (1 + r3)
    mdd = max(mdd, 1 - now / max(peak, now))
    sd, mean = statistics.stdev(days), statistics.fmean(days)
    rb = [1050 / 1000 - 1, 1000 / 1050 - 1]             # the benchmark's completed days (1 and 2)
    rp = [r1, r2]
    cov = sum((a - statistics.fmean(rp)) * (b - statistics.fmean(rb)) for a, b in zip(rp, rb)) / (len(rb) - 1)
    beta = cov / statistics.variance(rb)
    return {"total_return": now - 1, "daily_return": r3, "volatility": sd * math.sqrt(252),
            "sharpe_ratio": mean / sd * math.sqrt(252), "max_drawdown": mdd, "beta": beta,
            "alpha": (statistics.fmean(rp) - beta * statistics.fmean(rb)) * 252}


def _metrics(e, pid="P1"):
    return _h(e, m.PortfolioStateRequest(pid, include_performance=True), T0 + 3 * DAY + 5)["performance_metrics"]


def test_metrics_match_the_reference_and_survive_replay_and_checkpoint(tmp_path):
    e, _ = open_engine(_settings(tmp_path))
    _script(e)
    want = _reference()
    got = _metrics(e)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    # a portfolio with no benchmark and no completed day with money: nulls where undefined
    p2 = _metrics(e, "P2")
    assert p2["beta"] is None and p2["alpha"] is None and p2["total_return"] == 0.0
    e.journal.close()
    e2, _ = open_engine(_settings(tmp_path))  # replay of the journal
    assert _metrics(e2) == pytest.approx(want, rel=1e-9, abs=1e-12)
    write_checkpoint(e2, _settings(tmp_path))
    e2.journal.close()
    e3, stats = open_engine(_settings(tmp_path))  # the checkpoint alone
    assert stats["replayed"] == 0
    assert _metrics(e3) == pytest.approx(want, rel=1e-9, abs=1e-12)
    e3.journal.close()


def test_without_include_performance_there_are_none(tmp_path):
    e, _ = open_engine(_settings(tmp_path))
    _script(e)
    assert _h(e, m.PortfolioStateRequest("P1"), T0 + 3 * DAY)["performance_metrics"] is None
    e.journal.close()
