"""Fetch a dataset and write its train/dev/test splits as assets/<dataset>/<split>.jsonl.

Each line is {"tokens": [...], "tags": [...]} with string IOB tags, validated (tag ids in
range, one tag per token, no empty split, UTF-8). `convert` reads these files.

Sources (--source):
  multinerd  "hub" (default): Babelscape/multinerd from the Hugging Face Hub via `datasets`;
             a directory of files in the hub's schema (tokens, ner_tags, lang) as JSON lines
             or Parquet, split by file name (train*, val*/dev*, test*); or a directory of the
             original Babelscape TSV release (train_en.tsv, dev_en.tsv, test_en.tsv).
             Only rows whose lang is "en" are kept.
  conll2003  a directory with eng.train, eng.testa, eng.testb (optionally .gz).
  iob        a directory with one train, dev and test file each (CoNLL columns, or
             token/tag pairs; IOB1 or IOB2; the token first and the tag last on each line).
"""
import json
import re
from pathlib import Path
from typing import Dict, List

import numpy
import pyarrow
import pyarrow.compute as pc
import typer
from wasabi import msg

from .corpus import (
    DataError,
    Sentences,
    atomic_dir,
    check_sentences,
    check_utf8,
    diagnose_jsonl,
    ids_to_tags,
    read_columns,
    remove_outputs,
    write_jsonl,
)
from .labels import DATASETS, MULTINERD_HUB_ID, MULTINERD_HUB_SPLITS, MULTINERD_TAGS, SPLITS

SOURCE_VAR = "source"  # the project.yml var that chooses the source
SPLIT_PATTERNS = {"train": r"train", "dev": r"dev|val|testa", "test": r"testb|test(?!a)"}
HUB_COLUMNS = ("tokens", "ner_tags", "lang")


class HubUnavailable(Exception):
    pass


def split_files(directory: Path, suffixes) -> Dict[str, List[Path]]:
    """Files below `directory` with one of `suffixes`, grouped by the split their name
    names (train, dev/val/testa, test/testb). Every split needs at least one file."""
    found: Dict[str, List[Path]] = {split: [] for split in SPLITS}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.name.lower()
        if not any(name.endswith(s) for s in suffixes) or name.startswith("."):
            continue
        splits = [s for s, pattern in SPLIT_PATTERNS.items() if re.search(pattern, name)]
        if len(splits) > 1:
            raise DataError(f"{path}: the name matches more than one split ({', '.join(splits)}).")
        if splits:
            found[splits[0]].append(path)
    missing = [s for s, files in found.items() if not files]
    if missing:
        raise DataError(
            f"{directory}: no {'/'.join(suffixes)} file for split {', '.join(missing)} "
            "(file names must contain train, dev or val, and test)."
        )
    return found


def concat(parts: List[Sentences], where: str) -> Sentences:
    if len(parts) == 1:
        return parts[0]
    lines = [p.lines for p in parts]
    return Sentences(
        pyarrow.concat_arrays([p.tokens for p in parts]),
        pyarrow.concat_arrays([p.tags for p in parts]),
        where,
        numpy.concatenate(lines) if all(x is not None for x in lines) else None,
    )


def english_rows(table: pyarrow.Table, where: str, line_label: str) -> Sentences:
    """Keep the rows of a hub-schema table whose lang is "en"; map tag ids to tags."""
    missing = [c for c in HUB_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(missing)}; the hub schema has tokens, ner_tags, lang."
        )
    mask = pc.fill_null(pc.equal(table.column("lang"), "en"), False)
    rows = numpy.flatnonzero(mask.to_numpy(zero_copy_only=False)) + 1
    table = table.filter(mask).combine_chunks()
    if len(table) == 0:
        raise DataError(f"{where}: no English rows (lang == 'en').")
    tokens = table.column("tokens").chunk(0)
    ner_tags = table.column("ner_tags").chunk(0)

    def locate(i: int) -> str:
        return f"{where}, sentence {i + 1} of the English rows ({line_label} {rows[i]})"

    tags = ids_to_tags(ner_tags, MULTINERD_TAGS, locate)
    return Sentences(tokens, tags, where, rows, line_label)


def load_hub() -> Dict[str, Sentences]:
    import datasets

    try:
        dsets = datasets.load_dataset(MULTINERD_HUB_ID)
    except Exception as err:  # network, offline mode, auth, missing repo: all end here
        raise HubUnavailable(f"{type(err).__name__}: {err}") from None
    out = {}
    for hub_split, split in MULTINERD_HUB_SPLITS.items():
        if hub_split not in dsets:
            raise DataError(f"{MULTINERD_HUB_ID}: no split {hub_split!r} on the hub.")
        where = f"split {hub_split!r} of {MULTINERD_HUB_ID}"
        out[split] = english_rows(dsets[hub_split].data.table, where, "row")
    return out


def load_hub_schema_dir(directory: Path) -> Dict[str, Sentences]:
    import datasets

    out = {}
    for split, files in split_files(directory, (".jsonl", ".json", ".parquet")).items():
        parts = []
        for path in files:
            builder = "parquet" if path.suffix == ".parquet" else "json"
            if builder == "json":
                check_utf8(path)  # datasets would read bad bytes without a word
            try:
                ds = datasets.load_dataset(builder, data_files=str(path), split="train")
            except Exception as err:
                diagnosed = diagnose_jsonl(path, HUB_COLUMNS) if builder == "json" else None
                raise diagnosed or DataError(f"{path}: cannot read it as {builder} ({err}).")
            table = ds.data.table
            if "lang" in table.column_names and not pc.any(
                pc.equal(table.column("lang"), "en")
            ).as_py():
                continue  # a file of another language
            parts.append(english_rows(table, str(path), "line" if builder == "json" else "row"))
        if not parts:
            raise DataError(
                f"split {split!r} ({', '.join(map(str, files))}): no English rows (lang == 'en')."
            )
        out[split] = concat(parts, ", ".join(str(p.where) for p in parts))
    return out


def load_columns_dir(directory: Path, suffixes, sep) -> Dict[str, Sentences]:
    out = {}
    for split, files in split_files(directory, suffixes).items():
        if len(files) > 1:
            raise DataError(
                f"{directory}: more than one file for split {split!r}: "
                f"{', '.join(p.name for p in files)}."
            )
        out[split] = read_columns(files[0], sep, where=f"{files[0]} (split {split!r})")
    return out


def load(dataset: str, source: str) -> Dict[str, Sentences]:
    if dataset == "multinerd" and source == "hub":
        return load_hub()
    directory = Path(source)
    if source == "hub" or not directory.is_dir():
        raise DataError(
            f"{source}: not a directory. Set the project var {SOURCE_VAR!r} to the directory "
            f"that holds the {dataset} files" + (" (or to 'hub')." if dataset == "multinerd" else ".")
        )
    if dataset == "multinerd":
        if any(directory.rglob("*.tsv")):  # the Babelscape TSV release: English files only
            english = any(directory.rglob("*_en.tsv"))
            return load_columns_dir(directory, ("_en.tsv",) if english else (".tsv",), "\t")
        return load_hub_schema_dir(directory)
    if dataset == "conll2003":
        return load_columns_dir(directory, ("eng.train", "eng.testa", "eng.testb", ".gz"), None)
    return load_columns_dir(directory, ("",), None)


def main(
    dataset: str = typer.Argument(..., help=f"One of: {', '.join(DATASETS)}"),
    output_dir: Path = typer.Argument(..., help="Where to write train/dev/test.jsonl"),
    source: str = typer.Option("hub", help="'hub' (multinerd only) or a local directory"),
):
    """Fetch a dataset's splits, validate them and write assets/<dataset>/*.jsonl."""
    if dataset not in DATASETS:
        msg.fail(f"Unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}.", exits=1)
    info = DATASETS[dataset]
    remove_outputs(output_dir)
    msg.info(f"Loading {info.description} from {source}")
    try:
        splits = load(dataset, source)
        for split in SPLITS:
            check_sentences(splits[split], info.types)
        with atomic_dir(output_dir) as tmp:
            for split in SPLITS:
                write_jsonl(splits[split], tmp / f"{split}.jsonl")
            meta = {
                "dataset": dataset,
                "source": source,
                "files": {s: splits[s].where for s in SPLITS},
                "sentences": {s: len(splits[s]) for s in SPLITS},
            }
            (tmp / "source.json").write_text(json.dumps(meta, indent=2) + "\n")
    except HubUnavailable as err:
        msg.fail(
            f"Could not load {MULTINERD_HUB_ID} from the Hugging Face Hub ({err}).",
            f"Without network access, set the project var {SOURCE_VAR!r} to a local copy: a "
            "directory of the hub's JSON-lines or Parquet files, or of the Babelscape TSV "
            f"release, e.g. `spacy project run all . --vars.{SOURCE_VAR}=/data/multinerd`. "
            "With a cached download, set HF_HUB_OFFLINE=1 and keep it 'hub'.",
            exits=1,
        )
    except DataError as err:
        msg.fail(str(err), exits=1)
    for split in SPLITS:
        msg.good(f"{split}: {len(splits[split]):,} sentences -> {output_dir / (split + '.jsonl')}")


if __name__ == "__main__":
    typer.run(main)
