"""Tiny random-weight sentence-transformers folders, built and saved by sentence-transformers itself.

Each BERT-family architecture comes from ``benchmarks/randomencoder.py`` at its
tiny size (a transformers config small enough to export in seconds, a tokenizer
built from the default model's BERT vocabulary; nothing is downloaded). The
folder is written by ``SentenceTransformer.save``, so the exporter reads exactly
what sentence-transformers writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zeroembed.benchmarks.randomencoder import write_hf_encoder

LAYERS = 2
POSITIONS = 130


def make_st_model(
    out: Path,
    architecture: str = "bert",
    *,
    pooling: str = "mean",
    include_prompt: bool = True,
    dense: Sequence[tuple[int, str] | tuple[int, str, bool]] = (),
    normalize: bool = False,
    prompts: Mapping[str, str] | None = None,
    default_prompt_name: str | None = None,
    max_seq_length: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``architecture`` model with the given head into ``out``.

    ``dense`` lists (out_features, activation class name in torch.nn[, use_residual]) per Dense layer.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    torch.manual_seed(seed)
    hf_dir = out.with_name(out.name + "-hf")
    width = write_hf_encoder(architecture, hf_dir, tiny=True, layers=LAYERS, positions=POSITIONS)
    modules: list[torch.nn.Module] = [models.Transformer(str(hf_dir), max_seq_length=max_seq_length)]
    modules.append(models.Pooling(width, pooling_mode=pooling, include_prompt=include_prompt))
    for out_features, activation, *residual in dense:
        modules.append(models.Dense(width, out_features, activation_function=getattr(torch.nn, activation)(),
                                    use_residual=bool(residual and residual[0])))
        width = out_features
    if normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, prompts=dict(prompts or {}), default_prompt_name=default_prompt_name,
                                device="cpu")
    model.save(str(out))
    return out


def load_st(folder: Path) -> Any:
    """The folder under sentence-transformers, on CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def run_artifact(artifact: Path, texts: Sequence[str], prompt: str = "") -> dict[str, Any]:
    """Run ``artifact`` as a server would: ``prompt + text`` tokenized, right-padded, prompt_length fed."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from zeroembed.export.tokenizer import encode_batch, prompt_token_length

    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    length = prompt_token_length(tokenizer, prompt) if prompt else 0
    feed = encode_batch(tokenizer, [prompt + text for text in texts], [length] * len(texts))
    wanted = {i.name: feed[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, wanted), strict=True))
    outputs["lengths"] = feed["attention_mask"].sum(axis=1)
    return outputs


def min_cosine(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(((a * b).sum(-1) / np.maximum(norms, 1e-30)).min())


def compare_with_st(st_model: Any, artifact: Path, texts: Sequence[str], prompt: str = "") -> tuple[float, float]:
    """(sentence, token) min cosine of the artifact against sentence-transformers on ``texts``.

    sentence-transformers gets the literal ``prompt`` (its own prompt handling:
    prepended, and left out of the pooling where the model says so).
    """
    import numpy as np

    got = run_artifact(artifact, texts, prompt)
    # An explicit prompt ("" included) overrides any default_prompt_name, as in the artifact run.
    expected = st_model.encode(list(texts), prompt=prompt, convert_to_numpy=True)
    expected_tokens = st_model.encode(list(texts), prompt=prompt, output_value="token_embeddings",
                                      convert_to_numpy=False)
    assert got["sentence_embedding"].shape == expected.shape
    token_cosines = []
    for row, reference in enumerate(expected_tokens):
        length = int(got["lengths"][row])
        assert length == reference.shape[0], "tokenization differs from sentence-transformers"
        token_cosines.append(min_cosine(got["token_embeddings"][row, :length], reference.numpy()))
    return min_cosine(got["sentence_embedding"], expected), float(np.min(token_cosines))
