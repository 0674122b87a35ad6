"""Tests of MGSM number extraction and scoring, and of multiple-choice scoring by letter probability."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from swe_toolkit.errors import ConfigurationError
from swe_toolkit.evaluation import tasks
from swe_toolkit.evaluation.generation import next_token_logprobs
from swe_toolkit.evaluation.metrics import RateEstimate
from swe_toolkit.evaluation.tasks import (
    CHOICE_LETTERS,
    choice_token_ids,
    extract_last_number,
    format_multiple_choice,
    mgsm_accuracy,
    multiple_choice_accuracy,
    predict_choices,
    score_number_replies,
)

from conftest import make_tiny_model, make_tiny_tokenizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 1,234.", 1234),
        ("১২", 12),
        ("๑๒", 12),
        ("উত্তর হল ১,২৩৪।", 1234),
        ("คำตอบคือ ๔๒ บาท", 42),
        ("１２個", 12),
        ("答案是42。", 42),
        ("First 3 apples, then 5 more: 8", 8),
        ("It costs $18.00 in total.", 18),
        ("Pi is about 3.14", 3.14),
        ("1,234,567 people", 1234567),
        ("1,234.5 km", 1234.5),
        ("1.234,5 km", 1234.5),
        ("half is 0.500", 0.5),
        ("2,5 liters", 2.5),
        ("pick 1,2,3", 3),
        ("The change is -5 dollars", -5),
        ("The change is \u22125 dollars", -5),
        ("10-2=8", 8),
        ("\\boxed{72}", 72),
        ("No digits here.", None),
        ("", None),
    ],
)
def test_extract_last_number(text: str, expected: float | None) -> None:
    value = extract_last_number(text)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


def test_extract_last_number_decimal_comma() -> None:
    assert extract_last_number("Jawabannya 1.234.") == pytest.approx(1.234)
    assert extract_last_number("Jawabannya 1.234.", decimal_comma=True) == 1234
    assert extract_last_number("Đáp án là 1,5", decimal_comma=True) == pytest.approx(1.5)
    assert extract_last_number("1,234", decimal_comma=True) == pytest.approx(1.234)
    assert extract_last_number("3.14", decimal_comma=True) == pytest.approx(3.14)
    assert extract_last_number("0.500", decimal_comma=True) == pytest.approx(0.5)


def test_extract_last_number_returns_int_for_integers() -> None:
    assert isinstance(extract_last_number("1,234"), int)
    assert isinstance(extract_last_number("3.5"), float)


def test_score_number_replies() -> None:
    replies = ["So the answer is 18.", "It is 1,000", "Jawabannya 1.000", "I don't know"]
    answers = [18, "1000", 1000, 5]

    assert score_number_replies(replies, answers, language="en") == [True, True, False, False]
    assert score_number_replies(replies, answers, language="id") == [True, False, True, False]
    with pytest.raises(ConfigurationError, match="numeric string"):
        score_number_replies(["1"], ["many"])
    with pytest.raises(ConfigurationError, match="one answer per reply"):
        score_number_replies(["1", "2"], [1])


def test_mgsm_accuracy_scores_generated_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[str]] = {}

    def scripted_generate(model, tokenizer, prompts, **kwargs):
        seen["prompts"] = list(prompts)
        return ["The answer is 4.", "৭", "nothing"]

    monkeypatch.setattr(tasks, "generate", scripted_generate)
    result = mgsm_accuracy(
        None, None, ["2+2?", "3+4?", "1+1?"], [4, "7", 2], language="bn", prompt_template="Q: {question}"
    )

    assert seen["prompts"] == ["Q: 2+2?", "Q: 3+4?", "Q: 1+1?"]
    assert isinstance(result, RateEstimate)
    assert result.value == pytest.approx(2 / 3)
    assert result.n == 3


def test_mgsm_accuracy_runs_on_tiny_model() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()

    result = mgsm_accuracy(
        model, tokenizer, ["How many apples?", "What is 2 + 3?"], [3, 5], language="en", max_new_tokens=4,
        progress=False,
    )

    assert result.n == 2
    assert 0.0 <= result.low <= result.value <= result.high <= 1.0


def test_mgsm_accuracy_input_checks() -> None:
    with pytest.raises(ConfigurationError, match="2 questions but 1 answers"):
        mgsm_accuracy(None, None, ["a", "b"], [1], language="en")
    with pytest.raises(ConfigurationError, match=r"\{question\}"):
        mgsm_accuracy(None, None, ["a"], [1], language="en", prompt_template="no field")
    with pytest.raises(ConfigurationError, match="numeric string"):
        mgsm_accuracy(None, None, ["a"], ["n/a"], language="en")


def test_format_multiple_choice() -> None:
    text = format_multiple_choice("What is {x}?", ["one", "two", "three", "four"])

    assert text.startswith("What is {x}?\n\nA. one\nB. two\nC. three\nD. four\n\n")
    assert "A, B, C or D" in text
    with pytest.raises(ConfigurationError, match="4 options"):
        format_multiple_choice("Q", ["a", "b"])


def test_choice_token_ids_are_single_distinct_tokens() -> None:
    tokenizer = make_tiny_tokenizer()

    ids = choice_token_ids(tokenizer)

    assert len(ids) == len(CHOICE_LETTERS)
    flat = [token_id for group in ids for token_id in group]
    assert len(flat) == len(set(flat))
    for letter, group in zip(CHOICE_LETTERS, ids, strict=True):
        assert all(tokenizer.decode([token_id]).strip() == letter for token_id in group)


@dataclass(frozen=True)
class _Item:
    question: str
    choices: tuple[str, str, str, str]
    answer: str


ITEMS = [
    _Item("Which is a color?", ("red", "dog", "run", "seven"), "A"),
    _Item("Which is an animal?", ("blue", "cat", "jump", "nine"), "B"),
    _Item("Which is a verb?", ("green", "cow", "walk", "ten"), "C"),
]


def test_predict_choices_takes_most_probable_letter() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()

    predicted = predict_choices(model, tokenizer, ITEMS, batch_size=2, progress=False)

    prompts = [format_multiple_choice(item.question, item.choices) for item in ITEMS]
    letter_ids = choice_token_ids(tokenizer)
    logprobs = next_token_logprobs(model, tokenizer, prompts, progress=False)
    scores = torch.stack([torch.logsumexp(logprobs[:, ids], dim=-1) for ids in letter_ids], dim=-1)
    assert predicted == [CHOICE_LETTERS[i] for i in scores.argmax(dim=-1).tolist()]


def _force_next_token(model: nn.Module, token_id: int) -> None:
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 30.0
    model.set_output_embeddings(head)


def test_multiple_choice_accuracy_counts_correct_letters() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    _force_next_token(model, choice_token_ids(tokenizer)[1][0])
    as_mappings = [{"question": i.question, "choices": list(i.choices), "answer": i.answer} for i in ITEMS]

    result = multiple_choice_accuracy(model, tokenizer, ITEMS, progress=False)
    from_mappings = multiple_choice_accuracy(model, tokenizer, as_mappings, progress=False)

    assert predict_choices(model, tokenizer, ITEMS, progress=False) == ["B", "B", "B"]
    assert result.value == pytest.approx(1 / 3)
    assert result.n == 3
    assert from_mappings == result


def test_multiple_choice_input_checks() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    with pytest.raises(ConfigurationError, match="empty"):
        multiple_choice_accuracy(model, tokenizer, [], progress=False)
    with pytest.raises(ConfigurationError, match="answer 'E'"):
        multiple_choice_accuracy(model, tokenizer, [_Item("Q", ("a", "b", "c", "d"), "E")], progress=False)
    with pytest.raises(ConfigurationError, match="question"):
        predict_choices(model, tokenizer, [{"choices": ["a", "b", "c", "d"]}], progress=False)
