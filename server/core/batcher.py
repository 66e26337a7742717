"""Forming batches by token budget from queued texts. Pure logic: no sockets, no clock of its own.

A batch costs ``size × longest sequence`` tokens once padded, so the batcher
keeps that product under ``max_batch_tokens`` and groups texts of similar
length. The oldest text always goes in the next batch, so none starves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Owner(Protocol):
    """The request a queued text belongs to, as far as batching and the worker side need to know it."""

    model_output: str  # which output of the model this text needs
    failed: bool  # answered with an error already: its texts need not run


@dataclass(slots=True, eq=False)
class Item:
    """One text waiting to run: its tokens, and where its result goes."""

    owner: Owner  # the request it belongs to
    index: int  # position within that request
    length: int  # tokens
    enqueued_at: float
    payload: Any = field(default=None, repr=False)  # token ids
    attempts: int = 0  # times sent to a worker (a batch lost with its worker is retried)
    prompt_length: int = 0  # leading tokens that are the prompt's, for models that pool without them
    split: int | None = None  # a (query, document) pair: where the document starts (token type 1 from there)


@dataclass(slots=True)
class Batch:
    """Texts that run together, and their padded cost."""

    items: list[Item]
    width: int  # the longest sequence: every text is padded to it

    @property
    def tokens(self) -> int:
        return sum(item.length for item in self.items)

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.items)


class Batcher:
    """A FIFO of texts that hands out length-grouped batches under a token budget.

    ``max_added_padding`` is how many padding tokens a text may add to the batch
    it joins. A batch has a fixed cost (on CPU: reading every weight once, worth
    a few tokens of work), so a text that would add more padding than that costs
    more inside the batch than in another one of its own length.

    ``wait_s`` is how long a partial batch may wait for company while other
    batches are running; when nothing is running, a partial batch goes at once,
    so a lone request is never held back.
    """

    def __init__(self, *, max_batch_tokens: int, max_batch_size: int, wait_s: float,
                 max_added_padding: int | None = None, lookahead: int = 8) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be positive")
        if max_added_padding is not None and max_added_padding < 0:
            raise ValueError("max_added_padding is a number of tokens, 0 or more")
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.max_added_padding = max_added_padding
        # How far past a full batch the batcher looks for texts of similar length.
        self._window = max_batch_size * lookahead
        self._queue: deque[Item] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, items: Iterable[Item]) -> None:
        """Queue texts, in arrival order."""
        self._queue.extend(items)

    def requeue(self, items: list[Item]) -> None:
        """Put texts back at the head of the queue (their batch was lost with its worker)."""
        self._queue.extendleft(reversed(items))

    def remove_owner(self, owner: Owner) -> int:
        """Drop every queued text of ``owner`` (a request that failed or was abandoned)."""
        before = len(self._queue)
        self._queue = deque(item for item in self._queue if item.owner is not owner)
        return before - len(self._queue)

    def deadline(self) -> float | None:
        """When the oldest text's wait runs out, on the caller's clock; None when empty."""
        return self._queue[0].enqueued_at + self.wait_s if self._queue else None

    def next_batch(self, now: float, *, pipeline_idle: bool) -> Batch | None:
        """The batch to run now, or None if it is better to wait for more texts.

        A batch goes when it is full, when the oldest text has waited ``wait_s``,
        or when nothing else is running (``pipeline_idle``).
        """
        if not self._queue:
            return None
        window = [self._queue[i] for i in range(min(len(self._queue), self._window))]
        oldest = window[0]
        # Nearest lengths first; ties keep arrival order (sorted is stable).
        candidates = sorted(window, key=lambda item: abs(item.length - oldest.length))
        chosen: list[Item] = []
        width = real = 0
        full = False
        for item in candidates:
            if len(chosen) == self.max_batch_size:
                full = True
                break
            new_width = max(width, item.length)
            padded = new_width * (len(chosen) + 1)
            added_padding = (padded - real - item.length) - (width * len(chosen) - real)
            if chosen and (padded > self.max_batch_tokens or (
                    self.max_added_padding is not None and added_padding > self.max_added_padding)):
                # A misfit: the batch goes without it (waiting would not make it fit), and a text
                # further along the list may still fit.
                full = True
                continue
            chosen.append(item)
            width, real = new_width, real + item.length
        if not full and len(chosen) == self.max_batch_size:
            full = True
        if not (full or pipeline_idle or now - oldest.enqueued_at >= self.wait_s):
            return None
        taken = set(map(id, chosen))
        rest = [item for item in window if id(item) not in taken]
        for _ in range(len(window)):
            self._queue.popleft()
        self._queue.extendleft(reversed(rest))
        return Batch(items=chosen, width=width)
