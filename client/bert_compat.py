"""``BertClient``: bert-as-service's client API (bert-serving-client 1.10.0) on top of :class:`Client`.

Code written for bert-as-service runs unchanged against a zeroembed server::

    from zeroembed.client import BertClient          # was: from bert_serving.client import BertClient

    with BertClient(ip="localhost", port=5555) as bc:
        vectors = bc.encode(["First do it", "then do it right"])   # float32, (2, dim)

Constructor arguments, ``encode``/``fetch``/``fetch_all``/``encode_async``, the
``status``/``server_config``/``server_status`` properties and the errors raised
for bad input mirror bert-serving-client 1.10.0; docs/bert-client.md lists what
differs (one socket, so ``port_out`` is unused; pooling is the model's own).
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
import uuid
import warnings
from collections import namedtuple
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np

from .client import Client
from .protocol import PROTOCOL_VERSION

__all__ = ["BertClient"]

#: The bert-serving-client release whose API this class mirrors.
BERT_CLIENT_VERSION = "1.10.0"

#: What ``fetch()`` yields, as in bert-as-service: request id, embeddings, word pieces ("" unless asked).
Response = namedtuple("Response", ["id", "embedding", "tokens"])


class BertClient:
    """A drop-in for ``bert_serving.client.BertClient``, speaking zeroembed's protocol.

    ``timeout`` is in milliseconds as in bert-as-service, ``-1`` for none.
    ``check_version`` checks the server speaks protocol v1 (there is no
    bert-as-service version to match); ``check_length`` warns, as bert-as-service
    does, when a text has more whitespace-separated words than the server's
    ``max_seq_len`` (the server truncates it); ``check_token_info`` is always
    satisfied (every zeroembed server returns word pieces on request).
    """

    def __init__(self, ip: str = "localhost", port: int = 5555, port_out: int = 5556, output_fmt: str = "ndarray",
                 show_server_config: bool = False, identity: str | bytes | None = None, check_version: bool = True,
                 check_length: bool = True, check_token_info: bool = True, ignore_all_checks: bool = False,
                 timeout: int = -1) -> None:
        if output_fmt == "ndarray":
            self.formatter = lambda x: x
        elif output_fmt == "list":
            self.formatter = lambda x: x.tolist()
        else:
            raise AttributeError('"output_fmt" must be "ndarray" or "list"')
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or (timeout <= 0 and timeout != -1):
            raise ValueError(f"timeout must be a positive number of milliseconds or -1 (none), got {timeout!r}")
        host = f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
        self.endpoint = f"tcp://{host}:{int(port)}"
        self.ip, self.port, self.port_out = ip, port, port_out  # port_out: accepted, unused (one socket)
        self.output_fmt = output_fmt
        self.identity = identity or str(uuid.uuid4()).encode("ascii")
        self.timeout = timeout
        self.request_id = 0
        self.pending_request: set[int] = set()
        self.length_limit: int | None = 0
        self.token_info_available = True  # a zeroembed server always returns word pieces when asked
        self._client = Client(self.endpoint, timeout=None if timeout == -1 else timeout / 1000)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures: dict[concurrent.futures.Future, int] = {}
        self._lock = threading.Lock()

        if not ignore_all_checks and (check_version or show_server_config or check_length or check_token_info):
            try:
                s_status = self.server_config
            except BaseException:
                self.close()
                raise
            if check_version and s_status.get("protocol") != PROTOCOL_VERSION:
                self.close()
                raise AttributeError(f"version mismatch! the server speaks zeroembed protocol "
                                     f"{s_status.get('protocol')!r}, this client {PROTOCOL_VERSION}; disable the "
                                     f'check with "BertClient(check_version=False)"')
            if check_length:
                self.length_limit = int(s_status["max_seq_len"]) if s_status.get("max_seq_len") else None
            if show_server_config:
                self._print_dict(s_status, "server config:")

    # ------------------------------------------------------------------ bert-as-service API

    @property
    def status(self) -> dict[str, Any]:
        """This client's own state, with bert-as-service's keys."""
        return {
            "identity": self.identity,
            "num_request": self.request_id,
            "num_pending_request": len(self.pending_request),
            "pending_request": self.pending_request,
            "output_fmt": self.output_fmt,
            "port": self.port,
            "port_out": self.port_out,
            "server_ip": self.ip,
            "client_version": BERT_CLIENT_VERSION,
            "timeout": self.timeout,
        }

    @property
    def server_config(self) -> dict[str, Any]:
        """The server's status with bert-as-service's config keys added (``max_seq_len``, ``server_version``, ...)."""
        status = self._client.status()
        workers = status.get("workers", [])
        return {
            **status,
            "server_version": status.get("version"),
            "max_seq_len": status.get("max_seq_length"),
            "pooling_strategy": status.get("pooling"),
            "model_dir": (status.get("model") or {}).get("path"),
            "num_worker": len(workers),
            "show_tokens_to_client": True,
            "python_version": sys.version,
            "server_current_time": str(datetime.now()),
        }

    @property
    def server_status(self) -> dict[str, Any]:
        """The server's live status (queue, workers, uptime), as ``Client.status()`` returns it."""
        return self._client.status()

    def encode(self, texts: list[str] | list[list[str]], blocking: bool = True, is_tokenized: bool = False,
               show_tokens: bool = False) -> Any:
        """Embed ``texts``: an ``(n, dim)`` float32 array (or nested lists with ``output_fmt='list'``).

        ``is_tokenized=True`` takes ``texts`` as lists of words. ``show_tokens=True`` returns
        ``(vectors, tokens)``, ``tokens`` holding each text's word pieces. ``blocking=False``
        returns ``None`` at once; collect the result with :meth:`fetch` or :meth:`fetch_all`.
        """
        if is_tokenized:
            self._check_input_lst_lst_str(texts)
        else:
            self._check_input_lst_str(texts)
        if self.length_limit is None:
            warnings.warn('server does not put a restriction on "max_seq_len"', stacklevel=2)
        elif self.length_limit and not self._check_length(texts, self.length_limit, is_tokenized):
            warnings.warn(f'some of your sentences have more tokens than "max_seq_len={self.length_limit}" set on '
                          "the server, as consequence you may get less-accurate or truncated embeddings.\n"
                          "here is what you can do:\n"
                          '- disable the length-check by create a new "BertClient(check_length=False)" '
                          "when you do not want to display this warning\n"
                          '- or, serve a model exported with a larger "--max-seq-length"', stacklevel=2)
        with self._lock:
            self.request_id += 1
            request_id = self.request_id
        if not blocking:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="bertclient")
                future = self._executor.submit(self._encode, texts, is_tokenized, show_tokens)
                self._futures[future] = request_id
                self.pending_request.add(request_id)
            return None
        vectors, tokens = self._encode(texts, is_tokenized, show_tokens)
        return (vectors, tokens) if show_tokens else vectors

    def fetch(self, delay: float = 0.0) -> Iterator[Response]:
        """Results of ``encode(..., blocking=False)`` as they complete (not in request order)."""
        time.sleep(delay)
        while True:
            with self._lock:
                futures = dict(self._futures)
            if not futures:
                return
            done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                with self._lock:
                    request_id = self._futures.pop(future)
                    self.pending_request.discard(request_id)
                vectors, tokens = future.result()
                yield Response(request_id, vectors, tokens if tokens is not None else "")

    def fetch_all(self, sort: bool = True, concat: bool = False) -> Any:
        """Every pending non-blocking result, in request order when ``sort``; one array when ``concat``."""
        if not self.pending_request:
            return None
        results = list(self.fetch())
        if sort:
            results.sort(key=lambda r: r.id)
        embeddings = [r.embedding for r in results]
        if concat:
            if self.output_fmt == "ndarray":
                return np.concatenate(embeddings, axis=0)
            return [row for part in embeddings for row in part]
        return embeddings

    def encode_async(self, batch_generator, max_num_batch: int | None = None, delay: float = 0.1,
                     **kwargs: Any) -> Iterator[Response]:
        """Encode batches from ``batch_generator`` in the background; yields results as :meth:`fetch` does."""

        def run() -> None:
            for count, texts in enumerate(batch_generator, start=1):
                self.encode(texts, blocking=False, **kwargs)
                if max_num_batch and count == max_num_batch:
                    break

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(delay)
        while thread.is_alive() or self._futures:
            yield from self.fetch()
            if thread.is_alive():
                time.sleep(0.01)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._client.close()

    def __enter__(self) -> BertClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BertClient(ip={self.ip!r}, port={self.port}, output_fmt={self.output_fmt!r})"

    # ------------------------------------------------------------------ internals

    def _encode(self, texts: list[Any], is_tokenized: bool, show_tokens: bool) -> tuple[Any, list | None]:
        result = self._client.encode(texts, show_tokens=show_tokens, is_tokenized=is_tokenized)
        vectors, tokens = result if show_tokens else (result, None)
        return self.formatter(vectors), tokens

    @staticmethod
    def _check_length(texts: list[Any], len_limit: int, tokenized: bool) -> bool:
        if tokenized:
            return all(len(t) <= len_limit for t in texts)
        return all(len(t.split()) <= len_limit for t in texts)

    @staticmethod
    def _check_input_lst_str(texts: Any) -> None:
        if not isinstance(texts, list):
            raise TypeError(f'"{texts}" must be {list}, but received {type(texts)}')
        if not len(texts):
            raise ValueError(f'"{texts}" must be a non-empty list, but received {type(texts)} with 0 elements')
        for idx, s in enumerate(texts):
            if not isinstance(s, str):
                raise TypeError(f"all elements in the list must be {str}, but element {idx} is {type(s)}")
            if not s.strip():
                raise ValueError(f"all elements in the list must be non-empty string, but element {idx} is {s!r}")

    @staticmethod
    def _check_input_lst_lst_str(texts: Any) -> None:
        if not isinstance(texts, list):
            raise TypeError(f'"texts" must be {list}, but received {type(texts)}')
        if not len(texts):
            raise ValueError(f'"texts" must be a non-empty list, but received {type(texts)} with 0 elements')
        for s in texts:
            BertClient._check_input_lst_str(s)

    @staticmethod
    def _print_dict(x: dict[str, Any], title: str | None = None) -> None:
        if title:
            print(title)
        for k, v in x.items():
            print("%30s\t=\t%-30s" % (k, v))
