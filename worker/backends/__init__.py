"""Reranker backends. ``load_reranker`` imports a backend only when asked, so importing this package
stays free of torch, sentence-transformers and FlagEmbedding (and API workers never load them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.model_spec import ModelSpec
    from core.settings import Settings
    from worker.backends.base import Reranker


def load_reranker(spec: ModelSpec, settings: Settings) -> Reranker:
    """Load the backend for ``spec.kind`` on the device and dtype the settings choose.

    Raises ``ModelLoadError`` naming the model when it cannot be loaded, ``ConfigError`` or
    ``NoDeviceError`` when the settings cannot be honoured.
    """
    if spec.is_api:
        from worker.backends.api import load_api_reranker

        return load_api_reranker(spec, settings)
    from worker.backends.local.compute_thread import on_compute_thread

    return on_compute_thread(_load_local, spec, settings)


def _load_local(spec: ModelSpec, settings: Settings) -> Reranker:
    from core.errors import ModelSpecError
    from core.kinds import LOCAL_KINDS, resolve
    from worker.backends.local.host_memory import keep_freed_host_memory

    entry = LOCAL_KINDS.get(spec.kind)
    if entry is None:
        raise ModelSpecError(f"no local backend for model kind {spec.kind!r} ({spec})")
    keep_freed_host_memory()  # local models: every batch's activations reuse the last one's host memory
    loader = resolve(spec.kind, "loader", entry.loader)
    reranker: Reranker = loader(spec, settings)
    return reranker
