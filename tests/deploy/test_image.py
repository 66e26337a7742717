"""The CPU image, built from the Dockerfile unchanged and run as `docker run` would run it.

There is no Docker engine here: `podman build --isolation chroot` builds the Dockerfile (RUN steps in a
chroot) and `buildah run --isolation chroot` runs a command inside the image as its USER, with its ENV
and WORKDIR, sharing this machine's network (so the client reaches the server on loopback). The public
base image is out of reach, so deploy/image/standin-base.sh first makes a stand-in for it from Debian
packages, under the name the Dockerfile uses (docs/deploy.md, "The image, built and run here").

Opt-in (`pytest --image`, `make image-test`, a step of `.ci/run`): it needs root, podman, buildah and
debootstrap, and builds for minutes. ZEROEMBED_TEST_IMAGE names an image already built to test instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from zeroembed.client import Client, ZeroEmbedError

from ..dependencies import IN_CI, missing
from ..server.servers import free_port
from .test_docker import ROOT, parse_dockerfile

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

TAG = "localhost/zeroembed:cpu"
TOOLS = {"podman": "podman", "buildah": "buildah", "debootstrap": "debootstrap"}  # program: Debian package
TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "naïve café, Zürich — ünïcödé", "東京",
         " ".join(["a considerably longer sentence that goes on"] * 12)]


def report(config: pytest.Config, line: str) -> None:
    """A line in pytest's output, even with capture on: the build's timings belong in the CI log."""
    with config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        config.pluginmanager.get_plugin("terminalreporter").write_line(f"image: {line}")


def run_logged(command: list[str], log: Path, timeout: float) -> float:
    """Run ``command`` with its output to ``log``; its wall time in seconds. Fails with the log's tail."""
    start = time.monotonic()
    with log.open("wb") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n" + \
        "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    return time.monotonic() - start


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU target built from this checkout (or ZEROEMBED_TEST_IMAGE); its name."""
    for program, package in TOOLS.items():
        if shutil.which(program) is None:
            missing(program, install=f"apt-get install {package} (or make image-test, as root)")
    given = os.environ.get("ZEROEMBED_TEST_IMAGE")
    if given:
        return given
    logs = tmp_path_factory.mktemp("image-build")
    base = parse_dockerfile()["cpu"].base
    if image_exists(base) and not IN_CI:  # CI caches nothing between runs, not even the base
        report(pytestconfig, f"base {base} is in local storage; not remade")
    else:
        seconds = run_logged([str(ROOT / "deploy/image/standin-base.sh"), "cpu"], logs / "base.log", 900)
        report(pytestconfig, f"base stand-in {base} made from Debian packages in {seconds:.0f} s")
    seconds = run_logged([str(ROOT / "deploy/image/build.sh"), "cpu", TAG], logs / "build.log", 1500)
    size = json.loads(subprocess.run(["podman", "image", "inspect", TAG], capture_output=True, text=True,
                                     check=True).stdout)[0]["Size"]
    report(pytestconfig, f"podman build --target cpu: {seconds:.0f} s, image {size / 1e6:.0f} MB ({TAG})")
    return TAG


@dataclass
class ImageConfig:
    env: dict[str, str]
    entrypoint: list[str]
    user: str
    healthcheck: list[str]
    stop_signal: str


@pytest.fixture(scope="module")
def config(image: str) -> ImageConfig:
    """What the built image itself says (not the Dockerfile): what `docker run` would go by."""
    inspected = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True,
                                          check=True).stdout)[0]
    conf = inspected["Config"]
    test = (inspected.get("Healthcheck") or {}).get("Test") or []
    assert test[:1] == ["CMD"], f"the image has no exec-form HEALTHCHECK: {test}"
    return ImageConfig(env=dict(e.split("=", 1) for e in conf.get("Env", [])), entrypoint=conf["Entrypoint"],
                       user=conf.get("User", ""), healthcheck=test[1:], stop_signal=conf.get("StopSignal", ""))


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image (buildah's, for `buildah run`); removed after."""
    name = f"zeroembed-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["buildah", "from", "--pull-never", "--name", name, image], capture_output=True, check=True)
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def inside(container: str, command: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The command line running ``command`` in ``container`` as the image's USER with its ENV plus ``env``
    (as `docker run -e` adds)."""
    flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return ["buildah", "run", "--isolation", "chroot", *flags, container, "--", *command]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def main_process(runner: subprocess.Popen, entrypoint: list[str]) -> int:
    """The pid of the container's main process (the ENTRYPOINT), below `buildah run`'s helpers: what
    `docker stop` signals. (`buildah run` does not pass signals on.)"""
    for pid in descendants(runner.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if not Path(argv[0]).name.startswith("buildah") and entrypoint[-1] in argv:
            return pid
    raise AssertionError(f"no process runs {entrypoint} below buildah run ({runner.pid})")


def reference_vectors(artifact: Path) -> np.ndarray:
    """The fp32 artifact exported on this machine, run in process one text at a time."""
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    inputs = {i.name for i in session.get_inputs()}
    rows = []
    for text in TEXTS:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        rows.append(session.run(["sentence_embedding"], feeds)[0][0])
    return np.stack(rows)


def test_image_runs_as_the_dockerfile_says(config: ImageConfig):
    stage = parse_dockerfile()["cpu"]
    assert config.entrypoint == stage.entrypoint
    assert config.healthcheck == stage.healthcheck
    assert config.user == stage.user
    assert config.stop_signal == "SIGTERM"
    assert {k: config.env[k] for k in stage.env if k.startswith("ZEROEMBED_")} == \
        {k: v for k, v in stage.env.items() if k.startswith("ZEROEMBED_")}


def test_user_writes_only_its_home(container: str, config: ImageConfig):
    who = subprocess.run(inside(container, ["sh", "-c", "id -u; pwd"]), capture_output=True, text=True, timeout=60)
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == [config.user, "/home/zeroembed"]
    home = subprocess.run(inside(container, ["touch", "/home/zeroembed/written"]), capture_output=True, timeout=60)
    assert home.returncode == 0, home.stderr
    package = subprocess.run(inside(container, ["python", "-c", "import zeroembed.server as s; print(s.__path__[0])"]),
                             capture_output=True, text=True, timeout=60)
    assert package.returncode == 0, package.stderr
    # The code the server runs, the system and the root. (/models is not among them: the Dockerfile's
    # COPY --chown gives the model to this user; docs/deploy.md.)
    for outside in [f"{package.stdout.strip()}/written", "/usr/local/bin/written", "/etc/written", "/written"]:
        denied = subprocess.run(inside(container, ["touch", outside]), capture_output=True, text=True, timeout=60)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (outside, denied.stderr)


def test_serves_the_default_model_and_stops_on_sigterm(container: str, config: ImageConfig, default_artifact: Path,
                                                      tmp_path: Path):
    # What `docker run -e` would change: free ports, since the container shares this machine's network.
    port, metrics_port = free_port(), free_port()
    env = {"ZEROEMBED_PORT": str(port), "ZEROEMBED_METRICS_PORT": str(metrics_port)}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        runner = subprocess.Popen(inside(container, config.entrypoint, env), stdout=log, stderr=subprocess.STDOUT)
    try:
        # The HEALTHCHECK command, inside the image, until it passes (the image's start period bounds it).
        deadline = time.monotonic() + 120
        while True:
            health = subprocess.run(inside(container, config.healthcheck, env), capture_output=True, text=True,
                                    timeout=60)
            if health.returncode == 0:
                break
            assert runner.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, health.stderr + log_path.read_text(errors="replace")
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            status = client.status()
            vectors = client.encode(TEXTS)
        assert status["device"] == "cpu" and status["model"]["path"] == "/models/model"
        assert status["model"]["manifest"]["precision"] == "fp32"
        expected = reference_vectors(default_artifact)
        assert vectors.shape == expected.shape and vectors.dtype == np.float32
        cosines = np.sum(vectors * expected, axis=1) / (np.linalg.norm(vectors, axis=1)
                                                         * np.linalg.norm(expected, axis=1))
        assert cosines.min() >= 0.9999, cosines
        os.kill(main_process(runner, config.entrypoint), signal.SIGTERM)
        code = runner.wait(60)
    finally:
        if runner.poll() is None:
            for pid in reversed(descendants(runner.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            runner.kill()
            runner.wait(10)
    assert code == 0, log_path.read_text(errors="replace")
    log = log_path.read_text(errors="replace")
    assert f"tcp://0.0.0.0:{port}" in log
    # Down: the health check now fails, from inside the image, as the container runtime would see it.
    with pytest.raises(ZeroEmbedError):
        with Client(f"tcp://127.0.0.1:{port}", timeout=2) as client:
            client.status()
    down = subprocess.run(inside(container, config.healthcheck, env), capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "DOWN" in down.stderr
