"""The int8 recipes graded on this CPU and on an emulated one without VNNI: does the exporter's gate hold there?

    python -m zeroembed.benchmarks.int8isa [--fp32 ARTIFACT] [--cpu Haswell] [--corpus 24] [--json FILE]

ONNX Runtime multiplies u8 activations by s8 weights with VNNI (``VPDPBUSD``, 32-bit sums) where the
CPU has it, and otherwise with ``VPMADDUBSW``, which adds each pair of products in 16 bits and saturates;
full-range s8 weights (the default recipe's) can reach that limit. The exporter grades every recipe on
the CPU it runs on (export/precision.py ``pick_int8``), so on a CPU without VNNI it should fall back.
This shows whether it does: each recipe of ``INT8_RECIPES`` is quantised here, then graded with the
exporter's own parity check (``parity.compare`` against the PyTorch reference) natively and under
``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512, no VNNI), and the gate's pick on each is replayed
through ``pick_int8`` itself. The fused fp32 graph is graded too, as a control of the emulation.

Emulation is valid for accuracy: qemu computes each instruction's integer result, saturation included,
and ONNX Runtime and numpy pick their kernels from the CPUID qemu reports (the grade lists what numpy
detected, and refuses an emulated CPU with AVX-512 or VNNI). ONNX Runtime has no setting that forces
its non-VNNI kernels (MLAS dispatches on CPUID alone), hence the emulator. It says nothing about speed:
emulated code runs orders of magnitude slower than the hardware. CPUs with AVX-512 but no VNNI
(Skylake-SP) multiply with VPMADDUBSW as well; qemu does not emulate AVX-512, so this cannot
grade them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from zeroembed.export.manifest import ParityReport
    from zeroembed.export.parity import Reference
    from zeroembed.export.source import ModelSource

CONTROL = "fp32 (control)"
QEMU = "qemu-x86_64"


def cpu_features() -> dict[str, bool]:
    """The x86 SIMD features numpy detected at run time (AVX*, FMA3, *VNNI*)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {k: bool(v) for k, v in features.items() if k.startswith(("AVX", "FMA")) or "VNNI" in k}


def u8s8_saturates() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernel here saturates pairs of products in 16 bits (the server's probe)."""
    from zeroembed.server.workers.int8_kernel import u8s8_products_exact

    return not u8s8_products_exact()


def describe_isa(features: dict[str, bool]) -> str:
    """One line: the vector ISA and VNNI flavours present."""
    vnni = sorted(k for k, on in features.items() if on and "VNNI" in k)
    widest = "AVX-512" if features.get("AVX512F") else "AVX2" if features.get("AVX2") else "no AVX2"
    return f"{widest}, {'VNNI: ' + '/'.join(vnni) if vnni else 'no VNNI'}"


def save_reference(reference: Reference, path: Path) -> None:
    """``reference`` as a plain .npz (no pickle): the ragged token arrays concatenated, plus their lengths."""
    np.savez(path, texts=np.array(reference.texts, dtype=str), prompt_lengths=np.array(reference.prompt_lengths),
             token_lengths=np.array([len(t) for t in reference.tokens]), tokens=np.concatenate(reference.tokens),
             sentence=reference.sentence, pooled=reference.pooled)


def load_reference(path: Path) -> Reference:
    """The reference :func:`save_reference` wrote."""
    from zeroembed.export.parity import Reference

    with np.load(path, allow_pickle=False) as data:
        splits = np.cumsum(data["token_lengths"])[:-1]
        return Reference(texts=tuple(str(t) for t in data["texts"]),
                         prompt_lengths=tuple(int(n) for n in data["prompt_lengths"]),
                         tokens=np.split(data["tokens"], splits), sentence=data["sentence"], pooled=data["pooled"])


def prepare(work: Path, fp32: Path, model: Path | None, recipes: list[str] | None = None, corpus: int = 0) -> None:
    """Write into ``work`` what a grade needs: the exporter's tokenizer, the PyTorch reference, each model.

    ``recipes``: names from ``INT8_RECIPES`` (default: all, in their order); ``corpus``: benchmark texts
    each model also encodes, compared with the fp32 graph per length class (0: none).
    """
    from zeroembed.export import graph, parity
    from zeroembed.export import precision as prec
    from zeroembed.export.smoothing import calibration_feeds
    from zeroembed.export.source import resolve_source
    from zeroembed.export.tokenizer import build_tokenizer

    source = resolve_source(model)
    tokenizer = build_tokenizer(source)
    tokenizer.save(str(work / "tokenizer.json"))
    texts, prompt_lengths = parity.validation_set(tokenizer, source.prompts.prompts)
    module = graph.wrap(graph.as_body(graph.load_encoder(source)), source)  # as export/embed.py builds it
    save_reference(parity.build_reference(module, tokenizer, texts, prompt_lengths), work / "reference.npz")
    rows = [{"name": CONTROL, "model": str(fp32 / "model.onnx"), "precision": "fp32"}]
    calibration = calibration_feeds(tokenizer)
    for index, recipe in enumerate(prec.INT8_RECIPES):
        if recipes is not None and recipe.name not in recipes:
            continue
        (work / f"int8-{index}").mkdir()
        out = work / f"int8-{index}" / "model.onnx"
        prec.quantize_int8(fp32 / "model.onnx", out, recipe, calibration)
        rows.append({"name": recipe.name, "model": str(out), "precision": "int8"})
    (work / "plan.json").write_text(json.dumps({"rows": rows, "corpus": corpus}))


def grade(work: Path) -> dict[str, Any]:
    """Grade every model of ``work``'s plan on this CPU: parity reports, and corpus min cosine per class."""
    from tokenizers import Tokenizer

    from zeroembed.export import parity

    from .corpus import DEFAULT_SEED, length_class, make_corpus

    plan = json.loads((work / "plan.json").read_text())
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    reference = load_reference(work / "reference.npz")
    texts = make_corpus(plan["corpus"], DEFAULT_SEED)
    classes: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        classes.setdefault(length_class(text), []).append(i)
    reports: dict[str, Any] = {}
    corpus: dict[str, dict[str, float]] = {}
    fp32_vectors = None
    for row in plan["rows"]:
        reports[row["name"]] = parity.compare(row["model"], tokenizer, reference, row["precision"]).model_dump()
        if texts:
            vectors = parity.run_onnx(row["model"], tokenizer, texts, "CPUExecutionProvider")[1]
            fp32_vectors = vectors if fp32_vectors is None else fp32_vectors  # the control row comes first
            a, b = vectors.astype(np.float64), fp32_vectors.astype(np.float64)
            cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            corpus[row["name"]] = {c: float(cosine[idx].min()) for c, idx in classes.items()}
    return {"cpu_features": cpu_features(), "u8s8_saturates": u8s8_saturates(), "reports": reports,
            "corpus_min_by_class": corpus}


def run_grade(work: Path, cpu: str | None) -> tuple[dict[str, Any], float]:
    """:func:`grade` in a child process, under ``qemu-x86_64 -cpu CPU`` when ``cpu`` is given; (result, seconds)."""
    command = [sys.executable, "-m", "zeroembed.benchmarks.int8isa", "--grade", str(work)]
    if cpu is not None:
        command = [QEMU, "-cpu", cpu, *command]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"int8isa: the grade{f' under {QEMU} -cpu {cpu}' if cpu else ''} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def check_emulated(features: dict[str, bool], cpu: str) -> None:
    """Refuse an emulated CPU that has AVX-512 or VNNI: it would not test the path this is about."""
    present = sorted(k for k, on in features.items() if on and (k.startswith("AVX512") or "VNNI" in k))
    if present:
        raise SystemExit(f"int8isa: {QEMU} -cpu {cpu} reports {', '.join(present)}; pick a CPU model "
                         "without AVX-512 and VNNI (e.g. Haswell)")


def gate_pick(source: ModelSource, fp32_model: Path, work: Path, reports: list[ParityReport]) -> tuple[str, bool]:
    """(recipe, passed) that ``pick_int8`` picks given ``reports``, one per ``INT8_RECIPES`` entry in order.

    ``pick_int8`` itself runs (it quantises again, which is cheap); only its grades are replayed.
    ``passed`` false means the export refuses int8 on that CPU.
    """
    from zeroembed.export import precision as prec
    from zeroembed.export.embed import EmbedBuild
    from zeroembed.export.smoothing import calibration_feeds
    from zeroembed.export.tokenizer import build_tokenizer

    class Replay(EmbedBuild):
        """The embedder's int8 judge, answering each grade with one measured elsewhere."""

        def __init__(self) -> None:
            super().__init__(source)
            self._reports = iter(reports)

        def grade(self, path: Path, precision: str, provider: str = "", method: str | None = None) -> ParityReport:
            return next(self._reports)

    work.mkdir(exist_ok=True)
    calibration = calibration_feeds(build_tokenizer(source))
    _, report, quant = prec.pick_int8(fp32_model, work, calibration, Replay(), lambda line: None)
    return quant.recipe, report.passed


def _cells(report: dict[str, Any]) -> str:
    sentence, token = report["sentence_embedding"]["min_cosine"], report["token_embeddings"]["min_cosine"]
    return f"{sentence:>9.5f} {token:>8.5f} {'pass' if report['passed'] else 'FAIL':>5}"


def print_results(results: dict[str, dict[str, Any]], seconds: dict[str, float],
                  picks: dict[str, tuple[str, bool]]) -> None:
    """The CPUs, each recipe's grade on each, the gate's picks, the corpus per length class."""
    from .corpus import LENGTH_CLASSES

    print(f"\n{'CPU':<16} {'ISA (numpy)':<28} {'ORT u8 x s8 pairs':<20} grade time")
    for cpu, result in results.items():
        probe = "saturate at int16" if result["u8s8_saturates"] else "exact"
        print(f"{cpu:<16} {describe_isa(result['cpu_features']):<28} {probe:<20} {seconds[cpu]:.0f} s")
    print(f"\n{'':<54} | " + " | ".join(f"{cpu:<24}" for cpu in results))
    print(f"{'recipe (min cosine to PyTorch)':<54} | " + " | ".join(f"{'sentence':>9} {'token':>8} {'':>5}"
                                                                 for _ in results))
    for name in next(iter(results.values()))["reports"]:
        print(f"{name:<54} | " + " | ".join(_cells(r["reports"][name]) for r in results.values()))
    for cpu, (recipe, passed) in picks.items():
        verdict = recipe if passed else f"nothing: int8 is refused (best attempt {recipe})"
        print(f"the exporter's gate on {cpu} picks: {verdict}")
    classes = [c.name for c in LENGTH_CLASSES]
    for cpu, result in results.items():
        if result["corpus_min_by_class"]:
            print(f"\n{'corpus min cosine to fp32, ' + cpu:<54} | " + " ".join(f"{c:>9}" for c in classes))
            for name, by_class in result["corpus_min_by_class"].items():
                print(f"{name:<54} | " + " ".join(f"{by_class[c]:>9.5f}" if c in by_class else f"{'-':>9}"
                                                  for c in classes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.int8isa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", help="fp32 artifact of --model (default: exported into a temporary folder)")
    parser.add_argument("--model", help="model directory (default: the bundled default model)")
    parser.add_argument("--cpu", default="Haswell", help="qemu CPU model to emulate (default: Haswell)")
    parser.add_argument("--corpus", type=int, default=0,
                        help="also encode this many benchmark texts; min cosine to fp32 per length class")
    parser.add_argument("--json", help="write the results as JSON")
    parser.add_argument("--grade", help=argparse.SUPPRESS)  # the child: grade a prepared folder, print JSON
    args = parser.parse_args(argv)
    if args.grade:
        print(json.dumps(grade(Path(args.grade))))
        return 0
    if shutil.which(QEMU) is None:
        raise SystemExit(f"int8isa: {QEMU} not found; install it with `apt-get install qemu-user`")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from zeroembed.export import export_model
    from zeroembed.export import precision as prec
    from zeroembed.export.manifest import ParityReport
    from zeroembed.export.source import resolve_source

    model = Path(args.model) if args.model else None
    with tempfile.TemporaryDirectory(prefix="zeroembed-int8isa-") as tmp:
        work = Path(tmp)
        fp32 = Path(args.fp32) if args.fp32 else work / "fp32"
        if not args.fp32:
            export_model(model, fp32)
        started = time.perf_counter()
        prepare(work, fp32, model, corpus=args.corpus)
        prepare_s = time.perf_counter() - started
        emulated = f"{args.cpu} (qemu)"
        results, seconds = {}, {"prepare": prepare_s}
        for cpu, qemu_cpu in (("native", None), (emulated, args.cpu)):
            results[cpu], seconds[cpu] = run_grade(work, qemu_cpu)
            print(f"{cpu} grade: {seconds[cpu]:.0f} s", flush=True)
        check_emulated(results[emulated]["cpu_features"], args.cpu)
        source = resolve_source(model)
        picks = {}
        for cpu, result in results.items():
            reports = [ParityReport.model_validate(result["reports"][r.name]) for r in prec.INT8_RECIPES]
            picks[cpu] = gate_pick(source, fp32 / "model.onnx", work / f"pick-{len(picks)}", reports)
    print_results(results, seconds, picks)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "seconds": seconds, "gate_picks": {
            cpu: {"recipe": recipe, "passed": passed} for cpu, (recipe, passed) in picks.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
