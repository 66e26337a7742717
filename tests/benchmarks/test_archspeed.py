"""`python -m zeroembed.benchmarks.archspeed` on tiny models: the harness runs end to end (no timings asserted)."""

from __future__ import annotations

import json

from ..dependencies import require

require("torch", "export")

from zeroembed.benchmarks.archspeed import HEADER, main  # noqa: E402


def test_tiny_run_measures_st_ort_and_served_and_prints_the_row(tmp_path, capsys):
    out = tmp_path / "archspeed.json"
    argv = ["--arch", "mpnet", "--tiny", "--texts", "12", "--batch", "4", "--rounds", "1", "--concurrency", "3",
            "--request-size", "2", "--max-seq-length", "64", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())
    assert (result["architecture"], result["layers"], result["hidden"], result["texts"]) == ("mpnet", 2, 32, 12)
    for key in ("st_texts_per_s", "ort_texts_per_s", "served_texts_per_s"):
        assert result[key] > 0
    assert result["speedup"] > 0 and result["served_vs_ort"] > 0
    # The served vectors are the artifact's, in the texts' order: they agree with sentence-transformers.
    assert result["min_cosine"] > 0.9999 and result["served_min_cosine_to_st"] > 0.9999
    assert result["fused_operators"]["Attention"] == 2
    printed = capsys.readouterr().out
    assert HEADER in printed
    assert "| mpnet | 2 × 32 | 12 |" in printed and "| Attention × 2 |" in printed


def test_build_only_builds_once_and_measures_nothing(tmp_path, capsys):
    argv = ["--arch", "distilbert", "--tiny", "--max-seq-length", "32", "--workdir", str(tmp_path), "--build-only"]
    assert main(argv) == 0
    manifest = tmp_path / "distilbert-tiny-allL-32" / "artifact" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    assert main(argv) == 0  # reused, not exported again
    assert manifest.stat().st_mtime_ns == written
    assert "texts/s" not in capsys.readouterr().out
