#!/usr/bin/env bash
# The peers' own virtual environment for `zeroembed bench --compare --peers`: infinity-emb (torch and
# ONNX engines) and fastembed, pinned here and nowhere near zeroembed's own environment.
#
#   bash benchmarks/peers/setup.sh [VENV]     (default: $ZEROEMBED_PEERS_VENV, else ~/.cache/zeroembed/peers-venv)
#
# torch goes in first and pinned: a CPU build of 2.13.0 lies on this machine's disk for pip, any other
# version pulls a multi-GB CUDA build.
set -euo pipefail

VENV="${1:-${ZEROEMBED_PEERS_VENV:-$HOME/.cache/zeroembed/peers-venv}}"
PYTHON="${PYTHON:-python3.11}"
INFINITY_VERSION="${INFINITY_VERSION:-0.0.78}"
FASTEMBED_VERSION="${FASTEMBED_VERSION:-0.9.1}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
fi
"$VENV/bin/pip" install --quiet torch==2.13.0
# server: its HTTP API; torch: its default engine (sentence-transformers); optimum: its ONNX engine
# (which, with the optimum 2.x this resolves to, fails every batch: docs/benchmarks.md).
"$VENV/bin/pip" install --quiet "infinity-emb[server,torch,optimum]==${INFINITY_VERSION}"
"$VENV/bin/pip" install --quiet "fastembed==${FASTEMBED_VERSION}"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "infinity-emb", "sentence-transformers", "optimum", "onnxruntime", "fastembed", "transformers"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
echo "peers venv ready: $VENV"
