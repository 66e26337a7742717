"""Export a sentence-transformers / BERT encoder as a fused ONNX artifact.

``import zeroembed.export`` is cheap: torch, transformers and onnx are only
imported when :func:`export_model` runs, so the server can import this package
to build its default model and report a clear error where torch is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError, QualityGateError
from .source import DEFAULT_MODEL_NAME, default_model_dir

if TYPE_CHECKING:
    from .manifest import Manifest
    from .rerank_manifest import RerankManifest

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ExportError",
    "Manifest",
    "QualityGateError",
    "default_model_dir",
    "export_model",
]


def export_model(
    model: str | Path | None,
    out: str | Path,
    *,
    precision: str = "fp32",
    pooling: str | None = None,
    max_seq_length: int | None = None,
    allow_unfused: bool = False,
    int8_portable: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest | RerankManifest:
    """Export ``model`` (local HF dir, or ``None`` for all-MiniLM-L6-v2) into the artifact dir ``out``.

    A cross-encoder (``*ForSequenceClassification``) becomes a rerank artifact (docs/artifact.md).
    ``int8_portable``: only int8 recipes whose accuracy holds on CPUs without VNNI too.

    Raises :class:`ExportError` (one-line message) on any user-facing failure,
    including a missing torch/transformers install; nothing is written then.
    """
    missing = _missing_dependencies()
    if missing:
        raise ExportError(
            f"exporting needs {', '.join(missing)}, which is not installed "
            "(pip install torch==2.13.0 'zeroembed[export]')"
        )
    from .pipeline import export_model as run

    return run(
        model,
        out,
        precision=precision,
        pooling=pooling,
        max_seq_length=max_seq_length,
        allow_unfused=allow_unfused,
        int8_portable=int8_portable,
        force=force,
        log=log,
    )


def _missing_dependencies() -> list[str]:
    from importlib.util import find_spec

    required = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
    return [name for name in required if find_spec(name) is None]


def __getattr__(name: str) -> object:
    # Manifest needs pydantic; load it on first use rather than at import.
    if name == "Manifest":
        from .manifest import Manifest

        return Manifest
    raise AttributeError(name)
