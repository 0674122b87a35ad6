"""Benchmark the main job, ``swe_toolkit.pipeline.run``, stage by stage.

Each repeat runs the whole job into a temporary folder. The table gives, per stage, the median of
the wall-clock seconds that the job itself records in ``report["timings"]`` and the largest peak RSS
increase seen during that stage. "outside stages" is the wall time of ``run`` that no stage covers
(saving the edit, plots and report files).

Usage::

    python benchmarks/end_to_end.py            # the job's defaults: 1.5B model, all languages and splits
    python benchmarks/end_to_end.py --quick    # 0.5B model, en and th, 2 test and 4 fit prompts per set

Per-stage memory is measured by resetting the kernel's peak RSS (VmHWM, through
/proc/self/clear_refs) when a stage starts and reading it when the stage ends. The benchmark does
this by replacing ``pipeline.Timings`` with a subclass for the duration of the run.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_common import PeakRss, add_threads_option, apply_threads_option, machine_summary, markdown_table, track_peak_rss
from swe_toolkit import pipeline
from swe_toolkit.pipeline import RunConfig, parse_languages

QUICK_SETTINGS = {
    "model": "qwen2.5-coder-0.5b-instruct",
    "languages": "en,th",
    "num_test": 2,
    "num_fit": 4,
    "num_general": 4,
    "neurons": 256,
    "rank": 16,
    "max_new_tokens": 8,
}

# Peak RSS per stage of the run in progress, filled by _MemoryTimings.
_stage_peaks: dict[str, list[PeakRss]] = {}


class _MemoryTimings(pipeline.Timings):
    """pipeline.Timings that also records the peak RSS of every stage."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        with track_peak_rss() as peak, super().stage(name):
            yield
        _stage_peaks.setdefault(name, []).append(peak)


@contextmanager
def _tracked_stages() -> Iterator[None]:
    original = pipeline.Timings
    pipeline.Timings = _MemoryTimings
    try:
        yield
    finally:
        pipeline.Timings = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = RunConfig()
    parser.add_argument("--quick", action="store_true", help="small run: " + ", ".join(f"{k}={v}" for k, v in QUICK_SETTINGS.items()))
    parser.add_argument("--model", default=None, help=f"offline model name, local folder or Hub id (default {defaults.model})")
    parser.add_argument("--languages", default=None, help="comma-separated language codes including en (default: all)")
    parser.add_argument("--num-test", type=int, default=None, help="cap on test prompts per set (default: whole split)")
    parser.add_argument("--num-fit", type=int, default=None, help="cap on fit prompts per set (default: whole split)")
    parser.add_argument("--num-general", type=int, default=None, help=f"general texts per language (default {defaults.num_general})")
    parser.add_argument("--neurons", type=int, default=None, help=f"safety neurons per edited layer (default {defaults.neurons})")
    parser.add_argument("--rank", type=int, default=None, help=f"rank bound of the edit (default {defaults.rank})")
    parser.add_argument("--max-new-tokens", type=int, default=None, help=f"tokens per reply (default {defaults.max_new_tokens})")
    parser.add_argument("--judge", default=None, help=f"refusal judge (default {defaults.judge})")
    parser.add_argument("--repeats", type=int, default=3, help="whole runs; the table reports medians")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads_option(args)
    logging.basicConfig(level=logging.WARNING)

    settings = dict(QUICK_SETTINGS) if args.quick else {}
    for key in ("model", "languages", "num_test", "num_fit", "num_general", "neurons", "rank", "max_new_tokens", "judge"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if "languages" in settings:
        settings["languages"] = parse_languages(settings["languages"])

    stage_seconds: dict[str, list[float]] = {}
    wall: list[float] = []
    _stage_peaks.clear()
    with tempfile.TemporaryDirectory(prefix="swe_toolkit_bench_") as folder, _tracked_stages():
        for repeat in range(args.repeats):
            config = RunConfig(**settings, out=Path(folder) / f"run{repeat}", progress=False)
            started = time.perf_counter()
            report = pipeline.run(config)
            wall.append(time.perf_counter() - started)
            for name, seconds in report["timings"].items():
                stage_seconds.setdefault(name, []).append(seconds)
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    rows = []
    for name, samples in stage_seconds.items():
        if name == "total":
            continue
        peaks = _stage_peaks.get(name, [])
        memory = f"{max(peak.increase_bytes for peak in peaks) / 2**30:.2f}" if peaks else "-"
        rows.append([name, f"{statistics.median(samples):.4g}", f"{min(samples):.3g}-{max(samples):.3g}", memory])
    outside = [w - t for w, t in zip(wall, stage_seconds["total"], strict=True)]
    rows.append(["outside stages", f"{statistics.median(outside):.4g}", f"{min(outside):.3g}-{max(outside):.3g}", "-"])
    rows.append(["total (wall time of run)", f"{statistics.median(wall):.4g}", f"{min(wall):.3g}-{max(wall):.3g}", "-"])

    reported_settings = {key: value for key, value in config.as_dict().items() if key in settings or key in ("model", "side", "judge")}
    print(machine_summary())
    print(f"settings: {reported_settings}; data sizes {report['data']}; median of {args.repeats} runs\n")
    print(markdown_table(["stage", "median s", "range s", "peak RSS increase GiB"], rows))
    print(f"\nProcess peak RSS over all runs: {process_peak:.2f} GiB (ru_maxrss).")
    slowest = max((row for row in rows[:-2]), key=lambda row: float(row[1]))
    share = float(slowest[1]) / statistics.median(wall)
    print(f"\nkey ratio: slowest stage {slowest[0]} takes {share:.0%} of the run's wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
