"""The embedded engine end to end on the default model: the server's vectors, every id once, faults survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import ENCODINGS, assert_matches, prompt_tokens, read_vectors, write_jsonl

pytest.importorskip("pyarrow")

from zeroembed.bulk.embedded import EmbeddedEngine, EmbeddedOptions  # noqa: E402
from zeroembed.bulk.inputs import Columns  # noqa: E402
from zeroembed.bulk.job import JobSpec, run_job  # noqa: E402
from zeroembed.bulk.progress import Progress  # noqa: E402
from zeroembed.cli import main  # noqa: E402


def _corpus(tmp_path: Path, texts: list[str]) -> tuple[Path, list[str]]:
    ids = [f"doc-{i}" for i in range(len(texts))]
    return write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "text": t} for i, t in zip(ids, texts)]), ids


def test_cli_embeds_a_corpus_like_the_server(default_artifact: Path, bulk_texts, bulk_reference, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    from zeroembed.server.launch import ServerProcess

    path, ids = _corpus(tmp_path, bulk_texts)
    out = tmp_path / "vectors"
    assert main(["embed", str(path), "--model", str(default_artifact), "--out", str(out),
                 "--rows-per-shard", "20"]) == 0
    assert f"embedded {len(ids)} texts" in capsys.readouterr().err
    assert_matches(out, ids, *bulk_reference)
    manifest = json.loads((out / "manifest.json").read_text())
    artifact_manifest = json.loads((default_artifact / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["counts"] == {"rows": len(ids), "tokens": int(bulk_reference[1].sum()), "shards": 3,
                                  "shards_planned": 3}
    assert manifest["model"]["sha256"] == artifact_manifest["model_sha256"]
    assert (manifest["model"]["dim"], manifest["model"]["precision"], manifest["model"]["pooling"]) == \
        (384, "fp32", "mean")
    assert manifest["inputs"]["files"][0]["rows"] == len(ids) and manifest["rows_per_shard"] == 20
    assert manifest["runs"][0]["texts_per_s"] > 0 and manifest["runs"][0]["error"] is None
    # The server's own answer for the same texts.
    got = read_vectors(out)
    with ServerProcess(default_artifact) as server, server.client() as client:
        served = np.asarray(client.encode(bulk_texts[:8]))
    for key, vector in zip(ids[:8], served):
        assert float(got[key][0] @ vector) >= 0.9999 * float(np.linalg.norm(got[key][0]) * np.linalg.norm(vector))
    # Done already: a second run writes nothing and says so.
    assert main(["embed", str(path), "--model", str(default_artifact), "--out", str(out),
                 "--rows-per-shard", "20"]) == 0
    assert "embedded 0 texts" in capsys.readouterr().err
    # Other inputs into the same folder: refused before any work.
    write_jsonl(path, [{"id": "new", "text": "a different corpus"}])
    assert main(["embed", str(path), "--model", str(default_artifact), "--out", str(out), "--quiet"]) == 2
    assert "different inputs" in capsys.readouterr().err


def test_a_worker_killed_mid_job_loses_and_repeats_nothing(default_artifact: Path, bulk_texts, bulk_reference,
                                                           tmp_path: Path) -> None:
    from zeroembed.server.artifact import open_artifact

    path, ids = _corpus(tmp_path, bulk_texts)
    engine = EmbeddedEngine(open_artifact(default_artifact),
                            EmbeddedOptions(device="cpu", workers=2, threads_per_worker=1, batch_size=4))

    class KillAfterFirstBatch(Progress):
        killed: int | None = None

        def update(self, rows: int, tokens: int) -> None:
            super().update(rows, tokens)
            if self.killed is None:
                self.killed = engine.worker_pids()[0]
                os.kill(self.killed, signal.SIGKILL)

    progress = KillAfterFirstBatch(len(ids), quiet=True)
    spec = JobSpec([str(path)], tmp_path / "out", Columns(), rows_per_shard=16, quiet=True)
    summary = run_job(spec, open_artifact(default_artifact), engine, progress=progress)
    assert progress.killed is not None and engine.worker_restarts == 1
    assert summary.rows == len(ids)
    assert_matches(tmp_path / "out", ids, *bulk_reference)


def test_a_killed_job_resumes_where_it_stopped(default_artifact: Path, bulk_texts, bulk_reference,
                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, ids = _corpus(tmp_path, bulk_texts)
    out = tmp_path / "out"
    command = ["embed", str(path), "--model", str(default_artifact), "--out", str(out), "--rows-per-shard", "4",
               "--workers", "1"]
    job = subprocess.Popen([sys.executable, "-m", "zeroembed.cli", *command, "--quiet"])
    try:
        deadline = time.monotonic() + 180
        while not _recorded_shards(out):  # the first shard recorded: kill it mid-job
            assert job.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no shard was written in time"
            time.sleep(0.02)
    finally:
        job.kill()
        job.wait(30)
    first = _recorded_shards(out)
    assert 0 < len(first) < 12
    assert main(command) == 0
    assert f"{len(first)} already complete" in capsys.readouterr().err
    assert_matches(out, ids, *bulk_reference)
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]


def _recorded_shards(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())["shards"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_prompts_and_dimensions_give_the_servers_vectors(encoding: str, prompt_artifact: Path, prompt_served,
                                                         bulk_texts, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    _options, flags, prompt = ENCODINGS[encoding]
    path, ids = _corpus(tmp_path, bulk_texts)
    out = tmp_path / "vectors"
    command = ["embed", str(path), "--model", str(prompt_artifact), "--out", str(out), "--quiet", "--workers", "2",
               "--rows-per-shard", "20", *flags]
    assert main(command) == 0
    served = prompt_served[encoding]
    assert_matches(out, ids, served, prompt_tokens(prompt_artifact, bulk_texts, prompt))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedding"] == {"dim": served.shape[1], "dimensions": 16 if "--dimensions" in flags else None,
                                     "prompt": prompt}
    # The same folder with other options is another job's: refused before any work, naming what differs.
    other = ["--dimensions", "8"] if "--dimensions" not in flags else ["--prompt-name", "query"]
    assert main(command[:-len(flags) or None] + other) == 2
    assert "different embedding" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["shards"] == manifest["shards"]
