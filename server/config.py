"""Server settings: CLI flags and ``ZEROEMBED_*`` variables → one frozen pydantic object.

Precedence: a CLI flag beats its environment variable, which beats the default.
Defaults that depend on the hardware (workers, threads, batch sizes) are filled
in once, here, after the device is resolved; components never guess them again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["cpu", "cuda"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zeroembed"


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def cuda_available() -> bool:
    """True when ONNX Runtime has its CUDA provider *and* the machine shows an NVIDIA GPU.

    onnxruntime-gpu lists CUDAExecutionProvider whether or not a GPU exists, so
    the provider list alone is not enough.
    """
    try:
        import onnxruntime
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


_ENV_PREFIX = "ZEROEMBED_"
_CLIENT_ENV_PREFIX = "ZEROEMBED_STATUS_"  # `zeroembed status`'s own (client/status.py), not the server's


# Per-device defaults. On a CPU a batch's fixed cost is small next to the price of its
# padding (for a small model a batch is worth about ten tokens of work), so a text may
# add at most 4 padding tokens to a batch, and batches stay small (docs/decisions.md). A GPU has parallelism to spare for
# padding and a large fixed cost per run (kernel launches), so it pads freely.
_DEVICE_DEFAULTS: dict[Device, dict[str, int]] = {
    "cpu": {"workers": 1, "max_batch_size": 8, "max_batch_tokens": 2048, "max_added_padding": 4},
    "cuda": {"workers": 1, "max_batch_size": 256, "max_batch_tokens": 32768, "max_added_padding": 1024},
}


class Settings(BaseSettings):
    """Everything ``zeroembed serve`` can be told. Frozen once built."""

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, frozen=True, extra="forbid")

    # NoDecode: ZEROEMBED_MODEL is a comma-separated list, not JSON (split by _split_models).
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="a model to serve: an artifact directory (from `zeroembed export`), "
        "named after its source, or NAME=DIR; repeat it for several (the first is the default; "
        "ZEROEMBED_MODEL takes them comma-separated); the bundled default model if unset")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="where the default model is exported")
    bind: str = Field("127.0.0.1", min_length=1, description="address to bind the ZeroMQ and metrics ports")
    port: int = Field(5555, ge=1, le=65535, description="ZeroMQ port for clients")
    metrics_port: int = Field(9100, ge=0, le=65535, description="Prometheus metrics port; 0 disables it")
    http_port: int = Field(0, ge=0, le=65535, description="HTTP API port (OpenAI /v1/embeddings, TEI /embed); 0 = off")
    cache_size: int = Field(0, ge=0, description="texts whose vectors are kept to answer repeats (LRU); 0 = no cache")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    workers: int = Field(0, ge=0, le=64, description="worker processes; 0 picks the device default")
    threads_per_worker: int = Field(0, ge=0, le=256, description="ORT intra-op threads per worker; "
                                    "0 = cores / workers, for each model")
    parallel_batches: int = Field(0, ge=0, le=256, description="batches a worker runs side by side, one thread each, "
                                  "when more than that wait (otherwise each gets every thread); 0 = threads per worker on CPU, "
                                  "1 on CUDA")
    max_batch_tokens: int = Field(0, ge=0, description="token budget of a batch: size × longest sequence; 0 = default")
    max_batch_size: int = Field(0, ge=0, le=4096, description="texts per batch at most; 0 = device default")
    max_added_padding: int | None = Field(None, ge=0, description="padding tokens a text may add to a batch it joins")
    batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long a partial batch may wait for company")
    max_queue: int = Field(20000, ge=1, description="texts (or rerank documents) queued or running at most, per "
                           "model; past it requests get ServerBusy")
    max_texts_per_request: int = Field(2048, ge=1, description="texts in one request at most")
    max_chars_per_text: int = Field(100_000, ge=1, description="characters in one text at most")
    max_documents_per_rerank: int = Field(1000, ge=1, description="documents in one rerank request at most")
    max_message_bytes: int = Field(64 * 2**20, ge=1024, description="largest ZeroMQ message accepted")
    batch_timeout_s: float = Field(30.0, gt=0, description="a worker running one batch longer is declared stuck")
    request_timeout_s: float = Field(120.0, gt=0, description="a request unanswered this long gets a timeout error")
    shutdown_grace_s: float = Field(8.0, ge=0, le=300, description="time to drain in-flight work on SIGTERM")
    worker_start_timeout_s: float = Field(120.0, gt=0, description="time a worker may take to load the model")
    curve_secret: Path | None = Field(None, description="server.key_secret: turns on CurveZMQ encryption")
    curve_clients: Path | None = Field(None, description="directory of admitted clients' public .key files")
    bert_port: int = Field(0, ge=0, le=65535, description="bert-as-service PULL port (server/bert_adapter.py); 0 = off")
    bert_port_out: int = Field(0, ge=0, le=65535, description="bert-as-service publish port; 0 = bert_port + 1")
    allow_insecure_bert: bool = Field(False, description="serve the bert-as-service ports (plain TCP) beside CurveZMQ")
    api_key: SecretStr | None = Field(None, description="HTTP API key: every HTTP route but /health then needs "
                                      "'Authorization: Bearer KEY'")
    api_key_file: Path | None = Field(None, description="a file holding the HTTP API key (instead of --api-key)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("model", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):  # ZEROEMBED_MODEL: entries separated by commas
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value

    @property
    def models(self) -> list[tuple[str | None, Path]]:
        """The ``--model`` entries as (name or None, artifact directory), the default first."""
        entries: list[tuple[str | None, Path]] = []
        for entry in self.model:
            name, sep, path = entry.partition("=")
            if sep and _MODEL_NAME.fullmatch(name):
                entries.append((name, Path(path).expanduser()))
            else:
                entries.append((None, Path(entry).expanduser()))
        return entries

    @property
    def http_api_key(self) -> str | None:
        """The HTTP API key, from --api-key or the first line of --api-key-file."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        return None

    @model_validator(mode="after")
    def _fill_device_defaults(self) -> Settings:
        # Frozen model: the after-validator is the one place values may still be set.
        device: Device
        if self.device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        else:
            device = self.device
        defaults = _DEVICE_DEFAULTS[device]
        fill = {
            "device": device,
            "workers": self.workers or defaults["workers"],
            "max_batch_size": self.max_batch_size or defaults["max_batch_size"],
            "max_batch_tokens": self.max_batch_tokens or defaults["max_batch_tokens"],
            "max_added_padding": (defaults["max_added_padding"] if self.max_added_padding is None
                                  else self.max_added_padding),
        }
        if not self.threads_per_worker:
            # Each model's workers may use every core: a model alone runs at full speed, and under mixed
            # load the models share the cores as well as a fixed split would (docs/decisions.md).
            fill["threads_per_worker"] = 1 if device == "cuda" else max(1, cpu_count() // fill["workers"])
        if not self.parallel_batches:
            # On a GPU, runs queue on the device anyway; on CPU each thread can carry a batch of its own.
            fill["parallel_batches"] = 1 if device == "cuda" else fill.get("threads_per_worker",
                                                                            self.threads_per_worker)
        for name, value in fill.items():
            object.__setattr__(self, name, value)
        if (self.curve_secret is None) != (self.curve_clients is None):
            raise ValueError("CurveZMQ needs both --curve-secret and --curve-clients")
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(f"metrics_port and port are both {self.port}; give them different ports")
        if self.http_port and self.http_port in (self.port, self.metrics_port):
            raise ValueError(f"http_port {self.http_port} is also the ZeroMQ or metrics port; give it its own")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("give --api-key or --api-key-file, not both")
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            raise ValueError("--api-key is empty")
        if self.api_key_file is not None:
            try:
                key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read --api-key-file {self.api_key_file}: {exc.strerror}") from None
            if not key:
                raise ValueError(f"--api-key-file {self.api_key_file} is empty")
        names = [name for name, _ in self.models if name is not None]
        if len(set(names)) != len(names):
            raise ValueError(f"two --model entries have the same name: {sorted(names)}")
        return self

    @model_validator(mode="after")
    def _check_bert_ports(self) -> Settings:
        # bert-as-service's two sockets (server/bert_adapter.py), off unless bert_port is set.
        if not self.bert_port:
            if self.bert_port_out:
                raise ValueError("--bert-port-out needs --bert-port")
            return self
        if not self.bert_port_out:
            if self.bert_port == 65535:
                raise ValueError("--bert-port 65535 leaves no room for --bert-port-out (bert_port + 1); give both")
            object.__setattr__(self, "bert_port_out", self.bert_port + 1)
        seen: dict[int, str] = {}
        for name in type(self).model_fields:  # every port setting, so a clash with any of them is caught
            value = getattr(self, name)
            if not (name.endswith("port") or name.endswith("port_out")) or not value:
                continue
            if value in seen:
                raise ValueError(f"--{seen[value].replace('_', '-')} and --{name.replace('_', '-')} are both {value}; "
                                 "give each its own port (--bert-port-out defaults to --bert-port + 1)")
            seen[value] = name
        if self.curve_secret is not None and not self.allow_insecure_bert:
            raise ValueError("--bert-port serves plain, unauthenticated TCP (bert-serving-client cannot do CurveZMQ) "
                             "beside --curve-secret; pass --allow-insecure-bert to accept that")
        return self

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint clients connect to."""
        return f"tcp://{host_port(self.bind, self.port)}"

    @property
    def metrics_address(self) -> str:
        """``host:port`` of the metrics endpoint."""
        return host_port(self.bind, self.metrics_port)

    @property
    def limits(self) -> RequestLimits:
        """The request core's bounds."""
        return RequestLimits(max_texts_per_request=self.max_texts_per_request,
                             max_chars_per_text=self.max_chars_per_text, max_queue=self.max_queue,
                             request_timeout_s=self.request_timeout_s,
                             max_documents_per_rerank=self.max_documents_per_rerank)

    @property
    def worker_config(self) -> WorkerConfig:
        """What the worker side needs: the pool's size and each worker's runtime settings."""
        return WorkerConfig(device=self.device, workers=self.workers, threads_per_worker=self.threads_per_worker,
                            parallel_batches=self.parallel_batches, batch_timeout_s=self.batch_timeout_s,
                            worker_start_timeout_s=self.worker_start_timeout_s, log_level=self.log_level)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The request core's section of the settings: per-request and per-model bounds."""

    max_texts_per_request: int
    max_chars_per_text: int
    max_queue: int  # texts accepted and unanswered, at most (per model)
    request_timeout_s: float
    max_documents_per_rerank: int = 1000


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The worker side's section of the settings."""

    device: str
    workers: int
    threads_per_worker: int
    parallel_batches: int
    batch_timeout_s: float
    worker_start_timeout_s: float
    log_level: str = "info"


# A model's name in --model NAME=DIR: what requests route by.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SettingsError(Exception):
    """Settings that cannot be used; ``str()`` is a message for a person, one line per problem."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings from ``ZEROEMBED_*`` variables and explicit overrides (CLI flags).

    ``None`` overrides are ignored, so unset flags fall through to the environment.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    # pydantic-settings ignores variables that match no field: a misspelt or retired one (say a
    # ZEROEMBED_MAX_PADDING left in a deployment) would silently do nothing.
    unknown = sorted(key for key in os.environ if key.startswith(_ENV_PREFIX)
                     and key[len(_ENV_PREFIX):].lower() not in Settings.model_fields
                     and not key.startswith(_CLIENT_ENV_PREFIX))
    if unknown:
        raise SettingsError("\n".join(f"unknown setting {key}: `zeroembed serve --help` lists them "
                                      "(as flags; the variable is ZEROEMBED_ + the flag in capitals)"
                                      for key in unknown))
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            flag = f"--{name.replace('_', '-')} / ZEROEMBED_{name.upper()}" if error["loc"] else name
            lines.append(f"invalid {flag}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("\n".join(lines)) from None
