"""Fixtures: one real server on the default model per test module, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server on the default model for a module's tests: 2 workers, small batches."""
    running = start_server(default_artifact, tmp_path_factory.mktemp("server"), "--workers", "2",
                           "--threads-per-worker", "1", "--max-batch-size", "8")
    yield running
    assert running.stop() == 0, running.log()
