"""Parity gate for rerankers: the artifact against ``sentence_transformers.CrossEncoder``.

The reference is what users of the model run: ``CrossEncoder.predict`` on the
same folder, loaded on its own. Before any score is compared, the artifact's
tokenizer must encode every validation pair exactly as CrossEncoder does
(ids, token types, truncation), since a server scores what that tokenizer
produces. The artifact then runs padded, mixed-length batches, so masking and
dynamic shapes are exercised.

Gates per precision: the largest absolute score difference (after the
activation), and for fp16/int8 also the document order of every validation
query, which must not change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExportError, QualityGateError
from .rerank_manifest import RerankParityReport
from .rerank_source import RerankSource

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Max |artifact score - CrossEncoder.predict score|, per precision. Module-level so tests can change them.
THRESHOLDS: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "int8": 2e-2}
# Precisions whose artifact must also keep every validation query's document order.
RANKING_GATED = frozenset({"fp16", "int8"})
# Reference scores closer than this are ties: their order is not a ranking the model expresses.
TIE = 1e-6
BATCH_SIZE = 8

_LONG_EN = (
    "Cross-encoders read the query and the document together, so every attention layer can "
    "compare their words directly; that is why they rank better than comparing two embeddings. "
)
VALIDATION_QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How do I reset my password?", (
        "Click 'Forgot password' on the sign-in page and follow the link we e-mail you.",
        "Our offices are closed on public holidays.",
        "Passwords must be at least twelve characters long.",
        "",
        _LONG_EN * 12,  # truncates: only the document is cut
    )),
    ("What is the capital of France?", (
        "Paris is the capital and most populous city of France.",
        "France is a country in Western Europe.",
        "The Eiffel Tower was completed in 1889.",
        "Berlin is the capital of Germany.",
        "Paris est la capitale de la France.",
    )),
    ("a", ("a", "b", "A man is playing a guitar on stage.", "🚀🔥🎉", "x" * 3000)),
    ("今天天气怎么样？", (
        "今天天气很好，我们去公园散步吧。",
        "東京は日本の首都です。",
        "The weather is sunny today.",
        "서울은 대한민국의 수도입니다.",
        "Погода сегодня хорошая.",
    )),
    ("python list comprehension syntax", (
        "code: squares = [x ** 2 for x in range(10)]  # a list comprehension",
        "https://docs.python.org/3/tutorial/datastructures.html#list-comprehensions",
        "Pythons are large non-venomous snakes.",
        "tabs\tand\nnewlines\r\nand   multiple   spaces",
        "UPPER CASE AND lower case AND MiXeD CaSe",
    )),
    # A query longer than half the limit: longest-first truncation cuts the query too.
    (_LONG_EN * 10, (
        "Rerankers compare query and document words in every layer.",
        _LONG_EN * 10,
        "Ünïcödé façade naïve café résumé Ångström",
        "numbers 3.14159, 2.71828 and 1,000,000 — plus dates like 2024-02-29",
    )),
    ("", ("An empty query still gets a score.", "", ". , ; : ! ? ( ) [ ] { } < > / \\ | @ # $ %")),
)

# Pairs to measure int8 smoothing ranges on, disjoint from the validation pairs.
CALIBRATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("Where can I find the nearest train station?", "The central station is two blocks north of the square."),
    ("Where can I find the nearest train station?", "Trains run every ten minutes during rush hour."),
    ("best way to cook rice", "Rinse the rice, then simmer it covered with twice its volume of water."),
    ("best way to cook rice", "The committee will publish its final report next spring."),
    ("why is the sky blue", "Air molecules scatter blue light more strongly than red light."),
    ("why is the sky blue", "Il pleut depuis ce matin sur toute la région."),
    ("Bibliothek Öffnungszeiten", "Die Bibliothek ist am Sonntag geschlossen."),
    ("首都", "北京是中国的首都。"),
    ("battery life", "My laptop battery drains quickly when I watch videos. " * 8),
    ("ok", "ok"),
)


def validation_pairs() -> list[tuple[str, str]]:
    """Every (query, document) of :data:`VALIDATION_QUERIES`, query by query."""
    return [(query, doc) for query, docs in VALIDATION_QUERIES for doc in docs]


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], token_types: bool) -> dict[str, np.ndarray]:
    """Right-padded int64 model inputs for ``pairs``: what a runtime does with the artifact."""
    encodings = tokenizer.encode_batch(list(pairs))
    width = max(len(e.ids) for e in encodings)
    feed = {name: np.zeros((len(pairs), width), dtype=np.int64) for name in ("input_ids", "attention_mask")}
    if token_types:
        feed["token_type_ids"] = np.zeros((len(pairs), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        feed["input_ids"][row, : len(enc.ids)] = enc.ids
        feed["attention_mask"][row, : len(enc.ids)] = 1
        if token_types:
            feed["token_type_ids"][row, : len(enc.ids)] = enc.type_ids
    return feed


def calibration_feeds(tokenizer: Tokenizer, token_types: bool) -> list[dict[str, np.ndarray]]:
    """:data:`CALIBRATION_PAIRS` as padded batches, for int8 smoothing."""
    pairs = list(CALIBRATION_PAIRS)
    return [encode_pairs(tokenizer, pairs[i : i + BATCH_SIZE], token_types) for i in range(0, len(pairs), BATCH_SIZE)]


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``activation`` applied to ``[n, num_labels]`` logits, then one label squeezed to ``[n]``.

    The same shapes and order of operations as ``CrossEncoder.predict``.
    """
    x = logits.astype(np.float64)
    if activation == "sigmoid":
        x = 1.0 / (1.0 + np.exp(-x))
    elif activation == "tanh":
        x = np.tanh(x)
    elif activation == "softmax":
        x = np.exp(x - x.max(axis=1, keepdims=True))
        x = x / x.sum(axis=1, keepdims=True)
    return x[:, 0] if x.shape[1] == 1 else x


@dataclass(frozen=True)
class Reference:
    """CrossEncoder's outputs for :func:`validation_pairs`."""

    pairs: list[tuple[str, str]]
    scores: np.ndarray  # predict() as users call it: [n] for one label, else [n, num_labels]
    logits: np.ndarray  # predict() with an identity activation: [n, num_labels]
    tokenization: str


def load_crossencoder(source: RerankSource) -> Any:
    """``sentence_transformers.CrossEncoder`` on ``source.path``, on CPU, fp32, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as err:
        raise ExportError(
            "exporting a reranker needs sentence-transformers, its parity reference "
            "(pip install 'zeroembed[export]')"
        ) from err
    from .torch_model import quiet_transformers

    # Only a cap or an override changes CrossEncoder's own truncation length.
    override = source.max_seq_length
    kwargs = {} if override == source.crossencoder_max_length else {"max_length": override}
    try:
        with quiet_transformers():
            model = CrossEncoder(str(source.path), device="cpu", local_files_only=True, **kwargs)
    except Exception as err:
        raise ExportError(f"sentence-transformers cannot load {source.path} as a CrossEncoder: {err}") from err
    activation = f"{type(model.activation_fn).__module__}.{type(model.activation_fn).__name__}"
    if activation != source.activation_fn:
        raise ExportError(f"CrossEncoder applies {activation}, the exporter read {source.activation_fn}")
    if model.max_seq_length != override:
        raise ExportError(f"CrossEncoder truncates at {model.max_seq_length} tokens, the exporter at {override}")
    return model.eval()


def crossencoder_tokenizer(crossencoder: Any, source: RerankSource) -> Tokenizer:
    """CrossEncoder's own fast tokenizer, truncating at ``max_seq_length``, never padding.

    Taken from the loaded CrossEncoder rather than re-read from the folder, so that whatever
    sentence-transformers and transformers add when they load it (a lowercasing normalizer from
    ``do_lower_case``, a post-processor rebuilt from tokenizer_config.json) is in the artifact too.
    """
    from tokenizers import Tokenizer

    backend = getattr(getattr(crossencoder, "tokenizer", None), "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"CrossEncoder loads no fast tokenizer for {source.path}; the artifact needs one")
    tokenizer = Tokenizer.from_str(backend.to_str())
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > source.vocab_size:
        raise ExportError(
            f"the tokenizer of {source.path} has {size} tokens but the model embeds only {source.vocab_size}"
        )
    tokenizer.no_padding()  # the runtime pads each batch to its longest row
    tokenizer.enable_truncation(max_length=source.max_seq_length)  # longest_first, right
    return tokenizer


def check_tokenization(crossencoder: Any, tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]],
                       token_types: bool) -> str:
    """Raise unless ``tokenizer`` encodes each pair as CrossEncoder does; returns how it checked."""
    for query, doc in pairs:
        features = crossencoder.preprocess([(query, doc)])
        expected_ids = features["input_ids"][0].tolist()
        enc = tokenizer.encode(query, doc)
        if enc.ids != expected_ids:
            raise QualityGateError(
                f"the artifact's tokenizer encodes the pair ({query[:30]!r}, {doc[:30]!r}) as "
                f"{len(enc.ids)} ids that differ from CrossEncoder's {len(expected_ids)}; "
                "its post-processor or truncation does not match"
            )
        if token_types:
            expected = features.get("token_type_ids")
            expected_types = expected[0].tolist() if expected is not None else [0] * len(expected_ids)
            if enc.type_ids != expected_types:
                raise QualityGateError(
                    f"the artifact's tokenizer gives the pair ({query[:30]!r}, {doc[:30]!r}) token "
                    "types that differ from those CrossEncoder feeds the model"
                )
    what = "ids and token types" if token_types else "ids"
    return f"{what} equal to CrossEncoder.preprocess on all {len(pairs)} validation pairs, one pair at a time"


def build_reference(crossencoder: Any, tokenizer: Tokenizer, source: RerankSource) -> Reference:
    """Check the tokenizer, then score :func:`validation_pairs` with ``CrossEncoder.predict``."""
    import torch

    pairs = validation_pairs()
    tokenization = check_tokenization(crossencoder, tokenizer, pairs, source.token_types)
    try:
        scores = crossencoder.predict(pairs, batch_size=BATCH_SIZE, show_progress_bar=False)
        logits = crossencoder.predict(
            pairs, batch_size=BATCH_SIZE, show_progress_bar=False, activation_fn=torch.nn.Identity()
        )
    except Exception as err:
        raise ExportError(f"CrossEncoder.predict failed on the validation pairs: {err}") from err
    logits = np.asarray(logits, dtype=np.float64).reshape(len(pairs), source.num_labels)
    return Reference(pairs=pairs, scores=np.asarray(scores, dtype=np.float64), logits=logits,
                     tokenization=tokenization)


def run_onnx(model_path: str, tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], token_types: bool,
             provider: str) -> tuple[np.ndarray, str]:
    """(logits [n, num_labels], provider actually used) from ONNX Runtime, in padded batches."""
    import onnxruntime as ort

    providers = [provider, "CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [provider]
    session = ort.InferenceSession(model_path, providers=providers)
    rows = []
    for start in range(0, len(pairs), BATCH_SIZE):
        feed = encode_pairs(tokenizer, pairs[start : start + BATCH_SIZE], token_types)
        rows.append(session.run(["logits"], {i.name: feed[i.name] for i in session.get_inputs()})[0])
    return np.concatenate(rows).astype(np.float64), session.get_providers()[0]


def rankings_changed(reference: np.ndarray, scores: np.ndarray) -> int:
    """Validation queries where some document pair the reference orders is not ordered the same."""
    changed, start = 0, 0
    for _, docs in VALIDATION_QUERIES:
        ref = reference[start : start + len(docs)].reshape(len(docs), -1)
        got = scores[start : start + len(docs)].reshape(len(docs), -1)
        start += len(docs)
        ref_gap = ref[:, None, :] - ref[None, :, :]  # [i, j, label]: reference says i above j
        got_gap = got[:, None, :] - got[None, :, :]
        changed += bool(((ref_gap > TIE) & (got_gap <= 0)).any())
    return changed


def compare(model_path: str, tokenizer: Tokenizer, reference: Reference, source: RerankSource, precision: str,
            *, provider: str = "CPUExecutionProvider", method: str | None = None) -> RerankParityReport:
    """Run the artifact at ``model_path`` and grade it against ``reference``."""
    logits, used = run_onnx(model_path, tokenizer, reference.pairs, source.token_types, provider)
    scores = activate(logits, source.activation)
    score_diff = float(np.abs(scores - reference.scores).max())
    changed = rankings_changed(reference.scores, scores)
    thresholds = {"max_abs_score_diff": THRESHOLDS[precision]}
    if precision in RANKING_GATED:
        thresholds["rankings_changed"] = 0
    passed = score_diff <= thresholds["max_abs_score_diff"] and changed <= thresholds.get("rankings_changed", changed)
    return RerankParityReport(
        passed=passed,
        method=method or f"ONNX Runtime {used} vs sentence-transformers CrossEncoder fp32 on CPU",
        provider=used,
        reference="sentence_transformers.CrossEncoder.predict (fp32, CPU, batches of 8)",
        num_queries=len(VALIDATION_QUERIES),
        num_pairs=len(reference.pairs),
        tokenization=reference.tokenization,
        max_abs_score_diff=score_diff,
        max_abs_logit_diff=float(np.abs(logits - reference.logits).max()),
        rankings_changed=changed,
        thresholds=thresholds,
    )


def describe_failure(report: RerankParityReport, precision: str) -> str:
    """One line saying which gate the artifact missed."""
    missed = []
    if report.max_abs_score_diff > report.thresholds["max_abs_score_diff"]:
        missed.append(
            f"max score difference {report.max_abs_score_diff:.6f} > {report.thresholds['max_abs_score_diff']}"
        )
    if report.rankings_changed > report.thresholds.get("rankings_changed", report.rankings_changed):
        missed.append(f"document order changed for {report.rankings_changed} of {report.num_queries} queries")
    return f"{precision} reranker failed the parity check against CrossEncoder ({'; '.join(missed)}); nothing written"
