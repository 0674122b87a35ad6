"""Capability checks of an (edited) model: MGSM math accuracy and MMMLU multiple-choice accuracy.

MGSM replies are generated greedily and the last number in each reply is compared with the
reference answer. MMMLU questions are scored without generation: the predicted option is the letter
whose token has the highest next-token probability after the prompt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from swe_toolkit.errors import ConfigurationError
from swe_toolkit.evaluation.generation import generate, next_token_logprobs
from swe_toolkit.evaluation.metrics import RateEstimate, bootstrap_interval

__all__ = [
    "CHOICE_LETTERS",
    "DECIMAL_COMMA_LANGUAGES",
    "MULTIPLE_CHOICE_TEMPLATE",
    "choice_token_ids",
    "extract_last_number",
    "format_multiple_choice",
    "mgsm_accuracy",
    "multiple_choice_accuracy",
    "predict_choices",
    "score_number_replies",
]

CHOICE_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")

# Languages whose writers use a comma as the decimal mark and a period between thousands, so an
# ambiguous "1.234" reads as 1234 and "1,234" as 1.234 there.
DECIMAL_COMMA_LANGUAGES: frozenset[str] = frozenset({"de", "es", "fr", "id", "ru", "vi"})

# The instruction is English in every language, so only the question and options vary.
MULTIPLE_CHOICE_TEMPLATE = (
    "{question}\n\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n\n"
    "Answer with only the letter of the correct option: A, B, C or D."
)

# A number: optional minus sign, digits, and groups joined by "," or ".". The sign counts only
# when no digit precedes it, so "10-2" yields 10 and 2.
_NUMBER_TOKEN = re.compile(r"(?:(?<!\d)-)?\d+(?:[.,]\d+)*")
_SEPARATOR = re.compile(r"[.,]")
# Characters that models write in place of ASCII ones inside numbers.
_NUMBER_CHARACTERS = str.maketrans({"\u2212": "-", "\u2013": "-", "\uff0c": ",", "\uff0e": ".", "\u066b": "."})


def extract_last_number(text: str, *, decimal_comma: bool = False) -> int | float | None:
    """Return the last number in ``text``, or None when it has no digits.

    Digits of any script (Bengali ``১২``, Thai ``๑๒``, full-width ``１２``) are read as ASCII digits.
    A single comma or period between 1 to 3 digits (not starting with 0) and exactly 3 digits is
    ambiguous. Such a comma separates thousands (``"1,234"`` is 1234) and such a period is a
    decimal point. ``decimal_comma=True`` swaps the two readings. Every other single
    separator is a decimal mark (``"2,5"``, ``"3.14"``). In a number with both marks, the last one
    is the decimal mark (``"1,234.5"``, ``"1.234,5"``). A run whose groups fit no reading, such as
    the list ``"1,2,3"``, yields its last group. Returns an int when the number has no decimal part.
    """
    normalized = _ascii_digits(text).translate(_NUMBER_CHARACTERS)
    tokens = _NUMBER_TOKEN.findall(normalized)
    if not tokens:
        return None
    return _parse_number_token(tokens[-1], decimal_comma=decimal_comma)


def score_number_replies(
    replies: Sequence[str], answers: Sequence[int | float | str], *, language: str = "en"
) -> list[bool]:
    """Return, per reply, whether its last number equals the reference answer.

    ``language`` selects the decimal mark (see :data:`DECIMAL_COMMA_LANGUAGES`). String answers
    are read with the period as decimal mark, as MGSM writes them.
    """
    if len(replies) != len(answers):
        raise ConfigurationError(f"Got {len(replies)} replies but {len(answers)} answers; pass one answer per reply.")
    decimal_comma = language in DECIMAL_COMMA_LANGUAGES
    scores = []
    for index, (reply, answer) in enumerate(zip(replies, answers, strict=True)):
        reference = _reference_number(answer, index)
        predicted = extract_last_number(reply, decimal_comma=decimal_comma)
        scores.append(predicted is not None and _numbers_equal(predicted, reference))
    return scores


def mgsm_accuracy(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[int | float | str],
    *,
    language: str,
    max_new_tokens: int = 384,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    prompt_template: str = "{question}",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> RateEstimate:
    """Generate a greedy reply to each MGSM question and return the share whose last number is correct.

    ``prompt_template`` wraps each question (it must contain ``{question}``), for example to ask
    for the final answer on the last line. A reply cut off at ``max_new_tokens`` before its final
    answer is scored on its last number so far, which is usually wrong. Chain-of-thought replies of
    chat models need a few hundred tokens.
    """
    if len(questions) != len(answers):
        raise ConfigurationError(f"Got {len(questions)} questions but {len(answers)} answers.")
    if len(questions) == 0:
        raise ConfigurationError("questions is empty; pass at least one MGSM question.")
    if "{question}" not in prompt_template:
        raise ConfigurationError(f"prompt_template must contain '{{question}}', got {prompt_template!r}.")
    # Read the references first, so an invalid answer fails before any generation.
    for index, answer in enumerate(answers):
        _reference_number(answer, index)

    prompts = [prompt_template.replace("{question}", question) for question in questions]
    replies = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=system_prompt,
        use_chat_template=use_chat_template,
        progress=progress,
    )
    correct = score_number_replies(replies, answers, language=language)
    return _accuracy(correct, confidence=confidence, n_resamples=n_resamples, seed=seed)


def format_multiple_choice(question: str, choices: Sequence[str], template: str = MULTIPLE_CHOICE_TEMPLATE) -> str:
    """Fill ``template`` with the question and the four options as ``{question}``, ``{A}`` ... ``{D}``."""
    if len(choices) != len(CHOICE_LETTERS):
        raise ConfigurationError(f"A question needs {len(CHOICE_LETTERS)} options, got {len(choices)}.")
    values = {"question": question, **dict(zip(CHOICE_LETTERS, choices, strict=True))}
    # Replace fields one by one, so braces inside a question or an option stay as written.
    text = template
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def choice_token_ids(tokenizer: Any, letters: Sequence[str] = CHOICE_LETTERS) -> list[list[int]]:
    """Return, per letter, the ids of the single tokens ``"A"`` and ``" A"`` that the tokenizer has.

    A variant that encodes to more than one token is left out.

    Raises:
        ConfigurationError: a letter has no single-token variant, or two letters share a token.
    """
    result: list[list[int]] = []
    seen: dict[int, str] = {}
    for letter in letters:
        ids: list[int] = []
        for variant in (letter, " " + letter):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and int(encoded[0]) not in ids:
                ids.append(int(encoded[0]))
        if not ids:
            raise ConfigurationError(
                f"The tokenizer has no single token for option letter {letter!r} or {' ' + letter!r}, so options "
                "cannot be scored by next-token probability."
            )
        for token_id in ids:
            if token_id in seen:
                raise ConfigurationError(f"Option letters {seen[token_id]!r} and {letter!r} share token id {token_id}.")
            seen[token_id] = letter
        result.append(ids)
    return result


def predict_choices(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[Any],
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    prompt_template: str = MULTIPLE_CHOICE_TEMPLATE,
    response_prefix: str = "",
    progress: bool = True,
) -> list[str]:
    """Return the predicted option letter of each multiple-choice item, from one forward pass per batch.

    An item is a :class:`swe_toolkit.datasets.MultipleChoiceItem` or a mapping with the keys
    ``question`` and ``choices``. A letter's score is the log of the summed probabilities of its
    tokens (see :func:`choice_token_ids`) as the first reply token after ``response_prefix``.
    """
    prompts = [format_multiple_choice(*_question_and_choices(item, index), prompt_template) for index, item in enumerate(items)]
    if not prompts:
        return []
    letter_ids = choice_token_ids(tokenizer)
    flat_ids = [token_id for ids in letter_ids for token_id in ids]
    logprobs = next_token_logprobs(
        model,
        tokenizer,
        prompts,
        token_ids=flat_ids,
        batch_size=batch_size,
        system_prompt=system_prompt,
        use_chat_template=use_chat_template,
        response_prefix=response_prefix,
        progress=progress,
    )
    letter_scores = torch.stack(
        [torch.logsumexp(part, dim=-1) for part in logprobs.split([len(ids) for ids in letter_ids], dim=-1)],
        dim=-1,
    )
    return [CHOICE_LETTERS[index] for index in letter_scores.argmax(dim=-1).tolist()]


def multiple_choice_accuracy(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[Any],
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
    use_chat_template: bool = True,
    prompt_template: str = MULTIPLE_CHOICE_TEMPLATE,
    response_prefix: str = "",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> RateEstimate:
    """Return the share of MMMLU-style items whose predicted letter (:func:`predict_choices`) is the answer.

    Each item also needs an ``answer`` letter, an attribute or a mapping key.
    """
    if len(items) == 0:
        raise ConfigurationError("items is empty; pass at least one multiple-choice question.")
    answers = [_answer_letter(item, index) for index, item in enumerate(items)]
    predictions = predict_choices(
        model,
        tokenizer,
        items,
        batch_size=batch_size,
        system_prompt=system_prompt,
        use_chat_template=use_chat_template,
        prompt_template=prompt_template,
        response_prefix=response_prefix,
        progress=progress,
    )
    correct = [predicted == answer for predicted, answer in zip(predictions, answers, strict=True)]
    return _accuracy(correct, confidence=confidence, n_resamples=n_resamples, seed=seed)


def _ascii_digits(text: str) -> str:
    return "".join(
        str(unicodedata.decimal(char)) if not char.isascii() and char.isdecimal() else char for char in text
    )


def _parse_number_token(token: str, *, decimal_comma: bool) -> int | float:
    sign = -1 if token.startswith("-") else 1
    body = token.lstrip("-")
    groups = _SEPARATOR.split(body)
    separators = _SEPARATOR.findall(body)

    if not separators:
        digits = body
    elif len(set(separators)) == 1 and len(separators) == 1:
        digits = _single_separator(groups, separators[0], decimal_comma)
    elif len(set(separators)) == 1:
        # The same mark repeated can only separate thousands ("1,234,567").
        digits = "".join(groups) if _is_thousands_grouping(groups) else groups[-1]
    else:
        decimal_mark = separators[-1]
        integer_groups = groups[:-1]
        if separators.count(decimal_mark) == 1 and _is_thousands_grouping(integer_groups):
            digits = "".join(integer_groups) + "." + groups[-1]
        else:
            digits = groups[-1]

    value = sign * float(digits)
    return int(value) if value.is_integer() and "." not in digits else value


def _single_separator(groups: list[str], separator: str, decimal_comma: bool) -> str:
    """Read ``integer<sep>fraction`` as a decimal number or as thousands, following the convention."""
    integer, fraction = groups
    ambiguous = len(fraction) == 3 and len(integer) <= 3 and not integer.startswith("0")
    if ambiguous:
        thousands_mark = "." if decimal_comma else ","
        if separator == thousands_mark:
            return integer + fraction
    return integer + "." + fraction


def _is_thousands_grouping(groups: list[str]) -> bool:
    first = groups[0]
    return 1 <= len(first) <= 3 and not first.startswith("0") and all(len(group) == 3 for group in groups[1:])


def _numbers_equal(predicted: int | float, reference: int | float) -> bool:
    return abs(predicted - reference) <= 1e-6 * max(1.0, abs(reference))


def _reference_number(answer: int | float | str, index: int) -> int | float:
    if isinstance(answer, bool):
        raise ConfigurationError(f"answers[{index}] must be a number or a numeric string, got {answer!r}.")
    if isinstance(answer, (int, float)):
        return answer
    if isinstance(answer, str):
        number = extract_last_number(answer)
        if number is not None:
            return number
    raise ConfigurationError(f"answers[{index}] must be a number or a numeric string, got {answer!r}.")


def _question_and_choices(item: Any, index: int) -> tuple[str, Sequence[str]]:
    question = item.get("question") if isinstance(item, Mapping) else getattr(item, "question", None)
    choices = item.get("choices") if isinstance(item, Mapping) else getattr(item, "choices", None)
    if not isinstance(question, str) or choices is None or isinstance(choices, str):
        raise ConfigurationError(
            f"items[{index}] needs a 'question' string and a sequence of 4 'choices', got {type(item).__name__}."
        )
    return question, list(choices)


def _answer_letter(item: Any, index: int) -> str:
    answer = item.get("answer") if isinstance(item, Mapping) else getattr(item, "answer", None)
    if answer not in CHOICE_LETTERS:
        raise ConfigurationError(f"items[{index}] has answer {answer!r}; expected one of {', '.join(CHOICE_LETTERS)}.")
    return answer


def _accuracy(correct: list[bool], *, confidence: float, n_resamples: int, seed: int) -> RateEstimate:
    low, high = bootstrap_interval(correct, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return RateEstimate(value=sum(correct) / len(correct), low=low, high=high, n=len(correct), confidence=confidence)
