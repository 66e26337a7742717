"""An embedding artifact at each step of the export pipeline (pipeline.py).

What only an embedder has: its sentence-transformers head in the graph
(graph.py, pooling.py), a reference that runs transformers' own model plus
that head in PyTorch and is graded by cosine (parity.py), and the manifest's
pooling, Dense, normalisation and prompt fields. See docs/artifact.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .manifest import DenseInfo, Manifest, ParityReport
from .source import ModelSource

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch
    from tokenizers import Tokenizer

    from .parity import Reference


class EmbedBuild:
    """The embedder's side of each pipeline step; the steps run its methods in order."""

    reference_name = "PyTorch"
    reference_method = "PyTorch fp32"
    int8_choice = "recipe picked by parity"

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._tokenizer: Tokenizer | None = None
        self._module: torch.nn.Module | None = None
        self._exported: torch.nn.Module | None = None
        self._texts: tuple[str, ...] = ()
        self._prompt_lengths: tuple[int, ...] = ()
        self._reference: Reference | None = None

    def describe(self) -> str:
        """One line for the load step."""
        source = self.source
        head = [f"{source.pooling} pooling" + ("" if source.head.include_prompt else " without the prompt")]
        head += [f"Dense {d.in_features}->{d.out_features} {d.activation}" for d in source.head.dense]
        head += ["normalized"] if source.normalize else []
        prompts = f", prompts {', '.join(source.prompts.prompts)}" if source.prompts.prompts else ""
        return (
            f"{source.name} ({source.model_type}, {source.num_layers} layers, hidden {source.hidden_size}, "
            f"{', '.join(head)}, max_seq_length {source.max_seq_length}{prompts})"
        )

    def load(self) -> Tokenizer:
        """Load the encoder and build the tokenizer the artifact ships; returns the tokenizer."""
        from . import graph, parity
        from .tokenizer import build_tokenizer

        self._tokenizer = build_tokenizer(self.source)
        encoder = graph.load_encoder(self.source)
        # The reference runs transformers' model as is; the export may run a fused rebuild of it.
        self._module = graph.wrap(graph.as_body(encoder), self.source)
        self._exported = graph.wrap(graph.traceable_body(encoder, self.source), self.source)
        self._texts, self._prompt_lengths = parity.validation_set(self._tokenizer, self.source.prompts.prompts)
        return self._tokenizer

    def export_onnx(self, path: Path) -> None:
        """Trace the encoder and its head to ``path``."""
        from .graph import export_onnx

        export_onnx(self._exported, path, self.source)

    def declare_output_shapes(self, model: onnx.ModelProto) -> None:
        """Give the graph's outputs their documented shapes."""
        from .graph import declare_output_shapes

        declare_output_shapes(model, self.source)

    def reference_detail(self) -> str:
        """What the reference step runs, for its log line."""
        return f"PyTorch on {len(self._texts)} validation texts"

    def build_reference(self) -> None:
        """Run the PyTorch reference on the validation texts."""
        from .parity import build_reference

        self._reference = build_reference(self._module, self._tokenizer, self._texts, self._prompt_lengths)

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        """Model inputs to measure int8 smoothing ranges on."""
        from .smoothing import calibration_feeds

        return calibration_feeds(self._tokenizer)

    def grade(self, path: Path, precision: str, provider: str = "CPUExecutionProvider",
              method: str | None = None) -> ParityReport:
        """The artifact at ``path`` against the reference."""
        from .parity import compare

        return compare(str(path), self._tokenizer, self._reference, precision, provider=provider, method=method)

    def summary(self, report: ParityReport) -> str:
        """The validate step's scores."""
        return (
            f"sentence min cosine {report.sentence_embedding.min_cosine:.6f}, "
            f"token min cosine {report.token_embeddings.min_cosine:.6f}"
        )

    def describe_failure(self, report: ParityReport, precision: str) -> str:
        """One line saying which output missed which threshold."""
        from .parity import describe_failure

        return describe_failure(report, precision)

    def int8_score(self, report: ParityReport) -> float:
        """The worse of the sentence and pooled min cosines."""
        return min(report.sentence_embedding.min_cosine, report.pooled_embedding.min_cosine)

    def int8_enough(self, report: ParityReport) -> bool:
        """Passed with :data:`precision.INT8_HEADROOM` over the int8 threshold."""
        from .parity import THRESHOLDS
        from .precision import INT8_HEADROOM

        return report.passed and self.int8_score(report) >= THRESHOLDS["int8"] + INT8_HEADROOM

    def int8_scores(self, report: ParityReport) -> dict[str, object]:
        """Sentence and token min cosines."""
        return {
            "sentence_min_cosine": report.sentence_embedding.min_cosine,
            "token_min_cosine": report.token_embeddings.min_cosine,
        }

    def int8_summary(self, report: ParityReport) -> str:
        """The score the recipes are ranked by."""
        return f"sentence min cosine {self.int8_score(report):.5f}"

    def manifest(self, fields: dict[str, Any], fused: bool) -> Manifest:
        """The manifest: ``fields`` (what every artifact records) plus the embedder's own."""
        source = self.source
        return Manifest(
            hidden_size=source.output_dim,
            pooling=source.pooling,  # type: ignore[arg-type]
            include_prompt=source.head.include_prompt,
            dense=[
                DenseInfo(
                    in_features=d.in_features,
                    out_features=d.out_features,
                    bias=d.bias,
                    activation=d.activation,
                    residual=d.residual,
                )
                for d in source.head.dense
            ],
            normalize=source.normalize,
            prompts=dict(source.prompts.prompts),
            default_prompt_name=source.prompts.default_prompt_name,
            fused_attention=fused,
            **fields,
        )
