"""Fetch a dataset and write its train/dev/test splits as assets/<dataset>/<split>.jsonl.

Each line is {"tokens": [...], "tags": [...]} with string IOB tags, validated (tag ids in
range, one tag per token, no empty split, UTF-8). `convert` reads these files.

Sources (--source):
  multinerd  "hub" (default): the English files of Babelscape/multinerd on the Hugging Face
             Hub (train/train_en.jsonl, val/val_en.jsonl, test/test_en.jsonl; about 48 MB,
             the other nine languages are not downloaded), read with `datasets`; a local
             copy of that repository (the same files, read the same way); a directory of
             files in the hub's schema (tokens, ner_tags, lang) as JSON lines or Parquet,
             split by file name (train*, val*/dev*, test*); or a directory of the original
             Babelscape TSV release (train_en.tsv, dev_en.tsv, test_en.tsv).
             Only rows whose lang is "en" are kept.
  conll2003  a directory with eng.train, eng.testa, eng.testb (optionally .gz).
  iob        a directory with one train, dev and test file each (CoNLL columns, or
             token/tag pairs; IOB1 or IOB2; the token first and the tag last on each line).
"""

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy
import pyarrow
import pyarrow.compute as pc
import typer
from wasabi import msg

from . import hub
from .corpus import (
    DataError,
    Sentences,
    atomic_write,
    check_sentences,
    check_utf8,
    diagnose_jsonl,
    ids_to_tags,
    open_binary,
    read_columns,
    remove_outputs,
    write_jsonl,
)
from .labels import DATASETS, MULTINERD_HUB_FILES, MULTINERD_HUB_ID, MULTINERD_TAGS, SPLITS

SOURCE_VAR = "source"  # the project.yml var that chooses the source
SPLIT_PATTERNS = {"train": r"train", "dev": r"dev|val|testa", "test": r"testb|test(?!a)"}
HUB_COLUMNS = ("tokens", "ner_tags", "lang")


class HubUnavailable(Exception):
    """The hub cannot be reached and the files are not in the local cache."""


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


def json_lines(path: Path) -> numpy.ndarray:
    """The 1-based numbers of the lines of a JSON-lines file that hold a row (blank lines
    hold none), so that row i of the table is reported at its real line."""
    with open_binary(path) as f:
        return numpy.fromiter((n for n, raw in enumerate(f, 1) if raw.strip()), numpy.int64)


def first_non_integer_tags(path: Path) -> Optional[Tuple[int, object]]:
    """(line, value) of the first English row of a JSON-lines file whose ner_tags holds
    something other than integers."""
    with open_binary(path) as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row = json.loads(raw)
            if row.get("lang", "en") != "en":
                continue
            for value in row.get("ner_tags") or []:
                if not isinstance(value, int) or isinstance(value, bool):
                    return n, value
    return None


def kind_of(value) -> str:
    return {str: "strings", float: "floats", bool: "booleans", type(None): "nulls"}.get(
        type(value), type(value).__name__ + " values"
    )


def english_rows(
    table: pyarrow.Table,
    where: str,
    lines: numpy.ndarray,
    line_label: str,
    path: Optional[Path] = None,
) -> Sentences:
    """Keep the rows of a hub-schema table whose lang is "en"; map tag ids to tags.
    `lines[i]` is the line (or row) of table row i, for messages; `path`, the JSON-lines file
    the table was read from, to find the line of a bad value."""
    missing = [c for c in HUB_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(missing)}; the hub schema has tokens, ner_tags, lang."
        )
    mask = pc.fill_null(pc.equal(table.column("lang"), "en"), False)
    rows = lines[numpy.flatnonzero(mask.to_numpy(zero_copy_only=False))]
    table = table.filter(mask).combine_chunks()
    if len(table) == 0:
        raise DataError(f"{where}: no English rows (lang == 'en').")
    tokens = table.column("tokens").chunk(0)
    ner_tags = table.column("ner_tags").chunk(0)

    def locate(i: int) -> str:
        return f"{where}, sentence {i + 1} of the English rows ({line_label} {rows[i]})"

    value_type = ner_tags.type.value_type if hasattr(ner_tags.type, "value_type") else ner_tags.type
    if not pyarrow.types.is_integer(value_type):
        found = first_non_integer_tags(path) if path is not None else None
        if found:  # the line that holds it, read from the file itself
            line, value = found
            i = int(numpy.searchsorted(rows, line))
            raise DataError(
                f"{locate(i)}: ner_tags holds {kind_of(value)} ({value!r}), not integer tag ids "
                f"0-{len(MULTINERD_TAGS) - 1}."
            )
        first = next((i for i, tags in enumerate(ner_tags.to_pylist()) if tags), 0)
        sample = (ner_tags[first].as_py() or [None])[0]
        raise DataError(
            f"{locate(first)}: ner_tags holds {kind_of(sample)} ({sample!r}), not integer tag "
            f"ids 0-{len(MULTINERD_TAGS) - 1}."
        )
    tags = ids_to_tags(ner_tags, MULTINERD_TAGS, locate)
    return Sentences(tokens, tags, where, rows, line_label)


def read_hub_schema_file(path: Path) -> Optional[Sentences]:
    """The English rows of one hub-schema file (JSON lines or Parquet); None for a file of
    another language."""
    import datasets

    builder = "parquet" if path.suffix == ".parquet" else "json"
    if builder == "json":
        check_utf8(path)  # datasets would read bad bytes without a word
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:
        diagnosed = diagnose_jsonl(path, HUB_COLUMNS) if builder == "json" else None
        raise diagnosed or DataError(f"{path}: cannot read it as {builder} ({err}).") from None
    table = ds.data.table
    if "lang" in table.column_names and not pc.any(pc.equal(table.column("lang"), "en")).as_py():
        return None  # a file of another language
    if builder == "json":
        lines = json_lines(path)
        if len(lines) != len(table):  # not one row a non-blank line: count rows instead
            return english_rows(table, str(path), numpy.arange(1, len(table) + 1), "row")
        return english_rows(table, str(path), lines, "line", path)
    return english_rows(table, str(path), numpy.arange(1, len(table) + 1), "row")


def hub_files(repo: str) -> Dict[str, Path]:
    """The English files of the MultiNERD hub repository (MULTINERD_HUB_FILES), and only
    those: downloaded into (or taken from) the Hugging Face cache for a hub id, or found in a
    local directory laid out like the repository (e.g. a git clone of it)."""
    local = Path(repo)
    if local.is_dir():
        paths = {split: local / name for split, name in MULTINERD_HUB_FILES.items()}
        missing = [MULTINERD_HUB_FILES[s] for s, path in paths.items() if not path.is_file()]
        if missing:
            raise DataError(
                f"{local}: no {', '.join(missing)}; a copy of the {MULTINERD_HUB_ID} repository "
                f"has {', '.join(MULTINERD_HUB_FILES.values())}."
            )
        return paths
    reason = hub.use_hub_or_cache()  # before huggingface_hub is imported
    from huggingface_hub import hf_hub_download

    msg.info(
        f"{'Reading from the Hugging Face cache' if reason else 'Downloading'} the English files "
        f"of {repo}: {', '.join(MULTINERD_HUB_FILES.values())} (about 48 MB; the other nine "
        "languages are not downloaded)"
    )
    try:
        return {
            split: Path(hf_hub_download(repo, name, repo_type="dataset"))
            for split, name in MULTINERD_HUB_FILES.items()
        }
    except Exception as err:  # no network and not cached, a missing repo or file, auth...
        why = (
            f"{reason}, and the files are not in the local cache" if reason else hub.first_line(err)
        )
        raise HubUnavailable(why) from None


def load_hub(repo: str = MULTINERD_HUB_ID) -> Dict[str, Sentences]:
    """MultiNERD's English rows from the hub (or a local copy of its repository)."""
    out = {}
    for split, path in hub_files(repo).items():
        sents = read_hub_schema_file(path)
        if sents is None:
            raise DataError(f"split {split!r} ({path}): no English rows (lang == 'en').")
        out[split] = sents
    return out


def load_hub_schema_dir(directory: Path) -> Dict[str, Sentences]:
    """Hub-schema files below a directory, split by file name. A copy of the hub repository
    (train/train_en.jsonl ...) is read like the hub: its English files only. Elsewhere, when
    some file names end in _en, only those are read; else every file, English rows kept."""
    if all((directory / name).is_file() for name in MULTINERD_HUB_FILES.values()):
        return load_hub(str(directory))
    suffixes = (".jsonl", ".json", ".parquet")
    files = split_files(directory, suffixes)
    if any(p.name.lower().rsplit(".", 1)[0].endswith("_en") for ps in files.values() for p in ps):
        files = split_files(directory, tuple("_en" + s for s in suffixes))
    out = {}
    for split, paths in files.items():
        parts = [sents for sents in map(read_hub_schema_file, paths) if sents is not None]
        if not parts:
            raise DataError(
                f"split {split!r} ({', '.join(map(str, paths))}): no English rows (lang == 'en')."
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
            f"that holds the {dataset} files"
            + (" (or to 'hub')." if dataset == "multinerd" else ".")
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
        with atomic_write(output_dir, folder=True) as tmp:
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
            f"Set the project var {SOURCE_VAR!r} to a local copy: a clone of the hub "
            f"repository (git clone https://huggingface.co/datasets/{MULTINERD_HUB_ID}), a "
            "directory of its JSON-lines or Parquet files, or the Babelscape TSV release, e.g. "
            f"`spacy project run all . --vars.{SOURCE_VAR}=/data/multinerd`. Files downloaded "
            "once are read from the Hugging Face cache when the hub cannot be reached.",
            exits=1,
        )
    except DataError as err:
        msg.fail(str(err), exits=1)
    for split in SPLITS:
        msg.good(f"{split}: {len(splits[split]):,} sentences -> {output_dir / (split + '.jsonl')}")


if __name__ == "__main__":
    typer.run(main)
