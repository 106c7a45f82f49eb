"""What the benchmark scripts share: the project root, their child processes' environment, the
memory of a process tree and a measure of how fast the machine is right now."""

import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict:
    """The environment of a benchmark's child process: the hub offline (the backbone is a
    local directory), quiet tokenizers, and the project in front of the caller's PYTHONPATH
    (kept: it may hold the installed packages)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(
        os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=path, **extra
    )


def tree_rss(process) -> int:
    """Resident bytes of a process (a psutil.Process) and all its descendants."""
    import psutil

    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def wait_peak_rss(proc, interval: float = 0.1) -> int:
    """Wait for a subprocess.Popen to end, sampling the resident memory of its process tree;
    the peak, in bytes."""
    import psutil

    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            pass
        time.sleep(interval)
    return peak


def linear_gflops(rows: int, n_in: int, n_out: int, seconds: float = 0.5) -> float:
    """GFLOP/s of one torch.nn.Linear(n_in, n_out) on a (rows, n_in) input, no grad."""
    import torch

    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(rows, n_in)
    with torch.no_grad():
        for _ in range(3):
            layer(x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            layer(x)
            calls += 1
        elapsed = time.perf_counter() - start
    return 2 * rows * n_in * n_out * calls / elapsed / 1e9


def machine_gflops(repeats: int = 5) -> float:
    """How fast this machine's torch runs a MiniLM-sized linear layer now (median of short
    runs): timed before and after each system's training, it shows a shared machine that
    slowed down in between."""
    return statistics.median(linear_gflops(1024, 384, 1536, seconds=0.4) for _ in range(repeats))
