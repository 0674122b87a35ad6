"""Tests of ActivationCache: fits from the cache equal fresh fits, and a changed model empties it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import swe_toolkit.cache as cache_module
from conftest import make_tiny_model, make_tiny_tokenizer
from swe_toolkit.cache import ActivationCache
from swe_toolkit.capture import accumulate_second_moments, capture_activations
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.fit import EditConfig, fit_edit

ENGLISH = ["how do I open a locked door", "write a story about a dragon", "explain the water cycle", "give me a recipe"]
HARMLESS = ["what is the capital of France", "describe a sunny day", "name three birds", "how tall is a giraffe"]
TARGET = ["ฉันจะเปิดประตูที่ล็อกได้อย่างไร", "เขียนเรื่องเกี่ยวกับมังกร", "อธิบายวัฏจักรของน้ำ", "ขอสูตรทำขนมปัง"]
GENERAL = ["The river flows to the sea.", "Cats sleep for many hours.", "A library holds many books.", "The moon orbits."]
OUTPUT = EditConfig(side="output", rank=None, alpha=1.0, gain=2.0, preserve_weight=1.0)


@pytest.fixture()
def setup():
    return make_tiny_model("qwen2"), make_tiny_tokenizer()


def _fit(model, tokenizer, neurons, config=OUTPUT, cache=None):
    return fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET}, neurons=neurons,
        config=config, general_texts=GENERAL, english_harmless=HARMLESS, preserve_prompts=HARMLESS + TARGET,
        progress=False, cache=cache,
    )


def _blocks(edit):
    return [block for layer in edit.layers for block in layer.delta_blocks()]


def _assert_same_edit(first, second) -> None:
    for a, b in zip(_blocks(first), _blocks(second), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("side", ["input", "output"])
def test_fits_from_the_cache_equal_fresh_fits(setup, side) -> None:
    model, tokenizer = setup
    config = dataclasses.replace(OUTPUT, side=side, rank=4 if side == "input" else None)
    cache = ActivationCache(model, tokenizer, progress=False)
    small, large = torch.arange(0, 64, 4), torch.arange(1, 64, 2)
    for neurons in (small, large, small):
        cached = _fit(model, tokenizer, {1: neurons}, config, cache)
        _assert_same_edit(cached, _fit(model, tokenizer, {1: neurons}, config))
    assert cache.hits > 0


def test_second_fit_runs_no_forward_pass(setup, monkeypatch) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    neurons = {1: torch.arange(0, 64, 4)}
    _fit(model, tokenizer, neurons, cache=cache)
    forward_passes = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: forward_passes.append(1) or original(*a, **k))
    _fit(model, tokenizer, neurons, dataclasses.replace(OUTPUT, alpha=10.0, rank=3), cache=cache)
    assert forward_passes == []


def test_second_subset_uses_the_full_moment_sliced(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    first, second = torch.tensor([5, 1, 9]), torch.tensor([30, 2, 7, 11])
    cache.second_moment(GENERAL, 1, "neurons", neurons=first)
    sliced = cache.second_moment(GENERAL, 1, "neurons", neurons=second)
    direct = accumulate_second_moments(
        model, tokenizer, GENERAL, [1], site="neurons", neuron_subset={1: second}, progress=False
    )[1]
    torch.testing.assert_close(sliced.matrix, direct.matrix, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sliced.sum, direct.sum, rtol=1e-10, atol=1e-10)
    assert sliced.count == direct.count
    assert torch.equal(sliced.neurons, second)
    # Only the full-width moment is kept once it exists.
    assert [key[-1] for key in cache._moments] == [None]


def test_neuron_columns_follow_the_requested_order(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    order = torch.tensor([40, 3, 17])
    cached = cache.activations(ENGLISH, 2, ("neurons",), neurons=order)["neurons"]
    direct = capture_activations(model, tokenizer, ENGLISH, [2], sites=("neurons",), neuron_subset={2: order}, progress=False)
    torch.testing.assert_close(cached, direct.neurons[2])


def test_applying_and_reverting_an_edit_keeps_the_cache(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    edit = _fit(model, tokenizer, {1: torch.arange(0, 64, 4)}, cache=cache)
    entries = len(cache)
    with edit.applied(model):
        pass
    cache.activations(ENGLISH, 1, ("residual",))
    assert len(cache) == entries


def test_cache_emptied_by_changed_weight(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    before = cache.activations(ENGLISH, 1, ("residual",))["residual"].clone()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    after = cache.activations(ENGLISH, 1, ("residual",))["residual"]
    assert not torch.allclose(before, after)
    fresh = capture_activations(model, tokenizer, ENGLISH, [1], sites=("residual",), progress=False)
    torch.testing.assert_close(after, fresh.residual[1])


def test_cache_emptied_by_new_hook(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    cache.activations(ENGLISH, 1, ("residual",))
    handle = model.model.layers[0].register_forward_hook(lambda module, args, output: None)
    try:
        cache.activations(HARMLESS, 1, ("residual",))
        assert len(cache) == 1  # the English entry was dropped
    finally:
        handle.remove()


def test_multi_layer_fit_recaptures_later_layers(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    neurons = {0: torch.arange(0, 64, 4), 2: torch.arange(1, 64, 4)}
    _assert_same_edit(_fit(model, tokenizer, neurons, cache=cache), _fit(model, tokenizer, neurons))
    assert {key[1] for key in cache._activations} == {0}


def test_cache_of_other_model_rejected(setup) -> None:
    model, tokenizer = setup
    other = ActivationCache(make_tiny_model("qwen2", seed=1), tokenizer, progress=False)
    with pytest.raises(ConfigurationError, match="another model"):
        _fit(model, tokenizer, {1: torch.arange(8)}, cache=other)


def test_bad_arguments_are_named(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    with pytest.raises(ConfigurationError, match="'neuron'"):
        cache.activations(ENGLISH, 1, ("neuron",))
    with pytest.raises(ConfigurationError, match="single string"):
        cache.activations("one prompt", 1, ("residual",))
    with pytest.raises(ConfigurationError, match="'mlp_input'"):
        cache.second_moment(GENERAL, 1, "mlp_input", neurons=torch.arange(3))


def test_digest_sees_every_byte() -> None:
    value = torch.zeros(4, 4, dtype=torch.bfloat16)
    changed = value.clone()
    changed[3, 3] = 1e-3
    assert cache_module._digest(value) != cache_module._digest(changed)
    assert cache_module._digest(value) == cache_module._digest(value.clone())


def test_cache_emptied_by_replaced_hook(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    first = model.model.layers[0].register_forward_hook(lambda module, args, output: None)
    try:
        cache.activations(ENGLISH, 1, ("residual",))
    finally:
        first.remove()
    second = model.model.layers[0].register_forward_hook(lambda module, args, output: output[0] * 2 if isinstance(output, tuple) else output * 2)
    try:
        cache.activations(HARMLESS, 1, ("residual",))
        assert len(cache) == 1  # same hook count, different hook: the English entry was dropped
    finally:
        second.remove()


def test_cache_emptied_by_changed_buffer(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    buffers = dict(model.named_buffers())
    assert buffers, "the tiny model has no buffer to change"
    cache.activations(ENGLISH, 1, ("residual",))
    with torch.no_grad():
        next(iter(buffers.values())).mul_(1.5)
    cache.activations(HARMLESS, 1, ("residual",))
    assert len(cache) == 1


def test_cache_emptied_by_new_chat_template(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    cache.activations(ENGLISH, 1, ("residual",))
    tokenizer.chat_template = tokenizer.chat_template + " "
    cache.activations(HARMLESS, 1, ("residual",))
    assert len(cache) == 1


def test_cache_of_other_tokenizer_rejected(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, make_tiny_tokenizer(), progress=False)
    with pytest.raises(ConfigurationError, match="another tokenizer"):
        _fit(model, tokenizer, {1: torch.arange(8)}, cache=cache)


def test_cache_argument_must_be_a_cache(setup) -> None:
    model, tokenizer = setup
    with pytest.raises(ConfigurationError, match="ActivationCache or None, got bool"):
        _fit(model, tokenizer, {1: torch.arange(8)}, cache=True)


@pytest.mark.parametrize("neurons", [[3, 64], [3, -1], [[3, 4]], []])
def test_invalid_neurons_rejected_by_cache(setup, neurons) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    with pytest.raises(ConfigurationError, match="neuron"):
        cache.activations(ENGLISH, 1, ("neurons",), neurons=neurons)
    cache.second_moment(GENERAL, 1, "neurons", neurons=torch.arange(4))
    with pytest.raises(ConfigurationError, match="neuron"):
        cache.second_moment(GENERAL, 1, "neurons", neurons=neurons)


def test_generator_prompts_are_captured(setup) -> None:
    model, tokenizer = setup
    cache = ActivationCache(model, tokenizer, progress=False)
    from_generator = cache.activations((prompt for prompt in ENGLISH), 1, ("residual",))["residual"]
    assert from_generator.shape[0] == len(ENGLISH)
    moment = cache.second_moment((text for text in GENERAL), 1, "mlp_input")
    assert moment.count > 0
