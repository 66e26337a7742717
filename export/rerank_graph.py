"""The torch side of a reranker: load the sequence classifier, export its logits to ONNX.

The graph ends at the classifier's logits; the activation (sigmoid, softmax...)
is recorded in the manifest and applied by the runtime, so a server can return
raw scores too (TEI's ``raw_scores``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError
from .rerank_source import RerankSource
from .torch_model import load_pretrained, sample_batch, trace_to_onnx

if TYPE_CHECKING:
    import onnx
    import torch

OUTPUT_NAME = "logits"


def input_names(source: RerankSource) -> list[str]:
    """Graph inputs: token types only where the model embeds them (BERT, not RoBERTa)."""
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if source.token_types else names


def load_classifier(source: RerankSource) -> torch.nn.Module:
    """The transformers sequence classifier in eval mode, fp32, eager attention.

    A classifier without its weights (freshly initialised) would rank at random: refused, as
    every missing or misshapen tensor is.
    """
    model = load_pretrained(source.path, "AutoModelForSequenceClassification",
                            config_note=f"{source.num_labels} labels")
    if model.config.num_labels != source.num_labels:
        raise ExportError(
            f"{source.path} loads with {model.config.num_labels} labels but its config.json lists "
            f"{source.num_labels}"
        )
    return model


def wrap(model: torch.nn.Module, source: RerankSource) -> torch.nn.Module:
    """``model`` as a module from (input_ids, attention_mask[, token_type_ids]) to logits."""
    import torch

    class PairScorer(torch.nn.Module):
        def __init__(self, classifier: torch.nn.Module) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *token_type_ids: torch.Tensor):
            types = {"token_type_ids": token_type_ids[0]} if token_type_ids else {}
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask, **types).logits

    return PairScorer(model).eval()


def export_onnx(module: torch.nn.Module, path: Path, source: RerankSource) -> None:
    """TorchScript-export ``module`` to ``path`` with dynamic batch and sequence axes."""
    import torch

    names = input_names(source)
    sample, mask = sample_batch()
    types = torch.zeros_like(sample)  # token types vary per row
    types[:, 6:] = 1
    types[1, 12:] = 0
    args = (sample, mask, types)[: len(names)]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    trace_to_onnx(module, args, path, names, [OUTPUT_NAME], axes)


def declare_output_shape(model: onnx.ModelProto, num_labels: int) -> None:
    """Give the logits output its documented shape ``[batch, num_labels]``."""
    for output in model.graph.output:
        if output.name == OUTPUT_NAME:
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_param = "batch"
            dims.add().dim_value = num_labels

