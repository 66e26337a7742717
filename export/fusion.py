"""Transformer fusion with ONNX Runtime's optimizer, and the fused-op gate.

The fusion runs offline, in Python (``opt_level=0``): the saved graph holds
the com.microsoft fused ops themselves and is not tied to any execution
provider (no CPU- or CUDA-specific layouts baked in by an ORT session).

One fusion is left to the session: each residual connection stays as
``Add`` + ``LayerNormalization`` (ONNX ops). ONNX Runtime fuses them into
``SkipLayerNormalization`` when it loads the model, which the server keeps on
CUDA (one kernel instead of three launches; not yet timed on a GPU). On CPU
ORT's kernel for it is slower than the two ops it replaces
(docs/decisions.md), so the server's CPU sessions turn the fusion off.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from .errors import ExportError, QualityGateError
from .rerank_source import RerankSource
from .source import ModelSource

if TYPE_CHECKING:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

ATTENTION_OPS = ("Attention", "MultiHeadAttention", "QAttention")
# The com.microsoft ops the bert optimizer can produce, reported in the manifest.
FUSED_OPS = ATTENTION_OPS + (
    "EmbedLayerNormalization",
    "QEmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "BiasSplitGelu",
)
_MS_DOMAIN = "com.microsoft"


def fuse(model: onnx.ModelProto, source: ModelSource | RerankSource) -> tuple[OnnxModel, bool]:
    """Run ORT's transformer optimizer on ``model``; returns (graph, attention fused in every layer).

    Attention either fuses here (``ort-bert`` architectures) or was emitted fused by
    the architecture's builder (``in-graph``); the optimizer still fuses what else it
    can (LayerNorm, Gelu, embeddings). Unless the export allows it
    (``--allow-unfused``), a graph without one fused attention per layer is refused.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = source.spec.optimizer
    if model_type is None:
        optimized = OnnxModel(model)
    else:
        options = FusionOptions(model_type)
        # Default mask handling on purpose: attention_mask is reduced to per-row lengths
        # (1-D mask_index), the form ORT's fastest CUDA attention kernels take. It assumes
        # right padding, which BERT's absolute position ids require anyway.
        options.use_raw_attention_mask(False)
        options.enable_skip_layer_norm = False  # see the module docstring
        if source.spec.fusion == "in-graph":
            # The builder emitted the attention; the optimizer's embedding fusion assumes BERT's
            # embeddings and attention mask path, and mis-wires the mask on a rebuilt body.
            options.enable_attention = False
            options.enable_embed_layer_norm = False
        try:
            optimized = optimize_model(
                model,
                model_type=model_type,
                num_heads=source.num_heads,
                hidden_size=source.hidden_size,
                optimization_options=options,
                opt_level=0,  # python fusions only: provider-neutral
                use_gpu=False,
            )
        except Exception as err:
            raise ExportError(f"ONNX Runtime's transformer optimizer failed: {err}") from err
    fused = attention_count(optimized.model) == source.num_layers
    if not fused and not source.allow_unfused:
        check_fusion(optimized.model, source.num_layers)
    return optimized, fused


def fused_operator_counts(model: onnx.ModelProto) -> dict[str, int]:
    """com.microsoft op_type -> count in ``model``'s main graph."""
    counts = Counter(node.op_type for node in model.graph.node if node.domain == _MS_DOMAIN)
    return dict(sorted(counts.items()))


def attention_count(model: onnx.ModelProto) -> int:
    """Number of fused attention nodes (any of :data:`ATTENTION_OPS`)."""
    counts = fused_operator_counts(model)
    return sum(counts.get(op, 0) for op in ATTENTION_OPS)


def check_fusion(model: onnx.ModelProto, num_layers: int) -> None:
    """Raise unless there is exactly one fused attention node per encoder layer."""
    found = attention_count(model)
    if found != num_layers:
        raise QualityGateError(
            f"attention fusion failed: {found} fused attention nodes for {num_layers} encoder "
            "layers (the graph would run unfused, slowly); this architecture or transformers "
            "version produces an attention pattern ONNX Runtime's optimizer does not match "
            "(--allow-unfused exports it anyway)"
        )
