"""The int8-on-another-ISA check: its reference file, its grade child, the gate's replayed pick, its refusals.

Natively on a tiny random BERT; the emulated grade needs qemu-x86_64 (skipped without it, failed under CI).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from zeroembed.benchmarks import int8isa

from ..dependencies import missing


def _reference():
    from zeroembed.export.parity import Reference

    rng = np.random.default_rng(0)
    lengths = (2, 5, 3)
    return Reference(texts=("", "tail space ", "Ünïcödé 🚀"), prompt_lengths=(0, 2, 0),
                     tokens=[rng.standard_normal((n, 4)).astype(np.float32) for n in lengths],
                     sentence=rng.standard_normal((3, 4)).astype(np.float32),
                     pooled=rng.standard_normal((3, 4)).astype(np.float32))


def test_reference_round_trips_without_pickle(tmp_path):
    reference = _reference()
    int8isa.save_reference(reference, tmp_path / "reference.npz")
    loaded = int8isa.load_reference(tmp_path / "reference.npz")
    assert loaded.texts == reference.texts and loaded.prompt_lengths == reference.prompt_lengths
    assert [t.shape for t in loaded.tokens] == [t.shape for t in reference.tokens]
    for a, b in zip(loaded.tokens, reference.tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.sentence, reference.sentence)
    np.testing.assert_array_equal(loaded.pooled, reference.pooled)
    with np.load(tmp_path / "reference.npz", allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_emulated_cpu_with_avx512_or_vnni_is_refused():
    haswell = {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False}
    int8isa.check_emulated(haswell, "Haswell")
    assert int8isa.describe_isa(haswell) == "AVX2, no VNNI"
    for extra in ({"AVX512F": True}, {"AVXVNNI": True}):
        with pytest.raises(SystemExit, match="without AVX-512 and VNNI"):
            int8isa.check_emulated({**haswell, **extra}, "max")
    assert int8isa.describe_isa({"AVX2": True, "AVX512F": True, "AVX512VNNI": True}) == "AVX-512, VNNI: AVX512VNNI"
    assert "AVX2" in int8isa.cpu_features()


def test_missing_qemu_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(int8isa.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install qemu-user"):
        int8isa.main([])


@pytest.fixture(scope="module")
def prepared(tiny_bert_dir, tiny_artifact, tmp_path_factory):
    """A grade folder for the tiny BERT: the fp32 control and the default int8 recipe, 6 corpus texts."""
    from zeroembed.export import precision as prec

    work = tmp_path_factory.mktemp("int8isa")
    int8isa.prepare(work, tiny_artifact, tiny_bert_dir, recipes=[prec.INT8_RECIPES[0].name], corpus=6)
    return work


def test_grade_child_grades_as_the_exporter_does(prepared, tiny_bert_dir):
    from zeroembed.export import parity
    from zeroembed.export import precision as prec
    from zeroembed.export.source import resolve_source
    from zeroembed.export.tokenizer import build_tokenizer

    result, _ = int8isa.run_grade(prepared, None)
    name = prec.INT8_RECIPES[0].name
    assert list(result["reports"]) == [int8isa.CONTROL, name]
    assert result["reports"][int8isa.CONTROL]["passed"]
    assert result["cpu_features"] == int8isa.cpu_features()
    assert result["u8s8_saturates"] == int8isa.u8s8_saturates()
    # The child's saved reference and tokenizer give the grade the exporter's own objects give.
    source = resolve_source(tiny_bert_dir)
    tokenizer = build_tokenizer(source)
    reference = int8isa.load_reference(prepared / "reference.npz")
    assert reference.texts == parity.validation_set(tokenizer, source.prompts.prompts)[0]
    direct = parity.compare(str(prepared / "int8-0" / "model.onnx"), tokenizer, reference, "int8")
    assert result["reports"][name] == direct.model_dump()
    corpus = result["corpus_min_by_class"]
    assert set(corpus) == {int8isa.CONTROL, name}
    assert all(v == pytest.approx(1.0) for v in corpus[int8isa.CONTROL].values())
    assert all(-1.0 <= v <= 1.0 for v in corpus[name].values())


def test_gate_pick_replays_pick_int8(tiny_bert_dir, tiny_artifact, tmp_path):
    from zeroembed.export import precision as prec
    from zeroembed.export.manifest import Agreement, ParityReport
    from zeroembed.export.source import resolve_source

    def report(cosine: float) -> ParityReport:
        agreement = Agreement(min_cosine=cosine, max_abs_diff=0.1)
        return ParityReport(passed=cosine >= 0.99, method="m", provider="p", reference="r", num_texts=1,
                            thresholds={}, sentence_embedding=agreement, pooled_embedding=agreement,
                            token_embeddings=agreement)

    source, model, names = resolve_source(tiny_bert_dir), tiny_artifact / "model.onnx", prec.INT8_RECIPES
    assert len(names) == 4
    cases = [([0.98, 0.995, 0.999, 0.999], (names[1].name, True)),  # first with the headroom wins
             ([0.991, 0.9925, 0.98, 0.9915], (names[1].name, True)),  # none with headroom: best that passed
             ([0.98, 0.97, 0.985, 0.96], (names[2].name, False))]  # none passes: export refuses
    for i, (cosines, expected) in enumerate(cases):
        reports = [report(c) for c in cosines]
        assert int8isa.gate_pick(source, model, tmp_path / str(i), reports) == expected


def test_emulated_grade_runs_without_avx512_or_vnni(prepared):
    if shutil.which(int8isa.QEMU) is None:
        missing(int8isa.QEMU, install="apt-get install qemu-user")
    result, _ = int8isa.run_grade(prepared, "Haswell")
    int8isa.check_emulated(result["cpu_features"], "Haswell")
    assert result["cpu_features"]["AVX2"]
    assert result["u8s8_saturates"]  # ONNX Runtime ran its VPMADDUBSW kernel, not a VNNI one
    assert result["reports"][int8isa.CONTROL]["passed"]
