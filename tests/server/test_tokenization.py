"""The server's tokenizer: small requests in the calling thread, large ones on the library's pool, same ids."""

from __future__ import annotations

import numpy as np

from zeroembed.server import tokenization
from zeroembed.server.tokenization import TextTokenizer


def test_small_and_large_requests_tokenize_alike(default_artifact):
    tokenizer = TextTokenizer(default_artifact / "tokenizer.json", 16)
    texts = [f"text number {i} " + "word " * (i % 23) for i in range(tokenization._PARALLEL_FROM + 5)]
    large = tokenizer.encode(texts, pieces=True)
    small = [tokenizer.encode(texts[i:i + 3], pieces=True) for i in range(0, len(texts), 3)]
    assert np.array_equal(large.ids, np.concatenate([s.ids for s in small]))
    assert np.array_equal(large.lengths, np.concatenate([s.lengths for s in small]))
    assert large.truncated == [start + i for start, s in zip(range(0, len(texts), 3), small) for i in s.truncated]
    assert large.truncated  # some texts were long enough to be cut
    assert large.pieces[:3] == small[0].pieces
    assert int(large.lengths.max()) == 16  # truncated at the model's maximum either way


def test_pretokenized_words_are_not_split_again(default_artifact):
    tokenizer = TextTokenizer(default_artifact / "tokenizer.json", 64)
    one = tokenizer.encode([["hello", "world"]], pieces=True, pretokenized=True)
    many = tokenizer.encode([["hello", "world"]] * tokenization._PARALLEL_FROM, pieces=True, pretokenized=True)
    assert one.pieces[0] == many.pieces[0] == ["[CLS]", "hello", "world", "[SEP]"]
