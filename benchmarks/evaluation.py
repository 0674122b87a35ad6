"""Benchmark evaluation: batched vs one-prompt-at-a-time generation, and the logit vs lexicon judge.

Prompts come from the test split of the project's harmful and harmless sets, taking the languages
in turn. Three measurements run interleaved:

* ``generate_token_ids`` over all prompts with ``--batch-size`` (greedy, ``--max-new-tokens``);
* the same with batch size 1;
* ``LogitJudge.judge``, one forward pass per batch and no generation.

The lexicon judge is timed separately on the batched replies, and "generation + lexicon judge" is
the sum of the two medians. Agreement is the share of prompts on which the logit judge and the
lexicon judge (applied to the generated replies) give the same refused/answered verdict.

Usage::

    python benchmarks/evaluation.py            # qwen2.5-coder-1.5b-instruct, 32 prompts, 32 new tokens
    python benchmarks/evaluation.py --quick    # qwen2.5-coder-0.5b-instruct, 4 prompts, 8 new tokens
"""

from __future__ import annotations

import argparse
import sys

from bench_common import (
    add_threads_option,
    apply_threads_option,
    interleaved_timings,
    machine_summary,
    markdown_table,
    time_repeats,
)
from swe_toolkit.datasets import LANGUAGES, load_project_set
from swe_toolkit.evaluation import LexiconJudge, LogitJudge, generate_token_ids
from swe_toolkit.models import load_model
from swe_toolkit.pipeline import DEFAULT_MODEL

QUICK_MODEL = "qwen2.5-coder-0.5b-instruct"


def evaluation_prompts(count: int, languages: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Return ``count`` (set name, language, prompt) triples, half harmful and half harmless."""
    items = []
    for index, name in enumerate(("harmful", "harmless")):
        share = count // 2 + (count % 2 if index == 0 else 0)
        dataset = load_project_set(name, languages=languages).split("test")
        for position in range(share):
            lang = languages[position % len(languages)]
            texts = dataset.texts(lang)
            items.append((name, lang, texts[(position // len(languages)) % len(texts)]))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MODEL}, 4 prompts, 8 new tokens, 3 repeats")
    parser.add_argument("--model", default=None, help=f"offline model name, local folder or Hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--num-prompts", type=int, default=32, help="prompts in total, half harmful and half harmless")
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated language codes")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch of the batched runs")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generated tokens per reply at most")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    parser.add_argument("--dtype", default="float32",
                        help="model dtype: float32, bfloat16 or auto (see swe_toolkit.models.resolve_dtype)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)
    if args.quick:
        args.num_prompts = min(args.num_prompts, 4)
        args.max_new_tokens = min(args.max_new_tokens, 8)
        args.repeats = min(args.repeats, 3)
    model_name = args.model or (QUICK_MODEL if args.quick else DEFAULT_MODEL)
    languages = tuple(part.strip() for part in args.languages.split(",") if part.strip())

    model, tokenizer = load_model(model_name, device="cpu", dtype=args.dtype)
    items = evaluation_prompts(args.num_prompts, languages)
    prompts = [prompt for _, _, prompt in items]
    logit_judge = LogitJudge(model, tokenizer, batch_size=args.batch_size, progress=False)
    lexicon_judge = LexiconJudge()
    outputs: dict[str, list[list[int]]] = {}

    def generate_with(batch_size: int) -> None:
        outputs[f"batch {batch_size}"] = generate_token_ids(
            model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch_size, progress=False
        )

    logit_scores: list[float] = []

    def judge_by_logits() -> None:
        # The logit judge ignores the language, so one call covers every prompt.
        logit_scores[:] = logit_judge.judge(prompts, None, languages[0]).scores

    timings = interleaved_timings(
        {
            "batched": lambda: generate_with(args.batch_size),
            "single": lambda: generate_with(1),
            "logit": judge_by_logits,
        },
        args.repeats,
    )

    replies = [tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs[f"batch {args.batch_size}"]]

    def judge_by_lexicon() -> list[bool]:
        verdicts = [False] * len(items)
        for lang in languages:
            rows = [i for i, (_, item_lang, _) in enumerate(items) if item_lang == lang]
            if rows:
                result = lexicon_judge.judge([prompts[i] for i in rows], [replies[i] for i in rows], lang)
                for row, refused in zip(rows, result.refused, strict=True):
                    verdicts[row] = refused
        return verdicts

    lexicon = time_repeats(judge_by_lexicon, max(args.repeats, 5))
    lexicon_verdicts = judge_by_lexicon()
    logit_verdicts = [score >= logit_judge.threshold for score in logit_scores]

    batched_tokens = sum(len(ids) for ids in outputs[f"batch {args.batch_size}"])
    single_tokens = sum(len(ids) for ids in outputs["batch 1"])
    identical = sum(a == b for a, b in zip(outputs[f"batch {args.batch_size}"], outputs["batch 1"], strict=True))
    generation_and_lexicon = timings["batched"].median + lexicon.median

    print(machine_summary())
    print(
        f"model: {model_name} ({str(model.dtype).removeprefix('torch.')}), {len(prompts)} prompts ({', '.join(languages)}), "
        f"max_new_tokens={args.max_new_tokens}, median of {args.repeats} repeats\n"
    )
    print("Generation:\n")
    print(
        markdown_table(
            ["measurement", "median s", "range s", "new tokens", "tokens/s"],
            [
                [f"generate, batch size {args.batch_size}", f"{timings['batched'].median:.4g}",
                 timings["batched"].spread, batched_tokens, f"{batched_tokens / timings['batched'].median:.1f}"],
                ["generate, batch size 1", f"{timings['single'].median:.4g}",
                 timings["single"].spread, single_tokens, f"{single_tokens / timings['single'].median:.1f}"],
            ],
        )
    )
    batch_ratio = (batched_tokens / timings["batched"].median) / (single_tokens / timings["single"].median)
    print(f"\nReplies identical between the batched and the one-at-a-time run: {identical} of {len(prompts)}.\n")

    both = sum(a and b for a, b in zip(logit_verdicts, lexicon_verdicts))
    only_logit = sum(a and not b for a, b in zip(logit_verdicts, lexicon_verdicts))
    only_lexicon = sum(b and not a for a, b in zip(logit_verdicts, lexicon_verdicts))
    neither = len(prompts) - both - only_logit - only_lexicon
    agreement = (both + neither) / len(prompts)
    print("Judges:\n")
    print(
        markdown_table(
            ["measurement", "median s", "range s"],
            [
                ["logit judge (one forward pass per batch)", f"{timings['logit'].median:.4g}", timings["logit"].spread],
                ["lexicon judge on the batched replies", f"{lexicon.median:.4g}", lexicon.spread],
                ["batched generation + lexicon judge (sum of medians)", f"{generation_and_lexicon:.4g}", "-"],
            ],
        )
    )
    print(
        f"\nAgreement of the logit judge (threshold {logit_judge.threshold}) with the lexicon judge on the same "
        f"prompts: {agreement:.1%} of {len(prompts)} (both refused {both}, only logit {only_logit}, "
        f"only lexicon {only_lexicon}, neither {neither})."
    )
    judge_ratio = generation_and_lexicon / timings["logit"].median
    print(f"Logit judge speedup over generation + lexicon judge: {judge_ratio:.1f}x.")
    print(f"\nkey ratio: batched generation throughput over one prompt at a time {batch_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
