"""The errors of a bulk job: one base class, each ``str()`` a one-line message for a person."""

from __future__ import annotations


class BulkError(Exception):
    """A bulk job that cannot run or go on; ``str()`` says why and, where it can, what to do."""


class InputError(BulkError):
    """An input that cannot be read or does not hold what the job needs (raised before anything is written)."""


class OutputError(BulkError):
    """An output folder the job may not write to: another job's, or not ours at all."""


class EngineError(BulkError):
    """The engine could not run the model (it would not load, or a batch failed past its retries)."""
