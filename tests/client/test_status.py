"""``zeroembed status`` against the fake server: exit codes for probes, text for people, JSON for tools."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zeroembed.cli import main
from zeroembed.client.protocol import encode_reply

HEALTHY = {
    "version": "0.1.0", "model": {"name": "all-MiniLM-L6-v2", "path": "/models/model"}, "dim": 384,
    "precision": "fp16", "max_seq_length": 256, "device": "cuda",
    "workers": [{"index": 0, "pid": 11, "provider": "CUDAExecutionProvider", "ready": True, "busy": True},
                {"index": 1, "pid": 12, "provider": "CUDAExecutionProvider", "ready": True, "busy": False}],
    "worker_restarts": 1, "queue_depth": 7, "in_flight_requests": 2, "uptime_s": 3725.5, "accepting": True,
    "curve": False, "pid": 10,
}


def scripted(server, status: dict) -> None:
    server.actions.append(lambda request: encode_reply(request.id, status=status))


def test_healthy_prints_a_summary(server, capsys):
    scripted(server, HEALTHY)
    assert main(["status", "--endpoint", server.endpoint, "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    for piece in ["all-MiniLM-L6-v2", "dim 384", "cuda", "2/2 ready, 1 busy", "CUDAExecutionProvider",
                  "7 texts queued", "1h02m05s", "restarts 1", "health    ok"]:
        assert piece in out, (piece, out)


def test_quiet_and_json(server, capsys):
    scripted(server, HEALTHY)
    assert main(["status", "--endpoint", server.endpoint, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    scripted(server, HEALTHY)
    assert main(["status", "--endpoint", server.endpoint, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"] is True and status["problems"] == [] and status["dim"] == 384


@pytest.mark.parametrize(("change", "problem"), [
    ({"accepting": False}, "not accepting"),
    ({"workers": [{**HEALTHY["workers"][0], "ready": False}, HEALTHY["workers"][1]]}, "1 of 2 workers ready"),
    ({"workers": []}, "no workers"),
])
def test_unhealthy_exits_1_and_says_why(server, capsys, change, problem):
    scripted(server, {**HEALTHY, **change})
    assert main(["status", "--endpoint", server.endpoint]) == 1
    assert problem in capsys.readouterr().out
    scripted(server, {**HEALTHY, **change})
    assert main(["status", "--endpoint", server.endpoint, "--quiet"]) == 1  # a probe's log still says why
    assert problem in capsys.readouterr().out


def test_down_is_one_clear_line(dead_endpoint, capsys):
    assert main(["status", "--endpoint", dead_endpoint, "--timeout", "0.2"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [f"zeroembed status: DOWN: no reply from {dead_endpoint} within 0.2 s"]


def test_endpoint_follows_zeroembed_port(server, monkeypatch, capsys):
    monkeypatch.setenv("ZEROEMBED_PORT", server.endpoint.rsplit(":", 1)[1])
    scripted(server, HEALTHY)
    assert main(["status", "--quiet"]) == 0
    monkeypatch.setenv("ZEROEMBED_STATUS_ENDPOINT", "tcp://127.0.0.1:1")
    assert main(["status", "--timeout", "0.2"]) == 1
    assert "tcp://127.0.0.1:1 " in capsys.readouterr().err


def test_bad_key_file_is_a_usage_error(tmp_path, capsys):
    assert main(["status", "--server-key", str(tmp_path / "nope.key"), "--client-key", str(tmp_path / "x")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_imports_nothing_from_the_server():
    code = ("import sys, zeroembed.client.status as m, argparse; p = argparse.ArgumentParser(); "
            "m.register(p.add_subparsers()); "
            "assert not [n for n in sys.modules if n.startswith('zeroembed.server')], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_several_models_are_listed_and_each_ones_workers_count():
    from zeroembed.client.status import problems, summary

    ranker = {"name": "rerank", "task": "rerank", "dim": 32, "precision": "fp32", "queue_depth": 0,
              "workers": [{"ready": False}]}
    status = {**HEALTHY, "name": "all-MiniLM-L6-v2", "task": "embed",
              "models": [{**HEALTHY, "name": "all-MiniLM-L6-v2", "task": "embed"}, ranker]}
    assert problems(status) == ["model rerank: 0 of 1 workers ready"]
    text = summary(status, "tcp://x:1")
    assert "(default) · embed" in text and "· rerank: rerank · dim 32 · fp32" in text
    ranker["workers"] = [{"ready": True}]
    assert problems(status) == []
