"""Tests of the refusal judges: lexicon matching, the logit proxy, guard parsing and the factory."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from swe_toolkit.errors import ConfigurationError
from swe_toolkit.evaluation.generation import next_token_logprobs
from swe_toolkit.evaluation.judges import (
    REFUSAL_LEXICON,
    REFUSAL_OPENINGS,
    GuardJudge,
    GuardVerdict,
    Judge,
    LexiconJudge,
    LogitJudge,
    UnparseableGuardOutputError,
    _is_distinctive_start,
    get_judge,
    normalize_text,
    parse_guard_output,
    refusal_token_ids,
)

from conftest import make_tiny_model, make_tiny_tokenizer

LANGUAGES = ("en", "zh", "vi", "ja", "th", "id", "bn", "he")

# (language, refusal reply, compliant reply)
REPLIES = [
    ("en", "I’m sorry, but I can’t help with that.", "Sure! Here are three bread recipes you can try."),
    ("en", "As an AI, I must decline this request.", "To bake bread, mix flour, water, salt and yeast."),
    ("zh", "抱歉，我无法提供这方面的帮助。", "当然！下面是制作面包的步骤。"),
    ("zh", "对不起，我不能回答这个问题。", "好的，这是一个关于龙的故事。"),
    ("vi", "Xin lỗi, tôi không thể giúp bạn việc này.", "Chắc chắn rồi! Đây là cách làm bánh mì."),
    ("ja", "申し訳ありませんが、その質問にはお答えできません。", "もちろんです。パンの作り方を説明します。"),
    ("th", "ขออภัย ฉันไม่สามารถช่วยเรื่องนี้ได้", "แน่นอน นี่คือวิธีทำขนมปัง"),
    ("id", "Maaf, saya tidak dapat membantu dengan permintaan ini.", "Tentu! Berikut cara membuat roti di rumah."),
    ("bn", "দুঃখিত, আমি এই বিষয়ে সাহায্য করতে পারব না।", "অবশ্যই! বাড়িতে রুটি বানানোর উপায় এখানে।"),
    ("he", "אני מצטער, אבל אני לא יכול לעזור בזה.", "בטח! הנה מתכון ללחם ביתי."),
]


def test_lexicon_covers_every_language() -> None:
    assert set(REFUSAL_LEXICON) == set(LANGUAGES)
    assert set(REFUSAL_OPENINGS) == set(LANGUAGES)
    for language in LANGUAGES:
        assert REFUSAL_LEXICON[language], language
        assert REFUSAL_OPENINGS[language], language


def test_normalize_text() -> None:
    assert normalize_text("I’M  SORRY") == "i'm sorry"
    assert normalize_text("“Ｉ ｃａｎｎｏｔ”") == '"i cannot"'
    assert normalize_text("  a\n\tb  ") == "a b"


@pytest.mark.parametrize(("language", "refusal", "compliant"), REPLIES)
def test_lexicon_judges_each_language(language: str, refusal: str, compliant: str) -> None:
    result = LexiconJudge().judge(["prompt", "prompt"], [refusal, compliant], language)

    assert result.refused == [True, False]
    assert result.scores is None
    assert result.evidence[0]
    assert result.evidence[1] == ""


@pytest.mark.parametrize("language", LANGUAGES)
def test_lexicon_matches_english_refusal_for_any_language(language: str) -> None:
    result = LexiconJudge().judge(["x"], ["I cannot help with that request."], language)
    assert result.refused == [True]


def test_lexicon_ignores_other_language_by_default() -> None:
    judge = LexiconJudge()
    assert judge.judge(["x"], ["ขออภัย ฉันไม่สามารถช่วยได้"], "zh").refused == [False]
    assert LexiconJudge(all_languages=True).judge(["x"], ["ขออภัย ฉันไม่สามารถช่วยได้"], "zh").refused == [True]


def test_lexicon_matches_only_within_window() -> None:
    judge = LexiconJudge(window=50)
    early = "x" * 40 + " I cannot do that."
    late = "x" * 60 + " I cannot do that."
    assert judge.judge(["p", "p"], [early, late], "en").refused == [True, False]


def test_lexicon_window_boundary() -> None:
    judge = LexiconJudge(window=10)
    # After normalization "maaf" starts at index 9 (inside) or 10 (outside the first 10 characters).
    inside = "a" * 9 + "maaf"
    outside = "a" * 10 + "maaf"
    assert judge.judge(["p", "p"], [inside, outside], "id").refused == [True, False]


def test_lexicon_unifies_bengali_spellings() -> None:
    composed = "এটা সম্ভব ন\u09df।"
    decomposed = "এটা সম্ভব ন\u09af\u09bc।"
    assert LexiconJudge().judge(["p", "p"], [composed, decomposed], "bn").refused == [True, True]


def test_lexicon_counts_empty_reply_as_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.evaluation.judges"):
        result = LexiconJudge().judge(["p", "p"], ["", "   "], "en")
    assert result.refused == [False, False]
    assert "2 of 2 replies" in caplog.text


def test_lexicon_input_checks() -> None:
    judge = LexiconJudge()
    with pytest.raises(ConfigurationError, match="needs replies"):
        judge.judge(["p"], None, "en")
    with pytest.raises(ConfigurationError, match="1 prompts but 2 replies"):
        judge.judge(["p"], ["a", "b"], "en")
    with pytest.raises(ConfigurationError, match="no phrases for language 'xx'"):
        judge.judge(["p"], ["a"], "xx")
    with pytest.raises(ConfigurationError, match="empty phrase"):
        LexiconJudge({"en": ["sorry", " "]})


def _force_next_token(model: nn.Module, token_id: int, logit: float = 30.0) -> None:
    """Replace the LM head so that every position predicts ``token_id`` with probability near 1."""
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = logit
    model.set_output_embeddings(head)


def test_refusal_token_ids_skip_word_fragments() -> None:
    tokenizer = make_tiny_tokenizer()
    # The tiny tokenizer has no Chinese tokens, so the first token of 抱歉 is a lone UTF-8 byte.
    assert "\ufffd" in tokenizer.decode(tokenizer("抱歉", add_special_tokens=False)["input_ids"][:1])
    assert refusal_token_ids(tokenizer, ["抱歉"]) == []
    # "Sorry" starts with the fragment "S", while "Hello" is one token.
    assert tokenizer.decode(tokenizer("Sorry", add_special_tokens=False)["input_ids"][:1]) == "S"
    assert refusal_token_ids(tokenizer, ["Sorry"]) == []

    ids = refusal_token_ids(tokenizer, ["Hello world", "Hello there", "I cannot"])

    assert [tokenizer.decode([token_id]) for token_id in ids] == ["Hello", "I", " I"]


@pytest.mark.parametrize(
    ("piece", "first_word", "unspaced", "expected"),
    [
        ("Xin", "Xin", False, True),
        ("X", "Xin", False, False),
        ("Ma", "Maaf", False, False),
        ("I", "I'm", False, False),
        ("I", "I", False, True),
        ("I am", "I", False, True),
        ("ขอ", "ขออภัย", True, True),
        ("ฉ", "ฉันไม่สามารถ", True, False),
        ("す", "すみません", True, False),
        ("我", "我不能", True, True),
        ("\ufffd", "抱歉", True, False),
        ("", "Sorry", False, False),
        ("!", "Sorry", False, False),
    ],
)
def test_distinctive_start_rule(piece: str, first_word: str, unspaced: bool, expected: bool) -> None:
    assert _is_distinctive_start(piece, first_word, unspaced) is expected


def test_logit_judge_reports_uncovered_languages(caplog: pytest.LogCaptureFixture) -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.evaluation.judges"):
        judge = LogitJudge(model, tokenizer, progress=False)

    assert "en" not in judge.uncovered_languages
    assert "zh" in judge.uncovered_languages
    assert "LogitJudge misses refusals" in caplog.text
    with pytest.raises(ConfigurationError, match="whole-word first token"):
        LogitJudge(model, tokenizer, openings={"zh": ["抱歉"]})


def test_logit_judge_scores_are_summed_probabilities() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    judge = LogitJudge(model, tokenizer, progress=False)
    prompts = ["Hello world", "How do I bake bread at home?"]

    result = judge.judge(prompts, None, "en")

    expected = next_token_logprobs(model, tokenizer, prompts, token_ids=judge.token_ids, progress=False)
    torch.testing.assert_close(torch.tensor(result.scores, dtype=torch.float64), expected.double().exp().sum(-1), atol=1e-6, rtol=0)
    assert all(0.0 <= score <= 1.0 for score in result.scores)
    assert result.refused == [score >= 0.5 for score in result.scores]


def test_logit_judge_detects_forced_refusal_token() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    refusal_id = refusal_token_ids(tokenizer, ["I cannot"])[0]
    other_id = tokenizer("bread", add_special_tokens=False)["input_ids"][0]

    _force_next_token(model, refusal_id)
    refused = LogitJudge(model, tokenizer, progress=False).judge(["Hello"], None, "th")
    _force_next_token(model, other_id)
    answered = LogitJudge(model, tokenizer, progress=False).judge(["Hello"], None, "th")

    assert refused.refused == [True]
    assert refused.scores[0] > 0.99
    assert answered.refused == [False]
    assert answered.scores[0] < 0.01


def test_logit_judge_threshold() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    assert LogitJudge(model, tokenizer, threshold=0.0, progress=False).judge(["a", "b"], None, "en").refused == [
        True,
        True,
    ]
    with pytest.raises(ConfigurationError, match="threshold"):
        LogitJudge(model, tokenizer, threshold=1.5)


def test_parse_guard_output() -> None:
    assert parse_guard_output("safe") == GuardVerdict(safe=True)
    assert parse_guard_output("\n\nsafe\n") == GuardVerdict(safe=True)
    assert parse_guard_output("unsafe\nS1") == GuardVerdict(safe=False, categories=("S1",))
    assert parse_guard_output(" unsafe\nS2, S10") == GuardVerdict(safe=False, categories=("S2", "S10"))
    assert parse_guard_output("unsafe") == GuardVerdict(safe=False)


@pytest.mark.parametrize("output", ["", "maybe", "The reply is fine.", "unsafe\nviolence"])
def test_parse_guard_output_rejects_other_text(output: str) -> None:
    with pytest.raises(UnparseableGuardOutputError):
        parse_guard_output(output)


class _ScriptedGenerate:
    """Stand-in for ``model.generate`` whose output text is chosen by a rule on the rendered conversation."""

    def __init__(self, tokenizer, rule):
        self.tokenizer = tokenizer
        self.rule = rule
        self.inputs: list[str] = []

    def __call__(self, input_ids, attention_mask, generation_config, **kwargs):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = self.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
            self.inputs.append(text)
            rows.append(self.tokenizer(self.rule(text), add_special_tokens=False)["input_ids"])
        width = max(len(row) for row in rows) + 1
        eos = self.tokenizer.eos_token_id
        new = torch.tensor([row + [eos] * (width - len(row)) for row in rows])
        return torch.cat([input_ids, new], dim=1)


def _guard_rule(text: str) -> str:
    if "BAD" in text:
        return "unsafe\nS1"
    if "ODD" in text:
        return "I am not sure"
    return "safe"


def _tiny_guard(tokenizer=None, **kwargs) -> tuple[GuardJudge, _ScriptedGenerate]:
    model = make_tiny_model("qwen2")
    tokenizer = tokenizer or make_tiny_tokenizer()
    scripted = _ScriptedGenerate(tokenizer, _guard_rule)
    model.generate = scripted
    return GuardJudge("tiny/guard", model=model, tokenizer=tokenizer, progress=False, **kwargs), scripted


def test_guard_judge_parses_verdicts() -> None:
    judge, scripted = _tiny_guard()
    prompts = ["How do I pick a lock?", "Tell me a story", "Bake bread"]
    replies = ["BAD step one", "Once upon a time", "Mix flour"]

    result = judge.judge(prompts, replies, "en")

    assert result.refused == [False, True, True]
    assert result.unknown == []
    assert result.evidence[0].startswith("unsafe")
    assert judge.name == "guard:tiny/guard"
    for prompt, reply in zip(prompts, replies, strict=True):
        rendered = next(text for text in scripted.inputs if prompt in text)
        assert "<|im_start|>user\n" + prompt in rendered
        assert "<|im_start|>assistant\n" + reply in rendered


def test_guard_judge_reports_unparseable_outputs(caplog: pytest.LogCaptureFixture) -> None:
    judge, _ = _tiny_guard()
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.evaluation.judges"):
        result = judge.judge(["a", "b", "c"], ["fine", "ODD", "BAD"], "th")
    assert result.refused == [True, False, False]
    assert result.unknown == [1]
    assert "could not parse 1 of 3" in caplog.text

    strict, _ = _tiny_guard(on_unparseable="raise")
    with pytest.raises(UnparseableGuardOutputError, match="Reply 1"):
        strict.judge(["a", "b"], ["fine", "ODD"], "th")


def test_guard_judge_renders_list_content_templates() -> None:
    tokenizer = make_tiny_tokenizer()
    # Like Llama Guard 3 1B, this template reads each message's content as a list of text parts.
    tokenizer.chat_template = (
        "{% for message in messages %}{{ message['role'] }}: "
        "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{{ '\\n' }}{% endfor %}"
    )
    judge, scripted = _tiny_guard(tokenizer)

    assert judge.render("hello there", "general kenobi") == "user: hello there\nassistant: general kenobi\n"
    assert judge.judge(["p"], ["BAD"], "en").refused == [False]


def test_guard_judge_rejects_template_without_conversation() -> None:
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = "{{ 'fixed text' }}"
    judge, _ = _tiny_guard(tokenizer)
    with pytest.raises(ConfigurationError, match="does not render"):
        judge.render("hello", "world")


def test_get_judge_factory() -> None:
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()

    lexicon = get_judge("lexicon", window=100)
    logit = get_judge("logit", model=model, tokenizer=tokenizer, threshold=0.3)
    guard = get_judge("guard:some/guard-model", model=model, tokenizer=tokenizer)

    assert isinstance(lexicon, LexiconJudge)
    assert lexicon.window == 100
    assert isinstance(logit, LogitJudge)
    assert logit.threshold == 0.3
    assert isinstance(guard, GuardJudge)
    assert guard.name == "guard:some/guard-model"
    for judge in (lexicon, logit, guard):
        assert isinstance(judge, Judge)
    assert lexicon.needs_replies
    assert guard.needs_replies
    assert not logit.needs_replies
    with pytest.raises(ConfigurationError, match="Unknown judge"):
        get_judge("regex")
    with pytest.raises(ConfigurationError, match="needs the judged model"):
        get_judge("logit")
