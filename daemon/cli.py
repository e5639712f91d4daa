"""The ``pstate`` command: run the daemon, run the demo, query a running daemon.

Owns: argument parsing and logging set-up; nothing else.
Runs on: the main thread. Imports: daemon, transport.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .config import SettingsError, describe, load


def _settings_help() -> str:
    rows = describe()
    width = max(len(r[0]) for r in rows)
    lines = ["settings (TOML file sections, PSTATE_<SECTION>__<FIELD> variables, or --set section.field=value):"]
    for name, default, text in rows:
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pstate", description="Real-time portfolio state daemon.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground",
                         description="Run the daemon: commands on a ZeroMQ ROUTER socket, events on a PUB socket. "
                                     "With no settings it needs no external service.",
                         epilog=_settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", help="TOML settings file")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one setting")
    run.add_argument("--command", help="shortcut for --set transport.command_endpoint=...")
    run.add_argument("--events", help="shortcut for --set transport.event_endpoint=...")
    run.add_argument("--takeover", action="store_true",
                     help="shortcut for --set sink.takeover=true: a new host with an empty journal loads its book "
                          "from the PostgreSQL command side before serving (see sink.takeover)")

    demo = sub.add_parser("demo", help="start a daemon, stream a synthetic book through it, report")
    demo.add_argument("--portfolios", type=int, default=1000)
    demo.add_argument("--instruments", type=int, default=5000)
    demo.add_argument("--positions", type=int, default=20, help="positions per portfolio")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to stream trades and ticks")
    demo.add_argument("--batch", type=int, default=1000, help="updates per frame")

    st = sub.add_parser("state", help="print one portfolio's state from a running daemon")
    st.add_argument("portfolio_id")
    st.add_argument("--command", default="tcp://127.0.0.1:7755")

    vf = sub.add_parser("verify", help="compare the store and Redis (and a running daemon) with the journal",
                        description="Compare the store's command side with the state rebuilt from the journal at "
                                    "the store's watermark, Redis with the journal's end, and (--command) a running "
                                    "daemon's memory. Lists every difference; exit status 1 if any. Takes the "
                                    "daemon's settings (same --config / --set).")
    vf.add_argument("--config", help="TOML settings file (the daemon's)")
    vf.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    vf.add_argument("--command", default=None, help="also compare this running daemon's memory")

    mt = sub.add_parser("metrics", help="print a running daemon's metrics")
    mt.add_argument("--command", default="tcp://127.0.0.1:7755")

    args = ap.parse_args(argv)
    if args.cmd == "run":
        overrides = list(args.set)
        if args.command:
            overrides.append(f"transport.command_endpoint={args.command}")
        if args.events:
            overrides.append(f"transport.event_endpoint={args.events}")
        if args.takeover:
            overrides.append("sink.takeover=true")
        try:
            settings = load(args.config, overrides)
        except (SettingsError, OSError) as e:
            print(f"pstate: {e}", file=sys.stderr)
            return 2
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from .server import run as serve

        return serve(settings)
    if args.cmd == "verify":
        import json

        try:
            settings = load(args.config, list(args.set))
        except (SettingsError, OSError) as e:
            print(f"pstate: {e}", file=sys.stderr)
            return 2
        logging.basicConfig(level="WARNING", stream=sys.stderr)
        from .verify import verify

        differences, summary = verify(settings, args.command)
        print(json.dumps({**summary, "differences": len(differences)}))
        for d in differences:
            print(d)
        return 1 if differences else 0
    if args.cmd == "demo":
        from .demo import demo as run_demo

        return run_demo(args)
    from portfolio_state.transport.client import Client
    import msgspec

    with Client(args.command) as c:
        reply = c.state(args.portfolio_id) if args.cmd == "state" else c.metrics()
    print(msgspec.json.format(msgspec.json.encode(reply), indent=2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
