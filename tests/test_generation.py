"""Tests of batched greedy generation and next-token log-probabilities on tiny random models."""

from __future__ import annotations

import pytest
import torch

from swe_toolkit.errors import ConfigurationError
from swe_toolkit.evaluation.generation import generate, generate_token_ids, next_token_logprobs
from swe_toolkit.prompts import format_prompts

from conftest import make_tiny_model, make_tiny_tokenizer

# Prompts of clearly different token lengths, so every batch is left-padded.
PROMPTS = [
    "Hello world",
    "Tell me a story about a dragon and a knight. How do I bake bread at home?",
    "x",
    "สวัสดี ครับ ขอบคุณ",
    "You are a helpful assistant.",
]


def _prompt_lengths(tokenizer, prompts):
    texts = format_prompts(tokenizer, prompts)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2", "llama", "gemma2"])
def test_batched_generation_equals_single(model_type: str) -> None:
    model = make_tiny_model(model_type)
    tokenizer = make_tiny_tokenizer()
    assert len(set(_prompt_lengths(tokenizer, PROMPTS))) > 1

    batched = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=3, progress=False)
    single = [
        generate_token_ids(model, tokenizer, [prompt], max_new_tokens=10, batch_size=1, progress=False)[0]
        for prompt in PROMPTS
    ]

    assert batched == single


def test_generation_restores_input_order() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()

    forward = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False)
    backward = generate(model, tokenizer, PROMPTS[::-1], max_new_tokens=6, batch_size=2, progress=False)

    assert len(forward) == len(PROMPTS)
    assert backward == forward[::-1]
    assert len(set(forward)) > 1


def test_generation_respects_max_new_tokens() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()

    for max_new_tokens in (1, 4, 9):
        ids = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=max_new_tokens, progress=False)
        assert all(len(row) <= max_new_tokens for row in ids)
        # This random model emits no EOS within these lengths, so every reply has the full length.
        assert all(len(row) == max_new_tokens for row in ids)


def test_generation_stops_at_eos() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    full = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)
    stop_id = full[1][3]
    model.generation_config.eos_token_id = stop_id

    cut = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)

    for before, after in zip(full, cut, strict=True):
        expected = before[: before.index(stop_id)] if stop_id in before else before
        assert after == expected
        assert stop_id not in after


def test_generation_ignores_sampling_config() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    plain = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)
    config = model.generation_config
    config.do_sample = True
    config.temperature = 0.7
    config.top_p = 0.8
    config.repetition_penalty = 1.5

    again = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)

    assert again == plain


def test_generation_decodes_only_new_text() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    ids = generate_token_ids(model, tokenizer, PROMPTS[:2], max_new_tokens=5, progress=False)

    texts = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=5, progress=False)

    assert texts == [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    assert all("assistant" not in text for text in texts)


def test_generation_without_chat_template() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer(chat_template=False)
    batched = generate_token_ids(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=4, progress=False)
    single = [generate_token_ids(model, tokenizer, [p], max_new_tokens=5, progress=False)[0] for p in PROMPTS]
    assert batched == single


def test_generation_input_checks() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    assert generate(model, tokenizer, [], progress=False) == []
    with pytest.raises(ConfigurationError, match="single string"):
        generate(model, tokenizer, "Hello", progress=False)
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        generate(model, tokenizer, ["Hello"], max_new_tokens=0, progress=False)
    with pytest.raises(ConfigurationError, match="batch_size"):
        generate(model, tokenizer, ["Hello"], batch_size=0, progress=False)


def _unpadded_logprobs(model, tokenizer, prompt: str) -> torch.Tensor:
    (text,) = format_prompts(tokenizer, [prompt])
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    return torch.log_softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2"])
def test_next_token_logprobs_match_unpadded(model_type: str) -> None:
    model = make_tiny_model(model_type)
    tokenizer = make_tiny_tokenizer()

    batched = next_token_logprobs(model, tokenizer, PROMPTS, batch_size=5, progress=False)

    assert batched.dtype == torch.float32
    assert batched.shape == (len(PROMPTS), model.config.vocab_size)
    for row, prompt in enumerate(PROMPTS):
        torch.testing.assert_close(batched[row], _unpadded_logprobs(model, tokenizer, prompt), atol=1e-5, rtol=0)


def test_left_padding_needs_position_ids() -> None:
    # GPT-2 adds learned absolute position embeddings, so a padded forward pass without position ids
    # shifts the short prompt. This checks that the test above can detect missing position ids.
    model = make_tiny_model("gpt2")
    tokenizer = make_tiny_tokenizer()
    texts = format_prompts(tokenizer, ["x", PROMPTS[1]])
    short, long = tokenizer(texts, add_special_tokens=False)["input_ids"]
    padded = torch.tensor([[0] * (len(long) - len(short)) + short])
    mask = (torch.arange(len(long)) >= len(long) - len(short)).long()[None]
    with torch.no_grad():
        shifted = torch.log_softmax(model(input_ids=padded, attention_mask=mask).logits[0, -1], dim=-1)

    assert not torch.allclose(shifted, _unpadded_logprobs(model, tokenizer, "x"), atol=1e-3)


def test_next_token_logprobs_selects_columns() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    full = next_token_logprobs(model, tokenizer, PROMPTS, progress=False)

    selected = next_token_logprobs(model, tokenizer, PROMPTS, token_ids=[5, 3, 100], progress=False)

    assert selected.shape == (len(PROMPTS), 3)
    torch.testing.assert_close(selected, full[:, [5, 3, 100]])
    torch.testing.assert_close(full.exp().sum(dim=-1), torch.ones(len(PROMPTS)), atol=1e-5, rtol=0)


def test_next_token_logprobs_response_prefix() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    (rendered,) = format_prompts(tokenizer, ["Hello world"])
    raw = next_token_logprobs(model, tokenizer, [rendered + "Hello"], use_chat_template=False, progress=False)

    prefixed = next_token_logprobs(model, tokenizer, ["Hello world"], response_prefix="Hello", progress=False)

    # The tiny tokenizer adds no special tokens, so both inputs are the same ids.
    torch.testing.assert_close(prefixed, raw)


def test_next_token_logprobs_rejects_invalid_ids() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    with pytest.raises(ConfigurationError, match="token_ids"):
        next_token_logprobs(model, tokenizer, ["Hello"], token_ids=[10**6], progress=False)


def test_next_token_logprobs_empty_input() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    assert next_token_logprobs(model, tokenizer, [], progress=False).shape == (0, model.config.vocab_size)
    assert next_token_logprobs(model, tokenizer, [], token_ids=[1, 2], progress=False).shape == (0, 2)
