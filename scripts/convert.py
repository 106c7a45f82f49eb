"""Convert assets/<language>_<dataset>/{train,dev,test}.jsonl into one corpus a label scheme,
in corpus/<language>_<dataset>_<scheme>/ (one Doc a sentence; a space after each token, except
between the characters of Chinese sentences; in a corpus of every language, each doc's
language in its user_data):

- train/: the training split shuffled once (seeded) and cut into DocBin shards of
  --shard-size sentences (000.spacy, 001.spacy, ...), which the training reader streams
  (multinerd.StreamedCorpus.v1 in scripts/architectures.py; spaCy's own spacy.Corpus.v1
  reads the directory too);
- dev.spacy, test.spacy: one DocBin each, in the source order;
- labels/ner.json: the NER component's labels with their counts in the training split,
  what `spacy init labels` writes, so that `spacy train` reads the labels from it
  (spacy.read_labels.v1 in the configs) instead of walking the whole training corpus;
- stats.json: sentences, tokens and entities per split, the sentences of each language, and
  for each language the share of gold tokens that the pipeline's tokenizer reproduces on the
  corpus' own text (its first TOKENIZER_SAMPLE training sentences in that language).

Every scheme in scripts/labels.py:SCHEMES is written (System A and System B). Nothing is
written until every split has been validated and the official counts checked; each corpus
directory then appears in one rename, and earlier corpora of these schemes are removed at
the start, so a failed run leaves nothing that a later step would take as done.
"""

import json
import time
from pathlib import Path
from typing import Dict, List, Optional

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
from .labels import (
    ALL,
    DATASETS,
    DEFAULT_LANGUAGE,
    SCHEMES,
    SPLITS,
    corpus_name,
    spacy_language,
    tokenizer_config,
)

SHARD_SIZE = 10_000  # sentences a training shard
SHUFFLE_SEED = 0
TOKENIZER_SAMPLE = 10_000  # training sentences a language whose tokenization is checked


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


def pipeline_tokenizer(language: str):
    """The tokenizer of a pipeline trained on `language` rows (what scripts/train.py builds)."""
    import spacy

    from . import architectures  # noqa: F401  (multinerd.Tokenizer.v1)

    config = {"nlp": {"tokenizer": tokenizer_config(language)}}
    return spacy.blank(spacy_language(language), config=config).tokenizer


def tokenizer_agreement(
    enc: EncodedSplit, languages: numpy.ndarray, spaces: numpy.ndarray, tokenizer, limit: int
) -> Dict[str, Dict]:
    """For each language, over its first `limit` sentences of the split: the gold tokens, how
    many of them the tokenizer reproduces (the same characters as one token) on the sentence's
    text, and their share."""
    out: Dict[str, Dict] = {}
    for lang in sorted(set(languages)):
        chosen = numpy.flatnonzero(languages == lang)[:limit]
        gold = reproduced = 0
        for i in chosen:
            start, end = enc.offsets[i], enc.offsets[i + 1]
            words = [enc.token_values[c] for c in enc.token_codes[start:end]]
            text, spans, at = "", set(), 0
            for word, space in zip(words, spaces[start:end]):
                spans.add((at, at + len(word)))
                text += word + (" " if space else "")
                at = len(text)
            found = {(t.idx, t.idx + len(t.text)) for t in tokenizer(text)}
            gold += len(spans)
            reproduced += len(spans & found)
        out[str(lang)] = {
            "sentences": len(chosen),
            "tokens": gold,
            "reproduced": reproduced,
            "share": reproduced / gold if gold else None,
        }
    return out


def convert(
    dataset: str,
    assets_dir: Path,
    corpus_dir: Path,
    schemes: List[str],
    shard_size: int = SHARD_SIZE,
    seed: int = SHUFFLE_SEED,
    language: str = DEFAULT_LANGUAGE,
) -> dict:
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1 sentence (got {shard_size}).")
    info = DATASETS[dataset]
    outputs = [corpus_dir / corpus_name(dataset, s, language) for s in schemes]
    remove_outputs(*outputs)
    encoded, languages, spaces = {}, {}, {}
    for split in SPLITS:
        sents = read_jsonl(assets_dir / f"{split}.jsonl")
        check_sentences(sents, info.types)
        encoded[split] = enc = EncodedSplit.encode(sents)
        languages[split] = enc.languages(language)
        spaces[split] = enc.spaces(languages[split])
    types = dataset_types(dataset, encoded)
    agreement = tokenizer_agreement(
        encoded["train"],
        languages["train"],
        spaces["train"],
        pipeline_tokenizer(language),
        TOKENIZER_SAMPLE,
    )
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
            "language": language,
            "spacy_language": spacy_language(language),
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
            found, counts = numpy.unique(languages[split], return_counts=True)
            stats["splits"][split]["languages"] = dict(zip(map(str, found), map(int, counts)))
            reference = info.references.get(split) if language == DEFAULT_LANGUAGE else None
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
    # a corpus of every language keeps each doc's language (the report scores each)
    doc_languages = {s: languages[s] if language == ALL else None for s in SPLITS}
    written = {}
    for name, (labels, stats, arrays) in results.items():
        out = corpus_dir / corpus_name(dataset, name, language)
        stats["train_shards"] = shard_stats
        stats["tokenizer"] = {"config": tokenizer_config(language), "agreement": agreement}
        with atomic_write(out, folder=True) as tmp:
            enc = encoded["train"]
            (tmp / "train").mkdir()
            for i, sentences in enumerate(
                tqdm(train_shards, desc=f"{out.name}/train", unit=" shards", leave=False)
            ):
                data = enc.docbin_bytes(
                    labels,
                    *arrays["train"],
                    sentences=sentences,
                    spaces=spaces["train"],
                    languages=doc_languages["train"],
                )
                (tmp / "train" / shard_name(i, len(train_shards))).write_bytes(data)
            for split in ("dev", "test"):
                data = encoded[split].docbin_bytes(
                    labels, *arrays[split], spaces=spaces[split], languages=doc_languages[split]
                )
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
    language: str = typer.Option(DEFAULT_LANGUAGE, help="The rows' language (fetch's), or all"),
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
        written = convert(dataset, assets_dir, corpus_dir, schemes, shard_size, seed, language)
    except DataError as err:
        msg.fail(str(err), exits=1)
    for name, stats in written.items():
        out = corpus_dir / corpus_name(dataset, name, language)
        sizes = ", ".join(f"{s} {v['sentences']:,}" for s, v in stats["splits"].items())
        msg.good(
            f"{out}: {len(stats['labels'])} labels; sentences: {sizes}; train in "
            f"{stats['train_shards']['shards']} shuffled shards"
        )
    agreement = next(iter(written.values()))["tokenizer"]["agreement"]
    msg.info(
        "The pipeline's tokenizer reproduces "
        + ", ".join(
            f"{100 * a['share']:.2f}% of the gold tokens of {lang}" for lang, a in agreement.items()
        )
        + " (training sentences; docs/data.md)"
    )
    msg.info(f"Converted in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    typer.run(main)
