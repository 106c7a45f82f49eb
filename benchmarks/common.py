"""What the benchmark scripts share: the project root and their child processes' environment."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict:
    """The environment of a benchmark's child process: the hub offline (the backbone is a
    local directory), quiet tokenizers, and the project in front of the caller's PYTHONPATH
    (kept: it may hold the installed packages)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=path, **extra)
