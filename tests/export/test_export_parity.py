"""The default artifact against sentence-transformers, on texts the exporter never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_sentence_embedding_matches_sentence_transformers(
    default_artifact: Path, embed, sentence_transformer, unseen_texts, cosines
) -> None:
    expected = sentence_transformer.encode(unseen_texts, normalize_embeddings=False, convert_to_numpy=True)
    got = embed(default_artifact, unseen_texts)["sentence_embedding"]
    assert cosines(got, expected).min() >= 0.9999
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_token_embeddings_match_sentence_transformers(
    default_artifact: Path, embed, sentence_transformer, unseen_texts, cosines
) -> None:
    expected = sentence_transformer.encode(unseen_texts, output_value="token_embeddings", convert_to_numpy=False)
    outputs = embed(default_artifact, unseen_texts)
    for row, reference in enumerate(expected):
        length = int(outputs["attention_mask"][row].sum())
        assert length == reference.shape[0]  # same tokenisation, same truncation
        got = outputs["token_embeddings"][row, :length]
        assert cosines(got, reference.numpy()).min() >= 0.9999
        np.testing.assert_allclose(got, reference.numpy(), atol=1e-3)


def test_pooled_embedding_is_sentence_embedding_before_normalisation(
    default_artifact: Path, embed, unseen_texts
) -> None:
    out = embed(default_artifact, unseen_texts)
    sentence, pooled = out["sentence_embedding"], out["pooled_embedding"]
    np.testing.assert_allclose(np.linalg.norm(sentence, axis=1), 1.0, atol=1e-5)
    norms = np.linalg.norm(pooled, axis=1)
    assert np.all(np.abs(norms - 1.0) > 1e-2)  # MiniLM's mean-pooled vectors are not unit length
    np.testing.assert_allclose(pooled / norms[:, None], sentence, atol=1e-5)
    # and it is the masked mean of token_embeddings
    mask = out["attention_mask"][..., None].astype(np.float32)
    mean = (out["token_embeddings"] * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(pooled, mean, atol=1e-4)


def test_padding_does_not_change_results(default_artifact: Path, embed, unseen_texts) -> None:
    alone = np.stack([embed(default_artifact, [t])["sentence_embedding"][0] for t in unseen_texts[:4]])
    batched = embed(default_artifact, unseen_texts[:4])["sentence_embedding"]
    np.testing.assert_allclose(batched, alone, atol=1e-5)
