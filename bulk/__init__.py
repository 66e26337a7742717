"""Bulk embedding: ``zeroembed embed`` turns a corpus into Parquet shards of vectors (docs/bulk.md).

Two engines behind one job: the embedded one runs the server's own worker
processes on this machine; the Ray one maps batches over a Ray actor pool.
Both read the same inputs, cut the same shards and write them the same way,
so a job resumes under either and yields the same vectors.
"""
