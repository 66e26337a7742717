"""Padding on the device: flat token ids in, the encoder's padded inputs out.

The broker sends a worker each batch as real tokens only (all texts' ids back to
back, and their lengths). A tiny ONNX graph, run by the same execution provider
as the model, turns them into ``input_ids``, ``attention_mask`` and
``token_type_ids`` of shape (batch, longest); its outputs stay on the device and
are bound straight into the encoder's session. Only real tokens cross to a GPU,
and no padded array is built on the host.

The graph is the same for every model, so it ships with the server as
``padding.onnx``: the server needs ONNX Runtime, not the ``onnx`` package.
``python -m zeroembed.server.workers.padding`` rebuilds it (that needs ``onnx``), and a
test checks the shipped file is what :func:`build_padding_model` builds.
"""

from __future__ import annotations

from pathlib import Path

PADDING_MODEL = Path(__file__).with_name("padding.onnx")
# In: "ids", int32 (tokens,), every text's ids back to back, and "lengths", int32 (batch,).
# Out: the encoder inputs below, int64 (batch, longest).
PADDED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: A model input fed per row rather than padded: how many leading tokens are the prompt's (include_prompt=False).
PROMPT_LENGTH = "prompt_length"
PAD_ID = 0  # what padded positions hold; the attention mask hides them, so any id would do


def build_padding_model() -> bytes:
    """The padding graph, serialized (needs the ``onnx`` package: maintainers only)."""
    from onnx import TensorProto, helper

    constants = [helper.make_tensor(name, TensorProto.INT64, [], [value])
                 for name, value in (("zero", 0), ("one", 1), ("pad_id", PAD_ID), ("axis0", 0), ("axis1", 1))]
    nodes = [
        helper.make_node("Cast", ["lengths"], ["lengths64"], to=TensorProto.INT64),
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["lengths64"], ["width"], keepdims=0),
        helper.make_node("Range", ["zero", "width", "one"], ["positions"]),  # (W,)
        helper.make_node("Unsqueeze", ["positions", "axis0"], ["positions_row"]),  # (1, W)
        helper.make_node("Unsqueeze", ["lengths64", "axis1"], ["lengths_col"]),  # (B, 1)
        helper.make_node("Less", ["positions_row", "lengths_col"], ["real"]),  # (B, W) bool
        # Where text i starts in the flat ids; padded positions read index 0 and are masked out after.
        helper.make_node("CumSum", ["lengths64", "axis0"], ["starts"], exclusive=1),
        helper.make_node("Unsqueeze", ["starts", "axis1"], ["starts_col"]),
        helper.make_node("Add", ["starts_col", "positions_row"], ["flat_index"]),
        helper.make_node("Where", ["real", "flat_index", "zero"], ["safe_index"]),
        helper.make_node("Gather", ["ids64", "safe_index"], ["gathered"], axis=0),
        helper.make_node("Where", ["real", "gathered", "pad_id"], ["input_ids"]),
        helper.make_node("Cast", ["real"], ["attention_mask"], to=TensorProto.INT64),
        helper.make_node("Mul", ["attention_mask", "zero"], ["token_type_ids"]),
    ]
    graph = helper.make_graph(
        nodes, "zeroembed_padding",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["tokens"]),
         helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "width"]) for name in PADDED_INPUTS],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="zeroembed")
    model.ir_version = 8  # readable by every ONNX Runtime the server supports (>= 1.20)
    return model.SerializeToString()


if __name__ == "__main__":
    PADDING_MODEL.write_bytes(build_padding_model())
    print(f"wrote {PADDING_MODEL}")
