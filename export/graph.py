"""The torch side: load the encoder, wrap it with pooling, export to ONNX.

Pooling and normalisation live inside the exported module so the artifact is
self-contained: any ONNX Runtime user gets sentence embeddings without
re-implementing the model's pooling.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError
from .source import ModelSource

if TYPE_CHECKING:
    import onnx
    import torch

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["token_embeddings", "sentence_embedding", "pooled_embedding"]
OPSET = 17

# ORT's fusion matches the attention subgraph the TorchScript exporter emits for
# transformers' eager attention. The dynamo exporter and the SDPA attention both
# produce graphs it does not fuse (measured with torch 2.13 / transformers 5.24).
_ATTN_IMPLEMENTATION = "eager"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
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


def load_encoder(source: ModelSource) -> torch.nn.Module:
    """The transformers encoder in eval mode, fp32, without its (unused) pooler head."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # must precede importing transformers
    from transformers import AutoModel

    from . import fused_attention

    kwargs: dict[str, object] = {"attn_implementation": _ATTN_IMPLEMENTATION}
    if fused_attention.uses_fused_attention(source.model_type):
        fused_attention.register()
        kwargs = {"attn_implementation": fused_attention.ATTN_IMPLEMENTATION}
        if source.model_type in fused_attention.DECODER_MODEL_TYPES:
            kwargs["use_cache"] = False  # one forward pass; no KV cache in the graph
    if source.model_type not in ("modernbert", "qwen2", "qwen3"):  # these have no pooler
        kwargs["add_pooling_layer"] = False
    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(
                str(source.path),
                local_files_only=True,
                output_loading_info=True,
                dtype="float32",
                **kwargs,
            )
    except Exception as err:  # safetensors, torch.load, OSError... all mean "bad weights"
        raise ExportError(f"cannot load the weights in {source.path}: {err}") from err
    # transformers fills missing weights with random values and only warns:
    # that would export a plausible-looking but meaningless model.
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ExportError(
            f"weights in {source.path} do not match its config.json: {len(missing)} missing "
            f"tensors (e.g. {missing[0]})"
        )
    return model.eval()


def _pooling_module(pooling: str, normalize: bool) -> type[torch.nn.Module]:
    import torch

    class SentenceEncoder(torch.nn.Module):
        """encoder + masked pooling (+ L2 normalise), mirroring sentence-transformers."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # token_type_ids are all zero for single-sentence embedding; leaving
            # them out keeps the contract to two inputs (BERT defaults to zeros).
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            if pooling == "cls":
                pooled = tokens[:, 0]
            elif pooling == "max":
                # where(), not tokens + (mask - 1) * 1e9: no inf * 0 = NaN once fp16 saturates the fill.
                filled = torch.where(mask.bool(), tokens, torch.full_like(tokens, -1e9))
                pooled = filled.max(dim=1).values
            else:
                pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            sentence = torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled
            return tokens, sentence, pooled

    return SentenceEncoder


def wrap(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """``encoder`` wrapped to return (token_embeddings, sentence_embedding, pooled_embedding)."""
    return _pooling_module(source.pooling, source.normalize)(encoder).eval()


def export_onnx(module: torch.nn.Module, path: Path) -> None:
    """TorchScript-export ``module`` to ``path`` with dynamic batch and sequence axes."""
    import torch

    # Sample long enough that no dimension is specialised to 1 or 2 by tracing.
    sample = torch.arange(1000, 1000 + 3 * 17, dtype=torch.int64).reshape(3, 17)
    mask = torch.ones_like(sample)
    mask[1, 12:] = 0
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES + ["token_embeddings"]}
    axes["sentence_embedding"] = {0: "batch"}
    axes["pooled_embedding"] = {0: "batch"}
    try:
        # Tracer warnings about data-dependent branches in transformers' mask code are
        # expected: the batch/sequence axes are declared dynamic and parity checks the result.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (sample, mask),
                str(path),
                dynamo=False,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {err}") from err


def declare_output_shapes(model: onnx.ModelProto, hidden_size: int) -> None:
    """Give graph outputs their documented shapes (tracing leaves the hidden dim symbolic)."""
    shapes = {
        "token_embeddings": ["batch", "sequence", hidden_size],
        "sentence_embedding": ["batch", hidden_size],
        "pooled_embedding": ["batch", hidden_size],
    }
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for value in shapes[output.name]:
            dim = dims.add()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value


def torch_reference(
    module: torch.nn.Module, input_ids: list[list[int]]
) -> list[tuple[object, object, object]]:
    """Per-text (tokens [seq, hidden], sentence [hidden], pooled [hidden]) as numpy, unpadded.

    One text at a time, without padding: the reference must not share the
    masking logic it is meant to check.
    """
    import torch

    results = []
    with torch.no_grad():
        for ids in input_ids:
            ids_t = torch.tensor([ids], dtype=torch.int64)
            tokens, sentence, pooled = module(ids_t, torch.ones_like(ids_t))
            results.append((tokens[0].numpy(), sentence[0].numpy(), pooled[0].numpy()))
    return results
