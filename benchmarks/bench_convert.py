"""Benchmark the corpus step at the official size of English MultiNERD.

Generates a synthetic set in the hub's schema (tokens, ner_tags, lang; JSON lines) with the
official English split sizes (262,560 / 32,820 / 32,908 sentences), random words, the
official test entity counts (so the official-count check passes) and a like mix in train and
dev, plus non-English rows that must be filtered out. Then times `fetch` (local source) and
`convert` (both schemes), each in its own process, and prints wall time and peak memory.

    python -m benchmarks.bench_convert --repeats 2
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from .common import LOGS, child_failed, make_synthetic


def timed(cmd, log: Path) -> tuple:
    """Wall seconds and peak resident MiB of `cmd`; its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        child_failed(cmd, log)
    return wall, usage.ru_maxrss / 1024  # MiB (Linux reports KiB)


def main(
    repeats: int = typer.Option(2, help="Runs of each step; the median is printed"),
    scale: float = typer.Option(1.0, help="Fraction of the official size (1.0 = full)"),
    workdir: Path = typer.Option(None, help="Keep the data here (default: a temp dir)"),
    logs: Path = typer.Option(LOGS, help="where each step's output goes"),
):
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        source, assets, corpus = root / "synthetic", root / "assets", root / "corpus"
        make_synthetic(source, scale=scale)
        env_py = sys.executable
        steps = {
            "fetch (local JSONL, English filter)": [
                env_py,
                "-m",
                "scripts.fetch",
                "multinerd",
                str(assets),
                "--source",
                str(source),
            ],
            "convert (3 splits x 2 schemes)": [
                env_py,
                "-m",
                "scripts.convert",
                "multinerd",
                str(assets),
                str(corpus),
            ],
        }
        results = {name: [] for name in steps}
        for _ in range(repeats):
            for name, cmd in steps.items():
                results[name].append(timed(cmd, logs / f"bench-convert-{name.split()[0]}.log"))
        stats = json.loads((corpus / "en_multinerd_a" / "stats.json").read_text())["splits"]
        sizes = ", ".join(f"{s} {v['sentences']:,}" for s, v in stats.items())
        tokens = sum(v["tokens"] for v in stats.values())
        print(f"English sentences: {sizes}; tokens: {tokens:,}; runs: {repeats}")
        for name, runs in results.items():
            walls = [w for w, _ in runs]
            mem = max(m for _, m in runs)
            print(
                f"{name}: median wall {statistics.median(walls):.1f}s "
                f"(runs {', '.join(f'{w:.1f}' for w in walls)}), peak RSS {mem:,.0f} MiB"
            )


if __name__ == "__main__":
    typer.run(main)
