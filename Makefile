# Two entry points for a newcomer on a fresh machine:
#   make serve   set everything up, then serve the default model
#   make test    set everything up, then run the tests
# CI also runs `make image-test`: the CPU image built from the Dockerfile and run (root; podman, no Docker).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve test image-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: a CPU build of 2.13.0 lies on disk, anything else pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(BIN)/zeroembed serve

test: setup
	$(BIN)/python -m pytest

# Installs podman, buildah and debootstrap if missing (apt), then tests/deploy/test_image.py (docs/deploy.md).
image-test: setup
	deploy/image/install-tools.sh
	$(BIN)/python -m pytest --image tests/deploy/test_image.py

lint: setup
	$(BIN)/hadolint --failure-threshold warning Dockerfile

clean:
	rm -rf $(VENV) build *.egg-info
