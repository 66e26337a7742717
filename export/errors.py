"""The exporter's one exception type.

Every failure a user can cause or fix (bad path, unsupported model, parity
below threshold) is an :class:`ExportError` whose ``str()`` is a single line
fit for ``zeroembed export: error: <message>``. Anything else escaping the
exporter is a bug.
"""

from __future__ import annotations


class ExportError(Exception):
    """A user-facing export failure; ``str(err)`` is the one-line message.

    ``exit_code`` is what the CLI returns: 2 for bad input (argparse's
    convention), 1 when the model was fine but the artifact failed a quality
    gate (fusion or parity).
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        # Keep the message on one line whatever the underlying library said.
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class QualityGateError(ExportError):
    """The artifact was built but failed the fusion or parity gate."""

    exit_code = 1
