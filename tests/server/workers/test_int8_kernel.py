"""The int8 kernel probe, on this CPU and on an emulated one without VNNI, and what the server does with it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from zeroembed.benchmarks.int8isa import cpu_features
from zeroembed.server import models
from zeroembed.server.artifact import open_artifact
from zeroembed.server.config import load_settings
from zeroembed.server.errors import StartupError
from zeroembed.server.metrics import Metrics
from zeroembed.server.workers import int8_kernel
from zeroembed.server.workers.int8_kernel import PROBE_MODEL, build_probe_model, check_int8_artifact, \
    u8s8_products_exact

from ...dependencies import missing, require
from ..servers import free_port


def vnni() -> bool:
    """Whether numpy sees a VNNI flavour on this CPU (ONNX Runtime's exact u8 x s8 kernels need one)."""
    return any(on for name, on in cpu_features().items() if "VNNI" in name)


def test_shipped_probe_is_the_one_the_builder_makes():
    onnx = require("onnx", "export")
    shipped = onnx.load(str(PROBE_MODEL))
    built = onnx.load_from_string(build_probe_model())
    assert shipped.graph == built.graph, "int8_probe.onnx is stale: run python -m zeroembed.server.workers.int8_kernel"
    onnx.checker.check_model(built, full_check=True)


def test_probe_matches_the_cpu():
    assert u8s8_products_exact() is vnni()


def test_probe_sees_the_saturating_kernel_on_a_cpu_without_vnni():
    qemu = shutil.which("qemu-x86_64") or missing("qemu-x86_64", install="apt-get install qemu-user")
    code = "from zeroembed.server.workers.int8_kernel import u8s8_products_exact; print(u8s8_products_exact())"
    done = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=True)
    assert done.stdout.strip() == "False", done.stderr


class Manifest:  # the two fields check_int8_artifact reads
    def __init__(self, precision: str, full_range: bool | None, recorded: bool = True) -> None:
        self.precision = precision
        self.quantization = type("Q", (), {"full_range_weights": full_range})() if recorded else None


def test_full_range_int8_is_refused_where_the_kernel_saturates():
    with pytest.raises(StartupError, match="m: this int8 artifact's weights use the full int8 range.*--int8-portable"):
        check_int8_artifact("m", Manifest("int8", True), exact=False)


@pytest.mark.parametrize("manifest, exact", [(Manifest("int8", True), True), (Manifest("int8", False), False),
                                             (Manifest("fp32", None, recorded=False), False)],
                         ids=["exact kernel", "7-bit weights", "fp32"])
def test_what_holds_everywhere_is_served(manifest, exact):
    assert check_int8_artifact("m", manifest, exact=exact) is None


@pytest.mark.parametrize("recorded", [True, False], ids=["field null", "no quantization section"])
def test_an_older_int8_manifest_is_served_with_a_warning(recorded):
    warning = check_int8_artifact("m", Manifest("int8", None, recorded), exact=False)
    assert warning and "does not say whether its weights use the full int8 range" in warning


def test_the_server_refuses_at_load_on_a_saturating_cpu(full_range_int8_artifact, tmp_path, monkeypatch):
    artifact = open_artifact(full_range_int8_artifact)
    assert artifact.manifest.quantization.full_range_weights is True
    monkeypatch.setattr(int8_kernel, "u8s8_products_exact", lambda: False)
    settings = load_settings(device="cpu")
    with pytest.raises(StartupError, match="full int8 range"):
        models.load_model("tiny", artifact, settings, Metrics(), tmp_path / "socks")
    monkeypatch.setattr(int8_kernel, "u8s8_products_exact", lambda: True)  # a VNNI CPU: it loads
    models.load_model("tiny", artifact, settings, Metrics(), tmp_path / "socks").close()


def test_serve_on_a_cpu_without_vnni_refuses_a_full_range_int8_artifact(full_range_int8_artifact):
    # End to end and nothing faked: `zeroembed serve` itself under an emulated AVX2 CPU. It refuses at load,
    # before any worker starts; were the check broken, it would serve until the timeout fails the test.
    qemu = shutil.which("qemu-x86_64") or missing("qemu-x86_64", install="apt-get install qemu-user")
    done = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-m", "zeroembed.cli", "serve", "--model",
                           str(full_range_int8_artifact), "--port", str(free_port()), "--metrics-port", "0",
                           "--device", "cpu"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert "this int8 artifact's weights use the full int8 range" in done.stderr
    assert "--int8-portable" in done.stderr
