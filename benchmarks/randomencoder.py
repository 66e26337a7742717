"""BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet) with seeded random weights.

Saved as local sentence-transformers folders (Transformer -> Pooling -> Normalize) by
sentence-transformers itself, at their real width for the per-architecture speed table
(benchmarks/archspeed.py) or tiny for tests. Speed depends on the shapes, not on what the weights
learned. Nothing is downloaded: every one tokenizes with the default model's WordPiece vocabulary
(30522 ids; MPNet's layout puts its four specials first). RoBERTa and XLM-R therefore keep a small
embedding table (XLM-R's real one has 250k rows): that changes the lookup, not where the time goes.

    python -m zeroembed.benchmarks.randomencoder DIR --arch mpnet [--layers 4]
    zeroembed export --model DIR --out ARTIFACT
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet")

# Real sizes: BERT-base (bge-base, e5-base), roberta-base, xlm-roberta-base (less its vocabulary),
# multi-qa-distilbert, all-mpnet-base-v2. DistilBERT names its sizes differently; these are the
# generic names, translated in _config.
REAL: dict[str, dict[str, int]] = {
    arch: {"hidden": 768, "layers": 6 if arch == "distilbert" else 12, "heads": 12, "intermediate": 3072}
    for arch in ARCHITECTURES
}
TINY: dict[str, dict[str, int]] = {arch: {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64}
                                   for arch in ARCHITECTURES}


def _bert_vocab() -> list[str]:
    from zeroembed.export import default_model_dir

    return (default_model_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()


def _vocab(arch: str) -> list[str]:
    if arch == "mpnet":
        # MPNet's own layout: <s> <pad> </s> <unk> first (its positions hard-code pad id 1), <mask> last.
        return ["<s>", "<pad>", "</s>", "<unk>", *_bert_vocab(), "<mask>"]
    return _bert_vocab()


def _config(arch: str, size: dict[str, int], vocab_size: int, positions: int) -> Any:
    from transformers import BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig, XLMRobertaConfig

    if arch == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=size["hidden"], n_layers=size["layers"],
                                n_heads=size["heads"], hidden_dim=size["intermediate"],
                                max_position_embeddings=positions)
    shared = {"vocab_size": vocab_size, "hidden_size": size["hidden"], "num_hidden_layers": size["layers"],
              "num_attention_heads": size["heads"], "intermediate_size": size["intermediate"]}
    if arch == "bert":
        return BertConfig(max_position_embeddings=positions, **shared)
    if arch == "mpnet":
        return MPNetConfig(max_position_embeddings=positions + 2, **shared)  # positions count from pad id 1 + 1
    cls = RobertaConfig if arch == "roberta" else XLMRobertaConfig
    # RoBERTa numbers positions from pad_token_id + 1 (its pad id is 1): two more slots for the same length.
    return cls(max_position_embeddings=positions + 2, pad_token_id=1, type_vocab_size=1, **shared)


def _model_and_tokenizer(arch: str, config: Any, vocab: list[str]) -> tuple[Any, Any]:
    from transformers import (
        AutoModel,
        BertTokenizerFast,
        DistilBertTokenizerFast,
        MPNetTokenizerFast,
    )

    tokenizer_cls = {"distilbert": DistilBertTokenizerFast, "mpnet": MPNetTokenizerFast}.get(arch, BertTokenizerFast)
    tokenizer = tokenizer_cls(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    load = {} if arch == "distilbert" else {"add_pooling_layer": False}
    return AutoModel.from_config(config, **load).eval(), tokenizer


def write_hf_encoder(arch: str, folder: Path, *, tiny: bool = False, layers: int | None = None,
                     positions: int = 512) -> int:
    """Write a random ``arch`` model and its tokenizer in Hugging Face's layout into ``folder``, with room
    for ``positions`` tokens; returns its hidden size. The caller seeds torch."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    size = dict((TINY if tiny else REAL)[arch])
    if layers is not None:
        size["layers"] = layers
    vocab = _vocab(arch)
    model, tokenizer = _model_and_tokenizer(arch, _config(arch, size, len(vocab), positions), vocab)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return size["hidden"]


def make_random_encoder(
    arch: str,
    out: Path,
    *,
    tiny: bool = False,
    layers: int | None = None,
    max_seq_length: int = 512,
    seed: int = 1234,
) -> Path:
    """Write a random ``arch`` encoder (mean pooling, normalized) into ``out``; ``layers`` cuts it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    out = Path(out)
    hf_dir = out.with_name(out.name + "-hf")  # the Transformer module's source, removed once ``out`` is saved
    torch.manual_seed(seed)
    hidden = write_hf_encoder(arch, hf_dir, tiny=tiny, layers=layers, positions=max_seq_length)
    modules = [Transformer(str(hf_dir), max_seq_length=max_seq_length), Pooling(hidden, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    shutil.rmtree(hf_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.randomencoder",
                                description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="directory to write the model into")
    p.add_argument("--arch", choices=ARCHITECTURES, required=True)
    p.add_argument("--layers", type=int, default=None, help="cut to this many layers (default: the real count)")
    p.add_argument("--tiny", action="store_true", help="test size instead of the real width")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    print(make_random_encoder(args.arch, args.out, tiny=args.tiny, layers=args.layers,
                              max_seq_length=args.max_seq_length, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
