"""The server's tokenizer: small requests in the calling thread, large ones on the library's pool, same ids."""

from __future__ import annotations

import numpy as np

from zeroembed.server.core import tokenization
from zeroembed.server.core.tokenization import TextTokenizer


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


def test_background_tokenizer_wakes_the_loop_and_hands_back_results_and_errors(default_artifact):
    import select

    from zeroembed.server.core.tokenization import BackgroundTokenizer

    background = BackgroundTokenizer(default_artifact / "tokenizer.json", 32)
    try:
        background.submit("a", ["first request", "two texts"], pieces=False, pretokenized=False)
        background.submit("b", [["not", "a", "list", "of", "strings", 3]], pieces=False, pretokenized=True)
        done = []
        while len(done) < 2:
            assert select.select([background.fileno()], [], [], 30)[0]  # the loop's poller would wake
            done += background.completed()
        assert len(background) == 0
        (key_a, tokenized, seconds, error_a), (key_b, nothing, _, error_b) = done
        assert (key_a, error_a, key_b, nothing) == ("a", None, "b", None)
        assert len(tokenized) == 2 and seconds >= 0
        assert isinstance(error_b, Exception)  # the tokenizer refused it: handed back, not raised in the thread
    finally:
        background.close()
        background.close()  # idempotent
