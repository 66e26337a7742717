"""Opening an artifact: every manifest the server cannot serve is refused with a message naming why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zeroembed.server.artifact import ArtifactError, open_artifact


@pytest.fixture
def copy(default_artifact: Path, tmp_path: Path):
    def edit(**changes) -> Path:
        target = tmp_path / "artifact"
        shutil.copytree(default_artifact, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest.update(changes)
        (target / "manifest.json").write_text(json.dumps(manifest))
        return target
    return edit


def test_the_exported_artifact_opens(default_artifact):
    artifact = open_artifact(default_artifact)
    assert artifact.model_path.is_file() and artifact.tokenizer_path.is_file()
    assert artifact.manifest.inputs == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(("changes", "needle"), [
    ({"format_version": 2}, "artifact format 2; this server reads format 1"),
    ({"inputs": ["input_ids"]}, "model inputs lack ['attention_mask']"),
    ({"inputs": ["input_ids", "attention_mask", "position_ids"]}, "model inputs ['position_ids'] are not ones"),
    ({"outputs": ["sentence_embedding"]}, "model outputs lack ['token_embeddings']"),
    ({"pooling": "weighted"}, "pooling"),
])
def test_unservable_manifests_are_refused_by_name(copy, changes, needle):
    with pytest.raises(ArtifactError) as caught:
        open_artifact(copy(**changes))
    assert needle in str(caught.value)


def test_token_type_ids_are_an_input_the_server_fills(copy):
    artifact = open_artifact(copy(inputs=["input_ids", "attention_mask", "token_type_ids"]))
    assert "token_type_ids" in artifact.manifest.inputs
