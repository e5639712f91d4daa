"""Takeover: a daemon on a new host, with an empty journal, loads its book from the PostgreSQL command side.

Owns: ``discard_unfinished(settings)`` (before recovery) and ``take_over(settings,
engine)`` (after recovery, before warm-up and the sockets): with ``sink.takeover``
on, ``sink.backend=postgres`` and a journal that has never recorded anything, it
reads the command side (persistence.pgtakeover), turns it into the messages a
client would send (daemon.takeover_plan) and pushes them through the engine's
own apply + journal path, then checks the book against the rows, syncs the
journal and records in PostgreSQL that this journal's records so far are already
there. From then on the journal is the source of truth: a restart recovers from
it and never loads again (a journal that holds anything is never loaded over).
A takeover is all or nothing: a marker file (``<data_dir>/takeover.pending``)
lives from the first record to the end, and a start that finds it discards the
partial journal and loads again (or, with takeover off, refuses to start).
Failures raise ``TakeoverError``; ``server.run`` exits 4 on them. ADR 0011.
Runs on: the main thread at start-up. Imports: daemon, persistence, transport.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

import msgspec
import numpy as np

from portfolio_state.kernels import STATUS_NAMES
from portfolio_state.persistence.journal import fsync_dir
from portfolio_state.persistence.pgtakeover import CommandSideError, read_command_side, record_loaded, redact
from portfolio_state.transport import messages as m

from .config import Settings
from .events import EventBuilder
from .recovery import dirs
from .takeover_plan import TakeoverError, cash_flows, plan
from .writebehind import journal_id

log = logging.getLogger("pstate.takeover")

MARKER = "takeover.pending"
FRAMES_PER_BATCH = 64     # engine batches: each run of position batches is one RUN record of up to 128k rows
_replies = msgspec.msgpack.Decoder(m.Reply)

__all__ = ["TakeoverError", "discard_unfinished", "take_over"]


def discard_unfinished(settings: Settings) -> None:
    """Before recovery: a takeover that did not finish left a partial journal; drop it so the
    takeover runs again, or (takeover now off) refuse to start on half a book."""
    data = settings.journal.data_dir
    marker = os.path.join(data, MARKER) if data else ""
    if not marker or not os.path.exists(marker):
        return
    if not settings.sink.takeover:
        raise TakeoverError(f"an unfinished takeover left a partial journal in {data} ({marker} exists): start "
                            "with sink.takeover=true to load again, or empty the directory to start with no book")
    log.warning("an earlier takeover did not finish (%s): discarding its partial journal and loading again", marker)
    for d in dirs(settings):
        shutil.rmtree(d, ignore_errors=True)


def take_over(settings: Settings, engine) -> dict | None:
    """Load the book from the command side if this is a new host; a summary, or None if skipped."""
    cfg = settings.sink
    if not cfg.takeover:
        return None
    if engine.last_seq != 0:
        log.info("takeover skipped: the journal is not empty (last record %d), so it holds the book", engine.last_seq)
        return None
    if cfg.backend != "postgres":
        raise TakeoverError(f"sink.takeover needs sink.backend=postgres (it is {cfg.backend})")
    if engine.journal is None:
        raise TakeoverError("sink.takeover needs the journal (journal.data_dir is empty)")
    t0 = time.perf_counter()
    try:
        side = read_command_side(cfg.postgres_dsn)
    except CommandSideError as e:
        raise TakeoverError(str(e)) from None
    data = settings.journal.data_dir
    jid = journal_id(data)
    now = time.time_ns()
    p = plan(side, settings.book.pivot_currency, f"takeover:{jid}", now)
    _durable_file(os.path.join(data, MARKER))
    for name, msgs in p.stages:
        _apply(engine, name, msgs, now)
    _apply(engine, "cash", cash_flows(p, held_cash(engine.book), now), now)
    approximate = check(engine.book, p)
    if engine.last_seq:  # an empty command side journals nothing: the next start looks again
        engine.journal.sync()
        try:
            record_loaded(cfg.postgres_dsn, jid, engine.last_seq)
        except CommandSideError as e:
            raise TakeoverError(str(e)) from None
    os.unlink(os.path.join(data, MARKER))
    fsync_dir(data)
    # start-up publishes nothing, as after recovery: subscribers begin with a state request
    engine.events = EventBuilder(engine.book, settings.engine.revaluation_events)
    summary = {**p.counts, "commands": p.n, "journal_seq": engine.last_seq, "approximate_costs": approximate,
               "seconds": round(time.perf_counter() - t0, 3), "schema_version": side.schema_version,
               "source": {w["journal_id"]: w["seq"] for w in side.watermarks}}
    log.info("takeover from %s: %s", redact(cfg.postgres_dsn), summary)
    if side.schema_version < 4:
        log.warning("takeover: the command side (schema version %d) has no last prices or FX rates: market values "
                    "wait for the feeds", side.schema_version)
    return summary


def _apply(engine, stage: str, msgs: list, now: int) -> None:
    """Through the engine's own path, as a client's commands: journaled, then applied. Any refusal
    stops the takeover, naming the command."""
    codec = engine.codec
    for i in range(0, len(msgs), FRAMES_PER_BATCH):
        batch = msgs[i: i + FRAMES_PER_BATCH]
        replies = engine.handle([([], codec.encode(x)) for x in batch], now)
        for cmd, (_, body) in zip(batch, replies):
            why = _refusal(cmd, _replies.decode(body))
            if why:
                raise TakeoverError(f"{stage}: the engine refused {type(cmd).__name__} {_name(cmd)}: {why}")


def _refusal(cmd, reply) -> str | None:
    if isinstance(reply, m.ErrorReply):
        return f"{reply.code} {reply.message}"
    if isinstance(reply, m.BatchResponse) and reply.rejected:
        rows = cmd.updates
        return "; ".join(f"position {rows[r.index].position_id} of {rows[r.index].portfolio_id} "
                         f"({rows[r.index].transaction_type}): {r.code}" for r in reply.rejected[:5])
    if isinstance(reply, m.Ack) and reply.result.get("rejected"):
        return f"rejected {reply.result['rejected'][:5]}"
    return None


def _name(cmd) -> str:
    match cmd:
        case m.PositionStatusChange() | m.CashFlowRequest():
            return f"{getattr(cmd, 'position_id', getattr(cmd, 'cash_flow_id', ''))} of {cmd.portfolio_id}"
        case m.ExposureLimit():
            return f"{cmd.portfolio_id} {cmd.exposure_type} {cmd.category}"
        case m.PortfolioUpsert():
            return cmd.portfolio.portfolio_id
        case m.PositionUpdateBatch():
            return f"of {len(cmd.updates)} position rows"
    return cmd.key


def held_cash(book) -> dict:
    """(portfolio_id, currency) -> cents, every non-zero balance of the book."""
    c = book.a.cash[: len(book.portfolio_ids), : len(book.currency_ids)]
    return {(book.portfolio_ids.ids[p], book.currency_ids.ids[k]): int(c[p, k]) for p, k in zip(*np.nonzero(c))}


def check(book, p) -> int:
    """The loaded book against the rows: quantities, statuses, local costs and cash exactly (else
    TakeoverError); the base cost_basis exactly where the stored rates allow. Returns how many
    positions' cost_basis differs from the row (logged)."""
    a = book.a
    wrong, approximate = [], []
    for t in p.positions:
        s = book.slot_index.get((book.portfolio_ids.get(t.portfolio_id), t.position_id))
        got = None if s is None else (int(a.positions["qty"][s]), int(a.positions["cost"][s]),
                                      STATUS_NAMES[int(a.positions["status"][s])])
        if got != (t.qty, t.cost, t.status):
            wrong.append(f"position {t.position_id}: (qty, cost, status) {got}, want {(t.qty, t.cost, t.status)}")
        elif not t.exact:
            approximate.append(t.position_id)
    held = held_cash(book)
    for key in sorted(set(held) | set(p.cash)):
        if held.get(key, 0) != p.cash.get(key, 0):
            wrong.append(f"cash {key}: {held.get(key, 0)} cents, want {p.cash.get(key, 0)}")
    if wrong:
        raise TakeoverError(f"the loaded book differs from the command side ({len(wrong)}): " + "; ".join(wrong[:5]))
    if approximate:
        log.warning("takeover: %d positions' cost_basis cannot convert back exactly at the stored FX rates (their "
                    "rows were written at other rates: the old host did not drain), e.g. %s; memory is kept as "
                    "loaded, `pstate verify` lists them", len(approximate), approximate[:5])
    return len(approximate)


def _durable_file(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {time.time_ns()}\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(os.path.dirname(path) or ".")
