"""Batched greedy generation and next-token log-probabilities for chat prompts.

Prompts are rendered with the chat template (:func:`swe_toolkit.prompts.format_prompts`), sorted by
token length, left-padded in batches (:func:`swe_toolkit.prompts.tokenize_batch`) and returned in
the input order. Rendered text already contains the template's special tokens, so it is tokenized
with ``add_special_tokens=False``. Raw prompts (no chat template) get the tokenizer's special
tokens, such as a BOS token.

Positions of a left-padded row are counted from its first real token. ``model.generate`` of
transformers 5.25 derives them from the attention mask itself, which the tests check against
unpadded one-at-a-time decoding for Qwen2 (rotary) and GPT-2 (learned absolute positions). The
plain forward pass of :func:`next_token_logprobs` receives them explicitly, because the model's
forward builds them with ``arange`` and would shift every padded row.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from swe_toolkit.capture import _batches, _check_batch_size, _eval_mode, _input_device
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.prompts import _pad_id, format_prompts, has_chat_template

__all__ = [
    "forward_with_positions",
    "generate",
    "generate_from_texts",
    "generate_token_ids",
    "next_token_logprobs",
    "render_prompts",
]

logger = logging.getLogger(__name__)


def render_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
) -> tuple[list[str], bool]:
    """Render ``prompts`` as single user turns and return ``(texts, add_special_tokens)``.

    ``add_special_tokens`` is False when the chat template was applied, because the rendered text
    already contains the special tokens, and True for raw prompts.
    """
    templated = use_chat_template and has_chat_template(tokenizer)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, use_chat_template=use_chat_template)
    return texts, not templated


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    progress: bool = True,
) -> list[str]:
    """Generate a greedy reply to each prompt and return the new text only, in input order.

    Decoding stops at an EOS token of the model's generation config or of the tokenizer, or after
    ``max_new_tokens`` tokens. Special tokens are removed from the decoded text, and whitespace is
    kept as generated.
    """
    token_ids = generate_token_ids(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=system_prompt,
        use_chat_template=use_chat_template,
        progress=progress,
    )
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]


def generate_token_ids(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    progress: bool = True,
) -> list[list[int]]:
    """Generate greedily like :func:`generate` and return the new token ids of each prompt.

    The ids end before the first EOS token, so they never contain the EOS or padding.
    """
    if isinstance(prompts, str):
        raise ConfigurationError("prompts must be a sequence of strings, got a single string; wrap it in a list.")
    if len(prompts) == 0:
        return []
    texts, add_special_tokens = render_prompts(
        tokenizer, prompts, system_prompt=system_prompt, use_chat_template=use_chat_template
    )
    return generate_from_texts(
        model,
        tokenizer,
        texts,
        add_special_tokens=add_special_tokens,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )


def generate_from_texts(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    add_special_tokens: bool,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generate",
) -> list[list[int]]:
    """Greedily continue already rendered ``texts`` and return the new token ids of each, in order.

    This is the step after rendering, for callers that build the model input themselves (the guard
    judge renders a whole conversation).
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigurationError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    _check_batch_size(batch_size)
    if len(texts) == 0:
        return []

    stop_ids = _stop_token_ids(model, tokenizer)
    config = _greedy_config(model, max_new_tokens=max_new_tokens, pad_id=_pad_id(tokenizer), stop_ids=stop_ids)
    device = _input_device(model)
    results: list[list[int]] = [[] for _ in texts]

    with _eval_mode(model), torch.no_grad():
        for rows, encoded in _batches(
            tokenizer, texts, batch_size, add_special_tokens=add_special_tokens, progress=progress, desc=desc
        ):
            input_ids = encoded["input_ids"].to(device)
            attention_mask = encoded["attention_mask"].to(device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            new_tokens = output[:, input_ids.shape[1] :].tolist()
            for row, ids in zip(rows, new_tokens, strict=True):
                results[row] = _cut_at_stop(ids, stop_ids)
    return results


def next_token_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    token_ids: Sequence[int] | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    response_prefix: str = "",
    progress: bool = True,
) -> Tensor:
    """Return float32 log-probabilities of the first reply token, ``(n_prompts, vocab)``, on the CPU.

    One forward pass per batch reads the logits at the last prompt position. ``response_prefix``
    is appended to each rendered prompt, so the distribution is that of the token after it (e.g.
    ``"The answer is"``). With ``token_ids`` only those columns are returned, in that order, as
    ``(n_prompts, len(token_ids))``. They are still normalized over the whole vocabulary.
    """
    if isinstance(prompts, str):
        raise ConfigurationError("prompts must be a sequence of strings, got a single string; wrap it in a list.")
    _check_batch_size(batch_size)
    columns = None
    if token_ids is not None:
        columns = torch.as_tensor(list(token_ids), dtype=torch.long)
        if columns.dim() != 1:
            raise ConfigurationError(f"token_ids must be a flat sequence of ints, got shape {tuple(columns.shape)}.")
    if len(prompts) == 0:
        width = model.config.vocab_size if columns is None else columns.numel()
        return torch.empty((0, width), dtype=torch.float32)

    texts, add_special_tokens = render_prompts(
        tokenizer, prompts, system_prompt=system_prompt, use_chat_template=use_chat_template
    )
    texts = [text + response_prefix for text in texts]

    accepted = _forward_arguments(model)
    device = _input_device(model)
    result: Tensor | None = None
    with _eval_mode(model), torch.no_grad():
        for rows, encoded in _batches(
            tokenizer, texts, batch_size, add_special_tokens=add_special_tokens, progress=progress, desc="logprobs"
        ):
            logits = _last_position_logits(model, encoded, device, accepted)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            if columns is not None:
                _check_columns(columns, logprobs.shape[-1])
                logprobs = logprobs.index_select(-1, columns.to(logprobs.device))
            if result is None:
                result = torch.empty((len(texts), logprobs.shape[-1]), dtype=torch.float32)
            result[torch.tensor(rows, dtype=torch.long)] = logprobs.cpu()
    assert result is not None  # At least one batch ran, because prompts is not empty.
    return result


def forward_with_positions(
    model: nn.Module,
    encoded: dict[str, Tensor],
    device: torch.device,
    accepted: frozenset[str],
    **extra: Any,
) -> Any:
    """Run ``model`` on a left-padded batch, counting positions from each row's first real token.

    ``accepted`` comes from :func:`_forward_arguments`. ``position_ids``, ``use_cache=False`` and
    the ``extra`` arguments are passed only when ``model.forward`` accepts them.
    """
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "position_ids" in accepted:
        kwargs["position_ids"] = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    kwargs.update({name: value for name, value in extra.items() if name in accepted})
    return model(**kwargs)


def _forward_arguments(model: nn.Module) -> frozenset[str]:
    """Return which of ``position_ids``, ``use_cache`` and ``logits_to_keep`` ``model.forward`` accepts.

    ``logits_to_keep`` is never assumed for a forward that takes only ``**kwargs``, because a model
    that ignores it returns the logits of every position, which is still correct.
    """
    optional = ("position_ids", "use_cache", "logits_to_keep")
    parameters = inspect.signature(model.forward).parameters
    accepted = {name for name in optional if name in parameters}
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        accepted |= {"position_ids", "use_cache"}
    return frozenset(accepted)


def _last_position_logits(
    model: nn.Module, encoded: dict[str, Tensor], device: torch.device, accepted: frozenset[str]
) -> Tensor:
    output = forward_with_positions(model, encoded, device, accepted, logits_to_keep=1)
    # With left padding the last column is the last real token of every row.
    return output.logits[:, -1, :]


def _check_columns(columns: Tensor, vocab_size: int) -> None:
    if columns.numel() and (int(columns.min()) < 0 or int(columns.max()) >= vocab_size):
        raise ConfigurationError(
            f"token_ids must lie in [0, {vocab_size}), got min {int(columns.min())} and max {int(columns.max())}."
        )


def _stop_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """Return the EOS ids of the model's generation config and of the tokenizer, without repeats."""
    ids: list[int] = []
    generation_config = getattr(model, "generation_config", None)
    for value in (getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is None:
            continue
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token_id, int) and token_id not in ids:
                ids.append(token_id)
    if not ids:
        logger.warning(
            "Neither the generation config nor the tokenizer defines an EOS token, so every reply runs to "
            "max_new_tokens."
        )
    return ids


def _greedy_config(model: nn.Module, *, max_new_tokens: int, pad_id: int, stop_ids: list[int]) -> Any:
    """Copy the model's generation config and switch it to plain greedy decoding with a KV cache.

    ``generate`` fills every ``None`` field from ``model.generation_config`` (transformers 5.25), so
    the sampling and penalty fields are set to their neutral values instead of ``None``. Chat
    checkpoints such as Qwen2.5 set ``repetition_penalty`` to 1.05 or more, which would also change
    greedy output.
    """
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.do_sample = False
    config.num_beams = 1
    config.temperature = 1.0
    config.top_p = 1.0
    config.top_k = 50
    config.typical_p = 1.0
    config.repetition_penalty = 1.0
    config.no_repeat_ngram_size = 0
    config.min_length = 0
    config.min_new_tokens = None
    config.max_new_tokens = max_new_tokens
    config.pad_token_id = pad_id
    config.eos_token_id = stop_ids or None
    config.use_cache = True
    return config


def _cut_at_stop(ids: list[int], stop_ids: Sequence[int]) -> list[int]:
    for position, token_id in enumerate(ids):
        if token_id in stop_ids:
            return ids[:position]
    return ids
