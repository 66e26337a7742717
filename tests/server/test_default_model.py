"""The default model's cache: exported once, and again when an older exporter made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zeroembed.export
from zeroembed.export.manifest import EXPORTER_REVISION
from zeroembed.server.default_model import default_artifact

TARGET = "all-MiniLM-L6-v2-fp32"


@pytest.fixture
def exports(monkeypatch) -> list[dict]:
    """Calls of export_model, recorded instead of run (a real export takes half a minute)."""
    calls: list[dict] = []

    def fake_export(model, out, **kwargs):
        calls.append({"model": model, "out": Path(out), **kwargs})

    monkeypatch.setattr(zeroembed.export, "export_model", fake_export)
    return calls


def cache_with(tmp_path: Path, manifest: dict | str) -> Path:
    target = tmp_path / TARGET
    target.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (target / "manifest.json").write_text(text)
    return target


def test_an_empty_cache_is_exported_into(tmp_path, exports):
    assert default_artifact(tmp_path, "cpu") == tmp_path / TARGET
    assert [(c["model"], c["out"], c["precision"], c["force"]) for c in exports] == [
        (None, tmp_path / TARGET, "fp32", False)]


def test_a_current_export_is_served_as_it_is(tmp_path, exports):
    target = cache_with(tmp_path, {"exporter_revision": EXPORTER_REVISION})
    assert default_artifact(tmp_path, "cpu") == target
    assert exports == []


@pytest.mark.parametrize("manifest", [{}, {"exporter_revision": EXPORTER_REVISION - 1}, "{not json"],
                         ids=["before the field", "older", "unreadable"])
def test_an_older_export_is_replaced(tmp_path, exports, manifest):
    target = cache_with(tmp_path, manifest)
    assert default_artifact(tmp_path, "cpu") == target
    assert [(c["out"], c["force"]) for c in exports] == [(target, True)]


def test_the_older_export_still_serves_when_exporting_fails(tmp_path, monkeypatch, caplog):
    def failing_export(model, out, **kwargs):
        raise zeroembed.export.ExportError("exporting needs torch, which is not installed")

    monkeypatch.setattr(zeroembed.export, "export_model", failing_export)
    target = cache_with(tmp_path, {"exporter_revision": EXPORTER_REVISION - 1})
    assert default_artifact(tmp_path, "cpu") == target
    assert "serving the cached one" in caplog.text and "torch" in caplog.text


@pytest.mark.parametrize("exact, exported", [(False, True), (True, False)], ids=["saturating CPU", "VNNI CPU"])
def test_a_full_range_int8_export_is_made_again_where_the_kernel_saturates(tmp_path, exports, monkeypatch, exact,
                                                                           exported):
    import zeroembed.server.workers.int8_kernel as int8_kernel

    monkeypatch.setattr(int8_kernel, "u8s8_products_exact", lambda: exact)
    target = tmp_path / "all-MiniLM-L6-v2-int8"
    target.mkdir()
    (target / "manifest.json").write_text(json.dumps({"exporter_revision": EXPORTER_REVISION,
                                                      "quantization": {"full_range_weights": True}}))
    lines: list[str] = []
    assert default_artifact(tmp_path, "cpu", "int8", progress=lines.append) == target
    assert [(c["out"], c["precision"], c["force"]) for c in exports] == ([(target, "int8", True)] if exported else [])
    assert any("cannot sum exactly" in line for line in lines) is exported
