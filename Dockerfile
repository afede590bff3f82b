# ModelForge on an NVIDIA GPU: dashboard at /, REST API at /api, port 7860.
#   docker build -t modelforge .
#   docker run --gpus all -p 7860:7860 -e MODELFORGE_TOKEN=<secret> -v modelforge:/data modelforge
# Without MODELFORGE_TOKEN the server runs in read-only demo mode (see app.py).
# The base image's CUDA matches the CUDA build of torch that pip installs (13.0 for torch 2.14);
# pass --build-arg CUDA_IMAGE=... to move both together.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODELFORGE_HOME=/data \
    HF_HOME=/data/hf-cache \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# Python with headers and a compiler: Triton and Unsloth compile kernels at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential git curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md app.py ./
COPY trainers ./trainers
COPY modelforge_ui ./modelforge_ui
# The project's own pyproject.toml pins what matters (transformers, trl, unsloth).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[unsloth]"

# Run as an unprivileged user (uid 1000, as Hugging Face Spaces expect); runs live in /data.
RUN useradd --create-home --uid 1000 modelforge \
    && mkdir -p /data \
    && chown modelforge:modelforge /data
USER 1000
VOLUME ["/data"]
EXPOSE 7860

# /api/health needs the token when one is set; an empty bearer is fine when none is.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "curl -fsS -H \"Authorization: Bearer ${MODELFORGE_TOKEN:-}\" http://127.0.0.1:${GRADIO_SERVER_PORT}/api/health || exit 1"]

CMD ["python", "app.py"]
