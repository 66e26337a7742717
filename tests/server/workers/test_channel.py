"""The broker ↔ worker channel: message boundaries, large messages through a small socket, closing, corruption."""

from __future__ import annotations

import select
import socket
import struct
import threading

import numpy as np
import pytest

from zeroembed.server.workers.channel import Channel, ChannelError, listen


@pytest.fixture
def pair():
    a, b = (Channel(sock) for sock in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    yield a, b
    a.close()
    b.close()


def receive_until(channel: Channel, count: int, timeout_ms: int = 5000) -> list:
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    messages = []
    while len(messages) < count:
        assert poller.poll(timeout_ms), "nothing arrived"
        messages.extend(channel.receive())
    return messages


def test_messages_keep_their_frames_and_boundaries(pair):
    a, b = pair
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert a.send([b"result", b'{"batch":1}', vectors])
    assert a.send([b"stop"])
    assert a.send([b"empty", b"", b"x"])
    first, second, third = receive_until(b, 3)
    assert [bytes(f) for f in first[:2]] == [b"result", b'{"batch":1}']
    np.testing.assert_array_equal(np.frombuffer(first[2], np.float32).reshape(3, 4), vectors)
    assert [bytes(f) for f in second] == [b"stop"]
    assert [bytes(f) for f in third] == [b"empty", b"", b"x"]
    assert b.receive() == [] and not b.closed


def test_a_message_larger_than_the_socket_buffer_arrives_whole(pair):
    a, b = pair
    big = np.random.default_rng(0).standard_normal(2_000_000).astype(np.float32)  # 8 MB, far past the buffer
    assert not a.send([b"result", big])  # the socket took only part of it
    assert a.pending
    got = []
    writer = select.poll()
    writer.register(a.fileno(), select.POLLOUT)
    while not got:
        if a.pending and writer.poll(0):
            a.flush()
        got = b.receive()
    assert not a.pending
    np.testing.assert_array_equal(np.frombuffer(got[0][1], np.float32), big)


def test_send_all_waits_for_a_reader(pair):
    a, b = pair
    big = bytes(range(256)) * 40_000  # 10 MB
    thread = threading.Thread(target=a.send_all, args=([b"big", big],), kwargs={"timeout": 30})
    thread.start()
    (message,) = receive_until(b, 1)
    thread.join(10)
    assert not thread.is_alive() and not a.pending
    assert bytes(message[1]) == big


def test_send_all_gives_up_on_a_peer_that_reads_nothing(pair):
    a, _ = pair
    with pytest.raises(TimeoutError):
        a.send_all([bytes(10_000_000)], timeout=0.2)


def test_messages_sent_before_the_peer_closed_still_arrive_then_closed(pair):
    a, b = pair
    a.send_all([b"fatal", b'{"message":"no model"}'])
    a.close()
    messages = receive_until(b, 1)
    assert bytes(messages[0][0]) == b"fatal"
    select.select([b], [], [], 5)  # the socket still reads as ready: its end
    assert b.receive() == [] and b.closed
    with pytest.raises(OSError):  # and writing to it fails instead of hanging
        for _ in range(100):
            b.send_all([bytes(100_000)], timeout=1)


def test_bytes_that_are_no_message_raise(pair):
    a, b = pair
    raw = socket.socket(fileno=a.fileno())
    try:
        raw.sendall(struct.pack("<I", 1_000_000))  # a frame count no message of ours has
        with pytest.raises(ChannelError):
            receive_until(b, 1)
    finally:
        raw.detach()


def test_listen_and_connect(tmp_path):
    path = str(tmp_path / "workers")
    listener = listen(path)
    try:
        client = Channel.connect(path)
        select.select([listener], [], [], 5)
        server = Channel(listener.accept()[0])
        client.send_all([b"ready", b'{"pid":1}'])
        assert [bytes(f) for f in receive_until(server, 1)[0]] == [b"ready", b'{"pid":1}']
        client.close()
        server.close()
    finally:
        listener.close()
