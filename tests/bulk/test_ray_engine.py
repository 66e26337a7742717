"""The Ray engine on a small local Ray: the same vectors as the runtime, and an actor killed mid-job survived."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .conftest import ENCODINGS, assert_matches, prompt_tokens, write_parquet

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from zeroembed.bulk.inputs import Columns  # noqa: E402
from zeroembed.bulk.job import JobSpec, run_job  # noqa: E402
from zeroembed.bulk.ray_engine import Embedder, RayEngine, RayOptions  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module: starting one is most of these tests' time."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors run DiesOnce from this file
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class DiesOnce(Embedder):
    """An actor that kills its own process in its first batch, the first time any actor of the job gets one."""

    marker = ""

    def __call__(self, batch):
        try:
            os.rename(self.marker, f"{self.marker}.taken")  # atomic: one actor wins
        except FileNotFoundError:
            return super().__call__(batch)
        os._exit(1)


def _options() -> RayOptions:
    return RayOptions(device="cpu", actors=2, batch_size=8)


def test_ray_engine_embeds_like_the_runtime(local_ray, default_artifact: Path, bulk_texts, bulk_reference,
                                            tmp_path: Path) -> None:
    from zeroembed.server.artifact import open_artifact

    path = write_parquet(tmp_path / "corpus.parquet", [{"text": t} for t in bulk_texts])  # ids: positions
    spec = JobSpec([str(path)], tmp_path / "out", Columns(), rows_per_shard=20, quiet=True)
    summary = run_job(spec, open_artifact(default_artifact), RayEngine(open_artifact(default_artifact), _options()))
    assert summary.rows == len(bulk_texts) and summary.shards_written == 3
    assert_matches(tmp_path / "out", list(range(len(bulk_texts))), *bulk_reference)


def test_an_actor_killed_mid_job_is_restarted_and_its_batch_retried(local_ray, default_artifact: Path, bulk_texts,
                                                                    bulk_reference, tmp_path: Path) -> None:
    from zeroembed.server.artifact import open_artifact

    ids = [f"t{i}" for i in range(len(bulk_texts))]
    path = write_parquet(tmp_path / "corpus.parquet", [{"id": i, "text": t} for i, t in zip(ids, bulk_texts)])
    DiesOnce.marker = str(tmp_path / "kill-one-actor")
    Path(DiesOnce.marker).touch()
    spec = JobSpec([str(path)], tmp_path / "out", Columns(), rows_per_shard=16, quiet=True)
    engine = RayEngine(open_artifact(default_artifact), _options(), embedder=DiesOnce)
    run_job(spec, open_artifact(default_artifact), engine)
    assert Path(f"{DiesOnce.marker}.taken").exists()  # an actor did die
    assert_matches(tmp_path / "out", ids, *bulk_reference)


def test_ray_engine_gives_the_servers_vectors_with_prompts_and_dimensions(local_ray, prompt_artifact: Path,
                                                                         prompt_served, bulk_texts,
                                                                         tmp_path: Path) -> None:
    from zeroembed.server.artifact import open_artifact

    path = write_parquet(tmp_path / "corpus.parquet", [{"text": t} for t in bulk_texts])
    artifact = open_artifact(prompt_artifact)
    for encoding, (options, _flags, prompt) in ENCODINGS.items():
        out = tmp_path / encoding
        spec = JobSpec([str(path)], out, Columns(), rows_per_shard=20, quiet=True, **options)
        run_job(spec, artifact, RayEngine(artifact, _options()))
        assert_matches(out, list(range(len(bulk_texts))), prompt_served[encoding],
                       prompt_tokens(prompt_artifact, bulk_texts, prompt))


def test_an_actor_refuses_an_int8_artifact_its_cpu_would_spoil(full_range_int8_artifact: Path, monkeypatch):
    # An actor may run on another machine than the job's driver: it checks its own CPU's int8 kernel.
    from zeroembed.server.errors import StartupError
    from zeroembed.server.workers import int8_kernel

    monkeypatch.setattr(int8_kernel, "u8s8_products_exact", lambda: False)
    with pytest.raises(StartupError, match="full int8 range"):
        Embedder(str(full_range_int8_artifact), "cpu", 1, 8)
