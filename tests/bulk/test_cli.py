"""``zeroembed embed``'s errors: one line naming the problem, the right exit code, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import write_jsonl

pytest.importorskip("pyarrow")

from zeroembed.cli import main  # noqa: E402


def _embed(*args: str) -> int:
    return main(["embed", *args, "--model", "/nonexistent-model", "--quiet"])


def test_duplicate_ids_stop_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}])
    assert _embed(str(path), "--out", str(tmp_path / "out")) == 2
    assert "appear more than once in column 'id': 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_column_is_named_with_the_ones_present(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"key": 1, "body": "a"}])
    assert _embed(str(path), "--out", str(tmp_path / "out"), "--text-column", "content") == 2
    err = capsys.readouterr().err
    assert err.startswith("zeroembed embed: error:") and "no text column 'content' (its columns: key, body)" in err
    assert not (tmp_path / "out").exists()


def test_empty_input_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert _embed(str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "out")) == 2
    assert "no rows" in capsys.readouterr().err


def test_ray_without_ray_installed_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert _embed(str(path), "--out", str(tmp_path / "out"), "--ray") == 2
    assert "pip install 'zeroembed[ray]'" in capsys.readouterr().err


def test_a_bad_model_is_an_error_after_the_inputs_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert _embed(str(path), "--out", str(tmp_path / "out")) == 2
    assert "/nonexistent-model is not a directory" in capsys.readouterr().err


def test_an_unreadable_file_is_named_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}])
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"PAR1 but not really")
    assert _embed(str(good), str(bad), "--out", str(tmp_path / "out")) == 2
    assert f"cannot read input {bad}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_input_taken_as_the_ray_address_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    assert main(["embed", str(a), "--ray", str(b), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "write the inputs before --ray" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--prompt-name", "nope"], "--prompt-name: 'nope' is not one of this model's prompts "
                                 "['document', 'passage', 'query']"),  # sentence-transformers adds an empty 'document'
    (["--dimensions", "33"], "--dimensions must be at most 32 (this model's size), got 33"),
    (["--dimensions", "0"], "--dimensions must be at least 1, got 0"),
])
def test_bad_prompt_or_dimensions_are_refused_before_any_work(flags: list[str], message: str, prompt_artifact: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert main(["embed", str(path), "--out", str(tmp_path / "out"), "--model", str(prompt_artifact), "--quiet",
                 *flags]) == 2
    assert capsys.readouterr().err == f"zeroembed embed: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_a_prompt_name_for_a_model_without_prompts_says_so(default_artifact: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert main(["embed", str(path), "--out", str(tmp_path / "out"), "--model", str(default_artifact), "--quiet",
                 "--prompt-name", "query"]) == 2
    assert "--prompt-name: this model has no named prompts; send a literal --prompt instead" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_int8_artifact_this_cpu_would_spoil_is_refused(tmp_path: Path, full_range_int8_artifact: Path,
                                                          monkeypatch, capsys: pytest.CaptureFixture) -> None:
    from zeroembed.server.workers import int8_kernel

    monkeypatch.setattr(int8_kernel, "u8s8_products_exact", lambda: False)  # a CPU without VNNI
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    code = main(["embed", str(path), "--out", str(tmp_path / "out"), "--model", str(full_range_int8_artifact),
                 "--device", "cpu", "--quiet"])
    assert code == 2
    assert "this int8 artifact's weights use the full int8 range" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
