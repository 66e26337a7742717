"""A BERT of any size with seeded random weights, saved as a local sentence-transformers directory.

For benchmarks at sizes no bundled model has (e.g. BERT-base: 12 layers × 768) and for tests that need a
small model: speed depends on the shapes, not on what the weights learned. The vocabulary is the default
model's, so texts tokenize as they would for a real English BERT. Nothing is downloaded.

    python -m zeroembed.benchmarks.randommodel DIR --layers 12 --hidden 768 --heads 12
    zeroembed export --model DIR --precision fp16 --out ARTIFACT
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def make_random_bert(out: Path, *, layers: int = 12, hidden: int = 768, heads: int = 12,
                     intermediate: int | None = None, max_positions: int = 512, pooling: str = "mean",
                     seed: int = 1234) -> Path:
    """Write a random-weight BERT (HF layout plus sentence-transformers pooling config) into ``out``.

    Only ``vocab.txt`` is shipped as tokenizer, as older BERT checkpoints do.
    """
    import torch
    from transformers import BertConfig, BertModel

    from zeroembed.export import default_model_dir

    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = default_model_dir() / "vocab.txt"
    config = BertConfig(
        vocab_size=sum(1 for _ in vocab.open(encoding="utf-8")), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(out)
    shutil.copy(vocab, out / "vocab.txt")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]), encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.randommodel", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="directory to write the model into")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=None, help="FFN size (default 4 × hidden)")
    p.add_argument("--max-positions", type=int, default=512)
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    out = make_random_bert(args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
                           intermediate=args.intermediate, max_positions=args.max_positions, pooling=args.pooling,
                           seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
