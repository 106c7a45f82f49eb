"""What the benchmark scripts share: the project root, the checks of their inputs (each stops
with one line that names what is missing and how to make it), their child processes'
environment, the memory of a process tree and a measure of how fast the machine is right now."""

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parent.parent
CORPUS_STEP = (
    "Make it with `python -m spacy project run corpus . --vars.dataset=conll2003 "
    "--vars.source=<your CoNLL-2003 directory>` (docs/benchmarks.md)."
)


def require_inputs(paths: Iterable[Path], how: str) -> None:
    """Stop with one line at the first input that is missing: its path and `how` to make it."""
    for path in paths:
        if not Path(path).exists():
            sys.exit(f"{path}: not found. {how}")


def require_pipeline(model: str, how: str) -> None:
    """Stop with one line unless `model` is a pipeline directory or an installed package."""
    from spacy.util import is_package

    if not Path(model).exists() and not is_package(model):
        sys.exit(f"{model}: no such pipeline directory or installed package. {how}")


def needs_encoder(config: Path) -> bool:
    """Whether a training config reads the pretrained encoder (`${paths.transformer}`)."""
    return "${paths.transformer}" in config.read_text(encoding="utf-8")


def encoder_dir(package: Optional[str]) -> Optional[Path]:
    """The model directory of an installed encoder package (None for None); stops with one line
    that names the install when the package is missing."""
    from scripts.encoder import resolve

    if package is None:
        return None
    try:
        return resolve(package)
    except LookupError as err:
        sys.exit(str(err))


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
