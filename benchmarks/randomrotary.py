"""Rotary-embedding models (ModernBERT, NomicBERT, Qwen2, Qwen3) with seeded random weights.

Saved as local sentence-transformers folders (Transformer -> Pooling -> Normalize), at their real
width for the per-architecture speed table or tiny for tests. Speed depends on the shapes, not on
what the weights learned. Nothing is downloaded:

- the encoders reuse the default model's WordPiece tokenizer (30522 ids);
- the decoders get a byte-level BPE trained here on the benchmark corpus, built the way
  transformers' ``Qwen2Tokenizer`` rebuilds any Qwen tokenizer (NFC, Qwen's split regex, byte
  level), with ``<|endoftext|>`` appended to every text as Qwen3-Embedding's tokenizer does. A
  WordPiece tokenizer would not do: transformers loads every qwen2/qwen3 folder's tokenizer as
  ``Qwen2Tokenizer``, whatever ``tokenizer_class`` says. Its vocabulary (a few thousand ids, not
  ~150k) only changes the embedding lookup, which is not where the time goes.

    python -m zeroembed.benchmarks.randomrotary DIR --arch qwen3 --layers 4
    zeroembed export --model DIR --out ARTIFACT
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

ARCHITECTURES = ("modernbert", "nomic_bert", "qwen2", "qwen3")
DECODERS = ("qwen2", "qwen3")

# Real sizes: ModernBERT-base, nomic-embed-text-v1.5, gte-Qwen2-1.5B-instruct, Qwen3-Embedding-0.6B.
REAL: dict[str, dict[str, Any]] = {
    "modernbert": {"hidden_size": 768, "intermediate_size": 1152, "num_hidden_layers": 22,
                   "num_attention_heads": 12, "global_attn_every_n_layers": 3, "local_attention": 128,
                   "max_position_embeddings": 8192},
    "nomic_bert": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "max_position_embeddings": 8192},
    "qwen2": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "max_position_embeddings": 32768},
    "qwen3": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 32768},
}
# Tiny sizes for tests: ModernBERT gets one global and two sliding layers with a window (8) shorter than
# most test texts; the decoders group 4 query heads onto 2 key/value heads.
TINY: dict[str, dict[str, Any]] = {
    "modernbert": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                   "global_attn_every_n_layers": 3, "local_attention": 8, "max_position_embeddings": 8192},
    "nomic_bert": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "max_position_embeddings": 2048},
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048},
    "qwen3": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 2048},
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_VOCAB_SIZE = 30522  # the default model's tokenizer
_CLS, _SEP, _PAD = 101, 102, 0
_EOS = "<|endoftext|>"  # id 0 of the decoders' tokenizer: end of text and padding


def _decoder_tokenizer(out: Path, vocab_size: int) -> int:
    """Train and save (tokenizer.json, tokenizer_config.json) a Qwen-shaped BPE; returns its size."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from .corpus import make_corpus

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[_EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(make_corpus(2000, seed=1), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {_EOS}", pair=f"$A {_EOS} $B {_EOS}", special_tokens=[(_EOS, 0)])
    tokenizer.save(str(out / "tokenizer.json"))
    _write(out / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer", "eos_token": _EOS, "pad_token": _EOS, "unk_token": None,
        "bos_token": None, "add_prefix_space": False, "model_max_length": 32768,
    })
    return tokenizer.get_vocab_size(with_added_tokens=True)


def _config(arch: str, sizes: dict[str, Any]) -> Any:
    from transformers import ModernBertConfig, NomicBertConfig, Qwen2Config, Qwen3Config

    if arch == "modernbert":
        return ModernBertConfig(vocab_size=_VOCAB_SIZE, pad_token_id=_PAD, cls_token_id=_CLS, sep_token_id=_SEP,
                                bos_token_id=_CLS, eos_token_id=_SEP, **sizes)
    if arch == "nomic_bert":
        return NomicBertConfig(vocab_size=_VOCAB_SIZE, pad_token_id=_PAD, **sizes)
    cls = Qwen2Config if arch == "qwen2" else Qwen3Config
    # No pad_token_id: it would zero the embedding of <|endoftext|>, which every text ends with.
    return cls(pad_token_id=None, bos_token_id=None, eos_token_id=0, tie_word_embeddings=False, **sizes)


def make_random_rotary(
    arch: str,
    out: Path,
    *,
    tiny: bool = False,
    layers: int | None = None,
    pooling: str | None = None,
    max_seq_length: int = 512,
    padding_side: str = "right",
    prompts: dict[str, str] | None = None,
    seed: int = 1234,
    **config: Any,
) -> Path:
    """Write a random ``arch`` model into ``out`` (created); ``layers`` cuts it to that many layers.

    ``pooling`` defaults to ``lasttoken`` for the decoders and ``mean`` otherwise. ``padding_side``
    goes into tokenizer_config.json (what sentence-transformers pads with); ``prompts`` into
    config_sentence_transformers.json. Extra keyword arguments override config entries.
    """
    import torch
    from transformers import AutoModel

    from zeroembed.export import default_model_dir

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    sizes = dict((TINY if tiny else REAL)[arch])
    if layers is not None:
        sizes["num_hidden_layers"] = layers
    sizes.update(config)
    pooling = pooling or ("lasttoken" if arch in DECODERS else "mean")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if arch in DECODERS:
        # The embedding table may be larger than the tokenizer (real Qwen models' are); at least
        # 2048 rows, as the exporter traces with ids up to 1050.
        sizes.setdefault("vocab_size", max(2048, _decoder_tokenizer(out, 1000 if tiny else 16000)))
    else:
        for name in _TOKENIZER_FILES:
            shutil.copy(default_model_dir() / name, out / name)
    model_config = _config(arch, sizes)
    torch.manual_seed(seed)
    model = AutoModel.from_config(model_config).eval()
    if tiny:
        # Tiny widths with the default init (std 0.02) leave every layer close to the identity;
        # larger weights make a wrong mask or position show up in the vectors.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() > 1 and "embed" not in name:
                    param.normal_(0.0, 0.2)
    model.save_pretrained(str(out))
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer_config.update(padding_side=padding_side, model_max_length=max_seq_length)
    _write(out / "tokenizer_config.json", tokenizer_config)
    _write(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write(out / "1_Pooling" / "config.json",
           {"word_embedding_dimension": model_config.hidden_size, "pooling_mode": pooling})
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write(out / "config_sentence_transformers.json",
           {"prompts": prompts or {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    return out


def _write(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.randomrotary",
                                description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="directory to write the model into")
    p.add_argument("--arch", choices=ARCHITECTURES, required=True)
    p.add_argument("--layers", type=int, default=None, help="cut to this many layers (default: the real count)")
    p.add_argument("--tiny", action="store_true", help="test size instead of the real width")
    p.add_argument("--pooling", default=None, help="default: lasttoken for decoders, mean otherwise")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    print(make_random_rotary(args.arch, args.out, tiny=args.tiny, layers=args.layers, pooling=args.pooling,
                             max_seq_length=args.max_seq_length, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
