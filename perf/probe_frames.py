#!/usr/bin/env python
"""Probe: the server's per-message socket cost, pyzmq's multipart calls against transport/frames.py.

    python perf/probe_frames.py            # 20 rounds of 800 three-part messages, alternating

A DEALER sends [request id, 60-byte body] to a ROUTER over inproc:// (each arrives as three
parts with the peer's identity); the ROUTER receives a round of them and sends each back,
either with ``recv_multipart`` / ``send_multipart(NOBLOCK)`` or with ``recv_message`` /
``send_message``. Rounds alternate between the two, so machine noise falls on both; the
figures are µs per message, receive and send separately. Writes nothing.
Imports: zmq, transport.frames.
"""
from __future__ import annotations

import time

import zmq

from portfolio_state.transport.frames import recv_message, send_message


def main(rounds: int = 20, n: int = 800) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://probe")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect("inproc://probe")
    t = {"pyzmq recv_multipart": 0.0, "pyzmq send_multipart": 0.0, "frames recv_message": 0.0,
         "frames send_message": 0.0}
    for r in range(rounds):
        for i in range(n):
            dealer.send_multipart([i.to_bytes(4, "little"), b"x" * 60])
        time.sleep(0.02)
        t0 = time.perf_counter()
        if r % 2 == 0:
            msgs = [router.recv_multipart(zmq.NOBLOCK) for _ in range(n)]
            t1 = time.perf_counter()
            for msg in msgs:
                router.send_multipart(msg, zmq.NOBLOCK)
            t["pyzmq recv_multipart"] += t1 - t0
            t["pyzmq send_multipart"] += time.perf_counter() - t1
        else:
            msgs = [recv_message(router) for _ in range(n)]
            t1 = time.perf_counter()
            for msg in msgs:
                send_message(router, msg[:-1], msg[-1])
            t["frames recv_message"] += t1 - t0
            t["frames send_message"] += time.perf_counter() - t1
        time.sleep(0.02)
        got = 0
        while dealer.poll(100) and got < n:
            dealer.recv_multipart()
            got += 1
        assert got == n, f"round {r}: {got} of {n} replies came back"
    for k, v in t.items():
        print(f"{k:<22} {v / (rounds // 2 * n) * 1e6:6.2f} us per message")
    dealer.close(0)
    router.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
