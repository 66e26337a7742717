"""The model runtime: one ONNX Runtime session behind a small interface.

CPU and CUDA share one code path: inputs are padded here, bound as OrtValues on
the session's device through IOBinding, and only the outputs a batch needs are
bound and copied back. Pooling and normalisation run inside the graph, on the
device. Only the execution provider differs between CPU and GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


class RuntimeLoadError(Exception):
    """The model could not be loaded on the requested device."""


class EncoderRuntime:
    """Runs padded batches of token ids through an exported encoder."""

    def __init__(self, model_path: Path, *, device: str, threads: int, inputs: Sequence[str]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if device == "cuda":
            providers: list = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for every load failure
            raise RuntimeLoadError(f"could not load {model_path}: {exc}") from exc
        self.provider = self._session.get_providers()[0]
        # OrtValues live where the provider computes; "cpu" binds numpy memory directly.
        self._device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self._needs_token_types = "token_type_ids" in inputs

    def run(self, ids: np.ndarray, lengths: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Encode one batch. ``ids`` holds every text's ids back to back; ``lengths`` splits them.

        Returns each requested output; ``token_embeddings`` comes back flat, real
        tokens only, shape (sum(lengths), hidden).
        """
        batch, width = len(lengths), int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        input_ids = np.zeros((batch, width), dtype=np.int64)
        input_ids[mask] = ids
        feeds = {"input_ids": input_ids, "attention_mask": mask.astype(np.int64)}
        if self._needs_token_types:
            feeds["token_type_ids"] = np.zeros((batch, width), dtype=np.int64)

        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self._device, 0))
        for name in outputs:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        results = dict(zip(outputs, binding.copy_outputs_to_cpu()))
        if "token_embeddings" in results:
            results["token_embeddings"] = results["token_embeddings"][mask]
        return results
