"""A short soak: steady load on a real server; memory must level off after the warm-up."""

from __future__ import annotations

import io

from zeroembed.benchmarks.soak import soak

from ..server.servers import start_server


def test_short_soak_memory_levels_off(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--workers", "1")
    try:
        out = io.StringIO()
        report = soak(server.endpoint, duration_s=16, clients=3, texts_per_request=8, interval_s=2, out=out)
    finally:
        assert server.stop() == 0, server.log()
    assert report.total_requests > 0 and not report.errors
    assert len(report.samples) >= 6 and out.getvalue().count("\n") == len(report.samples)
    # The broker must not keep growing under steady load (tokenizer/ORT arenas settle during warm-up).
    assert report.growth_mib("broker", warmup_s=6) < 15, report.samples
    assert report.growth_mib("worker0", warmup_s=6) < 40, report.samples
