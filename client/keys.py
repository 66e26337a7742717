"""CurveZMQ key files: ``zeroembed keys DIR`` writes them; a client loads its own and the server's.

Key files are pyzmq's certificate format (``zmq.auth``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

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


def write_keys(directory: Path) -> list[Path]:
    """Write ``server.key``/``server.key_secret`` and ``client.key``/``client.key_secret`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = [directory / f"{who}.{kind}" for who in ("server", "client") for kind in ("key", "key_secret")
                if (directory / f"{who}.{kind}").exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} already exists; refusing to overwrite keys")
    written = []
    for who in ("server", "client"):
        public, secret = zmq.auth.create_certificates(directory, who)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    return written


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``keys`` subcommand."""
    parser = subparsers.add_parser(
        "keys", help="write CurveZMQ key pairs for a server and a client",
        description="Write server.key, server.key_secret, client.key and client.key_secret into DIR. "
                    "Give the server its secret and a directory of admitted clients' .key files; give each "
                    "client server.key and its own .key_secret.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.set_defaults(handler=_run_keys)


def _run_keys(args: argparse.Namespace) -> int:
    try:
        written = write_keys(args.directory)
    except OSError as exc:
        print(f"zeroembed keys: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
