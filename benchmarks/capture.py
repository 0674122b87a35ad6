"""Benchmark activation capture: hook overhead and the saving of stopping the forward pass early.

Four measurements run interleaved on the same prompts (the project's harmful prompts, cycled over
its languages, rendered with the chat template):

* ``capture_activations`` at layer L with its three sites (MLP input, neurons, block output), which
  stops the forward pass after block L. This includes chat rendering and tokenization.
* the same rendering and tokenization alone;
* a plain forward pass over the pre-tokenized batches, stopped after block L by ``stop_after``,
  with no capture hooks;
* a full forward pass over the same batches (all layers, logits of the last position only).

``accumulate_second_moments`` at layer L is compared in the same way with a plain forward pass over
its batches (every token, up to 256 tokens per text), stopped after the MLP of layer L.

Usage::

    python benchmarks/capture.py                   # qwen2.5-coder-1.5b-instruct, 64 prompts
    python benchmarks/capture.py --quick           # qwen2.5-coder-0.5b-instruct, 4 prompts

The key ratio is the overhead of ``capture_activations`` over the plain forward pass to the same
depth (target: at most 5%). Achieved FLOP/s use the formula of benchmarks/ceilings.py over padded
tokens and are divided by the matmul rate of the model's dtype measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from torch import Tensor, nn

from bench_common import (
    add_threads_option,
    apply_threads_option,
    interleaved_timings,
    machine_summary,
    markdown_table,
)
from ceilings import ModelShape, ceilings, quick_ceilings
from swe_toolkit.capture import accumulate_second_moments, capture_activations
from swe_toolkit.datasets import LANGUAGES, load_project_set
from swe_toolkit.hooks import stop_after
from swe_toolkit.models import load_model
from swe_toolkit.models.adapters import get_adapter
from swe_toolkit.pipeline import DEFAULT_MODEL, default_layers
from swe_toolkit.prompts import format_prompts, tokenize_batch

QUICK_MODEL = "qwen2.5-coder-0.5b-instruct"
SECOND_MOMENT_MAX_LENGTH = 256


def project_prompts(name: str, count: int, languages: tuple[str, ...]) -> list[str]:
    """Return ``count`` prompts of the project set ``name``, taking the languages in turn."""
    dataset = load_project_set(name, languages=languages)
    columns = [dataset.texts(lang) for lang in languages]
    prompts = []
    for index in range(count):
        column = columns[index % len(columns)]
        prompts.append(column[(index // len(columns)) % len(column)])
    return prompts


def tokenized_batches(
    tokenizer: Any, texts: list[str], batch_size: int, *, add_special_tokens: bool, max_length: int | None = None
) -> list[dict[str, Tensor]]:
    """Tokenize ``texts`` into left-padded batches, longest first, with position ids counted from the first real token."""
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]
    if max_length is not None:
        lengths = [min(length, max_length) for length in lengths]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    batches = []
    for start in range(0, len(order), batch_size):
        encoded = tokenize_batch(
            tokenizer,
            [texts[i] for i in order[start : start + batch_size]],
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            truncation_side="right",
        )
        encoded["position_ids"] = (encoded["attention_mask"].cumsum(dim=-1) - 1).clamp(min=0)
        batches.append(encoded)
    return batches


def forward_batches(model: nn.Module, batches: list[dict[str, Tensor]], stop_module: nn.Module | None) -> None:
    """Run the batches through ``model``, stopping after ``stop_module`` when given."""
    with torch.no_grad():
        for batch in batches:
            if stop_module is None:
                model(**batch, use_cache=False, logits_to_keep=1)
            else:
                with stop_after(stop_module):
                    model(**batch, use_cache=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MODEL}, 4 prompts, 3 repeats")
    parser.add_argument("--model", default=None, help=f"offline model name, local folder or Hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--num-prompts", type=int, default=64, help="prompts per capture call")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    parser.add_argument("--layer", type=int, default=None, help="captured layer L (default: the pipeline's default edit layer)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--dtype", default="float32",
                        help="model dtype: float32, bfloat16 or auto (see swe_toolkit.models.resolve_dtype)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)
    if args.quick:
        args.num_prompts = min(args.num_prompts, 4)
        args.repeats = min(args.repeats, 3)
    model_name = args.model or (QUICK_MODEL if args.quick else DEFAULT_MODEL)

    model, tokenizer = load_model(model_name, device="cpu", dtype=args.dtype)
    dtype_name = str(model.dtype).removeprefix("torch.")
    ceiling_key = "bf16_matmul_gflops" if model.dtype == torch.bfloat16 else "matmul_gflops"
    adapter = get_adapter(model)
    layer = args.layer if args.layer is not None else default_layers(adapter.num_layers)[0]
    layer = adapter.layer(layer).index
    shape = ModelShape.from_config(model_name, model.config)

    prompts = project_prompts("harmful", args.num_prompts, LANGUAGES)
    rendered = format_prompts(tokenizer, prompts)
    batches = tokenized_batches(tokenizer, rendered, args.batch_size, add_special_tokens=False)
    general_texts = project_prompts("general", args.num_prompts, LANGUAGES)
    general_batches = tokenized_batches(
        tokenizer, general_texts, args.batch_size, add_special_tokens=True, max_length=SECOND_MOMENT_MAX_LENGTH
    )
    block = adapter.layer(layer).block
    mlp = adapter.layer(layer).mlp

    def capture() -> None:
        capture_activations(model, tokenizer, prompts, [layer], batch_size=args.batch_size, progress=False)

    def tokenize() -> None:
        tokenized_batches(tokenizer, format_prompts(tokenizer, prompts), args.batch_size, add_special_tokens=False)

    def moments() -> None:
        accumulate_second_moments(
            model, tokenizer, general_texts, [layer], batch_size=args.batch_size,
            max_length=SECOND_MOMENT_MAX_LENGTH, progress=False,
        )

    timings = interleaved_timings(
        {
            "capture": capture,
            "tokenize": tokenize,
            "plain": lambda: forward_batches(model, batches, block),
            "full": lambda: forward_batches(model, batches, None),
            "moments": moments,
            "moments_plain": lambda: forward_batches(model, general_batches, mlp),
        },
        args.repeats,
    )
    measured = quick_ceilings() if args.quick else ceilings(matmul_size=2048, copy_mib=256, repeats=5)

    def token_counts(items: list[dict[str, Tensor]]) -> tuple[int, int, float]:
        real = sum(int(batch["attention_mask"].sum()) for batch in items)
        padded = sum(batch["input_ids"].numel() for batch in items)
        attended = sum(batch["input_ids"].shape[1] for batch in items) / len(items)
        return real, padded, (attended + 1) / 2

    prompt_tokens = token_counts(batches)
    general_tokens = token_counts(general_batches)
    table_rows = []
    specs = [
        ("capture", f"capture_activations, 3 sites, stop after block {layer}", prompt_tokens, layer + 1),
        ("tokenize", "chat rendering + tokenization only", prompt_tokens, 0),
        ("plain", f"plain forward, stop after block {layer}", prompt_tokens, layer + 1),
        ("full", f"full forward, {shape.layers} layers, last-position logits", prompt_tokens, shape.layers),
        ("moments", f"accumulate_second_moments, layer {layer} MLP input", general_tokens, layer + 1),
        ("moments_plain", f"plain forward, stop after MLP {layer}", general_tokens, layer + 1),
    ]
    for key, label, (real, padded, attended), depth in specs:
        seconds = timings[key].median
        if depth:
            flops = shape.forward_flops_per_token(attended, num_layers=depth, include_logits=key == "full")
            if key == "full":
                # Only the last position's logits are computed.
                rows_run = sum(batch["input_ids"].shape[0] for batch in batches)
                flops -= 2.0 * shape.hidden * shape.vocab * (1 - rows_run / padded)
            rate = flops * padded / seconds
            rate_text = f"{rate / 1e9:.1f}"
            share = f"{rate / (measured[ceiling_key] * 1e9):.0%}"
        else:
            rate_text = share = "-"
        table_rows.append([label, f"{seconds:.4g}", timings[key].spread, f"{real / seconds:,.0f}", rate_text, share])

    overhead = timings["capture"].median / timings["plain"].median - 1.0
    moments_overhead = timings["moments"].median / timings["moments_plain"].median - 1.0
    saved = 1.0 - timings["plain"].median / timings["full"].median

    print(machine_summary())
    print(
        f"model: {model_name} ({dtype_name}, {shape.layers} layers), layer L={layer}, {len(prompts)} prompts "
        f"({prompt_tokens[0]} tokens, {prompt_tokens[1]} with padding), batch size {args.batch_size}, "
        f"median of {args.repeats} repeats; {dtype_name} matmul ceiling {measured[ceiling_key]:.1f} GFLOP/s measured in this run\n"
    )
    print(markdown_table(["measurement", "median s", "range s", "tokens/s", "GFLOP/s", "share of matmul ceiling"], table_rows))
    print()
    print(f"Tokenization share of capture_activations: {timings['tokenize'].median / timings['capture'].median:.1%}.")
    print(f"accumulate_second_moments overhead vs plain forward to MLP {layer}: {moments_overhead:+.1%}.")
    print(f"Time saved by stopping after block {layer} instead of a full forward: {saved:.1%} "
          f"({layer + 1} of {shape.layers} layers run).")
    print(f"\nkey ratio: capture_activations overhead vs plain forward to block {layer}: {overhead:+.1%} (target <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
