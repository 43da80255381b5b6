# The one image every bulk-rerank service runs: GPU and API workers, Flower, submit.
# docker compose build (or: docker build -t bulk-rerank .); TORCH_SPEC picks the torch build.
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
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
RUN pip install "${TORCH_SPEC}"

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
