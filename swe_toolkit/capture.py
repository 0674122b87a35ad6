"""Capture MLP activations at chosen token positions and accumulate their second moments.

Three sites are read per decoder layer:

- ``mlp_input``: the input of the MLP module, i.e. the normalized hidden states, ``d_model`` wide;
- ``neurons``: the input of the MLP output projection (``act(gate) * up`` or ``act(fc)``), ``d_ff`` wide;
- ``residual``: the output hidden state of the decoder block, ``d_model`` wide. This equals
  ``hidden_states[layer + 1]`` of ``output_hidden_states=True`` except at the last layer, where
  transformers applies the final norm to that entry and this module does not.

Prompts are run in left-padded batches sorted by length, with explicit position ids so that padding
does not shift absolute position embeddings (GPT-2). Every forward pass stops right after the
deepest requested layer, so reading layer 3 of a 28-layer model costs about 4 layers of compute.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from swe_toolkit.errors import ConfigurationError
from swe_toolkit.hooks import capture_inputs, capture_outputs, stop_after
from swe_toolkit.models.adapters import ArchitectureAdapter, LayerMLP, get_adapter
from swe_toolkit.prompts import (
    POSITION_MODES,
    PromptPositions,
    format_prompts,
    has_chat_template,
    prompt_positions,
    tokenize_batch,
)

__all__ = [
    "SITES",
    "Activations",
    "SecondMoments",
    "accumulate_second_moments",
    "capture_activations",
]

SITES: tuple[str, ...] = ("mlp_input", "neurons", "residual")
_MOMENT_SITES: tuple[str, ...] = ("mlp_input", "neurons")


@dataclass
class Activations:
    """Activations of a set of prompts, per site and layer, each ``(n_prompts, n_pos, dim)`` float32.

    ``positions`` is the mode that was applied, which is ``"last"`` when ``"post_instruction"`` was
    requested but no chat template suffix exists. ``n_pos`` is ``len(suffix_ids)`` for
    ``"post_instruction"`` and 1 otherwise. Rows follow the order of the input prompts. Sites that
    were not requested map to empty dicts. ``neurons[layer]`` has ``len(neuron_subset[layer])``
    columns, in subset order, when a subset was given for that layer.
    """

    layers: list[int]
    positions: str
    mlp_input: dict[int, Tensor]
    neurons: dict[int, Tensor]
    residual: dict[int, Tensor]
    suffix_ids: list[int]
    neuron_subset: dict[int, Tensor] = field(default_factory=dict)

    def site(self, name: str) -> dict[int, Tensor]:
        """Return the per-layer tensors of site ``name``."""
        if name not in SITES:
            raise ConfigurationError(f"Unknown site {name!r}; expected one of {', '.join(SITES)}.")
        return getattr(self, name)


@dataclass
class SecondMoments:
    """Streaming sums over tokens of one site and layer: ``matrix = sum x x^T``, ``sum = sum x``.

    ``matrix`` is ``(dim, dim)`` and ``sum`` ``(dim,)``, both float64; ``count`` is the number of
    tokens. ``neurons`` contains the neuron indices when the site was restricted to a subset.
    """

    layer: int
    site: str
    matrix: Tensor
    sum: Tensor
    count: int
    neurons: Tensor | None = None

    @property
    def mean(self) -> Tensor:
        """Mean activation over all tokens, ``(dim,)``."""
        return self.sum / self._checked_count()

    @property
    def normalized(self) -> Tensor:
        """Uncentered second moment ``E[x x^T]``, ``(dim, dim)``."""
        return self.matrix / self._checked_count()

    @property
    def covariance(self) -> Tensor:
        """Population covariance ``E[x x^T] - E[x] E[x]^T`` (divided by ``count``, not ``count - 1``)."""
        mean = self.mean
        return self.normalized - torch.outer(mean, mean)

    def merged(self, other: SecondMoments) -> SecondMoments:
        """Return the moments of both token sets together (same layer, site and neurons)."""
        same_neurons = (self.neurons is None and other.neurons is None) or (
            self.neurons is not None and other.neurons is not None and torch.equal(self.neurons, other.neurons)
        )
        if (self.layer, self.site) != (other.layer, other.site) or not same_neurons:
            raise ConfigurationError(
                f"Cannot merge moments of layer {self.layer} site {self.site!r} with layer {other.layer} "
                f"site {other.site!r}; they must cover the same layer, site and neurons."
            )
        return SecondMoments(
            layer=self.layer,
            site=self.site,
            matrix=self.matrix + other.matrix.to(self.matrix.device),
            sum=self.sum + other.sum.to(self.sum.device),
            count=self.count + other.count,
            neurons=self.neurons,
        )

    def _checked_count(self) -> int:
        if self.count <= 0:
            raise ConfigurationError(f"No tokens were accumulated for site {self.site!r} at layer {self.layer}.")
        return self.count


def capture_activations(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    sites: Sequence[str] = SITES,
    positions: str = "post_instruction",
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    adapter: ArchitectureAdapter | None = None,
    neuron_subset: Mapping[int, Tensor] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> Activations:
    """Run ``prompts`` through ``model`` and store activations of ``sites`` at ``layers``.

    ``positions`` is ``"post_instruction"`` (the chat template tokens after the user message),
    ``"last"`` (the last prompt token) or ``"mean"`` (the mean over all non-padding prompt tokens).
    Negative layer indices count from the end and are stored normalized in ``Activations.layers``.
    ``neuron_subset`` maps a layer to the neuron indices kept for the ``neurons`` site.

    The output tensors are preallocated on ``device``, which defaults to the device of the model's
    input embeddings, and stay there. Each batch is written into them with one ``index_copy_`` per
    site and layer. The model is put in eval mode for the call and restored afterwards.
    """
    prompts = _check_texts(prompts, "prompts")
    sites = _check_sites(sites, SITES)
    if positions not in POSITION_MODES:
        raise ConfigurationError(f"Unknown positions {positions!r}; expected one of {', '.join(POSITION_MODES)}.")
    _check_batch_size(batch_size)
    adapter = adapter if adapter is not None else get_adapter(model)
    layer_indices = _normalize_layers(adapter, layers)
    subsets = _check_neuron_subset(adapter, neuron_subset, layer_indices)

    templated = use_chat_template and has_chat_template(tokenizer)
    position_spec = prompt_positions(
        tokenizer, positions, use_chat_template=templated, system_prompt=system_prompt if templated else None
    )
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, use_chat_template=use_chat_template)

    input_device = _input_device(model)
    output_device = torch.device(device) if device is not None else input_device
    buffers: dict[str, dict[int, Tensor]] = {site: {} for site in SITES}
    for site in sites:
        for index in layer_indices:
            width = _site_width(adapter.layer(index), site, subsets.get(index))
            buffers[site][index] = torch.empty(
                (len(texts), position_spec.num_positions, width), dtype=torch.float32, device=output_device
            )

    batch = _BatchState()

    def write(key: tuple[str, int], tensor: Tensor) -> None:
        site, index = key
        batch.fired.add(key)
        if site == "neurons" and index in subsets:
            tensor = tensor.index_select(-1, subsets[index])
        selected = position_spec.select(tensor, batch.attention_mask)
        buffers[site][index].index_copy_(0, batch.rows, selected.to(device=output_device, dtype=torch.float32))

    input_modules, output_modules = _hook_modules(adapter, sites, layer_indices)
    stop_module = _stop_module(adapter, sites, layer_indices)
    accepted = _accepted_arguments(model)

    with _eval_mode(model), torch.no_grad():
        with capture_inputs(input_modules, write), capture_outputs(output_modules, write):
            for rows, encoded in _batches(
                tokenizer, texts, batch_size, add_special_tokens=not templated, progress=progress, desc="capture"
            ):
                _check_positions(position_spec, encoded, rows, prompts)
                batch.start(rows, encoded["attention_mask"], output_device)
                _forward(model, encoded, input_device, stop_module, accepted)
                batch.check_fired(input_modules.keys() | output_modules.keys())

    return Activations(
        layers=layer_indices,
        positions=position_spec.mode,
        mlp_input=buffers["mlp_input"],
        neurons=buffers["neurons"],
        residual=buffers["residual"],
        suffix_ids=list(position_spec.suffix_ids),
        neuron_subset={index: subset.cpu() for index, subset in subsets.items()},
    )


def accumulate_second_moments(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "mlp_input",
    neuron_subset: Mapping[int, Tensor] | None = None,
    use_chat_template: bool = False,
    batch_size: int = 8,
    max_length: int | None = 256,
    adapter: ArchitectureAdapter | None = None,
    progress: bool = True,
) -> dict[int, SecondMoments]:
    """Accumulate ``sum x x^T``, ``sum x`` and the token count over every non-padding token.

    ``site`` is ``"mlp_input"`` or ``"neurons"``. Memory is independent of the number of tokens:
    each batch is folded into float64 accumulators of size ``dim x dim`` per layer, where ``dim`` is
    ``d_model``, ``d_ff`` or ``len(neuron_subset[layer])``. A full ``neurons`` matrix is large
    (``d_ff = 18944`` needs 2.9 GB per layer), so pass a subset for big models. Accumulators live on
    the device of the layer's weights, except on MPS, which lacks float64, where they live on the CPU.

    Texts longer than ``max_length`` tokens are truncated at the end; ``None`` disables truncation.
    With ``use_chat_template`` each text is rendered as a user turn first.
    """
    texts = _check_texts(texts, "texts")
    (site,) = _check_sites([site], _MOMENT_SITES)
    _check_batch_size(batch_size)
    adapter = adapter if adapter is not None else get_adapter(model)
    layer_indices = _normalize_layers(adapter, layers)
    subsets = _check_neuron_subset(adapter, neuron_subset, layer_indices)
    if subsets and site != "neurons":
        raise ConfigurationError(f"neuron_subset applies to site 'neurons' only, but site is {site!r}.")

    templated = use_chat_template and has_chat_template(tokenizer)
    rendered = format_prompts(tokenizer, texts, use_chat_template=use_chat_template)

    moments: dict[int, SecondMoments] = {}
    for index in layer_indices:
        layer = adapter.layer(index)
        subset = subsets.get(index)
        width = _site_width(layer, site, subset)
        accumulator_device = layer.output.weight.device
        if accumulator_device.type == "mps":
            accumulator_device = torch.device("cpu")
        moments[index] = SecondMoments(
            layer=index,
            site=site,
            matrix=torch.zeros((width, width), dtype=torch.float64, device=accumulator_device),
            sum=torch.zeros(width, dtype=torch.float64, device=accumulator_device),
            count=0,
            neurons=subset.cpu() if subset is not None else None,
        )

    batch = _BatchState()

    def accumulate(key: tuple[str, int], tensor: Tensor) -> None:
        _, index = key
        batch.fired.add(key)
        if index in subsets:
            tensor = tensor.index_select(-1, subsets[index])
        target = moments[index]
        mask = batch.attention_mask.to(tensor.device).bool()
        tokens = tensor[mask].to(device=target.matrix.device, dtype=torch.float64)
        target.matrix.addmm_(tokens.T, tokens)
        target.sum.add_(tokens.sum(dim=0))
        target.count += tokens.shape[0]

    input_modules, _ = _hook_modules(adapter, [site], layer_indices)
    stop_module = _stop_module(adapter, [site], layer_indices)
    accepted = _accepted_arguments(model)
    input_device = _input_device(model)

    with _eval_mode(model), torch.no_grad(), capture_inputs(input_modules, accumulate):
        for rows, encoded in _batches(
            tokenizer,
            rendered,
            batch_size,
            add_special_tokens=not templated,
            max_length=max_length,
            truncation_side="right",
            progress=progress,
            desc="second moments",
        ):
            batch.start(rows, encoded["attention_mask"], input_device)
            _forward(model, encoded, input_device, stop_module, accepted)
            batch.check_fired(input_modules.keys())

    return moments


class _BatchState:
    """Rows and attention mask of the batch in flight, read by the hook callbacks."""

    def __init__(self) -> None:
        self.rows = torch.empty(0, dtype=torch.long)
        self.attention_mask = torch.empty(0, 0, dtype=torch.long)
        self.fired: set[tuple[str, int]] = set()

    def start(self, rows: list[int], attention_mask: Tensor, device: torch.device) -> None:
        self.rows = torch.tensor(rows, dtype=torch.long, device=device)
        self.attention_mask = attention_mask.to(device)
        self.fired = set()

    def check_fired(self, keys: Any) -> None:
        missing = sorted(set(keys) - self.fired)
        if missing:
            raise ConfigurationError(
                f"Hooks for (site, layer) {missing} did not run during the forward pass; the adapter's "
                "template names modules that the model does not call."
            )


def _batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    *,
    add_special_tokens: bool,
    max_length: int | None = None,
    truncation_side: str = "left",
    progress: bool,
    desc: str,
) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Yield ``(row indices, left-padded CPU batch)``, longest texts first to limit padding."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
    if max_length is not None:
        lengths = [min(length, max_length) for length in lengths]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])

    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        rows = order[start : start + batch_size]
        encoded = tokenize_batch(
            tokenizer,
            [texts[i] for i in rows],
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            truncation_side=truncation_side,
        )
        yield rows, encoded


def _forward(
    model: nn.Module,
    encoded: dict[str, Tensor],
    input_device: torch.device,
    stop_module: nn.Module,
    accepted: frozenset[str],
) -> None:
    input_ids = encoded["input_ids"].to(input_device)
    attention_mask = encoded["attention_mask"].to(input_device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "position_ids" in accepted:
        # Count positions from the first real token, as generate() does for left-padded batches.
        kwargs["position_ids"] = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    with stop_after(stop_module):
        model(**kwargs)


def _accepted_arguments(model: nn.Module) -> frozenset[str]:
    """Return which of the optional arguments ``position_ids`` and ``use_cache`` ``model.forward`` accepts.

    A forward with ``**kwargs`` (e.g. a wrapper that passes them on to the model) is assumed to
    accept both.
    """
    parameters = inspect.signature(model.forward).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return frozenset({"position_ids", "use_cache"})
    return frozenset(name for name in ("position_ids", "use_cache") if name in parameters)


def _hook_modules(
    adapter: ArchitectureAdapter, sites: Sequence[str], layer_indices: Sequence[int]
) -> tuple[dict[tuple[str, int], nn.Module], dict[tuple[str, int], nn.Module]]:
    """Split the hooked modules into those read by input (pre-hook) and by output (forward hook)."""
    inputs: dict[tuple[str, int], nn.Module] = {}
    outputs: dict[tuple[str, int], nn.Module] = {}
    for index in layer_indices:
        layer = adapter.layer(index)
        if "mlp_input" in sites:
            inputs[("mlp_input", index)] = layer.mlp
        if "neurons" in sites:
            inputs[("neurons", index)] = layer.output.module
        if "residual" in sites:
            outputs[("residual", index)] = layer.block
    return inputs, outputs


def _stop_module(adapter: ArchitectureAdapter, sites: Sequence[str], layer_indices: Sequence[int]) -> nn.Module:
    """Return the module after which the forward pass can stop: the deepest block or MLP needed."""
    deepest = adapter.layer(max(layer_indices))
    return deepest.block if "residual" in sites else deepest.mlp


def _site_width(layer: LayerMLP, site: str, subset: Tensor | None) -> int:
    if site == "neurons":
        return layer.d_ff if subset is None else subset.numel()
    return layer.d_model


def _check_positions(
    spec: PromptPositions, encoded: dict[str, Tensor], rows: list[int], prompts: Sequence[str]
) -> None:
    """Check that the last ``num_positions`` tokens of every row are real and, for the suffix, equal it."""
    if spec.mode == "mean":
        return
    tail_mask = encoded["attention_mask"][:, -spec.num_positions :]
    tail_ids = encoded["input_ids"][:, -spec.num_positions :]
    expected = torch.tensor(spec.suffix_ids, dtype=torch.long) if spec.mode == "post_instruction" else None
    for row, prompt_index in enumerate(rows):
        if not bool(tail_mask[row].all()):
            raise ConfigurationError(
                f"Prompt {prompt_index} ({prompts[prompt_index]!r}) has fewer than {spec.num_positions} tokens."
            )
        if expected is not None and not torch.equal(tail_ids[row], expected):
            raise ConfigurationError(
                f"Prompt {prompt_index} ({prompts[prompt_index]!r}) does not end with the post-instruction "
                f"suffix ids {spec.suffix_ids}; its last ids are {tail_ids[row].tolist()}."
            )


def _normalize_layers(adapter: ArchitectureAdapter, layers: Sequence[int]) -> list[int]:
    if isinstance(layers, int):
        layers = [layers]
    if len(layers) == 0:
        raise ConfigurationError(f"layers is empty; pass at least one index in 0..{adapter.num_layers - 1}.")
    normalized: list[int] = []
    for index in layers:
        resolved = adapter.layer(index).index
        if resolved not in normalized:
            normalized.append(resolved)
    return normalized


def _check_neuron_subset(
    adapter: ArchitectureAdapter, neuron_subset: Mapping[int, Tensor] | None, layer_indices: Sequence[int]
) -> dict[int, Tensor]:
    """Validate the subset and return it keyed by normalized layer, on the device of each layer's weights."""
    if not neuron_subset:
        return {}
    subsets: dict[int, Tensor] = {}
    for key, neurons in neuron_subset.items():
        layer = adapter.layer(key)
        if layer.index not in layer_indices:
            raise ConfigurationError(
                f"neuron_subset has an entry for layer {key}, which is not among the requested layers {layer_indices}."
            )
        index = torch.as_tensor(neurons, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise ConfigurationError(
                f"neuron_subset[{key}] must be a non-empty 1-D tensor of neuron indices, "
                f"got shape {tuple(index.shape)}."
            )
        if int(index.min()) < 0 or int(index.max()) >= layer.d_ff:
            raise ConfigurationError(
                f"neuron_subset[{key}] must lie in [0, {layer.d_ff}), "
                f"got min {int(index.min())} and max {int(index.max())}."
            )
        subsets[layer.index] = index.to(layer.output.weight.device)
    return subsets


def _check_texts(texts: Sequence[str], name: str) -> Sequence[str]:
    if isinstance(texts, str):
        raise ConfigurationError(f"{name} must be a sequence of strings, got a single string; wrap it in a list.")
    if len(texts) == 0:
        raise ConfigurationError(f"{name} is empty; pass at least one string.")
    return texts


def _check_sites(sites: Sequence[str], allowed: Sequence[str]) -> list[str]:
    if isinstance(sites, str):
        sites = [sites]
    if len(sites) == 0:
        raise ConfigurationError(f"sites is empty; choose from {', '.join(allowed)}.")
    unknown = [site for site in sites if site not in allowed]
    if unknown:
        raise ConfigurationError(f"Unknown site(s) {unknown}; expected one of {', '.join(allowed)}.")
    return list(dict.fromkeys(sites))


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}.")


def _input_device(model: nn.Module) -> torch.device:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and getattr(embeddings, "weight", None) is not None:
        return embeddings.weight.device
    return next(model.parameters()).device


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
