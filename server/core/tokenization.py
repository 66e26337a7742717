"""Turning request texts into token ids with the artifact's Rust tokenizer."""

from __future__ import annotations

import os
import time
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer


@dataclass(slots=True)
class Tokenized:
    """Token ids of a list of texts, flat: text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # int32, all texts' ids back to back
    offsets: np.ndarray  # int64, len(texts) + 1
    truncated: list[int]  # indices of texts cut at the model's maximum length
    pieces: list[list[str]] | None  # word pieces per text, when asked for
    # (query, document) pairs: where each pair's document starts (its token type 1 from there on)
    splits: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


# Below this many texts, tokenizing in the calling thread beats the library's thread pool: waking its
# threads costs more than a few texts take (and on a small machine they would preempt the model's threads).
_PARALLEL_FROM = 64


class TextTokenizer:
    """The artifact's tokenizer, truncating at the model's maximum length and never padding.

    Padding happens per batch in the worker, so a text costs only its own tokens
    on the wire and in the queue.
    """

    def __init__(self, path: Path, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length

    def encode(self, texts: list[str] | list[list[str]], *, pieces: bool = False,
               pretokenized: bool = False, query: str | None = None) -> Tokenized:
        """Tokenize ``texts``; a large request in one batch call on the library's own threads.

        With ``pretokenized``, each text is a list of words taken as given: only
        split into word pieces, never re-split on spaces or punctuation. With
        ``query``, each text is a document encoded as the pair (query, document),
        as a cross-encoder reads it (docs/artifact.md): the tokenizer's post-processor adds
        the special tokens, and its ``longest_first`` truncation cuts the longer side first.
        """
        if query is not None:
            return self._encode_pairs(query, texts)
        if len(texts) >= _PARALLEL_FROM:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True, is_pretokenized=pretokenized)
        else:
            encodings = [self._tokenizer.encode(text, is_pretokenized=pretokenized) for text in texts]
        ids = [e.ids for e in encodings]  # each read builds a new list from Rust: read once
        lengths = list(map(len, ids))
        offsets = np.array([0, *accumulate(lengths)], dtype=np.int64)
        # One text, the usual short request, skips the chain: its ids go straight to numpy.
        flat = (np.array(ids[0], dtype=np.int32) if len(ids) == 1
                else np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1])))
        # Only a text at the limit can have been cut; asking the others costs a call into Rust each.
        truncated = [i for i, n in enumerate(lengths) if n == self.max_length and encodings[i].overflowing]
        return Tokenized(flat, offsets, truncated, [e.tokens for e in encodings] if pieces else None)

    def _encode_pairs(self, query: str, documents: list[str]) -> Tokenized:
        encodings = self._tokenizer.encode_batch([(query, document) for document in documents],
                                                 add_special_tokens=True)
        ids = [e.ids for e in encodings]
        lengths = list(map(len, ids))
        offsets = np.array([0, *accumulate(lengths)], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
        # Token types are 0 through the query's closing separator and 1 after it: one split per pair.
        splits = np.array([_first_one(e.type_ids) for e in encodings], dtype=np.int32)
        truncated = [i for i, n in enumerate(lengths)
                     if n == self.max_length and self.count_pair_tokens(query, documents[i]) > n]
        return Tokenized(flat, offsets, truncated, None, splits)

    def count_pair_tokens(self, query: str, document: str) -> int:
        """Tokens of the pair (query, document) without truncation."""
        self._tokenizer.no_truncation()
        try:
            return len(self._tokenizer.encode(query, document).ids)
        finally:
            self._tokenizer.enable_truncation(self.max_length)

    def prompt_length(self, prompt: str) -> int:
        """How many leading tokens of ``prompt + text`` are the prompt's, as sentence-transformers counts:
        the prompt alone with special tokens, less a trailing special one ([SEP], </s>)."""
        encoding = self._tokenizer.encode(prompt)
        length = len(encoding.ids)
        if length and encoding.special_tokens_mask[-1]:
            length -= 1
        return length

    def count_tokens(self, text: str | list[str]) -> int:
        """Tokens of ``text`` without truncation, for error messages."""
        self._tokenizer.no_truncation()
        try:
            return len(self._tokenizer.encode(text, is_pretokenized=not isinstance(text, str)).ids)
        finally:
            self._tokenizer.enable_truncation(self.max_length)


def _first_one(type_ids: list[int]) -> int:
    try:
        return type_ids.index(1)
    except ValueError:  # a model without token types (RoBERTa, XLM-R): all 0, and not fed to the model
        return len(type_ids)


class BackgroundTokenizer:
    """Tokenizes large requests on a thread of its own, so the broker's loop keeps serving everyone else.

    The tokenizer releases the GIL while it works. Finished jobs wake the loop
    through a pipe (:meth:`fileno`, for the poller); :meth:`completed` hands
    them over. It has its own tokenizer: the loop's one is not shared across threads.
    """

    def __init__(self, path: Path, max_length: int) -> None:
        self._tokenizer = TextTokenizer(path, max_length)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="zeroembed-tokenize")
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._jobs: list[tuple[Any, Future]] = []  # (caller's key, job), in submission order
        self._lock = threading.Lock()  # a job finishing while close() runs must not write to a closed fd
        self._closed = False

    def fileno(self) -> int:
        """Readable when a job has finished."""
        return self._wake_read

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, key: Any, texts: list[str] | list[list[str]], *, pieces: bool, pretokenized: bool,
               query: str | None = None) -> None:
        """Start tokenizing ``texts`` (as :meth:`TextTokenizer.encode`); the result comes back from
        :meth:`completed` with ``key`` (any object)."""
        def job() -> tuple[Tokenized, float]:
            started = time.perf_counter()
            return self._tokenizer.encode(texts, pieces=pieces, pretokenized=pretokenized, query=query), \
                time.perf_counter() - started

        future = self._executor.submit(job)
        future.add_done_callback(self._wake)
        self._jobs.append((key, future))

    def _wake(self, _future: Future) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._wake_write, b"\0")
            except BlockingIOError:  # the pipe is full of unread wake-ups: the loop will look anyway
                pass

    def completed(self) -> list[tuple[Any, Tokenized | None, float, BaseException | None]]:
        """Finished jobs as ``(key, tokenized, seconds, error)``, in submission order."""
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        out, running = [], []
        for key, future in self._jobs:  # one look at each job: one finishing meanwhile waits for the next call
            if not future.done():
                running.append((key, future))
                continue
            error = future.exception()
            tokenized, seconds = (None, 0.0) if error else future.result()
            out.append((key, tokenized, seconds, error))
        self._jobs = running
        return out

    def close(self) -> None:
        """Stop taking jobs; one still running finishes on its own, unheard. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_read)
            os.close(self._wake_write)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._jobs.clear()
