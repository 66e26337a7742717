"""A `zeroembed serve` subprocess on free loopback ports, for the compare (and the tests); always stopped."""

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
    """``with ServerProcess(artifact, *flags) as server:`` — started and ready inside, stopped after."""

    def __init__(self, artifact: Path, *flags: str, ready_timeout: float = 180.0, device: str = "cpu",
                 http: bool = False) -> None:
        self.artifact = Path(artifact)
        self.device = device
        self.flags = list(flags)
        self.http_port = free_port() if http else None  # the HTTP API (--http-port), when asked for
        if self.http_port:
            self.flags += ["--http-port", str(self.http_port)]
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.worker_pids: list[int] = []
        self.status: dict = {}
        self._log = tempfile.NamedTemporaryFile(prefix="zeroembed-bench-serve-", suffix=".log", delete=False)

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
        return [sys.executable, "-m", "zeroembed.cli", "serve", "--model", str(self.artifact), "--port",
                str(self.port), "--metrics-port", str(self.metrics_port), "--device", self.device, *self.flags]

    def log(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            with Client(self.endpoint, timeout=1.0) as client:
                self.status = wait_until_ready(self.process, client, self.ready_timeout, self.log)
        except BaseException:
            self.stop()
            raise
        self.worker_pids = [w["pid"] for w in self.status.get("workers", []) if w.get("pid")]

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it lingers; never leave a worker behind."""
        if self.process is None:
            return None
        code = terminate(self.process, self.worker_pids, timeout)
        self._log.close()
        return code

    def cleanup_log(self) -> None:
        try:
            os.unlink(self._log.name)
        except OSError:
            pass
