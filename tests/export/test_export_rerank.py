"""Tiny random-weight cross-encoders exported as rerank artifacts and scored against CrossEncoder.predict.

Each artifact is run the way the server will run it: the artifact's tokenizer.json encodes (query,
document) pairs, rows are right-padded, the inputs ``manifest.inputs`` names are fed and the manifest's
activation is applied to the ``logits`` output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ..dependencies import require

require("torch", "export")
st = require("sentence_transformers", "dev")

from zeroembed.benchmarks.randommodel import make_random_cross_encoder  # noqa: E402
from zeroembed.export import ExportError, QualityGateError, export_model  # noqa: E402
from zeroembed.export.rerank_manifest import RerankManifest  # noqa: E402

MAX_POSITIONS = 64
TINY = {"layers": 2, "hidden": 32, "heads": 2, "max_positions": MAX_POSITIONS}

# Pairs outside the exporter's validation and calibration sets; the last documents truncate.
QUERY = "which animals live in the arctic?"
DOCUMENTS = [
    "Polar bears, arctic foxes and walruses live in the Arctic.",
    "Penguins live in the southern hemisphere.",
    "The stock market closed higher on Friday.",
    "Eisbären leben in der Arktis.",
    "北极熊生活在北极。",
    "",
    "Arctic wildlife adapts to the cold with thick fur and fat. " * 20,
]
PAIRS = [(QUERY, doc) for doc in DOCUMENTS] + [("short", "a reply"), ("long query " * 40, "doc " * 40)]


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        logits = 1 / (1 + np.exp(-logits))
    elif activation == "softmax":
        logits = np.exp(logits - logits.max(1, keepdims=True))
        logits = logits / logits.sum(1, keepdims=True)
    else:
        assert activation == "identity"
    return logits[:, 0] if logits.shape[1] == 1 else logits


def _score(artifact: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Scores as a server following docs/artifact.md computes them."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    manifest = RerankManifest.read(artifact)
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    encodings = tokenizer.encode_batch(pairs)
    width = max(len(e.ids) for e in encodings)
    feed = {name: np.zeros((len(pairs), width), dtype=np.int64) for name in manifest.inputs}
    for row, enc in enumerate(encodings):
        feed["input_ids"][row, : len(enc.ids)] = enc.ids
        feed["attention_mask"][row, : len(enc.ids)] = 1
        if "token_type_ids" in feed:
            feed["token_type_ids"][row, : len(enc.ids)] = enc.type_ids
    (logits,) = session.run(["logits"], feed)
    return _activate(logits.astype(np.float64), manifest.activation)


def _predict(model_dir: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    return st.CrossEncoder(str(model_dir), device="cpu").predict(pairs, show_progress_bar=False)


@pytest.fixture(scope="module")
def bert_crossencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-label BERT reranker saved by sentence-transformers' CrossEncoder.save."""
    root = tmp_path_factory.mktemp("rerankers")
    plain = make_random_cross_encoder(root / "plain", model_type="bert", **TINY)
    st.CrossEncoder(str(plain), device="cpu").save(str(root / "bert-ce"))
    return root / "bert-ce"


@pytest.fixture(scope="module")
def bert_artifact(bert_crossencoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "bert-rerank"
    export_model(bert_crossencoder, out)
    return out


def test_bert_manifest(bert_artifact: Path) -> None:
    manifest = RerankManifest.read(bert_artifact)
    raw = json.loads((bert_artifact / "manifest.json").read_text(encoding="utf-8"))
    assert raw["task"] == "rerank" and "pooling" not in raw
    assert manifest.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.outputs == ["logits"]
    assert (manifest.num_labels, manifest.activation) == (1, "sigmoid")
    assert manifest.activation_fn == "torch.nn.modules.activation.Sigmoid"
    assert (manifest.max_seq_length, manifest.truncation) == (MAX_POSITIONS, "longest_first")
    assert manifest.fused_operators["Attention"] == 2
    assert manifest.parity.passed and manifest.parity.max_abs_score_diff <= 1e-4
    assert manifest.parity.thresholds == {"max_abs_score_diff": 1e-4}
    assert manifest.classifier == "BertForSequenceClassification"


def test_bert_scores_match_crossencoder(bert_crossencoder: Path, bert_artifact: Path) -> None:
    np.testing.assert_allclose(_score(bert_artifact, PAIRS), _predict(bert_crossencoder, PAIRS), atol=1e-4, rtol=0)


def test_bert_tokenizer_encodes_pairs_like_crossencoder(bert_crossencoder: Path, bert_artifact: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bert_artifact / "tokenizer.json"))
    raw = json.loads((bert_artifact / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["padding"] is None
    assert raw["truncation"] == {"direction": "Right", "max_length": MAX_POSITIONS, "strategy": "LongestFirst",
                                 "stride": 0}
    enc = tokenizer.encode("my query", "the document")
    assert enc.tokens == ["[CLS]", "my", "query", "[SEP]", "the", "document", "[SEP]"]
    assert enc.type_ids == [0, 0, 0, 0, 1, 1, 1]
    # A long document is cut, the query kept whole.
    long = tokenizer.encode("my query", "word " * 200)
    assert len(long.ids) == MAX_POSITIONS and long.tokens[:4] == ["[CLS]", "my", "query", "[SEP]"]
    crossencoder = st.CrossEncoder(str(bert_crossencoder), device="cpu")
    for query, doc in PAIRS:
        features = crossencoder.preprocess([(query, doc)])
        enc = tokenizer.encode(query, doc)
        assert enc.ids == features["input_ids"][0].tolist()
        assert enc.type_ids == features["token_type_ids"][0].tolist()


def test_tokenizer_is_crossencoders_own(tmp_path: Path) -> None:
    """sentence_bert_config.json's do_lower_case lowercases in CrossEncoder, not in tokenizer.json: the artifact too."""
    plain = make_random_cross_encoder(tmp_path / "plain", model_type="bert", **TINY)
    raw = json.loads((plain / "tokenizer.json").read_text(encoding="utf-8"))
    raw["normalizer"]["lowercase"] = False
    (plain / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    config = json.loads((plain / "tokenizer_config.json").read_text(encoding="utf-8"))
    (plain / "tokenizer_config.json").write_text(json.dumps(config | {"do_lower_case": False}), encoding="utf-8")
    model_dir = tmp_path / "ce"
    st.CrossEncoder(str(plain), device="cpu").save(str(model_dir))
    bert_config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    (model_dir / "sentence_bert_config.json").write_text(json.dumps(bert_config | {"do_lower_case": True}),
                                                         encoding="utf-8")
    export_model(model_dir, tmp_path / "out")
    from tokenizers import Tokenizer

    pair = ("WHICH Animals", "Polar BEARS live in the Arctic")
    enc = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json")).encode(*pair)
    assert enc.tokens[:3] == ["[CLS]", "which", "animals"]
    assert enc.ids == st.CrossEncoder(str(model_dir), device="cpu").preprocess([pair])["input_ids"][0].tolist()
    np.testing.assert_allclose(_score(tmp_path / "out", PAIRS), _predict(model_dir, PAIRS), atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")  # CrossEncoder reloads Softmax()
@pytest.mark.parametrize(("model_type", "num_labels", "activation"), [
    ("xlm-roberta", 3, None),  # plain Hugging Face folder: several labels, no activation (identity)
    ("roberta", 2, "softmax"),  # CrossEncoder folder saved with a softmax activation
])
def test_roberta_family_scores_match_crossencoder(tmp_path: Path, model_type: str, num_labels: int,
                                                  activation: str | None) -> None:
    import torch

    model_dir = make_random_cross_encoder(tmp_path / model_type, model_type=model_type, num_labels=num_labels,
                                          **TINY)
    if activation == "softmax":
        st.CrossEncoder(str(model_dir), device="cpu", activation_fn=torch.nn.Softmax(dim=1)).save(str(tmp_path / "ce"))
        model_dir = tmp_path / "ce"
    manifest = export_model(model_dir, tmp_path / "out")
    assert isinstance(manifest, RerankManifest)
    assert (manifest.num_labels, manifest.activation) == (num_labels, activation or "identity")
    assert manifest.inputs == ["input_ids", "attention_mask"]  # RoBERTa embeds no token types
    assert manifest.architecture.model_type == model_type and manifest.fused_operators["Attention"] == 2
    assert manifest.max_seq_length == MAX_POSITIONS  # positions less RoBERTa's padding offset
    scores = _score(tmp_path / "out", PAIRS)
    assert scores.shape == (len(PAIRS), num_labels)
    np.testing.assert_allclose(scores, _predict(model_dir, PAIRS), atol=1e-4, rtol=0)
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json")).encode("my query", "the document")
    # RoBERTa's pair template <s> A </s></s> B </s>, spelt with the test vocabulary's [CLS]/[SEP]
    assert enc.tokens == ["[CLS]", "my", "query", "[SEP]", "[SEP]", "the", "document", "[SEP]"]


def test_int8_refused_when_rankings_change(tmp_path: Path) -> None:
    # At BERT's usual init (std 0.02) a random classifier's scores lie within ~1e-4 of each other,
    # so int8 noise reorders documents even though every score stays within 0.02.
    model_dir = make_random_cross_encoder(tmp_path / "flat", model_type="bert", **TINY)
    with pytest.raises(QualityGateError, match="document order changed") as failure:
        export_model(model_dir, tmp_path / "out", precision="int8")
    assert "\n" not in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat"]


def test_int8_accepted_when_rankings_hold(tmp_path: Path) -> None:
    # Wider random weights spread the scores far enough apart for int8 to keep this model's rankings.
    model_dir = make_random_cross_encoder(tmp_path / "spread", model_type="bert", init_range=0.4, **TINY)
    manifest = export_model(model_dir, tmp_path / "out", precision="int8")
    assert manifest.precision == "int8" and manifest.quantization is not None
    assert manifest.parity.rankings_changed == 0 and manifest.parity.max_abs_score_diff <= 0.02
    assert manifest.parity.thresholds == {"max_abs_score_diff": 0.02, "rankings_changed": 0}
    assert manifest.quantization.quantized_nodes > 0
    np.testing.assert_allclose(_score(tmp_path / "out", PAIRS), _predict(model_dir, PAIRS), atol=0.05, rtol=0)


def test_fp16(tmp_path: Path) -> None:
    # Wide weights spread the scores so that fp16 on a CUDA device keeps the rankings too.
    model_dir = make_random_cross_encoder(tmp_path / "m", model_type="bert", init_range=0.4, **TINY)
    manifest = export_model(model_dir, tmp_path / "out", precision="fp16")
    assert manifest.precision == "fp16" and manifest.parity.passed
    assert manifest.parity.thresholds == {"max_abs_score_diff": 0.01, "rankings_changed": 0}
    assert "CrossEncoder" in manifest.parity.method and "PyTorch" not in manifest.parity.method
    np.testing.assert_allclose(_score(tmp_path / "out", PAIRS), _predict(model_dir, PAIRS), atol=0.01, rtol=0)


def test_num_labels_missing_from_a_one_label_config(tmp_path: Path, capsys) -> None:
    """Without id2label, transformers assumes two labels; one-label weights then fail in one line."""
    from zeroembed.cli import main

    model_dir = make_random_cross_encoder(tmp_path / "m", model_type="bert", **TINY)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    del config["id2label"], config["label2id"]
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    capsys.readouterr()  # drop transformers' progress bars from building the model
    assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zeroembed export: error: weights in "), err
    assert "classifier.bias has shape (1,), the config asks for (2,)" in err[0]
    assert not (tmp_path / "out").exists()


def test_classifier_weights_missing(tmp_path: Path) -> None:
    """A config that promises a classifier over weights without one (an embedder's) is refused."""
    import torch
    from transformers import BertConfig, BertModel

    model_dir = make_random_cross_encoder(tmp_path / "m", model_type="bert", **TINY)
    config = BertConfig.from_pretrained(str(model_dir))
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "encoder")
    (model_dir / "model.safetensors").write_bytes((tmp_path / "encoder" / "model.safetensors").read_bytes())
    with pytest.raises(ExportError, match="missing tensors"):
        export_model(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
