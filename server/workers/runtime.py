"""The model runtime: the model's ONNX Runtime sessions behind a small interface.

CPU and CUDA share one code path: a batch's real tokens go to the session's
device as OrtValues, the padding graph (padding.py) pads them there, its outputs
are bound straight into the encoder through IOBinding, and only the outputs a
batch needs are bound and copied back. One text, with nothing to pad, goes in
as a host array instead: a plain run copies its few bytes both ways. Pooling
and normalisation run inside the graph, on the device. Only the execution
provider differs between CPU and GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .padding import PADDING_MODEL, PROMPT_LENGTH

log = logging.getLogger(__name__)


class RuntimeLoadError(Exception):
    """The model could not be loaded on the requested device."""


# ORT fusions the server turns off, by device. On CPU, SkipLayerNormalization's kernel
# is slower than the LayerNormalization + Add it would replace (export/fusion.py).
DISABLED_FUSIONS: dict[str, tuple[str, ...]] = {"cpu": ("SkipLayerNormFusion",), "cuda": ()}

# How long the all-threads session's idle pool threads spin after a run, when batches may also run side
# by side. Unbounded (ORT's default), they spin on the cores the side-by-side runs need; stopped at once,
# every run must first wake them, and waking an idle core is slow. A few milliseconds cover the gap
# between one client's back-to-back requests and no more (docs/decisions.md).
SPIN_AFTER_RUN_US = 3000


def session_options(threads: int, device: str) -> ort.SessionOptions:
    """The settings the server runs a model with on ``device`` ("cpu" or "cuda").

    The benchmark's in-process baseline and matmul ceiling use them too.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if DISABLED_FUSIONS[device]:
        options.add_session_config_entry("optimization.disable_specified_optimizers",
                                         ",".join(DISABLED_FUSIONS[device]))
    return options


def providers(device: str) -> list:
    """ONNX Runtime's execution providers for ``device``; on "cuda", the CPU one takes the ops CUDA lacks."""
    if device == "cuda":
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class EncoderRuntime:
    """Runs batches of token ids through an exported encoder.

    With ``parallel`` > 1 it holds a second session of the model with one
    intra-op thread, which several threads may run at once (ONNX Runtime
    sessions are safe to run concurrently): on a small CPU, batches side by side
    on one thread each beat the same batches one after another on all threads:
    ORT's threads meet at every operator, and a small batch does not keep them
    all busy (docs/decisions.md). A lone batch still gets every thread, so one short
    text is answered as fast as the machine allows.
    """

    def __init__(self, model_path: Path, *, device: str, threads: int, inputs: Sequence[str],
                 parallel: int = 1) -> None:
        on = providers(device)
        try:
            alone_options = session_options(threads, device)
            if parallel > 1:
                alone_options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_AFTER_RUN_US))
            self._alone = ort.InferenceSession(str(model_path), alone_options, providers=on)
            self._side_by_side = (ort.InferenceSession(str(model_path), session_options(1, device), providers=on)
                                  if parallel > 1 else self._alone)
            # A few index operations per batch: one thread, no pool to wake.
            self._padder = ort.InferenceSession(str(PADDING_MODEL), session_options(1, device), providers=on)
        except Exception as exc:  # ORT raises its own exception types for every load failure
            raise RuntimeLoadError(f"could not load {model_path}: {exc}") from exc
        self.provider = self._alone.get_providers()[0]
        # OrtValues live where the provider computes; "cpu" binds numpy memory directly.
        self._device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        # Each one an output of the padding graph (checked with the artifact); prompt_length is fed per row.
        self._takes_prompt_length = PROMPT_LENGTH in inputs
        self._inputs = [name for name in inputs if name != PROMPT_LENGTH]

    def run(self, ids: np.ndarray, lengths: np.ndarray, outputs: Sequence[str], *,
            alone: bool = True, prompt_lengths: np.ndarray | None = None,
            splits: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Encode one batch. ``ids`` (int32) holds every text's ids back to back; ``lengths`` (int32) splits them.

        ``alone=False`` runs it on the one-thread session, beside other batches. ``prompt_lengths``
        (int64, one per text) feeds models that pool without the prompt's tokens (0 where none).
        ``splits`` (int32, one per row) marks a batch of (query, document) pairs: row
        ``i``'s token type is 1 from position ``splits[i]`` to its end, 0 elsewhere.
        Returns each requested output; ``token_embeddings`` comes back flat, real
        tokens only, shape (sum(lengths), hidden).
        """
        session = self._alone if alone else self._side_by_side
        types = splits is not None and "token_type_ids" in self._inputs
        if self._takes_prompt_length and prompt_lengths is None:
            prompt_lengths = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) == 1:
            feeds = self._one_text_feeds(ids)
            if types:
                feeds["token_type_ids"][0, int(splits[0]):] = 1
            if self._takes_prompt_length:
                feeds[PROMPT_LENGTH] = np.asarray(prompt_lengths, dtype=np.int64)
            results = dict(zip(outputs, session.run(list(outputs), feeds)))
        else:
            binding = session.io_binding()
            for name, value in zip(self._inputs, self._padded_inputs(ids, lengths)):
                if name == "token_type_ids" and types:
                    # Pairs' type ids are built here on the host (batch × width int64, small next to the
                    # run); the padding graph's all-zero ones serve single texts.
                    value = ort.OrtValue.ortvalue_from_numpy(_pair_types(lengths, splits), self._device, 0)
                binding.bind_ortvalue_input(name, value)
            if self._takes_prompt_length:
                binding.bind_cpu_input(PROMPT_LENGTH, np.asarray(prompt_lengths, dtype=np.int64))
            for name in outputs:
                binding.bind_output(name, self._device)
            session.run_with_iobinding(binding)
            results = dict(zip(outputs, binding.copy_outputs_to_cpu()))
        if "token_embeddings" in results:
            real = np.arange(int(lengths.max()))[None, :] < lengths[:, None]
            results["token_embeddings"] = results["token_embeddings"][real]
        return results

    def _one_text_feeds(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """One text has nothing to pad: its row goes in as host arrays, which ORT copies to the device.

        That skips the padding graph's run and the IOBinding calls, which run with cold caches between
        model runs (docs/decisions.md), and its row and
        its output are a few kB on any bus.
        """
        row = ids.astype(np.int64).reshape(1, -1)
        fill = {"attention_mask": 1, "token_type_ids": 0}  # every position a real token of the one sentence
        return {name: row if name == "input_ids" else np.full_like(row, fill[name]) for name in self._inputs}

    def _padded_inputs(self, ids: np.ndarray, lengths: np.ndarray) -> list[ort.OrtValue]:
        """The encoder's inputs (``self._inputs``, in order) for a batch of texts, padded on the device."""
        padding = self._padder.io_binding()
        padding.bind_ortvalue_input("ids", ort.OrtValue.ortvalue_from_numpy(ids, self._device, 0))
        padding.bind_ortvalue_input("lengths", ort.OrtValue.ortvalue_from_numpy(lengths, self._device, 0))
        for name in self._inputs:
            padding.bind_output(name, self._device)
        self._padder.run_with_iobinding(padding)
        return padding.get_outputs()


def _pair_types(lengths: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Token type ids of a padded batch of pairs: 1 on each row's second text, 0 on the first and on padding."""
    positions = np.arange(int(lengths.max()))[None, :]
    return ((positions >= splits[:, None]) & (positions < lengths[:, None])).astype(np.int64)
