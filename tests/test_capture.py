from __future__ import annotations

import pytest
import torch
from conftest import TINY_ARCHITECTURES, TINY_D_FF, TINY_D_MODEL, TINY_NUM_LAYERS, make_tiny_model

from swe_toolkit.capture import Activations, accumulate_second_moments, capture_activations
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.hooks import capture_inputs, capture_outputs
from swe_toolkit.models.adapters import get_adapter
from swe_toolkit.prompts import format_prompts, post_instruction_suffix

PROMPTS = [
    "How do I bake bread at home?",
    "สวัสดี",
    "Tell me a story about a dragon and a knight, please.",
    "নমস্কার বন্ধু",
    "Hi",
]
TEXTS = [
    "Hello world, how are you today?",
    "สวัสดี ครับ ขอบคุณ",
    "A",
    "Tell me a story about a dragon.",
    "নমস্কার বন্ধু ধন্যবাদ",
]


def _manual_sites(model, tokenizer, text: str, layer: int, add_special_tokens: bool) -> dict[str, torch.Tensor]:
    """Run one unpadded text through the full model and return its three sites at ``layer``."""
    adapter = get_adapter(model)
    mlp_layer = adapter.layer(layer)
    input_ids = tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]
    with (
        torch.no_grad(),
        capture_inputs({"mlp_input": mlp_layer.mlp, "neurons": mlp_layer.output.module}) as inputs,
        capture_outputs({"residual": mlp_layer.block}) as outputs,
    ):
        model(input_ids=input_ids)
    return {key: value[0] for key, value in {**inputs, **outputs}.items()}


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_capture_matches_unpadded_forward(model_type, tiny_tokenizer):
    model = make_tiny_model(model_type)
    suffix = post_instruction_suffix(tiny_tokenizer)
    m = len(suffix)

    activations = capture_activations(model, tiny_tokenizer, PROMPTS, [0, 2], batch_size=3, progress=False)

    assert activations.positions == "post_instruction"
    assert activations.suffix_ids == suffix
    for layer in (0, 2):
        for row, text in enumerate(format_prompts(tiny_tokenizer, PROMPTS)):
            expected = _manual_sites(model, tiny_tokenizer, text, layer, add_special_tokens=False)
            for site in ("mlp_input", "neurons", "residual"):
                captured = activations.site(site)[layer][row]
                torch.testing.assert_close(captured, expected[site][-m:], rtol=1e-5, atol=1e-5)


def test_capture_shapes_and_dtype(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    m = len(post_instruction_suffix(tokenizer))

    activations = capture_activations(model.to(torch.bfloat16), tokenizer, PROMPTS, [1, -1], progress=False)

    assert activations.layers == [1, TINY_NUM_LAYERS - 1]
    for layer in activations.layers:
        assert activations.mlp_input[layer].shape == (len(PROMPTS), m, TINY_D_MODEL)
        assert activations.neurons[layer].shape == (len(PROMPTS), m, TINY_D_FF)
        assert activations.residual[layer].shape == (len(PROMPTS), m, TINY_D_MODEL)
        assert activations.neurons[layer].dtype == torch.float32
        assert activations.neurons[layer].device.type == "cpu"


def test_batch_size_does_not_change_result(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    one = capture_activations(model, tokenizer, PROMPTS, [1], batch_size=1, progress=False)
    all_at_once = capture_activations(model, tokenizer, PROMPTS, [1], batch_size=len(PROMPTS), progress=False)

    for site in ("mlp_input", "neurons", "residual"):
        torch.testing.assert_close(one.site(site)[1], all_at_once.site(site)[1], rtol=1e-5, atol=1e-5)


def test_residual_equals_output_hidden_states(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    texts = format_prompts(tokenizer, PROMPTS)
    # The last entry of hidden_states has the final norm applied, so only earlier layers are compared.
    layers = list(range(TINY_NUM_LAYERS - 1))

    activations = capture_activations(
        model, tokenizer, PROMPTS, layers, sites=["residual"], positions="last", progress=False
    )

    for row, text in enumerate(texts):
        input_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden_states = model(input_ids=input_ids, output_hidden_states=True).hidden_states
        for layer in layers:
            torch.testing.assert_close(
                activations.residual[layer][row, 0], hidden_states[layer + 1][0, -1], rtol=1e-5, atol=1e-5
            )


def test_mean_positions_exclude_padding(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    activations = capture_activations(model, tokenizer, PROMPTS, [2], positions="mean", batch_size=5, progress=False)

    assert activations.positions == "mean"
    assert activations.suffix_ids == []
    for row, text in enumerate(format_prompts(tokenizer, PROMPTS)):
        expected = _manual_sites(model, tokenizer, text, 2, add_special_tokens=False)
        for site in ("mlp_input", "neurons", "residual"):
            torch.testing.assert_close(
                activations.site(site)[2][row, 0], expected[site].mean(dim=0), rtol=1e-5, atol=1e-5
            )


def test_last_position_is_end_of_suffix(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    suffix_positions = capture_activations(model, tokenizer, PROMPTS, [1], sites=["neurons"], progress=False)
    last = capture_activations(model, tokenizer, PROMPTS, [1], sites=["neurons"], positions="last", progress=False)

    assert last.neurons[1].shape == (len(PROMPTS), 1, TINY_D_FF)
    torch.testing.assert_close(last.neurons[1][:, 0], suffix_positions.neurons[1][:, -1], rtol=1e-6, atol=1e-6)
    assert last.mlp_input == {}
    assert last.residual == {}


def test_capture_without_template_uses_last_token(tiny_tokenizer_no_template):
    model = make_tiny_model("gpt2")

    activations = capture_activations(
        model, tiny_tokenizer_no_template, PROMPTS, [0], sites=["neurons"], progress=False
    )

    assert activations.positions == "last"
    assert activations.suffix_ids == []
    for row, prompt in enumerate(PROMPTS):
        expected = _manual_sites(model, tiny_tokenizer_no_template, prompt, 0, add_special_tokens=True)
        torch.testing.assert_close(activations.neurons[0][row, 0], expected["neurons"][-1], rtol=1e-5, atol=1e-5)


def test_capture_stops_after_deepest_layer(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    adapter = get_adapter(model)
    called: list[str] = []
    handles = [
        adapter.layer(2).block.register_forward_pre_hook(lambda *args: called.append("layer 2")),
        model.model.norm.register_forward_pre_hook(lambda *args: called.append("final norm")),
        model.lm_head.register_forward_pre_hook(lambda *args: called.append("lm_head")),
    ]
    try:
        capture_activations(model, tokenizer, PROMPTS, [0, 1], progress=False)
        capture_activations(model, tokenizer, PROMPTS, [1], sites=["neurons"], progress=False)
    finally:
        for handle in handles:
            handle.remove()

    assert called == []


def test_capture_restores_training_mode(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    model.train()

    capture_activations(model, tokenizer, PROMPTS[:2], [0], progress=False)

    assert model.training


def test_neuron_subset_selects_columns(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    subset = torch.tensor([40, 2, 17])

    full = capture_activations(model, tokenizer, PROMPTS, [1, 3], sites=["neurons"], progress=False)
    partial = capture_activations(
        model, tokenizer, PROMPTS, [1, 3], sites=["neurons"], neuron_subset={1: subset}, progress=False
    )

    assert partial.neurons[1].shape[-1] == 3
    torch.testing.assert_close(partial.neurons[1], full.neurons[1][..., subset], rtol=0, atol=0)
    torch.testing.assert_close(partial.neurons[3], full.neurons[3], rtol=0, atol=0)
    assert partial.neuron_subset[1].tolist() == [40, 2, 17]


def test_capture_input_errors(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    with pytest.raises(ConfigurationError, match="prompts is empty"):
        capture_activations(model, tokenizer, [], [0], progress=False)
    with pytest.raises(ConfigurationError, match=r"0\.\.3"):
        capture_activations(model, tokenizer, PROMPTS, [4], progress=False)
    with pytest.raises(ConfigurationError, match="layers is empty"):
        capture_activations(model, tokenizer, PROMPTS, [], progress=False)
    with pytest.raises(ConfigurationError, match="Unknown site"):
        capture_activations(model, tokenizer, PROMPTS, [0], sites=["attention"], progress=False)
    with pytest.raises(ConfigurationError, match="Unknown positions"):
        capture_activations(model, tokenizer, PROMPTS, [0], positions="first", progress=False)
    with pytest.raises(ConfigurationError, match="batch_size"):
        capture_activations(model, tokenizer, PROMPTS, [0], batch_size=0, progress=False)
    with pytest.raises(ConfigurationError, match=r"\[0, 64\)"):
        capture_activations(model, tokenizer, PROMPTS, [0], neuron_subset={0: torch.tensor([64])}, progress=False)
    with pytest.raises(ConfigurationError, match="not among the requested layers"):
        capture_activations(model, tokenizer, PROMPTS, [0], neuron_subset={1: torch.tensor([3])}, progress=False)


def test_activations_site_lookup():
    activations = Activations(layers=[0], positions="last", mlp_input={}, neurons={}, residual={}, suffix_ids=[])

    assert activations.site("neurons") == {}
    with pytest.raises(ConfigurationError, match="Unknown site"):
        activations.site("logits")


def _brute_force_tokens(model, tokenizer, texts, layer, site, max_length=None) -> torch.Tensor:
    """Concatenate the activations of ``site`` at ``layer`` over all tokens of all texts, run one at a time."""
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if max_length is not None:
            ids = ids[:max_length]
        mlp_layer = get_adapter(model).layer(layer)
        module = mlp_layer.mlp if site == "mlp_input" else mlp_layer.output.module
        with torch.no_grad(), capture_inputs({site: module}) as captured:
            model(input_ids=torch.tensor([ids]))
        rows.append(captured[site][0].double())
    return torch.cat(rows)


@pytest.mark.parametrize("site", ["mlp_input", "neurons"])
def test_second_moments_match_brute_force(site, tiny_tokenizer_no_template):
    model = make_tiny_model("gpt2")
    tokenizer = tiny_tokenizer_no_template

    moments = accumulate_second_moments(model, tokenizer, TEXTS, [0, 2], site=site, batch_size=2, progress=False)

    for layer in (0, 2):
        tokens = _brute_force_tokens(model, tokenizer, TEXTS, layer, site)
        result = moments[layer]
        assert (result.layer, result.site) == (layer, site)
        assert result.matrix.dtype == torch.float64
        assert result.count == tokens.shape[0]
        torch.testing.assert_close(result.matrix, tokens.T @ tokens, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result.sum, tokens.sum(dim=0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result.mean, tokens.mean(dim=0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result.normalized, tokens.T @ tokens / tokens.shape[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result.covariance, torch.cov(tokens.T, correction=0), rtol=1e-6, atol=1e-6)


def test_second_moments_independent_of_batch_size(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    one = accumulate_second_moments(model, tokenizer, TEXTS, [1], batch_size=1, progress=False)[1]
    three = accumulate_second_moments(model, tokenizer, TEXTS, [1], batch_size=3, progress=False)[1]

    # Padding changes float32 rounding inside the model, so the sums agree to about 1e-5, not exactly.
    assert one.count == three.count
    torch.testing.assert_close(one.matrix, three.matrix, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one.sum, three.sum, rtol=1e-5, atol=1e-5)


def test_second_moments_neuron_subset(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    subset = torch.tensor([5, 60, 0, 33])

    full = accumulate_second_moments(model, tokenizer, TEXTS, [2], site="neurons", progress=False)[2]
    partial = accumulate_second_moments(
        model, tokenizer, TEXTS, [2], site="neurons", neuron_subset={2: subset}, progress=False
    )[2]

    assert partial.matrix.shape == (4, 4)
    assert partial.neurons.tolist() == subset.tolist()
    torch.testing.assert_close(partial.matrix, full.matrix[subset][:, subset], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(partial.sum, full.sum[subset], rtol=1e-9, atol=1e-9)


def test_second_moments_truncate_long_texts(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    moments = accumulate_second_moments(model, tokenizer, TEXTS, [0], max_length=3, progress=False)[0]

    tokens = _brute_force_tokens(model, tokenizer, TEXTS, 0, "mlp_input", max_length=3)
    assert moments.count == tokens.shape[0]
    torch.testing.assert_close(moments.matrix, tokens.T @ tokens, rtol=1e-6, atol=1e-6)


def test_second_moments_with_chat_template(tiny_qwen2):
    model, tokenizer = tiny_qwen2
    rendered = format_prompts(tokenizer, TEXTS)
    expected_count = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered)

    moments = accumulate_second_moments(
        model, tokenizer, TEXTS, [0], use_chat_template=True, max_length=None, progress=False
    )

    assert moments[0].count == expected_count


def test_second_moments_input_errors(tiny_qwen2):
    model, tokenizer = tiny_qwen2

    with pytest.raises(ConfigurationError, match="texts is empty"):
        accumulate_second_moments(model, tokenizer, [], [0], progress=False)
    with pytest.raises(ConfigurationError, match="Unknown site"):
        accumulate_second_moments(model, tokenizer, TEXTS, [0], site="residual", progress=False)
    with pytest.raises(ConfigurationError, match=r"0\.\.3"):
        accumulate_second_moments(model, tokenizer, TEXTS, [7], progress=False)
    with pytest.raises(ConfigurationError, match="applies to site 'neurons' only"):
        accumulate_second_moments(model, tokenizer, TEXTS, [0], neuron_subset={0: torch.tensor([1])}, progress=False)
