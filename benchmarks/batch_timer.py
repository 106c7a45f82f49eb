"""spaCy batchers for the benchmarks: the config's own batcher (spaCy's batch_by_words or
batch_by_padded, same settings), which also appends the clock time and the number of words
of every batch it hands to the training loop to a file. The loop asks for batch N when step
N starts, so the file gives the time of every step's start and the words it trained on."""

import time
from typing import Callable, Iterable, Iterator

from spacy.util import registry


def timed(batcher: Callable, log_path: str) -> Callable:
    def batches(items: Iterable) -> Iterator:
        with open(log_path, "a", encoding="utf-8") as log:
            for batch in batcher(items):
                log.write(f"{time.time()}\t{sum(len(eg) for eg in batch)}\n")
                log.flush()
                yield batch

    return batches


@registry.batchers("benchmarks.timed_batch_by_words.v1")
def timed_batch_by_words(
    log_path: str, size, tolerance: float = 0.2, discard_oversize: bool = False, get_length=None
):
    make = registry.batchers.get("spacy.batch_by_words.v1")
    batcher = make(
        size=size, tolerance=tolerance, discard_oversize=discard_oversize, get_length=get_length
    )
    return timed(batcher, log_path)


@registry.batchers("benchmarks.timed_batch_by_padded.v1")
def timed_batch_by_padded(
    log_path: str, size, buffer: int = 256, discard_oversize: bool = True, get_length=None
):
    make = registry.batchers.get("spacy.batch_by_padded.v1")
    batcher = make(
        size=size, buffer=buffer, discard_oversize=discard_oversize, get_length=get_length
    )
    return timed(batcher, log_path)
