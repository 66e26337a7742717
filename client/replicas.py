"""Several replicas behind one client: which one gets the next attempt, and how long an attempt may take.

Shared by ``Client`` and ``AsyncClient``; nothing here touches a socket.
"""

from __future__ import annotations

import threading
import time

#: How long a replica that let an attempt expire is passed over (unless every replica is).
REPLICA_BACKOFF_S = 5.0
#: Per-attempt deadline of a client with ``timeout=None``.
UNBOUNDED_ATTEMPT_S = 10.0


def attempt_timeout(timeout: float | None, remaining: float | None) -> float:
    """How long one attempt of a request may go unanswered before it is sent to another replica.

    ``max(1 s, timeout / 4)``, never past the call's remaining time: up to four attempts
    fit in one call, so a dead and a frozen replica can both be passed over and time is
    left for a healthy one; the 1 s floor keeps short timeouts from re-sending every
    request that a busy but healthy server takes a few hundred ms to answer. An attempt
    that expires is not cancelled: its reply is still taken if it comes first, so a
    deadline that is too short costs duplicate work, never a lost answer.
    """
    per_attempt = UNBOUNDED_ATTEMPT_S if timeout is None else max(1.0, timeout / 4)
    return per_attempt if remaining is None else max(0.0, min(remaining, per_attempt))


class Replicas:
    """Which replica gets the next attempt: round-robin over those not backed off.

    Shared by every thread of a client (a lock guards it). A replica is backed off
    for :data:`REPLICA_BACKOFF_S` when an attempt sent to it expires, and forgiven
    as soon as any reply comes from it.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._next = 0
        self._backoff_until = [0.0] * count
        self._lock = threading.Lock()

    def order(self, tried: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Every replica, best first: untried and healthy (round-robin), untried but backed off
        (soonest back first), then those this request already went to."""
        now = time.monotonic()
        with self._lock:
            start, self._next = self._next, (self._next + 1) % self.count
            until = list(self._backoff_until)
        rotation = [(start + k) % self.count for k in range(self.count)]
        return sorted(rotation, key=lambda r: (r in tried, until[r] > now, until[r] if until[r] > now else 0.0))

    def back_off(self, replica: int) -> None:
        with self._lock:
            self._backoff_until[replica] = time.monotonic() + REPLICA_BACKOFF_S

    def answered(self, replica: int) -> None:
        with self._lock:
            self._backoff_until[replica] = 0.0

    def backed_off(self) -> list[int]:
        now = time.monotonic()
        with self._lock:
            return [r for r, until in enumerate(self._backoff_until) if until > now]
