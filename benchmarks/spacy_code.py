"""`--code` file for the benchmarks' spaCy runs: the project's architectures and the step timer."""

from benchmarks import step_timer  # noqa: F401
from scripts import architectures  # noqa: F401
