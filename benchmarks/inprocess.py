"""Embedding in process, no server: ONNX Runtime on an artifact, and sentence-transformers on PyTorch.

The ORT encoder runs the session the way the server's runtime does (same
session options, intra-op threads = cores), tokenizes with the artifact's
tokenizer, sorts texts by length and pads per batch: the best an application
could do by linking the runtime itself. Timed rates include tokenization,
as the server's and sentence-transformers' do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


class OrtEncoder:
    def __init__(self, artifact: Path, threads: int, model_file: str = "model.onnx", device: str = "cpu") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from zeroembed.server.workers.runtime import providers, session_options

        artifact = Path(artifact)
        manifest = json.loads((artifact / "manifest.json").read_text())
        # The server's own session settings: the baseline differs from it only in how it is called.
        self.session = ort.InferenceSession(str(artifact / model_file), session_options(threads, device),
                                            providers=providers(device))
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(manifest["max_seq_length"]))

    def _run(self, encodings) -> np.ndarray:
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max())
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return self.session.run(["sentence_embedding"], feeds)[0]

    def encode(self, texts: list[str], batch_size: int, sort: bool = True) -> np.ndarray:
        """Vectors of ``texts`` in their order; batches formed after sorting by token length."""
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids)) if sort else list(range(len(texts)))
        out = None
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vectors = self._run([encodings[i] for i in rows])
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        return self._run([self.tokenizer.encode(text)])


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def call_times_ms(fn, iterations: int) -> list[float]:
    """Each of ``iterations`` calls of ``fn()`` in ms, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def wait_until_idle(quiet_s: float = 0.02, limit_s: float = 2.0, step_s: float = 0.005) -> float:
    """Sleep until this process has used next to no CPU for ``quiet_s``; the seconds it took (≤ ``limit_s``).

    After its last call an in-process session's thread pool goes on spinning (ONNX
    Runtime's for tens of milliseconds, PyTorch's for less), holding a core that
    whatever is timed next needs: without this wait, the server's first calls after
    an in-process block would time that spinning too (docs/decisions.md).
    """
    started = time.monotonic()
    quiet_since = started
    cpu = time.process_time()
    while time.monotonic() - started < limit_s:
        time.sleep(step_s)
        now, used = time.monotonic(), time.process_time()
        busy, cpu = used - cpu > 0.2 * step_s, used  # some thread of ours ran for over a fifth of the step
        if busy:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            break
    return time.monotonic() - started


def percentiles_ms(times_ms: list[float]) -> dict[str, float]:
    """p50/p99 of call times in ms, and how many there were."""
    return {"p50": float(np.percentile(times_ms, 50)), "p99": float(np.percentile(times_ms, 99)),
            "n": len(times_ms)}


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def quantize_fallback(fp32_artifact: Path, out_dir: Path) -> Path:
    """An int8 stand-in when no exported int8 artifact exists: ORT dynamic quantization (per channel) of the
    fused fp32 model. Not what ``zeroembed export --precision int8`` makes (no recipe search, no parity gate)."""
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(Path(fp32_artifact) / "model.onnx"), str(out_dir / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    shutil.copy(Path(fp32_artifact) / "tokenizer.json", out_dir / "tokenizer.json")
    manifest = json.loads((Path(fp32_artifact) / "manifest.json").read_text())
    manifest["precision"] = "int8"
    manifest["quantization"] = {"recipe": "bench-fallback-quantize-dynamic-per-channel"}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir
