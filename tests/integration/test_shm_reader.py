"""A second process reads portfolios consistently from shared memory while the writer runs.

The reader checks, on every snapshot, invariants that any torn read would break
(aggregates equal the sum of the positions it copied), across trades, price
ticks and array growth (a new shared-memory generation) happening meanwhile.
"""
import json
import subprocess
import sys
import textwrap
import time

import numpy as np

from portfolio_state.daemon.book import Capacity
from portfolio_state.daemon.reader import BookReader
from portfolio_state.kernels import TradeKind
from tests.bookfactory import F64, I8, I32, I64, make_book

READER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from portfolio_state.daemon.reader import BookReader
    name, want, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    r = BookReader(name)
    print("attached", flush=True)  # the writer grows the arrays only after this line
    ok = bad = retries = 0
    gens = set()
    end = time.time() + seconds
    ids = ["P0", "P1", "P2", "P3"]
    errors = []
    # a count of checked snapshots (not a span of time), and at least one growth seen while attached
    while (ok < want or len(gens) < 2) and time.time() < end:
        for pid in ids:
            s = r.snapshot(pid)
            gens.add(r.generation)
            retries += s.retries
            pf, pos = s.portfolio, s.positions
            mv = pos["mv"].astype(np.int64)
            checks = [
                int(pf["long_mv"]) == int(mv[mv > 0].sum()),
                int(pf["short_mv"]) == int(mv[mv < 0].sum()),
                int(pf["position_count"]) == int((pos["qty"] != 0).sum()),
                int(pf["n_slots"]) == len(s.slots),
                int(s.exposures["sector"].sum()) == int(mv.sum()),
                int(s.exposures["currency"].sum()) == int(mv.sum()) + int(pf["cash_base"]),
                int(s.heads["inst_exp"].sum()) == int(mv.sum()),
            ]
            if all(checks):
                ok += 1
            else:
                bad += 1
                if len(errors) < 5:
                    errors.append([pid, checks])
    print(json.dumps({"ok": ok, "bad": bad, "retries": retries, "generations": len(gens), "errors": errors}))
    """
)


def test_second_process_reads_consistent_snapshots_while_writer_updates(shm_name):
    book = make_book(Capacity(portfolios=4, slots=64, instruments=8), shm_name=shm_name, n_portfolios=4)
    try:
        rng = np.random.default_rng(7)
        n_inst = len(book.instrument_ids)
        for n_pos in range(40):
            book.slot(n_pos % 4, f"pos{n_pos}", n_pos % n_inst)
        n_pos = 40
        proc = subprocess.Popen([sys.executable, "-c", READER, shm_name, "200", "60"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "attached"  # growth before attach would prove nothing
        end = time.time() + 120  # safety bound; the writer runs for as long as the reader reads
        while proc.poll() is None and time.time() < end:
            # new positions now and then: slot lists relocate and the arrays grow (new generations)
            if n_pos < 4000 and rng.random() < 0.3:
                for _ in range(8):
                    p = int(rng.integers(0, 4))
                    book.slot(p, f"pos{n_pos}", int(rng.integers(0, n_inst)))
                    n_pos += 1
            slots = rng.integers(0, len(book.slot_ids), 200).astype(I32)
            portfolios = book.a.positions["portfolio"][slots].astype(I32)
            kinds = rng.choice([TradeKind.BUY, TradeKind.SELL], 200).astype(I8)
            book.apply_trades(kinds, portfolios, slots, rng.integers(1, 100, 200).astype(F64),
                              rng.uniform(50, 500, 200), np.zeros(200), np.full(200, 5, I64))
            book.apply_prices(rng.integers(0, n_inst, 20).astype(I32), rng.uniform(50, 500, 20), np.full(20, 6, I64))
        out, _ = proc.communicate(timeout=90)
        result = json.loads(out)
        print(result)
        assert proc.returncode == 0
        assert result["bad"] == 0, result["errors"]
        assert result["ok"] >= 200
        assert result["generations"] >= 2, "growth must have happened while the reader was attached"
        assert book.audit() == []
        # the reader's view equals the writer's
        snap = BookReader(shm_name).snapshot("P0")
        assert snap.state["total_value"] == (
            int(book.a.portfolios[0]["cash_base"]) + int(book.a.portfolios[0]["long_mv"]) + int(book.a.portfolios[0]["short_mv"])
        ) / 100
    finally:
        book.arena.close()
