"""How much arithmetic the model needs, and how fast this machine multiplies matrices: the ceiling.

Floating-point work of one text of ``L`` real tokens through a BERT encoder
(multiply-add = 2 FLOPs; padding is not counted, so padding shows up as a lower
fraction of the ceiling)::

    params_matmul = layers × (4·h² + 2·h·i)        # Q, K, V, output projections + the two FFN matrices
    flops(L)      = 2 · params_matmul · L           # every token through every dense layer
                  + 4 · layers · L² · h             # attention: Q·Kᵀ and softmax·V, 2·L²·h each

with ``h`` = hidden size, ``i`` = intermediate (FFN) size, read from the
manifest's ``architecture`` (``intermediate_size``; when absent, 4·h, which is
BERT's and MiniLM's ratio). Embeddings, layer norms, GELU, softmax and pooling
are left out (under 2 % here). For all-MiniLM-L6-v2 (h 384, i 1536, 6 layers):
params_matmul = 10.6 M, so about 21.2 MFLOP per token plus 9.2 kFLOP·L per token
of attention.

The ceiling is the measured rate of ONNX Runtime's own MatMul (MLAS on the CPU,
cuBLAS on CUDA: the kernels the model runs on) on the model's three matrix shapes
— (M×h)·(h×3h), (M×h)·(h×i), (M×i)·(i×h) with M = 1024 token rows — at the same
intra-op thread count as the in-process runtime, in the artifact's precision
(fp32; fp16 for an fp16 artifact on CUDA), inputs and outputs bound on the device
so no copy is timed. numpy's BLAS rate (fp32, CPU) is reported beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arch:
    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def from_manifest(cls, manifest: dict) -> Arch:
        arch = manifest.get("architecture") or {}
        hidden = int(arch.get("hidden_size") or manifest["hidden_size"])
        layers = int(arch.get("num_layers") or arch.get("num_hidden_layers") or 6)
        inter = int(arch.get("intermediate_size") or 4 * hidden)
        return cls(layers, hidden, inter)

    @property
    def matmul_params(self) -> int:
        h, i = self.hidden, self.intermediate
        return self.layers * (4 * h * h + 2 * h * i)

    def flops(self, length: int) -> float:
        return 2.0 * self.matmul_params * length + 4.0 * self.layers * length * length * self.hidden

    def corpus_flops(self, lengths) -> float:
        return float(sum(self.flops(int(n)) for n in lengths))


def _shapes(arch: Arch, rows: int) -> list[tuple[int, int, int]]:
    h, i = arch.hidden, arch.intermediate
    return [(rows, h, 3 * h), (rows, h, i), (rows, i, h)]


def ort_matmul_gflops(arch: Arch, threads: int, rows: int = 1024, seconds: float = 1.0, device: str = "cpu",
                      fp16: bool = False) -> float | None:
    """GFLOP/s of ONNX Runtime MatMul on the model's shapes; None where the onnx package is missing."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        from zeroembed.server.workers.runtime import providers, session_options
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    dtype, elem = (np.float16, TensorProto.FLOAT16) if fp16 else (np.float32, TensorProto.FLOAT)
    nodes, inits, outputs = [], [], []
    shapes = _shapes(arch, rows)
    inputs = []
    for k, (m, kk, n) in enumerate(shapes):
        inputs.append(helper.make_tensor_value_info(f"x{k}", elem, [m, kk]))
        weight = (rng.standard_normal((kk, n), dtype=np.float32) * 0.05).astype(dtype)
        inits.append(numpy_helper.from_array(weight, f"w{k}"))
        nodes.append(helper.make_node("MatMul", [f"x{k}", f"w{k}"], [f"y{k}"]))
        outputs.append(helper.make_tensor_value_info(f"y{k}", elem, [m, n]))
    graph = helper.make_graph(nodes, "matmuls", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads, device),
                                   providers=providers(device))
    binding = session.io_binding()
    for k, (m, kk, _) in enumerate(shapes):
        x = rng.standard_normal((m, kk), dtype=np.float32).astype(dtype)
        binding.bind_ortvalue_input(f"x{k}", ort.OrtValue.ortvalue_from_numpy(x, device, 0))
        binding.bind_output(f"y{k}", device)
    flops = sum(2.0 * m * kk * n for m, kk, n in shapes)

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # CUDA runs asynchronously: time the work, not the launch

    run()
    return _rate(run, flops, seconds)


def numpy_matmul_gflops(arch: Arch, rows: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of numpy's BLAS on the same shapes (its own thread count)."""
    rng = np.random.default_rng(0)
    shapes = _shapes(arch, rows)
    pairs = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
             for m, k, n in shapes]
    flops = sum(2.0 * m * k * n for m, k, n in shapes)

    def run() -> None:
        for a, b in pairs:
            a @ b

    run()
    return _rate(run, flops, seconds)


def _rate(fn, flops: float, seconds: float) -> float:
    """Best of several timed rounds (the least disturbed by other work on the machine), in GFLOP/s."""
    best = float("inf")
    end = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        rounds += 1
    return flops / best / 1e9
