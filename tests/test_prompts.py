from __future__ import annotations

import logging

import pytest
import torch
from conftest import IM_END, IM_START, make_tiny_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from swe_toolkit.errors import ConfigurationError, ShapeError
from swe_toolkit.prompts import (
    PromptPositions,
    format_prompts,
    has_chat_template,
    post_instruction_suffix,
    prompt_positions,
    tokenize_batch,
)

MULTILINGUAL_PROMPTS = ["How do I bake bread?", "สวัสดี", "নমস্কার", "Bonjour, ça va ?"]


def _expected_qwen_suffix(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    newline = tokenizer.convert_tokens_to_ids("Ċ")  # byte-level BPE spelling of "\n"
    return [
        tokenizer.convert_tokens_to_ids(IM_END),
        newline,
        tokenizer.convert_tokens_to_ids(IM_START),
        *tokenizer("assistant", add_special_tokens=False)["input_ids"],
        newline,
    ]


def _merging_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose template suffix "Answer:" fuses with a preceding "x"."""
    vocab = {"[UNK]": 0, "[PAD]": 1, "Q": 2, "Answer": 3, ":": 4, "xAnswer": 5, "x": 6, "?": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.chat_template = "{%- for message in messages %}Q {{ message['content'] }}{%- endfor %}Answer:"
    return tokenizer


def test_format_prompts_chatml(tiny_tokenizer):
    formatted = format_prompts(tiny_tokenizer, ["Hi", "สวัสดี"])

    assert formatted == [
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nสวัสดี<|im_end|>\n<|im_start|>assistant\n",
    ]


def test_format_prompts_with_system_prompt(tiny_tokenizer):
    (formatted,) = format_prompts(tiny_tokenizer, ["Hi"], system_prompt="Be brief.")

    assert formatted == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_format_prompts_without_template(tiny_tokenizer, tiny_tokenizer_no_template, caplog):
    assert not has_chat_template(tiny_tokenizer_no_template)
    assert format_prompts(tiny_tokenizer_no_template, ["Hi", "there"]) == ["Hi", "there"]
    assert format_prompts(tiny_tokenizer, ["Hi"], use_chat_template=False) == ["Hi"]

    with caplog.at_level(logging.WARNING, logger="swe_toolkit.prompts"):
        assert format_prompts(tiny_tokenizer_no_template, ["Hi"], system_prompt="Be brief.") == ["Hi"]
    assert "system_prompt is ignored" in caplog.text


def test_format_prompts_input_checks(tiny_tokenizer):
    assert format_prompts(tiny_tokenizer, []) == []
    with pytest.raises(ConfigurationError, match="single string"):
        format_prompts(tiny_tokenizer, "Hi")
    with pytest.raises(ConfigurationError, match=r"prompts\[1\]"):
        format_prompts(tiny_tokenizer, ["Hi", 3])


def test_format_prompts_template_error(tiny_tokenizer):
    tiny_tokenizer.chat_template = (
        "{%- if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{%- endif %}"
        "{{ messages[0]['content'] }}"
    )

    with pytest.raises(ConfigurationError, match="System role not supported"):
        format_prompts(tiny_tokenizer, ["Hi"], system_prompt="Be brief.")


def test_post_instruction_suffix_chatml(tiny_tokenizer):
    suffix = post_instruction_suffix(tiny_tokenizer)

    assert suffix == _expected_qwen_suffix(tiny_tokenizer)
    assert tiny_tokenizer.decode(suffix) == "<|im_end|>\n<|im_start|>assistant\n"


def test_suffix_identical_across_languages(tiny_tokenizer):
    suffix = post_instruction_suffix(tiny_tokenizer)

    for text in format_prompts(tiny_tokenizer, MULTILINGUAL_PROMPTS, system_prompt="Be brief."):
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids[-len(suffix) :] == suffix, text


def test_suffix_shrinks_at_token_merge():
    tokenizer = _merging_tokenizer()
    colon = tokenizer.convert_tokens_to_ids(":")

    assert tokenizer("Q xAnswer:", add_special_tokens=False)["input_ids"] == [2, 5, 4]
    assert post_instruction_suffix(tokenizer) == [colon]


def test_suffix_fallback_without_template(tiny_tokenizer_no_template, caplog):
    with caplog.at_level(logging.INFO, logger="swe_toolkit.prompts"):
        assert post_instruction_suffix(tiny_tokenizer_no_template) == []
        positions = prompt_positions(tiny_tokenizer_no_template, "post_instruction")

    assert positions == PromptPositions(num_positions=1, suffix_ids=[], mode="last")
    assert "no chat template" in caplog.text
    assert "last token" in caplog.text


def test_prompt_positions_modes(tiny_tokenizer):
    suffix = _expected_qwen_suffix(tiny_tokenizer)

    expected = PromptPositions(len(suffix), suffix, "post_instruction")
    assert prompt_positions(tiny_tokenizer, "post_instruction") == expected
    assert prompt_positions(tiny_tokenizer, "post_instruction", use_chat_template=False).mode == "last"
    assert prompt_positions(tiny_tokenizer, "last") == PromptPositions(1, [], "last")
    assert prompt_positions(tiny_tokenizer, "mean") == PromptPositions(1, [], "mean")
    with pytest.raises(ConfigurationError, match="Unknown positions 'first'"):
        prompt_positions(tiny_tokenizer, "first")


def test_tokenize_batch_left_padding(tiny_tokenizer):
    texts = format_prompts(tiny_tokenizer, MULTILINGUAL_PROMPTS)
    single = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(ids) for ids in single)

    batch = tokenize_batch(tiny_tokenizer, texts, device="cpu", add_special_tokens=False)

    assert batch["input_ids"].shape == (len(texts), width)
    assert batch["input_ids"].dtype == torch.long
    for row, ids in enumerate(single):
        padding = width - len(ids)
        assert batch["input_ids"][row, padding:].tolist() == ids
        assert batch["input_ids"][row, :padding].tolist() == [tiny_tokenizer.pad_token_id] * padding
        assert batch["attention_mask"][row].tolist() == [0] * padding + [1] * len(ids)
    assert tiny_tokenizer.padding_side == "right"


def test_tokenize_batch_suffix_at_row_end(tiny_tokenizer):
    suffix = post_instruction_suffix(tiny_tokenizer)
    texts = format_prompts(tiny_tokenizer, MULTILINGUAL_PROMPTS)

    batch = tokenize_batch(tiny_tokenizer, texts, add_special_tokens=False)

    for row in batch["input_ids"]:
        assert row[-len(suffix) :].tolist() == suffix


def test_tokenize_batch_truncation(tiny_tokenizer_no_template):
    ids = tiny_tokenizer_no_template("Tell me a story about a dragon")["input_ids"]
    assert len(ids) > 4

    left = tokenize_batch(tiny_tokenizer_no_template, ["Tell me a story about a dragon", "Hi"], max_length=4)
    right = tokenize_batch(
        tiny_tokenizer_no_template, ["Tell me a story about a dragon"], max_length=4, truncation_side="right"
    )

    assert left["input_ids"][0].tolist() == ids[-4:]
    assert right["input_ids"][0].tolist() == ids[:4]
    with pytest.raises(ConfigurationError, match="max_length"):
        tokenize_batch(tiny_tokenizer_no_template, ["Hi"], max_length=0)


def test_tokenize_batch_without_pad_token():
    tokenizer = make_tiny_tokenizer()
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None

    batch = tokenize_batch(tokenizer, ["Hi", "Hello world"])

    assert batch["input_ids"][0, 0].item() == tokenizer.eos_token_id
    assert batch["attention_mask"][0, 0].item() == 0


def test_tokenize_batch_rejects_empty_text(tiny_tokenizer_no_template):
    with pytest.raises(ConfigurationError, match="index 1"):
        tokenize_batch(tiny_tokenizer_no_template, ["Hi", ""])


def test_positions_select_last_and_mean():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    hidden[0, 0] = float("nan")  # a padded position
    attention_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])

    last_two = PromptPositions(2, [5, 6], "post_instruction").select(hidden, attention_mask)
    mean = PromptPositions(1, [], "mean").select(hidden, attention_mask)

    torch.testing.assert_close(last_two, hidden[:, 2:])
    torch.testing.assert_close(mean[0, 0], hidden[0, 1:].mean(dim=0))
    torch.testing.assert_close(mean[1, 0], hidden[1].mean(dim=0))
    assert mean.shape == (2, 1, 3)
    with pytest.raises(ShapeError):
        PromptPositions(1, [], "last").select(hidden, attention_mask[:, :3])
