"""Group-commit fdatasync on a thread that never takes the GIL.

Owns: ``SyncThread``: one background thread running a Numba ``nogil`` loop. It blocks
on an eventfd for a request, calls libc ``fdatasync`` on the descriptor it was given,
stores the return code and errno, and signals completion on a second eventfd, which
the event loop watches (``fileno``). One request at a time: the caller waits for a
completion before it asks again.
Runs on: the thread it starts (the loop) and the event-loop thread (request, collect).
Imports: numpy, numba, ctypes, the standard library. Linux only (eventfd); ``available``
says whether it can run here.

Why not a Python thread: a Python sync thread needs the GIL to start each sync and again
when fdatasync returns. While the engine thread computes, CPython hands the GIL over
only every switch interval (5 ms by default), so each durable ack could wait two
intervals on top of the disk. This loop holds no Python state and never asks for the
GIL; the engine learns of the sync's end through its own event loop (ADR 0015).
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

_libc = ctypes.CDLL(None, use_errno=True)
_read = _libc.read
_read.argtypes, _read.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ssize_t
_write = _libc.write
_write.argtypes, _write.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ssize_t
_fdatasync = _libc.fdatasync
_fdatasync.argtypes, _fdatasync.restype = [ctypes.c_int], ctypes.c_int
_errno_location = _libc.__errno_location
_errno_location.argtypes, _errno_location.restype = [], ctypes.POINTER(ctypes.c_int)

# state cells (int64): what the engine writes, then what the thread answers
FD, STOP, RC, ERRNO, DONE = range(5)

_loop = None


def _compile():
    """The nogil loop, compiled on first use (ctypes function addresses cannot go in Numba's disk cache)."""
    global _loop
    if _loop is None:
        from numba import njit

        @njit(nogil=True, cache=False)
        def loop(req_fd, done_fd, state, buf):
            while True:
                if _read(req_fd, buf.ctypes.data, 8) != 8:  # blocks until a request (or EINTR: ask again)
                    continue
                if state[STOP]:
                    return
                rc = _fdatasync(state[FD])
                state[ERRNO] = _errno_location()[0] if rc != 0 else 0
                state[RC] = rc
                state[DONE] += 1
                buf[1] = 1
                _write(done_fd, buf[1:].ctypes.data, 8)

        _loop = loop
    return _loop


def available() -> bool:
    return hasattr(os, "eventfd")


class SyncThread:
    def __init__(self):
        loop = _compile()
        self._req = os.eventfd(0)
        self._done = os.eventfd(0, os.EFD_NONBLOCK)
        self.state = np.zeros(5, np.int64)
        self._buf = np.zeros(2, np.uint64)
        self.in_flight = False
        self._thread = threading.Thread(target=loop, args=(self._req, self._done, self.state, self._buf),
                                        name="pstate-fdatasync", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when a sync has completed."""
        return self._done

    def request(self, fd: int) -> None:
        """Start fdatasync(fd) on the thread."""
        assert not self.in_flight, "one sync at a time"
        self.in_flight = True
        self.state[FD] = fd
        os.eventfd_write(self._req, 1)

    def collect(self) -> tuple[int, int] | None:
        """(return code, errno) of the completed sync, or None if it has not completed."""
        try:
            os.eventfd_read(self._done)
        except BlockingIOError:
            return None
        self.in_flight = False
        return int(self.state[RC]), int(self.state[ERRNO])

    def close(self) -> None:
        """Let the sync in flight finish, stop the thread, close the eventfds."""
        if self._thread.is_alive():
            self.state[STOP] = 1
            os.eventfd_write(self._req, 1)
            self._thread.join()
        for fd in (self._req, self._done):
            os.close(fd)
        self._req = self._done = -1
