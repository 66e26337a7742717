"""The torch side of a reranker: load the sequence classifier, export its logits to ONNX.

The graph ends at the classifier's logits; the activation (sigmoid, softmax...)
is recorded in the manifest and applied by the runtime, so a server can return
raw scores too (TEI's ``raw_scores``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError
from .graph import _ATTN_IMPLEMENTATION, OPSET, _quiet_transformers
from .rerank_source import RerankSource

if TYPE_CHECKING:
    import onnx
    import torch

OUTPUT_NAME = "logits"


def input_names(source: RerankSource) -> list[str]:
    """Graph inputs: token types only where the model embeds them (BERT, not RoBERTa)."""
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if source.token_types else names


def load_classifier(source: RerankSource) -> torch.nn.Module:
    """The transformers sequence classifier in eval mode, fp32, eager attention."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # must precede importing transformers
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(source.path),
                local_files_only=True,
                attn_implementation=_ATTN_IMPLEMENTATION,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, by name, instead of a pointer to a log
                dtype="float32",
            )
    except Exception as err:  # safetensors, torch.load... all mean "bad weights"
        raise ExportError(f"cannot load the weights in {source.path}: {err}") from err
    if info.get("mismatched_keys"):
        key, *shapes = sorted(info["mismatched_keys"])[0]
        raise ExportError(
            f"weights in {source.path} do not match its config.json: {key} has shape "
            f"{tuple(shapes[0])}, the config asks for {tuple(shapes[1])} ({source.num_labels} labels)"
        )
    if info.get("missing_keys"):
        # A freshly initialised classifier would export a model that ranks at random.
        missing = sorted(info["missing_keys"])
        raise ExportError(
            f"weights in {source.path} do not match its config.json: {len(missing)} missing "
            f"tensors (e.g. {missing[0]})"
        )
    if model.config.num_labels != source.num_labels:
        raise ExportError(
            f"{source.path} loads with {model.config.num_labels} labels but its config.json lists "
            f"{source.num_labels}"
        )
    return model.eval()


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


def export_onnx(module: torch.nn.Module, source: RerankSource, path: Path) -> None:
    """TorchScript-export ``module`` to ``path`` with dynamic batch and sequence axes."""
    import torch

    names = input_names(source)
    # Long enough that tracing specialises no dimension to 1 or 2; token types vary per row.
    sample = torch.arange(1000, 1000 + 3 * 17, dtype=torch.int64).reshape(3, 17)
    mask = torch.ones_like(sample)
    mask[1, 12:] = 0
    types = torch.zeros_like(sample)
    types[:, 6:] = 1
    types[1, 12:] = 0
    args = (sample, mask, types)[: len(names)]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from transformers' mask code
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {err}") from err


def declare_output_shape(model: onnx.ModelProto, num_labels: int) -> None:
    """Give the logits output its documented shape ``[batch, num_labels]``."""
    for output in model.graph.output:
        if output.name == OUTPUT_NAME:
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_param = "batch"
            dims.add().dim_value = num_labels

