# syntax=docker/dockerfile:1
# One image, three modes: MODE=server (RunPod pod or load-balancing endpoint, the default),
# MODE=serverless (RunPod queue endpoint) or MODE=ollama (Ollama alone, for a server in
# front of several). Ollama with the model baked in, the server and the RunPod handler in a
# Python venv, and docker/entrypoint.sh running them, one Ollama per GPU with
# OLLAMA_GPUS=auto. See docs/deploy.md.
#
#   docker build --build-arg MODEL=llama3.1:8b -t you/voice-llm:tag .

# Ollama 0.32.15, the latest stable release (GGML models run in llama.cpp's llama-server),
# on Ubuntu 24.04 (Python 3.12).
ARG OLLAMA_VERSION=0.32.15
ARG MODEL=llama3.1:8b

# The model, pulled by a running `ollama serve` into a folder that a RunPod network volume
# (mounted at /runpod-volume on serverless, /workspace on pods) cannot hide.
FROM ollama/ollama:${OLLAMA_VERSION} AS model
ARG MODEL
ENV OLLAMA_HOST=127.0.0.1:11434 \
    OLLAMA_MODELS=/opt/ollama/models
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# DL3001: `kill` stops the `ollama serve` that this same step started.
# hadolint ignore=DL3001
RUN ollama serve >/tmp/ollama-serve.log 2>&1 & \
    serve=$!; \
    for _ in $(seq 120); do ollama list >/dev/null 2>&1 && break; sleep 0.5; done; \
    if ! ollama list >/dev/null 2>&1; then \
      cat /tmp/ollama-serve.log; echo "ollama serve did not answer /api/tags within 60 s" >&2; exit 1; \
    fi; \
    ollama pull "$MODEL"; \
    kill "$serve"; \
    wait "$serve" || true

# The venv with the pinned requirements. Every one of them installs from a binary wheel
# (manylinux, CPython 3.12), so no compiler is needed; this stage's pip and apt leftovers
# stay behind.
FROM ollama/ollama:${OLLAMA_VERSION} AS venv
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# DL3008: Ubuntu's archive keeps only the newest build of each package in noble-updates and
# noble-security, so an exact version pin breaks the build on the day a security fix lands.
# The pinned base tag fixes the release (24.04) and with it the Python minor version (3.12).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements.txt

FROM ollama/ollama:${OLLAMA_VERSION}
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# First the model (about 4.9 GB): this layer changes only with the base or MODEL, so a new
# build of the code reuses it, and so does a registry that already has it.
COPY --from=model /opt/ollama/models /opt/ollama/models
# DL3008: see the venv stage. The venv's python is a link to this /usr/bin/python3.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=venv /opt/venv /opt/venv
WORKDIR /app
COPY server/ server/
COPY handler.py pyproject.toml ./
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/entrypoint.sh
# The entrypoint runs each `ollama serve` in a session of its own (util-linux's setsid).
RUN /opt/venv/bin/python -m compileall -q server handler.py \
    && command -v setsid >/dev/null

ARG MODEL
# Ollama: loopback only (the server is the way in), the baked models, one model kept
# loaded for good with OLLAMA_NUM_PARALLEL streams at once, nothing fetched from
# ollama.com (OLLAMA_NO_CLOUD: since 0.30 `ollama serve` otherwise polls it for model
# recommendations). Flash attention is left to Ollama, which turns it on where the GPU
# supports it. One Ollama sees every GPU (OLLAMA_GPUS=auto: one per GPU). NUM_CTX fixes
# the context per stream: Ollama's own default depends on the GPU's memory (4096, 32768 or
# 262144 tokens), and the KV cache reserves NUM_CTX × OLLAMA_NUM_PARALLEL tokens. The
# server's MAX_CONCURRENCY is left unset so that it follows OLLAMA_NUM_PARALLEL, also when
# a deployment changes it. PORT 80 is what RunPod load-balancing endpoints expect.
ENV OLLAMA_HOST=127.0.0.1:11434 \
    OLLAMA_MODELS=/opt/ollama/models \
    OLLAMA_KEEP_ALIVE=-1 \
    OLLAMA_NUM_PARALLEL=4 \
    OLLAMA_NO_CLOUD=1 \
    OLLAMA_GPUS=1 \
    NUM_CTX=8192 \
    MODEL=${MODEL} \
    MODE=server \
    HOST=0.0.0.0 \
    PORT=80 \
    APP_DIR=/app \
    PYTHON=/opt/venv/bin/python \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1
EXPOSE 80
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
