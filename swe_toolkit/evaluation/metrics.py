"""Rates with bootstrap confidence intervals, and the KL divergence that an edit causes.

Intervals are percentile bootstrap intervals: the mean is recomputed on ``n_resamples`` samples
drawn with replacement, and the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles of those means. With a rate of exactly 0 or 1 every resample has the same mean, so the
interval collapses to that point even for small ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from swe_toolkit.capture import _batches, _check_batch_size, _eval_mode, _input_device
from swe_toolkit.edit import SparseEdit
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.evaluation.generation import _forward_arguments, forward_with_positions, render_prompts

__all__ = [
    "KLResult",
    "RateEstimate",
    "attack_success_rate",
    "bootstrap_interval",
    "mean_kl_divergence",
    "paired_difference_interval",
    "refusal_rate",
]

# Resamples drawn per numpy call, which bounds the index matrix to this many rows.
_RESAMPLE_CHUNK = 256

# Token positions whose log-softmax is computed at once in mean_kl_divergence. Two float32 chunks
# of a 152k-token vocabulary take 2 x 512 x 152k x 4 bytes, about 0.6 GB.
_KL_POSITION_CHUNK = 512


@dataclass(frozen=True)
class RateEstimate:
    """A rate (or a difference of rates) with its bootstrap confidence interval over ``n`` items."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


@dataclass(frozen=True)
class KLResult:
    """Mean KL divergence ``KL(p_original || p_edited)`` of next-token distributions, in nats.

    ``mean`` averages over all scored tokens, so long texts weigh more. ``per_text`` contains each
    text's mean over its own tokens, in input order. ``n_tokens`` is the number of scored tokens.
    """

    mean: float
    per_text: list[float]
    n_tokens: int


def bootstrap_interval(
    values: Sequence[bool | float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile bootstrap interval ``(low, high)`` of the mean of ``values``.

    The result depends only on the values, ``confidence``, ``n_resamples`` and ``seed``.
    """
    data = _as_array(values, "values")
    means = _bootstrap_means(data, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return _percentile_interval(means, confidence)


def attack_success_rate(
    refused: Sequence[bool],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RateEstimate:
    """Return the share of harmful prompts whose reply was not refused, with its interval."""
    answered = [not flag for flag in _check_flags(refused, "refused")]
    return _rate(answered, confidence=confidence, n_resamples=n_resamples, seed=seed)


def refusal_rate(
    refused: Sequence[bool],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RateEstimate:
    """Return the share of prompts whose reply was refused, with its interval.

    On harmless prompts this is the over-refusal rate.
    """
    flags = [bool(flag) for flag in _check_flags(refused, "refused")]
    return _rate(flags, confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_difference_interval(
    before: Sequence[bool | float],
    after: Sequence[bool | float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RateEstimate:
    """Return ``mean(after) - mean(before)`` on the same prompts, with a paired bootstrap interval.

    Each resample draws prompt indices and takes both values of a drawn prompt, so the
    interval accounts for the correlation between the two measurements of one prompt. When the
    measurements agree on most prompts, it is narrower than one from independent resampling.
    """
    first = _as_array(before, "before")
    second = _as_array(after, "after")
    if first.shape != second.shape:
        raise ConfigurationError(
            f"before and after must have one value per prompt, got {first.size} and {second.size} values."
        )
    difference = second - first
    means = _bootstrap_means(difference, confidence=confidence, n_resamples=n_resamples, seed=seed)
    low, high = _percentile_interval(means, confidence)
    return RateEstimate(
        value=float(difference.mean()), low=low, high=high, n=int(difference.size), confidence=confidence
    )


def mean_kl_divergence(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    edit: SparseEdit,
    *,
    use_chat_template: bool = False,
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = True,
) -> KLResult:
    """Measure ``KL(p_original || p_edited)`` of the next-token distributions at every text token.

    Each batch is run twice, once as is and once inside ``edit.applied(model)``, which reverts the
    edit before the next batch. Only the logits of real (non-padding) tokens are kept, and only for
    the batch in flight. The divergence is computed in float32 from ``log_softmax`` in chunks of
    positions. Texts longer than ``max_length`` tokens are cut at the end. With
    ``use_chat_template`` each text is rendered as a user turn and the template tokens are scored
    too.

    Raises:
        EditStateError: ``edit`` is already applied, or it does not match the model.
    """
    if isinstance(texts, str):
        raise ConfigurationError("texts must be a sequence of strings, got a single string; wrap it in a list.")
    if len(texts) == 0:
        raise ConfigurationError("texts is empty; pass at least one text.")
    _check_batch_size(batch_size)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigurationError(f"max_length must be a positive number of tokens, got {max_length!r}.")
    edit.check_model(model)

    rendered, add_special_tokens = render_prompts(tokenizer, texts, use_chat_template=use_chat_template)
    accepted = _forward_arguments(model)
    device = _input_device(model)
    per_text_sum = [0.0] * len(texts)
    per_text_count = [0] * len(texts)

    with _eval_mode(model), torch.no_grad():
        for rows, encoded in _batches(
            tokenizer,
            rendered,
            batch_size,
            add_special_tokens=add_special_tokens,
            max_length=max_length,
            truncation_side="right",
            progress=progress,
            desc="KL divergence",
        ):
            mask = encoded["attention_mask"].to(device).bool()
            original = forward_with_positions(model, encoded, device, accepted).logits[mask]
            with edit.applied(model):
                edited = forward_with_positions(model, encoded, device, accepted).logits[mask]
            divergence = _kl_per_position(original, edited)
            del original, edited

            lengths = mask.sum(dim=1).tolist()
            for row, per_row in zip(rows, divergence.split(lengths), strict=True):
                per_text_sum[row] = float(per_row.double().sum())
                per_text_count[row] = per_row.numel()

    n_tokens = sum(per_text_count)
    return KLResult(
        mean=sum(per_text_sum) / n_tokens,
        per_text=[total / count for total, count in zip(per_text_sum, per_text_count, strict=True)],
        n_tokens=n_tokens,
    )


def _kl_per_position(original: Tensor, edited: Tensor) -> Tensor:
    """Return ``KL(softmax(original) || softmax(edited))`` per row of two ``(tokens, vocab)`` logit tensors."""
    parts = []
    for start in range(0, original.shape[0], _KL_POSITION_CHUNK):
        log_p = torch.log_softmax(original[start : start + _KL_POSITION_CHUNK].float(), dim=-1)
        log_q = torch.log_softmax(edited[start : start + _KL_POSITION_CHUNK].float(), dim=-1)
        parts.append((log_p.exp() * (log_p - log_q)).sum(dim=-1))
    return torch.cat(parts).cpu()


def _rate(flags: list[bool], *, confidence: float, n_resamples: int, seed: int) -> RateEstimate:
    low, high = bootstrap_interval(flags, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return RateEstimate(
        value=sum(flags) / len(flags), low=low, high=high, n=len(flags), confidence=confidence
    )


def _check_flags(flags: Sequence[bool], name: str) -> Sequence[bool]:
    if isinstance(flags, (str, bytes)):
        raise ConfigurationError(f"{name} must be a sequence of booleans, got a string.")
    if len(flags) == 0:
        raise ConfigurationError(f"{name} is empty; a rate needs at least one judged reply.")
    for index, flag in enumerate(flags):
        if not isinstance(flag, (bool, np.bool_)):
            raise ConfigurationError(f"{name}[{index}] must be a bool, got {type(flag).__name__} {flag!r}.")
    return flags


def _as_array(values: Sequence[bool | float], name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise ConfigurationError(f"{name} must be a sequence of numbers or booleans, got a string.")
    try:
        data = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{name} must be a sequence of numbers or booleans: {error}") from error
    if data.ndim != 1:
        raise ConfigurationError(f"{name} must be a flat sequence, got shape {data.shape}.")
    if data.size == 0:
        raise ConfigurationError(f"{name} is empty; a bootstrap interval needs at least one value.")
    if not np.all(np.isfinite(data)):
        raise ConfigurationError(f"{name} contains NaN or infinite values.")
    return data


def _bootstrap_means(values: np.ndarray, *, confidence: float, n_resamples: int, seed: int) -> np.ndarray:
    """Return ``n_resamples`` means of ``values`` resampled with replacement."""
    if not 0.0 < confidence < 1.0:
        raise ConfigurationError(f"confidence must lie strictly between 0 and 1, got {confidence!r}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigurationError(f"n_resamples must be a positive int, got {n_resamples!r}.")
    generator = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _RESAMPLE_CHUNK):
        count = min(_RESAMPLE_CHUNK, n_resamples - start)
        indices = generator.integers(0, values.size, size=(count, values.size))
        means[start : start + count] = values[indices].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
