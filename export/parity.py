"""Parity gate: the artifact under ONNX Runtime against the PyTorch model.

The reference runs each text alone and unpadded through the same torch module
that was exported; the artifact runs padded, mixed-length batches, so a
masking or dynamic-shape bug in the graph shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ExportError
from .manifest import Agreement, ParityReport
from .tokenizer import encode_batch

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Minimum cosine similarity to the PyTorch reference, per precision, for
# sentence_embedding and pooled_embedding. Module-level so tests can tighten them.
THRESHOLDS: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}
# Same for each real token of token_embeddings. int8 is looser: single tokens
# carry the full quantisation noise that pooling averages out.
TOKEN_THRESHOLDS: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.95}

BATCH_SIZE = 8

_LONG_EN = (
    "Sentence embeddings map a piece of text to a single dense vector, so that texts with "
    "similar meaning end up close together and semantic search becomes a nearest-neighbour "
    "lookup. "
)
VALIDATION_TEXTS: tuple[str, ...] = (
    "",
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Password reset instructions were sent to your e-mail address.",
    "A man is playing a guitar on stage.",
    "Stocks fell sharply after the central bank raised interest rates by half a point.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Is it going to rain tomorrow in Lisbon?",
    "UPPER CASE AND lower case AND MiXeD CaSe",
    "numbers 3.14159, 2.71828 and 1,000,000 — plus dates like 2024-02-29",
    "code: def f(x): return x ** 2  # squares",
    "https://example.com/path?query=1&other=two#fragment",
    "Ünïcödé façade naïve café résumé Ångström",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ο γρήγορος καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "שלום עולם",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "今天天气很好，我们去公园散步吧。",
    "東京は日本の首都で、人口が最も多い都市です。",
    "서울은 대한민국의 수도입니다.",
    "Emoji only 🚀🔥🎉👍🏽👨‍👩‍👧‍👦",
    "I love this! 😍😍😍 Best day ever 🌞",
    "tabs\tand\nnewlines\r\nand   multiple   spaces",
    "repeated " * 40,
    _LONG_EN * 3,  # ~100 tokens
    _LONG_EN * 12,  # over 256 tokens: truncates for the default model
    "混合 mixed 言語 text with 🚀 and ünïcödé " * 30,  # long, multilingual, truncates
    "x" * 3000,  # one huge word: word-piece explosion, truncates
    ". , ; : ! ? ( ) [ ] { } < > / \\ | @ # $ % ^ & * - + = ~ `",
)


# Texts also validated behind each of the model's prompts (prompt + text, as sentence-transformers
# builds them), so a head that leaves the prompt out is checked with a prompt to leave out.
PROMPTED_TEXTS: tuple[str, ...] = VALIDATION_TEXTS[2:6] + (VALIDATION_TEXTS[0],)


@dataclass(frozen=True)
class Reference:
    """PyTorch outputs for the validation texts, per text, unpadded."""

    texts: tuple[str, ...]
    prompt_lengths: tuple[int, ...]  # leading tokens of each text that are its prompt's
    tokens: list[np.ndarray]  # [seq_i, hidden]
    sentence: np.ndarray  # [n, dim]
    pooled: np.ndarray  # [n, dim]


def validation_set(
    tokenizer: Tokenizer, prompts: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(texts, prompt lengths): :data:`VALIDATION_TEXTS`, then :data:`PROMPTED_TEXTS` behind each prompt."""
    from .tokenizer import prompt_token_length

    texts, lengths = list(VALIDATION_TEXTS), [0] * len(VALIDATION_TEXTS)
    for prompt in sorted(set((prompts or {}).values()) - {""}):
        length = prompt_token_length(tokenizer, prompt)
        texts.extend(prompt + text for text in PROMPTED_TEXTS)
        lengths.extend([length] * len(PROMPTED_TEXTS))
    return tuple(texts), tuple(lengths)


def build_reference(
    module: object,
    tokenizer: Tokenizer,
    texts: Sequence[str] = VALIDATION_TEXTS,
    prompt_lengths: Sequence[int] | None = None,
) -> Reference:
    """Run the torch ``module`` (transformers' model plus the head, eagerly) on each text."""
    from .graph import torch_reference

    lengths = tuple(prompt_lengths) if prompt_lengths is not None else (0,) * len(texts)
    ids = [enc.ids for enc in tokenizer.encode_batch(list(texts))]
    try:
        rows = torch_reference(module, ids, list(lengths))  # type: ignore[arg-type]
    except Exception as err:  # e.g. an index error from a config that lies about its sizes
        raise ExportError(f"the PyTorch model failed on the validation texts: {err}") from err
    return Reference(
        texts=tuple(texts),
        prompt_lengths=lengths,
        tokens=[r[0] for r in rows],
        sentence=np.stack([r[1] for r in rows]),
        pooled=np.stack([r[2] for r in rows]),
    )


def _agreement(a: np.ndarray, b: np.ndarray) -> Agreement:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    cosine = (a64 * b64).sum(axis=-1) / np.maximum(norms, 1e-30)
    return Agreement(min_cosine=float(cosine.min()), max_abs_diff=float(np.abs(a64 - b64).max()))


def run_onnx(
    model_path: str,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    provider: str,
    prompt_lengths: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, str]:
    """(tokens per text unpadded, sentence, pooled, provider actually used) from ORT."""
    import onnxruntime as ort

    providers = [provider, "CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [provider]
    session = ort.InferenceSession(model_path, providers=providers)
    used = session.get_providers()[0]
    tokens: list[np.ndarray] = []
    sentence, pooled = [], []
    for start in range(0, len(texts), BATCH_SIZE):
        rows = slice(start, start + BATCH_SIZE)
        row_prompts = list(prompt_lengths[rows]) if prompt_lengths is not None else None
        feed = encode_batch(tokenizer, list(texts[rows]), row_prompts)
        feed = {i.name: feed[i.name] for i in session.get_inputs()}
        tok, sent, pool = session.run(
            ["token_embeddings", "sentence_embedding", "pooled_embedding"], feed
        )
        lengths = feed["attention_mask"].sum(axis=1)
        tokens.extend(tok[row, :length] for row, length in enumerate(lengths))
        sentence.append(sent)
        pooled.append(pool)
    return tokens, np.concatenate(sentence), np.concatenate(pooled), used


def compare(
    model_path: str,
    tokenizer: Tokenizer,
    reference: Reference,
    precision: str,
    *,
    provider: str = "CPUExecutionProvider",
    method: str | None = None,
) -> ParityReport:
    """Run the artifact at ``model_path`` and grade it against ``reference``."""
    tokens, sentence, pooled, used = run_onnx(
        model_path, tokenizer, reference.texts, provider, reference.prompt_lengths
    )
    threshold, token_threshold = THRESHOLDS[precision], TOKEN_THRESHOLDS[precision]
    sent = _agreement(sentence, reference.sentence)
    pool = _agreement(pooled, reference.pooled)
    tok = _agreement(np.concatenate(tokens), np.concatenate(reference.tokens))
    passed = (
        min(sent.min_cosine, pool.min_cosine) >= threshold and tok.min_cosine >= token_threshold
    )
    return ParityReport(
        passed=passed,
        method=method or f"ONNX Runtime {used} vs PyTorch fp32 on CPU",
        provider=used,
        reference=(
            "transformers encoder (eager attention) + zeroembed's sentence-transformers head in "
            "PyTorch fp32, one unpadded text at a time"
        ),
        num_texts=len(reference.texts),
        thresholds={
            "sentence_embedding": threshold,
            "pooled_embedding": threshold,
            "token_embeddings": token_threshold,
        },
        sentence_embedding=sent,
        pooled_embedding=pool,
        token_embeddings=tok,
    )


def describe_failure(report: ParityReport, precision: str) -> str:
    """One line saying which output missed which threshold."""
    worst = [
        f"{name} min cosine {agreement.min_cosine:.6f} < {report.thresholds[name]}"
        for name, agreement in (
            ("sentence_embedding", report.sentence_embedding),
            ("pooled_embedding", report.pooled_embedding),
            ("token_embeddings", report.token_embeddings),
        )
        if agreement.min_cosine < report.thresholds[name]
    ]
    return f"{precision} artifact failed the parity check ({'; '.join(worst)}); nothing written"
