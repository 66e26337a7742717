"""A `zeroembed serve` child process on free loopback ports, always stopped: the one harness that the
tests, the benchmarks and scripts use to run a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from zeroembed.client import Client, ZeroEmbedError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, client: Client, timeout: float, log: Callable[[], str]) -> dict:
    """Ask ``client`` for the server's status until it answers; return it. RuntimeError (with the
    server's log) if the process exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"zeroembed serve exited with {process.returncode}:\n{log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"zeroembed serve did not become ready in {timeout}s:\n{log()}")
        try:
            return client.status()
        except ZeroEmbedError:
            continue


def terminate(process: subprocess.Popen, worker_pids: list[int], timeout: float = 15.0) -> int:
    """SIGTERM and wait; SIGKILL if it lingers; never leave a worker behind. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for pid in worker_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return process.returncode


class ServerProcess:
    """``with ServerProcess(artifact, *flags) as server:`` — started and ready inside, stopped after.

    ``log_dir`` keeps the server's output there (else a temporary file); ``env`` adds environment
    variables; ``client_keys`` are the CurveZMQ keys :meth:`client` passes (server_key, client_key);
    ``http`` also serves the HTTP API on a free port (``http_port``, ``http_url``).
    """

    def __init__(self, artifact: Path | None, *flags: str, ready_timeout: float = 180.0, device: str = "cpu",
                 env: dict[str, str] | None = None, log_dir: Path | None = None,
                 client_keys: dict | None = None, http: bool = False) -> None:
        self.artifact = None if artifact is None else Path(artifact)  # None: the default model
        self.device = device
        self.flags = list(flags)
        self.env = env or {}
        self.http_port = free_port() if http else None  # the HTTP API (--http-port), when asked for
        if self.http_port:
            self.flags += ["--http-port", str(self.http_port)]
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.ready_timeout = ready_timeout
        self.client_keys = dict(client_keys or {})
        self.process: subprocess.Popen | None = None
        self.worker_pids: list[int] = []
        self.status: dict = {}
        if log_dir is None:
            handle, name = tempfile.mkstemp(prefix="zeroembed-serve-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        else:
            self.log_path = Path(log_dir) / f"serve-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str | None:
        """The OpenAI route's base URL (``/v1``), when the server was started with its HTTP API."""
        return f"http://127.0.0.1:{self.http_port}/v1" if self.http_port else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def command(self) -> list[str]:
        model = [] if self.artifact is None else ["--model", str(self.artifact)]
        return [sys.executable, "-m", "zeroembed.cli", "serve", *model, "--port", str(self.port),
                "--metrics-port", str(self.metrics_port), "--device", self.device, *self.flags]

    def client(self, timeout: float = 30.0) -> Client:
        """A client of this server (with its CurveZMQ keys, if any)."""
        return Client(self.endpoint, timeout=timeout, **self.client_keys)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, wait: bool = True) -> None:
        """Start the process; with ``wait``, return once it answers status (stopped again on failure)."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> dict:
        """Wait until the server answers status and return it; RuntimeError with its log otherwise."""
        try:
            with self.client(timeout=1.0) as client:
                self.status = wait_until_ready(self.process, client, timeout or self.ready_timeout, self.log)
        except BaseException:
            self.stop()
            raise
        self.worker_pids = [w["pid"] for w in self.status.get("workers", []) if w.get("pid")]
        return self.status

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it lingers; never leave a worker behind. Returns the exit code."""
        if self.process is None:
            return None
        return terminate(self.process, self.worker_pids, timeout)

    def cleanup_log(self) -> None:
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
