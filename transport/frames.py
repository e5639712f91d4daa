"""Multipart messages on a non-blocking socket, without pyzmq's per-call Python layer.

Owns: ``recv_message`` and ``send_message``, the server's receive and send of one whole
multipart message (ROUTER requests and replies, PUB events), and ``readable`` (a message waits).
Runs on: the event-loop thread. Imports: zmq.

Why: pyzmq's ``send_multipart`` checks each part's type in Python and builds an enum flag
(``SNDMORE | flags``) for each part before its Python ``send`` wrapper reaches the compiled
socket; ``recv_multipart`` asks for RCVMORE through the Python ``getsockopt``. These call the
compiled socket's ``send``, ``recv`` and ``get`` with plain int flags, and receive each part
as a Frame whose ``more`` replaces the RCVMORE query. Measured on the 2-core VM of 2026-11-24
(``python perf/probe_frames.py``: ROUTER/DEALER, 3-part messages, two runs), a reply's send
went from 5.2-5.6 to 1.3 µs and a request's receive from 6.3-6.6 to 4.0 µs.

Both take a socket that is never shared between threads (ZeroMQ's rule anyway). A message
is received whole or not at all (ZeroMQ delivers multipart messages atomically);
``recv_message`` raises ``zmq.Again`` when none is waiting. ``send_message`` is for ROUTER
and PUB sockets, which drop a message they cannot queue rather than raise EAGAIN midway.
"""
from __future__ import annotations

import zmq
from zmq.backend import Socket as _Compiled

_recv, _send, _get = _Compiled.recv, _Compiled.send, _Compiled.get
_NB = int(zmq.NOBLOCK)
_MORE_NB = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock) -> bool:
    """A message waits to be received (ZMQ_EVENTS has POLLIN). Reading it also clears the edge of
    the socket's file descriptor, which is why a loop woken by that descriptor asks after each send."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


def recv_message(sock) -> list[bytes]:
    """The parts of the next waiting message; zmq.Again when none waits. Each part arrives as a
    Frame, whose ``more`` says whether another follows (no RCVMORE query per part), copied out as
    bytes."""
    f = _recv(sock, _NB, False)
    parts = [f.bytes]
    while f.more:
        f = _recv(sock, _NB, False)
        parts.append(f.bytes)
    return parts


def send_message(sock, head, last) -> None:
    """Send the parts of ``head`` (a sequence) and then ``last`` as one message, without blocking."""
    for part in head:
        _send(sock, part, _MORE_NB)
    _send(sock, last, _NB)
