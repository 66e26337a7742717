"""What one hop between two processes costs: ZeroMQ ipc against a Unix socket pair.

The broker ↔ worker link (server/workers/channel.py) is a plain Unix socket because of
this measurement: ping-pong with a pause between messages, so that each message
finds the other side asleep, as a request finds the server between model runs.

    python -m zeroembed.benchmarks.hops [--messages 400] [--gap-ms 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import time

import numpy as np
import zmq

_MESSAGE = b"x" * 200
_QUIT = b"quit"


def _zmq_echo(endpoint: str) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.bind(endpoint)
    try:
        while True:
            sock.poll()  # wait in zmq_poll, as the broker and the client do
            frames = sock.recv_multipart()
            if frames[1] == _QUIT:
                return
            sock.send_multipart(frames)
    finally:
        sock.close(linger=0)
        context.term()


def _socket_echo(sock: socket.socket) -> None:
    poller = zmq.Poller()
    poller.register(sock.fileno(), zmq.POLLIN)
    with sock:
        while poller.poll() and (data := sock.recv(65536)) and data != _QUIT:
            sock.sendall(data)


def _round_trips_us(send, receive, messages: int, gap_s: float) -> dict[str, float]:
    for _ in range(20):
        send()
        receive()
    times = []
    for _ in range(messages):
        time.sleep(gap_s)
        start = time.perf_counter()
        send()
        receive()
        times.append((time.perf_counter() - start) * 1e6)
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}


def measure(messages: int = 400, gap_s: float = 0.003, rounds: int = 3) -> dict[str, list[dict[str, float]]]:
    """Round trips (µs) of a 200-byte message over each link, ``rounds`` alternating rounds."""
    spawn = multiprocessing.get_context("spawn")
    endpoint = f"ipc:///tmp/zeroembed-hops-{time.monotonic_ns()}"
    zmq_echo = spawn.Process(target=_zmq_echo, args=(endpoint,))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per recv
    socket_echo = spawn.Process(target=_socket_echo, args=(theirs,))
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    results: dict[str, list[dict[str, float]]] = {"zeromq_ipc": [], "unix_socket": []}
    try:
        zmq_echo.start()
        socket_echo.start()
        theirs.close()
        dealer.connect(endpoint)
        for _ in range(rounds):
            results["zeromq_ipc"].append(
                _round_trips_us(lambda: dealer.send(_MESSAGE), lambda: dealer.poll() and dealer.recv(), messages, gap_s))
            results["unix_socket"].append(
                _round_trips_us(lambda: ours.send(_MESSAGE), lambda: ours.recv(65536), messages, gap_s))
    finally:
        dealer.send(_QUIT)
        ours.send(_QUIT)
        for process in (zmq_echo, socket_echo):
            process.join(5)
            if process.is_alive():
                process.kill()
        dealer.close(linger=0)
        context.term()
        ours.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="round trips per link and round")
    parser.add_argument("--gap-ms", type=float, default=3.0, help="pause before each message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for link, rounds in measure(args.messages, args.gap_ms / 1000, args.rounds).items():
        cells = ", ".join(f"{r['p50']:.0f} / {r['p90']:.0f}" for r in rounds)
        print(f"{link:12} round trip p50 / p90 µs per round: {cells}")


if __name__ == "__main__":
    main()
