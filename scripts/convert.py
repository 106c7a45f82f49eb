"""Convert assets/<dataset>/{train,dev,test}.jsonl into one corpus a label scheme, in
corpus/<dataset>_<scheme>/ (one Doc a sentence):

- train/: the training split shuffled once (seeded) and cut into DocBin shards of
  --shard-size sentences (000.spacy, 001.spacy, ...), which the training reader streams
  (multinerd.StreamedCorpus.v1 in scripts/architectures.py; spaCy's own spacy.Corpus.v1
  reads the directory too);
- dev.spacy, test.spacy: one DocBin each, in the source order;
- labels/ner.json: the NER component's labels with their counts in the training split,
  what `spacy init labels` writes, so that `spacy train` reads the labels from it
  (spacy.read_labels.v1 in the configs) instead of walking the whole training corpus;
- stats.json.

Every scheme in scripts/labels.py:SCHEMES is written (System A and System B). Nothing is
written until every split has been validated and the official counts checked; each corpus
directory then appears in one rename, and earlier corpora of these schemes are removed at
the start, so a failed run leaves nothing that a later step would take as done.
"""

import json
import time
from pathlib import Path
from typing import List, Optional

import numpy
import srsly
import typer
from tqdm import tqdm
from wasabi import msg

from .corpus import (
    DataError,
    EncodedSplit,
    atomic_write,
    check_sentences,
    ner_label_data,
    read_jsonl,
    reference_mismatch,
    remove_outputs,
)
from .labels import DATASETS, SCHEMES, SPLITS, corpus_name

SHARD_SIZE = 10_000  # sentences a training shard
SHUFFLE_SEED = 0


def dataset_types(dataset: str, splits) -> tuple:
    """The dataset's entity types: the declared ones, or for a generic IOB corpus the types
    that occur in its files (sorted)."""
    declared = DATASETS[dataset].types
    if declared is not None:
        return declared
    found = {tag[2:] for s in splits.values() for tag in s.tag_values if tag != "O"}
    return tuple(sorted(found))


def shards(n_sentences: int, shard_size: int, seed: int) -> List[numpy.ndarray]:
    """The sentence indices of each training shard: all sentences in one seeded random
    order, cut into runs of `shard_size` (the last one shorter)."""
    order = numpy.random.default_rng(seed).permutation(n_sentences)
    return [order[i : i + shard_size] for i in range(0, n_sentences, shard_size)]


def shard_name(index: int, n_shards: int) -> str:
    return f"{index:0{max(3, len(str(n_shards - 1)))}d}.spacy"


def convert(
    dataset: str,
    assets_dir: Path,
    corpus_dir: Path,
    schemes: List[str],
    shard_size: int = SHARD_SIZE,
    seed: int = SHUFFLE_SEED,
) -> dict:
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1 sentence (got {shard_size}).")
    info = DATASETS[dataset]
    outputs = [corpus_dir / corpus_name(dataset, s) for s in schemes]
    remove_outputs(*outputs)
    encoded = {}
    for split in SPLITS:
        sents = read_jsonl(assets_dir / f"{split}.jsonl")
        check_sentences(sents, info.types)
        encoded[split] = EncodedSplit.encode(sents)
    types = dataset_types(dataset, encoded)
    results = {}
    for name in schemes:
        scheme = SCHEMES[name]
        labels = scheme.keep(types)
        if not labels:
            raise DataError(
                f"scheme {name!r} keeps none of the types of {dataset} ({', '.join(types)})."
            )
        stats = {
            "dataset": dataset,
            "scheme": name,
            "description": scheme.description,
            "labels": list(labels),
            "splits": {},
        }
        arrays = {}
        for split, enc in encoded.items():
            iob, label, repaired = enc.entities(labels)
            arrays[split] = (iob, label)
            stats["splits"][split] = enc.stats(labels, iob, label, repaired)
            reference = info.references.get(split)
            split_stats = stats["splits"][split]
            problem = reference and reference_mismatch(
                reference, split_stats["sentences"], split_stats["entities"]
            )
            if problem:
                raise DataError(
                    f"{enc.sents.where}: the {split} split has the official size "
                    f"({reference.sentences:,} sentences) but its entity counts under scheme "
                    f"{name!r} differ from the official ones: {problem}. Are the tag ids "
                    "mapped with the official id map (scripts/labels.py)?"
                )
        results[name] = (labels, stats, arrays)
    train_shards = shards(len(encoded["train"].sents), shard_size, seed)
    shard_stats = {"shards": len(train_shards), "shard_size": shard_size, "seed": seed}
    written = {}
    for name, (labels, stats, arrays) in results.items():
        out = corpus_dir / corpus_name(dataset, name)
        stats["train_shards"] = shard_stats
        with atomic_write(out, folder=True) as tmp:
            enc = encoded["train"]
            (tmp / "train").mkdir()
            for i, sentences in enumerate(
                tqdm(train_shards, desc=f"{out.name}/train", unit=" shards", leave=False)
            ):
                data = enc.docbin_bytes(labels, *arrays["train"], sentences=sentences)
                (tmp / "train" / shard_name(i, len(train_shards))).write_bytes(data)
            for split in ("dev", "test"):
                data = encoded[split].docbin_bytes(labels, *arrays[split])
                (tmp / f"{split}.spacy").write_bytes(data)
            (tmp / "labels").mkdir()
            srsly.write_json(
                tmp / "labels" / "ner.json", ner_label_data(labels, arrays["train"][1])
            )
            (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        written[name] = stats
    return written


def main(
    dataset: str = typer.Argument(..., help=f"One of: {', '.join(DATASETS)}"),
    assets_dir: Path = typer.Argument(..., help="Directory with train/dev/test.jsonl"),
    corpus_dir: Path = typer.Argument(Path("corpus"), help="Where corpus/<dataset>_<scheme>/ go"),
    scheme: Optional[List[str]] = typer.Option(None, help="Schemes to write (default: all)"),
    shard_size: int = typer.Option(SHARD_SIZE, help="Sentences a training shard"),
    seed: int = typer.Option(SHUFFLE_SEED, help="Seed of the training split's shuffle"),
):
    """Write DocBin corpora and stats.json for every label scheme."""
    if dataset not in DATASETS:
        msg.fail(f"Unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}.", exits=1)
    schemes = scheme or list(SCHEMES)
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        msg.fail(f"Unknown scheme {', '.join(unknown)}; known: {', '.join(SCHEMES)}.", exits=1)
    start = time.perf_counter()
    try:
        written = convert(dataset, assets_dir, corpus_dir, schemes, shard_size, seed)
    except DataError as err:
        msg.fail(str(err), exits=1)
    for name, stats in written.items():
        out = corpus_dir / corpus_name(dataset, name)
        sizes = ", ".join(f"{s} {v['sentences']:,}" for s, v in stats["splits"].items())
        msg.good(
            f"{out}: {len(stats['labels'])} labels; sentences: {sizes}; train in "
            f"{stats['train_shards']['shards']} shuffled shards"
        )
    msg.info(f"Converted in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    typer.run(main)
