"""CurveZMQ on the client side: load key files and configure a socket with them.

Key files are pyzmq's certificate format (``zmq.auth``), as ``zeroembed keys DIR`` writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
import zmq.auth

from .errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The server's public key and this client's key pair."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` encrypt and authenticate to the server (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret


def load_client_keys(server_key: str | os.PathLike | None, client_key: str | os.PathLike | None) -> CurveKeys | None:
    """Read ``server_key`` (the server's public ``server.key``) and ``client_key`` (this client's
    ``client.key_secret``); None when neither is given."""
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise InvalidRequest("CurveZMQ needs both server_key (server.key) and client_key (client.key_secret)")
    server_public, _ = _load(server_key, need_secret=False)
    client_public, client_secret = _load(client_key, need_secret=True)
    return CurveKeys(server_public, client_public, client_secret)  # type: ignore[arg-type]


def _load(path: str | os.PathLike, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read CurveZMQ key file {os.fspath(path)!r}: {exc}") from None
    if need_secret and not secret:
        raise InvalidRequest(f"{os.fspath(path)!r} holds no secret key; pass the client's .key_secret file")
    return public, secret
