"""The corpus is reproducible and spans short queries to passages past the model's limit."""

from __future__ import annotations

from pathlib import Path

from zeroembed.benchmarks.corpus import LENGTH_CLASSES, describe, length_class, make_corpus, token_lengths


def test_same_seed_same_texts_and_prefix_stable():
    texts = make_corpus(300, seed=7)
    assert texts == make_corpus(300, seed=7)
    assert make_corpus(50, seed=7) == texts[:50]
    assert make_corpus(300, seed=8) != texts
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_length_distribution_spans_every_class():
    texts = make_corpus(1000)
    counts = describe(texts)["classes"]
    assert set(counts) == {c.name for c in LENGTH_CLASSES}
    for cls in LENGTH_CLASSES:  # each class near its documented share
        assert abs(counts[cls.name] / len(texts) - cls.weight) < 0.05, (cls.name, counts)
    assert all(length_class(t) != "other" for t in texts)


def test_token_lengths_go_from_short_to_past_the_limit(default_artifact: Path):
    texts = make_corpus(400)
    lengths = token_lengths(texts, default_artifact)
    assert lengths is not None and len(lengths) == len(texts)
    assert min(lengths) <= 8
    over = [t for t in texts if length_class(t) == "overlong"]
    assert over and all(len(t.split()) >= 260 for t in over)  # ≥ 260 word pieces: past 256 before truncation
    assert max(lengths) == 256  # truncated at the model's limit
