"""transport/frames.py: whole multipart messages in and out of a ROUTER, as pyzmq's calls move them."""
import pytest
import zmq

from portfolio_state.transport.frames import readable, recv_message, send_message


@pytest.fixture
def pair():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://frames-test")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect("inproc://frames-test")
    dealer.setsockopt(zmq.RCVTIMEO, 2000)
    yield router, dealer
    dealer.close(0)
    router.close(0)
    ctx.term()


def test_messages_of_any_part_count_arrive_whole_and_replies_reach_their_sender(pair):
    router, dealer = pair
    sent = [[b"rid1", b"body"], [b"", b"rid2", b"x" * 100_000], [b"only"], [b"a", b"", b"", b"\x00" * 3]]
    for parts in sent:
        dealer.send_multipart(parts)
    assert router.poll(2000)
    got = []
    for _ in sent:
        while True:
            try:
                got.append(recv_message(router))
                break
            except zmq.Again:
                router.poll(2000)
    identity = got[0][0]
    assert all(g[0] == identity for g in got)
    assert [g[1:] for g in got] == sent
    for g in got:
        send_message(router, g[:-1], g[-1] + b"!")
    assert [dealer.recv_multipart() for _ in sent] == [p[:-1] + [p[-1] + b"!"] for p in sent]


def test_nothing_waiting_raises_again_and_a_reply_to_a_gone_peer_is_dropped(pair):
    router, _ = pair
    with pytest.raises(zmq.Again):
        recv_message(router)
    send_message(router, [b"no-such-peer", b"rid"], b"body")  # ROUTER drops it: no error, nothing sent
    with pytest.raises(zmq.Again):
        recv_message(router)


def test_readable_says_whether_a_message_waits(pair):
    router, dealer = pair
    assert not readable(router)
    dealer.send_multipart([b"rid", b"body"])
    assert router.poll(2000) and readable(router)
    recv_message(router)
    assert not readable(router)
