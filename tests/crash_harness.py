"""Crash test: random updates through the client, kill -9 at random moments, restart, and prove
that nothing acknowledged was lost or applied twice, against the Decimal reference model.

Owns: ``run_crash_test`` (used by tests/integration/test_crash.py with >= 25 kill points and by
perf/crash_long.py with >= 1,000). Runs on: the test process; the daemon is a child process.

How: one client sends one request at a time (so acknowledgement order is apply order), each
with its own idempotency key. Every reply received is applied to the model *once*. A timer
SIGKILLs the daemon at a random moment (mid-write, mid-sync, mid-checkpoint: checkpoints run
every 0.2 s); the request in flight is then retried with the same bytes after the restart,
and its reply (original or fresh) is applied to the model once. At the end the daemon is
restarted once more and every portfolio is compared with the model: quantities, cash per
currency and realized P&L exactly; totals within the model's float bound. An independent
tally of acknowledged fills checks positions = sum of fills.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from decimal import Decimal


from portfolio_state.transport import messages as m
from portfolio_state.transport.client import Client
from tests.integration.daemon_proc import DaemonProcess
from tests.reference_model import ReferenceBook

PORTFOLIOS = [("C0", "USD", "LONG_SHORT"), ("C1", "USD", "LONG_ONLY"), ("C2", "EUR", "LONG_SHORT"),
              ("C3", "USD", "LONG_SHORT"), ("C4", "EUR", "LONG_ONLY")]
INSTRUMENTS = [("AAPL", "USD", "Technology", "US", "EQUITY", 1, 190.0),
               ("XOM", "USD", "Energy", "US", "EQUITY", 1, 110.0),
               ("SAP", "EUR", "Technology", "DE", "EQUITY", 1, 120.0),
               ("ESZ6", "USD", "Index", "US", "FUTURE", 50, 6000.0),
               ("BND", "USD", "Bonds", "US", "FIXED_INCOME", 1, 98.5)]
MARGIN = {"EQUITY": (0.50, 0.25, 0.50, 0.30), "FUTURE": (0.10, 0.08, 0.10, 0.08), "FIXED_INCOME": (0.20, 0.10, 0.20, 0.10)}
KINDS = ["BUY", "BUY", "SELL", "SELL", "SHORT", "COVER"]


class CrashRun:
    def __init__(self, tmp_path, seed: int, log=print):
        self.tmp = tmp_path
        self.rng = random.Random(seed)
        self.model = ReferenceBook()
        self.fills: dict[tuple[str, str], Decimal] = {}
        self.prices = {i[0]: i[6] for i in INSTRUMENTS}
        self.data_dir = str(tmp_path / "data")
        self.daemon: DaemonProcess | None = None
        self.client: Client | None = None
        self.n_keys = 0
        self.stats = {"kills": 0, "acked_requests": 0, "acked_updates": 0, "retried_after_kill": 0,
                      "rejected_rows": 0}
        self.log = log
        self.seed = seed

    # ------------------------------------------------------------ daemon
    def start(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()  # reaps a killed one and closes its log
        self.daemon = DaemonProcess(self.tmp, "tcp", data_dir=self.data_dir,
                                    extra=["--set", "journal.checkpoint_interval_s=0.2", "--set", "engine.events=false"])
        self.daemon.wait_ready()
        if self.client:
            self.client.close()
        self.client = Client(self.daemon.command, timeout=0.5, retries=0)

    # ------------------------------------------------------------ requests
    def key(self) -> str:
        self.n_keys += 1
        return f"crash-{self.seed}-{self.n_keys}"

    def call(self, req):
        """Send until a reply comes back, restarting the daemon when it died. Returns the reply."""
        body_retry = False
        while True:
            try:
                reply = self.client.call(req)
                if body_retry:
                    self.stats["retried_after_kill"] += 1
                return reply
            except TimeoutError:
                if self.daemon.proc.poll() is None:
                    continue  # slow, not dead: same bytes again
                self.start()
                body_retry = True

    def setup(self) -> None:
        c = self.call
        c(m.FxTicks(self.key(), [m.FxRate("EUR", 1.1)]))
        self.model.fx_tick("EUR", 1.1)
        c(m.InstrumentUpsert(self.key(), [m.Instrument(i, ccy, sec, cty, ac, mult, MARGIN[ac])
                                          for i, ccy, sec, cty, ac, mult, _ in INSTRUMENTS]))
        for i, ccy, sec, cty, ac, mult, _ in INSTRUMENTS:
            self.model.upsert_instrument(i, ccy, sec, cty, ac, mult, MARGIN[ac])
        for pid, base, ptype in PORTFOLIOS:
            c(m.PortfolioUpsert(self.key(), m.Portfolio(pid, base_currency=base, portfolio_type=ptype)))
            self.model.upsert_portfolio(pid, base, ptype == "LONG_ONLY")
            self.cash(pid, base, "DEPOSIT", 5_000_000.0)
        self.ticks()

    def cash(self, pid, ccy, kind, amount) -> None:
        r = self.call(m.CashFlowRequest(self.key(), f"cf{self.n_keys}", pid, amount, ccy, kind))
        want = self.model.cash_flow(pid, ccy, kind, amount).reason
        got = "OK" if isinstance(r, m.Ack) else r.code
        assert got == want, (pid, ccy, kind, amount, got, want, self.seed)
        self.stats["acked_requests"] += 1

    def ticks(self) -> None:
        chosen = self.rng.sample(list(self.prices), self.rng.randint(1, 3))
        ticks = []
        for i in chosen:
            self.prices[i] = round(max(1.0, self.prices[i] * (1 + self.rng.gauss(0, 0.01))), 2)
            ticks.append(m.PriceTick(i, self.prices[i]))
        r = self.call(m.PriceTicks(self.key(), ticks))
        assert isinstance(r, m.Ack) and not r.result["rejected"], r
        for t in ticks:
            assert self.model.price_tick(t.instrument_id, t.price, 0) == "OK"
        self.stats["acked_requests"] += 1

    def batch(self) -> None:
        rows = []
        for _ in range(self.rng.randint(1, 40)):
            pid = self.rng.choice(PORTFOLIOS)[0]
            iid = self.rng.choice(INSTRUMENTS)[0]
            kind = self.rng.choice(KINDS)
            qty = float(self.rng.randint(1, 200)) if self.rng.random() < 0.9 else self.rng.randint(1, 400) / 4
            px = round(self.prices[iid] * (1 + self.rng.gauss(0, 0.002)), 2)
            fee = 0.0 if self.rng.random() < 0.7 else round(self.rng.uniform(0, 5), 2)
            rows.append(m.PositionUpdate(pid, f"{pid}-{iid}", iid, qty, px, kind, fee))
        r = self.call(m.PositionUpdateBatch(self.key(), rows))
        assert isinstance(r, m.BatchResponse), r
        codes = {e.index: e.code for e in r.rejected}
        for j, u in enumerate(rows):
            self.model.open_position(u.portfolio_id, u.position_id, u.instrument_id)
            res = self.model.trade(u.transaction_type, u.portfolio_id, (u.portfolio_id, u.position_id),
                                   u.quantity_change, u.price, u.fee, 0)
            got = codes.get(j, "OK")
            assert got == res.reason, (j, u, got, res.reason, self.seed)
            if res.reason == "OK":
                sign = 1 if u.transaction_type in ("BUY", "COVER") else -1
                k = (u.portfolio_id, u.position_id)
                self.fills[k] = self.fills.get(k, Decimal(0)) + sign * Decimal(repr(u.quantity_change))
                self.stats["acked_updates"] += 1
            else:
                self.stats["rejected_rows"] += 1
        self.stats["acked_requests"] += 1

    def step(self) -> None:
        x = self.rng.random()
        if x < 0.75:
            self.batch()
        elif x < 0.87:
            pid, base, _ = self.rng.choice(PORTFOLIOS)
            kind = self.rng.choice(["DEPOSIT", "WITHDRAWAL", "DIVIDEND", "INTEREST", "FEE"])
            self.cash(pid, self.rng.choice([base, "USD"]), kind, round(self.rng.uniform(1, 50_000), 2))
        else:
            self.ticks()

    # ------------------------------------------------------------ the run
    def run(self, kill_points: int, min_updates: int = 0, max_delay: float = 0.4) -> dict:
        try:
            return self._run(kill_points, min_updates, max_delay)
        finally:  # on failure too: no live daemon or open socket outlives the run
            if self.client:
                self.client.close()
            if self.daemon:
                self.daemon.stop()

    def _run(self, kill_points: int, min_updates: int, max_delay: float) -> dict:
        self.start()
        self.setup()
        t0 = time.time()
        for k in range(kill_points):
            timer = threading.Timer(self.rng.uniform(0.01, max_delay), self.kill_if_alive, args=(self.daemon,))
            timer.start()
            pid = self.daemon.proc.pid
            while self.daemon.proc.pid == pid and self.daemon.proc.poll() is None:
                self.step()
            timer.join()
            if self.daemon.proc.pid == pid:  # it died while idle between requests: bring it back
                self.start()
        while self.stats["acked_updates"] < min_updates:
            self.step()
        self.daemon.stop()
        self.start()  # recovery once more, then compare
        self.compare()
        self.stats["seconds"] = time.time() - t0
        return self.stats

    def kill_if_alive(self, daemon: DaemonProcess) -> None:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGKILL)
            self.stats["kills"] += 1

    def compare(self) -> None:
        for pid, base, _ in PORTFOLIOS:
            st = self.client.state(pid)
            want = self.model.view(pid)
            got_pos = {p.position_id: p for p in st.positions}
            held = {p.position_id: p for p in self.model.held(pid)}
            assert set(k for k, p in got_pos.items() if p.quantity != 0) == set(held), (pid, sorted(got_pos), sorted(held))
            for pos_id, p in held.items():
                g = got_pos[pos_id]
                assert Decimal(repr(g.quantity)) == p.qty, (pid, pos_id, g.quantity, p.qty)
                assert round(g.realized_pnl * 100) == int(p.realized * 100), (pid, pos_id, g.realized_pnl, p.realized)
                assert self.fills.get((pid, pos_id), Decimal(0)) == p.qty, "positions = sum of acknowledged fills"
            model_cash = {c: v for c, v in self.model.portfolios[pid].cash.items() if v != 0}
            assert {c: round(v * 100) for c, v in st.cash.items()} == {c: int(v * 100) for c, v in model_cash.items()}, pid
            assert st.portfolio_state.position_count == want["position_count"]
            bound = self.model.error_bounds(pid)
            slack = (bound["cash"] + bound["positions"]) / 100 + 0.01
            assert abs(Decimal(repr(st.portfolio_state.total_value)) - want["total_value"]) <= Decimal(repr(slack)), pid


def run_crash_test(tmp_path, kill_points: int, seed: int | None = None, min_updates: int = 0, log=print) -> dict:
    seed = seed if seed is not None else random.randrange(1 << 30)
    log(f"crash test seed {seed}")
    return CrashRun(tmp_path, seed, log).run(kill_points, min_updates)


