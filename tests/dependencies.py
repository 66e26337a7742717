"""Optional test dependencies: a skip that names the extra to install, and no skip at all under CI.

Every test that needs something outside the base install asks through :func:`require` (a module) or
:func:`missing` (anything else, e.g. a binary). Locally a missing dependency skips the test with the
``pip install`` line that brings it; under ``CI=true`` it fails the run instead, so a broken CI
environment cannot turn a suite of checks into a suite of skips.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["IN_CI", "missing", "require"]

IN_CI = os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def missing(what: str, extra: str = "", *, install: str = "") -> NoReturn:
    """Skip (locally) or fail (under CI) because ``what`` is not installed; the package's ``extra``
    brings it, or for something pip does not install, the ``install`` command."""
    message = f"{what} is not installed: {install or f'pip install -e .[{extra}]'}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing test dependency fails the run)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or :func:`missing` naming ``extra``. Usable at module level and in fixtures."""
    try:
        return pytest.importorskip(module)
    except pytest.skip.Exception:
        missing(module, extra)
