# syntax=docker/dockerfile:1
# zeroembed images. Two targets, one model exported at build time (docs/deploy.md):
#
#   docker build -t zeroembed:gpu .                              # default: CUDA runtime, fp16 model
#   docker build -t zeroembed:cpu --target cpu .                 # python:3.11-slim, fp32 model
#   docker build --build-arg MODEL=models/my-bert --build-arg PRECISION=fp32 -t zeroembed:my-bert .
#
# MODEL is a model directory inside the build context (empty: the embedded all-MiniLM-L6-v2);
# PRECISION overrides the target's default (fp16 for gpu, fp32 for cpu; int8 is for CPU).
# Needs BuildKit (Docker >= 23 default): the model is read through a bind mount, never copied into a layer.

# ---------------------------------------------------------------- the project's sources, once
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY client /src/client
COPY cli /src/cli
COPY server /src/server
COPY export /src/export
COPY benchmarks /src/benchmarks
COPY bulk /src/bulk

# ---------------------------------------------------------------- exporter: torch lives only here
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The CPU wheel of torch (~200 MB) from PyTorch's index: the export runs on CPU, and PyPI's default
# Linux wheel would pull several GB of CUDA libraries into a stage that is thrown away anyway.
# TORCH_INDEX_URL: a mirror of that index, for builds that cannot reach it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY --from=source /src /src
RUN pip install "/src[export]"

FROM builder AS model-gpu
ARG MODEL=""
ARG PRECISION=fp16
RUN --mount=type=bind,target=/context \
    zeroembed export ${MODEL:+--model "/context/$MODEL"} --precision "$PRECISION" --out /models/model

FROM builder AS model-cpu
ARG MODEL=""
ARG PRECISION=fp32
# int8: only recipes whose accuracy holds on every x86 CPU, since the image may run on another machine than
# the one that built it; INT8_PORTABLE=0 for an image meant for CPUs with VNNI only (elsewhere it refuses
# to start).
ARG INT8_PORTABLE=1
RUN --mount=type=bind,target=/context \
    portable=""; \
    if [ "$PRECISION" = int8 ] && [ "$INT8_PORTABLE" = 1 ]; then portable=--int8-portable; fi; \
    zeroembed export ${MODEL:+--model "/context/$MODEL"} --precision "$PRECISION" ${portable:+"$portable"} \
        --out /models/model

# ---------------------------------------------------------------- CPU runtime (build with --target cpu)
FROM python:3.11-slim AS cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The server extra names onnxruntime-gpu; its wheel runs on CPU too (the CUDA provider is never loaded).
COPY --from=source /src /src
RUN pip install onnxruntime-gpu==1.31.1 "/src[server]" \
    && rm -rf /src \
    && useradd --system --uid 10001 --create-home --home-dir /home/zeroembed zeroembed
COPY --from=model-cpu --chown=10001:10001 /models /models
USER 10001
WORKDIR /home/zeroembed
ENV ZEROEMBED_BIND=0.0.0.0 \
    ZEROEMBED_MODEL=/models/model \
    ZEROEMBED_PORT=5555 \
    ZEROEMBED_METRICS_PORT=9100 \
    ZEROEMBED_DEVICE=cpu
EXPOSE 5555 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["zeroembed", "status", "--quiet", "--timeout", "5"]
ENTRYPOINT ["zeroembed", "serve"]

# ---------------------------------------------------------------- GPU runtime (the default target)
# onnxruntime-gpu 1.31 on PyPI is built for CUDA 13.0 (its CUDA provider links libcudart.so.13 and
# libcublas.so.13; build_and_package_info says cuda_version 13.0) and cuDNN 9, so the base is CUDA 13.0
# with cuDNN 9, runtime flavour (no compilers). Needs an NVIDIA driver >= 580 on the host.
# ubuntu24.04 brings Python 3.12 (22.04's 3.10 is below the project's 3.11).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS gpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# Distribution packages are not pinned: the base tag pins the release, and Ubuntu drops superseded
# versions from its archive, so an exact pin would break the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --system --uid 10001 --create-home --home-dir /home/zeroembed zeroembed
# CUDA and cuDNN come from the base image, so onnxruntime-gpu goes in without its [cuda,cudnn] extras.
COPY --from=source /src /src
RUN pip install onnxruntime-gpu==1.31.1 "/src[server]" \
    && rm -rf /src
COPY --from=model-gpu --chown=10001:10001 /models /models
USER 10001
WORKDIR /home/zeroembed
ENV ZEROEMBED_BIND=0.0.0.0 \
    ZEROEMBED_MODEL=/models/model \
    ZEROEMBED_PORT=5555 \
    ZEROEMBED_METRICS_PORT=9100 \
    ZEROEMBED_DEVICE=auto
EXPOSE 5555 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["zeroembed", "status", "--quiet", "--timeout", "5"]
ENTRYPOINT ["zeroembed", "serve"]
