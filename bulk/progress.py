"""What a person watching the job sees: a tqdm bar while it runs, one summary line when it ends."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


class Progress:
    """Rows done of the total, texts/s, tokens/s and ETA on a tqdm bar (on stderr); silent when ``quiet``."""

    def __init__(self, total_rows: int, done_rows: int = 0, *, quiet: bool = False) -> None:
        self.rows = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._bar = None
        if not quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total_rows, initial=done_rows, unit=" texts", dynamic_ncols=True,
                             smoothing=0.05, file=sys.stderr, desc="embedding")

    def update(self, rows: int, tokens: int) -> None:
        """``rows`` more texts embedded, holding ``tokens`` tokens."""
        self.rows += rows
        self.tokens += tokens
        if self._bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self._bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
            self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass(frozen=True)
class Summary:
    """What one run did."""

    out: str
    rows: int  # embedded by this run
    tokens: int
    seconds: float
    shards_written: int
    shards_skipped: int  # complete before this run
    shards_total: int
    engine: str

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end."""
        resumed = f", {self.shards_skipped} already complete" if self.shards_skipped else ""
        return (f"embedded {self.rows:,} texts ({self.tokens:,} tokens) in {self.seconds:.1f} s with the "
                f"{self.engine} engine: {self.texts_per_s:,.1f} texts/s, {self.tokens_per_s:,.0f} tokens/s; "
                f"{self.shards_written} shard(s) written{resumed}, {self.shards_total} in all, in {self.out}")
