"""The exceptions a zeroembed client raises: a shallow tree under one base class.

Every exception carries the wire ``code`` it came from (see :class:`ErrorCode`),
so callers can catch broadly (``ZeroEmbedError``), by kind (``ServerBusy``), or
inspect ``exc.code`` for the exact reason::

    ZeroEmbedError
    ├── InvalidRequest   the request itself is wrong; retrying it unchanged fails again
    ├── ServerBusy       the server cannot take it now (queue full, draining); retry later or elsewhere
    ├── ServerTimeout    no answer within the timeout (client side) or past the server's deadline
    └── ServerError      the server failed to serve a valid request (worker crash, bug, bad reply)
"""

from __future__ import annotations

from .protocol import ErrorCode


class ZeroEmbedError(Exception):
    """Base class of every zeroembed error. ``code`` is the wire error code."""

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = ErrorCode(code) if code is not None else self.default_code
        #: Position of the offending text in the request, when one text caused the error.
        self.index = index

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.message}"


class InvalidRequest(ZeroEmbedError, ValueError):
    """Raised when the request is wrong: bad types, unknown options, a text over a limit.

    Raised by the client before sending for wrong input types, and re-raised
    from server replies with codes ``invalid_request``, ``malformed``,
    ``unsupported_version``, ``text_too_long`` and ``limit_exceeded``.
    """

    default_code = ErrorCode.INVALID_REQUEST


class ServerBusy(ZeroEmbedError):
    """Raised when the server refuses new work: its queue is full (``busy``) or it is draining
    (``shutting_down``). The request was not run; retry later or on another replica."""

    default_code = ErrorCode.BUSY


class ServerTimeout(ZeroEmbedError, TimeoutError):
    """Raised when no reply arrived within the client's timeout, or the server gave up on the
    request past its deadline (``timeout``). The server may or may not have run it."""

    default_code = ErrorCode.TIMEOUT


class ServerError(ZeroEmbedError):
    """Raised when the server failed on a valid request (``worker_failed``, ``internal``) or sent
    a reply this client cannot read."""

    default_code = ErrorCode.INTERNAL


_CLASS_BY_CODE: dict[ErrorCode, type[ZeroEmbedError]] = {
    ErrorCode.MALFORMED: InvalidRequest,
    ErrorCode.UNSUPPORTED_VERSION: InvalidRequest,
    ErrorCode.INVALID_REQUEST: InvalidRequest,
    ErrorCode.TEXT_TOO_LONG: InvalidRequest,
    ErrorCode.LIMIT_EXCEEDED: InvalidRequest,
    ErrorCode.BUSY: ServerBusy,
    ErrorCode.SHUTTING_DOWN: ServerBusy,
    ErrorCode.TIMEOUT: ServerTimeout,
    ErrorCode.WORKER_FAILED: ServerError,
    ErrorCode.INTERNAL: ServerError,
}


def error_for(code: str, message: str, index: int | None = None) -> ZeroEmbedError:
    """The exception to raise for an error reply with ``code``; unknown codes become ServerError."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return ServerError(f"{message} (unknown error code {code!r})", code=ErrorCode.INTERNAL, index=index)
    return _CLASS_BY_CODE[known](message, code=known, index=index)
