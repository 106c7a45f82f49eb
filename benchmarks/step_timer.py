"""A spaCy `before_update` callback for the benchmarks: appends the time of every update step
to a file, so that a short calibration run gives seconds per step and the dev evaluation's
cost (the gap after step 0, when spaCy scores the dev split)."""

import time

from spacy.util import registry


@registry.callbacks("benchmarks.step_timer.v1")
def step_timer(path: str):
    def before_update(nlp, info):
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{info['step']}\t{time.time()}\n")

    return before_update
