"""The fp16 artifact (what a GPU server exports by default) served through the same code path, here on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from ..dependencies import require
from ..server.servers import start_server


@pytest.fixture(scope="module")
def fp16_artifact(tmp_path_factory):
    require("torch", "export")
    from zeroembed.export import export_model

    out = tmp_path_factory.mktemp("fp16") / "all-MiniLM-L6-v2-fp16"
    export_model(None, out, precision="fp16")
    return out


def test_fp16_artifact_serves_vectors_close_to_fp32(default_artifact, fp16_artifact, tmp_path):
    texts = ["hello world", "An fp16 artifact keeps float32 inputs and outputs.", "東京は日本の首都です。",
             " ".join(["long text"] * 200)]
    fp32 = start_server(default_artifact, tmp_path, "--workers", "1")
    fp16 = start_server(fp16_artifact, tmp_path, "--workers", "1")
    try:
        with fp32.client() as a, fp16.client() as b:
            reference, half = a.encode(texts), b.encode(texts)
            tokens = b.encode(texts[:1], output="tokens")[0]
            assert b.status()["precision"] == "fp16"
    finally:
        assert fp32.stop() == 0 and fp16.stop() == 0
    assert half.dtype == np.float32 and half.shape == reference.shape
    cosine = np.sum(reference * half, axis=1)  # both unit length
    assert cosine.min() >= 0.999
    assert tokens.dtype == np.float32 and tokens.shape == (4, 384)
