"""Timing, memory and table helpers shared by the benchmark scripts in this folder.

Every timed number in these benchmarks is the median of several repeats. Functions compared in one
table run interleaved (A, B, C, then B, C, A, ...), so a change in machine load during the run
affects all of them alike.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = [
    "PeakRss",
    "add_threads_option",
    "apply_threads_option",
    "Timing",
    "interleaved_timings",
    "log_log_slope",
    "machine_summary",
    "markdown_table",
    "synchronize",
    "time_repeats",
    "track_peak_rss",
]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the repeats of one measurement."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median over the repeats, in seconds."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> str:
        """Range of the repeats as ``min-max`` seconds, for tables."""
        return f"{min(self.samples):.3g}-{max(self.samples):.3g}"


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads``, the number of CPU threads torch uses."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's default, one per core). On a machine that other "
        "jobs keep busy, pass 1: OpenMP threads that wait for a busy core can slow small operations "
        "by 100x or more",
    )


def apply_threads_option(args: argparse.Namespace) -> None:
    """Set torch's CPU thread count from ``--threads`` when it was given."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work on ``device``, so that a timer stops after it ends."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(
    function: Callable[[], object],
    repeats: int,
    *,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> Timing:
    """Run ``function`` ``warmup`` times untimed, then time ``repeats`` calls."""
    return interleaved_timings({"only": function}, repeats, warmup=warmup, device=device)["only"]


def interleaved_timings(
    functions: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time each function ``repeats`` times, rotating the order of the functions every round.

    Each function first runs ``warmup`` times untimed. The device is synchronized before the
    timer starts and before it stops.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    synchronize(device)

    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            functions[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a Markdown table; floats are written with 4 significant digits."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_summary() -> str:
    """Describe the CPU, torch threads and load average, to print above a table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, load average {load} (1, 5, 15 min)"
    )


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x), the exponent p of y ~ x^p."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need at least 2 paired points, got {len(xs)} x and {len(ys)} y values")
    log_x = [math.log(x) for x in xs]
    log_y = [math.log(y) for y in ys]
    mean_x = statistics.fmean(log_x)
    mean_y = statistics.fmean(log_y)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(log_x, log_y))
    denominator = sum((x - mean_x) ** 2 for x in log_x)
    return numerator / denominator


def _status_kib(field: str) -> int | None:
    """Read a ``kB`` field such as ``VmHWM`` from /proc/self/status, or None where it is missing."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@dataclass
class PeakRss:
    """Peak resident memory of a block, filled in when the block exits.

    ``method`` names how it was measured: ``"VmHWM"`` (the kernel's peak RSS, reset at the start of
    the block through /proc/self/clear_refs) or ``"ru_maxrss"`` (the process-wide peak since start,
    used where the reset is not possible, so it can include earlier work).
    """

    start_bytes: int = 0
    peak_bytes: int = 0
    method: str = ""

    @property
    def increase_bytes(self) -> int:
        """Peak RSS during the block minus the RSS at its start."""
        return max(0, self.peak_bytes - self.start_bytes)


@contextmanager
def track_peak_rss() -> Iterator[PeakRss]:
    """Measure the peak RSS of the process during the block.

    NOTE: RSS counts pages, not allocations. The allocator may reuse memory that earlier work freed
    without raising RSS, so the increase can understate what the block allocated.
    """
    result = PeakRss()
    resettable = _reset_peak_rss()
    current = _status_kib("VmRSS")
    result.start_bytes = 1024 * (current or 0)
    try:
        yield result
    finally:
        peak = _status_kib("VmHWM") if resettable else None
        if peak is not None:
            result.peak_bytes = 1024 * peak
            result.method = "VmHWM"
        else:
            # Linux reports ru_maxrss in KiB.
            result.peak_bytes = 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result.method = "ru_maxrss"
