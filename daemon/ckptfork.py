"""Periodic checkpoints written by a forked child, so their work never takes the engine's GIL.

Owns: ``fork_checkpoint`` (fork; the child, at idle CPU priority, runs the checkpoint job:
snapshot, encode and write, retire old checkpoints; reports, exits) and ``wait_checkpoint``
(the parent's side, on the checkpoint thread: read the child's report, reap it).
Runs on: the engine thread (fork) and the checkpoint thread (wait). Imports: stdlib, msgspec.

Why: a checkpoint's Python work (listing and encoding a million-key idempotency window, the
id maps, building the file) ran on a thread of this process. Under the GIL every millisecond
of it was a millisecond the engine could not apply, and at a rate near one core's capacity the
engine never caught up with the backlog: seconds of p99 in every checkpoint minute of the soak
(perf/RESULTS.md). A forked child does that work on the other core, on a copy-on-write view.
When the book is in private memory (the default) that view is the snapshot: the engine pays
only the fork, and the child writes the arrays as they were at that instant (ADR 0014,
amendment). A book in a shared-memory arena is not copy-on-write, so the engine copies it into
the snapshot's buffers before forking.

The child is careful: it runs only its job; it does not touch asyncio, ZeroMQ or any lock
another thread may hold (logging's locks are re-made after a fork by the logging module); it
restores default SIGTERM/SIGINT handling and drops the loop's signal wake-up fd, dies with its
parent (PR_SET_PDEATHSIG, so a kill -9 of the daemon is still a crash mid-checkpoint), runs at
SCHED_IDLE (it takes only CPU nothing else wants: on two cores, the engine's and the load's
come first), and leaves with os._exit (no buffered file of the parent's is flushed twice).
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
from collections.abc import Callable

import msgspec

_PR_SET_PDEATHSIG = 1


def available() -> bool:
    return hasattr(os, "fork") and os.name == "posix"


def _die_with(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the child may outlive a killed parent by the length of one checkpoint
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(3)


def _idle_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def fork_checkpoint(job: Callable[[], tuple[str, int]]) -> tuple[int, int]:
    """Fork; the child runs ``job()`` (snapshot and recovery.write_checkpoint, returning the
    path and the oldest checkpoint kept) on its copy-on-write view of this process. Returns
    (child pid, read end of its report pipe)."""
    r, w = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # the child
        code = 1
        try:
            os.close(r)
            gc.disable()  # a collection would touch (and copy) every tracked object's page
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            _die_with(parent)
            _idle_priority()
            report = job()
            os.write(w, msgspec.msgpack.encode(["ok", *report]))
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which logs it
            try:
                os.write(w, msgspec.msgpack.encode(["error", f"{type(e).__name__}: {e}"]))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def wait_checkpoint(pid: int, r: int) -> tuple[str, int]:
    """The child's (path, oldest checkpoint kept); raises when it failed or died."""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    report = msgspec.msgpack.decode(data) if data else ["error", "no report"]
    if code != 0 or report[0] != "ok":
        raise RuntimeError(f"checkpoint child {pid} exited with {code}: {report[-1]}")
    return report[1], report[2]
