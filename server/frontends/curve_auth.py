"""CurveZMQ on the client port: an authenticator that admits only clients whose public keys are in a
directory. Built on pyzmq's ``zmq.auth``; no hand-made crypto. Keys are written by ``zeroembed keys``
(client/keys.py)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class CurveError(Exception):
    """CurveZMQ settings that cannot be used; ``str()`` names the problem."""


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
