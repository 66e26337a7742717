"""The artifact's ``tokenizer.json``: the model's fast tokenizer, re-configured.

Shipped tokenizer.json files often carry padding and truncation baked in for
training (all-MiniLM-L6-v2 pads and truncates to a fixed 128). The artifact
contract is "truncate at the model's max sequence length, never pad": the
server pads each batch itself, to the batch's longest row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import ExportError
from .source import ModelSource

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def build_tokenizer(source: ModelSource) -> Tokenizer:
    """The model's tokenizer with truncation at ``source.max_seq_length`` and no padding."""
    from tokenizers import Tokenizer

    tokenizer_file = source.path / "tokenizer.json"
    try:
        if tokenizer_file.is_file():
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        else:
            # vocab.txt only: let transformers convert the slow tokenizer, keep its backend.
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                str(source.path), use_fast=True, local_files_only=True
            ).backend_tokenizer
    except Exception as err:  # tokenizers/transformers raise many types for bad files
        raise ExportError(f"cannot load the tokenizer of {source.path}: {err}") from err
    if tokenizer.get_vocab_size(with_added_tokens=True) > source.vocab_size:
        # Ids past the embedding table would crash or, worse, index garbage at runtime.
        raise ExportError(
            f"the tokenizer of {source.path} has {tokenizer.get_vocab_size(with_added_tokens=True)} "
            f"tokens but the model embeds only {source.vocab_size}"
        )
    if source.do_lower_case:
        _lowercase_first(tokenizer)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=source.max_seq_length)
    return tokenizer


def _lowercase_first(tokenizer: Tokenizer) -> None:
    """Prepend a Lowercase normalizer unless there is one, as sentence-transformers' do_lower_case does."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    current = tokenizer.normalizer
    if isinstance(current, Lowercase):
        return
    steps = list(current) if isinstance(current, NormalizerSequence) else [] if current is None else [current]
    if any(isinstance(step, Lowercase) for step in steps):
        return
    tokenizer.normalizer = NormalizerSequence([Lowercase(), *steps])


def encode_batch(
    tokenizer: Tokenizer, texts: list[str], prompt_lengths: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Right-padded int64 ``input_ids``/``attention_mask``, and ``prompt_length``, for ``texts``.

    This is what a runtime does with the artifact's tokenizer; parity checks use
    it so that the padded, batched path is the one validated. ``prompt_length``
    (zeros unless given) is only fed to graphs that take it.
    """
    encodings = tokenizer.encode_batch(texts)
    length = max(len(e.ids) for e in encodings)
    input_ids = np.zeros((len(texts), length), dtype=np.int64)
    attention_mask = np.zeros((len(texts), length), dtype=np.int64)
    for row, enc in enumerate(encodings):
        input_ids[row, : len(enc.ids)] = enc.ids
        attention_mask[row, : len(enc.ids)] = 1
    prompt_length = np.asarray(prompt_lengths or [0] * len(texts), dtype=np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "prompt_length": prompt_length}


def prompt_token_length(tokenizer: Tokenizer, prompt: str) -> int:
    """How many leading tokens of ``prompt + text`` belong to the prompt, as sentence-transformers counts.

    The prompt alone is tokenized with special tokens; a trailing special token
    ([SEP], </s>, EOS) is not the prompt's, a leading one ([CLS], <s>) is.
    """
    encoding = tokenizer.encode(prompt)
    length = len(encoding.ids)
    if length and encoding.special_tokens_mask[-1]:
        length -= 1
    return length
