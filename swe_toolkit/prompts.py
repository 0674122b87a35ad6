"""Chat formatting, left-padded tokenization and post-instruction token positions.

Post-instruction tokens are the template tokens that follow the user's message, for example
``<|im_end|>\\n<|im_start|>assistant\\n`` in Qwen's ChatML template. They are identical for every
prompt and every language, which makes their activations comparable across prompts. With left
padding they are the last ``m`` tokens of every row, so positions are counted from the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jinja2 import TemplateError
from torch import Tensor

from swe_toolkit.errors import ConfigurationError, ShapeError

__all__ = [
    "POSITION_MODES",
    "PromptPositions",
    "format_prompts",
    "has_chat_template",
    "post_instruction_suffix",
    "prompt_positions",
    "tokenize_batch",
]

logger = logging.getLogger(__name__)

POSITION_MODES: tuple[str, ...] = ("post_instruction", "last", "mean")

# Stand-in user message used to render the template text around a message.
_PLACEHOLDER = "swe_toolkit_placeholder_message"

# Messages that check the suffix tokenization. They end in different scripts and characters, so a
# tokenizer merge across the message boundary shows up as a mismatch in the common tail.
_PROBE_MESSAGES: tuple[str, ...] = (
    "How do I bake bread at home?",
    "Tell me a story",
    "สวัสดี",
    "নমস্কার",
    "x",
)


def has_chat_template(tokenizer: Any) -> bool:
    """Return True when the tokenizer defines a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    system_prompt: str | None = None,
    use_chat_template: bool = True,
) -> list[str]:
    """Render each prompt as a single user turn followed by the assistant generation prompt.

    Prompts are returned unchanged when ``use_chat_template`` is False or the tokenizer has no chat
    template; a ``system_prompt`` is then ignored with a logged warning.
    """
    prompts = _check_texts(prompts, "prompts")
    if not use_chat_template or not has_chat_template(tokenizer):
        if use_chat_template:
            logger.info("Tokenizer %s has no chat template; using the raw prompts.", type(tokenizer).__name__)
        if system_prompt is not None:
            logger.warning("system_prompt is ignored because no chat template is applied.")
        return list(prompts)
    if not prompts:
        return []

    conversations = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        conversations.append(messages)

    try:
        rendered = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    except TemplateError as error:
        raise ConfigurationError(
            f"The chat template of {type(tokenizer).__name__} failed to render a user prompt"
            f"{' with a system prompt' if system_prompt is not None else ''}: {error}. "
            "Some templates (e.g. Gemma's) reject the system role; pass system_prompt=None."
        ) from error
    return list(rendered)


def post_instruction_suffix(tokenizer: Any, system_prompt: str | None = None) -> list[int]:
    """Return the token ids that the chat template puts after the user's message.

    The template is rendered around a placeholder message and the text after it is tokenized. The
    ids are then checked against the tails of several fully rendered prompts. When the tokenizer
    merges the suffix with the end of a message, the suffix shrinks to the longest tail that all of
    them share. Returns an empty list, with a logged note, when the tokenizer has no chat template
    or no common tail exists.
    """
    if not has_chat_template(tokenizer):
        logger.info(
            "Tokenizer %s has no chat template, so there is no post-instruction suffix.", type(tokenizer).__name__
        )
        return []

    (rendered,) = format_prompts(tokenizer, [_PLACEHOLDER], system_prompt=system_prompt)
    if _PLACEHOLDER not in rendered:
        logger.warning("The chat template dropped or altered the user message; no post-instruction suffix found.")
        return []
    suffix_text = rendered[rendered.rindex(_PLACEHOLDER) + len(_PLACEHOLDER) :]
    if not suffix_text:
        logger.info("The chat template adds no text after the user message; no post-instruction suffix.")
        return []

    suffix_ids = _encode(tokenizer, suffix_text)
    common = suffix_ids
    for text in format_prompts(tokenizer, list(_PROBE_MESSAGES), system_prompt=system_prompt):
        common = _common_tail(common, _encode(tokenizer, text))

    if len(common) < len(suffix_ids):
        logger.info(
            "The post-instruction suffix %r tokenizes to %d ids, but only the last %d are identical in every "
            "rendered prompt; using those.",
            suffix_text,
            len(suffix_ids),
            len(common),
        )
    if not common:
        logger.warning("No token ids are common to the end of every rendered prompt; no post-instruction suffix.")
    return common


@dataclass
class PromptPositions:
    """Token positions of a left-padded batch from which activations are read.

    ``mode`` is ``"post_instruction"`` (the last ``num_positions`` tokens, which equal
    ``suffix_ids``), ``"last"`` (the last token) or ``"mean"`` (one position containing the mean over
    all non-padding tokens).
    """

    num_positions: int
    suffix_ids: list[int] = field(default_factory=list)
    mode: str = "post_instruction"

    def select(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """Reduce ``hidden`` of shape ``(batch, seq, dim)`` to ``(batch, num_positions, dim)``.

        The batch must be left-padded. The mean is computed in float32 and excludes padding; any
        other mode keeps the input dtype.
        """
        if hidden.dim() != 3 or tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
            raise ShapeError(
                f"Expected hidden states (batch, seq, dim) and a matching (batch, seq) attention mask, "
                f"got {tuple(hidden.shape)} and {tuple(attention_mask.shape)}."
            )
        if self.mode == "mean":
            mask = attention_mask.to(hidden.device).bool().unsqueeze(-1)
            # torch.where instead of a product, because padded positions may hold NaN.
            summed = torch.where(mask, hidden.float(), 0.0).sum(dim=1, keepdim=True)
            return summed / mask.sum(dim=1, keepdim=True).clamp(min=1)
        return hidden[:, -self.num_positions :, :]


def prompt_positions(
    tokenizer: Any,
    positions: str = "post_instruction",
    *,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
) -> PromptPositions:
    """Resolve a position mode name to :class:`PromptPositions` for this tokenizer.

    ``"post_instruction"`` falls back to the last token, with a logged note, when no chat template
    is applied or the template has no suffix after the user message.
    """
    if positions not in POSITION_MODES:
        raise ConfigurationError(f"Unknown positions {positions!r}; expected one of {', '.join(POSITION_MODES)}.")
    if positions == "mean":
        return PromptPositions(num_positions=1, suffix_ids=[], mode="mean")
    if positions == "post_instruction":
        suffix = post_instruction_suffix(tokenizer, system_prompt) if use_chat_template else []
        if suffix:
            return PromptPositions(num_positions=len(suffix), suffix_ids=suffix, mode="post_instruction")
        logger.info("No post-instruction suffix is available; reading the last token of each prompt instead.")
    return PromptPositions(num_positions=1, suffix_ids=[], mode="last")


def tokenize_batch(
    tokenizer: Any,
    texts: Sequence[str],
    device: torch.device | str | None = None,
    max_length: int | None = None,
    *,
    add_special_tokens: bool = True,
    truncation_side: str = "left",
) -> dict[str, Tensor]:
    """Tokenize ``texts`` into a left-padded batch with keys ``input_ids`` and ``attention_mask``.

    Padding is done here rather than by the tokenizer, so the tokenizer's ``padding_side`` and pad
    token are never changed. The pad id is ``pad_token_id``, else ``eos_token_id``, else 0; it is
    masked out either way. ``max_length`` truncates from ``truncation_side``; the default, left,
    keeps the end of a prompt, where the post-instruction tokens are. Pass ``add_special_tokens=False``
    for text that a chat template rendered, because the template already contains them.
    """
    texts = _check_texts(texts, "texts")
    if max_length is not None and max_length < 1:
        raise ConfigurationError(f"max_length must be a positive number of tokens, got {max_length}.")
    if truncation_side not in ("left", "right"):
        raise ConfigurationError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}.")

    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    rows: list[list[int]] = []
    for i, ids in enumerate(encoded):
        if not ids:
            raise ConfigurationError(f"Text at index {i} ({texts[i]!r}) tokenizes to no tokens.")
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:] if truncation_side == "left" else ids[:max_length]
        rows.append(list(ids))

    pad_id = _pad_id(tokenizer)
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1

    if device is not None:
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _check_texts(texts: Sequence[str], name: str) -> Sequence[str]:
    if isinstance(texts, str):
        raise ConfigurationError(f"{name} must be a sequence of strings, got a single string; wrap it in a list.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigurationError(f"{name}[{i}] must be a string, got {type(text).__name__}.")
    return texts


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_tail(a: Sequence[int], b: Sequence[int]) -> list[int]:
    length = 0
    while length < min(len(a), len(b)) and a[len(a) - 1 - length] == b[len(b) - 1 - length]:
        length += 1
    return list(a[len(a) - length :])


def _pad_id(tokenizer: Any) -> int:
    for attribute in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0
