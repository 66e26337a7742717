"""CurveZMQ on the server side: the ``zeroembed keys`` command, and an authenticator that admits
only clients whose public keys are in a directory. Built on pyzmq's ``zmq.auth``; no hand-made crypto."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class CurveError(Exception):
    """CurveZMQ settings that cannot be used; ``str()`` names the problem."""


def write_keys(directory: Path) -> list[Path]:
    """Write ``server.key``/``server.key_secret`` and ``client.key``/``client.key_secret`` into ``directory``."""
    import zmq.auth

    directory.mkdir(parents=True, exist_ok=True)
    existing = [directory / f"{who}.{kind}" for who in ("server", "client") for kind in ("key", "key_secret")
                if (directory / f"{who}.{kind}").exists()]
    if existing:
        raise CurveError(f"{existing[0]} already exists; refusing to overwrite keys")
    written = []
    for who in ("server", "client"):
        public, secret = zmq.auth.create_certificates(directory, who)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    return written


class CurveServer:
    """The server's key pair and the authenticator thread that checks clients' keys."""

    def __init__(self, secret_file: Path, clients_dir: Path) -> None:
        import zmq.auth

        try:
            self.public, self.secret = zmq.auth.load_certificate(secret_file)
        except (OSError, ValueError) as exc:
            raise CurveError(f"cannot read --curve-secret {secret_file}: {exc}") from None
        if not self.secret:
            raise CurveError(f"--curve-secret {secret_file} holds no secret key (pass server.key_secret)")
        if not clients_dir.is_dir():
            raise CurveError(f"--curve-clients {clients_dir} is not a directory of client public keys")
        if not any(clients_dir.glob("*.key")):
            log.warning("--curve-clients %s holds no *.key file: no client can connect", clients_dir)
        self.clients_dir = clients_dir
        self._authenticator = None

    def secure(self, context, sock) -> None:
        """Start the authenticator on ``context`` and make ``sock`` a Curve server (before binding)."""
        from zmq.auth.thread import ThreadAuthenticator

        if self._authenticator is None:
            self._authenticator = ThreadAuthenticator(context, log=logging.getLogger("zeroembed.auth"))
            self._authenticator.start()
            self._authenticator.configure_curve(domain="*", location=str(self.clients_dir))
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


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
    except (CurveError, OSError) as exc:
        print(f"zeroembed keys: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
