"""Model loading: offline GGUF-backed models, local folders and Hugging Face Hub ids."""

from __future__ import annotations

from swe_toolkit.models.loading import cpu_has_native_bfloat16, load_model, resolve_device, resolve_dtype
from swe_toolkit.models.offline import OFFLINE_MODELS, OfflineModelSpec, ensure_offline_model

__all__ = [
    "OFFLINE_MODELS",
    "OfflineModelSpec",
    "cpu_has_native_bfloat16",
    "ensure_offline_model",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    # Exports of swe_toolkit.models.adapters go here.
]
