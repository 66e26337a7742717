"""A transformers model on the torch side, whatever the artifact: loaded from its folder, checked, traced to ONNX.

Both artifact kinds go through here: the embedder's encoder (graph.py) with
``AutoModel``, the reranker's classifier (rerank_graph.py) with
``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExportError

if TYPE_CHECKING:
    import torch

OPSET = 17

# ORT's fusion matches the attention subgraph the TorchScript exporter emits for
# transformers' eager attention. The dynamo exporter and the SDPA attention both
# produce graphs it does not fuse (measured with torch 2.13 / transformers 5.24).
ATTN_IMPLEMENTATION = "eager"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars; the exporter reports itself."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(path: Path, auto_class: str, *, config_note: str = "", **kwargs: Any) -> torch.nn.Module:
    """``transformers.<auto_class>`` from ``path`` in eval mode, fp32, eager attention, every weight present.

    ``kwargs`` go to ``from_pretrained``; ``config_note`` says what the config asks for
    (e.g. "2 labels") when a tensor's shape disagrees with it.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # must precede importing transformers
    import transformers

    try:
        with quiet_transformers():
            model, info = getattr(transformers, auto_class).from_pretrained(
                str(path),
                local_files_only=True,
                attn_implementation=ATTN_IMPLEMENTATION,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, by name, instead of a pointer to a log
                dtype="float32",
                **kwargs,
            )
    except Exception as err:  # safetensors, torch.load, OSError... all mean "bad weights"
        raise ExportError(f"cannot load the weights in {path}: {err}") from err
    if info.get("mismatched_keys"):
        key, *shapes = sorted(info["mismatched_keys"])[0]
        note = f" ({config_note})" if config_note else ""
        raise ExportError(
            f"weights in {path} do not match its config.json: {key} has shape "
            f"{tuple(shapes[0])}, the config asks for {tuple(shapes[1])}{note}"
        )
    # transformers fills missing weights with random values and only warns:
    # that would export a plausible-looking but meaningless model.
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ExportError(
            f"weights in {path} do not match its config.json: {len(missing)} missing "
            f"tensors (e.g. {missing[0]})"
        )
    return model.eval()


def sample_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) to trace with: three rows of 17 tokens, the second padded after 12.

    Long enough that tracing specialises no dimension to 1 or 2.
    """
    import torch

    ids = torch.arange(1000, 1000 + 3 * 17, dtype=torch.int64).reshape(3, 17)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return ids, mask


def trace_to_onnx(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    custom_opsets: Mapping[str, int] | None = None,
) -> None:
    """TorchScript-export ``module`` on ``args`` to ``path`` at :data:`OPSET`."""
    import torch

    try:
        # Tracer warnings about data-dependent branches in transformers' mask code are
        # expected: the batch/sequence axes are declared dynamic and parity checks the result.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={name: dict(axes) for name, axes in dynamic_axes.items()},
                opset_version=OPSET,
                do_constant_folding=True,
                custom_opsets=dict(custom_opsets) if custom_opsets else None,
            )
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {err}") from err
