"""The server ↔ worker link: multipart messages over a Unix stream socket.

Clients speak ZeroMQ; the server's own workers do not. Every ZeroMQ hop passes
through an I/O thread on each side, three thread wake-ups where a plain socket
needs one, and waking an idle core is most of what a hop costs. Every request
crosses this link twice; ``python -m zeroembed.benchmarks.hops`` measures both
links (docs/decisions.md).

On the socket a message is a little-endian u32 frame count, a u64 length per
frame, then the frames back to back. Sends never block unless asked to: what
the socket does not take now stays queued until :meth:`Channel.flush`.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from itertools import islice

_COUNT = struct.Struct("<I")
_READ_CHUNK = 1 << 16
_MAX_FRAMES = 64  # far above any message of ours: a larger count means the stream is corrupt
_IOV_MAX = 512


class ChannelError(Exception):
    """The peer sent something that is not a message of this format."""


class Channel:
    """One end of a connected Unix stream socket carrying multipart messages."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._out: deque[memoryview] = deque()
        self._buf = bytearray(_READ_CHUNK)
        self._start = self._end = 0  # unparsed bytes are _buf[_start:_end]
        self.closed = False  # the peer closed its end (its process exited): nothing more will arrive

    @classmethod
    def connect(cls, path: str) -> Channel:
        """Connect to a :func:`listen`-ing socket at ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def pending(self) -> bool:
        """Whether queued bytes wait for the socket to take them (poll for writing, then flush)."""
        return bool(self._out)

    def send(self, frames: Sequence) -> bool:
        """Queue one message (bytes-like frames; numpy arrays must be C-contiguous) and write what the
        socket takes now. True when all of it went; otherwise call :meth:`flush` once it is writable."""
        views = [memoryview(frame).cast("B") for frame in frames]
        self._out.append(memoryview(struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views))))
        self._out.extend(v for v in views if v.nbytes)
        return self.flush()

    def send_all(self, frames: Sequence, timeout: float | None = None) -> None:
        """Send one message and wait until the socket took all of it; TimeoutError past ``timeout`` s."""
        if self.send(frames):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._sock, select.POLLOUT)
        while not self.flush():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("the peer took no data for the whole timeout")
            poller.poll(None if left is None else max(1, int(left * 1000)))

    def flush(self) -> bool:
        """Write queued bytes until the socket would block; True when none are left.

        Raises BrokenPipeError (or ConnectionResetError) when the peer is gone.
        """
        while self._out:
            try:
                sent = self._sock.sendmsg(list(islice(self._out, _IOV_MAX)))
            except BlockingIOError:
                return False
            while sent:
                head = self._out[0]
                if sent < head.nbytes:
                    self._out[0] = head[sent:]
                    break
                sent -= head.nbytes
                self._out.popleft()
        return True

    def receive(self) -> list[list[memoryview]]:
        """Every whole message the socket holds now, each a list of frames (read-only views).

        Sets :attr:`closed` when the peer has closed its end. Raises :class:`ChannelError`
        on bytes that cannot be a message.
        """
        while not self.closed:
            if len(self._buf) - self._end < _READ_CHUNK:
                self._make_room(_READ_CHUNK)
            room = len(self._buf) - self._end
            with memoryview(self._buf) as view:
                try:
                    read = self._sock.recv_into(view[self._end:])
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    read = 0
            if read == 0:
                self.closed = True
            self._end += read
            if read < room:
                # The socket had no more: a read that would only say so is a wasted system call, run with
                # cold caches between model runs, and the caller's poll (level-triggered) reports whatever
                # arrives next.
                break
        return self._parse()

    def _parse(self) -> list[list[memoryview]]:
        messages = []
        while self._end - self._start >= _COUNT.size:
            (count,) = _COUNT.unpack_from(self._buf, self._start)
            if not 0 < count <= _MAX_FRAMES:
                raise ChannelError(f"a message of {count} frames")
            head = _COUNT.size + 8 * count
            if self._end - self._start < head:
                break
            lengths = struct.unpack_from(f"<{count}Q", self._buf, self._start + _COUNT.size)
            size = head + sum(lengths)
            if self._end - self._start < size:
                self._make_room(size - (self._end - self._start))  # room for the rest of it
                break
            body = memoryview(bytes(self._buf[self._start + head:self._start + size]))
            frames, offset = [], 0
            for length in lengths:
                frames.append(body[offset:offset + length])
                offset += length
            messages.append(frames)
            self._start += size
        if self._start == self._end:
            self._start = self._end = 0
        return messages

    def _make_room(self, more: int) -> None:
        """Move unparsed bytes to the front and grow the buffer so ``more`` bytes fit after them."""
        unparsed = self._end - self._start
        if self._start:
            self._buf[:unparsed] = self._buf[self._start:self._end]
            self._start, self._end = 0, unparsed
        if len(self._buf) < unparsed + more:
            self._buf.extend(bytes(unparsed + more - len(self._buf)))

    def close(self) -> None:
        self._sock.close()


def listen(path: str) -> socket.socket:
    """A non-blocking Unix socket listening at ``path``, for workers to connect to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
