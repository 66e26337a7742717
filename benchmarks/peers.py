"""The peers in ``zeroembed bench --compare --peers``: other embedding servers and libraries, same model,
same texts, same load, same run.

- infinity-emb over its HTTP API (OpenAI ``/embeddings``), with its default torch engine
  (sentence-transformers) and its ONNX engine (optimum), each its own server process;
- fastembed in process (ONNX Runtime), in a subprocess of the peers' interpreter that stays up for the
  whole run so its rounds interleave with the others.

They live in their own virtual environment, made by ``benchmarks/peers/setup.sh``, so their pins never
touch zeroembed's. Nothing downloads: infinity's torch engine reads the model folder itself; the ONNX
engine and fastembed need an ONNX file in the folder, which the bundled model does not ship, so a copy of
the folder gets one, exported offline by optimum in the peers' environment (what fastembed's and
infinity's published ONNX models are too). A peer that cannot run says why (:class:`PeerUnavailable`);
the compare prints the reason in place of its rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from zeroembed.server.launch import free_port

SETUP = "bash benchmarks/peers/setup.sh"
FASTEMBED_RUNNER = Path(__file__).resolve().parent / "peers" / "fastembed_runner.py"
# Offline everywhere: no hub look-ups, no telemetry.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0"}


class PeerUnavailable(Exception):
    """A peer cannot run here; the message says why (shown in the compare in place of its rows)."""


def default_venv() -> Path:
    """``ZEROEMBED_PEERS_VENV``, else ``~/.cache/zeroembed/peers-venv`` (setup.sh's default too)."""
    return Path(os.environ.get("ZEROEMBED_PEERS_VENV") or Path.home() / ".cache" / "zeroembed" / "peers-venv")


class PeerEnv:
    """The peers' virtual environment."""

    def __init__(self, venv: Path | None = None) -> None:
        self.venv = Path(venv or default_venv()).expanduser()
        self.python = self.venv / "bin" / "python"
        if not self.python.exists():
            raise PeerUnavailable(f"no peers environment at {self.venv}: make it with `{SETUP} {self.venv}`")

    def env(self, threads: int) -> dict[str, str]:
        return {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads)}

    def versions(self) -> dict[str, str]:
        code = ("import importlib.metadata as m, json\nout = {}\n"
                "for n in ('infinity-emb', 'fastembed', 'torch', 'sentence-transformers', 'optimum', 'onnxruntime'):\n"
                "    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: out[n] = None\nprint(json.dumps(out))")
        done = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def onnx_model_dir(self, source: Path, log) -> Path:
        """A copy of the model folder with ``model.onnx`` (optimum's export), made once per folder."""
        target = self.venv / "models" / f"{source.parent.name}-{source.name}-onnx"
        if (target / "model.onnx").is_file():
            _same_truncation(target)
            return target
        log(f"peers: exporting {source} to ONNX with optimum (once) into {target}")
        staging = Path(tempfile.mkdtemp(prefix=".onnx-", dir=self.venv))
        try:
            shutil.copytree(source, staging / "folder")
            done = subprocess.run([str(self.venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(source),
                                   "--task", "feature-extraction", str(staging / "export")],
                                  capture_output=True, text=True, env=self.env(2), timeout=900)
            if done.returncode != 0 or not (staging / "export" / "model.onnx").is_file():
                raise PeerUnavailable(f"optimum could not export {source} to ONNX offline: "
                                      f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
            shutil.copy(staging / "export" / "model.onnx", staging / "folder" / "model.onnx")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / "folder", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _same_truncation(target)
        return target


def _same_truncation(folder: Path) -> None:
    """Truncate where sentence-transformers does (``max_seq_length``, 256 for the default model), not at the
    tokenizer's ``model_max_length`` (512 there), which fastembed and optimum read: otherwise their overlong
    texts run at twice the length every other row uses."""
    st_config, tok_config = folder / "sentence_bert_config.json", folder / "tokenizer_config.json"
    try:
        limit = json.loads(st_config.read_text())["max_seq_length"]
        config = json.loads(tok_config.read_text())
    except (OSError, ValueError, KeyError):
        return
    if config.get("model_max_length") != limit:
        config["model_max_length"] = limit
        tok_config.write_text(json.dumps(config, indent=2))


class InfinityServer:
    """``infinity_emb v2`` on a free loopback port, one engine; always stopped (``with``)."""

    def __init__(self, peers: PeerEnv, model_dir: Path, engine: str, threads: int, batch_size: int = 32) -> None:
        self.port = free_port()
        self.engine = engine
        self.model_dir = model_dir
        # Run in the model folder and name it ".": infinity-emb 0.0.78 hands optimum (2.x) the ONNX file's
        # path as found under --model-id, and optimum takes only a path relative to the folder.
        self.model_id = "." if engine == "optimum" else str(model_dir)
        self.command = [str(peers.venv / "bin" / "infinity_emb"), "v2", "--model-id", self.model_id, "--engine",
                        engine, "--device", "cpu", "--port", str(self.port), "--host", "127.0.0.1",
                        "--batch-size", str(batch_size), "--no-model-warmup"]
        self._env = peers.env(threads)
        self._log = tempfile.NamedTemporaryFile(prefix=f"zeroembed-peer-infinity-{engine}-", suffix=".log",
                                                delete=False)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_name(self) -> str:
        return self.model_id  # infinity names a model by its --model-id

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> InfinityServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 600.0) -> None:
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self._env,
                                        cwd=self.model_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                tail = self.log().strip().splitlines()[-3:]
                self.stop()
                raise PeerUnavailable(f"infinity-emb ({self.engine}) exited with {self.process.returncode}: "
                                      + " | ".join(line.strip() for line in tail))
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return self._probe()
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PeerUnavailable(f"infinity-emb ({self.engine}) did not answer within {timeout:.0f} s")
            time.sleep(0.5)

    def _probe(self, timeout: float = 120.0) -> None:
        """One real request: a server can start and still fail every batch (its error only in its log)."""
        body = json.dumps({"input": ["probe"], "model": self.model_name}).encode()
        request = urllib.request.Request(f"{self.url}/embeddings", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                if reply.status == 200 and json.loads(reply.read())["data"]:
                    return
                why = f"HTTP {reply.status}"
        except (OSError, ValueError, KeyError) as exc:
            why = str(exc)
        errors = [line.strip() for line in self.log().splitlines() if "Error" in line or "error" in line]
        self.stop()
        raise PeerUnavailable(f"infinity-emb ({self.engine}) started but could not embed ({why}); its log: "
                              + (errors[-1] if errors else "no error line"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: uvicorn and any helpers
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()

    def cleanup_log(self) -> None:
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


class FastembedRunner:
    """fastembed in process, in the peers' interpreter (benchmarks/peers/fastembed_runner.py), kept up for
    the run: each :meth:`rate` call encodes the corpus once and answers its seconds."""

    def __init__(self, peers: PeerEnv, model_dir: Path, texts: list[str], threads: int) -> None:
        self._texts_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(texts, self._texts_file)
        self._texts_file.close()
        self.process = subprocess.Popen(
            [str(peers.python), str(FASTEMBED_RUNNER), str(model_dir), self._texts_file.name, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=peers.env(threads))
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            err = self.process.stderr.read().strip().splitlines()[-2:]
            raise PeerUnavailable(f"fastembed exited: {' | '.join(err)}")
        reply = json.loads(line)
        if "error" in reply:
            raise PeerUnavailable(f"fastembed: {reply['error']}")
        return reply

    def run(self, batch_size: int, limit: int | None = None) -> dict:
        """{"seconds", "texts", ...} of one pass over the corpus (or its first ``limit`` texts, one by one
        when ``batch_size`` is 1)."""
        self.process.stdin.write(json.dumps({"batch_size": batch_size, "limit": limit}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        os.unlink(self._texts_file.name)

