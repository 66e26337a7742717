"""Shared fixtures: exported artifacts, built once per test session.

``default_artifact`` is the contract the server tests build on: the fp32
export of the default model (all-MiniLM-L6-v2), made by the real exporter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from .dependencies import IN_CI, require

# CI replays the same examples every run, so a red build is reproducible; locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if IN_CI else "dev")

TINY_LAYERS = 2
TINY_HIDDEN = 64
TINY_HEADS = 4
TINY_POSITIONS = 128


@pytest.fixture(scope="session")
def default_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the fp32 artifact of the default model, exported once per session."""
    require("torch", "export")
    from zeroembed.export import export_model

    out = tmp_path_factory.mktemp("artifacts") / "all-MiniLM-L6-v2"
    export_model(None, out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random-weight 2-layer BERT saved as a sentence-transformers dir with CLS pooling.

    Only vocab.txt (from the default model) is shipped as tokenizer, so the
    exporter has to build the fast tokenizer itself.
    """
    require("torch", "export")
    from zeroembed.benchmarks.randommodel import make_random_bert

    return make_random_bert(tmp_path_factory.mktemp("models") / "tiny-bert", layers=TINY_LAYERS,
                            hidden=TINY_HIDDEN, heads=TINY_HEADS, max_positions=TINY_POSITIONS, pooling="cls")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 artifact of ``tiny_bert_dir`` (CLS pooling, no normalisation)."""
    from zeroembed.export import export_model

    out = tmp_path_factory.mktemp("artifacts") / "tiny-bert"
    export_model(tiny_bert_dir, out)
    return out


@pytest.fixture(scope="session")
def full_range_int8_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_artifact`` with a manifest claiming int8 with full-range weights: what a CPU without VNNI refuses
    (the server and bulk jobs decide from the manifest alone)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("artifacts") / "full-range-int8"
    shutil.copytree(tiny_artifact, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(precision="int8", quantization={"full_range_weights": True})
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", action="store_true",
                     help="also build and run the container image (tests marked 'image'; needs root, podman, "
                          "buildah and debootstrap; minutes): make image-test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds and runs the container image; runs only with --image")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Deselected, not skipped: the image is a separate CI step (make image-test), and a skip would be
    # a missing check under CI=true.
    if config.getoption("--image"):
        return
    image = [item for item in items if item.get_closest_marker("image")]
    if image:
        config.hook.pytest_deselected(items=image)
        items[:] = [item for item in items if not item.get_closest_marker("image")]
