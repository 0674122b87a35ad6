"""Reusing captured activations across many fits on the same, unchanged model.

A sweep over edit settings (neuron counts, ranks, penalty weights, constraints) fits many edits
from the same prompts at the same layer. Every fit of :func:`swe_toolkit.fit.fit_edit` captures
the same activations again, which costs far more than the solve. :class:`ActivationCache` keeps
them:

* per-prompt activations are stored at full width (all ``d_ff`` neurons) and sliced to the
  neuron subset each fit requests;
* second moments are stored per neuron subset. When a second subset of the same layer and texts
  is requested, the full-width moment is accumulated once and every later subset is sliced from
  it. A full ``d_ff x d_ff`` float64 matrix takes ``8 d_ff^2`` bytes, 0.64 GB for ``d_ff = 8960``.

A capture is only valid for the model state it was taken from. The cache hashes every parameter
and buffer (SHA-256 of its bytes) when it stores its first entry. Before each lookup it re-hashes
the tensors whose version counter or storage moved since: in-place torch operations such as
:meth:`swe_toolkit.edit.SparseEdit.apply` and ``load_state_dict`` move them. An edit that was
applied and reverted restores the bytes, so the cache stays valid. Any other change empties it,
with a log message. The first hash reads every weight once (about 1 GB/s on a CPU). The cache also
empties when forward hooks are added or removed (on any module or globally) or when the
tokenizer's chat template changes.

NOTE: writes through ``tensor.data`` move no version counter, so the cache cannot see them. Call
:meth:`ActivationCache.clear` after changing weights that way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .capture import SITES, SecondMoments, _check_neuron_subset, accumulate_second_moments, capture_activations
from .errors import ConfigurationError
from .models.adapters import get_adapter

__all__ = ["ActivationCache"]

logger = logging.getLogger(__name__)


def _digest(tensor: Tensor) -> str:
    """SHA-256 hex digest of a tensor's bytes (copied to the CPU when needed)."""
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    raw = data.contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy()).hexdigest()


def _hook_ids(model: nn.Module) -> frozenset[tuple[int, str, int]]:
    """Identify every forward hook and pre-hook that can run in ``model``, global ones included."""
    ids = {(0, "global", key) for key in torch.nn.modules.module._global_forward_hooks}
    ids |= {(0, "global-pre", key) for key in torch.nn.modules.module._global_forward_pre_hooks}
    for module in model.modules():
        ids |= {(id(module), "forward", key) for key in module._forward_hooks}
        ids |= {(id(module), "pre", key) for key in module._forward_pre_hooks}
    return frozenset(ids)


def _as_index(neurons: Any) -> Tensor:
    return torch.as_tensor(neurons, dtype=torch.int64)


class ActivationCache:
    """Captures of one model and tokenizer, kept while the model's weights stay the same.

    Pass it to :func:`swe_toolkit.fit.fit_edit` as ``cache=``, and the fit reads the activations
    of its first edited layer from here. Later layers see the earlier layers' edits, so they are
    always captured afresh. Memory grows with every distinct set of prompts and layer; call
    :meth:`clear` to free it.

    Args:
        model: the model the captures come from.
        tokenizer: its tokenizer.
        batch_size: prompts per forward pass.
        max_length: tokens kept per general text when accumulating second moments.
        progress: show tqdm bars while capturing.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        max_length: int | None = 256,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.progress = progress
        self._activations: dict[tuple[Any, ...], Tensor] = {}
        self._moments: dict[tuple[Any, ...], SecondMoments] = {}
        self._digests: dict[str, str] = {}
        self._versions: dict[str, tuple[int, int]] = {}
        self._hooks: frozenset[tuple[int, str, int]] = frozenset()
        self._chat_template: Any = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._activations) + len(self._moments)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} entries, {self.hits} hits, {self.misses} misses)"

    def clear(self) -> None:
        """Drop every stored capture and the weight hashes."""
        self._activations.clear()
        self._moments.clear()
        self._digests.clear()
        self._versions.clear()

    # --- validity ------------------------------------------------------------------------------

    def _tensors(self) -> dict[str, Tensor]:
        tensors = {f"parameter {name}": value for name, value in self.model.named_parameters()}
        tensors |= {f"buffer {name}": value for name, value in self.model.named_buffers()}
        return tensors

    def _record_weights(self) -> None:
        tensors = self._tensors()
        self._digests = {name: _digest(value) for name, value in tensors.items()}
        self._versions = {name: (value._version, value.data_ptr()) for name, value in tensors.items()}
        self._hooks = _hook_ids(self.model)
        self._chat_template = getattr(self.tokenizer, "chat_template", None)

    def _check_weights(self) -> None:
        """Empty the cache when the model's weights or hooks differ from when it was filled."""
        if not self._digests:
            return
        tensors = self._tensors()
        changed = []
        if set(tensors) != set(self._digests):
            changed.append("the set of parameters and buffers")
        else:
            for name, value in tensors.items():
                state = (value._version, value.data_ptr())
                if state == self._versions[name]:
                    continue
                if _digest(value) != self._digests[name]:
                    changed.append(name)
                    break
                self._versions[name] = state
        if not changed and _hook_ids(self.model) != self._hooks:
            changed.append("the forward hooks")
        if not changed and getattr(self.tokenizer, "chat_template", None) != self._chat_template:
            changed.append("the chat template")
        if changed:
            logger.info("the model changed since the activation cache was filled (%s); emptying it", changed[0])
            self.clear()

    def _ensure_recorded(self) -> None:
        if not self._digests:
            self._record_weights()

    def _check_layer(self, layer: int) -> int:
        """Return ``layer`` as a non-negative index, or raise ConfigurationError."""
        return get_adapter(self.model).layer(int(layer)).index

    def _check_neurons(self, neurons: Any, layer: int) -> Tensor:
        """Return ``neurons`` as a valid 1-D int64 index of ``layer``'s neurons."""
        return _check_neuron_subset(get_adapter(self.model), {layer: _as_index(neurons)}, [layer])[layer].cpu()

    # --- lookups -------------------------------------------------------------------------------

    def activations(
        self,
        prompts: Sequence[str],
        layer: int,
        sites: Sequence[str],
        *,
        neurons: Tensor | None = None,
        positions: str = "post_instruction",
    ) -> dict[str, Tensor]:
        """Return ``site -> (n_prompts, n_pos, width)`` float32 activations of ``prompts`` at ``layer``.

        Missing sites are captured together in one pass. ``neurons`` selects columns of the
        ``neurons`` site (in the given order); other sites are returned whole. The returned tensors
        are the stored ones or slices of them: do not modify them in place.
        """
        if isinstance(prompts, str) or isinstance(sites, str):
            raise ConfigurationError("prompts and sites must be sequences of strings, not a single string")
        prompts = list(prompts)
        unknown = [site for site in sites if site not in SITES]
        if unknown:
            raise ConfigurationError(f"unknown site {unknown[0]!r}; expected one of {', '.join(SITES)}")
        layer = self._check_layer(layer)
        if neurons is not None and "neurons" in sites:
            neurons = self._check_neurons(neurons, layer)
        self._check_weights()
        base = (tuple(prompts), layer, positions)
        missing = [site for site in dict.fromkeys(sites) if (*base, site) not in self._activations]
        if missing:
            self.misses += 1
            captured = capture_activations(
                self.model, self.tokenizer, prompts, [layer], sites=missing, positions=positions,
                batch_size=self.batch_size, progress=self.progress,
            )
            self._ensure_recorded()
            for site in missing:
                self._activations[(*base, site)] = captured.site(site)[layer]
        else:
            self.hits += 1
        result = {}
        for site in sites:
            value = self._activations[(*base, site)]
            if site == "neurons" and neurons is not None:
                value = value.index_select(-1, neurons.to(device=value.device, dtype=torch.int64))
            result[site] = value
        return result

    def second_moment(
        self, texts: Sequence[str], layer: int, site: str, *, neurons: Tensor | None = None
    ) -> SecondMoments:
        """Return the second moment of ``site`` at ``layer`` over every token of ``texts``.

        ``neurons`` restricts the ``neurons`` site to a subset (the matrix rows and columns follow
        its order). See the module docstring for when the full-width moment is accumulated. The
        returned moment may be the stored one: do not modify it in place.
        """
        if isinstance(texts, str):
            raise ConfigurationError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        if neurons is not None and site != "neurons":
            raise ConfigurationError(f"neurons applies to the 'neurons' site only, but site is {site!r}")
        layer = self._check_layer(layer)
        if neurons is not None:
            neurons = self._check_neurons(neurons, layer)
        self._check_weights()
        base = (tuple(texts), layer, site)
        subset = None if neurons is None else tuple(int(n) for n in neurons.tolist())
        if (*base, subset) in self._moments:
            self.hits += 1
            return self._moments[(*base, subset)]
        full = self._moments.get((*base, None))
        if full is None:
            self.misses += 1
            earlier = [key for key in self._moments if key[:3] == base]
            # The first subset of a layer is accumulated on its own; from the second one on, the
            # full-width moment serves every subset.
            accumulate_full = subset is None or bool(earlier)
            index = None if accumulate_full else {layer: neurons}
            moments = accumulate_second_moments(
                self.model, self.tokenizer, texts, [layer], site=site, neuron_subset=index,
                batch_size=self.batch_size, max_length=self.max_length, progress=self.progress,
            )[layer]
            self._ensure_recorded()
            if not accumulate_full:
                self._moments[(*base, subset)] = moments
                return moments
            for key in earlier:
                del self._moments[key]
            self._moments[(*base, None)] = full = moments
        else:
            self.hits += 1
        if subset is None:
            return full
        return _slice_moments(full, neurons)


def _slice_moments(full: SecondMoments, neurons: Tensor) -> SecondMoments:
    """Restrict a full-width moment to ``neurons`` (rows and columns in that order)."""
    index = neurons.to(device=full.matrix.device, dtype=torch.int64)
    return SecondMoments(
        layer=full.layer,
        site=full.site,
        matrix=full.matrix.index_select(0, index).index_select(1, index),
        sum=full.sum.index_select(0, index),
        count=full.count,
        neurons=neurons.detach().cpu().to(torch.int64),
    )


def check_cache(cache: ActivationCache | None, model: nn.Module, tokenizer: Any) -> None:
    """Raise :class:`ConfigurationError` unless ``cache`` is ``None`` or belongs to this model and tokenizer."""
    if cache is None:
        return
    if not isinstance(cache, ActivationCache):
        raise ConfigurationError(
            f"cache must be an ActivationCache or None, got {type(cache).__name__}; "
            "make one with ActivationCache(model, tokenizer)"
        )
    if cache.model is not model or cache.tokenizer is not tokenizer:
        mismatch = "model" if cache.model is not model else "tokenizer"
        raise ConfigurationError(
            f"the activation cache was made for another {mismatch}; make one with ActivationCache(model, tokenizer)"
        )

