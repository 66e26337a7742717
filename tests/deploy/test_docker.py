"""The Dockerfile: lint-clean, and its serve and health-check commands work as the image would run them.

There is no Docker engine here, so the image's contract is checked directly: the
Dockerfile is parsed, and each runtime stage's ENTRYPOINT runs with the stage's
ENV (ports swapped for free ones, the model for the session's artifact, as
``docker run -e`` would), then its HEALTHCHECK command runs against it, with the
same environment, and must pass while the server is up and fail once it is gone.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..dependencies import missing, require
from ..server.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_STAGES = ["gpu", "cpu"]

pytestmark = pytest.mark.timeout(240)


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    user: str = ""
    expose: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def parse_dockerfile(path: Path = DOCKERFILE) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else f"stage{len(stages)}"
            parent = stages.get(words[0])
            stage = Stage(name, words[0], env=dict(parent.env) if parent else {})
            stages[name] = stage
        elif stage is None:
            continue
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            options, _, command = rest.partition("CMD ")
            for option in options.split():
                key, _, value = option[2:].partition("=")
                stage.healthcheck_options[key] = value
            stage.healthcheck = json.loads(command)
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "EXPOSE":
            stage.expose = rest.split()
        elif keyword == "COPY":
            stage.copies.append(rest)
    return stages


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        missing("hadolint", "dev")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_stage_contract(name):
    stages = parse_dockerfile()
    stage = stages[name]
    assert stage.entrypoint == ["zeroembed", "serve"]
    assert stage.healthcheck[:2] == ["zeroembed", "status"]
    assert stage.user and stage.user not in {"root", "0"}
    assert {"5555", "9100"} <= set(stage.expose)
    assert stage.env["ZEROEMBED_BIND"] == "0.0.0.0"
    assert stage.env["ZEROEMBED_MODEL"].startswith("/models/")
    assert "torch" not in " ".join(stage.copies)
    # the model comes from an export stage, and nothing of the builder (torch) is copied
    sources = [c.split("--from=")[1].split()[0] for c in stage.copies if "--from=" in c]
    assert all(s in {"source"} or s.startswith("model-") for s in sources), sources
    assert list(stages)[-1] == "gpu", "the GPU image must be the default (last) target"


def test_gpu_base_matches_onnxruntime_cuda():
    """The CUDA major of the GPU base image is the one onnxruntime-gpu was built for."""
    info = require("onnxruntime.capi.build_and_package_info", "server")
    cuda = getattr(info, "cuda_version", None)
    if not cuda:
        missing("onnxruntime-gpu (this onnxruntime build names no CUDA version)", "server")
    base = parse_dockerfile()["gpu"].base
    tag = base.split(":", 1)[1]
    assert base.startswith("nvidia/cuda:") and "cudnn" in tag and "runtime" in tag
    assert tag.split(".")[0] == cuda.split(".")[0], (base, cuda)


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in [".git", ".venv", "tests", "**/__pycache__", ".pytest_cache"]:
        assert entry in ignored
    for copy in parse_dockerfile()["source"].copies:
        for src in copy.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert src not in ignored


def expected_device(stage: Stage) -> str:
    """The device the stage's server picks here: its ZEROEMBED_DEVICE, and for ``auto`` a GPU when this
    machine has one ONNX Runtime can use (onnxruntime-gpu lists its CUDA provider even without a GPU)."""
    device = stage.env.get("ZEROEMBED_DEVICE", "auto")
    if device != "auto":
        return device
    import onnxruntime

    has_gpu = Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()
    return "cuda" if has_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"


def test_stages_name_their_device():
    stages = parse_dockerfile()
    assert stages["cpu"].env["ZEROEMBED_DEVICE"] == "cpu"
    assert stages["gpu"].env["ZEROEMBED_DEVICE"] == "auto"


def _run(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run an image command here: ``zeroembed`` is this environment's ``zeroembed``."""
    assert command[0] == "zeroembed"
    return subprocess.run([sys.executable, "-m", "zeroembed.cli", *command[1:]], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_image_commands_serve_and_report_health(name, default_artifact, tmp_path):
    stage = parse_dockerfile()[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROEMBED_")}
    env.update({k: v for k, v in stage.env.items() if k.startswith(("ZEROEMBED_", "PYTHON"))})
    # what `docker run -e ... -v artifact:/models/model` would change: the model, free ports, a small pool
    env.update(ZEROEMBED_MODEL=str(default_artifact), ZEROEMBED_PORT=str(free_port()),
               ZEROEMBED_METRICS_PORT=str(free_port()), ZEROEMBED_WORKERS="1", ZEROEMBED_THREADS_PER_WORKER="1",
               HOME=str(tmp_path))
    timeout = float(stage.healthcheck_options.get("timeout", "10s").rstrip("s"))
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "zeroembed.cli", *stage.entrypoint[1:]], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # the image's start period
        while True:
            health = _run(stage.healthcheck, env, timeout)
            if health.returncode == 0:
                break
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, health.stderr
            time.sleep(0.5)
        # bound to 0.0.0.0 as in the container, reached through 127.0.0.1 as the health check does
        assert "tcp://0.0.0.0:" in (tmp_path / "serve.log").read_text()
        verbose = _run(["zeroembed", "status", "--json"], env, timeout)
        status = json.loads(verbose.stdout)
        assert verbose.returncode == 0 and status["healthy"] and status["device"] == expected_device(stage)
        assert status["model"]["path"] == str(default_artifact)
    finally:
        server.terminate()
        code = server.wait(30)
        log.close()
    assert code == 0
    down = _run(stage.healthcheck, env, timeout)
    assert down.returncode == 1
    assert "DOWN" in down.stderr and len(down.stderr.strip().splitlines()) == 1
