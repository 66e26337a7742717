"""A BERT of any size with seeded random weights, saved as a local sentence-transformers directory.

For benchmarks at sizes no bundled model has (e.g. BERT-base: 12 layers × 768) and for tests that need a
small model: speed depends on the shapes, not on what the weights learned. The vocabulary is the default
model's, so texts tokenize as they would for a real English BERT. Nothing is downloaded.

    python -m zeroembed.benchmarks.randommodel DIR --layers 12 --hidden 768 --heads 12
    zeroembed export --model DIR --precision fp16 --out ARTIFACT

``--cross-encoder`` writes a reranker instead (``*ForSequenceClassification``, see
:func:`make_random_cross_encoder`); ms-marco-MiniLM-L-6-v2's size is 6 layers × 384, 12 heads:

    python -m zeroembed.benchmarks.randommodel DIR --cross-encoder --layers 6 --hidden 384 --heads 12
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


CROSS_ENCODER_TYPES = ("bert", "roberta", "xlm-roberta")


def make_random_cross_encoder(out: Path, *, layers: int = 6, hidden: int = 384, heads: int = 12,
                              intermediate: int | None = None, max_positions: int = 512, model_type: str = "bert",
                              num_labels: int = 1, init_range: float = 0.02, seed: int = 1234) -> Path:
    """Write a random-weight ``*ForSequenceClassification`` (plain Hugging Face layout) into ``out``.

    The defaults are ms-marco-MiniLM-L-6-v2's shape and BERT's usual init (``init_range``, the
    weights' std). Export it in fp32: a random classifier scores the documents of a query so close
    together that int8's noise reorders them, and the exporter's ranking gate refuses it. Wider
    weights spread the scores but make a deep random model chaotic, to the point where fp32 ONNX
    Runtime and PyTorch no longer agree; only tiny models (the exporter's tests) use them.

    The tokenizer is the default model's WordPiece vocabulary; for RoBERTa/XLM-R its pair template
    becomes theirs (``<s> A </s></s> B </s>``, written with BERT's ``[CLS]``/``[SEP]``, token types
    all 0) and positions get RoBERTa's padding offset.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from zeroembed.export import default_model_dir

    if model_type not in CROSS_ENCODER_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(CROSS_ENCODER_TYPES)}, not {model_type!r}")
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = default_model_dir()
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    roberta = model_type != "bert"
    offset = 2 if roberta else 0  # RoBERTa numbers positions from pad_token_id + 1, pad_token_id = 1
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer["model"]["vocab"]), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions + offset, num_labels=num_labels, initializer_range=init_range,
        **({"pad_token_id": 1, "type_vocab_size": 1} if roberta else {}),
    )
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(out)
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_positions,
                        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                        "mask_token": "[MASK]"}
    tokenizer["padding"] = tokenizer["truncation"] = None
    if roberta:
        def special(name: str) -> dict:
            return {"SpecialToken": {"id": name, "type_id": 0}}

        def sequence(name: str) -> dict:
            return {"Sequence": {"id": name, "type_id": 0}}

        processor = tokenizer["post_processor"]
        processor["single"] = [special("[CLS]"), sequence("A"), special("[SEP]")]
        processor["pair"] = [special("[CLS]"), sequence("A"), special("[SEP]"), special("[SEP]"), sequence("B"),
                             special("[SEP]")]
        # A generic fast tokenizer keeps this template; RoBERTa's tokenizers feed no token types.
        tokenizer_config |= {"tokenizer_class": "PreTrainedTokenizerFast",
                             "model_input_names": ["input_ids", "attention_mask"]}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
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
    p.add_argument("--cross-encoder", action="store_true", help="a reranker (sequence classifier), not an embedder")
    p.add_argument("--model-type", choices=CROSS_ENCODER_TYPES, default="bert", help="--cross-encoder architecture")
    p.add_argument("--num-labels", type=int, default=1, help="--cross-encoder scores per pair")
    p.add_argument("--init-range", type=float, default=0.02, help="--cross-encoder weights' std (see its docstring)")
    args = p.parse_args(argv)
    if args.cross_encoder:
        out = make_random_cross_encoder(args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
                                        intermediate=args.intermediate, max_positions=args.max_positions,
                                        model_type=args.model_type, num_labels=args.num_labels,
                                        init_range=args.init_range, seed=args.seed)
        print(out)
        return 0
    out = make_random_bert(args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
                           intermediate=args.intermediate, max_positions=args.max_positions, pooling=args.pooling,
                           seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
