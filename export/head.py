"""The sentence-transformers head and prompts, read from a model folder's JSON.

``modules.json`` lists the modules sentence-transformers chains after the
encoder: ``Pooling`` (one of :data:`POOLING_MODES`, optionally leaving the
prompt's tokens out), any number of ``Dense`` layers, then ``Normalize``. All
of them are reproduced inside the exported graph (export/graph.py); a module
the exporter does not know is refused, never skipped, because skipping it
would silently change the embeddings. Only JSON is read here, never weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExportError

# In sentence-transformers' order of concatenation (a model may only use one here).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Legacy boolean keys of 1_Pooling/config.json -> mode.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Dense activation (sentence-transformers saves the class path) -> name the graph builder knows.
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}
KNOWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SENTENCE = "sentence_embedding"


@dataclass(frozen=True)
class DenseLayer:
    """One ``Dense`` module: ``activation(x @ W.T + b)`` (+ x, or a projection of x, if residual)."""

    path: Path  # the module's folder, holding its config.json and weights
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a value of ACTIVATIONS
    residual: bool


@dataclass(frozen=True)
class Head:
    """What sentence-transformers does after the encoder."""

    pooling: str
    include_prompt: bool  # False: the prompt's tokens are left out of the pooling
    dense: tuple[DenseLayer, ...]
    normalize: bool

    def output_dim(self, hidden_size: int) -> int:
        """Width of the sentence vector for an encoder of ``hidden_size``."""
        return self.dense[-1].out_features if self.dense else hidden_size


@dataclass(frozen=True)
class Prompts:
    """``prompts`` and ``default_prompt_name`` from config_sentence_transformers.json."""

    prompts: Mapping[str, str]
    default_prompt_name: str | None


def read_json(path: Path) -> Any:
    """Parse ``path``; any failure is an :class:`ExportError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read {path}: {err}") from err


def check_weights(folder: Path) -> None:
    """Raise unless ``folder`` holds a weights file transformers or sentence-transformers loads."""
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise ExportError(f"no weights in {folder} (expected {' or '.join(_WEIGHT_FILES)})")


def module_kind(type_name: object) -> str:
    """``sentence_transformers.models.Pooling`` (or any module path) -> ``Pooling``."""
    return str(type_name).rsplit(".", 1)[-1]


def read_modules(model_dir: Path) -> list[dict[str, Any]] | None:
    """modules.json's entries, each checked to be a module the exporter knows; None without it."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None
    modules = read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ExportError(f"{modules_file} is not a list of modules")
    for module in modules:
        type_name = str(module.get("type", ""))
        if not type_name.startswith("sentence_transformers.") or module_kind(type_name) not in KNOWN_MODULES:
            raise ExportError(
                f"{modules_file} has a {type_name!r} module, which the exporter cannot reproduce "
                f"(it knows {', '.join(KNOWN_MODULES)})"
            )
    kinds = [module_kind(m["type"]) for m in modules]
    if not kinds or kinds[0] != "Transformer" or kinds.count("Transformer") != 1:
        raise ExportError(f"{modules_file} must start with its one Transformer module (found {kinds})")
    return modules


def _pooling(config_file: Path, hidden_size: int, override: str | None) -> tuple[str, bool]:
    """(mode, include_prompt) from a ``Pooling`` module's config.json, or ``override``'s mode."""
    if not config_file.is_file():
        if override is not None:
            return override, True
        raise ExportError(f"{config_file} is missing (listed in modules.json); pass --pooling")
    config = read_json(config_file)
    mode = config.get("pooling_mode")
    if mode is None:
        # As sentence-transformers: no mode switched on (or none given) means mean.
        modes = [m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key) is True] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if override is None and (len(modes) != 1 or modes[0] not in POOLING_MODES):
        raise ExportError(
            f"{config_file} asks for pooling {modes or 'none'}; the exporter supports exactly one of "
            f"{', '.join(POOLING_MODES)} (override with --pooling)"
        )
    width = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if width is not None and int(width) != hidden_size:
        raise ExportError(
            f"{config_file} pools {width}-wide token embeddings but the encoder's hidden size is {hidden_size}"
        )
    return override or modes[0], bool(config.get("include_prompt", True))


def _dense(folder: Path, expected_in: int) -> DenseLayer:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{config_file} is missing (listed in modules.json)")
    config = read_json(config_file)
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{config_file} lacks a valid {err} entry") from err
    if in_features != expected_in:
        raise ExportError(
            f"{config_file} has in_features {in_features} but its input is {expected_in}-wide "
            "(the encoder's hidden size, or the previous Dense layer's out_features)"
        )
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _SENTENCE) != _SENTENCE:
            raise ExportError(
                f"{config_file} applies Dense to {config[key]!r}; the exporter supports Dense on {_SENTENCE} only"
            )
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if activation not in ACTIVATIONS:
        raise ExportError(
            f"{config_file} uses activation {activation!r}; the exporter knows "
            f"{', '.join(name.rsplit('.', 1)[-1] for name in ACTIVATIONS)}"
        )
    check_weights(folder)
    return DenseLayer(
        path=folder.resolve(),
        in_features=in_features,
        out_features=out_features,
        bias=bool(config.get("bias", True)),
        activation=ACTIVATIONS[activation],
        residual=bool(config.get("use_residual", False)),
    )


def read_head(
    model_dir: Path, modules: list[dict[str, Any]] | None, hidden_size: int, pooling_override: str | None
) -> Head:
    """The head sentence-transformers would run; a plain HF folder gets mean pooling and nothing else."""
    if pooling_override is not None and pooling_override not in POOLING_MODES:
        raise ExportError(f"invalid pooling {pooling_override!r}; choose one of {', '.join(POOLING_MODES)}")
    pooling, include_prompt = pooling_override or "mean", True
    dense: list[DenseLayer] = []
    normalize = False
    seen: list[str] = []
    for module in modules or []:
        kind = module_kind(module["type"])
        folder = model_dir / str(module.get("path", ""))
        if kind == "Transformer":
            pass
        elif kind == "Pooling":
            if seen != ["Transformer"]:
                raise ExportError(f"{model_dir / 'modules.json'}: Pooling must come right after Transformer")
            pooling, include_prompt = _pooling(folder / "config.json", hidden_size, pooling_override)
        elif kind == "Dense":
            if "Pooling" not in seen or "Normalize" in seen:
                raise ExportError(
                    f"{model_dir / 'modules.json'}: Dense must come after Pooling and before Normalize"
                )
            dense.append(_dense(folder, dense[-1].out_features if dense else hidden_size))
        elif kind == "Normalize":
            if "Pooling" not in seen or normalize:
                raise ExportError(f"{model_dir / 'modules.json'}: one Normalize, after Pooling")
            config_file = folder / "config.json"
            config = read_json(config_file) if config_file.is_file() else {}
            if config.get("module_input_name", _SENTENCE) != _SENTENCE:
                raise ExportError(
                    f"{config_file} normalizes {config['module_input_name']!r}; "
                    f"the exporter supports Normalize on {_SENTENCE} only"
                )
            normalize = True
        seen.append(kind)
    if modules and "Pooling" not in seen and pooling_override is None:
        raise ExportError(f"{model_dir / 'modules.json'} has no Pooling module; pass --pooling")
    return Head(pooling=pooling, include_prompt=include_prompt, dense=tuple(dense), normalize=normalize)


def read_prompts(model_dir: Path) -> Prompts:
    """The model's named prompts (empty without config_sentence_transformers.json)."""
    config_file = model_dir / "config_sentence_transformers.json"
    if not config_file.is_file():
        return Prompts(prompts={}, default_prompt_name=None)
    config = read_json(config_file)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ExportError(f"{config_file}: prompts must map names to strings")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ExportError(
            f"{config_file}: default_prompt_name {default!r} is not one of its prompts "
            f"({', '.join(sorted(prompts)) or 'none'})"
        )
    return Prompts(prompts=dict(sorted(prompts.items())), default_prompt_name=default)
