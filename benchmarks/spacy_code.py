"""`--code` file for the benchmarks' spaCy runs: the project's architectures, the step timer and
the timed batchers."""

from benchmarks import batch_timer, step_timer  # noqa: F401
from scripts import architectures  # noqa: F401
