"""The takeover's pure parts and its refusals: units, exact costs, cash, the plan's checks, start-up rules.

Everything here runs without PostgreSQL: rows are built by hand as persistence.pgtakeover
returns them (quantities micro-units, money cents, prices and rates floats).
"""
from __future__ import annotations

import logging
import os
import random
import types

import numpy as np
import pytest

from portfolio_state.daemon.capture import ChangeCapture
from portfolio_state.daemon.config import load
from portfolio_state.daemon.takeover import MARKER, check, discard_unfinished, held_cash, take_over
from portfolio_state.daemon.takeover_plan import (
    Plan, Target, TakeoverError, cash_flows, local_cost, muldiv, plan, position_rows,
)
from portfolio_state.kernels import TradeKind
from portfolio_state.kernels.enums import NOTIONAL_DIV, PRICE_SCALE, QTY_SCALE
from portfolio_state.kernels.fixedpoint import muldiv_round_nb
from portfolio_state.persistence.changes import tables
from portfolio_state.persistence.pgtakeover import CommandSide, CommandSideError, read_command_side, record_loaded, redact
from portfolio_state.transport import messages as m
from tests.bookfactory import make_book, trade
from tests.integration.daemon_proc import free_port


# ------------------------------------------------------------------ fixed point, as the kernels do it
def test_muldiv_is_the_kernels_rounding():
    rng = random.Random(11)
    print("seed 11")
    for _ in range(2000):
        a = rng.randint(-10 ** 15, 10 ** 15)
        b = rng.randint(1, 10 ** 17)
        d = rng.choice([NOTIONAL_DIV, 100, 7, 10 ** 6])
        if abs(a * b / d) < 2 ** 61:
            assert muldiv(a, b, d) == muldiv_round_nb(np.int64(a), np.int64(b), np.int64(d)), (a, b, d)
    assert muldiv(5, 1, 10) == 0 and muldiv(15, 1, 10) == 2 and muldiv(-15, 1, 10) == -2  # half to even


@pytest.mark.parametrize("kind", [TradeKind.TRANSFER_IN, TradeKind.SHORT])
def test_position_rows_reproduce_the_cost_to_the_cent_through_the_kernel(kind):
    rng = random.Random(5)
    print("seed 5")
    cases = []
    for _ in range(40):  # 1 micro-unit to 1,000 units at 1 cent to 1,000,000 per unit, any cent of cost
        q, price = rng.randint(1, 10 ** 9), 10 ** rng.uniform(-2, 6)
        cases.append((q, 1, max(0, round(q * price / 10 ** 4) + rng.randint(-3, 3))))
    cases += [(30_000_000 * QTY_SCALE, 1, 5_512_345_678_91),     # 30M units: one price cannot hit the cent
              (123_456_789, 50, 3_087_654_321), (1, 1, 0), (1, 1_000_000, 99), (7, 3, 1)]
    for q, mult, cost in cases:
        rows = position_rows(q, mult, cost)
        assert rows is not None, (q, mult, cost)
        assert sum(r[0] for r in rows) == q and len(rows) <= 2
        assert sum(muldiv(qq, px * mult, NOTIONAL_DIV) for qq, px in rows) == cost
        if mult != 1:
            continue
        book = make_book()  # through the real kernel: floats in, the same cost out
        for qq, px in rows:
            out, _ = trade(book, "P0", "x", "AAPL", kind, qq / QTY_SCALE, px / PRICE_SCALE)
            assert out["reason"] == 0
        s = book.slot(0, "x", 0)
        sign = 1 if kind == TradeKind.TRANSFER_IN else -1
        assert (int(book.a.positions["qty"][s]), int(book.a.positions["cost"][s])) == (sign * q, sign * cost)


def test_a_cost_no_transfer_can_reproduce_is_none():
    assert position_rows(10 ** 15, 1, 0) is None  # a billion units for nothing: even one nano-unit costs a dollar


def test_local_cost_converts_back_exactly_at_the_same_rate():
    rng = random.Random(3)
    print("seed 3")
    for _ in range(3000):
        c = rng.randint(-10 ** 12, 10 ** 12)
        ratio = rng.choice([1.0871, 1 / 1.0871, 0.006702 / 1.0871, 149.2, 0.5, 1.0])
        base = int(np.rint(np.float64(c) * ratio))
        got, exact = local_cost(base, ratio)
        assert exact and int(np.rint(np.float64(got) * ratio)) == base
        if ratio >= 1.0:
            assert got == c  # a base cent finer than the local one: the local cost itself comes back


def test_local_cost_at_another_rate_says_so():
    # 1001 local cents at 1.5 were 1502 base cents (half to even); 1502 cannot come back at 3.0
    assert local_cost(1502, 3.0) == (501, False)


# ------------------------------------------------------------------ the plan and its refusals
def side(**over) -> CommandSide:
    s = CommandSide(
        schema_version=4,
        portfolios=[{"portfolio_id": "P", "portfolio_name": "P", "base_currency": "USD", "portfolio_type": "LONG_SHORT",
                     "inception_date": "2024-01-02", "status": "ACTIVE", "benchmark": None, "instrument_limit": None},
                    {"portfolio_id": "E", "portfolio_name": "E", "base_currency": "EUR", "portfolio_type": "LONG_ONLY",
                     "inception_date": "2024-01-02", "status": "ACTIVE", "benchmark": None, "instrument_limit": 0.2}],
        instruments=[{"instrument_id": i, "currency": c, "sector": "S", "country": "US", "asset_class": "EQUITY",
                      "multiplier": 1, "long_initial": 0.5, "long_maintenance": 0.25, "short_initial": 0.5,
                      "short_maintenance": 0.3} for i, c in (("AAPL", "USD"), ("SAP", "EUR"))],
        positions=[pos("P", "p1", "AAPL", 10, 1900_00), pos("P", "p2", "SAP", -5, -650_00),
                   pos("P", "p3", "AAPL", 0, 0, "CLOSED"), pos("E", "e1", "SAP", 0, 0, "PENDING"),
                   pos("P", "p4", "AAPL", 1, 190_00, "SUSPENDED"), pos("E", "e2", "AAPL", 0, 0, "SUSPENDED")],
        cash=[{"portfolio_id": "P", "currency": "USD", "amount": 1_000_00},
              {"portfolio_id": "P", "currency": "EUR", "amount": -12_34}],
        prices=[{"instrument_id": "AAPL", "price": 190.5}, {"instrument_id": "GONE", "price": 1.0}],
        fx=[{"currency": "EUR", "rate": 1.1}, {"currency": "USD", "rate": 1.0}],
        limits=[{"portfolio_id": "P", "exposure_type": "SECTOR", "category": "S", "limit_percentage": 0.3}])
    for k, v in over.items():
        setattr(s, k, v)
    return s


def pos(pf, pid, inst, units, cost, status="ACTIVE"):
    return {"position_id": pid, "portfolio_id": pf, "instrument_id": inst, "quantity": units * QTY_SCALE,
            "cost_basis": cost, "status": status, "last_updated": 123}


def test_plan_orders_the_stages_and_keys_every_command():
    p = plan(side(), "USD", "takeover:j", 7)
    names = [n for n, _ in p.stages]
    assert names == ["instruments", "portfolios", "fx", "prices", "positions", "statuses", "limits"]
    st = dict(p.stages)
    assert st["fx"][0].rates == [m.FxRate("EUR", 1.1)]              # the pivot's own rate is never sent
    assert [t.instrument_id for t in st["prices"][0].ticks] == ["AAPL"]  # no price for an unknown instrument
    rows = st["positions"][0].updates
    assert [(r.position_id, r.transaction_type) for r in rows] == [("p1", "TRANSFER_IN"), ("p2", "SHORT"),
                                                                   ("p4", "TRANSFER_IN")]
    assert rows[0].timestamp == 123 and rows[0].fee == 0.0
    assert [(s.position_id, s.status) for s in st["statuses"]] == [
        ("p3", "PENDING"), ("p3", "CLOSED"), ("e1", "PENDING"), ("p4", "SUSPENDED"), ("e2", "PENDING"),
        ("e2", "SUSPENDED")]
    keys = [x.key for _, msgs in p.stages for x in msgs]
    assert len(set(keys)) == len(keys) == p.n and keys[0] == "takeover:j:1"
    sap = [t for t in p.positions if t.position_id == "p2"][0]
    assert (sap.cost, sap.exact) == (-590_91, True)  # local EUR cents of a USD cost basis: rint(-59091 * 1.1) = -65000


def test_cash_flows_make_every_balance_exact():
    p = plan(side(), "USD", "k", 7)
    flows = cash_flows(p, {("P", "EUR"): 590_91, ("P", "JPY"): 5}, 7)  # short proceeds, and a stray balance
    got = {(f.portfolio_id, f.currency): (f.flow_type, f.amount) for f in flows}
    assert got == {("P", "USD"): ("DEPOSIT", 1000.0), ("P", "EUR"): ("WITHDRAWAL", 603.25),
                   ("P", "JPY"): ("WITHDRAWAL", 0.05)}
    assert all(f.cash_flow_id == f.key for f in flows)
    big = cash_flows(Plan(prefix="k", cash={("P", "USD"): 3 * 10 ** 15 + 7}), {}, 7)
    assert [f.amount for f in big] == [1e13, 1e13, 1e13, 0.07]  # each amount exact as a float


@pytest.mark.parametrize("change, message", [
    (dict(fx=[{"currency": "USD", "rate": 1.2}]), "pivot currency USD"),
    (dict(fx=[]), "no FX rate between EUR and USD"),
    (dict(positions=[pos("P", "x", "AAPL", 0, 0, "ACTIVE")]), "status ACTIVE with quantity 0.0"),
    (dict(positions=[pos("P", "x", "AAPL", 3, 100, "PENDING")]), "status PENDING with quantity 3.0"),
    (dict(positions=[pos("P", "x", "AAPL", 3, -100)]), "does not fit quantity"),
    (dict(positions=[pos("P", "x", "AAPL", 0, 0, "FREE")]), "status FREE"),
    (dict(positions=[pos("Q", "x", "AAPL", 1, 100)]), "no such portfolio"),
    (dict(positions=[pos("P", "x", "MSFT", 1, 100)]), "instrument MSFT is not in instruments"),
    (dict(positions=[pos("P", "x", "AAPL", 10 ** 9, 0)]), "cannot be reproduced"),
    (dict(cash=[{"portfolio_id": "Q", "currency": "USD", "amount": 1}]), "no such portfolio"),
    (dict(cash=[{"portfolio_id": "P", "currency": "JPY", "amount": 1}]), "no FX rate between JPY and USD"),
])
def test_plan_refuses_what_the_engine_could_not_hold(change, message):
    with pytest.raises(TakeoverError, match=message):
        plan(side(**change), "USD", "k", 7)


# ------------------------------------------------------------------ the check after loading
def test_check_refuses_a_book_that_differs_and_counts_inexact_costs(caplog):
    book = make_book()
    trade(book, "P0", "a", "AAPL", TradeKind.TRANSFER_IN, 10, 190.0)
    good = Target("P0", "a", "AAPL", 10 * QTY_SCALE, 1900_00, 1900_00, "ACTIVE", exact=False)
    p = Plan(positions=[good], cash=held_cash(book))
    with caplog.at_level(logging.WARNING):
        assert check(book, p) == 1
    assert "cannot convert back exactly" in caplog.text
    p.positions = [Target("P0", "a", "AAPL", 11 * QTY_SCALE, 1900_00, 1900_00, "ACTIVE", True)]
    with pytest.raises(TakeoverError, match="position a"):
        check(book, p)
    p.positions, p.cash = [good], {}
    with pytest.raises(TakeoverError, match=r"cash \('P0', 'USD'\)"):
        check(book, p)


def test_a_command_the_engine_refuses_stops_the_takeover_naming_it():
    from portfolio_state.daemon.engine import Engine
    from portfolio_state.daemon.takeover import _apply

    engine = Engine()
    with pytest.raises(TakeoverError, match="limits: the engine refused ExposureLimit NOPE SECTOR Tech: "
                                            "UNKNOWN_PORTFOLIO"):
        _apply(engine, "limits", [m.ExposureLimit("k1", "NOPE", "SECTOR", "Tech", 0.1)], 1)
    with pytest.raises(TakeoverError, match="instruments: .* rejected .*BAD_MULTIPLIER"):
        _apply(engine, "instruments", [m.InstrumentUpsert("k2", [m.Instrument("X", multiplier=0)])], 1)


# ------------------------------------------------------------------ when it runs, when it refuses to
def _settings(tmp_path, **kw):
    sets = {"journal.data_dir": str(tmp_path), "sink.backend": "postgres", "sink.postgres_dsn": "x",
            "sink.takeover": "true", **kw}
    return load(overrides=[f"{k}={v}" for k, v in sets.items()], environ={})


def test_takeover_runs_only_on_a_new_host_with_the_postgres_sink(tmp_path, caplog):
    engine = types.SimpleNamespace(last_seq=0, journal=object())
    assert take_over(_settings(tmp_path, **{"sink.takeover": "false"}), engine) is None
    with caplog.at_level(logging.INFO):
        assert take_over(_settings(tmp_path), types.SimpleNamespace(last_seq=5, journal=object())) is None
    assert "takeover skipped: the journal is not empty (last record 5)" in caplog.text
    with pytest.raises(TakeoverError, match="needs sink.backend=postgres"):
        take_over(_settings(tmp_path, **{"sink.backend": "duckdb"}), engine)
    with pytest.raises(TakeoverError, match="needs the journal"):
        take_over(_settings(tmp_path), types.SimpleNamespace(last_seq=0, journal=None))
    with pytest.raises(TakeoverError, match="postgres_dsn is empty"):
        take_over(_settings(tmp_path, **{"sink.postgres_dsn": '""'}), engine)


def test_an_unfinished_takeover_is_discarded_or_refused(tmp_path):
    discard_unfinished(_settings(tmp_path))  # no marker: nothing happens
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "00000000000000000001.seg").write_bytes(b"partial")
    (tmp_path / MARKER).write_text("1")
    with pytest.raises(TakeoverError, match="unfinished takeover"):
        discard_unfinished(_settings(tmp_path, **{"sink.takeover": "false"}))
    assert os.path.exists(tmp_path / "journal" / "00000000000000000001.seg")
    discard_unfinished(_settings(tmp_path))
    assert not os.path.exists(tmp_path / "journal")


def test_postgres_unreachable_is_a_clear_error_without_the_password():
    dsn = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db"
    assert redact(dsn) == dsn.replace("hunter2", "***")
    for call in (lambda: read_command_side(dsn, timeout=2), lambda: record_loaded(dsn, "j", 1, timeout=2)):
        with pytest.raises(CommandSideError, match=r"PostgreSQL unreachable at postgresql://postgres:\*\*\*@") as e:
            call()
        assert "hunter2" not in str(e.value)


# ------------------------------------------------------------------ what the write-behind keeps for a takeover
def test_prices_and_rates_go_once_after_a_start_then_when_they_move():
    book = make_book()
    cap = ChangeCapture(book)
    cs = cap.take(0, 1, snapshot=True)
    t = tables([cs])
    assert dict(zip(t["instrument_prices"]["instrument_id"], t["instrument_prices"]["price"]))["AAPL"] == 190.0
    assert dict(zip(t["fx_rates"]["currency"], t["fx_rates"]["rate"])) == {"USD": 1.0, "EUR": 1.1, "JPY": 0.0067}
    book.apply_prices(np.array([0], np.int32), np.array([191.25]), np.array([5], np.int64))
    assert cap.take(0, 2, snapshot=(1, 4)) is None  # not this phase: the price waits for its snapshot
    cs = cap.take(0, 3, snapshot=(0, 4))
    assert list(cs.prices["instrument_id"]) == ["AAPL"] and list(cs.prices["price"]) == [191.25] and cs.fx == []
    assert cap.take(0, 4, snapshot=True) is None
    assert len(cap.take(0, 5, full=True).prices["instrument_id"]) == 6
