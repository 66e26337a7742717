"""``zeroembed export`` through the CLI entry: bad input fails fast, cleanly, with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zeroembed.cli import main


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    code = main(["export", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("zeroembed export: error: ")
    assert fragment in err[0]


def test_missing_model_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    _fails(["--model", str(tmp_path / "nope"), "--out", str(out)], capsys, "is not a local directory")
    _fails(["--model", "sentence-transformers/all-MiniLM-L6-v2", "--out", str(out)], capsys, "nothing is downloaded")
    assert list(tmp_path.iterdir()) == []


def test_not_a_model_dir(tmp_path: Path, capsys) -> None:
    model = tmp_path / "empty"
    model.mkdir()
    _fails(["--model", str(model), "--out", str(tmp_path / "out")], capsys, "no config.json")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(tmp_path: Path, capsys) -> None:
    model = tmp_path / "gpt"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    _fails(["--model", str(model), "--out", str(tmp_path / "out")], capsys, "unsupported architecture 'gpt2'")
    assert not (tmp_path / "out").exists()


def test_corrupt_weights(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "corrupt"
    shutil.copytree(tiny_bert_dir, model)
    (model / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors file" * 10)
    _fails(["--model", str(model), "--out", str(tmp_path / "out")], capsys, "cannot load the weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt"]


def test_weights_not_matching_config(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "mismatch"
    shutil.copytree(tiny_bert_dir, model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["num_hidden_layers"] = 3  # layer 2 has no weights: transformers would init it randomly
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    _fails(["--model", str(model), "--out", str(tmp_path / "out")], capsys, "do not match its config.json")
    assert not (tmp_path / "out").exists()


def test_weights_of_another_shape_than_the_config(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "reshaped"
    shutil.copytree(tiny_bert_dir, model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["intermediate_size"] = 100  # the saved feed-forward weights are 4 x hidden wide
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    _fails(["--model", str(model), "--out", str(tmp_path / "out")], capsys,
           "intermediate.dense.bias has shape (256,), the config asks for (100,)")
    assert not (tmp_path / "out").exists()


def test_existing_out_without_force(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    _fails(["--model", str(tiny_bert_dir), "--out", str(out)], capsys, "already exists (pass --force")
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_unwritable_out(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    _fails(["--model", str(tiny_bert_dir), "--out", str(blocker / "out")], capsys, "cannot write output")
    _fails(["--model", str(tiny_bert_dir), "--out", str(blocker), "--force"], capsys, "is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("length", ["0", "-3", "129"])
def test_invalid_max_seq_length(tiny_bert_dir: Path, tmp_path: Path, capsys, length: str) -> None:
    out = tmp_path / "out"
    _fails(["--model", str(tiny_bert_dir), "--out", str(out), "--max-seq-length", length], capsys, "invalid --max-seq-length")
    assert not out.exists()


def test_force_replaces_existing_artifact(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nested" / "out"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old", encoding="utf-8")
    assert main(["export", "--model", str(tiny_bert_dir), "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging/old dirs left
    err = capsys.readouterr().err.splitlines()
    steps = [line.split()[2] for line in err if line.startswith("zeroembed export: ")]
    assert steps[:3] == ["load", "export", "fuse"] and "validate" in steps and "write" in steps


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from zeroembed.cli import main\n"
        "import zeroembed.export\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['export', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules and 'onnx' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unfused_attention_is_refused(tiny_bert_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from zeroembed.export import torch_model

    # transformers' SDPA attention traces to a pattern ORT's optimizer does not fuse.
    monkeypatch.setattr(torch_model, "ATTN_IMPLEMENTATION", "sdpa")
    out = tmp_path / "out"
    assert main(["export", "--model", str(tiny_bert_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zeroembed export: error: attention fusion failed: 0 fused attention nodes for 2")
    assert list(tmp_path.iterdir()) == []


def test_default_model_by_name_and_unknown_precision(tmp_path: Path) -> None:
    from zeroembed.export import ExportError, export_model
    from zeroembed.export.source import resolve_source

    assert resolve_source("all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    with pytest.raises(ExportError, match="invalid precision 'int4'"):
        export_model(None, tmp_path / "out", precision="int4")
    assert list(tmp_path.iterdir()) == []


def _st_dir(path: Path, tiny_bert_dir: Path) -> Path:
    shutil.copytree(tiny_bert_dir, path)
    return path


def _add_dense(model: Path, in_features: int) -> None:
    modules = json.loads((model / "modules.json").read_text(encoding="utf-8"))
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (model / "2_Dense").mkdir()
    (model / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": in_features, "out_features": 8}), encoding="utf-8")
    (model / "2_Dense" / "model.safetensors").write_bytes(b"")


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        ("unknown-architecture", "unsupported architecture 'gpt_neo' in"),
        ("unknown-module", "'sentence_transformers.models.WordWeights' module, which the exporter cannot reproduce "
                           "(it knows Transformer, Pooling, Dense, Normalize)"),
        ("no-tokenizer", "no tokenizer in"),
        ("no-weights", "no weights in"),
        ("dense-in-features", "has in_features 48 but its input is 64-wide"),
    ],
)
def test_bad_model_folder_fails_in_one_line_before_torch(tiny_bert_dir: Path, tmp_path: Path, breakage: str,
                                                         fragment: str) -> None:
    model = _st_dir(tmp_path / "model", tiny_bert_dir)
    if breakage == "unknown-architecture":
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        (model / "config.json").write_text(json.dumps(config | {"model_type": "gpt_neo"}), encoding="utf-8")
    elif breakage == "unknown-module":
        modules = json.loads((model / "modules.json").read_text(encoding="utf-8"))
        modules.insert(1, {"idx": 1, "name": "1", "path": "1_WordWeights",
                           "type": "sentence_transformers.models.WordWeights"})
        (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    elif breakage == "no-tokenizer":
        (model / "vocab.txt").unlink()
    elif breakage == "no-weights":
        (model / "model.safetensors").unlink()
    else:
        _add_dense(model, in_features=48)
    code = (
        "import sys\n"
        "from zeroembed.cli import main\n"
        f"code = main(['export', '--model', {str(model)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'loaded before failing'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zeroembed export: error: "), lines
    assert fragment in lines[0]
    assert not (tmp_path / "out").exists()


def test_allow_unfused_exports_and_records_it(tiny_bert_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from zeroembed.export import Manifest, torch_model

    monkeypatch.setattr(torch_model, "ATTN_IMPLEMENTATION", "sdpa")  # a pattern ORT's optimizer does not fuse
    out = tmp_path / "out"
    assert main(["export", "--model", str(tiny_bert_dir), "--out", str(out), "--allow-unfused"]) == 0
    manifest = Manifest.read(out)
    assert manifest.fused_attention is False and "Attention" not in manifest.fused_operators
    assert manifest.parity.passed
    err = capsys.readouterr().err
    assert "attention NOT fused (0 fused nodes for 2 layers): exporting anyway (--allow-unfused)" in err
