"""Reading model directories and their sentence-transformers config (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroembed.export import DEFAULT_MODEL_NAME, ExportError, default_model_dir
from zeroembed.export.source import resolve_source

from ..dependencies import require


def _bert_dir(path: Path, **config: object) -> Path:
    path.mkdir()
    base = {
        "model_type": "bert", "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8,
        "vocab_size": 10, "max_position_embeddings": 1024,
    }
    (path / "config.json").write_text(json.dumps(base | config), encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"")
    (path / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    return path


def test_default_model() -> None:
    source = resolve_source(None)
    assert source.name == DEFAULT_MODEL_NAME and source.path == default_model_dir().resolve()
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", True, 256)
    assert (source.num_layers, source.num_heads, source.hidden_size) == (6, 12, 384)


def test_plain_bert_defaults(tmp_path: Path) -> None:
    source = resolve_source(_bert_dir(tmp_path / "plain"))
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", False, 512)
    assert not source.is_sentence_transformer


def test_overrides(tmp_path: Path) -> None:
    source = resolve_source(_bert_dir(tmp_path / "plain"), pooling="cls", max_seq_length=1000)
    assert (source.pooling, source.max_seq_length) == ("cls", 1000)


def _modules(model: Path, *kinds: str) -> None:
    entries = [{"path": "" if kind == "Transformer" else f"{i}_{kind}", "type": f"sentence_transformers.models.{kind}"}
               for i, kind in enumerate(kinds)]
    (model / "modules.json").write_text(json.dumps(entries), encoding="utf-8")
    for entry in entries[1:]:
        (model / entry["path"]).mkdir()


def _pooling(model: Path, **config: object) -> None:
    (model / "1_Pooling" / "config.json").write_text(json.dumps(config), encoding="utf-8")


def test_unknown_sentence_transformers_module_is_named(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "lstm")
    _modules(model, "Transformer", "Pooling", "LSTM")
    with pytest.raises(ExportError, match="'sentence_transformers.models.LSTM' module.*it knows Transformer, Pooling, Dense, Normalize"):
        resolve_source(model)


def test_combined_pooling_modes_are_refused_and_can_be_overridden(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "combo")
    _modules(model, "Transformer", "Pooling")
    _pooling(model, pooling_mode_mean_tokens=True, pooling_mode_max_tokens=True)
    with pytest.raises(ExportError, match=r"asks for pooling \['max', 'mean'\]"):
        resolve_source(model)
    assert resolve_source(model, pooling="mean").pooling == "mean"


@pytest.mark.parametrize("mode", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_every_pooling_mode_in_both_config_forms(tmp_path: Path, mode: str) -> None:
    legacy = _bert_dir(tmp_path / "legacy")
    _modules(legacy, "Transformer", "Pooling")
    key = {"cls": "pooling_mode_cls_token", "lasttoken": "pooling_mode_lasttoken",
           "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}.get(mode, f"pooling_mode_{mode}_tokens")
    _pooling(legacy, word_embedding_dimension=8, **{key: True})
    current = _bert_dir(tmp_path / "current")
    _modules(current, "Transformer", "Pooling")
    _pooling(current, embedding_dimension=8, pooling_mode=mode, include_prompt=False)
    assert resolve_source(legacy).head.pooling == mode and resolve_source(legacy).head.include_prompt
    assert resolve_source(current).head.pooling == mode and not resolve_source(current).head.include_prompt


def test_pooling_width_must_match_the_encoder(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "wide")
    _modules(model, "Transformer", "Pooling")
    _pooling(model, embedding_dimension=16, pooling_mode="mean")
    with pytest.raises(ExportError, match="pools 16-wide token embeddings but the encoder's hidden size is 8"):
        resolve_source(model)


def _dense(model: Path, folder: str, weights: bool = True, **config: object) -> None:
    (model / folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights:
        (model / folder / "model.safetensors").write_bytes(b"")


def test_chained_dense_layers_give_the_output_dim(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "dense")
    _modules(model, "Transformer", "Pooling", "Dense", "Dense", "Normalize")
    _pooling(model, pooling_mode="cls")
    _dense(model, "2_Dense", in_features=8, out_features=6, activation_function="torch.nn.modules.activation.Tanh")
    _dense(model, "3_Dense", in_features=6, out_features=4, bias=False,
           activation_function="torch.nn.modules.linear.Identity")
    source = resolve_source(model)
    assert [(d.in_features, d.out_features, d.activation, d.bias) for d in source.head.dense] == [
        (8, 6, "tanh", True), (6, 4, "identity", False)]
    assert source.normalize and source.output_dim == 4 and source.hidden_size == 8


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"in_features": 7, "out_features": 4}, "has in_features 7 but its input is 8-wide"),
        ({"in_features": 8, "out_features": 4, "activation_function": "my.module.Swish"},
         "uses activation 'my.module.Swish'; the exporter knows Tanh, Identity"),
        ({"in_features": 8, "out_features": 4, "module_input_name": "token_embeddings"},
         "applies Dense to 'token_embeddings'"),
        ({"out_features": 4}, "lacks a valid 'in_features' entry"),
    ],
)
def test_contradicting_dense_config_is_refused(tmp_path: Path, config: dict, fragment: str) -> None:
    model = _bert_dir(tmp_path / "bad")
    _modules(model, "Transformer", "Pooling", "Dense")
    _pooling(model, pooling_mode="mean")
    _dense(model, "2_Dense", **config)
    with pytest.raises(ExportError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        resolve_source(model)
    assert "\n" not in str(info.value)


def test_dense_without_weights_is_refused(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "noweights")
    _modules(model, "Transformer", "Pooling", "Dense")
    _pooling(model, pooling_mode="mean")
    _dense(model, "2_Dense", weights=False, in_features=8, out_features=4)
    with pytest.raises(ExportError, match="no weights in .*2_Dense"):
        resolve_source(model)


def test_module_order_is_checked(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "order")
    _modules(model, "Transformer", "Pooling", "Normalize", "Dense")
    _pooling(model, pooling_mode="mean")
    _dense(model, "3_Dense", in_features=8, out_features=4)
    with pytest.raises(ExportError, match="Dense must come after Pooling and before Normalize"):
        resolve_source(model)


def test_prompts(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "prompts")
    (model / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}),
        encoding="utf-8")
    prompts = resolve_source(model).prompts
    assert prompts.prompts == {"passage": "passage: ", "query": "query: "} and prompts.default_prompt_name == "query"
    (model / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "q: "}, "default_prompt_name": "doc"}), encoding="utf-8")
    with pytest.raises(ExportError, match="default_prompt_name 'doc' is not one of its prompts \\(query\\)"):
        resolve_source(model)
    assert resolve_source(_bert_dir(tmp_path / "none")).prompts.prompts == {}


@pytest.mark.parametrize(
    ("model_type", "config", "positions"),
    [
        ("distilbert", {"n_layers": 3, "n_heads": 2, "dim": 8}, 1024),
        ("mpnet", {}, 1022),  # positions count from MPNet's hard-coded padding_idx 1
        ("roberta", {"pad_token_id": 1}, 1022),
    ],
)
def test_architectures_read_their_own_config_keys(tmp_path: Path, model_type: str, config: dict, positions: int) -> None:
    model = _bert_dir(tmp_path / model_type, model_type=model_type, **config)
    source = resolve_source(model)
    assert source.model_type == model_type and source.max_position_embeddings == positions
    assert (source.num_layers, source.num_heads, source.hidden_size) == (config.get("n_layers", 2), 2, 8)


def test_unknown_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "t5", model_type="t5")
    known = "bert, distilbert, modernbert, mpnet, nomic_bert, qwen2, qwen3, roberta"
    with pytest.raises(ExportError, match=f"unsupported architecture 't5'.*{known}"):
        resolve_source(model)


def test_transformer_in_a_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "st"
    root.mkdir()
    _bert_dir(root / "0_Transformer")
    (root / "modules.json").write_text(json.dumps([
        {"path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]), encoding="utf-8")
    (root / "1_Pooling").mkdir()
    _pooling(root, pooling_mode="max")
    (root / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 77}', encoding="utf-8")
    source = resolve_source(root)
    assert source.path == (root / "0_Transformer").resolve() and source.pooling == "max"
    assert source.max_seq_length == 77


def test_max_seq_length_from_tokenizer_config(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "st5")
    (model / "tokenizer_config.json").write_text('{"model_max_length": 300}', encoding="utf-8")
    assert resolve_source(model).max_seq_length == 300  # sentence-transformers 5+ keeps it there
    (model / "tokenizer_config.json").write_text('{"model_max_length": 1e30}', encoding="utf-8")
    assert resolve_source(model).max_seq_length == 512  # "no limit" sentinel


def test_missing_weights_and_tokenizer(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "m")
    (model / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="no weights"):
        resolve_source(model)
    (model / "model.safetensors").write_bytes(b"")
    (model / "vocab.txt").unlink()
    with pytest.raises(ExportError, match="no tokenizer"):
        resolve_source(model)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_do_lower_case_lowercases_like_sentence_transformers(tmp_path: Path, do_lower_case: bool) -> None:
    """Old sentence-transformers folders say do_lower_case beside a cased tokenizer; ST lowercases first."""
    require("transformers", "export")
    from transformers import BertTokenizerFast

    from zeroembed.export.tokenizer import build_tokenizer

    vocab = (default_model_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    model = _bert_dir(tmp_path / "cased", vocab_size=len(vocab))
    (model / "vocab.txt").unlink()
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False).save_pretrained(model)
    (model / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": do_lower_case}), encoding="utf-8")
    source = resolve_source(model)
    assert source.do_lower_case is do_lower_case
    tokenizer = build_tokenizer(source)
    same = tokenizer.encode("HELLO World").ids == tokenizer.encode("hello world").ids
    assert same is do_lower_case


def test_pooling_config_without_a_mode_means_mean(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "nomode")
    _modules(model, "Transformer", "Pooling")
    _pooling(model, word_embedding_dimension=8, pooling_mode_cls_token=False, pooling_mode_mean_tokens=False)
    assert resolve_source(model).pooling == "mean"  # sentence-transformers' own fallback


def test_architecture_without_fusion_needs_allow_unfused(tmp_path: Path, monkeypatch) -> None:
    from zeroembed.export import architectures

    spec = architectures.ArchitectureSpec("bert", "none")
    monkeypatch.setitem(architectures.ARCHITECTURES, "bert", spec)
    model = _bert_dir(tmp_path / "unfusable")
    with pytest.raises(ExportError, match="cannot fuse bert's attention; pass --allow-unfused"):
        resolve_source(model)
    assert resolve_source(model, allow_unfused=True).allow_unfused
