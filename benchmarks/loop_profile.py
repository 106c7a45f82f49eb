"""`--code` file for a profile of spaCy's training loop: what each part of a step costs, for any
config (`spacy train` or the project's scripts/train.py). When the environment variable
LOOP_PROFILE names a file, it times a few named functions of spaCy, spacy-transformers, thinc
and torch by wrapping them as it is imported (wall time, a call nested in another of the same
part counted once), and writes the totals, in seconds, to that JSON file when the process
ends. A function that a library no longer has is left out and named under "missing".

The parts (bench_train_ceiling.py turns them into the profile's rows):
- loop: inside spaCy's train_while_improving (every step, its evaluations included);
- data: inside the training batches' generator (read, shuffle, make Examples, batch);
- update: Language.update; copy: its copy of the Examples;
- transformer: the transformer component's update (its forward), of which tokenize is the
  word-piece tokenizer and encoder_forward the torch module's forward;
- encoder_backward: torch's backward pass (called from the listener's backprop);
- evaluate: the dev evaluations.
"""

import atexit
import importlib
import json
import os
import time
from collections import defaultdict
from functools import wraps
from typing import Callable, Dict, Optional, Tuple

from scripts import architectures  # noqa: F401  (the project's layers, for its configs)

PARTS = {
    "loop": ("spacy.training.loop", "train_while_improving"),
    "data": ("spacy.training.loop", "create_train_batches"),
    "update": ("spacy.language", "Language.update"),
    "copy": ("spacy.language", "_copy_examples"),
    "transformer": ("spacy_transformers.pipeline_component", "Transformer.update"),
    "tokenize": ("spacy_transformers.layers.transformer_model", "huggingface_tokenize"),
    "encoder_forward": ("thinc.shims.pytorch", "PyTorchShim.begin_update"),
    "encoder_backward": ("torch.autograd", "backward"),
    "evaluate": ("spacy.language", "Language.evaluate"),
}
GENERATORS = {"loop", "data"}  # timed inside each next()
totals = defaultdict(float)
missing = []
_active = set()


def timed(part, func):
    @wraps(func)
    def call(*args, **kwargs):
        if part in _active:
            return func(*args, **kwargs)
        _active.add(part)
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[part] += time.perf_counter() - start
            _active.discard(part)

    @wraps(func)
    def generate(*args, **kwargs):
        items = func(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                totals[part] += time.perf_counter() - start
            yield item

    return generate if part in GENERATORS else call


def targets() -> Dict[str, Tuple[object, str, Optional[Callable]]]:
    """Each part's (owner, attribute, function), the function None where it is not found."""
    found = {}
    for part, (module_name, path) in PARTS.items():
        owner = importlib.import_module(module_name)
        *outer, name = path.split(".")
        for attr in outer:
            owner = getattr(owner, attr, None)
        found[part] = (owner, name, getattr(owner, name, None))
    return found


def install() -> None:
    for part, (owner, name, func) in targets().items():
        if func is None:
            missing.append(".".join(PARTS[part]))
            continue
        setattr(owner, name, timed(part, func))


@atexit.register
def write() -> None:
    path = os.environ.get("LOOP_PROFILE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"seconds": dict(totals), "missing": missing}, f, indent=2)


if os.environ.get("LOOP_PROFILE"):
    install()
