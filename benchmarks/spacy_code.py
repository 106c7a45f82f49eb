"""`--code` file for the benchmarks' spaCy runs: the project's architectures and the timed
batchers."""

from benchmarks import batch_timer  # noqa: F401
from scripts import architectures  # noqa: F401
