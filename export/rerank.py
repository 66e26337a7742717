"""Build a rerank artifact: a cross-encoder's logits as a fused ONNX graph.

The same steps as an embedder (pipeline.py) with a classifier at the end:
load, export, fuse, reference (CrossEncoder), convert/quantize, validate,
write into the staging directory that pipeline.py publishes. See the rerank
section of docs/artifact.md for the contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError, QualityGateError
from .manifest import Architecture, QuantizationReport
from .rerank_manifest import RerankManifest, RerankParityReport
from .rerank_source import RerankSource

if TYPE_CHECKING:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel
    from tokenizers import Tokenizer

    from .pipeline import _Steps


def describe(source: RerankSource) -> str:
    """One line for the load step."""
    return (
        f"{source.name} ({source.architecture}, {source.num_layers} layers, hidden {source.hidden_size}, "
        f"{source.num_labels} label{'s' if source.num_labels > 1 else ''}, {source.activation}, "
        f"max_seq_length {source.max_seq_length})"
    )


def build_reranker(source: RerankSource, staging: Path, out: Path, precision: str, steps: _Steps) -> RerankManifest:
    """Produce model.onnx, tokenizer.json and manifest.json for a reranker in ``staging``."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before anything below imports transformers
    import onnx

    from . import fusion, rerank_graph, rerank_parity
    from . import precision as prec
    from .parity import validation_provider
    from .pipeline import place_files  # a cycle at module level: pipeline dispatches to this module

    work = staging / ".work"
    work.mkdir()
    with steps.step("load", describe(source)):
        module = rerank_graph.wrap(rerank_graph.load_classifier(source), source)
        crossencoder = rerank_parity.load_crossencoder(source)  # the reference, and the tokenizer's source
        tokenizer = rerank_parity.crossencoder_tokenizer(crossencoder, source)
    with steps.step("export", f"torch.onnx.export (TorchScript, opset {rerank_graph.OPSET})"):
        raw_path = work / "raw.onnx"
        rerank_graph.export_onnx(module, source, raw_path)
    with steps.step("fuse", "onnxruntime transformer optimizer:") as extra:
        optimized = _fuse(onnx.load(str(raw_path)), source)
        rerank_graph.declare_output_shape(optimized.model, source.num_labels)
        extra.append(", ".join(f"{op}={n}" for op, n in fusion.fused_operator_counts(optimized.model).items()))
        fp32_path = work / "model.fp32.onnx"
        optimized.save_model_to_file(str(fp32_path))
    pairs = len(rerank_parity.validation_pairs())
    with steps.step("reference", f"CrossEncoder.predict on {pairs} validation pairs, tokenizer checked"):
        reference = rerank_parity.build_reference(crossencoder, tokenizer, source)
        del crossencoder

    def grade(path: Path, provider: str = "CPUExecutionProvider", method: str | None = None) -> RerankParityReport:
        return rerank_parity.compare(str(path), tokenizer, reference, source, precision,
                                     provider=provider, method=method)

    final_path, report, quant = fp32_path, None, None
    if precision == "fp16":
        with steps.step("convert", "fp16 weights and compute, float32 inputs/outputs"):
            prec.to_fp16(optimized)
            final_path = work / "model.fp16.onnx"
            optimized.save_model_to_file(str(final_path))
    elif precision == "int8":
        with steps.step("quantize", "dynamic int8, first recipe that keeps scores and rankings:") as extra:
            final_path, report, quant = _pick_int8(fp32_path, work, tokenizer, source, grade, steps)
            extra.append(quant.recipe)

    with steps.step("validate", f"{precision} vs CrossEncoder:") as extra:
        if report is None:
            provider, method = validation_provider(precision)
            if method is not None:  # worded for embedders, whose reference is PyTorch
                method = method.replace("PyTorch fp32", "sentence-transformers CrossEncoder fp32")
            report = grade(final_path, provider, method)
        extra.append(
            f"max score diff {report.max_abs_score_diff:.2e}, max logit diff {report.max_abs_logit_diff:.2e}, "
            f"{report.rankings_changed} rankings changed on {report.provider}"
        )
        final = onnx.load(str(final_path))
        fusion.check_fusion(final, source.num_layers)
        if not report.passed:
            raise QualityGateError(rerank_parity.describe_failure(report, precision))

    with steps.step("write", f"{out}: model.onnx, tokenizer.json, manifest.json"):
        model_path = place_files(staging, work, final_path, tokenizer)
        manifest = _manifest(source, final, precision, report, quant, model_path)
        manifest.write(staging)
    return manifest


def _fuse(model: onnx.ModelProto, source: RerankSource) -> OnnxModel:
    """ORT's bert optimizer with the options fusion.fuse uses for embedders; one attention per layer or fail.

    Called directly rather than through fusion.fuse, whose source type is the embedder's.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from .fusion import check_fusion

    options = FusionOptions("bert")
    options.use_raw_attention_mask(False)  # per-row lengths (mask_index): right padding, as for embedders
    options.enable_skip_layer_norm = False  # left to the session, as for embedders (fusion.py)
    try:
        optimized = optimize_model(model, model_type="bert", num_heads=source.num_heads,
                                   hidden_size=source.hidden_size, optimization_options=options, opt_level=0,
                                   use_gpu=False)
    except Exception as err:
        raise ExportError(f"ONNX Runtime's transformer optimizer failed: {err}") from err
    check_fusion(optimized.model, source.num_layers)
    return optimized


def _pick_int8(fp32_path: Path, work: Path, tokenizer: Tokenizer, source: RerankSource,
               grade: Callable[[Path], RerankParityReport], steps: _Steps,
               ) -> tuple[Path, RerankParityReport, QuantizationReport]:
    """Try precision.INT8_RECIPES, most aggressive first; the first that passes wins, else the closest."""
    from . import precision as prec
    from .rerank_parity import calibration_feeds

    feeds = calibration_feeds(tokenizer, source.token_types)
    attempts: list[dict[str, object]] = []
    best = None
    for index, recipe in enumerate(prec.INT8_RECIPES):
        path = work / f"model.int8.{index}.onnx"
        count, excluded = prec.quantize_int8(fp32_path, path, recipe, feeds)
        report = grade(path)
        attempts.append({"recipe": recipe.name, "max_abs_score_diff": report.max_abs_score_diff,
                         "rankings_changed": report.rankings_changed, "passed": report.passed})
        steps.note(f"int8 recipe {recipe.name}: max score diff {report.max_abs_score_diff:.4f}, "
                   f"{report.rankings_changed} rankings changed ({'pass' if report.passed else 'fail'})")
        key = (report.passed, -report.max_abs_score_diff)
        if best is None or key > best[0]:
            best = (key, path, recipe, report, count, excluded)
        if report.passed:
            break
    if best is None:
        raise ExportError("no int8 recipe configured")
    _, path, recipe, report, count, excluded = best
    quant = QuantizationReport(recipe=recipe.name, description=recipe.description, quantized_nodes=count,
                               fp32_nodes=excluded, attempts=attempts)
    return path, report, quant


def _manifest(source: RerankSource, final: onnx.ModelProto, precision: str, report: RerankParityReport,
              quant: QuantizationReport | None, model_path: Path) -> RerankManifest:
    from .fusion import fused_operator_counts
    from .pipeline import _sha256, _tool_versions

    initializers = {init.name for init in final.graph.initializer}
    return RerankManifest(
        source=source.name,
        architecture=Architecture(model_type=source.model_type, num_layers=source.num_layers,
                                  num_heads=source.num_heads, hidden_size=source.hidden_size,
                                  vocab_size=source.vocab_size),
        classifier=source.architecture,
        hidden_size=source.hidden_size,
        max_seq_length=source.max_seq_length,
        num_labels=source.num_labels,
        labels=source.labels,
        activation=source.activation,  # type: ignore[arg-type]
        activation_fn=source.activation_fn,
        precision=precision,  # type: ignore[arg-type]
        inputs=[i.name for i in final.graph.input if i.name not in initializers],
        outputs=[o.name for o in final.graph.output],
        opset=next(o.version for o in final.opset_import if o.domain in ("", "ai.onnx")),
        fused_operators=fused_operator_counts(final),
        parity=report,
        quantization=quant,
        tool_versions=_tool_versions(),
        model_sha256=_sha256(model_path),
    )
