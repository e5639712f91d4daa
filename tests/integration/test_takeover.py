"""Takeover against a real PostgreSQL 15: a new host with an empty journal loads its book from the command side.

Daemon A (postgres sink) builds a book through the client and stops cleanly (the sink
drains); daemon B starts on a new, empty data dir with the same DSN and --takeover, and
must answer every portfolio exactly as A did: quantities, cash to the cent, cost basis,
market values, margins, exposures and limits, statuses, position counts. What the command
side does not hold (realized P&L) is checked to be what ADR 0011 says: zero.
Error paths: the journal is not empty (skipped), PostgreSQL unreachable or without a
command side, a row the engine refuses (start-up stops, exit 4, and the next start loads
again from scratch).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from portfolio_state.daemon.config import load
from portfolio_state.daemon.recovery import open_engine
from portfolio_state.daemon.takeover import MARKER, TakeoverError, discard_unfinished, take_over
from portfolio_state.persistence.pgstore import PostgresStore
from portfolio_state.persistence.pgtakeover import CommandSideError, read_command_side, record_loaded
from tests.integration.daemon_proc import DaemonProcess, free_port
from tests.integration.servers import psql

pytestmark = pytest.mark.integration

FAST = ["--set", "sink.flush_interval_ms=10", "--set", "sink.state_interval_ms=50",
        "--set", "sink.revalue_interval_ms=100", "--set", "sink.retry_max_s=0.2"]
PORTFOLIOS = ("US-LS", "EU-LS", "US-LO", "EU-EMPTY")


def pg_args(dsn, *extra):
    return ["--set", "sink.backend=postgres", "--set", f"sink.postgres_dsn={dsn}", *FAST, *extra]


def seed_book(c) -> None:
    """Portfolios in USD and EUR, long and short positions in three currencies (one with a
    multiplier), cash in two currencies, fees, partial closes, every status, limits."""
    c.upsert_instruments([
        {"instrument_id": "AAPL", "sector": "Technology", "country": "US"},
        {"instrument_id": "XOM", "sector": "Energy", "country": "US"},
        {"instrument_id": "SAP", "currency": "EUR", "sector": "Technology", "country": "DE"},
        {"instrument_id": "7203", "currency": "JPY", "sector": "Consumer", "country": "JP"},
        {"instrument_id": "ESZ6", "sector": "Index", "country": "US", "asset_class": "FUTURE", "multiplier": 50},
        {"instrument_id": "BUND", "currency": "EUR", "sector": "Government", "country": "DE",
         "asset_class": "GOVERNMENT_BOND", "margin": (0.04, 0.02, 0.05, 0.03)},
    ])
    c.fx({"EUR": 1.0843, "JPY": 0.006671})
    c.prices({"AAPL": 190.12, "XOM": 110.5, "SAP": 120.33, "7203": 2512.0, "ESZ6": 6001.25, "BUND": 131.07})
    c.upsert_portfolio("US-LS", base_currency="USD", portfolio_type="LONG_SHORT", portfolio_name="US long/short",
                       benchmark="SPX", inception_date="2024-01-02", instrument_limit=0.25)
    c.upsert_portfolio("EU-LS", base_currency="EUR", portfolio_type="LONG_SHORT", portfolio_name="EU book")
    c.upsert_portfolio("US-LO", base_currency="USD", portfolio_type="LONG_ONLY", status="ACTIVE")
    c.upsert_portfolio("EU-EMPTY", base_currency="EUR", portfolio_type="LONG_SHORT")
    c.cash_flow("US-LS", 2_000_000.17)
    c.cash_flow("US-LS", 300_000.03, currency="EUR")
    c.cash_flow("EU-LS", 1_500_000, currency="EUR")
    c.cash_flow("EU-LS", 250_000.55, currency="USD")
    c.cash_flow("US-LO", 800_000)
    c.cash_flow("US-LO", 1234.56, flow_type="WITHDRAWAL")
    up = c.update_position
    up("US-LS", "us-aapl", "AAPL", "BUY", 1000, 189.37, fee=1.25)
    up("US-LS", "us-aapl", "AAPL", "BUY", 333, 191.01)
    up("US-LS", "us-aapl", "AAPL", "SELL", 120, 192.5, fee=0.7)          # partial close: realized
    up("US-LS", "us-sap-short", "SAP", "SHORT", 777, 121.17)              # short, foreign currency
    up("US-LS", "us-sap-short", "SAP", "COVER", 77, 119.9)
    up("US-LS", "us-toyota", "7203", "BUY", 1500, 2490.5)                 # JPY in a USD book
    up("US-LS", "us-es", "ESZ6", "BUY", 3, 5990.25)                        # multiplier 50
    up("US-LS", "us-xom-short", "XOM", "SHORT", 250.5, 111.11)             # fractional quantity
    up("US-LS", "us-closed", "XOM", "BUY", 100, 109.0)
    up("US-LS", "us-closed", "XOM", "SELL", 100, 112.0)                   # CLOSED by trading
    up("EU-LS", "eu-sap", "SAP", "BUY", 2000, 118.42)
    up("EU-LS", "eu-aapl-short", "AAPL", "SHORT", 400, 190.77, fee=2.0)   # USD short in a EUR book
    up("EU-LS", "eu-bund", "BUND", "BUY", 150, 130.5)
    up("EU-LS", "eu-toyota", "7203", "SHORT", 900, 2530.0)
    up("US-LO", "lo-aapl", "AAPL", "BUY", 500, 188.0)
    up("US-LO", "lo-xom", "XOM", "BUY", 700, 109.55)
    up("US-LO", "lo-sap", "SAP", "BUY", 123.456789, 119.01)
    c.set_status("US-LS", "us-toyota", "7203", "SUSPENDED")               # SUSPENDED, holding
    c.set_status("US-LS", "us-pending", "AAPL", "PENDING")                 # PENDING, flat
    c.set_status("EU-LS", "eu-sus-flat", "SAP", "PENDING")
    c.set_status("EU-LS", "eu-sus-flat", "SAP", "SUSPENDED")              # SUSPENDED, flat
    c.set_status("US-LO", "lo-withdrawn", "XOM", "PENDING")
    c.set_status("US-LO", "lo-withdrawn", "XOM", "CLOSED")                # CLOSED, never traded
    c.set_limit("US-LS", "SECTOR", "Technology", 0.3)
    c.set_limit("US-LS", "INSTRUMENT", "AAPL", 0.2)
    c.set_limit("EU-LS", "CURRENCY", "USD", 0.5)
    c.set_limit("EU-LS", "ASSET_CLASS", "GOVERNMENT_BOND", 0.1)
    c.set_limit("US-LO", "GEOGRAPHIC", "DE", 0.05)
    # the market moves after the trades: cost bases convert at the newest rates
    c.prices({"AAPL": 193.4, "SAP": 122.01, "7203": 2498.5, "ESZ6": 6010.0})
    c.fx({"EUR": 1.0871, "JPY": 0.006702})


def snapshot(c) -> dict:
    return {pf: c.state(pf) for pf in PORTFOLIOS}


def assert_same_book(a: dict, b: dict) -> None:
    """B answers every portfolio as A did: every number of the state, margin, cash and exposures,
    and per position quantity, cost basis, market value, unrealized P&L, weight, status, last price."""
    for pf in PORTFOLIOS:
        sa, sb = a[pf], b[pf]
        assert sb.portfolio_state == sa.portfolio_state, pf
        assert sb.cash == sa.cash, pf
        ma, mb = sa.margin, sb.margin
        assert (mb.initial_margin, mb.maintenance_margin, mb.excess_liquidity, mb.buying_power) == (
            ma.initial_margin, ma.maintenance_margin, ma.excess_liquidity, ma.buying_power), pf
        assert _exposures(sb) == _exposures(sa), pf
        pa = {p.position_id: p for p in sa.positions}
        pb = {p.position_id: p for p in sb.positions}
        assert set(pb) == set(pa), pf
        for pid, x in pa.items():
            y = pb[pid]
            same = ("instrument_id", "quantity", "cost_basis", "market_value", "unrealized_pnl", "weight", "status",
                    "last_price")
            assert {f: getattr(y, f) for f in same} == {f: getattr(x, f) for f in same}, pid
            # the instrument-currency cost comes back exactly where the base cent is finer than the
            # instrument's (rate >= 1), else within half a base cent: the average price agrees closely
            assert y.average_price == pytest.approx(x.average_price, rel=1e-6), pid
            assert y.realized_pnl == 0.0, pid  # not in the command side (ADR 0011)


def _exposures(state) -> dict:
    """{(type, category): (value, percentage, limit, utilization)}, NaN as None (NaN != NaN)."""
    nan = lambda x: None if x != x else x  # noqa: E731
    return {(e.exposure_type, e.category): (e.exposure_value, e.exposure_percentage, nan(e.limit_percentage),
                                            nan(e.utilization))
            for rows in state.exposures.values() for e in rows}


def _verify(data_dir, args) -> dict:
    p = subprocess.run([sys.executable, "-m", "portfolio_state.daemon.cli", "verify", "--set",
                        f"journal.data_dir={data_dir}", *args], capture_output=True, text=True, timeout=120)
    lines = p.stdout.splitlines()
    return {**json.loads(lines[0]), "text": "\n".join(lines[1:]), "code": p.returncode, "stderr": p.stderr}


def run_host_a(tmp_path, pg_dsn) -> dict:
    """The old host: a daemon with the postgres sink, the seeded book, a clean (drained) stop.
    Returns the book's snapshot as it answered before stopping."""
    a = DaemonProcess(tmp_path, extra=pg_args(pg_dsn), data_dir=str(tmp_path / "host-a"))
    a.wait_ready()
    try:
        with a.client() as c:
            seed_book(c)
            return snapshot(c)
    finally:
        assert a.stop() == 0, a.output()


def test_a_new_host_takes_over_the_book_exactly(tmp_path, pg_dsn):
    before = run_host_a(tmp_path, pg_dsn)
    assert psql(pg_dsn, "SELECT count(*) FROM fx_rates") == [(3,)]  # EUR, JPY and the pivot
    changes = psql(pg_dsn, "SELECT count(*) FROM position_changes_ts")

    args = pg_args(pg_dsn)
    b = DaemonProcess(tmp_path, extra=[*args, "--takeover"], data_dir=str(tmp_path / "host-b"))
    b.wait_ready()
    try:
        with b.client() as c:
            after = snapshot(c)
            assert c.health().status == "ok"
    finally:
        assert b.stop() == 0, b.output()
    assert "takeover from postgresql://postgres@127.0.0.1" in b.output(), b.output()
    assert "'positions': 16" in b.output() and "'approximate_costs': 0" in b.output(), b.output()
    assert_same_book(before, after)
    assert not os.path.exists(tmp_path / "host-b" / MARKER)
    # the store already held what B loaded: B's write-behind did not copy the book back
    assert psql(pg_dsn, "SELECT count(*) FROM cash_flows WHERE cash_flow_id LIKE 'takeover:%'") == [(0,)]
    assert psql(pg_dsn, "SELECT count(*) FROM position_changes_ts") == changes
    v = _verify(tmp_path / "host-b", args)
    assert v["code"] == 0 and v["differences"] == 0, v

    # B restarts on its own journal: the takeover is not run again, and the book is the same
    b2 = DaemonProcess(tmp_path, extra=[*args, "--takeover"], data_dir=str(tmp_path / "host-b"))
    b2.wait_ready()
    try:
        with b2.client() as c:
            again = snapshot(c)
            c.update_position("US-LS", "us-aapl", "AAPL", "SELL", 13, 193.0)  # and it trades on
    finally:
        assert b2.stop() == 0, b2.output()
    assert "takeover skipped: the journal is not empty" in b2.output(), b2.output()
    assert "takeover from" not in b2.output()
    assert_same_book(before, again)


def test_takeover_against_unreachable_postgres_stops_start_up(tmp_path):
    dsn = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nowhere"
    d = DaemonProcess(tmp_path, extra=[*pg_args(dsn), "--takeover"])
    with pytest.raises(RuntimeError, match="daemon exited 4"):
        d.wait_ready()
    out = d.output()
    d.stop()
    assert "takeover failed, not starting: PostgreSQL unreachable at postgresql://postgres:***@127.0.0.1" in out, out
    assert "secret" not in out
    assert "ready:" not in out
    assert not os.path.exists(tmp_path / "data" / MARKER)  # nothing was journaled: the next start tries again


def test_a_database_without_a_command_side_is_refused(pg_dsn):
    with pytest.raises(CommandSideError, match="no command side"):
        read_command_side(pg_dsn)
    psql(pg_dsn, "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    psql(pg_dsn, "INSERT INTO schema_migrations VALUES (1, 'command side')")
    with pytest.raises(CommandSideError, match="schema version 1"):
        read_command_side(pg_dsn)
    psql(pg_dsn, "INSERT INTO schema_migrations VALUES (2, 'service tables')")  # that claim, but no tables
    with pytest.raises(CommandSideError, match="reading the command side from .* failed: UndefinedTableError"):
        read_command_side(pg_dsn)
    with pytest.raises(CommandSideError, match="recording the takeover's watermark in .* failed"):
        record_loaded(pg_dsn, "j", 1)


def test_an_empty_command_side_loads_nothing_and_the_next_start_looks_again(tmp_path, pg_dsn):
    async def migrate():
        store = PostgresStore(pg_dsn, "old-host")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    settings = _settings(tmp_path, pg_dsn)
    engine, _ = open_engine(settings)
    summary = take_over(settings, engine)
    engine.journal.close()
    assert summary["commands"] == 0 and summary["journal_seq"] == engine.last_seq == 0
    assert not os.path.exists(tmp_path / "data" / MARKER)
    assert psql(pg_dsn, "SELECT count(*) FROM sink_watermark") == [(0,)]


def test_an_unfinished_takeover_with_takeover_off_stops_start_up(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / MARKER).write_text("1")
    d = DaemonProcess(tmp_path)
    with pytest.raises(RuntimeError, match="daemon exited 4"):
        d.wait_ready()
    d.stop()
    assert "cannot start: an unfinished takeover left a partial journal" in d.output(), d.output()


def _settings(tmp_path, dsn, takeover=True):
    return load(overrides=[f"journal.data_dir={tmp_path / 'data'}", "sink.backend=postgres",
                           f"sink.postgres_dsn={dsn}", f"sink.takeover={'true' if takeover else 'false'}"], environ={})


def test_a_row_the_engine_refuses_stops_the_takeover_and_the_next_start_loads_again(tmp_path, pg_dsn):
    run_host_a(tmp_path, pg_dsn)
    # a row no engine accepts: a short position in a long-only portfolio
    psql(pg_dsn, "UPDATE positions SET quantity = -quantity, cost_basis = -cost_basis WHERE position_id = 'lo-xom'")
    settings = _settings(tmp_path, pg_dsn)
    engine, _ = open_engine(settings)
    with pytest.raises(TakeoverError, match="position lo-xom of US-LO \\(SHORT\\): LONG_ONLY_SHORT"):
        take_over(settings, engine)
    engine.journal.close()
    assert os.path.exists(tmp_path / "data" / MARKER) and engine.last_seq > 0  # half a book is on disk
    # takeover off: the partial journal is never served
    with pytest.raises(TakeoverError, match="unfinished takeover"):
        discard_unfinished(_settings(tmp_path, pg_dsn, takeover=False))
    # the row repaired, the next start discards the partial journal and loads again from scratch
    psql(pg_dsn, "UPDATE positions SET quantity = -quantity, cost_basis = -cost_basis WHERE position_id = 'lo-xom'")
    discard_unfinished(settings)
    engine, _ = open_engine(settings)
    assert engine.last_seq == 0
    summary = take_over(settings, engine)
    engine.journal.close()
    assert summary["positions"] == 16 and summary["journal_seq"] == engine.last_seq > 0
    assert not os.path.exists(tmp_path / "data" / MARKER)
    assert psql(pg_dsn, "SELECT last_txn FROM sink_watermark WHERE seq = %d" % engine.last_seq) == [("takeover",)]
