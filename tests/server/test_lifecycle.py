"""Starting, refusing and stopping: bad starts exit 2 with a message; signals stop cleanly (draining: test_drain.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from zeroembed.client import ServerBusy, ServerTimeout
from zeroembed.server.artifact import ArtifactError

from .servers import RunningServer, start_server, wait_ready


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def serve(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zeroembed.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_sigint_stops_cleanly_too(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path)
    server.process.send_signal(2)
    assert server.process.wait(10) == 0
    assert not any(pid_alive(pid) for pid in server.worker_pids)
    with pytest.raises(ServerTimeout):
        with server.client(timeout=0.5) as client:
            client.encode(["anyone there?"])


def test_queue_limit_answers_busy_at_once(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--max-queue", "4")
    try:
        with server.client() as client:
            with pytest.raises(ServerBusy) as info:  # refused as it comes: nothing ran, nothing waited
                client.encode(["one", "two", "three", "four", "five"])
            assert info.value.code.value == "busy"
            assert client.encode(["one", "two"]).shape == (2, 384)
    finally:
        assert server.stop() == 0


def test_port_in_use_is_a_clear_error(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path)
    try:
        clash = serve("--model", str(default_artifact), "--port", str(server.port), "--metrics-port", "0",
                      "--device", "cpu")
        assert clash.returncode == 2
        assert f"cannot listen on tcp://127.0.0.1:{server.port}" in clash.stderr
        assert "Traceback" not in clash.stderr
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/nonexistent/model"], "is not a directory"),
        (["--port", "0"], "--port"),
        (["--workers", "-1"], "--workers"),
        (["--max-batch-tokens", "16"], "below the model's max sequence length"),
    ],
)
def test_bad_start_exits_2_naming_the_problem(default_artifact, args, needle):
    if "--model" not in args:
        args = ["--model", str(default_artifact), *args]
    result = serve(*args, "--metrics-port", "0", "--device", "cpu")
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_artifact_without_manifest_is_refused(default_artifact, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(default_artifact, broken)
    (broken / "manifest.json").unlink()
    result = serve("--model", str(broken), "--metrics-port", "0", "--device", "cpu")
    assert result.returncode == 2 and "manifest.json is missing" in result.stderr


def test_default_model_comes_from_the_cache(default_artifact, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(default_artifact, cache / "all-MiniLM-L6-v2-fp32")
    server = RunningServer(None, env={"ZEROEMBED_CACHE_DIR": str(cache)}, log_dir=tmp_path)
    server.start(wait=False)
    try:
        wait_ready(server)
        with server.client() as client:
            status = client.status()
        assert status["model"]["path"] == str(cache / "all-MiniLM-L6-v2-fp32")
    finally:
        assert server.stop() == 0


def test_missing_exporter_says_what_to_install(monkeypatch, tmp_path):
    from zeroembed.server import default_model

    monkeypatch.setitem(sys.modules, "zeroembed.export", None)  # as if the export extra were absent
    with pytest.raises(ArtifactError, match=r"zeroembed\[export\]"):
        default_model.default_artifact(tmp_path, "cpu")


def test_a_long_context_model_gets_a_batch_budget_that_fits_its_longest_text(default_artifact, tmp_path):
    import json

    long_context = tmp_path / "long-context"
    shutil.copytree(default_artifact, long_context)
    manifest = json.loads((long_context / "manifest.json").read_text())
    manifest["max_seq_length"] = 4096  # above the CPU default budget of 2048 tokens a batch
    (long_context / "manifest.json").write_text(json.dumps(manifest))
    server = start_server(long_context, tmp_path, "--workers", "1")  # no --max-batch-tokens: the default
    try:
        with server.client() as client:
            assert client.encode(["hello"]).shape == (1, 384)
    finally:
        assert server.stop() == 0
    assert "batches of up to 4096 tokens" in server.log()
