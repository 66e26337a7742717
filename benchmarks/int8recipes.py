"""Each int8 recipe's accuracy and speed, side by side: the table behind ``--precision int8``'s default.

    python -m zeroembed.benchmarks.int8recipes [--fp32 ARTIFACT] [--rounds 5] [--texts 200] [--only NAME ...]

For every recipe in :data:`RECIPES` (the exporter's own, export/precision.py, then the variants that lost):
quantise the fused fp32 graph, grade it like the exporter does (min cosine to PyTorch on the validation
texts: sentence, token), then on the benchmark corpus its min cosine to fp32 per length class, and its
speed in texts per CPU-second on one thread, batch 8, against fp32 in interleaved rounds. CPU time on one
thread is what a recipe changes; on a shared machine it moves far less than wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


from .corpus import DEFAULT_SEED, length_class, make_corpus
from .inprocess import OrtEncoder, cosine_stats


def _variants():
    from zeroembed.export import precision as prec

    recipe, ffn = prec.Int8Recipe, prec._ffn_down_projections
    both = ("MatMul", "Attention")
    return [
        *prec.INT8_RECIPES,
        recipe("qattention-reduce-range-a0.6", "as the default with reduce_range (7-bit weights), alpha 0.6",
               op_types=both, exclude=ffn, smooth_alpha=0.6, smooth_ops=both),
        recipe("qattention-u8-weights", "as the default with u8 weights (u8 x u8 kernels)", op_types=both,
               exclude=ffn, smooth_alpha=0.7, smooth_ops=both, reduce_range=False, weight_type="u8"),
        recipe("qattention-all-ffn-int8", "as the default with the FFN down-projections int8 too", op_types=both,
               smooth_alpha=0.7, smooth_ops=both, reduce_range=False),
        recipe("static-qdq-fp32-ffn-down", "smoothed, static calibrated QDQ (u8 activations, s8 weights "
               "per channel) on the MatMuls, FFN down-projections fp32", exclude=ffn, smooth_alpha=0.7,
               static=True, reduce_range=False),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.int8recipes", description=__doc__)
    parser.add_argument("--fp32", help="fp32 artifact (default: exported into a temporary folder)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    parser.add_argument("--json", help="write the table as JSON")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from zeroembed.export import export_model, graph, parity
    from zeroembed.export import precision as prec
    from zeroembed.export.smoothing import calibration_feeds
    from zeroembed.export.source import resolve_source
    from zeroembed.export.tokenizer import build_tokenizer

    with tempfile.TemporaryDirectory(prefix="zeroembed-int8recipes-") as tmp:
        work = Path(tmp)
        fp32 = Path(args.fp32) if args.fp32 else work / "fp32"
        if not args.fp32:
            export_model(None, fp32)
        source = resolve_source(None)
        tokenizer = build_tokenizer(source)
        reference = parity.build_reference(graph.wrap(graph.load_encoder(source), source), tokenizer)
        calibration = calibration_feeds(tokenizer)
        texts = make_corpus(args.texts, DEFAULT_SEED)
        encoders = {"fp32": OrtEncoder(fp32, 1)}
        fp32_vectors = encoders["fp32"].encode(texts, 8)
        rows: dict[str, dict] = {"fp32": {"description": "the fused fp32 graph"}}
        for recipe in _variants():
            if args.only and recipe.name not in args.only:
                continue
            out = work / recipe.name
            out.mkdir()
            count, _ = prec.quantize_int8(fp32 / "model.onnx", out / "model.onnx", recipe, calibration)
            report = parity.compare(str(out / "model.onnx"), tokenizer, reference, "int8")
            for name in ("tokenizer.json", "manifest.json"):
                shutil.copy(fp32 / name, out / name)
            encoders[recipe.name] = OrtEncoder(out, 1)
            vectors = encoders[recipe.name].encode(texts, 8)
            by_class: dict[str, list[int]] = {}
            for i, text in enumerate(texts):
                by_class.setdefault(length_class(text), []).append(i)
            rows[recipe.name] = {
                "description": recipe.description, "quantized_nodes": count,
                "validation_sentence_min": report.sentence_embedding.min_cosine,
                "validation_token_min": report.token_embeddings.min_cosine, "passed": report.passed,
                "corpus_min_by_class": {c: cosine_stats(vectors[idx], fp32_vectors[idx])["min"]
                                        for c, idx in by_class.items()},
            }
            print(f"{recipe.name}: validation sentence {report.sentence_embedding.min_cosine:.5f}, token "
                  f"{report.token_embeddings.min_cosine:.5f} ({'pass' if report.passed else 'fail'})", flush=True)
        rates: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                started = time.thread_time()  # one intra-op thread: the session runs on this thread
                encoder.encode(texts, 8)
                rates[name].append(len(texts) / (time.thread_time() - started))
        for name, row in rows.items():
            ratios = [a / b for a, b in zip(rates[name], rates["fp32"], strict=True)]
            row.update(texts_per_cpu_s=statistics.median(rates[name]), speed_vs_fp32=statistics.median(ratios),
                       speed_vs_fp32_rounds=ratios)
    print(f"\n{'recipe':<56} {'valid.':>7} {'token':>7} {'corpus min':>10} {'x fp32':>7}  per-round")
    for name, row in rows.items():
        corpus = min(row["corpus_min_by_class"].values()) if "corpus_min_by_class" in row else None
        cells = [f"{row.get('validation_sentence_min', 1):.4f}", f"{row.get('validation_token_min', 1):.4f}",
                 f"{corpus:.4f}" if corpus is not None else "-"]
        print(f"{name:<56} {cells[0]:>7} {cells[1]:>7} {cells[2]:>10} {row['speed_vs_fp32']:>7.2f}  "
              + " ".join(f"{x:.2f}" for x in row["speed_vs_fp32_rounds"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
