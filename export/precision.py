"""fp16 conversion and int8 quantisation of the fused graph.

int8 is picked by measurement: :data:`INT8_RECIPES` go from fastest to
slowest and the first whose parity is enough wins (:func:`pick_int8`): for an
embedder, the int8 threshold plus :data:`INT8_HEADROOM`, so texts outside the
validation set keep a margin; for a reranker, its score and ranking gates.

Measured on all-MiniLM-L6-v2 (min cosine of sentence_embedding vs PyTorch over
the 32 validation texts; speed in texts per CPU-second on one thread against
fp32, batch 8, the benchmark corpus; the table is in benchmarks/RESULTS.md):
plain ``quantize_dynamic`` (every op incl. QAttention, per-tensor) 0.76; every
MatMul per-channel 0.980; per-channel with the FFN down-projections (post-GELU
input, heavy outliers) in fp32 0.986, after SmoothQuant-style smoothing
(smoothing.py) 0.995 at 1.37x. That recipe leaves the fused attention's QKV
projection, a third of the matmul work, in fp32: smoothed too (its packed
weight takes the scales like a MatMul's) it quantises to QAttention at 0.995
and 1.6x. Every FFN down-projection in int8 stays under 0.99 at any smoothing
strength; static (calibrated QDQ) activations ran no faster and less accurately than
dynamic ones; u8 weights ran at 1.2x.

``reduce_range`` (7-bit weights) cost no speed but accuracy: with QAttention
it reached 0.994 on the validation texts yet 0.987 on unseen short ones, so the
fastest recipe uses full-range weights. On x86 CPUs without VNNI, ONNX
Runtime's u8 x s8 kernels add pairs of products in 16 bits, which full-range
weights saturate (the default model's first recipe falls to 0.958 there). The
parity gate runs on the exporting CPU, so there that recipe fails and the
smoothed reduce_range one (0.995) is picked. The manifest records whether the
weights use the full range (``quantization.full_range_weights``) and the
server refuses such an artifact on a CPU whose kernels saturate
(server/workers/int8_kernel.py); ``portable`` skips those recipes, for an
artifact exported on one machine and served on others (container images).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from .errors import ExportError
from .smoothing import smooth

if TYPE_CHECKING:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    from .manifest import QuantizationReport


class _Graded(Protocol):
    passed: bool


Report = TypeVar("Report", bound=_Graded)  # an artifact kind's parity report

GELU_OPS = ("BiasGelu", "FastGelu", "Gelu")
# Extra min-cosine margin a recipe must show on the validation texts to be picked.
INT8_HEADROOM = 0.003
_LAYER = re.compile(r"layers?\.(\d+)[./]")


def to_fp16(model: OnnxModel) -> None:
    """Convert ``model`` in place to fp16 weights and compute, float32 inputs/outputs."""
    try:
        model.convert_float_to_float16(keep_io_types=True)
    except Exception as err:
        raise ExportError(f"fp16 conversion failed: {err}") from err


def _ffn_down_projections(model: onnx.ModelProto) -> list[str]:
    """MatMuls fed by a GELU: the FFN down-projection of each layer."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and node.input[0] in producers
        and producers[node.input[0]].op_type in GELU_OPS
    ]


def _edge_layers(model: onnx.ModelProto) -> list[str]:
    """MatMuls of the first and last encoder layer (by the exporter's node names)."""
    layers = {
        node.name: int(m.group(1))
        for node in model.graph.node
        if node.op_type == "MatMul" and (m := _LAYER.search(node.name))
    }
    if not layers:
        return []
    edges = {min(layers.values()), max(layers.values())}
    return [name for name, layer in layers.items() if layer in edges]


class _DropPreprocessingHint(logging.Filter):
    """quantize_dynamic always logs a generic "run pre-processing" hint via the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@dataclass(frozen=True)
class Int8Recipe:
    """One way to quantise the fused graph; ``exclude`` picks nodes kept in fp32.

    ``static``: calibrated activation scales in QDQ form (``quantize_static``)
    instead of scales computed per batch at run time (``quantize_dynamic``).
    ``weight_type``/``activation_type``: "s8" or "u8" (dynamic activations are
    always u8: ``DynamicQuantizeLinear`` makes u8).
    """

    name: str
    description: str
    op_types: tuple[str, ...] | None = ("MatMul",)  # None: every op ORT can quantise
    per_channel: bool = True
    reduce_range: bool = True
    exclude: Callable[[onnx.ModelProto], list[str]] = field(default=lambda model: [])
    smooth_alpha: float | None = None  # SmoothQuant migration strength; None: no smoothing
    smooth_ops: tuple[str, ...] = ("MatMul",)  # which constant-weight ops smoothing rescales
    static: bool = False
    weight_type: str = "s8"
    activation_type: str = "u8"

    @property
    def full_range_weights(self) -> bool:
        """s8 weights over the whole range: exact only where u8 x s8 products sum without saturating (VNNI)."""
        return self.weight_type == "s8" and not self.reduce_range


INT8_RECIPES: list[Int8Recipe] = [
    Int8Recipe(
        "smoothed-qattention-matmul-per-channel-fp32-ffn-down",
        "activations smoothed (SmoothQuant, alpha 0.7) before the MatMuls and the fused attention's QKV "
        "projection; QAttention and the MatMuls int8 (s8 weights per channel, full range; u8 dynamic "
        "activations); FFN down-projections (post-GELU input) kept fp32. Full-range weights are exact on "
        "VNNI CPUs; validated on the exporting CPU",
        op_types=("MatMul", "Attention"),
        exclude=_ffn_down_projections,
        smooth_alpha=0.7,
        smooth_ops=("MatMul", "Attention"),
        reduce_range=False,
    ),
    Int8Recipe(
        "matmul-per-channel",
        "every MatMul int8 (per-channel weights, reduce_range); attention QKV stays fp32",
    ),
    Int8Recipe(
        "smoothed-matmul-per-channel-fp32-ffn-down",
        "activations smoothed (SmoothQuant, alpha 0.7), MatMuls int8 per-channel with reduce_range, "
        "FFN down-projections (post-GELU input) and attention QKV kept fp32",
        exclude=_ffn_down_projections,
        smooth_alpha=0.7,
    ),
    Int8Recipe(
        "smoothed-matmul-per-channel-fp32-ffn-down-edges",
        "as smoothed-matmul-per-channel-fp32-ffn-down, with the first and last layer entirely fp32",
        exclude=lambda model: sorted(set(_ffn_down_projections(model)) | set(_edge_layers(model))),
        smooth_alpha=0.7,
    ),
]


def quantize_int8(
    model_path: Path, out_path: Path, recipe: Int8Recipe, calibration: Sequence[dict[str, np.ndarray]]
) -> tuple[int, list[str]]:
    """Quantise ``model_path`` into ``out_path``; returns (quantised node count, fp32 MatMuls)."""
    import onnx

    model = onnx.load(str(model_path))
    excluded = recipe.exclude(model)
    source_path = model_path
    if recipe.smooth_alpha is not None:
        source_path = out_path.with_suffix(".smoothed.onnx")
        smoothed = smooth(model, calibration, recipe.smooth_alpha, skip=excluded, ops=recipe.smooth_ops)
        onnx.save(smoothed, str(source_path))
    quiet = _DropPreprocessingHint()
    logging.getLogger().addFilter(quiet)
    try:
        if recipe.static:
            _quantize_static(source_path, out_path, recipe, excluded, calibration)
        else:
            _quantize_dynamic(source_path, out_path, recipe, excluded)
    except Exception as err:
        raise ExportError(f"int8 quantisation ({recipe.name}) failed: {err}") from err
    finally:
        logging.getLogger().removeFilter(quiet)
    quantized = onnx.load(str(out_path), load_external_data=False)
    integer_ops = ("MatMulInteger", "QAttention", "QEmbedLayerNormalization", "DequantizeLinear")
    count = sum(node.op_type in integer_ops for node in quantized.graph.node)
    return count, excluded


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[name]


def _quantize_dynamic(source: Path, out: Path, recipe: Int8Recipe, excluded: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(
        str(source),
        str(out),
        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=_quant_type(recipe.weight_type),
        nodes_to_exclude=excluded,
        # Fused com.microsoft ops defeat ONNX shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


class _Feeds:
    """The calibration feeds as ONNX Runtime's ``CalibrationDataReader``."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], names: set[str]) -> None:
        self._feeds = iter([{k: v for k, v in feed.items() if k in names} for feed in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _quantize_static(
    source: Path, out: Path, recipe: Int8Recipe, excluded: list[str], calibration: Sequence[dict[str, np.ndarray]]
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(source))
    initializers = {init.name for init in model.graph.initializer}
    names = {i.name for i in model.graph.input if i.name not in initializers}
    # ONNX's own shape inference stops at the fused com.microsoft ops, and the quantiser leaves every
    # tensor whose type it cannot tell in fp32; ORT's symbolic inference knows those ops.
    typed = out.with_suffix(".typed.onnx")
    onnx.save(SymbolicShapeInference.infer_shapes(model, auto_merge=True), str(typed))
    quantize_static(
        str(typed),
        str(out),
        _Feeds(calibration, names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=_quant_type(recipe.activation_type),
        weight_type=_quant_type(recipe.weight_type),
        nodes_to_exclude=excluded,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


class Int8Judge(Protocol[Report]):
    """How :func:`pick_int8` reads an artifact kind's parity check (embed.py, rerank.py)."""

    def grade(self, path: Path, precision: str) -> Report:
        """The parity report of the artifact at ``path``."""
        ...

    def int8_score(self, report: Report) -> float:
        """Closeness to the reference, higher is closer: ranks the recipes tried."""
        ...

    def int8_enough(self, report: Report) -> bool:
        """Whether ``report`` passed with the margin that ends the search."""
        ...

    def int8_scores(self, report: Report) -> dict[str, object]:
        """The scores the manifest records for one attempt."""
        ...

    def int8_summary(self, report: Report) -> str:
        """The scores of one attempt, for its log line."""
        ...


def pick_int8(
    model_path: Path,
    work_dir: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    judge: Int8Judge[Report],
    log: Callable[[str], None],
    *,
    portable: bool = False,
) -> tuple[Path, Report, QuantizationReport]:
    """Try :data:`INT8_RECIPES` in order; the first ``judge`` finds enough wins, else the best passing one.
    ``portable`` leaves out the recipes with full-range weights, which need VNNI to serve as graded.

    Returns (path, its parity report, quantization report). If no recipe
    passes, the best attempt is returned and the caller's parity gate refuses
    it, naming the shortfall.
    """
    from .manifest import QuantizationReport

    attempts: list[dict[str, object]] = []
    best = None
    for index, recipe in enumerate(INT8_RECIPES):
        if portable and recipe.full_range_weights:
            continue
        path = work_dir / f"model.int8.{index}.onnx"
        count, excluded = quantize_int8(model_path, path, recipe, calibration)
        report = judge.grade(path, "int8")
        passed = report.passed
        attempts.append({"recipe": recipe.name, **judge.int8_scores(report), "passed": passed})
        log(f"int8 recipe {recipe.name}: {judge.int8_summary(report)} ({'pass' if passed else 'fail'})")
        key = (passed, judge.int8_score(report))
        if best is None or key > best[0]:
            best = (key, path, recipe, report, count, excluded)
        if passed and judge.int8_enough(report):
            break
    if best is None:
        raise ExportError("no int8 recipe configured")
    _, path, recipe, report, count, excluded = best
    quant = QuantizationReport(recipe=recipe.name, description=recipe.description, quantized_nodes=count,
                               fp32_nodes=excluded, attempts=attempts, full_range_weights=recipe.full_range_weights)
    return path, report, quant
