"""The default model: exported once from the embedded all-MiniLM-L6-v2 into a cache directory."""

from __future__ import annotations

import logging
from pathlib import Path

from .artifact import ArtifactError

log = logging.getLogger(__name__)


def default_artifact(cache_dir: Path, device: str) -> Path:
    """The default model's artifact directory, exporting it on first use.

    fp16 on CUDA, fp32 on CPU. Needs the ``export`` extra (torch) the first time only.
    """
    precision = "fp16" if device == "cuda" else "fp32"
    try:
        from zeroembed.export import DEFAULT_MODEL_NAME, ExportError, export_model
    except ImportError as exc:
        raise ArtifactError(_no_exporter(cache_dir, exc)) from None
    target = Path(cache_dir).expanduser() / f"{DEFAULT_MODEL_NAME}-{precision}"
    if (target / "manifest.json").is_file():
        return target
    log.info("exporting the default model %s (%s) into %s, once", DEFAULT_MODEL_NAME, precision, target)
    try:
        export_model(None, target, precision=precision, log=log.info)
    except ExportError as exc:  # a missing torch or model package arrives here too, with what to install
        if (target / "manifest.json").is_file():  # another server exported it meanwhile
            return target
        raise ArtifactError(f"could not export the default model: {exc}") from None
    return target


def _no_exporter(cache_dir: Path, exc: ImportError) -> str:
    return (
        f"no --model given and the default model is not exported yet in {cache_dir}, "
        f"but the exporter cannot run here ({exc}). Install it with "
        "`pip install torch==2.13.0 'zeroembed[export]'`, or pass --model DIR with an artifact "
        "made by `zeroembed export`"
    )
