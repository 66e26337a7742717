"""A rerank artifact at each step of the export pipeline (pipeline.py).

What only a reranker has: a graph that ends at the classifier's logits
(rerank_graph.py), a tokenizer and reference taken from
``sentence_transformers.CrossEncoder`` and graded by score and ranking
(rerank_parity.py), and the manifest's label, activation and truncation
fields. See the rerank section of docs/artifact.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rerank_manifest import RerankManifest, RerankParityReport
from .rerank_source import RerankSource

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch
    from tokenizers import Tokenizer

    from .rerank_parity import Reference


class RerankBuild:
    """The reranker's side of each pipeline step; the steps run its methods in order."""

    reference_name = "CrossEncoder"
    reference_method = "sentence-transformers CrossEncoder fp32"
    int8_choice = "first recipe that keeps scores and rankings"

    def __init__(self, source: RerankSource) -> None:
        self.source = source
        self._tokenizer: Tokenizer | None = None
        self._module: torch.nn.Module | None = None
        self._crossencoder: Any = None
        self._reference: Reference | None = None

    def describe(self) -> str:
        """One line for the load step."""
        source = self.source
        return (
            f"{source.name} ({source.architecture}, {source.num_layers} layers, hidden {source.hidden_size}, "
            f"{source.num_labels} label{'s' if source.num_labels > 1 else ''}, {source.activation}, "
            f"max_seq_length {source.max_seq_length})"
        )

    def load(self) -> Tokenizer:
        """Load the classifier and the CrossEncoder whose tokenizer the artifact ships; returns the tokenizer."""
        from . import rerank_graph, rerank_parity

        self._module = rerank_graph.wrap(rerank_graph.load_classifier(self.source), self.source)
        self._crossencoder = rerank_parity.load_crossencoder(self.source)  # the reference, and the tokenizer's source
        self._tokenizer = rerank_parity.crossencoder_tokenizer(self._crossencoder, self.source)
        return self._tokenizer

    def export_onnx(self, path: Path) -> None:
        """Trace the classifier, up to its logits, to ``path``."""
        from .rerank_graph import export_onnx

        export_onnx(self._module, path, self.source)

    def declare_output_shapes(self, model: onnx.ModelProto) -> None:
        """Give the logits their documented shape."""
        from .rerank_graph import declare_output_shape

        declare_output_shape(model, self.source.num_labels)

    def reference_detail(self) -> str:
        """What the reference step runs, for its log line."""
        from .rerank_parity import validation_pairs

        return f"CrossEncoder.predict on {len(validation_pairs())} validation pairs, tokenizer checked"

    def build_reference(self) -> None:
        """Check the tokenizer against CrossEncoder's, then score the validation pairs with it."""
        from .rerank_parity import build_reference

        self._reference = build_reference(self._crossencoder, self._tokenizer, self.source)
        self._crossencoder = None  # not needed past the reference

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        """Model inputs to measure int8 smoothing ranges on."""
        from .rerank_parity import calibration_feeds

        return calibration_feeds(self._tokenizer, self.source.token_types)

    def grade(self, path: Path, precision: str, provider: str = "CPUExecutionProvider",
              method: str | None = None) -> RerankParityReport:
        """The artifact at ``path`` against the reference."""
        from .rerank_parity import compare

        return compare(str(path), self._tokenizer, self._reference, self.source, precision,
                       provider=provider, method=method)

    def summary(self, report: RerankParityReport) -> str:
        """The validate step's scores."""
        return (
            f"max score diff {report.max_abs_score_diff:.2e}, max logit diff {report.max_abs_logit_diff:.2e}, "
            f"{report.rankings_changed} rankings changed"
        )

    def describe_failure(self, report: RerankParityReport, precision: str) -> str:
        """One line saying which gate the artifact missed."""
        from .rerank_parity import describe_failure

        return describe_failure(report, precision)

    def int8_score(self, report: RerankParityReport) -> float:
        """The largest score difference, negated: higher is closer."""
        return -report.max_abs_score_diff

    def int8_enough(self, report: RerankParityReport) -> bool:
        """The gates are the margin: the first recipe that passes them wins."""
        return report.passed

    def int8_scores(self, report: RerankParityReport) -> dict[str, object]:
        """Largest score difference and rankings changed."""
        return {"max_abs_score_diff": report.max_abs_score_diff, "rankings_changed": report.rankings_changed}

    def int8_summary(self, report: RerankParityReport) -> str:
        """Largest score difference and rankings changed."""
        return f"max score diff {report.max_abs_score_diff:.4f}, {report.rankings_changed} rankings changed"

    def manifest(self, fields: dict[str, Any], fused: bool) -> RerankManifest:
        """The manifest: ``fields`` (what every artifact records) plus the reranker's own.

        ``fused`` is always true here (a reranker is never exported unfused) and not recorded.
        """
        source = self.source
        return RerankManifest(
            classifier=source.architecture,
            hidden_size=source.hidden_size,
            num_labels=source.num_labels,
            labels=source.labels,
            activation=source.activation,  # type: ignore[arg-type]
            activation_fn=source.activation_fn,
            **fields,
        )
