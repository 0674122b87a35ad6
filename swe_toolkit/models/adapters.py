"""Locate the MLP of every decoder layer and expose its weights indexed by neuron.

An MLP neuron is one coordinate of the input of the MLP's output projection. For gated MLPs
(Llama, Qwen, Mistral, Gemma) that input is ``act(gate_proj(x)) * up_proj(x)``, so neuron ``j`` owns
row ``j`` of ``gate_proj`` and of ``up_proj`` and column ``j`` of ``down_proj``. For GPT-2 and
GPT-NeoX it is ``act(fc(x))`` with a single input projection.

GPT-2 stores its projections as ``transformers.pytorch_utils.Conv1D``, whose weight has shape
``(in_features, out_features)``, the transpose of ``nn.Linear``. :class:`WeightView` hides that
difference: slices always come back in ``nn.Linear`` orientation.

Architectures are detected from ``config.model_type``. For any other model, pass a
:class:`ModuleTemplate` with the module names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from swe_toolkit.errors import ConfigurationError, ShapeError, UnsupportedArchitectureError

__all__ = [
    "ArchitectureAdapter",
    "LayerMLP",
    "ModuleTemplate",
    "WeightView",
    "get_adapter",
    "SUPPORTED_MODEL_TYPES",
]


@dataclass(frozen=True)
class ModuleTemplate:
    """Module names of a decoder's MLPs, as attribute paths.

    ``layers`` is relative to the model passed to the adapter, ``mlp`` to one decoder block, and
    ``inputs`` and ``output`` to the MLP module.
    """

    layers: str
    mlp: str
    inputs: tuple[str, ...]
    output: str

    def __post_init__(self) -> None:
        # Accept a list or a single string for `inputs`, and store a tuple so the template stays hashable.
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        object.__setattr__(self, "inputs", inputs)
        if not self.layers or not self.mlp or not self.output or not inputs or not all(inputs):
            raise ConfigurationError(
                f"Invalid ModuleTemplate {self!r}: layers, mlp, inputs and output must all be non-empty "
                "attribute paths, e.g. ModuleTemplate(layers='model.layers', mlp='mlp', "
                "inputs=('gate_proj', 'up_proj'), output='down_proj')."
            )


_GATED_DECODER = ModuleTemplate(
    layers="model.layers", mlp="mlp", inputs=("gate_proj", "up_proj"), output="down_proj"
)

# Module names per `config.model_type`, checked against transformers 5.25.
_TEMPLATES: dict[str, ModuleTemplate] = {
    "qwen2": _GATED_DECODER,
    "qwen3": _GATED_DECODER,
    "llama": _GATED_DECODER,
    "mistral": _GATED_DECODER,
    "gemma": _GATED_DECODER,
    "gemma2": _GATED_DECODER,
    "gpt2": ModuleTemplate(layers="transformer.h", mlp="mlp", inputs=("c_fc",), output="c_proj"),
    "gpt_neox": ModuleTemplate(
        layers="gpt_neox.layers", mlp="mlp", inputs=("dense_h_to_4h",), output="dense_4h_to_h"
    ),
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_TEMPLATES))


@dataclass(frozen=True)
class WeightView:
    """A projection weight with a known neuron axis.

    The module is either ``nn.Linear``-like, with weight ``(out_features, in_features)``, or a
    ``Conv1D``, with weight ``(in_features, out_features)``. ``neuron_axis`` is the weight axis indexed
    by MLP neuron: the output-feature axis for an input projection, the input-feature axis for the
    output projection.
    """

    name: str
    module: nn.Module
    neuron_axis: int

    def __post_init__(self) -> None:
        weight = getattr(self.module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ConfigurationError(
                f"Module {self.name!r} ({type(self.module).__name__}) has no 2-D weight; "
                "an MLP projection must be nn.Linear or transformers Conv1D."
            )
        if self.neuron_axis not in (0, 1):
            raise ConfigurationError(f"neuron_axis of {self.name!r} must be 0 or 1, got {self.neuron_axis}.")

    @property
    def weight(self) -> nn.Parameter:
        """The module's weight parameter, in its stored orientation."""
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The module's bias parameter, or None when the projection has no bias."""
        return getattr(self.module, "bias", None)

    @property
    def is_conv1d(self) -> bool:
        """True when the weight is stored as ``(in_features, out_features)``."""
        return isinstance(self.module, Conv1D)

    @property
    def is_input_projection(self) -> bool:
        """True when neurons index the output features (gate, up or fc), False for the output projection."""
        output_feature_axis = 1 if self.is_conv1d else 0
        return self.neuron_axis == output_feature_axis

    @property
    def num_neurons(self) -> int:
        """Size of the neuron axis (``d_ff``)."""
        return self.weight.shape[self.neuron_axis]

    def neuron_slice(self, neurons: Tensor | Sequence[int]) -> Tensor:
        """Copy the weights of the given neurons in ``nn.Linear`` orientation.

        Returns ``(len(neurons), d_model)`` for an input projection and ``(d_model, len(neurons))``
        for the output projection, in the parameter's dtype and on its device.
        """
        index = self._index(neurons)
        selected = self.weight.detach().index_select(self.neuron_axis, index)
        if self.is_conv1d:
            selected = selected.t()
        return selected.clone()

    def write_neuron_slice(self, neurons: Tensor | Sequence[int], values: Tensor) -> None:
        """Overwrite the weights of the given neurons in place; ``values`` has the shape :meth:`neuron_slice` returns.

        ``values`` is cast to the parameter's dtype and device. Duplicate neuron indices are rejected
        because the write order between them would be undefined.
        """
        index = self._index(neurons)
        if torch.unique(index).numel() != index.numel():
            raise ConfigurationError(f"Neuron indices for {self.name!r} contain duplicates: {index.tolist()}.")

        d_model = self.weight.shape[1 - self.neuron_axis]
        expected_shape = (index.numel(), d_model) if self.is_input_projection else (d_model, index.numel())
        if tuple(values.shape) != expected_shape:
            raise ShapeError(
                f"Values for {index.numel()} neurons of {self.name!r} must have shape {expected_shape}, "
                f"got {tuple(values.shape)}."
            )

        stored = values.detach().to(device=self.weight.device, dtype=self.weight.dtype)
        if self.is_conv1d:
            stored = stored.t()
        with torch.no_grad():
            self.weight.index_copy_(self.neuron_axis, index, stored.contiguous())

    def _index(self, neurons: Tensor | Sequence[int]) -> Tensor:
        index = torch.as_tensor(neurons, dtype=torch.long, device=self.weight.device)
        if index.dim() != 1:
            raise ShapeError(f"Neuron indices for {self.name!r} must be 1-D, got shape {tuple(index.shape)}.")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_neurons):
            raise ConfigurationError(
                f"Neuron indices for {self.name!r} must lie in [0, {self.num_neurons}), "
                f"got min {int(index.min())} and max {int(index.max())}."
            )
        return index


@dataclass(frozen=True)
class LayerMLP:
    """The MLP of one decoder layer and its projections.

    A forward pre-hook on ``mlp`` receives the MLP input (the normalized hidden states), and one on
    ``output.module`` receives the neuron activations ``(batch, seq, d_ff)``.
    """

    index: int
    block: nn.Module
    mlp: nn.Module
    inputs: tuple[WeightView, ...]
    output: WeightView
    d_model: int
    d_ff: int


class ArchitectureAdapter:
    """Find the decoder blocks and MLP projections of a transformers causal LM.

    The layout is looked up by ``model.config.model_type`` unless ``template`` is given, which
    takes precedence. Paths that start with the model's ``base_model_prefix`` also resolve on the
    bare base model (for example ``model.layers`` on a ``Qwen2Model``).
    """

    def __init__(self, model: nn.Module, template: ModuleTemplate | None = None) -> None:
        config = getattr(model, "config", None)
        self.model = model
        self.model_type: str = str(getattr(config, "model_type", "") or type(model).__name__)
        self.template = template if template is not None else self._detect_template(model)

        self._blocks_path, blocks = self._resolve_layer_list(model, self.template.layers)
        self._layers = tuple(self._build_layer(i, block) for i, block in enumerate(blocks))
        if not self._layers:
            raise ConfigurationError(f"The module list {self._blocks_path!r} of {type(model).__name__} is empty.")

        first = self._layers[0]
        self.num_layers: int = len(self._layers)
        self.d_model: int = first.d_model
        self.d_ff: int = first.d_ff

    def layer(self, i: int) -> LayerMLP:
        """Return layer ``i``; negative indices count from the last layer as in Python sequences."""
        if isinstance(i, bool) or not isinstance(i, int):
            raise ConfigurationError(f"Layer index must be an int, got {type(i).__name__} {i!r}.")
        if not -self.num_layers <= i < self.num_layers:
            raise ConfigurationError(
                f"Layer index {i} is out of range: {type(self.model).__name__} has {self.num_layers} layers, "
                f"valid indices are 0..{self.num_layers - 1} (or -{self.num_layers}..-1 from the end)."
            )
        return self._layers[i]

    def layers(self) -> list[LayerMLP]:
        """Return all layers in forward order."""
        return list(self._layers)

    def __repr__(self) -> str:
        return (
            f"ArchitectureAdapter(model_type={self.model_type!r}, num_layers={self.num_layers}, "
            f"d_model={self.d_model}, d_ff={self.d_ff}, template={self.template!r})"
        )

    def _detect_template(self, model: nn.Module) -> ModuleTemplate:
        template = _TEMPLATES.get(self.model_type)
        if template is None:
            raise UnsupportedArchitectureError(
                f"No MLP layout is known for {type(model).__name__} (model_type {self.model_type!r}); "
                f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}. Pass the module names by hand, "
                "e.g. get_adapter(model, template=ModuleTemplate(layers='model.layers', mlp='mlp', "
                "inputs=('gate_proj', 'up_proj'), output='down_proj')), with paths taken from "
                "model.named_modules()."
            )
        return template

    def _resolve_layer_list(self, model: nn.Module, path: str) -> tuple[str, Sequence[nn.Module]]:
        candidates = [path]
        prefix = getattr(model, "base_model_prefix", "")
        if prefix and path.startswith(prefix + "."):
            candidates.append(path[len(prefix) + 1 :])

        for candidate in candidates:
            module = _get_submodule(model, candidate)
            if module is None:
                continue
            if not isinstance(module, (nn.ModuleList, nn.Sequential)):
                raise ConfigurationError(
                    f"Module {candidate!r} of {type(model).__name__} is a {type(module).__name__}, "
                    "expected the nn.ModuleList of decoder blocks."
                )
            return candidate, list(module)

        top_level = ", ".join(name for name, _ in model.named_children())
        raise ConfigurationError(
            f"The decoder block list {path!r} was not found in {type(model).__name__} "
            f"(top-level modules: {top_level}). Set ModuleTemplate.layers to the path of the "
            "nn.ModuleList of decoder blocks."
        )

    def _build_layer(self, index: int, block: nn.Module) -> LayerMLP:
        block_path = f"{self._blocks_path}.{index}"
        mlp = self._require(block, self.template.mlp, block_path)
        mlp_path = f"{block_path}.{self.template.mlp}"

        inputs = tuple(
            self._weight_view(mlp, mlp_path, name, input_projection=True) for name in self.template.inputs
        )
        output = self._weight_view(mlp, mlp_path, self.template.output, input_projection=False)

        d_ff = output.num_neurons
        d_model = output.weight.shape[1 - output.neuron_axis]
        for view in inputs:
            shape = tuple(view.weight.shape)
            if view.num_neurons != d_ff or shape[1 - view.neuron_axis] != d_model:
                raise ShapeError(
                    f"Input projection {view.name!r} has weight shape {shape}, which does not match "
                    f"d_model={d_model} and d_ff={d_ff} from {output.name!r} {tuple(output.weight.shape)}."
                )
        return LayerMLP(index=index, block=block, mlp=mlp, inputs=inputs, output=output, d_model=d_model, d_ff=d_ff)

    def _weight_view(self, mlp: nn.Module, mlp_path: str, name: str, *, input_projection: bool) -> WeightView:
        module = self._require(mlp, name, mlp_path)
        # Neurons are the output features of an input projection and the input features of the
        # output projection. Conv1D stores (in, out), nn.Linear (out, in).
        conv1d = isinstance(module, Conv1D)
        if input_projection:
            neuron_axis = 1 if conv1d else 0
        else:
            neuron_axis = 0 if conv1d else 1
        return WeightView(name=f"{mlp_path}.{name}", module=module, neuron_axis=neuron_axis)

    def _require(self, parent: nn.Module, path: str, parent_path: str) -> nn.Module:
        module = _get_submodule(parent, path)
        if module is None:
            children = ", ".join(name for name, _ in parent.named_children())
            raise ConfigurationError(
                f"Module {path!r} was not found under {parent_path!r} ({type(parent).__name__}; "
                f"children: {children}). Fix the ModuleTemplate for {type(self.model).__name__}."
            )
        return module


def _get_submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        module = root.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, nn.Module) else None


def get_adapter(model: nn.Module, template: ModuleTemplate | None = None) -> ArchitectureAdapter:
    """Build the :class:`ArchitectureAdapter` for ``model``, using ``template`` when given."""
    return ArchitectureAdapter(model, template)
