"""Build an artifact in a staging directory next to ``out``; publish it by renaming, or leave nothing.

A failed or interrupted export leaves nothing behind, and an existing artifact
is only replaced (``force``) by a complete one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ExportError


@contextmanager
def staged(out: Path, source: Path, force: bool) -> Iterator[Path]:
    """The staging directory for ``out``, renamed to ``out`` when the body finishes, removed when it raises.

    ``source`` is the model folder, which ``out`` must not hold; ``force`` replaces an existing ``out``.
    """
    staging, created = _prepare_out(out, source, force)
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp made it 0700; an artifact is meant to be shared
        try:
            _publish(staging, out)
        except OSError as err:  # e.g. another process created ``out`` meanwhile
            raise ExportError(f"cannot move the artifact into {out}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise


def _prepare_out(out: Path, source: Path, force: bool) -> tuple[Path, list[Path]]:
    """Check ``out`` and create the staging dir next to it; returns (staging, parents created)."""
    if out.exists() or out.is_symlink():
        if not force:
            raise ExportError(f"output {out} already exists (pass --force to replace it)")
        if not out.is_dir():
            raise ExportError(f"output {out} exists and is not a directory; refusing to replace it")
        if out.resolve() == source or out.resolve() in source.parents:
            raise ExportError(f"output {out} holds the source model; refusing to replace it")
    created: list[Path] = []
    parent = out.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write output {out}: {parent} is not a directory")
    try:
        for directory in reversed(created):
            directory.mkdir()
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        _remove_created(created)
        raise ExportError(f"cannot write output {out}: {err.strerror or err}") from err
    return staging, created


def _remove_created(created: list[Path]) -> None:
    for directory in created:  # innermost first
        try:
            directory.rmdir()
        except OSError:
            break


def _publish(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, swapping out an existing directory."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
