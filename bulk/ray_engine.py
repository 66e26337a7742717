"""The Ray engine: Ray Data reads the shards, an actor pool embeds them, the driver writes them.

The pipeline is Ray Data's documented one for batch inference: a read (one
read task per shard still to do, so a cluster reads in parallel), then
``map_batches`` over an actor pool where each actor holds one ONNX Runtime
session of the artifact (the server's :class:`EncoderRuntime`) and the
artifact's tokenizer, with ``num_gpus=1`` per actor when the model runs on
CUDA. Ray restarts an actor that dies and retries its batch.

The vectors come back to the driver, which writes the shards itself through
the same :class:`~zeroembed.bulk.output.OutputDir` as the embedded engine:
a shard is renamed into place and recorded only when whole, so a job is
exactly once and resumable under either engine, and the output folder only
has to exist where the driver runs. (Ray's own ``write_parquet`` names files
by block, which a resumed job could not match to shards.) A vector is
1.5 kB at 384 dimensions: the driver's link carries tens of thousands a
second before it limits a cluster (docs/bulk.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .assembly import ShardAssembler
from .encoding import Encoding
from .errors import EngineError
from .progress import Progress
from .rows import read_range
from .scan import Corpus

log = logging.getLogger(__name__)

SENTENCE = "sentence_embedding"


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine runs. ``address`` None starts a local Ray (with ``init_kwargs``); else joins it."""

    address: str | None = None
    device: str = "cpu"
    actors: int = 0  # 0: one per GPU on CUDA, one per CPU otherwise
    batch_size: int = 0  # rows per map_batches batch; 0: 256 on CPU, 1024 on CUDA
    threads_per_actor: int = 1  # ONNX Runtime threads per CPU actor
    model_batch: int = 0  # texts per model run inside an actor; 0: the server's default for the device
    init_kwargs: dict[str, Any] = field(default_factory=dict)


class Embedder:
    """One Ray actor: the artifact's model and tokenizer, mapping a batch of rows to their vectors.

    Rows are sorted by length within the batch and run a model batch at a time, so padding stays low.
    ``encoding`` (the job's resolved :class:`~zeroembed.bulk.encoding.Encoding`) puts its prompt before
    each text and cuts each vector to its dimensions.
    """

    def __init__(self, artifact_dir: str, device: str, threads: int, model_batch: int,
                 encoding: Encoding = Encoding()) -> None:
        from zeroembed.server.artifact import open_artifact
        from zeroembed.server.core.tokenization import TextTokenizer
        from zeroembed.server.workers.int8_kernel import check_int8_here
        from zeroembed.server.workers.runtime import EncoderRuntime

        artifact = open_artifact(artifact_dir)
        # This actor's machine may not be the driver's: refuse an int8 artifact its CPU would spoil (StartupError).
        check_int8_here(artifact.name, artifact.manifest, device)
        self.runtime = EncoderRuntime(artifact.model_path, device=device, threads=threads,
                                      inputs=artifact.manifest.inputs)
        self.tokenizer = TextTokenizer(artifact.tokenizer_path, artifact.manifest.max_seq_length)
        self.model_batch = model_batch
        self.encoding = encoding
        self.dim = encoding.dim or artifact.manifest.hidden_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        encoding = self.encoding
        tokenized = self.tokenizer.encode(encoding.texts(batch.column("text").to_pylist()))
        lengths = tokenized.lengths.astype(np.int32)
        offsets = tokenized.offsets
        vectors = np.empty((len(lengths), self.dim), np.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.model_batch):
            rows = order[start:start + self.model_batch]
            ids = np.concatenate([tokenized.ids[offsets[r]:offsets[r + 1]] for r in rows])
            prompt_lengths = np.full(len(rows), encoding.prompt_length, np.int64)
            out = self.runtime.run(ids, lengths[rows], [SENTENCE], prompt_lengths=prompt_lengths)[SENTENCE]
            vectors[rows] = encoding.cut(out)
        columns = {"position": batch.column("position"),
                   "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
                   "num_tokens": pa.array(lengths)}
        if "id" in batch.column_names:
            columns["id"] = batch.column("id")
        return pa.table(columns)


def _shard_source(corpus: Corpus, shards: list[tuple[int, int]]):
    """A Ray Data datasource with one read task per shard: rows as ``position``, ``text`` and ``id``."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read(start: int, stop: int):
        for rows in read_range(corpus, start, stop):
            columns = {"position": pa.array(np.arange(rows.first, rows.first + len(rows), dtype=np.int64)),
                       "text": rows.texts}
            if rows.ids is not None:
                columns["id"] = rows.ids
            yield pa.table(columns)

    class ShardSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context=None) -> list:
            return [ReadTask(lambda start=start, stop=stop: read(start, stop),
                             BlockMetadata(num_rows=stop - start, size_bytes=None, input_files=None,
                                           exec_stats=None))
                    for start, stop in shards]

        def get_name(self) -> str:
            return "ZeroembedShards"

    return ShardSource()


class RayEngine:
    """Embeds rows with Ray Data: read tasks per shard, ``map_batches`` over an actor pool of :class:`Embedder`."""

    name = "ray"

    def __init__(self, artifact, options: RayOptions = RayOptions(), *, embedder: type = Embedder) -> None:
        self.artifact = artifact
        self.options = options
        self.device = options.device
        self.embedder = embedder  # tests pass a subclass that dies once, to check Ray's retry

    def run(self, corpus: Corpus, ranges: list[tuple[int, int]], assembler: ShardAssembler,
            progress: Progress, encoding: Encoding = Encoding()) -> None:
        """Embed the rows at the positions in ``ranges`` as ``encoding`` says; every vector goes to ``assembler``."""
        import ray
        import ray.data

        started_here = not ray.is_initialized()
        if started_here:
            init = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                    **self.options.init_kwargs}
            try:
                ray.init(address=self.options.address, **init)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.options.address or "a local Ray"
                raise EngineError(f"could not start or join {where}: {exc}") from None
        try:
            self._run(ray, corpus, ranges, assembler, progress, encoding)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, corpus: Corpus, ranges, assembler: ShardAssembler, progress: Progress,
             encoding: Encoding) -> None:
        from ray.data.context import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # ours shows the job's progress
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and timings, every run
        options, cuda = self.options, self.device == "cuda"
        resources = ray.cluster_resources()
        threads = 1 if cuda else max(1, options.threads_per_actor)
        actors = options.actors or max(1, int(resources.get("GPU", 0)) if cuda
                                       else int(resources.get("CPU", 1)) // threads)
        batch_size = options.batch_size or (1024 if cuda else 256)
        model_batch = options.model_batch or (256 if cuda else 8)  # the server's max_batch_size per device
        shards = [assembler.plan.bounds(k) for start, stop in ranges
                  for k in range(start // assembler.plan.rows_per_shard,
                                 -(-stop // assembler.plan.rows_per_shard))]
        # Reads take no CPU slot: they are light, and the actors hold every slot of a small local Ray.
        dataset = ray.data.read_datasource(_shard_source(corpus, shards), num_cpus=0)
        dataset = dataset.map_batches(
            self.embedder, fn_constructor_kwargs={"artifact_dir": str(Path(self.artifact.path).resolve()),
                                                  "device": self.device, "threads": threads,
                                                  "model_batch": model_batch, "encoding": encoding},
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if cuda else 0, num_cpus=1 if cuda else threads)
        dim = assembler.dim
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                positions = batch.column("position").to_numpy()
                vectors = batch.column("embedding").combine_chunks().values.to_numpy().reshape(-1, dim)
                tokens = batch.column("num_tokens").to_numpy()
                ids = (batch.column("id").to_numpy() if "id" in batch.column_names else None)
                assembler.add(positions, vectors, tokens, ids)
                progress.update(len(positions), int(tokens.sum()))
        except ray.exceptions.RayError as exc:  # a read or a batch failed past Ray's retries
            cause = getattr(exc, "cause", None) or exc
            message = " ".join(str(cause).split()) or type(cause).__name__
            raise EngineError(f"the Ray job failed: {message[:500]}; run the same command again to resume") \
                from None

