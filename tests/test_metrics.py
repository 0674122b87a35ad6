"""Tests of bootstrap intervals, rates and the KL divergence caused by an edit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swe_toolkit.edit import SparseEdit, make_layer_edit
from swe_toolkit.errors import ConfigurationError, EditStateError
from swe_toolkit.evaluation.metrics import (
    KLResult,
    RateEstimate,
    attack_success_rate,
    bootstrap_interval,
    mean_kl_divergence,
    paired_difference_interval,
    refusal_rate,
)
from swe_toolkit.models.adapters import get_adapter
from swe_toolkit.prompts import format_prompts

from conftest import make_tiny_model, make_tiny_tokenizer

TEXTS = [
    "Hello world, how are you today?",
    "Tell me a story about a dragon and a knight.",
    "x",
    "สวัสดี ครับ ขอบคุณ",
    "নমস্কার বন্ধু ধন্যবাদ",
    "How do I bake bread at home? You are a helpful assistant. Answer the user politely.",
]


def _flags(n: int, share: float, seed: int = 0) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [bool(x) for x in rng.random(n) < share]


def test_bootstrap_interval_contains_mean() -> None:
    for seed in range(5):
        values = _flags(200, 0.3, seed)
        low, high = bootstrap_interval(values)
        mean = sum(values) / len(values)
        assert low <= mean <= high
        assert low < high


def test_bootstrap_interval_narrows_with_n() -> None:
    widths = []
    for n in (50, 500, 5000):
        low, high = bootstrap_interval(_flags(n, 0.4))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # The width of a 95% interval of a proportion is about 2 * 1.96 * sqrt(p (1 - p) / n).
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 5000), rel=0.15)


def test_bootstrap_interval_is_deterministic() -> None:
    flags = _flags(100, 0.5)
    assert bootstrap_interval(flags, seed=3) == bootstrap_interval(flags, seed=3)
    # Means of 100 flags fall on a grid of 0.01, so different seeds are compared on real values.
    values = list(np.random.default_rng(0).normal(size=100))
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)


def test_bootstrap_interval_confidence_widens() -> None:
    values = _flags(300, 0.5)
    low_80, high_80 = bootstrap_interval(values, confidence=0.8)
    low_99, high_99 = bootstrap_interval(values, confidence=0.99)
    assert low_99 < low_80
    assert high_80 < high_99


def test_bootstrap_interval_accepts_floats() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 10.0]
    low, high = bootstrap_interval(values, n_resamples=500)
    assert min(values) <= low <= np.mean(values) <= high <= max(values)


def test_bootstrap_interval_edge_cases() -> None:
    assert bootstrap_interval([True] * 20) == (1.0, 1.0)
    assert bootstrap_interval([False]) == (0.0, 0.0)
    with pytest.raises(ConfigurationError, match="empty"):
        bootstrap_interval([])
    with pytest.raises(ConfigurationError, match="confidence"):
        bootstrap_interval([True, False], confidence=1.0)
    with pytest.raises(ConfigurationError, match="n_resamples"):
        bootstrap_interval([True, False], n_resamples=0)
    with pytest.raises(ConfigurationError, match="NaN"):
        bootstrap_interval([1.0, float("nan")])


def test_attack_success_and_refusal_rates() -> None:
    refused = [True, True, True, False]

    asr = attack_success_rate(refused)
    over = refusal_rate(refused)

    assert isinstance(asr, RateEstimate)
    assert asr.value == pytest.approx(0.25)
    assert over.value == pytest.approx(0.75)
    assert asr.n == over.n == 4
    assert 0.0 <= asr.low <= asr.value <= asr.high <= 1.0
    assert asr.as_dict() == {"value": 0.25, "low": asr.low, "high": asr.high, "n": 4, "confidence": 0.95}
    with pytest.raises(ConfigurationError, match="empty"):
        attack_success_rate([])
    with pytest.raises(ConfigurationError, match="must be a bool"):
        refusal_rate([1, 0])


def test_paired_difference_interval() -> None:
    before = _flags(300, 0.6, seed=1)
    # The edit turns a third of the answered prompts into refusals and changes nothing else.
    after = [b or (i % 3 == 0) for i, b in enumerate(before)]

    change = paired_difference_interval(before, after)

    expected = (sum(after) - sum(before)) / len(before)
    assert change.value == pytest.approx(expected)
    assert change.low <= change.value <= change.high
    assert change.low > 0
    # Independent resampling of the two rates gives a wider interval for the same data.
    low_a, high_a = bootstrap_interval(after, seed=1)
    low_b, high_b = bootstrap_interval(before, seed=2)
    independent_half_width = np.hypot((high_a - low_a) / 2, (high_b - low_b) / 2)
    assert (change.high - change.low) / 2 < independent_half_width


def test_paired_difference_edge_cases() -> None:
    same = paired_difference_interval([True, False, True], [True, False, True])
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigurationError, match="one value per prompt"):
        paired_difference_interval([True], [True, False])
    with pytest.raises(ConfigurationError, match="empty"):
        paired_difference_interval([], [])


def _edit(model: torch.nn.Module, layer_index: int, side: str, scale: float, seed: int = 0) -> SparseEdit:
    generator = torch.Generator().manual_seed(seed)
    layer = get_adapter(model).layer(layer_index)
    k, rank = 4, 2
    neurons = torch.randperm(layer.d_ff, generator=generator)[:k]
    rows = k * len(layer.inputs) if side == "input" else layer.d_model
    columns = layer.d_model if side == "input" else k
    left = torch.randn(rows, rank, generator=generator, dtype=torch.float64) * scale
    right = torch.randn(rank, columns, generator=generator, dtype=torch.float64)
    return SparseEdit([make_layer_edit(layer, side, neurons, left, right)], model_id="tiny")


def _brute_force_kl(model, tokenizer, texts, edit) -> list[float]:
    """Per-text mean KL from unpadded single-text forward passes in float64."""
    results = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            p = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            with edit.applied(model):
                q = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        results.append(float((p.exp() * (p - q)).sum(-1).mean()))
    return results


def test_kl_is_zero_for_zero_edit() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    edit = _edit(model, 1, "input", scale=0.0)

    result = mean_kl_divergence(model, tokenizer, TEXTS, edit, batch_size=4, progress=False)

    assert isinstance(result, KLResult)
    assert result.mean == 0.0
    assert result.per_text == [0.0] * len(TEXTS)


@pytest.mark.parametrize(("model_type", "side"), [("qwen2", "input"), ("qwen2", "output"), ("gpt2", "input")])
def test_kl_matches_brute_force(model_type: str, side: str) -> None:
    model = make_tiny_model(model_type)
    tokenizer = make_tiny_tokenizer()
    edit = _edit(model, 2, side, scale=2.0)
    before = {name: value.clone() for name, value in model.state_dict().items()}

    result = mean_kl_divergence(model, tokenizer, TEXTS, edit, batch_size=4, progress=False)

    expected = _brute_force_kl(model, tokenizer, TEXTS, edit)
    assert result.mean > 0
    assert all(value > 0 for value in result.per_text)
    # The toolkit computes in float32 and the reference in float64.
    np.testing.assert_allclose(result.per_text, expected, rtol=1e-3, atol=1e-6)
    counts = [len(tokenizer(text)["input_ids"]) for text in TEXTS]
    assert result.n_tokens == sum(counts)
    assert result.mean == pytest.approx(np.dot(expected, counts) / sum(counts), rel=1e-3)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not edit.is_applied


def test_kl_is_batch_size_invariant() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    edit = _edit(model, 0, "input", scale=0.5)

    results = [mean_kl_divergence(model, tokenizer, TEXTS, edit, batch_size=b, progress=False) for b in (1, 2, 6)]

    for other in results[1:]:
        np.testing.assert_allclose(other.per_text, results[0].per_text, rtol=1e-3, atol=1e-6)
        assert other.n_tokens == results[0].n_tokens


def test_kl_with_chat_template_and_truncation() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    edit = _edit(model, 1, "output", scale=0.5)

    templated = mean_kl_divergence(model, tokenizer, TEXTS, edit, use_chat_template=True, progress=False)
    truncated = mean_kl_divergence(model, tokenizer, TEXTS, edit, max_length=3, progress=False)

    rendered = format_prompts(tokenizer, TEXTS)
    assert templated.n_tokens == sum(len(tokenizer(text)["input_ids"]) for text in rendered)
    assert truncated.n_tokens == sum(min(3, len(tokenizer(text)["input_ids"])) for text in TEXTS)


def test_kl_rejects_applied_edit() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    edit = _edit(model, 1, "input", scale=0.5)
    with edit.applied(model):
        with pytest.raises(EditStateError):
            mean_kl_divergence(model, tokenizer, TEXTS, edit, progress=False)
    with pytest.raises(ConfigurationError, match="empty"):
        mean_kl_divergence(model, tokenizer, [], edit, progress=False)
