"""A missing test dependency: a skip naming the extra locally, a failure under CI (tests/dependencies.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import dependencies
from .dependencies import missing, require

ABSENT = "zeroembed_no_such_module"
ROOT = Path(__file__).resolve().parents[1]


def test_present_module_is_returned():
    assert require("json", "dev").__name__ == "json"


def test_locally_a_skip_names_the_extra(monkeypatch):
    monkeypatch.setattr(dependencies, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match=r"zeroembed_no_such_module is not installed: pip install -e \.\[export\]"):
        require(ABSENT, "export")
    with pytest.raises(pytest.skip.Exception, match="apt-get install podman"):
        missing("podman", install="apt-get install podman")


def test_under_ci_it_fails(monkeypatch):
    monkeypatch.setattr(dependencies, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"pip install -e \.\[dev\] \(CI=true"):
        require(ABSENT, "dev")


@pytest.mark.parametrize(("value", "in_ci"), [("true", True), ("1", True), ("", False), ("false", False)])
def test_ci_is_read_from_the_environment(value, in_ci):
    code = "import tests.dependencies as d; print(d.IN_CI)"
    out = subprocess.run([sys.executable, "-c", code], env={"CI": value, "PATH": ""}, capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == str(in_ci)


def test_a_session_fixture_fails_the_run_under_ci(tmp_path):
    """The way ~140 tests depend on torch: through a session fixture. Under CI its absence is an error."""
    (tmp_path / "conftest.py").write_text(f"""
import pytest
from tests.dependencies import require

@pytest.fixture(scope="session")
def needs_it():
    require("{ABSENT}", "export")
""")
    (tmp_path / "test_one.py").write_text("def test_one(needs_it):\n    pass\n")

    def run(ci: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": ci}
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    local = run("")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    assert "pip install -e .[export]" in local.stdout
    ci = run("true")
    assert ci.returncode == 1 and "1 error" in ci.stdout, ci.stdout
    assert "CI=true: a missing test dependency fails the run" in ci.stdout
