"""The broker ↔ worker messages: their names and how headers are written. Both sides import this module.

::

    worker → broker  READY   {"pid", "provider", "device"}      model loaded, send work
    worker → broker  FATAL   {"message"}                         model failed to load; exiting
    broker → worker  BATCH   {"batch", "outputs", "splits"?}, ids, lengths[, prompt_lengths][, splits]
                             int32 buffers (prompt_lengths int64); splits, when the header says so: a batch
                             of pairs, where each pair's second text (token type 1) starts
    worker → broker  RESULT  {"batch", "arrays", "run_s", "alone"}, one buffer per output
    worker → broker  FAILED  {"batch", "message"}                this batch failed; still serving
    broker → worker  STOP                                         finish and exit

Each message is a list of frames over a Unix stream socket (channel.py): the
name, a JSON header, then raw buffers.
"""

from __future__ import annotations

import json

READY, FATAL, BATCH, RESULT, FAILED, STOP = (b"ready", b"fatal", b"batch", b"result", b"failed", b"stop")

_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options builds one per call


def dumps(value: object) -> bytes:
    """A message header as JSON bytes."""
    return _ENCODER.encode(value).encode()


def loads(frame: bytes | memoryview) -> dict:
    """A message header from its JSON bytes."""
    return json.loads(bytes(frame))
