"""Memory of the training reader over one whole epoch, in a process of its own: iterate every
Example of a training corpus (multinerd.StreamedCorpus.v1 with the configs' shuffle buffer),
one at a time, and print the process's peak resident memory when the reader is built
and after each checkpoint. Flat figures mean that memory does not grow with the corpus.

    python -m benchmarks.reader_epoch benchmarks/runs/train-scale/corpus/en_multinerd_a/train
"""

import resource
import time
from pathlib import Path

import typer


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(
    train: Path = typer.Argument(
        ..., help="A training corpus: a .spacy file or directory", exists=True
    ),
    buffer: int = typer.Option(10_000, help="Shuffle buffer, as [corpora.train] buffer"),
    checkpoints: str = typer.Option("20000,100000", help="Print after these many examples"),
):
    import spacy

    from scripts.architectures import StreamedCorpus

    nlp = spacy.blank("en")
    corpus = StreamedCorpus(train, shuffle=True, buffer=buffer, seed=0)
    marks = {int(n) for n in checkpoints.split(",")}
    print(f"reader built: peak {peak_rss_mib():,.0f} MiB")
    start, n = time.perf_counter(), 0
    for _example in corpus(nlp):
        n += 1
        if n in marks:
            print(f"{n:,} examples: peak {peak_rss_mib():,.0f} MiB")
    print(
        f"all {n:,} examples: peak {peak_rss_mib():,.0f} MiB ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    typer.run(main)
