"""``export_model``: load, export, fuse, convert, validate, write.

Everything is built in a staging directory next to ``out`` and renamed into
place only after every gate passed, so a failed or interrupted export leaves
nothing behind and an existing artifact is only replaced (``force``) by a
complete one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError, QualityGateError
from .manifest import (
    EXPORTER_REVISION,
    MODEL_FILE,
    TOKENIZER_FILE,
    Architecture,
    DenseInfo,
    Manifest,
    ParityReport,
    QuantizationReport,
    ToolVersions,
)
from .rerank import build_reranker
from .rerank_manifest import RerankManifest
from .rerank_source import RerankSource, is_reranker, resolve_reranker
from .source import ModelSource, resolve_source

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

PRECISIONS = ("fp32", "fp16", "int8")

Log = Callable[[str], None]


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


def _prepare_out(out: Path, source: ModelSource | RerankSource, force: bool) -> tuple[Path, list[Path]]:
    """Check ``out`` and create the staging dir next to it; returns (staging, parents created)."""
    if out.exists() or out.is_symlink():
        if not force:
            raise ExportError(f"output {out} already exists (pass --force to replace it)")
        if not out.is_dir():
            raise ExportError(f"output {out} exists and is not a directory; refusing to replace it")
        if out.resolve() == source.path or out.resolve() in source.path.parents:
            raise ExportError(f"output {out} holds the source model; refusing to replace it")
    created: list[Path] = []
    parent = out.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write output {out}: {parent} is not a directory")
    try:
        for directory in reversed(created):
            directory.mkdir()
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        _remove_created(created)
        raise ExportError(f"cannot write output {out}: {err.strerror or err}") from err
    return staging, created


def _remove_created(created: list[Path]) -> None:
    for directory in created:  # innermost first
        try:
            directory.rmdir()
        except OSError:
            break


def _publish(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, swapping out an existing directory."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_model(
    model: str | Path | None,
    out: str | Path,
    *,
    precision: str = "fp32",
    pooling: str | None = None,
    max_seq_length: int | None = None,
    allow_unfused: bool = False,
    force: bool = False,
    log: Log | None = None,
) -> Manifest | RerankManifest:
    """Export ``model`` (a local HF dir; ``None`` = all-MiniLM-L6-v2) as an artifact in ``out``.

    A cross-encoder (``*ForSequenceClassification``) becomes a rerank artifact.

    Raises :class:`ExportError` for every user-facing failure; nothing is
    written then. ``log`` receives one line per step. ``allow_unfused`` lets a
    model whose attention does not fuse export anyway (``fused_attention: false``).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"invalid precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if model is not None and is_reranker(model):  # a cross-encoder: its own build (rerank.py)
        if pooling is not None:
            raise ExportError(f"--pooling does not apply to {model}: it is a reranker (sequence classifier)")
        source: ModelSource | RerankSource = resolve_reranker(model, max_seq_length=max_seq_length)
        build = partial(build_reranker, source)
    else:
        source = resolve_source(model, pooling=pooling, max_seq_length=max_seq_length,
                                allow_unfused=allow_unfused)
        build = partial(_build, source)
    out = Path(out).expanduser().absolute()
    staging, created = _prepare_out(out, source, force)
    try:
        manifest = build(staging, out, precision, _Steps(log))
        staging.chmod(0o755)  # mkdtemp made it 0700; an artifact is meant to be shared
        try:
            _publish(staging, out)
        except OSError as err:  # e.g. another process created ``out`` meanwhile
            raise ExportError(f"cannot move the artifact into {out}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise
    return manifest


def _describe(source: ModelSource) -> str:
    head = [f"{source.pooling} pooling" + ("" if source.head.include_prompt else " without the prompt")]
    head += [f"Dense {d.in_features}->{d.out_features} {d.activation}" for d in source.head.dense]
    head += ["normalized"] if source.normalize else []
    prompts = f", prompts {', '.join(source.prompts.prompts)}" if source.prompts.prompts else ""
    return (
        f"{source.name} ({source.model_type}, {source.num_layers} layers, hidden {source.hidden_size}, "
        f"{', '.join(head)}, max_seq_length {source.max_seq_length}{prompts})"
    )


def place_files(staging: Path, work: Path, model: Path, tokenizer: Tokenizer) -> Path:
    """Move the checked ``model`` and write ``tokenizer`` into ``staging``, drop the intermediates in
    ``work``; returns the model's path (the manifest, written last, records its checksum)."""
    model_path = staging / MODEL_FILE
    os.replace(model, model_path)
    tokenizer.save(str(staging / TOKENIZER_FILE))
    shutil.rmtree(work)
    return model_path


def _build(source: ModelSource, staging: Path, out: Path, precision: str, steps: _Steps) -> Manifest:
    """Produce model.onnx, tokenizer.json and manifest.json in ``staging``."""
    # Nothing is ever downloaded; set before anything below imports transformers.
    os.environ["HF_HUB_OFFLINE"] = "1"
    import onnx

    from . import fusion, graph, parity
    from . import precision as prec
    from .smoothing import calibration_feeds
    from .tokenizer import build_tokenizer

    work = staging / ".work"  # intermediates; removed before publishing
    work.mkdir()
    with steps.step("load", _describe(source)):
        tokenizer = build_tokenizer(source)
        encoder = graph.load_encoder(source)
        # The reference runs transformers' model as is; the export may run a fused rebuild of it.
        module = graph.wrap(graph.as_body(encoder), source)
        exported = graph.wrap(graph.traceable_body(encoder, source), source)
    with steps.step("export", f"torch.onnx.export (TorchScript, opset {graph.OPSET})"):
        raw_path = work / "raw.onnx"
        graph.export_onnx(exported, raw_path, source)
    with steps.step("fuse", f"{source.spec.fusion} attention, onnxruntime transformer optimizer:") as extra:
        optimized, fused = fusion.fuse(onnx.load(str(raw_path)), source)
        graph.declare_output_shapes(optimized.model, source)
        counts = fusion.fused_operator_counts(optimized.model)
        extra.append(", ".join(f"{op}={n}" for op, n in counts.items()) or "nothing fused")
        fp32_path = work / "model.fp32.onnx"
        optimized.save_model_to_file(str(fp32_path))
    if not fused:
        steps.note(
            f"attention NOT fused ({fusion.attention_count(optimized.model)} fused nodes for "
            f"{source.num_layers} layers): exporting anyway (--allow-unfused); it will run slowly"
        )
    texts, prompt_lengths = parity.validation_set(tokenizer, source.prompts.prompts)
    with steps.step("reference", f"PyTorch on {len(texts)} validation texts"):
        reference = parity.build_reference(module, tokenizer, texts, prompt_lengths)

    final_path, report, quant = fp32_path, None, None
    if precision == "fp16":
        with steps.step("convert", "fp16 weights and compute, float32 inputs/outputs"):
            prec.to_fp16(optimized)
            final_path = work / "model.fp16.onnx"
            optimized.save_model_to_file(str(final_path))
    elif precision == "int8":
        with steps.step("quantize", "dynamic int8, recipe picked by parity:") as extra:
            final_path, recipe, report, summary = prec.pick_int8(
                fp32_path,
                work,
                calibration_feeds(tokenizer),
                lambda path: parity.compare(str(path), tokenizer, reference, "int8"),
                parity.THRESHOLDS["int8"],
                steps.note,
            )
            quant = QuantizationReport.model_validate(summary)
            extra.append(recipe.name)

    with steps.step("validate", f"{precision} vs PyTorch:") as extra:
        if report is None:  # int8 was already measured while picking its recipe
            provider, method = parity.validation_provider(precision)
            report = parity.compare(
                str(final_path), tokenizer, reference, precision, provider=provider, method=method
            )
        extra.append(
            f"sentence min cosine {report.sentence_embedding.min_cosine:.6f}, "
            f"token min cosine {report.token_embeddings.min_cosine:.6f} on {report.provider}"
        )
        # The fused-op gate applies to what ships, after conversion/quantisation.
        final = onnx.load(str(final_path))
        if fused:
            fusion.check_fusion(final, source.num_layers)
        if not report.passed:
            raise QualityGateError(parity.describe_failure(report, precision))

    with steps.step("write", f"{out}: model.onnx, tokenizer.json, manifest.json"):
        model_path = place_files(staging, work, final_path, tokenizer)
        manifest = _manifest(source, final, precision, report, quant, _sha256(model_path), fused)
        manifest.write(staging)
    return manifest


def _manifest(
    source: ModelSource,
    final: onnx.ModelProto,
    precision: str,
    report: ParityReport,
    quant: QuantizationReport | None,
    sha256: str,
    fused: bool,
) -> Manifest:
    from .fusion import fused_operator_counts

    initializers = {init.name for init in final.graph.initializer}
    return Manifest(
        exporter_revision=EXPORTER_REVISION,
        source=source.name,
        architecture=Architecture(
            model_type=source.model_type,
            num_layers=source.num_layers,
            num_heads=source.num_heads,
            hidden_size=source.hidden_size,
            vocab_size=source.vocab_size,
        ),
        hidden_size=source.output_dim,
        max_seq_length=source.max_seq_length,
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
        precision=precision,  # type: ignore[arg-type]
        inputs=[i.name for i in final.graph.input if i.name not in initializers],
        outputs=[o.name for o in final.graph.output],
        opset=next(o.version for o in final.opset_import if o.domain in ("", "ai.onnx")),
        fused_operators=fused_operator_counts(final),
        parity=report,
        quantization=quant,
        tool_versions=_tool_versions(),
        model_sha256=sha256,
    )
