"""Load a causal language model and its tokenizer from an offline name, a local folder or the Hub."""

from __future__ import annotations

import difflib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from swe_toolkit.errors import ConfigurationError, ModelNotAvailableError
from swe_toolkit.models.offline import OFFLINE_MODELS, ensure_offline_model

logger = logging.getLogger(__name__)

_DTYPES_BY_NAME = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DEVICE_PATTERN = re.compile(r"(cpu|cuda)(:\d+)?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Convert ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device to a torch.device.

    ``"auto"`` selects CUDA when torch reports it available, otherwise the CPU. Raises
    ConfigurationError for any other value, for CUDA when it is not available and for a CUDA
    index beyond the visible devices.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        text = device.strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not _DEVICE_PATTERN.fullmatch(text):
            raise ConfigurationError(
                f"Invalid device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:<index>'."
            )
        resolved = torch.device(text)
    else:
        raise ConfigurationError(
            f"Invalid device {device!r} of type {type(device).__name__}: expected a string or torch.device."
        )

    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ConfigurationError(f"Unsupported device type {resolved.type!r}: expected 'cpu' or 'cuda'.")
    if not torch.cuda.is_available():
        raise ConfigurationError(f"Device {device!r} was requested, but CUDA is not available. Use 'cpu' or 'auto'.")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise ConfigurationError(f"Device {device!r} was requested, but only {count} CUDA device(s) are visible.")
    return resolved


def cpu_has_native_bfloat16() -> bool:
    """Return True when the CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16).

    The flags are read from ``/proc/cpuinfo``, so the result is False where that file is missing
    (macOS, Windows). On such CPUs torch 2.13's bfloat16 matmul ran 5-6 times faster than float32
    in our measurement on a 2-core Xeon with AMX. Elsewhere bfloat16 is emulated and slower.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """Return the torch dtype for ``dtype``, or the default for ``device`` when ``dtype`` is None.

    The default (``None``) is bfloat16 on CUDA and float32 elsewhere. ``"auto"`` picks the faster
    of the two where it is safe: bfloat16 on CUDA and on CPUs with native bfloat16 matmul
    (:func:`cpu_has_native_bfloat16`), float32 elsewhere. Other accepted values are
    torch.float32/bfloat16/float16 and their names. Any other value raises ConfigurationError.
    """
    if dtype is None:
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        fast = resolve_device(device).type == "cuda" or cpu_has_native_bfloat16()
        return torch.bfloat16 if fast else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES_BY_NAME.values():
            raise ConfigurationError(f"Unsupported dtype {dtype}: expected one of {', '.join(_DTYPES_BY_NAME)}.")
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        if name in _DTYPES_BY_NAME:
            return _DTYPES_BY_NAME[name]
    raise ConfigurationError(
        f"Invalid dtype {dtype!r}: expected 'auto', one of {', '.join(_DTYPES_BY_NAME)} or a torch.dtype."
    )


def _looks_like_local_path(name_or_path: str) -> bool:
    # A Hub id is "name" or "namespace/name", so these forms can only be file system paths.
    return (
        name_or_path.startswith((".", "~", os.sep))
        or os.path.isabs(name_or_path)
        or (os.altsep is not None and os.altsep in name_or_path)
        or name_or_path.count("/") > 1
    )


def _resolve_source(
    name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None, revision: str | None
) -> tuple[str, str, dict[str, Any]]:
    """Return the path or id to pass to from_pretrained, a description of it, and Hub options."""
    text = os.fspath(name_or_path)
    if text in OFFLINE_MODELS:
        if revision is not None:
            raise ConfigurationError(f"revision={revision!r} applies only to Hub ids, not to offline model {text!r}.")
        folder = ensure_offline_model(text, cache_dir)
        return str(folder), f"offline model {text} (cache {folder})", {}

    path = Path(text).expanduser()
    close = difflib.get_close_matches(text, list(OFFLINE_MODELS), n=1, cutoff=0.85)
    if close and "/" not in text and not path.exists():
        raise ConfigurationError(
            f"Model {text!r} is not an offline model name; did you mean {close[0]!r}? "
            f"Offline models: {', '.join(OFFLINE_MODELS)}."
        )
    if path.is_dir():
        if revision is not None:
            raise ConfigurationError(f"revision={revision!r} applies only to Hub ids, not to local folder {path}.")
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"Local folder {path} has no config.json. Pass a folder written by save_pretrained."
            )
        return str(path), f"local folder {path}", {}
    if path.exists():
        raise ModelNotAvailableError(
            f"{path} is a file; pass the folder that contains config.json, the weights and the tokenizer."
        )
    if isinstance(name_or_path, os.PathLike) or _looks_like_local_path(text):
        raise ModelNotAvailableError(f"Local model folder {path} does not exist.")

    hub_options: dict[str, Any] = {"revision": revision}
    if cache_dir is not None:
        hub_options["cache_dir"] = os.fspath(cache_dir)
    description = f"Hugging Face Hub id {text}" + (f" at revision {revision}" if revision else "")
    return text, description, hub_options


def _hub_error_message(name: str, error: Exception) -> str:
    offline_names = ", ".join(sorted(OFFLINE_MODELS))
    message = (
        f"Could not load {name!r} as a local folder or from the Hugging Face Hub: {error}\n"
        f"Pass a local model folder, or one of the offline models: {offline_names}."
    )
    for spec in OFFLINE_MODELS.values():
        if spec.hub_id.lower() == name.lower():
            message += f" The offline model {spec.name!r} is a Q4_K_M GGUF build of {spec.hub_id}."
    return message


def load_model(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    *,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for batched generation, and return both.

    ``name_or_path`` is an offline model name (see OFFLINE_MODELS, built on first use by
    ensure_offline_model), a local folder with safetensors weights, or a Hugging Face Hub id.
    ``cache_dir`` is the swe_toolkit cache root for offline models and the Hugging Face cache
    folder for Hub ids. ``revision`` applies only to Hub ids. ``trust_remote_code`` is passed to
    transformers unchanged, so model code from the Hub runs only when the caller enables it.

    The model is returned in eval mode on ``device`` (see resolve_device) in ``dtype`` (see
    resolve_dtype). The tokenizer pads on the left, and uses its EOS token for padding when it has
    no pad token.

    Raises ConfigurationError for an invalid device, dtype or revision, and ModelNotAvailableError
    when the model cannot be found or loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    source, description, hub_options = _resolve_source(name_or_path, cache_dir, revision)
    is_hub = bool(hub_options)

    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **hub_options)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=target_dtype, trust_remote_code=trust_remote_code, **hub_options
        )
    except OSError as error:
        # transformers raises OSError (EnvironmentError) for missing files, unknown repositories
        # and for a Hub that it cannot reach.
        if is_hub:
            raise ModelNotAvailableError(_hub_error_message(source, error)) from error
        raise ModelNotAvailableError(f"Could not load a model from {description}: {error}") from error
    except ValueError as error:
        # transformers raises ValueError for files it cannot interpret, such as an unknown
        # model_type or a tokenizer without tokenizer.json or vocabulary files.
        raise ModelNotAvailableError(f"Could not load a model from {description}: {error}") from error

    _check_tokenizer(tokenizer, description)
    model.to(target_device)
    model.eval()
    _prepare_tokenizer(tokenizer, model)

    parameters = sum(parameter.numel() for parameter in model.parameters())
    logger.info(
        "Loaded %s (%s, %s parameters) from %s on %s in %s in %.1f s.",
        os.fspath(name_or_path), type(model).__name__, f"{parameters:,}",
        description, target_device, str(target_dtype).removeprefix("torch."), time.perf_counter() - started,
    )
    return model, tokenizer


def _check_tokenizer(tokenizer: Any, description: str) -> None:
    # transformers 5.25 builds an empty Qwen2Tokenizer (one special token) for a Qwen2 folder that
    # has no tokenizer files, instead of raising. Any real tokenizer encodes "a" to some token.
    if not tokenizer("a", add_special_tokens=False)["input_ids"]:
        raise ModelNotAvailableError(
            f"The tokenizer loaded from {description} has {len(tokenizer)} tokens and cannot encode text. "
            f"The model's tokenizer files (such as tokenizer.json) are probably missing."
        )


def _prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    """Make the tokenizer pad on the left with a pad token, and tell generate() which id it is."""
    # Decoder-only models continue from the last position, so batched prompts must be left padded.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            logger.warning("The tokenizer has neither a pad token nor an EOS token, so batches cannot be padded.")
            return
        tokenizer.pad_token = tokenizer.eos_token

    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
