"""Fixtures of the bulk tests: small corpora in every input format, and reference vectors from the runtime."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")


def short_texts(n: int) -> list[str]:
    """``n`` varied texts of the benchmark corpus, the long ones left out so the model runs fast."""
    from zeroembed.benchmarks.corpus import make_corpus

    texts = [t for t in make_corpus(4 * n) if len(t.split()) <= 48]
    assert len(texts) >= n
    return texts[:n]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # several row groups
    return path


def read_vectors(out: Path) -> dict:
    """id -> (embedding, num_tokens) of every row of an output folder; fails on an id seen twice."""
    import pyarrow.parquet as pq

    table = pq.read_table(out / "shards")
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id appears twice in the output"
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return {i: (v, n) for i, v, n in zip(ids, vectors, table.column("num_tokens").to_pylist())}


def reference_vectors(artifact: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's vector run alone through the server's runtime (no padding), and its token count."""
    from zeroembed.server.artifact import open_artifact
    from zeroembed.server.core.tokenization import TextTokenizer
    from zeroembed.server.workers.runtime import EncoderRuntime

    art = open_artifact(artifact)
    runtime = EncoderRuntime(art.model_path, device="cpu", threads=1, inputs=art.manifest.inputs)
    tokenized = TextTokenizer(art.tokenizer_path, art.manifest.max_seq_length).encode(texts)
    vectors = np.stack([
        runtime.run(tokenized.ids[tokenized.offsets[i]:tokenized.offsets[i + 1]],
                    np.array([tokenized.lengths[i]], np.int32), ["sentence_embedding"])["sentence_embedding"][0]
        for i in range(len(texts))])
    return vectors, tokenized.lengths


def assert_matches(out: Path, ids: list, vectors: np.ndarray, tokens: np.ndarray) -> None:
    """The output holds exactly ``ids``, each with its reference vector (cos >= 0.9999, the same length)
    and token count."""
    got = read_vectors(out)
    assert sorted(got, key=str) == sorted(ids, key=str)
    for i, key in enumerate(ids):
        vector, num_tokens = got[key]
        norm, reference_norm = np.linalg.norm(vector), np.linalg.norm(vectors[i])
        cos = float(vector @ vectors[i] / (norm * reference_norm))
        assert cos >= 0.9999, (key, cos)
        assert abs(norm - reference_norm) <= 1e-3 * reference_norm, (key, norm, reference_norm)
        assert num_tokens == tokens[i]


@pytest.fixture(scope="session")
def bulk_texts() -> list[str]:
    return short_texts(48)


@pytest.fixture(scope="session")
def bulk_reference(default_artifact: Path, bulk_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return reference_vectors(default_artifact, bulk_texts)


# A model with prompts, for --prompt-name, --prompt and --dimensions: it mean-pools without the prompt's
# tokens (so a row's vector depends on its prompt length reaching the model), has a default prompt, and
# normalizes (so cut vectors must be re-normalized).
PROMPTS = {"query": "query: ", "passage": "passage: "}
PROMPT_MODEL = {"pooling": "mean", "include_prompt": False, "prompts": PROMPTS, "default_prompt_name": "passage",
                "normalize": True}
#: Option sets the engines are checked with against the server: as request options, as flags, and the
#: prompt each puts before the texts.
ENCODINGS = {
    "default-prompt": ({}, [], PROMPTS["passage"]),
    "query-16-dimensions": ({"prompt_name": "query", "dimensions": 16},
                            ["--prompt-name", "query", "--dimensions", "16"], PROMPTS["query"]),
    "literal-prompt": ({"prompt": "search: "}, ["--prompt", "search: "], "search: "),
}


@pytest.fixture(scope="session")
def prompt_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with :data:`PROMPT_MODEL`'s head, exported."""
    from tests.dependencies import require

    require("torch", "export")
    from tests.export.stmodels import make_st_model
    from zeroembed.export import export_model

    base = tmp_path_factory.mktemp("prompt-model")
    artifact = base / "artifact"
    export_model(make_st_model(base / "model", **PROMPT_MODEL), artifact)
    return artifact


@pytest.fixture(scope="session")
def prompt_served(prompt_artifact: Path, bulk_texts: list[str]) -> dict[str, np.ndarray]:
    """The server's vectors of ``bulk_texts`` for each of :data:`ENCODINGS`, from a real server."""
    from zeroembed.server.launch import ServerProcess

    with ServerProcess(prompt_artifact, "--workers", "1", "--threads-per-worker", "1") as server, \
            server.client() as client:
        return {name: np.asarray(client.encode(bulk_texts, **options)) for name, (options, *_) in ENCODINGS.items()}


def prompt_tokens(artifact: Path, texts: list[str], prompt: str) -> np.ndarray:
    """Tokens of each ``prompt + text`` as the server counts them."""
    from zeroembed.server.artifact import open_artifact
    from zeroembed.server.core.tokenization import TextTokenizer

    art = open_artifact(artifact)
    return TextTokenizer(art.tokenizer_path, art.manifest.max_seq_length).encode([prompt + t for t in texts]).lengths
