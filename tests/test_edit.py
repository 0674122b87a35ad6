"""Tests of the edit object: apply, exact revert, persistence, fingerprint and export."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from swe_toolkit.edit import LayerEdit, SparseEdit, edited_views, make_layer_edit
from swe_toolkit.errors import ConfigurationError, EditStateError
from swe_toolkit.models.adapters import get_adapter

from conftest import make_tiny_model


def _random_edit(model: torch.nn.Module, layer_index: int, side: str, k: int = 3, rank: int = 2,
                 seed: int = 0) -> SparseEdit:
    gen = torch.Generator().manual_seed(seed)
    layer = get_adapter(model).layer(layer_index)
    neurons = torch.randperm(layer.d_ff, generator=gen)[:k]
    if side == "input":
        left = torch.randn(k * len(layer.inputs), rank, generator=gen, dtype=torch.float64)
        right = torch.randn(rank, layer.d_model, generator=gen, dtype=torch.float64)
    else:
        left = torch.randn(layer.d_model, rank, generator=gen, dtype=torch.float64)
        right = torch.randn(rank, k, generator=gen, dtype=torch.float64)
    edit = make_layer_edit(layer, side, neurons, left * 0.1, right * 0.1)
    return SparseEdit([edit], model_id="tiny", hyperparameters={"rank": rank})


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_apply_changes_only_selected_neurons(model_type: str, side: str) -> None:
    model = make_tiny_model(model_type)
    before = _state(model)
    edit = _random_edit(model, 1, side)
    edit.apply(model)
    layer = get_adapter(model).layer(1)
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    edited_names = {f"{view.name}.weight" for view in edited_views(layer, side)}
    assert changed == edited_names
    neurons = edit.layers[0].neurons
    untouched = torch.ones(layer.d_ff, dtype=torch.bool)
    untouched[neurons] = False
    keep = untouched.nonzero().flatten()
    for view in edited_views(layer, side):
        original = before[f"{view.name}.weight"]
        now = view.weight.detach()
        assert torch.equal(now.index_select(view.neuron_axis, keep),
                           original.index_select(view.neuron_axis, keep))
        assert not torch.equal(now, original)


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_revert_restores_bits(model_type: str, side: str) -> None:
    model = make_tiny_model(model_type)
    before = _state(model)
    edit = _random_edit(model, 0, side)
    edit.apply(model)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    edit.revert(model)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_applied_delta_equals_factors() -> None:
    model = make_tiny_model("qwen2")
    edit = _random_edit(model, 1, "input", k=4, rank=3)
    layer = get_adapter(model).layer(1)
    neurons = edit.layers[0].neurons
    originals = [view.neuron_slice(neurons).double().clone() for view in layer.inputs]
    edit.apply(model)
    for view, original, block in zip(layer.inputs, originals, edit.layers[0].delta_blocks()):
        now = view.neuron_slice(neurons).double()
        torch.testing.assert_close(now - original, block, atol=1e-6, rtol=0)


def test_apply_twice_raises() -> None:
    model = make_tiny_model("qwen2")
    edit = _random_edit(model, 0, "input")
    edit.apply(model)
    with pytest.raises(EditStateError, match="already applied"):
        edit.apply(model)


def test_second_copy_on_edited_model_fails_fingerprint(tmp_path) -> None:
    model = make_tiny_model("qwen2")
    edit = _random_edit(model, 0, "input")
    path = edit.save(tmp_path / "edit.safetensors")
    edit.apply(model)
    twin = SparseEdit.load(path)
    with pytest.raises(EditStateError, match="fingerprint"):
        twin.apply(model)


def test_revert_without_apply_raises() -> None:
    model = make_tiny_model("qwen2")
    with pytest.raises(EditStateError, match="not applied"):
        _random_edit(model, 0, "input").revert(model)


def test_context_manager_reverts_on_error() -> None:
    model = make_tiny_model("qwen2")
    before = _state(model)
    edit = _random_edit(model, 1, "output")
    with pytest.raises(RuntimeError, match="boom"):
        with edit.applied(model):
            assert edit.is_applied
            raise RuntimeError("boom")
    assert not edit.is_applied
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_save_load_round_trip(tmp_path) -> None:
    model = make_tiny_model("qwen2")
    edit = _random_edit(model, 1, "input", k=5, rank=2)
    path = edit.save(tmp_path / "sub" / "edit.safetensors")
    loaded = SparseEdit.load(path, model=model)
    assert loaded.model_id == "tiny"
    assert loaded.hyperparameters == {"rank": 2}
    original, copy_ = edit.layers[0], loaded.layers[0]
    assert torch.equal(original.neurons, copy_.neurons)
    assert torch.equal(original.left.cpu(), copy_.left)
    assert torch.equal(original.right.cpu(), copy_.right)
    assert copy_.fingerprint == original.fingerprint
    assert copy_.projections == original.projections

    reference = make_tiny_model("qwen2")
    reference.load_state_dict(model.state_dict())
    edit.apply(reference)
    loaded.apply(model)
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name])


def test_load_onto_other_model_raises(tmp_path) -> None:
    model = make_tiny_model("qwen2")
    path = _random_edit(model, 0, "input").save(tmp_path / "edit.safetensors")
    other = make_tiny_model("qwen2", seed=123)
    with pytest.raises(EditStateError, match="fingerprint"):
        SparseEdit.load(path, model=other)


def test_fingerprint_agrees_across_float32_and_bfloat16() -> None:
    model = make_tiny_model("qwen2")
    edit = _random_edit(model, 0, "input")
    half = make_tiny_model("qwen2")
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    edit.check_model(half)  # no error
    edit.apply(half)
    edit.revert(half)


def test_save_refuses_existing_file_and_keeps_it(tmp_path, monkeypatch) -> None:
    model = make_tiny_model("qwen2")
    path = tmp_path / "edit.safetensors"
    _random_edit(model, 0, "input").save(path)
    content = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        _random_edit(model, 0, "input", seed=1).save(path)

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("swe_toolkit.edit.save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _random_edit(model, 0, "input", seed=1).save(path, overwrite=True)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.safetensors"]


def test_load_rejects_foreign_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ConfigurationError, match="without swe_toolkit edit metadata"):
        SparseEdit.load(path)


def test_export_merged_model(tmp_path) -> None:
    model = make_tiny_model("qwen2")
    before = _state(model)
    edit = _random_edit(model, 1, "input")
    out = edit.export_merged(model, tmp_path / "merged")
    assert (out / "swe_toolkit_edit.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    reference = make_tiny_model("qwen2")
    reference.load_state_dict(before)
    edit_copy = SparseEdit(edit.layers, model_id="tiny")
    edit_copy.apply(reference)
    for name, value in merged.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    # The source model is unchanged after the export.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    with pytest.raises(FileExistsError):
        edit.export_merged(model, out)


def test_layer_edit_validates_factors() -> None:
    with pytest.raises(Exception, match="low-rank factors"):
        LayerEdit(layer=0, side="input", neurons=torch.arange(2), left=torch.zeros(4, 2),
                  right=torch.zeros(3, 8), projections=("a", "b"), fingerprint="")
    with pytest.raises(ConfigurationError, match="side"):
        LayerEdit(layer=0, side="middle", neurons=torch.arange(2), left=torch.zeros(4, 2),
                  right=torch.zeros(2, 8), projections=("a",), fingerprint="")
    with pytest.raises(ConfigurationError, match="at least one"):
        SparseEdit([])
