"""Out-of-memory adaptation, measured: a token budget set too large shrinks on CUDA out-of-memory and
grows back after clean batches, for as long as the model stays loaded.

Run as ``python -m benchmarks.oom_demo`` (a child of ``scripts/bench.py``): it caps this process's share
of the GPU (``torch.cuda.set_per_process_memory_fraction``) so that the budget is too large on any GPU,
scores shard after shard, and reports the batcher's budget history. Without CUDA it reports that it was
skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MEMORY_CAP_BYTES = 2 * 1024**3
TOO_LARGE_BUDGET = 1 << 20  # padded tokens per batch: far beyond what the capped memory holds
SHARD_PAIRS = 2000
DEMO_SECONDS = 60.0


@dataclass(frozen=True)
class BudgetPoint:
    seconds: float  # since the batcher started
    budget: int
    reason: str  # "start", "oom", "grow" or "probe"


@dataclass(frozen=True)
class OomDemo:
    skipped: str | None
    memory_cap_bytes: int = 0
    pairs: int = 0
    seconds: float = 0.0
    oom_retries: int = 0
    history: tuple[BudgetPoint, ...] = ()


def adapt_under_pressure(
    reranker: Any, queries: list[str], texts: list[str], shard_pairs: int, seconds: float
) -> tuple[int, float, tuple[BudgetPoint, ...]]:
    """Score shard after shard until ``seconds`` pass or the pairs run out; returns pairs scored, the
    time taken and the budget history relative to the batcher's start."""
    started = time.perf_counter()
    scored = 0
    for start in range(0, len(queries), shard_pairs):
        reranker.score(queries[start : start + shard_pairs], texts[start : start + shard_pairs])
        scored = min(len(queries), start + shard_pairs)
        if time.perf_counter() - started >= seconds:
            break
    history = reranker.batcher.history
    origin = history[0].at
    points = tuple(BudgetPoint(change.at - origin, change.budget, change.reason) for change in history)
    return scored, time.perf_counter() - started, points


def run_demo(model_dir: Path, n_pairs: int, seconds: float) -> OomDemo:
    import torch

    if not torch.cuda.is_available():
        return OomDemo(skipped="no CUDA device")
    from benchmarks.corpus import synthetic_corpus, whole_words
    from benchmarks.models import bert_tokenizer
    from core.model_spec import ModelSpec
    from core.settings import Settings
    from worker.backends import load_reranker

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, MEMORY_CAP_BYTES / total))
    reranker: Any = load_reranker(
        ModelSpec.parse(f"cross-encoder:{model_dir}"),
        Settings(device="cuda", token_budget=TOO_LARGE_BUDGET),
    )
    corpus = synthetic_corpus(whole_words(bert_tokenizer()), max(1, n_pairs // 30), 30, seed=7)
    oom_before = reranker.batcher.oom_count
    pairs, elapsed, history = adapt_under_pressure(
        reranker, corpus.queries, corpus.texts, SHARD_PAIRS, seconds
    )
    return OomDemo(
        skipped=None,
        memory_cap_bytes=MEMORY_CAP_BYTES,
        pairs=pairs,
        seconds=elapsed,
        oom_retries=reranker.batcher.oom_count - oom_before,
        history=history,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=DEMO_SECONDS)
    args = parser.parse_args(argv)
    print(json.dumps(asdict(run_demo(args.model, args.pairs, args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
