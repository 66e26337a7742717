"""The default model: exported once from the embedded all-MiniLM-L6-v2 into a cache directory."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from .artifact import ArtifactError

log = logging.getLogger(__name__)


def default_artifact(cache_dir: Path, device: str, precision: str | None = None, *,
                     progress: Callable[[str], None] = log.info) -> Path:
    """The default model's artifact directory, exporting it on first use.

    ``precision`` defaults to fp16 on CUDA and fp32 on CPU (the benchmark also
    asks for int8). Exported again when the cached one comes from an older
    exporter (a lower ``exporter_revision``): an upgrade's faster graph reaches
    the default model too. Needs the ``export`` extra (torch) only then.
    ``progress`` receives the export's lines.
    """
    precision = precision or ("fp16" if device == "cuda" else "fp32")
    try:
        from zeroembed.export import DEFAULT_MODEL_NAME, ExportError, export_model
        from zeroembed.export.manifest import EXPORTER_REVISION
    except ImportError as exc:
        raise ArtifactError(_no_exporter(cache_dir, exc)) from None
    target = Path(cache_dir).expanduser() / f"{DEFAULT_MODEL_NAME}-{precision}"
    cached = _cached_revision(target)
    current = cached is not None and cached >= EXPORTER_REVISION
    if current and not _needs_exact_int8_sums(target, precision):
        return target
    if cached is None:
        progress(f"exporting the default model {DEFAULT_MODEL_NAME} ({precision}) into {target}, once")
    elif current:  # the int8 gate then picks, on this CPU, a recipe that holds here
        progress(f"exporting the default model into {target} again: its int8 weights use the full range, "
                 "which this CPU's int8 kernel (no VNNI) cannot sum exactly")
    else:
        progress(f"exporting the default model into {target} again: it was made by exporter revision "
                 f"{cached}, this is {EXPORTER_REVISION}")
    try:
        export_model(None, target, precision=precision, force=cached is not None, log=progress)
    except ExportError as exc:  # a missing torch or model package arrives here too, with what to install
        if cached is not None:  # the older export still serves
            log.warning("could not export the default model again (%s); serving the cached one", exc)
            return target
        if (target / "manifest.json").is_file():  # another server exported it meanwhile
            return target
        raise ArtifactError(f"could not export the default model: {exc}") from None
    return target


def _cached_revision(target: Path) -> int | None:
    """The exporter revision of the cached artifact; None when there is none."""
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return 0  # unreadable: older than any export, so it is made again
    revision = manifest.get("exporter_revision", 1) if isinstance(manifest, dict) else 1
    return revision if isinstance(revision, int) else 1


def _needs_exact_int8_sums(target: Path, precision: str) -> bool:
    """Whether the cached artifact is int8 with full-range weights and this CPU's int8 kernel saturates
    (exported on another machine, e.g. into a shared cache)."""
    if precision != "int8":
        return False
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
        full_range = manifest["quantization"]["full_range_weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable or unrecorded: the revision check above decides
    if not full_range:
        return False
    from .workers.int8_kernel import u8s8_products_exact

    return not u8s8_products_exact()


def _no_exporter(cache_dir: Path, exc: ImportError) -> str:
    return (
        f"no --model given and the default model is not exported yet in {cache_dir}, "
        f"but the exporter cannot run here ({exc}). Install it with "
        "`pip install torch==2.13.0 'zeroembed[export]'`, or pass --model DIR with an artifact "
        "made by `zeroembed export`"
    )
