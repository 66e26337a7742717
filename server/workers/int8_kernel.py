"""Whether ONNX Runtime's int8 matrix products are exact on this CPU, and what that means for an artifact.

ONNX Runtime multiplies u8 activations by s8 weights with VNNI instructions
where the CPU has them (AVX-512 VNNI, AVX-VNNI), which sum exactly. On other
x86 CPUs it uses ``VPMADDUBSW``, which adds pairs of products in 16 bits and
saturates: weights quantized over the full s8 range then lose accuracy (the
default model's sentence vectors fall to a cosine of about 0.96 to PyTorch).
The exporter's int8 gate measures this on the exporting CPU and records in the
manifest whether the weights use the full range (``quantization.full_range_weights``);
an artifact that does is refused on a CPU whose kernels saturate, rather than
served with vectors its parity report does not describe.

The probe is a one-node graph that ships with the server as ``int8_probe.onnx``
(the server needs ONNX Runtime, not the ``onnx`` package); ``python -m
zeroembed.server.workers.int8_kernel`` rebuilds it, and a test checks the
shipped file is what :func:`build_probe_model` builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StartupError

PROBE_MODEL = Path(__file__).with_name("int8_probe.onnx")
_DEPTH, _WIDTH = 64, 16  # a (rows, 64) u8 x (64, 16) s8 product; every weight is 127


def build_probe_model() -> bytes:
    """The probe graph, serialized (needs the ``onnx`` package: maintainers only)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((_DEPTH, _WIDTH), 127, np.int8), "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["activations", "weights"], ["products"])], "zeroembed_int8_probe",
        [helper.make_tensor_value_info("activations", TensorProto.UINT8, ["rows", _DEPTH])],
        [helper.make_tensor_value_info("products", TensorProto.INT32, ["rows", _WIDTH])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="zeroembed")
    model.ir_version = 8  # readable by every ONNX Runtime the server supports (>= 1.20)
    return model.SerializeToString()


def u8s8_products_exact() -> bool:
    """Whether ONNX Runtime's CPU kernel sums u8 x s8 products here without saturating.

    255 x 127 twice is 64770, past int16: a VNNI kernel sums it exactly, ``VPMADDUBSW`` clips it to 32767.
    This tells which kind of kernel ONNX Runtime really runs, whatever the CPU reports of itself.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(PROBE_MODEL), providers=["CPUExecutionProvider"])
    products = session.run(None, {"activations": np.full((4, _DEPTH), 255, np.uint8)})[0]
    return bool((products == 255 * 127 * _DEPTH).all())


def full_range_weights(manifest: Any) -> bool | None:
    """What an int8 artifact's manifest says of its weights: True (full s8 range, needs exact kernels),
    False (7-bit or u8 weights: exact on every CPU), None (not recorded: exported before the field)."""
    quantization = getattr(manifest, "quantization", None)
    return None if quantization is None else quantization.full_range_weights


def check_int8_artifact(name: str, manifest: Any, *, exact: bool) -> str | None:
    """Refuse an int8 artifact this CPU cannot run as exported (:class:`StartupError`); a warning to log when
    the manifest does not say (older exports); None when all is well. ``exact``: :func:`u8s8_products_exact`."""
    if manifest.precision != "int8" or exact:
        return None
    full_range = full_range_weights(manifest)
    if full_range:
        raise StartupError(
            f"{name}: this int8 artifact's weights use the full int8 range, which ONNX Runtime sums exactly only "
            "on CPUs with VNNI (AVX-512 VNNI or AVX-VNNI); this CPU's int8 kernel saturates, and its vectors "
            "would fall well below the accuracy its parity report gives. Export it again on this machine "
            "(`zeroembed export --precision int8` picks a recipe that holds here), or with --int8-portable on "
            "any machine, or serve the fp32 artifact")
    if full_range is None:
        return (f"{name}: this int8 artifact does not say whether its weights use the full int8 range, and this "
                "CPU's int8 kernel saturates (no VNNI): if it was exported on a CPU with VNNI its vectors may be "
                "less accurate than its parity report says. Export it again with this version to know")
    return None


def check_int8_here(name: str, manifest: Any, device: str) -> str | None:
    """:func:`check_int8_artifact` on this machine: probes the kernel only for an int8 artifact run on the CPU."""
    if manifest.precision != "int8" or device != "cpu":
        return None
    return check_int8_artifact(name, manifest, exact=u8s8_products_exact())


if __name__ == "__main__":
    PROBE_MODEL.write_bytes(build_probe_model())
    print(f"wrote {PROBE_MODEL}")
