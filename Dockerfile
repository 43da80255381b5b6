# The one image every bulk-rerank service runs: GPU and API workers, Flower, submit.
# docker compose build (or: docker build -t bulk-rerank .); TORCH_SPEC and TORCH_INDEX_URL pick the torch build.
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
# The CUDA build of torch, from PyTorch's own index: a build for CUDA 12.x runs on NVIDIA drivers from
# 525.60.13 on (CUDA's minor-version compatibility). For an older driver pick an older build (cu118: from
# 450.80.02); CPU-only hosts: https://download.pytorch.org/whl/cpu.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG APP_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/huggingface \
    RERANK_DATA_DIR=/data

WORKDIR /app

# torch first, in its own layer: it is the biggest by far (the Linux wheels carry CUDA) and changes
# least, so rebuilding after a code change reuses it.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY worker worker
COPY producer producer
COPY tasks tasks
COPY testkit testkit
COPY benchmarks benchmarks
# The price table ships inside the package (core/prices.toml), so a plain install finds it.
RUN pip install .
COPY scripts scripts

RUN useradd --uid "${APP_UID}" --create-home rerank \
    && mkdir -p /data /models/huggingface \
    && chown rerank /data /models/huggingface
USER rerank

CMD ["python", "scripts/workers.py", "--help"]
