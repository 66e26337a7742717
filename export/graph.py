"""The embedder's torch side: load the encoder, wrap it with its head, export to ONNX.

The sentence-transformers head (pooling, Dense, Normalize: export/pooling.py)
lives inside the exported module so the artifact is self-contained: any ONNX
Runtime user gets sentence embeddings without re-implementing it. An
architecture whose attention ONNX Runtime's optimizer cannot fuse is exported
through a rebuilt body that emits the fused op itself (export/architectures.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .source import ModelSource
from .torch_model import load_pretrained, sample_batch, trace_to_onnx

if TYPE_CHECKING:
    import onnx
    import torch

INPUT_NAMES = ["input_ids", "attention_mask"]
# Optional third input, present only when the pooling leaves the prompt out (docs/artifact.md).
PROMPT_LENGTH = "prompt_length"
OUTPUT_NAMES = ["token_embeddings", "sentence_embedding", "pooled_embedding"]


def load_encoder(source: ModelSource) -> torch.nn.Module:
    """The transformers encoder in eval mode, fp32, without its (unused) pooler head."""
    return load_pretrained(source.path, "AutoModel", **source.spec.load_kwargs)


def as_body(encoder: torch.nn.Module) -> torch.nn.Module:
    """transformers' model as a module mapping (input_ids, attention_mask) to the last hidden state."""
    import torch

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids are all zero for single-sentence embedding; leaving
            # them out keeps the contract to two inputs (BERT defaults to zeros).
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]

    return Body().eval()


def traceable_body(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """The body to export: :func:`as_body`, or the architecture's in-graph-fused rebuild.

    An ``in-graph`` architecture (export/architectures.py) names a module under
    export/ whose ``build(encoder, source)`` returns a body that emits the fused
    contrib ops itself. The parity reference always runs :func:`as_body`, so a
    rebuild is checked against transformers' own code.
    """
    if source.spec.builder is None:
        return as_body(encoder)
    builder = importlib.import_module(f".{source.spec.builder}", __package__)
    return builder.build(encoder, source).eval()


def wrap(body: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """``body`` plus the sentence-transformers head (export/pooling.py).

    The result maps (input_ids, attention_mask[, prompt_length]) to
    (token_embeddings, sentence_embedding, pooled_embedding).
    """
    from .pooling import build_head

    return build_head(body, source.head).eval()


def input_names(source: ModelSource) -> list[str]:
    """The graph's inputs: ``prompt_length`` only when pooling leaves the prompt out."""
    return INPUT_NAMES + ([PROMPT_LENGTH] if not source.head.include_prompt else [])


def export_onnx(module: torch.nn.Module, path: Path, source: ModelSource) -> None:
    """TorchScript-export ``module`` to ``path`` with dynamic batch and sequence axes."""
    import torch

    names = input_names(source)
    args: tuple[torch.Tensor, ...] = sample_batch()
    if PROMPT_LENGTH in names:
        args += (torch.tensor([3, 0, 5], dtype=torch.int64),)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES + ["token_embeddings"]}
    axes.update({name: {0: "batch"} for name in ("sentence_embedding", "pooled_embedding", PROMPT_LENGTH)})
    trace_to_onnx(module, args, path, names, OUTPUT_NAMES, axes, custom_opsets={"com.microsoft": 1})


def declare_output_shapes(model: onnx.ModelProto, source: ModelSource) -> None:
    """Give graph outputs their documented shapes (tracing leaves the hidden dim symbolic)."""
    shapes = {
        "token_embeddings": ["batch", "sequence", source.hidden_size],
        "sentence_embedding": ["batch", source.output_dim],
        "pooled_embedding": ["batch", source.output_dim],
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
    module: torch.nn.Module, input_ids: list[list[int]], prompt_lengths: list[int]
) -> list[tuple[object, object, object]]:
    """Per-text (tokens [seq, hidden], sentence [dim], pooled [dim]) as numpy, unpadded.

    One text at a time, without padding: the reference must not share the
    masking logic it is meant to check. ``prompt_lengths`` reach the head
    only where it leaves the prompt out.
    """
    import torch

    results = []
    with torch.no_grad():
        for ids, prompt_length in zip(input_ids, prompt_lengths, strict=True):
            ids_t = torch.tensor([ids], dtype=torch.int64)
            tokens, sentence, pooled = module(ids_t, torch.ones_like(ids_t), torch.tensor([prompt_length]))
            results.append((tokens[0].numpy(), sentence[0].numpy(), pooled[0].numpy()))
    return results
