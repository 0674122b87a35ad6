"""Check the library on randomly initialized 7-8B models on one GPU, and time the heavy steps.

The script needs no network and no downloaded weights. It builds Llama-3-8B and Qwen2.5-7B shaped
models with random weights directly on the device, in bfloat16, and a word-level tokenizer with a
ChatML template whose words map to random token ids. For each model it:

1. times ``capture_activations`` (three sites, stopped after layer L) against a plain forward pass
   stopped after the same layer and a full forward pass, in tokens/s;
2. compares the captured MLP input and neuron activations of layer L with a float32 CPU
   recomputation of that layer from the captured output of layer L - 1;
3. localizes neurons on the device and compares Cohen's d with a float64 CPU computation;
4. fits an input-side edit of layer L with ``solve_input_side`` (float64 on the device), compares
   the solve with a float64 CPU solve of the same problem, and times it;
5. applies and reverts the edit and checks that the edited rows are the rounded sums, the other
   rows are untouched, and the revert restores every bit;
6. reports the peak device memory.

It prints two Markdown tables, checks and timings, and exits with status 1 when a check fails.

Usage::

    python benchmarks/gpu_check.py                             # one GPU; sized for under 8 minutes on an H200
    python benchmarks/gpu_check.py --shrink --device cpu       # 4-layer models, seconds on a CPU

``--shrink`` keeps each architecture's layout (gated MLP, grouped-query attention with the same
query-to-key-value head ratio, rope theta) at 4 layers and about 1/16 of the widths.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench_common import (
    add_threads_option,
    apply_threads_option,
    interleaved_timings,
    machine_summary,
    markdown_table,
    synchronize,
    time_repeats,
    track_peak_rss,
)
from ceilings import ModelShape
from swe_toolkit.capture import accumulate_second_moments, capture_activations
from swe_toolkit.edit import SparseEdit
from swe_toolkit.fit import EditConfig, solve_input_side
from swe_toolkit.hooks import capture_inputs, capture_outputs, stop_after
from swe_toolkit.localize import cohens_d, jaccard, localize
from swe_toolkit.models.adapters import ArchitectureAdapter, get_adapter
from swe_toolkit.prompts import format_prompts, tokenize_batch
from swe_toolkit.solver import solve_edit

# Shapes of Llama-3-8B and Qwen2.5-7B-Instruct. rms_norm_eps and max_position_embeddings do not
# affect the checks.
MODEL_SPECS: dict[str, dict[str, Any]] = {
    "llama-3-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
    },
}

# Shrunk sizes that keep the head ratios: 32 / 8 = 4 query heads per key-value head for Llama,
# 28 / 4 = 7 for Qwen.
SHRUNK_SIZES: dict[str, dict[str, int]] = {
    "llama-3-8b": {
        "hidden_size": 256,
        "intermediate_size": 896,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "vocab_size": 4096,
    },
    "qwen2.5-7b": {
        "hidden_size": 224,
        "intermediate_size": 1184,
        "num_hidden_layers": 4,
        "num_attention_heads": 7,
        "num_key_value_heads": 1,
        "vocab_size": 4096,
    },
}

# Same form as Qwen's ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per turn.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_SPECIAL_TOKENS = ("<pad>", "<|im_start|>", "<|im_end|>", "<unk>")
_ROLE_WORDS = ("user", "assistant", "system")
_MAX_TOKENIZER_WORDS = 32000

# Relative error bounds of the checks. bfloat16 keeps 8 significant bits (relative rounding
# 2^-8 = 3.9e-3), and one decoder layer accumulates several such roundings.
_LOW_PRECISION_BOUND = 5e-2
_FLOAT32_BOUND = 1e-4
_FLOAT64_SCORE_BOUND = 1e-10
_FLOAT64_SOLVE_BOUND = 1e-8


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one run."""

    throughput_prompts: int
    localize_prompts: int
    fit_prompts: int
    general_texts: int
    min_words: int
    max_words: int
    batch_size: int
    neurons: int
    rank: int
    repeats: int


# NOTE: these sizes have not run on a GPU yet, so the 8-minute budget on an H200 is an estimate.
FULL_SIZES = Sizes(
    throughput_prompts=256, localize_prompts=64, fit_prompts=256, general_texts=128,
    min_words=96, max_words=192, batch_size=32, neurons=1024, rank=64, repeats=3,
)
SHRUNK_WORKLOAD = Sizes(
    throughput_prompts=16, localize_prompts=12, fit_prompts=16, general_texts=12,
    min_words=12, max_words=32, batch_size=8, neurons=32, rank=8, repeats=3,
)


@dataclass
class Report:
    """Rows of the two output tables."""

    checks: list[list[object]] = field(default_factory=list)
    timings: list[list[object]] = field(default_factory=list)
    overheads: dict[str, float] = field(default_factory=dict)

    def check(self, model: str, name: str, value: float | bool, bound: float | None, detail: str = "") -> None:
        """Record a check; a float passes when it is at most ``bound``, a bool when it is True."""
        if isinstance(value, bool):
            passed = value
            result_text = "yes" if value else "no"
            target = "yes"
        else:
            passed = value <= bound
            result_text = f"{value:.3g}"
            target = f"<= {bound:g}"
        self.checks.append([model, name, result_text + (f" ({detail})" if detail else ""), target, "pass" if passed else "FAIL"])

    @property
    def failures(self) -> int:
        """Number of failed checks."""
        return sum(row[-1] == "FAIL" for row in self.checks)


def build_tokenizer(vocab_size: int) -> Any:
    """Build a word-level tokenizer whose words ``w0``, ``w1``, ... map to ids below ``vocab_size``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    num_words = min(vocab_size, _MAX_TOKENIZER_WORDS) - len(_SPECIAL_TOKENS) - len(_ROLE_WORDS)
    tokens = list(_SPECIAL_TOKENS) + list(_ROLE_WORDS) + [f"w{i}" for i in range(num_words)]
    backend = Tokenizer(models.WordLevel({token: index for index, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.num_words = num_words
    return tokenizer


def random_prompts(
    count: int, sizes: Sizes, num_words: int, seed: int, *, part: tuple[float, float] = (0.0, 1.0)
) -> list[str]:
    """Draw ``count`` prompts of random words from the fraction ``part`` of the word list."""
    rng = random.Random(seed)
    low, high = int(part[0] * num_words), int(part[1] * num_words) - 1
    prompts = []
    for _ in range(count):
        length = rng.randint(sizes.min_words, sizes.max_words)
        prompts.append(" ".join(f"w{rng.randint(low, high)}" for _ in range(length)))
    return prompts


def build_model(name: str, shrink: bool, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Build a randomly initialized model of ``MODEL_SPECS[name]`` with its weights created on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(MODEL_SPECS[name])
    if shrink:
        spec.update(SHRUNK_SIZES[name])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, **spec)
    # Creating the parameters under the device context skips a CPU initialization and copy.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    parameter = next(model.parameters())
    if parameter.device.type != device.type:
        raise RuntimeError(f"{name} was built on {parameter.device}, expected {device}")
    return model.eval()


def _device_batches(tokenizer: Any, prompts: list[str], batch_size: int, device: torch.device) -> list[dict[str, Tensor]]:
    """Render and tokenize ``prompts`` like capture_activations (longest first) and move them to ``device``."""
    texts = format_prompts(tokenizer, prompts)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i].split()))
    batches = []
    for start in range(0, len(order), batch_size):
        encoded = tokenize_batch(
            tokenizer, [texts[i] for i in order[start : start + batch_size]], add_special_tokens=False
        )
        mask = encoded["attention_mask"]
        batches.append(
            {
                "input_ids": encoded["input_ids"].to(device),
                "attention_mask": mask.to(device),
                "position_ids": (mask.cumsum(dim=-1) - 1).clamp(min=0).to(device),
            }
        )
    return batches


def time_capture(
    report: Report, name: str, model: nn.Module, adapter: ArchitectureAdapter, tokenizer: Any,
    layer: int, sizes: Sizes, device: torch.device,
) -> None:
    """Time capture_activations against plain forward passes; add the timing rows."""
    prompts = random_prompts(sizes.throughput_prompts, sizes, tokenizer.num_words, seed=1)
    batches = _device_batches(tokenizer, prompts, sizes.batch_size, device)
    real_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    padded_tokens = sum(batch["input_ids"].numel() for batch in batches)
    stop_module = adapter.layer(layer).block

    def plain() -> None:
        with torch.no_grad():
            for batch in batches:
                with stop_after(stop_module):
                    model(**batch, use_cache=False)

    def full() -> None:
        with torch.no_grad():
            for batch in batches:
                model(**batch, use_cache=False, logits_to_keep=1)

    def capture() -> None:
        capture_activations(model, tokenizer, prompts, [layer], batch_size=sizes.batch_size, progress=False)

    timings = interleaved_timings(
        {"capture": capture, "plain": plain, "full": full}, sizes.repeats, device=device
    )
    shape = ModelShape.from_config(name, model.config)
    mean_length = padded_tokens / len(batches) / sizes.batch_size
    attended = (mean_length + 1) / 2
    depth = layer + 1
    flops = {
        "capture": shape.forward_flops_per_token(attended, num_layers=depth, include_logits=False),
        "plain": shape.forward_flops_per_token(attended, num_layers=depth, include_logits=False),
        "full": shape.forward_flops_per_token(attended, include_logits=False),
    }
    labels = {
        "capture": f"capture_activations, 3 sites, stop after layer {layer}",
        "plain": f"plain forward, stop after layer {layer}",
        "full": f"full forward, {shape.layers} layers, last-position logits",
    }
    for key in ("capture", "plain", "full"):
        seconds = timings[key].median
        achieved = flops[key] * padded_tokens / seconds
        report.timings.append(
            [name, labels[key], f"{seconds:.4g}", f"{real_tokens / seconds:,.0f}", f"{achieved / 1e12:.3g}",
             f"{real_tokens} tokens in {len(batches)} batches"]
        )
    overhead = timings["capture"].median / timings["plain"].median - 1.0
    report.overheads[name] = overhead
    saved = 1.0 - timings["plain"].median / timings["full"].median
    report.timings.append(
        [name, "capture overhead vs plain forward to the same layer", "-", "-", "-",
         f"{overhead:+.1%} (target <= 5%: {'met' if overhead <= 0.05 else 'missed'})"]
    )
    report.timings.append(
        [name, "time saved by stopping after layer L vs full forward", "-", "-", "-",
         f"{saved:.1%} ({depth} of {shape.layers} layers run)"]
    )


def check_capture_reference(
    report: Report, name: str, model: nn.Module, adapter: ArchitectureAdapter, tokenizer: Any,
    layer: int, sizes: Sizes, device: torch.device,
) -> None:
    """Compare captured layer-``layer`` activations with a float32 CPU recomputation of that layer."""
    prompt = random_prompts(1, sizes, tokenizer.num_words, seed=2)[0]
    captured = capture_activations(
        model, tokenizer, [prompt], [layer], sites=("mlp_input", "neurons"), progress=False
    )
    (batch,) = _device_batches(tokenizer, [prompt], 1, device)
    previous = adapter.layer(layer - 1).block
    with torch.no_grad(), capture_outputs({"previous": previous}) as outputs, stop_after(previous):
        model(**batch, use_cache=False)
    hidden = outputs["previous"].to(device="cpu", dtype=torch.float32)

    block = copy.deepcopy(adapter.layer(layer).block).to(device="cpu", dtype=torch.float32)
    rotary = copy.deepcopy(model.model.rotary_emb).to("cpu")
    positions = torch.arange(hidden.shape[1])[None, :]
    # A lone unpadded sequence: SDPA applies the causal mask itself when attention_mask is None.
    with torch.no_grad(), capture_inputs({"mlp": block.mlp}) as inputs:
        block(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary(hidden, positions))
        num_positions = captured.mlp_input[layer].shape[1]
        reference_input = inputs["mlp"][0, -num_positions:]
        mlp = block.mlp
        reference_neurons = mlp.act_fn(mlp.gate_proj(reference_input)) * mlp.up_proj(reference_input)

    bound = _FLOAT32_BOUND if model.dtype == torch.float32 else _LOW_PRECISION_BOUND
    for site, reference in (("mlp_input", reference_input), ("neurons", reference_neurons)):
        got = captured.site(site)[layer][0].cpu()
        error = float(torch.linalg.vector_norm(got - reference) / torch.linalg.vector_norm(reference))
        report.check(
            name, f"capture {site} of layer {layer} vs CPU float32 recomputation", error, bound,
            f"{num_positions} post-instruction tokens of a {hidden.shape[1]}-token prompt",
        )


def check_localization(
    report: Report, name: str, model: nn.Module, adapter: ArchitectureAdapter, tokenizer: Any,
    layer: int, sizes: Sizes, device: torch.device,
) -> Tensor:
    """Localize neurons over all layers on the device; check one layer against CPU float64. Return its neurons."""
    count = sizes.localize_prompts
    # Two groups drawn from disjoint halves of the word list, so their activations differ.
    harmful = random_prompts(count, sizes, tokenizer.num_words, seed=3, part=(0.0, 0.5))
    harmless = random_prompts(count, sizes, tokenizer.num_words, seed=4, part=(0.5, 1.0))
    layers = list(range(adapter.num_layers))
    kwargs = dict(sites=("neurons",), batch_size=sizes.batch_size, progress=False)

    results: list[tuple[Any, Any, Any]] = []

    def run() -> None:
        harmful_acts = capture_activations(model, tokenizer, harmful, layers, **kwargs)
        harmless_acts = capture_activations(model, tokenizer, harmless, layers, **kwargs)
        results[:] = [(harmful_acts, harmless_acts, localize(harmful_acts.neurons, harmless_acts.neurons, k=sizes.neurons))]

    timing = time_repeats(run, sizes.repeats, warmup=0, device=device)
    harmful_acts, harmless_acts, found = results[0]
    report.timings.append(
        [name, f"capture neurons of all {len(layers)} layers + localize", f"{timing.median:.4g}", "-", "-",
         f"{2 * count} prompts, k={sizes.neurons} per layer"]
    )

    device_scores = found.scores[layer].cpu()
    cpu_scores = cohens_d(
        harmful_acts.neurons[layer].cpu().double().mean(dim=1), harmless_acts.neurons[layer].cpu().double().mean(dim=1)
    )
    error = float(torch.linalg.vector_norm(device_scores - cpu_scores) / torch.linalg.vector_norm(cpu_scores))
    report.check(name, f"Cohen's d of layer {layer}, device vs CPU float64", error, _FLOAT64_SCORE_BOUND)
    cpu_selected = localize({layer: harmful_acts.neurons[layer].cpu()}, {layer: harmless_acts.neurons[layer].cpu()},
                            k=sizes.neurons).selected[layer]
    overlap = jaccard({(layer, int(i)) for i in found.selected[layer].tolist()},
                      {(layer, int(i)) for i in cpu_selected.tolist()})
    report.check(name, f"selected neurons of layer {layer} equal the CPU selection", overlap == 1.0,
                 None, f"Jaccard {overlap:.3f}")
    return found.selected[layer]


def check_solve_and_edit(
    report: Report, name: str, model: nn.Module, adapter: ArchitectureAdapter, tokenizer: Any,
    layer: int, neurons: Tensor, sizes: Sizes, device: torch.device,
) -> None:
    """Fit an input-side edit of ``layer``, check the solve against the CPU, then apply and revert."""
    target_prompts = random_prompts(sizes.fit_prompts, sizes, tokenizer.num_words, seed=5)
    english_prompts = random_prompts(sizes.fit_prompts, sizes, tokenizer.num_words, seed=6)
    general_texts = random_prompts(sizes.general_texts, sizes, tokenizer.num_words, seed=7)
    capture = dict(sites=("mlp_input",), batch_size=sizes.batch_size, progress=False)
    target = capture_activations(model, tokenizer, target_prompts, [layer], **capture).mlp_input[layer]
    english = capture_activations(model, tokenizer, english_prompts, [layer], **capture).mlp_input[layer]
    general = accumulate_second_moments(
        model, tokenizer, general_texts, [layer], batch_size=sizes.batch_size, progress=False
    )[layer]
    config = EditConfig(side="input", rank=sizes.rank, alpha=1.0, lam_relative=1e-2)
    mlp_layer = adapter.layer(layer)
    layer_edit, _ = solve_input_side(mlp_layer, neurons, target, english, config, general)

    # The same least-squares problem that solve_input_side builds: rows of gate and up stacked.
    weights = torch.cat([view.neuron_slice(neurons).double() for view in mlp_layer.inputs])
    inputs = target.reshape(-1, target.shape[-1]).T.double()
    target_change = weights @ (english.reshape(-1, english.shape[-1]).T.double() - inputs)
    moment = general.matrix * (inputs.shape[1] / general.count)
    arguments = dict(alpha=config.alpha, lam_relative=config.lam_relative, rank=config.rank)

    device_solution = solve_edit(inputs, target_change, K_g=moment, **arguments)
    same = float(torch.linalg.vector_norm(device_solution.delta - layer_edit.delta())
                 / torch.linalg.vector_norm(device_solution.delta))
    report.check(name, "solve_edit on the rebuilt problem reproduces solve_input_side", same, _FLOAT64_SOLVE_BOUND)
    cpu_solution = solve_edit(inputs.cpu(), target_change.cpu(), K_g=moment.cpu(), **arguments)
    delta_error = float(torch.linalg.vector_norm(device_solution.delta.cpu() - cpu_solution.delta)
                        / torch.linalg.vector_norm(cpu_solution.delta))
    objective_error = abs(device_solution.objective - cpu_solution.objective) / abs(cpu_solution.objective)
    problem = f"d={inputs.shape[0]}, k={target_change.shape[0]}, n={inputs.shape[1]}, r={sizes.rank}"
    report.check(name, f"solve delta, {device.type} float64 vs CPU float64", delta_error, _FLOAT64_SOLVE_BOUND, problem)
    report.check(name, f"solve objective, {device.type} float64 vs CPU float64", objective_error, _FLOAT64_SOLVE_BOUND)

    solve_time = time_repeats(lambda: solve_edit(inputs, target_change, K_g=moment, **arguments), sizes.repeats, device=device)
    report.timings.append([name, f"solve_edit float64 on {device.type}", f"{solve_time.median:.4g}", "-", "-", problem])

    check_apply_revert(report, name, model, mlp_layer, layer_edit, sizes, device)


def check_apply_revert(
    report: Report, name: str, model: nn.Module, mlp_layer: Any, layer_edit: Any, sizes: Sizes, device: torch.device
) -> None:
    """Apply the edit, check the rows, revert it, and check every bit of the weights."""
    edit = SparseEdit([layer_edit], model_id=name)
    views = mlp_layer.inputs
    originals = [view.weight.detach().clone() for view in views]
    index = layer_edit.neurons.to(device)
    untouched = torch.ones(views[0].num_neurons, dtype=torch.bool, device=device)
    untouched[index] = False

    edit.apply(model)
    rows_exact = True
    others_exact = True
    for view, original, block in zip(views, originals, layer_edit.delta_blocks(), strict=True):
        expected = (original[index].double() + block.to(device)).to(original.dtype)
        rows_exact &= bool(torch.equal(view.weight[index], expected))
        others_exact &= bool(torch.equal(view.weight[untouched].view(torch.uint8), original[untouched].view(torch.uint8)))
    changed = any(not torch.equal(view.weight, original) for view, original in zip(views, originals, strict=True))
    edit.revert(model)
    restored = all(
        torch.equal(view.weight.view(torch.uint8), original.view(torch.uint8))
        for view, original in zip(views, originals, strict=True)
    )
    report.check(name, "apply: edited rows equal original + delta, rounded once", rows_exact and changed, None)
    report.check(name, "apply: rows of other neurons untouched (bitwise)", others_exact, None)
    report.check(name, "revert restores every weight bit", restored, None)

    def apply_and_revert() -> None:
        edit.apply(model)
        edit.revert(model)

    cycle = time_repeats(apply_and_revert, sizes.repeats, device=device)
    report.timings.append(
        [name, "apply + revert (includes the fingerprint check)", f"{cycle.median:.4g}", "-", "-",
         f"{layer_edit.neurons.numel()} neurons x {len(views)} projections"]
    )


def run_model(name: str, args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Run every check and timing on one model, then free it."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with track_peak_rss() as host_memory:
        model = build_model(name, args.shrink, device, args.dtype)
        synchronize(device)
        build_seconds = time.perf_counter() - started
        adapter = get_adapter(model)
        tokenizer = build_tokenizer(model.config.vocab_size)
        layer = max(1, int(round(0.6 * (adapter.num_layers - 1))))
        parameters = sum(parameter.numel() for parameter in model.parameters())
        report.timings.append(
            [name, f"build on {device.type} ({args.dtype_name}, random init, 1 run)", f"{build_seconds:.4g}", "-", "-",
             f"{parameters / 1e9:.3f}e9 parameters, d={adapter.d_model}, d_ff={adapter.d_ff}, layers={adapter.num_layers}"]
        )

        time_capture(report, name, model, adapter, tokenizer, layer, sizes, device)
        check_capture_reference(report, name, model, adapter, tokenizer, layer, sizes, device)
        neurons = check_localization(report, name, model, adapter, tokenizer, layer, sizes, device)
        check_solve_and_edit(report, name, model, adapter, tokenizer, layer, neurons, sizes, device)

    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (cuda max_memory_allocated)"
    else:
        peak = f"{host_memory.peak_bytes / 2**30:.2f} GiB (process RSS peak, {host_memory.method})"
    report.timings.append([name, "peak memory", "-", "-", "-", peak])
    report.timings.append([name, "all steps of this model (1 run)", f"{time.perf_counter() - started:.4g}", "-", "-", ""])
    del model, adapter
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                        help="dtype of the model weights")
    parser.add_argument("--shrink", action="store_true", help="4-layer models at about 1/16 of the widths")
    parser.add_argument("--models", default=",".join(MODEL_SPECS), help="comma-separated subset of " + ", ".join(MODEL_SPECS))
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 3)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)
    logging.basicConfig(level=logging.WARNING)

    names = [item.strip() for item in args.models.split(",") if item.strip()]
    unknown = [item for item in names if item not in MODEL_SPECS]
    if unknown or not names:
        raise SystemExit(f"error: unknown model {unknown or names}; choose from {', '.join(MODEL_SPECS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: CUDA is not available; pass --device cpu --shrink to run on the CPU")
    args.dtype_name = args.dtype
    args.dtype = getattr(torch, args.dtype)
    sizes = SHRUNK_WORKLOAD if args.shrink else FULL_SIZES
    if args.repeats is not None:
        sizes = Sizes(**{**sizes.__dict__, "repeats": args.repeats})

    print(machine_summary())
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    print(f"models: {', '.join(names)}{' (shrunk)' if args.shrink else ''}, weights {args.dtype_name}, sizes {sizes}\n")

    started = time.perf_counter()
    report = Report()
    for name in names:
        run_model(name, args, sizes, report)

    print("Checks:\n")
    print(markdown_table(["model", "check", "result", "target", "status"], report.checks))
    print(f"\nTimings (median of {sizes.repeats} repeats unless marked '1 run'):\n")
    print(markdown_table(["model", "measurement", "median s", "tokens/s", "TFLOP/s", "notes"], report.timings))
    print(
        "\nTFLOP/s uses F = 2 N + 4 L h d_head T per token over the layers run (benchmarks/ceilings.py), "
        "counting padded tokens; tokens/s counts real tokens."
    )
    print(f"Total time: {time.perf_counter() - started:.1f} s. Failed checks: {report.failures} of {len(report.checks)}.")
    overheads = ", ".join(f"{name} {value:+.1%}" for name, value in report.overheads.items())
    print(f"\nkey ratio: capture overhead vs plain forward to the same layer: {overheads} (target <= 5%)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
