from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_ARCHITECTURES, TINY_D_FF, TINY_D_MODEL, TINY_NUM_LAYERS, make_tiny_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from swe_toolkit.errors import ConfigurationError, ShapeError, UnsupportedArchitectureError
from swe_toolkit.hooks import capture_inputs, capture_outputs, stop_after
from swe_toolkit.models.adapters import ArchitectureAdapter, ModuleTemplate, WeightView, get_adapter

SINGLE_INPUT_ARCHITECTURES = {"gpt2", "gpt_neox"}
INPUT_IDS = torch.tensor([[5, 17, 42, 99, 7], [3, 8, 250, 11, 64]])


def _run_layer(model: nn.Module, adapter: ArchitectureAdapter, index: int) -> dict[str, torch.Tensor]:
    """Run INPUT_IDS up to layer ``index`` and return its MLP input, neurons and projection outputs."""
    layer = adapter.layer(index)
    inputs = {"mlp_input": layer.mlp, "neurons": layer.output.module}
    outputs = {view.name: view.module for view in (*layer.inputs, layer.output)}
    with (
        torch.no_grad(),
        capture_inputs(inputs) as captured_inputs,
        capture_outputs(outputs) as captured_outputs,
        stop_after(layer.block),
    ):
        model(input_ids=INPUT_IDS)
    return {**captured_inputs, **captured_outputs}


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_adapter_layout_and_shapes(model_type):
    model = make_tiny_model(model_type)
    adapter = get_adapter(model)

    assert adapter.model_type == model_type
    assert adapter.num_layers == TINY_NUM_LAYERS
    assert adapter.d_model == TINY_D_MODEL
    assert adapter.d_ff == TINY_D_FF
    assert [layer.index for layer in adapter.layers()] == list(range(TINY_NUM_LAYERS))

    layer = adapter.layer(2)
    expected_inputs = 1 if model_type in SINGLE_INPUT_ARCHITECTURES else 2
    assert len(layer.inputs) == expected_inputs
    assert (layer.d_model, layer.d_ff) == (TINY_D_MODEL, TINY_D_FF)
    assert dict(model.named_modules())[layer.output.name] is layer.output.module
    assert ".2." in layer.output.name

    neurons = torch.tensor([0, 5, 63])
    for view in layer.inputs:
        assert view.is_input_projection
        assert view.neuron_slice(neurons).shape == (3, TINY_D_MODEL)
    assert not layer.output.is_input_projection
    assert layer.output.neuron_slice(neurons).shape == (TINY_D_MODEL, 3)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_conv1d_detected_from_module_type(model_type):
    layer = get_adapter(make_tiny_model(model_type)).layer(0)
    is_gpt2 = model_type == "gpt2"

    for view in (*layer.inputs, layer.output):
        assert view.is_conv1d == isinstance(view.module, Conv1D)
        assert view.is_conv1d == is_gpt2
    # Conv1D stores (in, out): the neuron axis of c_fc is 1 and of c_proj is 0; nn.Linear is the reverse.
    assert layer.inputs[0].neuron_axis == (1 if is_gpt2 else 0)
    assert layer.output.neuron_axis == (0 if is_gpt2 else 1)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_neuron_slice_write_round_trip(model_type):
    layer = get_adapter(make_tiny_model(model_type)).layer(1)
    neurons = torch.tensor([10, 3, 40])
    others = torch.tensor([i for i in range(TINY_D_FF) if i not in (3, 10, 40)])
    generator = torch.Generator().manual_seed(0)

    for view in (*layer.inputs, layer.output):
        before_others = view.neuron_slice(others)
        values = torch.randn(view.neuron_slice(neurons).shape, generator=generator)

        view.write_neuron_slice(neurons, values)

        assert torch.equal(view.neuron_slice(neurons), values)
        assert torch.equal(view.neuron_slice(others), before_others)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_output_projection_hook_sees_neurons(model_type):
    model = make_tiny_model(model_type)
    adapter = get_adapter(model)

    captured = _run_layer(model, adapter, 1)

    assert captured["neurons"].shape == (*INPUT_IDS.shape, TINY_D_FF)
    assert captured["mlp_input"].shape == (*INPUT_IDS.shape, TINY_D_MODEL)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_neuron_slices_match_forward(model_type):
    model = make_tiny_model(model_type)
    adapter = get_adapter(model)
    layer = adapter.layer(1)
    all_neurons = torch.arange(TINY_D_FF)

    captured = _run_layer(model, adapter, 1)

    for view in layer.inputs:
        bias = view.bias if view.bias is not None else 0.0
        pre_activation = captured["mlp_input"] @ view.neuron_slice(all_neurons).T + bias
        torch.testing.assert_close(pre_activation, captured[view.name], rtol=1e-5, atol=1e-5)
    bias = layer.output.bias if layer.output.bias is not None else 0.0
    output = captured["neurons"] @ layer.output.neuron_slice(all_neurons).T + bias
    torch.testing.assert_close(output, captured[layer.output.name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_input_write_changes_one_neuron(model_type):
    model = make_tiny_model(model_type)
    adapter = get_adapter(model)
    layer = adapter.layer(1)
    neuron = torch.tensor([7])
    before = _run_layer(model, adapter, 1)

    for view in layer.inputs:
        view.write_neuron_slice(neuron, 3.0 * view.neuron_slice(neuron) + 0.5)
    after = _run_layer(model, adapter, 1)

    changed = (after["neurons"] != before["neurons"]).flatten(0, 1).any(dim=0)
    assert changed.nonzero().flatten().tolist() == [7]
    torch.testing.assert_close(after["mlp_input"], before["mlp_input"], rtol=0, atol=0)
    for view in layer.inputs:
        pre_changed = (after[view.name] != before[view.name]).flatten(0, 1).any(dim=0)
        assert pre_changed.nonzero().flatten().tolist() == [7]


def test_write_casts_to_parameter_dtype():
    model = make_tiny_model("llama").to(torch.bfloat16)
    view = get_adapter(model).layer(0).inputs[0]
    values = torch.full((2, TINY_D_MODEL), 0.25, dtype=torch.float64)

    view.write_neuron_slice([1, 2], values)

    assert view.weight.dtype == torch.bfloat16
    assert torch.equal(view.neuron_slice([1, 2]), values.to(torch.bfloat16))


def test_write_rejects_bad_arguments():
    view = get_adapter(make_tiny_model("qwen2")).layer(0).output

    with pytest.raises(ShapeError, match=r"\(32, 2\)"):
        view.write_neuron_slice([0, 1], torch.zeros(2, TINY_D_MODEL))
    with pytest.raises(ConfigurationError, match="duplicates"):
        view.write_neuron_slice([4, 4], torch.zeros(TINY_D_MODEL, 2))
    with pytest.raises(ConfigurationError, match=r"\[0, 64\)"):
        view.neuron_slice([64])
    with pytest.raises(ShapeError, match="1-D"):
        view.neuron_slice(torch.zeros(2, 2, dtype=torch.long))


def test_layer_index_range():
    adapter = get_adapter(make_tiny_model("qwen2"))

    assert adapter.layer(-1).index == TINY_NUM_LAYERS - 1
    assert adapter.layer(-TINY_NUM_LAYERS).index == 0
    with pytest.raises(ConfigurationError, match=r"0\.\.3"):
        adapter.layer(4)
    with pytest.raises(ConfigurationError, match="out of range"):
        adapter.layer(-5)
    with pytest.raises(ConfigurationError, match="must be an int"):
        adapter.layer(1.0)


def test_base_model_without_lm_head():
    base_model = make_tiny_model("qwen2").model
    adapter = get_adapter(base_model)

    assert adapter.num_layers == TINY_NUM_LAYERS
    assert adapter.layer(0).block is base_model.layers[0]


class _ToyBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential()
        self.ffn.add_module("expand", nn.Linear(d_model, d_ff))
        self.ffn.add_module("act", nn.ReLU())
        self.ffn.add_module("contract", nn.Linear(d_ff, d_model))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.ffn(hidden_states)


class _ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="toy_decoder")
        self.decoder = nn.Module()
        self.decoder.blocks = nn.ModuleList(_ToyBlock(8, 16) for _ in range(3))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.decoder.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


def test_unknown_architecture_raises():
    with pytest.raises(UnsupportedArchitectureError) as error:
        get_adapter(_ToyModel())

    message = str(error.value)
    assert "_ToyModel" in message
    assert "toy_decoder" in message
    assert "template=ModuleTemplate(" in message


def test_user_template_for_unknown_architecture():
    model = _ToyModel()
    template = ModuleTemplate(layers="decoder.blocks", mlp="ffn", inputs=("expand",), output="contract")

    adapter = get_adapter(model, template=template)

    assert (adapter.num_layers, adapter.d_model, adapter.d_ff) == (3, 8, 16)
    layer = adapter.layer(2)
    assert layer.output.name == "decoder.blocks.2.ffn.contract"
    assert layer.inputs[0].module is model.decoder.blocks[2].ffn.expand
    with capture_inputs({"neurons": layer.output.module}) as captured:
        model(torch.randn(2, 5, 8))
    assert captured["neurons"].shape == (2, 5, 16)


def test_user_template_overrides_detection():
    model = make_tiny_model("llama")
    template = ModuleTemplate(layers="model.layers", mlp="mlp", inputs=["up_proj"], output="down_proj")

    adapter = get_adapter(model, template=template)

    assert adapter.template.inputs == ("up_proj",)
    assert [view.name for view in adapter.layer(0).inputs] == ["model.layers.0.mlp.up_proj"]


def test_template_with_missing_module():
    model = make_tiny_model("llama")

    with pytest.raises(ConfigurationError, match="'model.blocks' was not found"):
        get_adapter(model, ModuleTemplate(layers="model.blocks", mlp="mlp", inputs=("gate_proj",), output="down_proj"))
    with pytest.raises(ConfigurationError, match="'fc1' was not found under 'model.layers.0.mlp'"):
        get_adapter(model, ModuleTemplate(layers="model.layers", mlp="mlp", inputs=("fc1",), output="down_proj"))
    with pytest.raises(ConfigurationError, match="non-empty"):
        ModuleTemplate(layers="model.layers", mlp="mlp", inputs=(), output="down_proj")


def test_weight_view_requires_2d_weight():
    with pytest.raises(ConfigurationError, match="no 2-D weight"):
        WeightView(name="norm", module=nn.LayerNorm(4), neuron_axis=0)
