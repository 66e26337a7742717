"""``export_model``: one step sequence for every kind of artifact.

load, export, fuse, reference, convert/quantize, validate, write. The steps,
the fusion gate, fp16 conversion, the int8 recipe search, the parity gate and
the fields every manifest records are the same for each kind; what differs is
behind :class:`ArtifactBuild`: an embedder (embed.py) or a reranker
(rerank.py), each with its own graph, parity reference and manifest fields.

Everything is built in a staging directory (staging.py) published only after
every gate passed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .embed import EmbedBuild
from .errors import ExportError, QualityGateError
from .manifest import (
    EXPORTER_REVISION,
    MODEL_FILE,
    TOKENIZER_FILE,
    Architecture,
    Manifest,
    ParityReport,
    QuantizationReport,
    ToolVersions,
)
from .precision import Int8Judge
from .rerank import RerankBuild
from .rerank_manifest import RerankManifest, RerankParityReport
from .rerank_source import RerankSource, is_reranker, resolve_reranker
from .source import EncoderSource, ModelSource, resolve_source
from .staging import staged

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from tokenizers import Tokenizer

PRECISIONS = ("fp32", "fp16", "int8")

Log = Callable[[str], None]
Report = TypeVar("Report", ParityReport, RerankParityReport)


class ArtifactBuild(Int8Judge[Report], Protocol[Report]):
    """One kind of artifact at each step of :func:`build` (embed.EmbedBuild, rerank.RerankBuild).

    :func:`build` calls, in order: describe and load (load step), export_onnx, declare_output_shapes
    (fuse), reference_detail and build_reference, calibration_feeds and the :class:`Int8Judge` methods
    (int8 only), grade, summary and describe_failure (validate), manifest (write).
    """

    source: ModelSource | RerankSource
    reference_name: str  # what parity compares with, for the validate line: "PyTorch"
    reference_method: str  # the same in parity.method: "PyTorch fp32"
    int8_choice: str  # how the int8 recipe is chosen, for the quantize line

    def describe(self) -> str: ...
    def load(self) -> Tokenizer: ...
    def export_onnx(self, path: Path) -> None: ...
    def declare_output_shapes(self, model: onnx.ModelProto) -> None: ...
    def reference_detail(self) -> str: ...
    def build_reference(self) -> None: ...
    def calibration_feeds(self) -> list[dict[str, np.ndarray]]: ...
    def grade(self, path: Path, precision: str, provider: str = ..., method: str | None = None) -> Report: ...
    def summary(self, report: Report) -> str: ...
    def describe_failure(self, report: Report, precision: str) -> str: ...
    def manifest(self, fields: dict[str, Any], fused: bool) -> Manifest | RerankManifest: ...


class _Steps:
    """Logs one line per finished step, with its duration."""

    def __init__(self, log: Log | None) -> None:
        self._log = log or (lambda line: None)

    def note(self, line: str) -> None:
        self._log(line)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[list[str]]:
        # The body may append to ``extra`` what it learnt (counts, scores) for the line.
        extra: list[str] = []
        start = time.perf_counter()
        yield extra
        text = " ".join(part for part in (detail, *extra) if part)
        self._log(f"{name:<9} {text} ({time.perf_counter() - start:.1f}s)")


def export_model(
    model: str | Path | None,
    out: str | Path,
    *,
    precision: str = "fp32",
    pooling: str | None = None,
    max_seq_length: int | None = None,
    allow_unfused: bool = False,
    int8_portable: bool = False,
    force: bool = False,
    log: Log | None = None,
) -> Manifest | RerankManifest:
    """Export ``model`` (a local HF dir; ``None`` = all-MiniLM-L6-v2) as an artifact in ``out``.

    A cross-encoder (``*ForSequenceClassification``) becomes a rerank artifact.

    Raises :class:`ExportError` for every user-facing failure; nothing is
    written then. ``log`` receives one line per step. ``allow_unfused`` lets a
    model whose attention does not fuse export anyway (``fused_attention: false``). ``int8_portable`` keeps
    to int8 recipes whose accuracy holds on CPUs without VNNI too (export/precision.py).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"invalid precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if int8_portable and precision != "int8":
        raise ExportError(f"--int8-portable applies to --precision int8 only, not {precision}")
    kind: ArtifactBuild
    if model is not None and is_reranker(model):
        if pooling is not None:
            raise ExportError(f"--pooling does not apply to {model}: it is a reranker (sequence classifier)")
        kind = RerankBuild(resolve_reranker(model, max_seq_length=max_seq_length))
    else:
        kind = EmbedBuild(resolve_source(model, pooling=pooling, max_seq_length=max_seq_length,
                                         allow_unfused=allow_unfused))
    out = Path(out).expanduser().absolute()
    with staged(out, kind.source.path, force) as staging:
        return build(kind, staging, out, precision, _Steps(log), int8_portable=int8_portable)


def build(kind: ArtifactBuild, staging: Path, out: Path, precision: str, steps: _Steps, *,
          int8_portable: bool = False) -> Manifest | RerankManifest:
    """Produce model.onnx, tokenizer.json and manifest.json of ``kind`` in ``staging``."""
    # Nothing is ever downloaded; set before anything below imports transformers.
    os.environ["HF_HUB_OFFLINE"] = "1"
    import onnx

    from . import fusion
    from . import precision as prec
    from .torch_model import OPSET

    source = kind.source
    work = staging / ".work"  # intermediates; removed before publishing
    work.mkdir()
    with steps.step("load", kind.describe()):
        tokenizer = kind.load()
    with steps.step("export", f"torch.onnx.export (TorchScript, opset {OPSET})"):
        raw_path = work / "raw.onnx"
        kind.export_onnx(raw_path)
    with steps.step("fuse", f"{source.spec.fusion} attention, onnxruntime transformer optimizer:") as extra:
        optimized, fused = fusion.fuse(onnx.load(str(raw_path)), source)
        kind.declare_output_shapes(optimized.model)
        counts = fusion.fused_operator_counts(optimized.model)
        extra.append(", ".join(f"{op}={n}" for op, n in counts.items()) or "nothing fused")
        fp32_path = work / "model.fp32.onnx"
        optimized.save_model_to_file(str(fp32_path))
    if not fused:
        steps.note(
            f"attention NOT fused ({fusion.attention_count(optimized.model)} fused nodes for "
            f"{source.num_layers} layers): exporting anyway (--allow-unfused); it will run slowly"
        )
    with steps.step("reference", kind.reference_detail()):
        kind.build_reference()

    final_path, report, quant = fp32_path, None, None
    if precision == "fp16":
        with steps.step("convert", "fp16 weights and compute, float32 inputs/outputs"):
            prec.to_fp16(optimized)
            final_path = work / "model.fp16.onnx"
            optimized.save_model_to_file(str(final_path))
    elif precision == "int8":
        portable = ", portable recipes only" if int8_portable else ""
        with steps.step("quantize", f"dynamic int8, {kind.int8_choice}{portable}:") as extra:
            final_path, report, quant = prec.pick_int8(fp32_path, work, kind.calibration_feeds(), kind, steps.note,
                                                       portable=int8_portable)
            extra.append(quant.recipe)

    with steps.step("validate", f"{precision} vs {kind.reference_name}:") as extra:
        if report is None:  # int8 was already measured while picking its recipe
            provider, method = _validation_provider(precision, kind.reference_method)
            report = kind.grade(final_path, precision, provider=provider, method=method)
        extra.append(f"{kind.summary(report)} on {report.provider}")
        # The fused-op gate applies to what ships, after conversion/quantisation.
        final = onnx.load(str(final_path))
        if fused:
            fusion.check_fusion(final, source.num_layers)
        if not report.passed:
            raise QualityGateError(kind.describe_failure(report, precision))

    with steps.step("write", f"{out}: model.onnx, tokenizer.json, manifest.json"):
        model_path = _place_files(staging, work, final_path, tokenizer)
        fields = _common_fields(source, final, precision, report, quant, _sha256(model_path))
        manifest = kind.manifest(fields, fused)
        manifest.write(staging)
    return manifest


def _cuda_usable() -> bool:
    """Whether ONNX Runtime can actually run on a CUDA device here."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    # onnxruntime-gpu lists CUDA even without a GPU; probing it then logs loud errors.
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def _validation_provider(precision: str, reference: str) -> tuple[str, str | None]:
    """(ORT provider, method note) to validate a ``precision`` artifact against ``reference`` with here."""
    if precision != "fp16":
        return "CPUExecutionProvider", None
    if _cuda_usable():
        return "CUDAExecutionProvider", (
            f"ONNX Runtime CUDAExecutionProvider running the fp16 graph vs {reference} on CPU"
        )
    # Honest about what the CPU run proves and what it does not.
    return "CPUExecutionProvider", (
        "no CUDA device: ONNX Runtime CPUExecutionProvider running the fp16 graph (fp16 weights, "
        "fp16 activations between ops; ops without fp16 CPU kernels compute in fp32 behind casts "
        f"ORT inserts, so CUDA fp16 kernels were not exercised) vs {reference} on CPU"
    )


def _place_files(staging: Path, work: Path, model: Path, tokenizer: Tokenizer) -> Path:
    """Move the checked ``model`` and write ``tokenizer`` into ``staging``, drop the intermediates in
    ``work``; returns the model's path (the manifest, written last, records its checksum)."""
    model_path = staging / MODEL_FILE
    os.replace(model, model_path)
    tokenizer.save(str(staging / TOKENIZER_FILE))
    shutil.rmtree(work)
    return model_path


def _common_fields(
    source: EncoderSource,
    final: onnx.ModelProto,
    precision: str,
    report: ParityReport | RerankParityReport,
    quant: QuantizationReport | None,
    sha256: str,
) -> dict[str, Any]:
    """The manifest fields every kind of artifact records, by name."""
    from .fusion import fused_operator_counts

    initializers = {init.name for init in final.graph.initializer}
    return dict(
        exporter_revision=EXPORTER_REVISION,
        source=source.name,
        architecture=Architecture(
            model_type=source.model_type,
            num_layers=source.num_layers,
            num_heads=source.num_heads,
            hidden_size=source.hidden_size,
            vocab_size=source.vocab_size,
        ),
        max_seq_length=source.max_seq_length,
        precision=precision,
        inputs=[i.name for i in final.graph.input if i.name not in initializers],
        outputs=[o.name for o in final.graph.output],
        opset=next(o.version for o in final.opset_import if o.domain in ("", "ai.onnx")),
        fused_operators=fused_operator_counts(final),
        parity=report,
        quantization=quant,
        tool_versions=_tool_versions(),
        model_sha256=sha256,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tool_versions() -> ToolVersions:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "unknown"

    import onnxruntime

    return ToolVersions(
        torch=ver("torch"),
        transformers=ver("transformers"),
        onnx=ver("onnx"),
        onnxruntime=onnxruntime.__version__,
        zeroembed=ver("zeroembed"),
    )
