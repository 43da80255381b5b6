"""The pieces of ``scripts/bench.py``: synthetic corpora and models, contenders run in their own
processes, the device's matmul peak, score agreement, the pipeline run and the out-of-memory demo."""
