"""Measure this machine's float32 and bfloat16 matmul rates and memory bandwidth, and a model's FLOPs per token.

The other benchmarks divide their achieved rates by these ceilings. Usage::

    python benchmarks/ceilings.py                # 4096^2 matmuls, 512 MiB copies
    python benchmarks/ceilings.py --quick        # small sizes, a few seconds

Forward FLOPs per token of a decoder-only transformer, counting a multiply-add as 2 FLOPs:

    F(T) = 2 * N + 4 * L * h * d_head * T + 2 * d * V

N is the number of non-embedding matmul weights,
N = L * (d * d_head * (2 h + 2 h_kv) + 3 * d * d_ff) for gated-MLP models (Qwen2, Llama).
The second term is attention: Q K^T and the weighted sum of V, each 2 * h * d_head * T for a token
that attends to T keys. A whole causal sequence of n tokens averages T = (n + 1) / 2. The last term
is the output logits, absent from a forward pass stopped before the LM head. Biases and norms are
left out (below 0.1% of the FLOPs).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench_common import add_threads_option, apply_threads_option, machine_summary, markdown_table, time_repeats

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a gated-MLP decoder that the FLOP formula needs."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, name: str, config: Any) -> ModelShape:
        """Read the sizes from a transformers config object or a config.json dict."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        hidden = int(get("hidden_size"))
        heads = int(get("num_attention_heads"))
        head_dim = get("head_dim") or hidden // heads
        return cls(
            name=name,
            hidden=hidden,
            intermediate=int(get("intermediate_size")),
            layers=int(get("num_hidden_layers")),
            heads=heads,
            kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            vocab=int(get("vocab_size")),
        )

    def layer_parameters(self) -> int:
        """Matmul weights of one decoder layer: attention projections and the gated MLP."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate

    def non_embedding_parameters(self, num_layers: int | None = None) -> int:
        """Matmul weights of the first ``num_layers`` layers (all layers by default)."""
        layers = self.layers if num_layers is None else num_layers
        return layers * self.layer_parameters()

    def forward_flops_per_token(
        self, attended: float, *, num_layers: int | None = None, include_logits: bool = True
    ) -> float:
        """Compute the FLOPs of one token's forward pass through ``num_layers`` layers.

        The formula is in the module docstring. ``attended`` is the number of keys the token attends
        to. Pass (n + 1) / 2 for the mean over a causal sequence of n tokens.
        """
        layers = self.layers if num_layers is None else num_layers
        flops = 2.0 * self.non_embedding_parameters(layers)
        flops += 4.0 * layers * self.heads * self.head_dim * attended
        if include_logits:
            flops += 2.0 * self.hidden * self.vocab
        return flops


def load_model_shape(model: str) -> ModelShape:
    """Read the shape of an offline model (it must be cached) or a local model folder.

    Only config.json is read, so no weights are loaded.
    """
    from swe_toolkit.models.offline import OFFLINE_MODELS, is_offline_model_cached, offline_model_dir

    if model in OFFLINE_MODELS:
        if not is_offline_model_cached(model):
            raise SystemExit(
                f"error: offline model {model!r} is not prepared yet; run `swe-toolkit prepare {model}` "
                "or pass --model with a local model folder"
            )
        folder = offline_model_dir(model)
    else:
        folder = Path(model).expanduser()
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"error: {config_path} not found; pass an offline model name or a local model folder")
    return ModelShape.from_config(model, json.loads(config_path.read_text(encoding="utf-8")))


def ceilings(
    *,
    matmul_size: int = 4096,
    copy_mib: int = 512,
    repeats: int = 5,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Measure the float32 and bfloat16 matmul rates and the memory bandwidth of ``device``.

    Returns a dict with ``matmul_gflops`` (float32, 2 n^3 FLOPs per n x n matmul),
    ``bf16_matmul_gflops`` (the same in bfloat16), ``copy_gbs`` (bytes read
    plus bytes written by ``Tensor.copy_``), ``sum_gbs`` (bytes read by ``Tensor.sum``) and the
    sizes used. Each rate comes from the median time of ``repeats`` runs after one warm-up.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(matmul_size, matmul_size, generator=generator).to(device)
    right = torch.randn(matmul_size, matmul_size, generator=generator).to(device)
    product = torch.empty_like(left)
    matmul = time_repeats(lambda: torch.matmul(left, right, out=product), repeats, device=device)
    left, right = left.to(torch.bfloat16), right.to(torch.bfloat16)
    product = torch.empty_like(left)
    bf16_matmul = time_repeats(lambda: torch.matmul(left, right, out=product), repeats, device=device)
    del left, right, product

    elements = copy_mib * 2**20 // 4
    source = torch.ones(elements, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    copy = time_repeats(lambda: target.copy_(source), repeats, device=device)
    total = time_repeats(lambda: source.sum(), repeats, device=device)
    del source, target

    copy_bytes = elements * 4
    return {
        "matmul_gflops": 2.0 * matmul_size**3 / matmul.median / 1e9,
        "bf16_matmul_gflops": 2.0 * matmul_size**3 / bf16_matmul.median / 1e9,
        "copy_gbs": 2.0 * copy_bytes / copy.median / 1e9,
        "sum_gbs": copy_bytes / total.median / 1e9,
        "matmul_size": float(matmul_size),
        "copy_bytes": float(copy_bytes),
        "repeats": float(repeats),
    }


def quick_ceilings(device: torch.device | str = "cpu") -> dict[str, float]:
    """Return :func:`ceilings` at the small sizes of ``--quick``, for other benchmarks' quick runs."""
    return ceilings(matmul_size=1024, copy_mib=64, repeats=5, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (1024^2 matmul, 64 MiB copy)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="side n of the square matmul")
    parser.add_argument("--copy-mib", type=int, default=512, help="size of the copied and summed tensor, in MiB")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median reported)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="offline model name or local folder for the FLOP count")
    parser.add_argument(
        "--context", type=int, nargs="+", default=[128, 512, 2048], help="sequence lengths n for the FLOP table"
    )
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)

    if args.quick:
        measured = quick_ceilings()
    else:
        measured = ceilings(matmul_size=args.matmul_size, copy_mib=args.copy_mib, repeats=args.repeats)
    shape = load_model_shape(args.model)

    print(machine_summary())
    print()
    print(
        markdown_table(
            ["ceiling", "value", "how measured"],
            [
                [
                    "float32 matmul",
                    f"{measured['matmul_gflops']:.1f} GFLOP/s",
                    f"torch.matmul of two {int(measured['matmul_size'])}^2 matrices, 2 n^3 FLOPs",
                ],
                [
                    "bfloat16 matmul",
                    f"{measured['bf16_matmul_gflops']:.1f} GFLOP/s",
                    "the same matrices in bfloat16 (AMX or AVX512-BF16 where the CPU has them)",
                ],
                [
                    "memory bandwidth, copy",
                    f"{measured['copy_gbs']:.1f} GB/s",
                    f"Tensor.copy_ of {measured['copy_bytes'] / 2**20:.0f} MiB, read + write bytes",
                ],
                [
                    "memory bandwidth, sum",
                    f"{measured['sum_gbs']:.1f} GB/s",
                    f"Tensor.sum of {measured['copy_bytes'] / 2**20:.0f} MiB, read bytes",
                ],
            ],
        )
    )
    print(f"\nMedian of {int(measured['repeats'])} repeats after one warm-up.\n")

    weight_bytes = 4 * shape.non_embedding_parameters() + 4 * shape.hidden * shape.vocab
    rows = []
    for length in args.context:
        attended = (length + 1) / 2
        flops = shape.forward_flops_per_token(attended)
        rows.append(
            [
                length,
                f"{flops / 1e9:.3f}",
                f"{2 * shape.non_embedding_parameters() / flops:.1%}",
                f"{measured['matmul_gflops'] * 1e9 / flops:.0f}",
            ]
        )
    print(
        f"Forward FLOPs per token of {shape.name}: L={shape.layers}, d={shape.hidden}, d_ff={shape.intermediate}, "
        f"h={shape.heads}, h_kv={shape.kv_heads}, d_head={shape.head_dim}, V={shape.vocab}, "
        f"N={shape.non_embedding_parameters() / 1e9:.3f}e9 non-embedding weights."
    )
    print("F = 2 N + 4 L h d_head T + 2 d V, with T = (n + 1) / 2 keys on average over a causal sequence of n tokens.\n")
    print(
        markdown_table(
            ["context n", "GFLOP per token", "share of 2N", "tokens/s at matmul ceiling"],
            rows,
        )
    )
    decode_rate = measured["sum_gbs"] * 1e9 / weight_bytes
    print(
        f"\nDecoding one sequence reads every float32 weight once per token ({weight_bytes / 2**30:.2f} GiB with the "
        f"LM head), so the bandwidth bound is {decode_rate:.1f} tokens/s."
    )
    balance = measured["matmul_gflops"] / measured["sum_gbs"]
    print(f"\nkey ratio: machine balance {balance:.1f} FLOP per byte (matmul GFLOP/s over sum GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
