"""Smoke tests of the benchmark scripts: they run at small sizes and print their key lines.

The scripts run as subprocesses with one torch thread, because on a loaded machine OpenMP threads
that wait for a busy core can make small operations 100x slower. Timings are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

# A small Qwen2 shape for the FLOP formula, written as a local model folder's config.json.
SMALL_QWEN2 = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}


def run_script(name: str, *arguments: str, timeout: float = 180.0) -> str:
    """Run ``benchmarks/<name>`` with one thread, assert exit status 0 and return its stdout."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *arguments, "--threads", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, f"{name} exited with {completed.returncode}\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    return completed.stdout


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_ceilings_quick_prints_table(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMALL_QWEN2), encoding="utf-8")
    output = run_script("ceilings.py", "--quick", "--model", str(tmp_path))
    assert "| float32 matmul |" in output
    assert "| memory bandwidth, copy |" in output
    assert "F = 2 N + 4 L h d_head T + 2 d V" in output
    assert last_line(output).startswith("key ratio: machine balance")


def test_solve_quick_prints_speedup() -> None:
    output = run_script("solve.py", "--quick")
    assert "| closed form (solve_edit) |" in output
    assert "| iterative (lbfgs, float64) |" in output
    assert "Fitted exponent of time against d" in output
    assert last_line(output).startswith("key ratio: closed-form speedup over lbfgs")


def test_gpu_check_shrunk_on_cpu_passes() -> None:
    output = run_script("gpu_check.py", "--shrink", "--device", "cpu")
    assert "Failed checks: 0 of 20." in output
    for check in ("revert restores every weight bit", "solve delta, cpu float64 vs CPU float64",
                  "capture mlp_input of layer 2 vs CPU float32 recomputation"):
        assert check in output
    assert "| llama-3-8b | peak memory |" in output
    assert "| qwen2.5-7b | peak memory |" in output
    assert last_line(output).startswith("key ratio: capture overhead vs plain forward to the same layer")


def test_flop_formula_counts_model_weights() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from ceilings import ModelShape
    finally:
        sys.path.remove(str(BENCHMARKS))
    config = AutoConfig.for_model(**SMALL_QWEN2)
    model = AutoModelForCausalLM.from_config(config)
    matmul_weights = sum(
        module.weight.numel() for module in model.model.layers.modules() if isinstance(module, torch.nn.Linear)
    )

    shape = ModelShape.from_config("small", config)

    assert shape.non_embedding_parameters() == matmul_weights
    # One token that attends to itself only, with logits: 2 N + 4 L h d_head + 2 d V.
    expected = 2 * matmul_weights + 4 * 3 * 4 * 16 + 2 * 64 * 1000
    assert shape.forward_flops_per_token(1.0) == pytest.approx(expected)
