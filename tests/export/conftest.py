"""Helpers for the exporter tests: run an artifact the way any ORT user would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ..dependencies import require

# Texts the exporter never saw (neither parity validation nor int8 calibration).
UNSEEN_TEXTS = [
    "The cat sat quietly on the warm windowsill.",
    "A child is riding a red bicycle down the hill.",
    "What time does the museum open on Sundays?",
    "Interest rates are expected to remain unchanged this quarter.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "She forgot her umbrella and got soaked on the way home.",
    "Bitte schließen Sie die Tür.",
    "El perro corre por la playa al amanecer.",
    "我喜欢在周末读书和喝茶。",
    "Thanks a lot!! 🙏✨",
    "Tokenization splits words into sub-word units such as 'token', '##ization'.",
    "Long input " + "that keeps going and going " * 60,
]

Embed = Callable[..., dict[str, np.ndarray]]


@pytest.fixture(scope="session")
def embed() -> Embed:
    """``embed(artifact_dir, texts)`` -> ORT outputs by name, plus the attention mask."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    sessions: dict[Path, tuple[ort.InferenceSession, Tokenizer]] = {}

    def run(artifact: Path, texts: list[str]) -> dict[str, np.ndarray]:
        if artifact not in sessions:
            sessions[artifact] = (
                ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"]),
                Tokenizer.from_file(str(artifact / "tokenizer.json")),
            )
        session, tokenizer = sessions[artifact]
        encodings = tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True))
        outputs["attention_mask"] = mask
        outputs["input_ids"] = ids
        return outputs

    return run


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="session")
def cosines() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Row-wise cosine similarity in float64."""
    return _cosines


@pytest.fixture(scope="session")
def unseen_texts() -> list[str]:
    """Texts outside the exporter's validation and calibration sets."""
    return list(UNSEEN_TEXTS)


@pytest.fixture(scope="session")
def sentence_transformer():
    """The default model under sentence-transformers, on CPU: the reference users know."""
    st = require("sentence_transformers", "dev")
    from zeroembed.export import default_model_dir

    return st.SentenceTransformer(str(default_model_dir()), device="cpu")
