"""Benchmark the closed-form edit solver against an iterative solver, and its scaling.

Part 1 times :func:`swe_toolkit.solver.solve_edit` and an iterative solver on the same random
problem. The iterative solver minimizes the same objective

    f(D) = ||D X - R||_F^2 + alpha tr(D K_g D^T) + lam ||D||_F^2,   D = A B,  A (k, r), B (r, d)

in float64 with torch.optim.LBFGS (strong Wolfe line search) or Adam. It gets the cheapest form of
the objective: C = X X^T + alpha K_g + lam I and P = R X^T are formed once (inside its timer), and
then f = sum((A^T A) * (B C B^T)) - 2 sum((A^T P) * B) + ||R||^2 costs O(r d^2 + k r d) per
evaluation. It stops when its objective is within ``--gap`` (relative) of the closed form's value,
or at ``--time-cap`` seconds, and the gap it reached is reported.

Part 2 times the closed-form solve as the hidden size d, the number of fit columns n and the rank
r change. It reports the share of the Cholesky factorization and of the SVD, both timed separately
on the same matrices, the peak memory and the fitted exponent of time against d.

Usage::

    python benchmarks/solve.py            # d = 1536 vs L-BFGS; sweeps up to d = 8192 (minutes)
    python benchmarks/solve.py --quick    # small sizes, seconds

Random data: X (d, n) has Gaussian entries with row scales spread log-uniformly over ``--spread``,
as hidden states are anisotropic. R = T X + 0.1 E with T of rank 2 r, so that the rank bound is
active. K_g = X_g X_g^T from 2 d general columns with the same row scales.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from bench_common import (
    add_threads_option,
    apply_threads_option,
    interleaved_timings,
    log_log_slope,
    machine_summary,
    markdown_table,
    synchronize,
    time_repeats,
    track_peak_rss,
)
from swe_toolkit.solver import edit_objective, solve_edit

ALPHA = 1.0
LAM_RELATIVE = 1e-2


@dataclass(frozen=True)
class Problem:
    """Random edit problem in float64: inputs X, target R and general second moment K_g."""

    X: Tensor
    R: Tensor
    K: Tensor
    rank: int

    @property
    def sizes(self) -> str:
        """Sizes as ``d=…, k=…, n=…, r=…`` for tables."""
        return f"d={self.X.shape[0]}, k={self.R.shape[0]}, n={self.X.shape[1]}, r={self.rank}"


def make_problem(d: int, k: int, n: int, rank: int, *, spread: float, seed: int, device: torch.device) -> Problem:
    """Build a random problem on ``device`` (see the module docstring for the distribution)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0.0, -math.log10(spread), d, dtype=torch.float64)
    X = scales[:, None] * torch.randn(d, n, generator=generator, dtype=torch.float64)
    general = scales[:, None] * torch.randn(d, 2 * d, generator=generator, dtype=torch.float64)
    inner = min(2 * rank, k, d)
    T = torch.randn(k, inner, generator=generator, dtype=torch.float64) @ torch.randn(
        inner, d, generator=generator, dtype=torch.float64
    ) / math.sqrt(d)
    R = T @ X + 0.1 * torch.randn(k, n, generator=generator, dtype=torch.float64)
    return Problem(X=X.to(device), R=R.to(device), K=(general @ general.T).to(device), rank=rank)


def closed_form(problem: Problem):
    """Run the library's solver with the benchmark's penalty and ridge settings."""
    return solve_edit(
        problem.X, problem.R, K_g=problem.K, alpha=ALPHA, lam_relative=LAM_RELATIVE, rank=problem.rank
    )


@dataclass(frozen=True)
class IterativeResult:
    """Outcome of one iterative run."""

    seconds: float
    gap: float
    evaluations: int
    converged: bool
    delta: Tensor


def iterative_solve(
    problem: Problem,
    lam: float,
    optimum: float,
    *,
    method: str,
    gap: float,
    time_cap: float,
    seed: int,
) -> IterativeResult:
    """Minimize f(A B) from a small random start until the relative gap to ``optimum`` is below ``gap``."""
    device = problem.X.device
    synchronize(device)
    start = time.perf_counter()
    X, R, K = problem.X, problem.R, problem.K
    d, k = X.shape[0], R.shape[0]
    system = X @ X.T + ALPHA * K + lam * torch.eye(d, dtype=torch.float64, device=device)
    cross = R @ X.T
    constant = torch.sum(R * R)

    generator = torch.Generator().manual_seed(seed)
    # Start small: the objective is flat near A B = 0, and a large start overshoots.
    left = (1e-3 * torch.randn(k, problem.rank, generator=generator, dtype=torch.float64)).to(device)
    right = (1e-3 * torch.randn(problem.rank, d, generator=generator, dtype=torch.float64)).to(device)
    left.requires_grad_(True)
    right.requires_grad_(True)

    def objective() -> Tensor:
        projected = right @ system @ right.T
        quadratic = torch.sum((left.T @ left) * projected)
        linear = torch.sum((left.T @ cross) * right)
        return quadratic - 2.0 * linear + constant

    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    if method == "lbfgs":
        optimizer = torch.optim.LBFGS(
            [left, right],
            lr=1.0,
            max_iter=25,
            history_size=20,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )
    elif method == "adam":
        optimizer = torch.optim.Adam([left, right], lr=1e-2)
    else:
        raise ValueError(f"unknown iterative method {method!r}; use 'lbfgs' or 'adam'")

    reached = math.inf
    converged = False
    while True:
        # One L-BFGS step runs up to max_iter iterations; Adam steps are checked in groups of 25.
        for _ in range(1 if method == "lbfgs" else 25):
            optimizer.step(closure)
        with torch.no_grad():
            reached = (float(objective()) - optimum) / abs(optimum)
        if reached <= gap:
            converged = True
            break
        if time.perf_counter() - start > time_cap or not math.isfinite(reached):
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    delta = (left @ right).detach()
    return IterativeResult(seconds=seconds, gap=reached, evaluations=evaluations, converged=converged, delta=delta)


def compare_iterative(args: argparse.Namespace, device: torch.device) -> tuple[str, float, bool]:
    """Part 1: return the table, the speedup ratio and whether every iterative run converged."""
    d, k, n, r = args.compare
    problem = make_problem(d, k, n, r, spread=args.spread, seed=0, device=device)
    solution = closed_form(problem)
    optimum = solution.objective

    closed_samples = list(time_repeats(lambda: closed_form(problem), args.repeats, device=device).samples)
    runs: list[IterativeResult] = []
    # Alternate closed-form and iterative runs, so both see the same machine load.
    for repeat in range(args.iterative_repeats):
        runs.append(
            iterative_solve(
                problem, solution.lam, optimum,
                method=args.iterative, gap=args.gap, time_cap=args.time_cap, seed=repeat,
            )
        )
        closed_samples.extend(time_repeats(lambda: closed_form(problem), 1, warmup=0, device=device).samples)
    closed_median = statistics.median(closed_samples)
    iterative_median = statistics.median(run.seconds for run in runs)
    final_gaps = [
        (edit_objective(run.delta, problem.X, problem.R, K_g=problem.K, alpha=ALPHA, lam=solution.lam) - optimum)
        / abs(optimum)
        for run in runs
    ]
    all_converged = all(run.converged for run in runs)
    speedup = iterative_median / closed_median

    rows = [
        ["closed form (solve_edit)", f"{closed_median:.4g}", len(closed_samples), "0 (reference)", "-"],
        [
            f"iterative ({args.iterative}, float64)",
            f"{iterative_median:.4g}",
            len(runs),
            ", ".join(f"{value:.2e}" for value in final_gaps),
            ", ".join(str(run.evaluations) for run in runs),
        ],
    ]
    table = "\n".join(
        [
            f"Part 1: closed form vs iterative on one problem ({problem.sizes}, alpha={ALPHA}, "
            f"lam_relative={LAM_RELATIVE}, spread={args.spread:g}), stop at relative gap {args.gap:g} "
            f"or {args.time_cap:g} s.",
            "",
            markdown_table(
                ["solver", "median s", "runs", "relative gap reached", "objective evaluations"],
                rows,
            ),
            "",
            f"Iterative runs that reached the gap: {sum(run.converged for run in runs)} of {len(runs)}."
            + ("" if all_converged else " The speedup below is then a lower bound."),
        ]
    )
    return table, speedup, all_converged


def _stage_timings(problem: Problem, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of the Cholesky factorization and of the SVD that solve_edit runs."""
    X, R, K = problem.X, problem.R, problem.K
    gram = X @ X.T + ALPHA * K
    lam = LAM_RELATIVE * float(torch.trace(gram)) / gram.shape[0]
    system = gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=device)
    factor = torch.linalg.cholesky(system)
    whitened = torch.linalg.solve_triangular(factor, X @ R.T, upper=False).T
    timings = interleaved_timings(
        {
            "cholesky": lambda: torch.linalg.cholesky_ex(system),
            "svd": lambda: torch.linalg.svd(whitened, full_matrices=False),
        },
        repeats,
        device=device,
    )
    return timings["cholesky"].median, timings["svd"].median


def _analytic_bytes(d: int, k: int, n: int, r: int) -> int:
    """Estimate float64 bytes of the solve's main intermediates alive together, inputs excluded.

    Counted: the Gram matrix, the system matrix and its Cholesky factor (3 d^2), the cross term
    X R^T and M (2 k d), the SVD factors (m (k + d) with m = min(k, d)), for the objective the
    dense D, D K_g (2 k d) and D X (k n), and the factors left and right (r (k + d)).
    """
    m = min(k, d)
    return 8 * (3 * d * d + 4 * k * d + m * (k + d) + k * n + r * (k + d))


def _peak_memory(problem: Problem, device: torch.device) -> tuple[float, str]:
    """Return the peak memory increase of one solve in MiB, and how it was measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        closed_form(problem)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda max_memory_allocated"
    with track_peak_rss() as peak:
        closed_form(problem)
    return peak.increase_bytes / 2**20, f"RSS peak ({peak.method})"


def scaling_rows(
    configs: list[tuple[int, int, int, int]], args: argparse.Namespace, device: torch.device
) -> tuple[list[list[object]], list[float], list[float]]:
    """Part 2: one table row per (d, k, n, r); also return the solve and Cholesky medians."""
    rows: list[list[object]] = []
    solve_seconds: list[float] = []
    cholesky_seconds: list[float] = []
    for d, k, n, r in configs:
        problem = make_problem(d, k, n, r, spread=args.spread, seed=1, device=device)
        solve = time_repeats(lambda: closed_form(problem), args.repeats, device=device)
        cholesky, svd = _stage_timings(problem, args.repeats, device)
        memory, method = _peak_memory(problem, device)
        rows.append(
            [
                d, k, n, r,
                f"{solve.median:.4g}",
                solve.spread,
                f"{cholesky / solve.median:.0%}",
                f"{svd / solve.median:.0%}",
                f"{memory:.1f}",
                f"{_analytic_bytes(d, k, n, r) / 2**20:.1f}",
            ]
        )
        solve_seconds.append(solve.median)
        cholesky_seconds.append(cholesky)
        del problem
    return rows, solve_seconds, cholesky_seconds


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test (seconds)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compare", type=_sizes, default=(1536, 2048, 2048, 64),
                        help="d,k,n,r of the closed-form vs iterative problem")
    parser.add_argument("--hidden", type=_sizes, default=(1536, 4096, 8192), help="hidden sizes d of the d sweep")
    parser.add_argument("--columns", type=_sizes, default=(512, 2048, 8192), help="fit columns n of the n sweep")
    parser.add_argument("--ranks", type=_sizes, default=(16, 64, 256), help="ranks r of the rank sweep")
    parser.add_argument("--base", type=_sizes, default=(1536, 2048, 2048, 64),
                        help="d,k,n,r held fixed while one of them is swept")
    parser.add_argument("--iterative", choices=("lbfgs", "adam"), default="lbfgs", help="iterative solver")
    parser.add_argument("--gap", type=float, default=1e-6, help="relative objective gap that stops the iterative solver")
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds after which an iterative run stops")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per closed-form measurement")
    parser.add_argument("--iterative-repeats", type=int, default=3, help="iterative runs (different random starts)")
    parser.add_argument("--spread", type=float, default=10.0, help="ratio of the largest to the smallest row scale of X")
    parser.add_argument("--skip-compare", action="store_true", help="run only the scaling sweeps")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)
    if args.quick:
        args.compare = (128, 128, 256, 8)
        args.hidden = (128, 256, 512)
        args.columns = (128, 512, 2048)
        args.ranks = (4, 16, 64)
        args.base = (128, 128, 256, 16)
        args.time_cap = min(args.time_cap, 20.0)
    device = torch.device(args.device)

    print(machine_summary())
    print()
    speedup = None
    converged = True
    if not args.skip_compare:
        table, speedup, converged = compare_iterative(args, device)
        print(table)
        print()

    d0, k0, n0, r0 = args.base
    sweeps = [
        ("hidden size d", [(d, k0, n0, r0) for d in args.hidden]),
        ("fit columns n", [(d0, k0, n, r0) for n in args.columns]),
        ("rank r", [(d0, k0, n0, r) for r in args.ranks]),
    ]
    headers = ["d", "k", "n", "r", "median s", "range s", "Cholesky share", "SVD share",
               "peak memory increase MiB", "analytic estimate MiB"]
    exponent = cholesky_exponent = None
    for title, configs in sweeps:
        rows, solve_seconds, cholesky_seconds = scaling_rows(configs, args, device)
        print(f"Part 2: solve_edit as {title} grows (median of {args.repeats} repeats):\n")
        print(markdown_table(headers, rows))
        print()
        if title.startswith("hidden"):
            sizes = [config[0] for config in configs]
            exponent = log_log_slope(sizes, solve_seconds)
            cholesky_exponent = log_log_slope(sizes, cholesky_seconds)
    memory_note = (
        "cuda max_memory_allocated minus the memory allocated before the solve"
        if device.type == "cuda"
        else "peak RSS during one solve minus RSS at its start (VmHWM reset through /proc/self/clear_refs); "
        "it can understate allocations that reuse freed pages"
    )
    print(f"Peak memory: {memory_note}. The analytic estimate counts the main float64 intermediates.")
    print(
        f"Fitted exponent of time against d: solve {exponent:.2f}, Cholesky alone {cholesky_exponent:.2f}. "
        "With k and n fixed, the O(d^2 (n + k)) Gram and triangular-solve terms pull the solve's "
        "exponent below 3 until d^3 dominates."
    )
    if speedup is not None:
        bound = "" if converged else " (lower bound: an iterative run hit the time cap)"
        print(f"\nkey ratio: closed-form speedup over {args.iterative} {speedup:.1f}x{bound} (target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
