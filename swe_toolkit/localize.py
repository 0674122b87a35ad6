"""Localization of safety neurons by effect size between harmful and harmless prompts.

A neuron is a coordinate of the MLP's hidden space (the input of the output projection). Its
score is Cohen's d between its activation on harmful and on harmless prompts, read at the
post-instruction positions and averaged over those positions, so that each prompt is one sample.
Selecting by ``|d|`` keeps neurons that fire more for harmful prompts and neurons that fire less.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import ConfigurationError, ShapeError

logger = logging.getLogger(__name__)


def cohens_d(positive: Tensor, negative: Tensor) -> Tensor:
    """Compute Cohen's d per column with the pooled standard deviation.

    Args:
        positive: ``(n1, k)`` samples of the first group (harmful prompts).
        negative: ``(n2, k)`` samples of the second group (harmless prompts).

    Returns:
        ``(k,)`` float64 tensor ``(mean1 - mean2) / s_pooled`` with
        ``s_pooled^2 = ((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2)``. The pooled deviation is
        clamped to ``1e-12``, so a constant neuron scores 0 instead of NaN.
    """
    if positive.ndim != 2 or negative.ndim != 2:
        raise ShapeError(
            f"cohens_d expects 2-D (samples, features) tensors, got {tuple(positive.shape)} "
            f"and {tuple(negative.shape)}"
        )
    if positive.shape[1] != negative.shape[1]:
        raise ShapeError(
            f"groups have {positive.shape[1]} and {negative.shape[1]} features; they must match"
        )
    n1, n2 = positive.shape[0], negative.shape[0]
    if n1 < 2 or n2 < 2:
        raise ConfigurationError(
            f"Cohen's d needs at least 2 samples per group, got {n1} harmful and {n2} harmless"
        )
    pos = positive.to(torch.float64)
    neg = negative.to(torch.float64)
    var1 = pos.var(dim=0, unbiased=True)
    var2 = neg.var(dim=0, unbiased=True)
    pooled = ((n1 - 1) * var1 + (n2 - 1) * var2) / (n1 + n2 - 2)
    diff = pos.mean(dim=0) - neg.mean(dim=0)
    return diff / pooled.sqrt().clamp_min(1e-12)


def _per_prompt(acts: Tensor) -> Tensor:
    """Average ``(n_prompts, n_pos, d_ff)`` activations over positions to ``(n_prompts, d_ff)``."""
    if acts.ndim == 3:
        return acts.to(torch.float64).mean(dim=1)
    if acts.ndim == 2:
        return acts.to(torch.float64)
    raise ShapeError(f"activations must be (prompts, positions, neurons), got {tuple(acts.shape)}")


@dataclass
class Localization:
    """Safety-neuron scores and the selected set.

    Attributes:
        scores: layer -> ``(d_ff,)`` float64 Cohen's d (positive: more active on harmful prompts).
        selected: layer -> sorted int64 neuron indices chosen at that layer (may be empty).
        selection: how the set was chosen, e.g. ``{"k": 256, "per_layer": True}``.
    """

    scores: dict[int, Tensor]
    selected: dict[int, Tensor]
    selection: dict[str, object] = field(default_factory=dict)

    @property
    def counts(self) -> dict[int, int]:
        """Number of selected neurons per layer."""
        return {layer: int(idx.numel()) for layer, idx in self.selected.items()}

    @property
    def total(self) -> int:
        """Number of selected neurons over all layers."""
        return sum(self.counts.values())

    def pairs(self) -> set[tuple[int, int]]:
        """Return the selected set as ``(layer, neuron)`` pairs, for overlap computations."""
        return {(layer, int(n)) for layer, idx in self.selected.items() for n in idx.tolist()}

    def top(self, n: int = 10) -> list[tuple[int, int, float]]:
        """Return the ``n`` highest-``|d|`` neurons over all layers as ``(layer, neuron, d)``."""
        rows = []
        for layer, scores in self.scores.items():
            k = min(n, scores.numel())
            idx = scores.abs().topk(k).indices
            rows.extend((layer, int(i), float(scores[i])) for i in idx.tolist())
        rows.sort(key=lambda row: -abs(row[2]))
        return rows[:n]


def score_neurons(
    harmful: Mapping[int, Tensor], harmless: Mapping[int, Tensor]
) -> dict[int, Tensor]:
    """Score every neuron of every layer by Cohen's d, harmful versus harmless.

    Args:
        harmful: layer -> ``(n1, n_pos, d_ff)`` or ``(n1, d_ff)`` neuron activations.
        harmless: layer -> ``(n2, n_pos, d_ff)`` or ``(n2, d_ff)``, same layers.

    Returns:
        layer -> ``(d_ff,)`` float64 scores.
    """
    if set(harmful) != set(harmless):
        raise ConfigurationError(
            f"harmful activations cover layers {sorted(harmful)} but harmless ones cover "
            f"{sorted(harmless)}; capture both at the same layers"
        )
    return {
        layer: cohens_d(_per_prompt(harmful[layer]), _per_prompt(harmless[layer]))
        for layer in sorted(harmful)
    }


def select_neurons(
    scores: Mapping[int, Tensor],
    *,
    k: int | None = None,
    fraction: float | None = None,
    per_layer: bool = True,
) -> dict[int, Tensor]:
    """Select the neurons with the largest ``|d|``.

    Exactly one of ``k`` (a count) and ``fraction`` (of the neurons in scope) must be given. With
    ``per_layer=True`` the count applies to each layer; otherwise to all layers pooled, so layers
    with stronger effects get more neurons. Ties are broken by the lower index.

    Returns:
        layer -> sorted int64 indices (every layer of ``scores`` is present, possibly empty).
    """
    if (k is None) == (fraction is None):
        raise ConfigurationError("give exactly one of k (a neuron count) or fraction (0 < f <= 1)")
    if not scores:
        raise ConfigurationError("no layer scores to select from")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ConfigurationError(f"fraction={fraction} is out of range; use 0 < fraction <= 1")
    if k is not None and k < 1:
        raise ConfigurationError(f"k={k} is invalid; select at least one neuron")

    layers = sorted(scores)
    if per_layer:
        selected = {}
        for layer in layers:
            width = scores[layer].numel()
            count = k if k is not None else max(1, round(fraction * width))
            if count > width:
                raise ConfigurationError(
                    f"k={count} exceeds the {width} neurons of layer {layer}; use k <= {width}"
                )
            selected[layer] = _top_indices(scores[layer], count)
        return selected

    flat = torch.cat([scores[layer].abs() for layer in layers])
    count = k if k is not None else max(1, round(fraction * flat.numel()))
    if count > flat.numel():
        raise ConfigurationError(
            f"k={count} exceeds the {flat.numel()} neurons of layers {layers}; "
            f"use k <= {flat.numel()}"
        )
    chosen = _top_indices(flat, count)
    selected = {}
    offset = 0
    for layer in layers:
        width = scores[layer].numel()
        in_layer = chosen[(chosen >= offset) & (chosen < offset + width)] - offset
        selected[layer] = in_layer.sort().values
        offset += width
    return selected


def _top_indices(values: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest ``|values|``, sorted ascending; ties go to lower indices."""
    order = torch.argsort(values.abs(), descending=True, stable=True)
    return order[:count].sort().values.to(torch.int64)


def localize(
    harmful: Mapping[int, Tensor],
    harmless: Mapping[int, Tensor],
    *,
    k: int | None = None,
    fraction: float | None = None,
    per_layer: bool = True,
) -> Localization:
    """Score neurons and select the safety set (see :func:`score_neurons`, :func:`select_neurons`)."""
    scores = score_neurons(harmful, harmless)
    selected = select_neurons(scores, k=k, fraction=fraction, per_layer=per_layer)
    result = Localization(
        scores=scores,
        selected=selected,
        selection={"k": k, "fraction": fraction, "per_layer": per_layer},
    )
    logger.info("selected %d safety neurons over layers %s", result.total, sorted(scores))
    return result


def jaccard(a: set | Localization, b: set | Localization) -> float:
    """Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of two neuron sets (1.0 when both are empty)."""
    set_a = a.pairs() if isinstance(a, Localization) else set(a)
    set_b = b.pairs() if isinstance(b, Localization) else set(b)
    union = set_a | set_b
    if not union:
        return 1.0
    return len(set_a & set_b) / len(union)


def jaccard_matrix(
    localizations: Mapping[str, Localization],
) -> tuple[list[str], Tensor]:
    """Pairwise Jaccard overlap of the sets selected from each language's prompts.

    Returns:
        ``(names, matrix)`` with ``matrix[i, j]`` the overlap of ``names[i]`` and ``names[j]``
        as a float64 ``(L, L)`` tensor with ones on the diagonal.
    """
    names: Sequence[str] = list(localizations)
    matrix = torch.eye(len(names), dtype=torch.float64)
    sets = {name: localizations[name].pairs() for name in names}
    for i, j in itertools.combinations(range(len(names)), 2):
        value = jaccard(sets[names[i]], sets[names[j]])
        matrix[i, j] = matrix[j, i] = value
    return list(names), matrix


def localize_by_language(
    harmful: Mapping[str, Mapping[int, Tensor]],
    harmless: Mapping[str, Mapping[int, Tensor]],
    **selection: object,
) -> dict[str, Localization]:
    """Run :func:`localize` separately on each language's parallel prompts.

    Args:
        harmful: language -> layer -> activations of that language's harmful prompts.
        harmless: language -> layer -> activations of the harmless prompts, same languages.
        **selection: ``k``, ``fraction`` and ``per_layer`` as in :func:`select_neurons`.
    """
    missing = set(harmful) ^ set(harmless)
    if missing:
        raise ConfigurationError(
            f"languages {sorted(missing)} have only harmful or only harmless activations"
        )
    return {lang: localize(harmful[lang], harmless[lang], **selection) for lang in harmful}
