"""The performance harness: ``python -m perf`` (quick), ``--full``, ``--smoke``, ``--soak MINUTES``.

Owns: the plans (which systems run which scenario, shape and book per mode), the run (one system
at a time, each started, loaded, swept and stopped; the daemon's variants share one journal
directory, so a restart with other settings recovers the book instead of rebuilding it), the
record (a JSON file per mode beside RESULTS.md, merged by (book, system, scenario, shape) so that
a partial run with --only replaces just its own entries), and then RESULTS.md's section and the
PNG plots, rendered from that record by perf/report.py.
Runs on: the main process; load generators and servers are children (perf/loadgen.py, perf/servers.py).
Imports: numpy, perf/*, the standard library.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import report  # noqa: E402
import results  # noqa: E402
import sweep as sw  # noqa: E402
import targets as tg  # noqa: E402
import workload as wl  # noqa: E402
from results import Terminated as _Terminated  # noqa: E402
from results import log  # noqa: E402
from results import on_sigterm as _on_sigterm  # noqa: E402
from servers import pg_bin, redis_available  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N_INSTRUMENTS = 5000
#: mode -> step seconds, drain bound, refine, books [(portfolios, positions)], templates (single, batch frames)
MODES = {
    "smoke": {"seconds": 0.5, "drain": 3.0, "refine": False, "books": [(50, 20)], "templates": (2000, 200)},
    "quick": {"seconds": 1.0, "drain": 3.0, "refine": False, "books": [(1000, 1000)], "templates": (20_000, 2000)},
    "full": {"seconds": 3.0, "drain": 10.0, "refine": True, "books": [(1000, 1000), (10_000, 1000)],
             "templates": (50_000, 4000)},
}
_CORE = [("trades", "single"), ("trades", "batch")]
_ALL = _CORE + [("storm", "batch"), ("cash", "single")]


def plan(mode: str, n_pf: int) -> dict[str, list[tuple[str, str]]]:
    """system -> [(scenario, shape)] for one book; order = run order."""
    if mode == "smoke":
        return {"ours": [("trades", "batch")], "dict": [("trades", "batch")]}
    if n_pf >= 10_000:  # the 10M-position book: ours and the dict keeper (the baselines' load alone takes minutes)
        return {"ours": _ALL, "ours_nofsync": _CORE, "dict": _CORE}
    extra = [("storm", "single")] if mode == "full" else []
    # the first daemon variant builds the book into the shared journal, the next ones recover it; the
    # write-behind variant goes first, so that its sink does not start by copying the others' history
    return {"ours_wb": _CORE if mode == "full" else [("trades", "batch")], "ours": _ALL + extra, "ours_nofsync": _CORE,
            "dict": _ALL + extra, "redis_everysec": _CORE, "redis_always": _CORE, "pg": _CORE}


def run_book(mode: str, n_pf: int, n_pos: int, args, daemon_cmd: list[str], tmp: str, rec: dict) -> None:
    cfg = MODES[mode]
    t0 = time.perf_counter()
    book = wl.make_book(n_pf, n_pos, N_INSTRUMENTS if n_pos > 100 else max(200, 2 * n_pos),
                        np.random.default_rng(tg.SEED), popular=True)
    frames = tg.Frames(book, *cfg["templates"])
    bkey = f"{n_pf}x{n_pos}"
    rec["books"][bkey] = {"portfolios": n_pf, "positions": n_pos, "slots": len(book.refs),
                          "instruments": book.n_instruments, "hot_holders": int(book.holders.max())}
    log(f"book {bkey}: {len(book.refs):,} positions, {book.n_instruments:,} instruments (the most-held one in "
        f"{int(book.holders.max()):,} portfolios), made in {time.perf_counter() - t0:.1f} s")
    sink = tg.sink_available(daemon_cmd)
    rec["sink_available"] = sink
    systems = plan(mode, n_pf)
    if args.only:
        systems = {k: v for k, v in systems.items() if k in args.only}
    data_dir = os.path.join(tmp, f"journal-{bkey}")
    handles = None
    redis = None  # one Redis server serves both appendfsync policies (CONFIG SET between them)
    order = list(systems)
    for i, (system, work) in enumerate(systems.items()):
        entry = {"label": tg.SYSTEMS[system][0], "durability": tg.SYSTEMS[system][2], "book": bkey,
                 "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                 "commit": results.git_commit(), "results": {}}
        rec["systems"][f"{bkey}/{system}"] = entry
        skip = _unavailable(system, sink)
        if skip:
            entry["skipped"] = skip
            log(f"[{system}] skipped: {skip}")
            continue
        log(f"[{system}] starting ({tg.SYSTEMS[system][0]})")
        target = None
        t_sys = time.perf_counter()
        try:
            if redis is not None and system.startswith("redis"):
                target, build_s = redis, 0.0
                target.switch(system)
            else:
                target, build_s = _start(system, frames, tmp, daemon_cmd, data_dir, handles, sink)
            if system.startswith("ours"):
                handles = target.handles
            if system == "ours_wb":
                entry["sink_catch_up_s"] = target.wait_sink(600)
                log(f"[{system}] write-behind caught up with the book's build in {entry['sink_catch_up_s']:.1f} s")
            entry.update(ready_s=target.ready_s, build_s=build_s, rss_built=target.rss_built)
            log(f"[{system}] ready in {target.ready_s:.1f} s, book loaded in {build_s:.1f} s, "
                f"RSS {target.rss_built / 2**20:,.0f} MiB")
            for scenario, shape in work:
                got = sw.sweep(target, scenario, shape, mode, cfg["seconds"], cfg["drain"], log, cfg["refine"])
                if got is not None:
                    entry["results"][f"{scenario}/{shape}"] = got
                    log(f"[{system} {scenario}/{shape}] max rate at p99 ≤ 1 ms: {_fmt(got['max_1ms'])}, "
                        f"at p99 ≤ 50 ms: {_fmt(got['max_50ms'])} ({got['limit']})")
            if n_pf >= 10_000 and system == "ours":
                entry["fixed_100k"] = sw.fixed(target, "trades", "batch", 100_000, 3 * cfg["seconds"], cfg["drain"],
                                               log)
            entry["rss_end"] = target.server.rss()
        except (_Terminated, KeyboardInterrupt):
            if target is not None:
                target.stop()
            raise
        except Exception as e:  # recorded and reported; the other systems still run
            entry["error"] = f"{type(e).__name__}: {e}"[:2000]
            log(f"[{system}] FAILED: {entry['error']}")
        finally:
            entry["seconds"] = time.perf_counter() - t_sys
        keep = (target is not None and system.startswith("redis") and "error" not in entry
                and i + 1 < len(order) and order[i + 1].startswith("redis"))
        redis = target if keep else None
        if target is not None and not keep:
            target.stop()


def _unavailable(system: str, sink: bool) -> str | None:
    if system == "ours_wb" and not sink:
        return "not available in this build (`pstate run --help` lists no sink.backend setting)"
    if system.startswith("redis") and not redis_available():
        return "redis-server is not installed"
    if system == "pg" or system == "ours_wb":
        if not pg_bin():
            return "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed"
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            return "asyncpg is not installed"
    return None


def _start(system, frames, tmp, daemon_cmd, data_dir, handles, sink):
    t0 = time.perf_counter()
    wire = tg.SYSTEMS[system][1]
    if wire == "redis":
        target = tg.RedisTarget(system, frames, tmp)
    elif wire == "pg":
        target = tg.PgTarget(system, frames, tmp)
    elif system == "dict":
        target = tg.ZmqTarget(system, frames, tmp, None)
    else:
        settings = ["journal.fsync=off" if system == "ours_nofsync" else "journal.fsync=batch"]
        extra = None
        if system == "ours_wb":
            extra = tg.WriteBehindServers(tmp)
            settings += extra.settings()
        elif sink:  # sink off (the default backend would be DuckDB, embedded)
            settings.append("sink.backend=none")
        target = tg.ZmqTarget(system, frames, tmp, daemon_cmd, settings, data_dir,
                              handles if os.path.isdir(data_dir) else None, progress=_progress(system), extra=extra)
    return target, time.perf_counter() - t0 - target.ready_s


def _progress(system: str):
    last = [time.perf_counter()]

    def p(k, n):
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            log(f"[{system}] building the book: {k:,}/{n:,} positions")
    return p


def _fmt(x) -> str:
    return "none (below the lowest rate)" if x is None else f"{x:,.0f} updates/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="full mode: also 10,000 portfolios x 1,000 positions, longer "
                                                      "steps, finer ladders (30-40 minutes)")
    g.add_argument("--smoke", action="store_true", help="the smallest scenario only (ours and the dict keeper, "
                                                       "trades in batch frames, a tiny book): proves the harness works")
    g.add_argument("--soak", type=float, metavar="MINUTES", help="soak: ours at --soak-fraction of its max rate for "
                                                                 "MINUTES; RSS over time and p99 per minute")
    g.add_argument("--render", choices=("quick", "full"), help="measure nothing: rewrite that mode's section of "
                                                            "RESULTS.md and its plots from its recorded JSON")
    ap.add_argument("--soak-fraction", type=float, default=0.5)
    ap.add_argument("--soak-rate", type=float, help="soak at this many updates/s instead of a fraction of a sweep's max")
    ap.add_argument("--only", help="comma-separated systems to run (the others keep their recorded results): "
                                   + ", ".join(tg.SYSTEMS) + ", inprocess (ours against nautilus_trader)")
    ap.add_argument("--books", help="comma-separated books to run, e.g. 10000x1000 (default: the mode's)")
    ap.add_argument("--out", help="directory for the record, RESULTS.md and plots (default: perf/, i.e. the repo's)")
    ap.add_argument("--daemon-cmd", metavar="CMD", help="command that runs the daemon's CLI (default: this Python, "
                                                        "-m portfolio_state.daemon.cli)")
    args = ap.parse_args(argv)
    mode = "full" if args.full else "smoke" if args.smoke else "soak" if args.soak else "quick"
    args.only = set(args.only.split(",")) if args.only else None
    if args.only and not args.only <= set(tg.SYSTEMS) | {"inprocess"}:
        ap.error(f"--only: systems from {', '.join(tg.SYSTEMS)}, inprocess")
    out = os.path.abspath(args.out or HERE)
    os.makedirs(out, exist_ok=True)
    daemon_cmd = shlex.split(args.daemon_cmd) if args.daemon_cmd else [sys.executable, "-m", "portfolio_state.daemon.cli"]
    if args.render:
        rec = _load(out, args.render)
        for key, e in rec["systems"].items():  # labels as this version words them
            e["label"], _, e["durability"] = tg.SYSTEMS[key.split("/")[1]]
        text = report.render(rec, out)
        results.write_section(text, path=os.path.join(out, "RESULTS.md"))
        log(f"rewrote the section '{text.splitlines()[0]}' of {os.path.join(out, 'RESULTS.md')} and its plots")
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = "python -m perf" + ("" if argv is None and len(sys.argv) < 2 else " " + " ".join(
        sys.argv[1:] if argv is None else argv))
    t_run = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="pstate-perf-")
    try:
        if mode == "soak":
            import soak

            rec = soak.run(args, daemon_cmd, tmp, log)
        else:
            rec = _load(out, mode) if args.only or args.books else {"mode": mode, "books": {}, "systems": {}}
            cfg = MODES[mode]
            books = cfg["books"]
            if args.books:
                books = [tuple(int(x) for x in b.split("x")) for b in args.books.split(",")]
            for n_pf, n_pos in books:
                run_book(mode, n_pf, n_pos, args, daemon_cmd, tmp, rec)
            if mode != "smoke" and (not args.only or "inprocess" in args.only):
                log("in-process cost per fill: ours (kernel) against nautilus_trader")
                import inprocess

                n_fills = 100_000 if mode == "quick" else 1_000_000
                rec["inprocess"] = inprocess.compare(20 if mode == "quick" else 100, 1000, n_fills)
                log(json.dumps(rec["inprocess"]))
        rec.update(mode=mode, command=command, machine=results.machine(), commit=results.git_commit(),
                   date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                   load="/".join(f"{x:.2f}" for x in os.getloadavg()), wall_s=time.perf_counter() - t_run)
    except (_Terminated, KeyboardInterrupt):
        log("interrupted: servers stopped, nothing written")
        return 130
    finally:
        if os.environ.get("PERF_KEEP_TMP"):  # the servers' logs, for a look after the run
            log(f"kept {tmp} (PERF_KEEP_TMP)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    path = os.path.join(out, f"harness-{mode}.json")
    with open(path + ".tmp", "w") as f:  # a failed dump must not cut short the runs it merged in
        json.dump(rec, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    if mode == "soak":
        import soak

        text = soak.render(rec, out)
    else:
        text = report.render(rec, out)
    results.write_section(text, path=os.path.join(out, "RESULTS.md"))
    log(text)
    log(f"wrote {os.path.join(out, 'RESULTS.md')} (section '{text.splitlines()[0]}') and its plots in "
        f"{os.path.join(out, 'plots')}; whole run {time.perf_counter() - t_run:.0f} s")
    return 1 if any(e.get("error") for e in rec.get("systems", {}).values()) else 0


def _load(out: str, mode: str) -> dict:
    path = os.path.join(out, f"harness-{mode}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"mode": mode, "books": {}, "systems": {}}
