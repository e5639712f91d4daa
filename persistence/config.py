"""Durability settings: journal, group commit, checkpoints; the write-behind. Frozen Structs, every field documented.

Owns: ``JournalConfig``, ``SinkConfig``. Runs on: any thread. Imports: msgspec.
"""
from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct


def doc(text: str) -> Meta:
    return Meta(description=text)


class JournalConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    data_dir: Annotated[str, doc("Directory of the journal (journal/) and checkpoints (checkpoints/). Empty: no journal, nothing survives a restart. Default pstate-data.")] = "pstate-data"
    fsync: Annotated[Literal["batch", "interval", "off"], doc("batch: a reply leaves only after fdatasync covers it (durable ack, group commit); interval: replies leave at once, fdatasync every fsync_interval_ms (a crash loses at most that window of acknowledged updates); off: never (benchmarks only, logged loudly). Default batch.")] = "batch"
    fsync_interval_ms: Annotated[float, doc("With fsync=interval: time between syncs, ms. Default 10.")] = 10.0
    segment_bytes: Annotated[int, doc("Journal segment size before a new file starts, bytes. Default 64 MiB.")] = 64 << 20
    preallocate: Annotated[bool, doc("Zero-fill each journal segment before records go in (the first at start, the next on a background thread once the current one is half full), so a sync writes data only and the filesystem has no size or extent change to commit: measured fdatasync p50 240 -> 160 us, p99 875 -> 250 us on this machine's disk. Costs writing each segment twice and keeps one spare segment on disk. Default true.")] = True
    checkpoint_interval_s: Annotated[float, doc("Seconds between checkpoints (also one at clean shutdown, and one whenever the daemon gets SIGUSR1); 0 = only at shutdown or on SIGUSR1. Default 300.")] = 300.0
    checkpoint_fork: Annotated[bool, doc("Write the periodic checkpoints from a forked child process (Linux/POSIX), so their encoding does not take the engine's GIL; the child snapshots a book in private memory itself (copy-on-write), so the engine pays only the fork, while a book in a shared-memory arena is copied first. false = a thread of the daemon, after a copy on the engine thread (the shutdown checkpoint always is). Default true.")] = True
    checkpoint_cow_reserve_mb: Annotated[int, doc("Memory the daemon keeps faulted in and frees just before a forked checkpoint of a private-memory book, MiB, so the engine's copy-on-write copies while the child lives take pages the machine has already backed: on a VM that backs memory lazily a copy into never-used memory cost 11.3 us against 2.1 (ADR 0023). Refilled once the child has exited. -1 = an eighth of the book's arrays; 0 = none. Costs its size in RSS between checkpoints. Default -1.")] = -1
    checkpoints_kept: Annotated[int, doc("Checkpoints kept; journal segments older than the oldest kept one are deleted. Default 2.")] = 2
    fault_enospc_after_bytes: Annotated[int, doc("Fault injection (tests): the journal fails with ENOSPC once this many bytes were written; -1 = off. Default -1.")] = -1
    fault_fsync_fail_after: Annotated[int, doc("Fault injection (tests): this many syncs succeed, the next fails with EIO; -1 = off. Default -1.")] = -1


class SinkConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    backend: Annotated[Literal["duckdb", "postgres", "none"], doc("Where the write-behind thread copies committed changes: duckdb (an embedded file, no server), postgres (postgres_dsn), none. Needs the journal (journal.data_dir). Default duckdb.")] = "duckdb"
    duckdb_path: Annotated[str, doc("DuckDB file of the duckdb backend; empty = <journal.data_dir>/store.duckdb. Default empty.")] = ""
    duckdb_checkpoint_mb: Annotated[int, doc("DuckDB backend: WAL size at which DuckDB checkpoints it into the file, MiB (its own default, 16, made checkpoints half of the store's time; larger means a longer WAL replay when the file opens). Default 256.")] = 256
    duckdb_threads: Annotated[int, doc("DuckDB backend: threads DuckDB may run one write on (its own default is every core, which on a small host takes the engine's core too); 0 = DuckDB's default. Default 1.")] = 1
    postgres_dsn: Annotated[str, doc("PostgreSQL connection string of the postgres backend, e.g. postgresql://postgres@127.0.0.1:5432/pstate. Default empty.")] = ""
    redis_url: Annotated[str, doc("Redis cache (spec keys and TTLs), e.g. redis://127.0.0.1:6379/0; empty = no cache. Default empty.")] = ""
    redis_prefix: Annotated[str, doc("Prefix put before every Redis key (e.g. 'desk1:'). Default empty.")] = ""
    flush_interval_ms: Annotated[float, doc("How often the engine hands committed changes to the thread, ms (changes in between coalesce). Default 100.")] = 100.0
    state_interval_ms: Annotated[float, doc("Cadence of state snapshots (portfolio_state_ts, exposures_ts, margin_requirements, Redis) for portfolios changed since their last one, ms. Default 1000.")] = 1000.0
    heartbeat_s: Annotated[float, doc("Every this many seconds every portfolio gets a snapshot, changed or not; 0 = only on change. Default 3600.")] = 3600.0
    revalue_interval_ms: Annotated[float, doc("Cadence of the pass that copies price-driven changes (market_value, unrealized_pnl, weight) of positions to the positions table, and drifted INSTRUMENT exposures to exposures_ts, ms. Default 1000.")] = 1000.0
    revalue_max_rows: Annotated[int, doc("Most positions one revaluation pass looks at (it resumes where it stopped), slots: a book of N positions is revalued in the stores every N / revalue_max_rows passes, and each pass costs the engine thread about 0.25 µs per slot. Default 50000.")] = 50_000
    weight_epsilon: Annotated[float, doc("A revaluation pass rewrites a position whose weight moved more than this (fraction); quantity, cost, value and status changes always. Default 0.0001.")] = 1e-4
    redis_positions_per_flush: Annotated[int, doc("Most portfolios whose whole lists, positions:{id} and exposures:{id}, are rebuilt per snapshot (round robin over the changed ones): a book of P changed portfolios is refreshed every P / this state intervals; each list of N positions costs the thread about 2 µs per position, portfolios. Default 8.")] = 8
    max_busy: Annotated[float, doc("Most of the wall time the write-behind thread spends writing, fraction: after a write that took w seconds it waits w * (1 / max_busy - 1) before the next (bounded by retry_max_s); hand-offs wait in the queue meanwhile and go in one transaction (they coalesce in the capture only when the queue is full), so a store whose every write costs a fixed scan (the positions upsert reads the whole table) pays it once for many, and takes at most this share of a core from the engine; 1 = write back to back. Never applies to the catch-up after a start or to the final drain. Default 0.25."), Meta(gt=0, le=1)] = 0.25
    sched_idle: Annotated[bool, doc("Once caught up after a start, run the write-behind thread (and the threads it starts) under Linux's SCHED_IDLE policy: it then gets a core only when no other thread of the machine wants one. Where the host's cores are the daemon's (its clients, its stores), this lowered the open-loop p99 by about a third and raised closed-loop throughput (ADR 0024). Where other processes keep both cores busy, the thread can be starved while it holds the GIL, and the engine waits for it: p99 and p99.9 were worse than with the normal policy. Default false.")] = False
    queue_max: Annotated[int, doc("Hand-offs waiting for the thread before the engine stops handing off (changes then coalesce, nothing is lost), hand-offs. Default 64.")] = 64
    batch_rows: Annotated[int, doc("Rows per database transaction, at most (a hand-off is never split). Default 100000.")] = 100_000
    lag_degraded: Annotated[int, doc("Health turns degraded when the persisted journal sequence trails the committed one by more than this many records, or the store is unreachable. Default 100000.")] = 100_000
    retry_max_s: Annotated[float, doc("Longest wait between reconnect attempts to an unreachable store or cache, and longest rest after a write (max_busy), s. Default 5.")] = 5.0
    partitions_ahead: Annotated[int, doc("Native partitioning (no TimescaleDB): partitions created ahead of now, in chunk intervals (days; hours for exposures_ts). Default 3.")] = 3
    drain_timeout_s: Annotated[float, doc("At shutdown, how long to wait for the thread to persist what is committed, s. Default 30.")] = 30.0
    takeover: Annotated[bool, doc("A new host: when the journal is empty (no record, no checkpoint holding one), load the book (instruments, portfolios, FX rates, last prices, positions, cash, limits) from the PostgreSQL command side as journaled commands before serving; a journal that holds anything is never loaded over (logged). Needs backend=postgres; PostgreSQL unreachable or a row the engine refuses stops start-up (exit 4). Also --takeover. Default false.")] = False
