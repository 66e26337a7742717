"""The padding graph: flat token ids in, the encoder's padded inputs out, on the session's device."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, strategies as st

from zeroembed.server.workers.padding import PAD_ID, PADDED_INPUTS, PADDING_MODEL, build_padding_model

from ...dependencies import require


@pytest.fixture(scope="module")
def padder() -> ort.InferenceSession:
    return ort.InferenceSession(str(PADDING_MODEL), providers=["CPUExecutionProvider"])


def reference(ids: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Padding the obvious way, in numpy."""
    width = int(lengths.max())
    input_ids = np.full((len(lengths), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    start = 0
    for row, length in enumerate(lengths):
        input_ids[row, :length] = ids[start:start + length]
        mask[row, :length] = 1
        start += length
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}


def test_shipped_graph_is_the_one_the_builder_makes():
    onnx = require("onnx", "export")
    shipped = onnx.load(str(PADDING_MODEL))
    built = onnx.load_from_string(build_padding_model())
    assert shipped.graph == built.graph, "server/padding.onnx is stale: run python -m zeroembed.server.workers.padding"
    assert shipped.opset_import == built.opset_import
    onnx.checker.check_model(built, full_check=True)


def test_pads_a_known_batch(padder):
    ids = np.arange(101, 112, dtype=np.int32)
    lengths = np.array([3, 5, 1, 2], dtype=np.int32)
    input_ids, mask, token_types = padder.run(list(PADDED_INPUTS), {"ids": ids, "lengths": lengths})
    assert input_ids.tolist() == [[101, 102, 103, 0, 0], [104, 105, 106, 107, 108], [109, 0, 0, 0, 0],
                                  [110, 111, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert input_ids.dtype == mask.dtype == token_types.dtype == np.int64
    assert not token_types.any()


@given(st.lists(st.integers(1, 40), min_size=1, max_size=16), st.integers(0, 2**31 - 1))
def test_matches_numpy_padding(padder, lengths, seed):
    lengths = np.array(lengths, dtype=np.int32)
    ids = np.random.default_rng(seed).integers(1, 30522, int(lengths.sum()), dtype=np.int32)
    got = dict(zip(PADDED_INPUTS, padder.run(list(PADDED_INPUTS), {"ids": ids, "lengths": lengths})))
    for name, expected in reference(ids, lengths).items():
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def test_lengths_past_the_ids_are_an_error_not_garbage(padder):
    with pytest.raises(Exception, match="(?i)index|out of"):
        padder.run(["input_ids"], {"ids": np.arange(1, 4, dtype=np.int32), "lengths": np.array([2, 5], np.int32)})
