"""The harness's section of RESULTS.md and its PNG plots, rendered from the run's record (a dict, the
JSON beside RESULTS.md): the issue's bars first, then one table per scenario, the in-process
comparison, the plots, and every step of every sweep.

Owns: ``render`` (markdown text; writes plots/<mode>-<book>-<scenario>-<shape>.png through
``plot``) and the ratio logic (a rate that hit the top of the ladder is a lower bound; a system that
failed the lowest rung has no rate, so a ratio against it is a lower bound too).
Runs on: the harness's main process. Imports: matplotlib (Agg; plots are skipped with a note when it
is missing), the standard library.
"""
from __future__ import annotations

import os

SCENARIOS = {
    "trades/single": "Trades, one update per frame",
    "trades/batch": "Trades, batch frames of 100 updates",
    "storm/batch": "Price-tick storm mixed with trades, batch frames",
    "storm/single": "Price-tick storm mixed with trades, one update or tick per frame",
    "cash/single": "Cash flows, one per frame",
}
ORDER = ["ours", "ours_nofsync", "ours_wb", "dict", "redis_always", "redis_everysec", "pg"]
COLORS = {"ours": "tab:blue", "ours_nofsync": "tab:cyan", "ours_wb": "tab:purple", "dict": "tab:orange",
          "redis_always": "tab:red", "redis_everysec": "salmon", "pg": "tab:green"}
TITLES = {"smoke": "## Harness, smoke run (python -m perf --smoke)",
          "quick": "## Harness, quick mode (python -m perf)",
          "full": "## Harness, full mode (python -m perf --full)"}
WHAT = {
    "trades": "random positions, 55% BUY / 45% SELL of 1-19 units at the instrument's price ± 0.2%",
    "storm": "9 frames in 10 are trades as above; every 10th is a PriceTicks frame (10 ticks in batch frames, 1 in "
             "single frames) on the 50 instruments held by the most portfolios; a tick counts as one update, and "
             "revalues every position on its instrument",
    "cash": "deposits (60%) and withdrawals (40%) of 1,000-50,000 in the portfolio's base currency",
}


def _n(x, unit: str = "") -> str:
    return "n/a" if x is None or x != x else f"{x:,.0f}{unit}"


def _sys(rec: dict, book: str, system: str) -> dict | None:
    return rec["systems"].get(f"{book}/{system}")


def _res(rec, book, system, scen):
    e = _sys(rec, book, system)
    return None if e is None else e.get("results", {}).get(scen)


def _rate(res: dict | None, key: str = "max_50ms"):
    """(value, qualifier): '≥' when the ladder's top passed, '<' when even the lowest rung failed."""
    if res is None or not res.get("steps"):
        return None, ""
    if res[key] is None:
        return res["steps"][0]["offered"], "<"
    top = res["limit"].startswith("ladder top") and res[key] == max(s["offered"] for s in res["steps"])
    return res[key], "≥" if top else ""


def ratio(ours: dict | None, theirs: dict | None, key: str = "max_50ms") -> tuple[str, float | None]:
    (a, qa), (b, qb) = _rate(ours, key), _rate(theirs, key)
    if a is None or b is None or qa == "<":
        return "n/a", None
    r = a / b
    bound = ">" if qb == "<" else "≥" if qa == "≥" else ""
    return f"{bound}{r:,.1f}×" if r >= 1 else f"{bound}{r:.2g}×", r


def _verdict(values: list[float | None], bar: float) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "not measured"
    return "meets" if all(v >= bar for v in vals) else "**misses**"


def bars(rec: dict) -> list[str]:
    books = sorted(rec["books"], key=lambda b: rec["books"][b]["slots"])
    main = books[0] if books else None
    out = ["| Bar (issue 6) | Measured | |", "|---|---|---|"]
    if main is None:
        return out
    for shape in ("single", "batch"):
        sc = f"trades/{shape}"
        ours, nof = _res(rec, main, "ours", sc), _res(rec, main, "ours_nofsync", sc)
        for mine, base, what in ((ours, "redis_always", "ours fsync=batch vs Redis appendfsync always"),
                                 (ours, "pg", "ours fsync=batch vs PostgreSQL synchronous_commit=on"),
                                 (nof, "redis_everysec", "ours fsync=off vs Redis appendfsync everysec")):
            theirs = _res(rec, main, base, sc)
            t, r = ratio(mine, theirs)
            (a, qa), (b, qb) = _rate(mine), _rate(theirs)
            out.append(f"| ≥ 10× updates/s at p99 ≤ 50 ms, {SCENARIOS[sc].lower()}: {what} | {t} "
                       f"({qa}{_n(a)} vs {qb}{_n(b)} updates/s) | {_verdict([r], 10)} |")
    dict_r, cells = [], []
    for book in books:
        for sc in SCENARIOS:
            t, r = ratio(_res(rec, book, "ours", sc), _res(rec, book, "dict", sc))
            if r is not None:
                dict_r.append(r)
                cells.append(f"{book} {sc} {t}")
    out.append(f"| Ahead of the dict keeper in every scenario (ours fsync=batch / dict, max rate at p99 ≤ 50 ms) | "
               f"{'; '.join(cells) or 'n/a'} | {_verdict(dict_r, 1.0 + 1e-9)} |")
    ip = rec.get("inprocess") or {}
    if "nautilus" in ip:
        nt = ip["nautilus"]["ns_per_fill"]
        per = {int(k): v for k, v in ip["ours_ns"].items()}
        cells = [f"{k} per call: {v:,.0f} ns ({nt / v:.1f}×)" for k, v in sorted(per.items())]
        out.append(f"| Ahead of nautilus_trader's per-fill cost (in process; nautilus_trader {nt:,.0f} ns/fill) | "
                   f"{'; '.join(cells)} | {_verdict([nt / per[max(per)]], 1.0 + 1e-9)} (batched); "
                   f"{'ahead' if nt > per[1] else '**not ahead**'} one fill per call |")
    else:
        out.append(f"| Ahead of nautilus_trader's per-fill cost | {ip.get('nautilus_error') or ip.get('nautilus_how', 'not run')} "
                   "| not measured |")
    missing = []
    for book in books:
        for system in ("ours", "ours_nofsync", "ours_wb"):
            e = _sys(rec, book, system)
            for sc, res in (e or {}).get("results", {}).items():
                if res.get("max_1ms") is None:
                    missing.append(f"{book} {system} {sc}")
    out.append(f"| Max rate at p99 ≤ 1 ms reported for every scenario | in the tables below; below the lowest rate "
               f"offered for: {', '.join(missing) or 'none'} | {'reported' if not missing else 'reported (some below the ladder)'} |")
    big = [b for b in books if rec["books"][b]["portfolios"] >= 10_000]
    fx = (_sys(rec, big[0], "ours") or {}).get("fixed_100k") if big else None
    if fx:
        ok = fx["ok50"] and fx["p99"] <= 50_000
        out.append(f"| 10,000 portfolios × 1,000 positions: p99 ≤ 50 ms at 100,000 updates/s offered (batch frames) | "
                   f"p99 {_n(fx['p99'])} µs, p99.9 {_n(fx['p999'])} µs, max {_n(fx['max'])} µs, achieved "
                   f"{_n(fx['achieved'])}/s, lost {fx['lost']} | {'meets' if ok else '**misses**'} |")
    else:
        out.append("| 10,000 portfolios × 1,000 positions: p99 ≤ 50 ms at 100,000 updates/s offered | not run in this mode "
                   "(`python -m perf --full`) | not measured |")
    return out


def scenario_table(rec: dict, book: str, sc: str) -> list[str]:
    rows = []
    ours = _res(rec, book, "ours", sc)
    for system in ORDER:
        e = _sys(rec, book, system)
        if e is None:
            continue
        res = e.get("results", {}).get(sc)
        if res is None:
            if e.get("skipped") and sc in ("trades/batch",):
                rows.append(f"| {e['label']} | {e['skipped']} | | | | | |")
            continue
        (a1, q1), (a50, q50) = _rate(res, "max_1ms"), _rate(res, "max_50ms")
        at = next((s for s in res["steps"] if s["ok50"] and s["offered"] == res["max_50ms"]), None)
        lat = f"{_n(at['p50'])} / {_n(at['p99'])} / {_n(at['p999'])} / {_n(at['max'])}" if at else "n/a"
        cpu = (f"{at['server_cpu']:.0%} / {at['client_cpu']:.0%} / {at['server_cpu'] * 1e6 / at['achieved']:,.1f}"
               if at else "n/a")
        rt = "" if system == "ours" else ratio(ours, res)[0]
        rows.append(f"| {e['label']} | {q1}{_n(a1)} | {q50}{_n(a50)} | {lat} | {cpu} | {res['limit']} | {rt} |")
    if not rows:
        return []
    return ["| System | Max updates/s at p99 ≤ 1 ms | Max updates/s at p99 ≤ 50 ms | At that rate: p50 / p99 / "
            "p99.9 / max latency, µs | Server / client CPU; server CPU µs per update | What limited it at the "
            "failing step | Ours (fsync=batch) / this |",
            "|---|---:|---:|---:|---:|---|---:|"] + rows


def plot(rec: dict, book: str, sc: str, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    drawn = False
    for system in ORDER:
        res = _res(rec, book, system, sc)
        if not res or not res.get("steps"):
            continue
        st = sorted({s["offered"]: s for s in res["steps"]}.values(), key=lambda s: s["offered"])  # a repeat wins
        x = [s["offered"] for s in st]
        label = (_sys(rec, book, system) or {}).get("label", system)
        ax.plot(x, [max(1, s["p99"]) for s in st], "-o", color=COLORS[system], label=f"{label}: p99", ms=4)
        ax.plot(x, [max(1, s["p50"]) for s in st], ":", color=COLORS[system], lw=1)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    for y, t in ((1_000, "1 ms (ours)"), (50_000, "50 ms (spec)")):
        ax.axhline(y, color="grey", lw=0.8, ls="--")
        ax.text(0.99, y * 1.1, t, color="grey", fontsize=8, ha="right", transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered updates/s (open loop)")
    ax.set_ylabel("latency from the intended send time, µs (solid p99, dotted p50)")
    ax.set_title(f"{SCENARIOS[sc]}: {book.replace('x', ' portfolios × ')} positions", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def render(rec: dict, out_dir: str) -> str:
    mode = rec["mode"]
    lines = [TITLES[mode], ""]
    lines += [f"- Date (UTC): {rec['date']}; commit {rec['commit']}; whole run {rec['wall_s']:.0f} s.",
              f"- Machine: {rec['machine']}. Load average at the end (1/5/15 min): {rec['load']}. The machine is "
              "shared with other work and noisy: read ratios and orders of magnitude, not one absolute time; "
              "rerun on a quiet machine before quoting figures.",
              f"- Command: `{rec['command']}`" + (" (entries of other runs are kept: each system's entry names its "
                                                  "own date and commit below)" if "--only" in rec["command"] or
                                                  "--books" in rec["command"] else ""),
              "- Method: open loop. W client processes (2 for ZeroMQ and Redis, 4 connections for PostgreSQL) send "
              "frames on one fixed schedule whatever the replies do; each frame's latency runs from its *intended* "
              "send time to its reply, so a stall is charged to every frame it delayed (no coordinated omission). "
              "HdrHistogram per frame, µs. A sweep offers rising rates, one bounded step each (schedule, then at "
              "most a few seconds for the last replies; a missing reply counts as lost), and stops at the first "
              "step that fails twice in a row (one repeat, since a burst of another process's work can fail a "
              "step on a shared machine): p99 > 50 ms, a frame lost, an error reply, or achieved < 90% of offered. "
              "'Max updates/s at p99 ≤ X' is the highest offered rate that passed with p99 ≤ X; the ladder's rungs "
              "bound its precision. Everything on loopback (tcp://127.0.0.1 for ZeroMQ too); servers "
              "started and stopped by the harness on ports of their own; client and server share the 2 cores.",
              f"- Workloads: trades: {WHAT['trades']}. Storm: {WHAT['storm']}. Cash flows: {WHAT['cash']}. "
              "The same trades (same seed) go to every system. Batch frames: ours and the dict keeper get "
              "PositionUpdateColumns of 100 (integer handles from `resolve`); Redis a pipeline of 200 "
              "HINCRBYFLOAT (qty and cost on the position's hash); PostgreSQL one transaction of 100 "
              "`UPDATE positions SET quantity = quantity + …, cost_basis = cost_basis + … WHERE slot = …`. "
              "Redis and PostgreSQL do far less per update than ours (no cash, P&L, exposures, margin, limits, "
              "events or idempotency), which favours them.",
              "- Systems: " + "; ".join(f"{e['label']} ({e['durability']})" for k, e in
                                        sorted(rec["systems"].items()) if k.startswith(next(iter(rec["books"]), ""))),
              ""]
    lines += ["### Against the bars", ""] + bars(rec) + [""]
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    for book in sorted(rec["books"], key=lambda b: rec["books"][b]["slots"]):
        bi = rec["books"][book]
        lines += [f"### {bi['portfolios']:,} portfolios × {bi['positions']:,} positions ({bi['slots']:,} positions, "
                  f"{bi['instruments']:,} instruments; the most-held instrument is in {bi['hot_holders']:,} "
                  "portfolios)", ""]
        for sc, title in SCENARIOS.items():
            table = scenario_table(rec, book, sc)
            if not table:
                continue
            lines += [f"**{title}**", ""] + table + [""]
            name = f"{mode}-{book}-{sc.replace('/', '-')}.png"
            if plot(rec, book, sc, os.path.join(out_dir, "plots", name)):
                lines += [f"![{title}, {book}](plots/{name})", ""]
    lines += inprocess_lines(rec.get("inprocess")) + details(rec)
    return "\n".join(lines) + "\n"


def inprocess_lines(ip: dict | None) -> list[str]:
    if not ip:
        return []
    out = ["### In-process cost per fill: ours against nautilus_trader", "",
           f"The same {ip['fills']:,} fills on {ip['positions']:,} positions. Ours: `apply_trades_nb` called from "
           "Python (perf/bench_kernels.py's book), which per fill moves quantity, cost, realized P&L, fees, cash, "
           "market value, five exposure dimensions, margin and the portfolio aggregates. nautilus_trader: "
           "`Position.apply(OrderFilled)` (events built before timing), which moves one position's quantity, "
           "average prices, realized P&L and commissions. Median of 3 repetitions.", "",
           "| Fills per call | Ours, ns per fill | nautilus_trader, ns per fill | nautilus / ours |", "|---:|---:|---:|---:|"]
    nt = ip.get("nautilus", {}).get("ns_per_fill")
    for k, v in sorted(((int(k), v) for k, v in ip["ours_ns"].items())):
        out.append(f"| {k:,} | {v:,.0f} | {_n(nt)} | {'n/a' if nt is None else f'{nt / v:.1f}×'} |")
    out += ["", f"nautilus_trader: {ip.get('nautilus_how')}." + (f" Error: `{ip['nautilus_error'][-300:]}`"
                                                                    if ip.get("nautilus_error") else ""), ""]
    return out


def details(rec: dict) -> list[str]:
    out = ["### Every step", "", "<details><summary>per system and scenario: offered → achieved updates/s, latency "
           "p50/p99/p99.9/max µs, lost, server/client CPU, client send lag p99 µs, business rejections, the "
           "machine's 1-minute load average; 'again': a failed step repeated once</summary>", ""]
    for key in sorted(rec["systems"], key=lambda k: (k.split("/")[0], ORDER.index(k.split("/")[1]))):
        e = rec["systems"][key]
        head = f"- **{key}** ({e['label']}; {e['date']} UTC, commit {e['commit']})"
        if e.get("skipped"):
            out.append(f"{head}: skipped: {e['skipped']}")
            continue
        facts = [f"ready in {e['ready_s']:.1f} s, book loaded in {e['build_s']:.1f} s, RSS {e['rss_built'] / 2**20:,.0f} "
                 f"MiB after loading" if "build_s" in e else "never ready"]
        if e.get("rss_end"):
            facts.append(f"{e['rss_end'] / 2**20:,.0f} MiB at the end")
        if e.get("sink_catch_up_s") is not None:
            facts.append(f"write-behind caught up with the build in {e['sink_catch_up_s']:.1f} s")
        if e.get("error"):
            facts.append(f"**FAILED**: `{e['error'][-400:]}`")
        out.append(f"{head}: " + ", ".join(facts) + ".")
        for sc, res in e.get("results", {}).items():
            steps = "; ".join(
                ("again " if s.get("retry") else "")
                + f"{s['offered']:,.0f}→{s['achieved']:,.0f}: {_n(s['p50'])}/{_n(s['p99'])}/{_n(s['p999'])}/{_n(s['max'])}"
                + (f", lost {s['lost']:,}" if s["lost"] else "") + (f", err {s['errors']}" if s["errors"] else "")
                + f", cpu {s['server_cpu']:.0%}/{s['client_cpu']:.0%}, lag {_n(s['lag_p99'])}"
                + (f", rejected {s['rejected']:,}" if s.get("rejected") else "")
                + (f", sink lag {s['sink_lag']:,} records" if s.get("sink_lag") is not None else "")
                + (f", load {s['load1']:.1f}" if "load1" in s else "") for s in res["steps"])
            out.append(f"  - {sc}: {steps}.")
        if e.get("fixed_100k"):
            s = e["fixed_100k"]
            out.append(f"  - 100,000 updates/s held for {s['seconds']:g} s: p50/p99/p99.9/max {_n(s['p50'])}/"
                       f"{_n(s['p99'])}/{_n(s['p999'])}/{_n(s['max'])} µs, achieved {_n(s['achieved'])}/s, lost "
                       f"{s['lost']}, server CPU {s['server_cpu']:.0%}.")
    return out + ["", "</details>", ""]
