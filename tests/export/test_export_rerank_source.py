"""Recognising and reading cross-encoder directories (JSON only, no torch), and bad input at the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroembed.cli import main
from zeroembed.export import ExportError
from zeroembed.export.manifest import Manifest
from zeroembed.export.rerank_source import is_reranker, resolve_reranker

SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


def _classifier_dir(path: Path, files: dict[str, object] | None = None, **config: object) -> Path:
    """A directory that looks like a sequence classifier (weights are empty: nothing loads them here)."""
    path.mkdir()
    base = {
        "model_type": "bert", "architectures": ["BertForSequenceClassification"], "num_hidden_layers": 2,
        "num_attention_heads": 2, "hidden_size": 8, "vocab_size": 10, "max_position_embeddings": 512,
        "id2label": {"0": "LABEL_0"},
    }
    (path / "config.json").write_text(json.dumps({k: v for k, v in (base | config).items() if v is not None}),
                                      encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"")
    (path / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    for name, content in (files or {}).items():
        (path / name).write_text(json.dumps(content), encoding="utf-8")
    return path


def test_recognised_by_architecture_or_crossencoder_config(tmp_path: Path) -> None:
    assert is_reranker(_classifier_dir(tmp_path / "hf"))
    assert is_reranker(_classifier_dir(tmp_path / "st", {"config_sentence_transformers.json": {
        "model_type": "CrossEncoder"}}, architectures=["BertModel"]))
    assert not is_reranker(_classifier_dir(tmp_path / "embedder", architectures=["BertModel"]))
    assert not is_reranker(None) and not is_reranker(tmp_path / "missing")


def test_one_label_defaults(tmp_path: Path) -> None:
    source = resolve_reranker(_classifier_dir(tmp_path / "m"))
    assert (source.num_labels, source.labels, source.activation, source.activation_fn) == (
        1, ["LABEL_0"], "sigmoid", SIGMOID)
    assert source.token_types and source.architecture == "BertForSequenceClassification"
    assert source.max_seq_length == 512  # no tokenizer limit: the position embeddings


def test_several_labels_default_to_identity(tmp_path: Path) -> None:
    source = resolve_reranker(_classifier_dir(tmp_path / "m", id2label={"0": "no", "2": "maybe", "1": "yes"}))
    assert (source.num_labels, source.labels, source.activation) == (3, ["no", "yes", "maybe"], "identity")
    # transformers writes no id2label for its default of two labels
    source = resolve_reranker(_classifier_dir(tmp_path / "two", id2label=None))
    assert (source.num_labels, source.labels, source.activation) == (2, ["LABEL_0", "LABEL_1"], "identity")


@pytest.mark.parametrize(
    ("files", "config", "expected"),
    [
        # sentence-transformers >= 5 saves it beside the model...
        ({"config_sentence_transformers.json": {"activation_fn": IDENTITY}}, {}, "identity"),
        # ...and it wins over config.json's (sentence-transformers 4) ...
        ({"config_sentence_transformers.json": {"activation_fn": "torch.nn.modules.activation.Tanh"}},
         {"sentence_transformers": {"activation_fn": IDENTITY}}, "tanh"),
        ({}, {"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Softmax"}}, "softmax"),
        ({}, {"sbert_ce_default_activation_function": IDENTITY}, "identity"),  # before version 4
        # a path outside torch is custom code CrossEncoder ignores without trust_remote_code
        ({"config_sentence_transformers.json": {"activation_fn": "mypackage.Scale"}}, {}, "sigmoid"),
    ],
)
def test_activation_read_as_crossencoder_does(tmp_path: Path, files: dict, config: dict, expected: str) -> None:
    assert resolve_reranker(_classifier_dir(tmp_path / "m", files, **config)).activation == expected


def test_truncation_length(tmp_path: Path) -> None:
    capped = _classifier_dir(tmp_path / "capped", {"tokenizer_config.json": {"model_max_length": 10**30}},
                             max_position_embeddings=128)
    assert resolve_reranker(capped).max_seq_length == 128
    tok = _classifier_dir(tmp_path / "tok", {"tokenizer_config.json": {"model_max_length": 256}})
    assert resolve_reranker(tok).max_seq_length == 256
    st = _classifier_dir(tmp_path / "st", {"tokenizer_config.json": {"model_max_length": 256},
                                           "sentence_bert_config.json": {"max_seq_length": 100}})
    assert resolve_reranker(st).max_seq_length == 100
    assert resolve_reranker(st, max_seq_length=300).max_seq_length == 300
    # RoBERTa: CrossEncoder would allow all 514 positions; two are unusable (padding offset).
    roberta = _classifier_dir(tmp_path / "roberta", model_type="roberta", architectures=[
        "RobertaForSequenceClassification"], max_position_embeddings=514, pad_token_id=1)
    source = resolve_reranker(roberta)
    assert (source.max_seq_length, source.crossencoder_max_length, source.token_types) == (512, 514, False)
    with pytest.raises(ExportError, match="between 1 and the model's 512"):
        resolve_reranker(roberta, max_seq_length=513)


def test_old_embedder_manifests_read_as_embed() -> None:
    raw = {"source": "x", "architecture": {"model_type": "bert", "num_layers": 1, "num_heads": 1, "hidden_size": 8,
                                           "vocab_size": 10},
           "hidden_size": 8, "max_seq_length": 8, "pooling": "mean", "normalize": True, "precision": "fp32",
           "inputs": [], "outputs": [], "opset": 17, "fused_operators": {}, "model_sha256": "0",
           "tool_versions": {"torch": "", "transformers": "", "onnx": "", "onnxruntime": "", "zeroembed": ""},
           "parity": {"passed": True, "method": "", "provider": "", "reference": "", "num_texts": 0,
                      "thresholds": {}, **{k: {"min_cosine": 1, "max_abs_diff": 0} for k in (
                          "sentence_embedding", "pooled_embedding", "token_embeddings")}}}
    assert Manifest.model_validate(raw).task == "embed"


def _fails(model: Path, capsys: pytest.CaptureFixture[str], fragment: str, *extra: str) -> None:
    out = model.parent / "out"
    code = main(["export", "--model", str(model), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("zeroembed export: error: ") and fragment in err[0], err[0]
    assert not out.exists()


def test_bad_rerankers_fail_in_one_line(tmp_path: Path, capsys) -> None:
    crossencoder = {"config_sentence_transformers.json": {"model_type": "CrossEncoder"}}
    cases = [
        # a CrossEncoder whose model is not a classifier (e.g. an LLM scored through yes/no logits)
        (_classifier_dir(tmp_path / "llm", crossencoder, architectures=["Qwen3ForCausalLM"]),
         "names no *ForSequenceClassification architecture"),
        (_classifier_dir(tmp_path / "relu", {"config_sentence_transformers.json": {
            "activation_fn": "torch.nn.modules.activation.ReLU"}}), "unsupported CrossEncoder activation_fn"),
        (_classifier_dir(tmp_path / "dense", {"modules.json": [
            {"path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}]}),
         "exactly one Transformer module"),
        (_classifier_dir(tmp_path / "prompt", {"config_sentence_transformers.json": {
            "model_type": "CrossEncoder", "default_prompt_name": "query"}}), "prompts are not supported"),
        (_classifier_dir(tmp_path / "distil", model_type="distilbert",
                         architectures=["DistilBertForSequenceClassification"]),
         "unsupported reranker architecture 'distilbert'"),
        (_classifier_dir(tmp_path / "heads", num_attention_heads=3), "hidden size 8 is not a multiple of 3 heads"),
        (_classifier_dir(tmp_path / "layers", num_hidden_layers=None), "lacks a valid 'num_hidden_layers' entry"),
    ]
    for model, fragment in cases:
        _fails(model, capsys, fragment)
    # Neither a classifier nor an encoder the exporter knows: the embedder path names the architecture.
    _fails(_classifier_dir(tmp_path / "t5", model_type="t5", architectures=["T5ForConditionalGeneration"]), capsys,
           "unsupported architecture 't5'")
    _fails(_classifier_dir(tmp_path / "pooled"), capsys, "--pooling does not apply", "--pooling", "mean")
    weightless = _classifier_dir(tmp_path / "weightless")
    (weightless / "model.safetensors").unlink()
    _fails(weightless, capsys, "no weights")
