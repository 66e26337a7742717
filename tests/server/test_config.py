"""Settings: flags over ZEROEMBED_* variables over defaults, device defaults, clear errors."""

from __future__ import annotations

import pytest

from zeroembed.server.config import SettingsError, load_settings


def test_defaults_bind_loopback_and_fill_cpu_values(monkeypatch):
    settings = load_settings(device="cpu")
    assert settings.bind == "127.0.0.1"
    assert settings.endpoint == "tcp://127.0.0.1:5555"
    assert settings.device == "cpu"
    assert settings.workers >= 1 and settings.threads_per_worker >= 1
    # The CPU default is small batches, not a GPU-sized one.
    assert settings.max_batch_size <= 32


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("ZEROEMBED_PORT", "6000")
    monkeypatch.setenv("ZEROEMBED_MAX_BATCH_TOKENS", "4096")
    settings = load_settings(device="cpu")
    assert settings.port == 6000 and settings.max_batch_tokens == 4096
    assert load_settings(device="cpu", port=7000, max_batch_tokens=None).port == 7000


def test_auto_device_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr("zeroembed.server.config.cuda_available", lambda: False)
    assert load_settings().device == "cpu"


def test_cuda_defaults(monkeypatch):
    settings = load_settings(device="cuda")
    assert settings.max_batch_size >= 64 and settings.threads_per_worker == 1
    assert settings.parallel_batches == 1  # the GPU serializes runs anyway


@pytest.mark.parametrize(("cores", "workers", "threads", "parallel"), [(2, 0, 2, 2), (8, 0, 8, 8), (8, 2, 4, 4)])
def test_cpu_runs_as_many_batches_side_by_side_as_a_worker_has_threads(monkeypatch, cores, workers, threads,
                                                                       parallel):
    monkeypatch.setattr("zeroembed.server.config.cpu_count", lambda: cores)
    settings = load_settings(device="cpu", workers=workers or None)
    assert (settings.threads_per_worker, settings.parallel_batches) == (threads, parallel)
    assert load_settings(device="cpu", threads_per_worker=3).parallel_batches == 3
    assert load_settings(device="cpu", parallel_batches=1).parallel_batches == 1


@pytest.mark.parametrize(
    ("overrides", "env", "needle"),
    [
        ({"port": 0}, {}, "--port"),
        ({"port": 70000}, {}, "--port"),
        ({}, {"ZEROEMBED_WORKERS": "many"}, "ZEROEMBED_WORKERS"),
        ({"device": "tpu"}, {}, "--device"),
        ({"batch_wait_ms": -1}, {}, "--batch-wait-ms"),
        ({"port": 9100, "metrics_port": 9100}, {}, "different ports"),
        ({"no_such_option": 1}, {}, "no-such-option"),
    ],
)
def test_invalid_values_stop_with_a_clear_message(monkeypatch, overrides, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=needle.replace("-", r"\-")):
        load_settings(**overrides)


def test_settings_are_frozen():
    settings = load_settings(device="cpu")
    with pytest.raises(Exception):
        settings.port = 1


def test_unknown_variable_is_an_error_not_ignored(monkeypatch):
    monkeypatch.setenv("ZEROEMBED_MAX_PADDING", "0.2")  # retired: now --max-added-padding
    with pytest.raises(SettingsError, match="unknown setting ZEROEMBED_MAX_PADDING"):
        load_settings(device="cpu")
    monkeypatch.delenv("ZEROEMBED_MAX_PADDING")
    monkeypatch.setenv("ZEROEMBED_STATUS_ENDPOINT", "tcp://127.0.0.1:5555")  # `zeroembed status`'s, not ours
    monkeypatch.setenv("ZEROEMBED_MAX_ADDED_PADDING", "8")
    assert load_settings(device="cpu").max_added_padding == 8


def test_models_from_flags_and_from_the_variable(monkeypatch):
    settings = load_settings(device="cpu", model=["artifacts/minilm", "rerank=/srv/reranker"])
    assert [(name, str(path)) for name, path in settings.models] == [(None, "artifacts/minilm"),
                                                                      ("rerank", "/srv/reranker")]
    monkeypatch.setenv("ZEROEMBED_MODEL", "artifacts/minilm, rerank=/srv/reranker")
    assert load_settings(device="cpu").models == settings.models
    assert load_settings(device="cpu", model=["a=b"]).models[0][0] == "a"
    with pytest.raises(SettingsError, match="same name"):
        load_settings(device="cpu", model=["x=a", "x=b"])


@pytest.mark.parametrize(("models", "workers", "threads"), [(1, 0, 8), (2, 0, 8), (3, 0, 8), (2, 2, 4)])
def test_every_models_workers_may_use_every_core(monkeypatch, models, workers, threads):
    monkeypatch.setattr("zeroembed.server.config.cpu_count", lambda: 8)
    settings = load_settings(device="cpu", model=[f"m{i}=dir{i}" for i in range(models)], workers=workers)
    assert settings.threads_per_worker == threads
    assert load_settings(device="cpu", model=["a", "b=c"], threads_per_worker=8).threads_per_worker == 8


def test_the_api_key_from_a_flag_or_a_file(tmp_path):
    assert load_settings(device="cpu").http_api_key is None
    assert load_settings(device="cpu", api_key="k1").http_api_key == "k1"
    assert "k1" not in repr(load_settings(device="cpu", api_key="k1"))  # a secret: never in logs or errors
    (tmp_path / "key").write_text("k2\n")
    assert load_settings(device="cpu", api_key_file=tmp_path / "key").http_api_key == "k2"
    with pytest.raises(SettingsError, match="not both"):
        load_settings(device="cpu", api_key="k1", api_key_file=tmp_path / "key")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings(device="cpu", api_key_file=tmp_path / "empty")


def test_a_list_setting_is_a_repeatable_flag():
    import argparse

    from zeroembed.server.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "a", "--model", "rerank=b", "--api-key", "k"])
    assert args.model == ["a", "rerank=b"] and args.api_key == "k"
    assert parser.parse_args(["serve"]).model is None  # unset: falls through to ZEROEMBED_MODEL
