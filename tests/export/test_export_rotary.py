"""ModernBERT, NomicBERT, Qwen2 and Qwen3: fused attention and sentence-transformers parity.

Each architecture is a tiny random-weight model (benchmarks/randomrotary.py) saved as a
sentence-transformers folder, exported, and compared with sentence-transformers on that folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting needs the 'export' extra")
st = pytest.importorskip("sentence_transformers")

from zeroembed.benchmarks.randomrotary import ARCHITECTURES, DECODERS, make_random_rotary  # noqa: E402
from zeroembed.export import Manifest, export_model  # noqa: E402
from zeroembed.export.source import POOLING_MODES  # noqa: E402

TEXTS = [
    "a",
    "How do I reset my password?",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "東京 🚀 and ünïcödé",
    "Long input " + "that keeps going and going " * 20,  # past ModernBERT's tiny sliding window
]
PROMPTS = {"query": "query: ", "passage": "Represent this passage for retrieval: "}
# Decoders pool the last token once the shared pooling supports it; mean until then.
DECODER_POOLING = "lasttoken" if "lasttoken" in POOLING_MODES else "mean"


def _pooling(arch: str) -> str:
    return DECODER_POOLING if arch in DECODERS else "mean"


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(architecture, model folder, fp32 artifact) for each rotary architecture."""
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    folder = make_random_rotary(arch, root / "model", tiny=True, pooling=_pooling(arch), prompts=PROMPTS)
    export_model(folder, root / "artifact")
    return arch, folder, root / "artifact"


def _st_vectors(folder: Path, texts: list[str], prompt_name: str | None) -> tuple[np.ndarray, list[np.ndarray]]:
    model = st.SentenceTransformer(str(folder), device="cpu")
    sentence = model.encode(texts, prompt_name=prompt_name, convert_to_numpy=True)
    tokens = model.encode(texts, prompt_name=prompt_name, output_value="token_embeddings")
    # Rows come back at the batch's width when the tokenizer pads on the left: keep the real tokens.
    prompt = model.prompts[prompt_name] if prompt_name else ""
    lengths = [len(ids) for ids in model.tokenizer([prompt + t for t in texts], truncation=True,
                                                   max_length=model.max_seq_length)["input_ids"]]
    left = model.tokenizer.padding_side == "left"
    return sentence, [t.numpy()[-n:] if left else t.numpy()[:n] for t, n in zip(tokens, lengths, strict=True)]


def _real_tokens(out: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [out["token_embeddings"][row][mask.astype(bool)] for row, mask in enumerate(out["attention_mask"])]


def test_one_fused_attention_per_layer(exported: tuple[str, Path, Path]) -> None:
    arch, _, artifact = exported
    manifest = Manifest.read(artifact)
    assert manifest.architecture.model_type == arch
    assert manifest.fused_operators["MultiHeadAttention"] == manifest.architecture.num_layers
    assert manifest.inputs == ["input_ids", "attention_mask"]
    assert manifest.pooling == _pooling(arch) and manifest.normalize
    assert manifest.parity.passed


@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_matches_sentence_transformers(exported: tuple[str, Path, Path], prompt_name: str | None, embed,
                                       cosines) -> None:
    _, folder, artifact = exported
    st_sentence, st_tokens = _st_vectors(folder, TEXTS, prompt_name)
    prompt = PROMPTS[prompt_name] if prompt_name else ""
    out = embed(artifact, [prompt + text for text in TEXTS])
    assert cosines(out["sentence_embedding"], st_sentence).min() >= 0.9999
    ours = _real_tokens(out)
    assert [len(t) for t in ours] == [len(t) for t in st_tokens]
    assert cosines(np.concatenate(ours), np.concatenate(st_tokens)).min() >= 0.9999


def test_prompt_changes_the_vectors(exported: tuple[str, Path, Path], embed, cosines) -> None:
    # Guards the test above: a prompt that changed nothing would make its second case vacuous.
    _, _, artifact = exported
    plain = embed(artifact, TEXTS)["sentence_embedding"]
    prompted = embed(artifact, [PROMPTS["query"] + text for text in TEXTS])["sentence_embedding"]
    assert cosines(plain, prompted).min() < 0.999


@pytest.mark.parametrize("arch", DECODERS)
def test_decoder_padding_side(arch: str, tmp_path: Path, embed, cosines) -> None:
    """A left-padding tokenizer (how Qwen embedders ship) gives the vectors of a right-padding one."""
    folder = make_random_rotary(arch, tmp_path / "left", tiny=True, pooling=DECODER_POOLING, padding_side="left")
    artifact = tmp_path / "artifact"
    export_model(folder, artifact)
    st_sentence, st_tokens = _st_vectors(folder, TEXTS, None)
    out = embed(artifact, TEXTS)  # right-padded, as the server pads
    assert cosines(out["sentence_embedding"], st_sentence).min() >= 0.9999
    assert cosines(np.concatenate(_real_tokens(out)), np.concatenate(st_tokens)).min() >= 0.9999

    # The graph itself, fed left-padded rows: same vectors.
    import onnxruntime as ort

    ids, mask = out["input_ids"], out["attention_mask"]
    left_ids, left_mask = np.zeros_like(ids), np.zeros_like(mask)
    for row in range(len(ids)):
        length = int(mask[row].sum())
        left_ids[row, ids.shape[1] - length:] = ids[row, :length]
        left_mask[row, ids.shape[1] - length:] = 1
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    left = session.run(["sentence_embedding"], {"input_ids": left_ids, "attention_mask": left_mask})[0]
    assert cosines(left, out["sentence_embedding"]).min() >= 0.9999


def test_modernbert_8192_tokens(tmp_path: Path, embed, cosines) -> None:
    """A text of 8192 tokens through a ModernBERT export on CPU finishes and matches."""
    # Two heads keep the [heads, 8192, 8192] attention scores at 512 MiB.
    folder = make_random_rotary("modernbert", tmp_path / "model", tiny=True, max_seq_length=8192,
                                num_attention_heads=2)
    manifest = export_model(folder, tmp_path / "artifact")
    assert manifest.max_seq_length == 8192
    words = ["alpha", "river", "stone", "quick", "light", "seven", "north", "garden"]
    text = " ".join(words[i % len(words)] + str(i % 10) for i in range(9000))
    out = embed(tmp_path / "artifact", [text])
    assert out["input_ids"].shape == (1, 8192)
    st_sentence, st_tokens = _st_vectors(folder, [text], None)
    assert cosines(out["sentence_embedding"], st_sentence).min() >= 0.9999
    assert cosines(_real_tokens(out)[0], st_tokens[0]).min() >= 0.9999


@pytest.mark.parametrize("arch", ["modernbert", "qwen3"])
def test_int8_keeps_fused_attention(arch: str, tmp_path: Path, embed, cosines) -> None:
    folder = make_random_rotary(arch, tmp_path / "model", tiny=True, pooling=_pooling(arch))
    manifest = export_model(folder, tmp_path / "int8", precision="int8")
    assert manifest.fused_operators["MultiHeadAttention"] == manifest.architecture.num_layers
    st_sentence, _ = _st_vectors(folder, TEXTS, None)
    assert cosines(embed(tmp_path / "int8", TEXTS)["sentence_embedding"], st_sentence).min() >= 0.99
