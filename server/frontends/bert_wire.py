"""The wire protocol of bert-as-service 1.10.0, as ``bert-serving-client`` speaks it — pure functions, no sockets.

A client PUSHes four frames to the server's PULL socket::

    [client id, payload, request id, text count]

``client id`` is the topic the client's SUB socket subscribed to (by default 36
ASCII bytes of a UUID); ``request id`` and ``text count`` are ASCII decimal
integers. The payload is ``SHOW_CONFIG``, ``SHOW_STATUS``, or a UTF-8 JSON array
of strings (or of lists of strings: pre-tokenized input, told apart only by the
element type). Older clients omitted the count; three frames are accepted too.

The server PUBlishes replies under the client id as topic::

    config/status:  [client id, JSON object, request id]
    vectors:        [client id, JSON {"dtype", "shape", "tokens"}, raw array bytes, request id]

The client reads the request id from the last frame, ``json.loads(frame 1)`` for
a config, and ``np.frombuffer(frame 2, dtype=info["dtype"]).reshape(info["shape"])``
for vectors. The protocol has no error reply: an error goes out as a vector
reply whose ``dtype`` is the error message, which numpy refuses — so the
client's ``encode`` raises ``TypeError: data type 'zeroembed error [code]: ...'
not understood`` at once, message included, instead of waiting forever.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import zmq

#: The bert-serving-client version whose protocol this module speaks. The client
#: refuses a server reporting another ``server_version`` unless ``check_version=False``.
BERT_PROTOCOL_VERSION = "1.10.0"
SHOW_CONFIG = b"SHOW_CONFIG"
SHOW_STATUS = b"SHOW_STATUS"
TERMINATE = b"TERMINATION"  # what `bert-serving-terminate` sends; zeroembed stops on signals only

#: zeroembed pooling → bert-as-service ``pooling_strategy`` names.
POOLING_STRATEGIES = {"mean": "REDUCE_MEAN", "cls": "CLS_TOKEN", "max": "REDUCE_MAX"}

_NOT_A_DTYPE = str.maketrans({",": ";", "(": "[", ")": "]"})  # numpy parses "a, b" and "(..)" as dtype specs


class BertRequestError(Exception):
    """A request that cannot be served. ``answerable`` says whether the client can be told."""

    def __init__(self, code: str, message: str, client: bytes | None = None, req_id: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client = client
        self.req_id = req_id

    @property
    def answerable(self) -> bool:
        return bool(self.client) and self.req_id is not None


@dataclass(slots=True)
class BertRequest:
    """A request off the PULL socket: a command, or texts to encode."""

    client: bytes
    req_id: bytes
    command: bytes | None = None  # SHOW_CONFIG | SHOW_STATUS
    payload: bytes = b""  # the JSON texts, passed on to the broker as they came
    count: int = 0
    is_tokenized: bool = False


def parse_request(frames: list[bytes]) -> BertRequest:
    """Read one PULL message; :class:`BertRequestError` says what is wrong, and to whom, if anyone."""
    client = frames[0] if frames else None
    req_id = frames[2] if len(frames) >= 3 and frames[2].isdigit() else None
    if not client or req_id is None:
        # The client matches replies by int(last frame) under its id as topic: without both, nobody can be told.
        raise BertRequestError("malformed", f"expected [client id, payload, request id, count], got {len(frames)} "
                                            "frames without a usable client id and decimal request id")
    if len(frames) not in (3, 4):
        raise BertRequestError("malformed", f"expected 4 frames [client id, payload, request id, count], "
                                            f"got {len(frames)}", client, req_id)
    payload = frames[1]
    if payload in (SHOW_CONFIG, SHOW_STATUS):
        return BertRequest(client, req_id, command=payload)
    if payload == TERMINATE:
        raise BertRequestError("invalid_request", "zeroembed does not stop on a client's request; send the "
                                                  "server process SIGTERM", client, req_id)
    try:
        texts = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BertRequestError("malformed", f"payload is not UTF-8 JSON nor a command: {exc}", client, req_id) from None
    if not isinstance(texts, list):
        raise BertRequestError("invalid_request", f"payload is a JSON {type(texts).__name__}, expected an array of "
                                                  "strings or of lists of strings", client, req_id)
    if all(isinstance(t, str) for t in texts):
        tokenized = False
    elif all(isinstance(t, list) for t in texts):  # as bert-as-service tells: every element a list
        tokenized = True  # the broker checks the words are strings
    else:
        kind = str if isinstance(texts[0], str) else list
        index = next(i for i, t in enumerate(texts) if not isinstance(t, kind))
        raise BertRequestError("invalid_request", f"texts[{index}] is a {type(texts[index]).__name__}: send all "
                                                  "strings, or all lists of strings (is_tokenized)", client, req_id)
    return BertRequest(client, req_id, payload=payload, count=len(texts), is_tokenized=tokenized)


def config_reply(client: bytes, req_id: bytes, config: dict[str, Any]) -> list[bytes]:
    """The reply to SHOW_CONFIG / SHOW_STATUS."""
    return [client, _dump(config), req_id]


def vectors_reply(client: bytes, req_id: bytes, dtype: str, shape: list[int], buffer: Any,
                  tokens: list[list[str]] | str = "") -> list[Any]:
    """The reply to an encode request: metadata, then the raw little-endian C-order buffer."""
    return [client, _dump({"dtype": dtype, "shape": shape, "tokens": tokens}), buffer, req_id]


def error_reply(client: bytes, req_id: bytes, code: str, message: str) -> list[bytes]:
    """An error, shaped as a vector reply that the client's numpy call refuses with the message in sight.

    ``error`` carries the code and message untouched for anyone reading the JSON.
    """
    text = f"zeroembed error [{code}]: {message}".translate(_NOT_A_DTYPE)
    try:
        np.dtype(text)  # never expected to parse; if it ever did, the client must still not see vectors
        text = f"zeroembed error [{code}] (see the server log)".translate(_NOT_A_DTYPE) + " !"
    except (TypeError, ValueError, SyntaxError):
        pass
    return [client, _dump({"dtype": text, "shape": [0], "tokens": "", "ok": False,
                           "error": {"code": code, "message": message}}), b"", req_id]


def server_config(client: bytes, status: dict[str, Any], *, port: int, port_out: int, started: datetime,
                  statistic: dict[str, Any] | None = None) -> dict[str, Any]:
    """What SHOW_CONFIG answers: the fields bert-serving-client reads, bert-as-service's usual ones, and
    zeroembed's own ``status`` under ``"zeroembed"``."""
    workers = status.get("workers", [])
    config: dict[str, Any] = {
        # read by BertClient.__init__
        "server_version": BERT_PROTOCOL_VERSION,
        "max_seq_len": status.get("max_seq_length"),
        "show_tokens_to_client": True,  # every reply carries the word pieces; the client shows them on request
        # bert-as-service's other fields, mapped
        "client": client.decode("ascii", "replace"),
        "pooling_strategy": POOLING_STRATEGIES.get(status.get("pooling"), str(status.get("pooling"))),
        "pooling_layer": [-1],  # the artifact pools its last layer
        "num_worker": len(workers),
        "num_process": len(workers),
        "max_batch_size": status.get("batching", {}).get("max_batch_size"),
        "port": port,
        "port_out": port_out,
        "cpu": status.get("device") == "cpu",
        "device_map": [],
        "model_dir": status.get("model", {}).get("path"),
        "mask_cls_sep": False,
        "fixed_embed_length": False,
        "python_version": sys.version,
        "pyzmq_version": zmq.pyzmq_version(),
        "zmq_version": zmq.zmq_version(),
        "server_start_time": str(started),
        "server_current_time": str(datetime.now()),
        # zeroembed's own facts, as Client.status() reports them
        "zeroembed": status,
    }
    if statistic is not None:
        config["statistic"] = statistic
    return config


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
