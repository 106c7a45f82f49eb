"""Fetch a dataset and write its train/dev/test splits as assets/<language>_<dataset>/<split>.jsonl.

Each line is {"tokens": [...], "tags": [...]} with string IOB tags, validated (tag ids in
range, one tag per token, no empty split, UTF-8), and for the language "all" the row's
language ("lang"). `convert` reads these files.

--language picks the rows: one of MultiNERD's ten languages (default en), or "all" (every
row of the ten). Sources (--source):
  multinerd  "hub" (default): that language's files of Babelscape/multinerd on the Hugging
             Face Hub (train/train_<language>.jsonl, val/val_<language>.jsonl,
             test/test_<language>.jsonl; English about 48 MB, all ten about 480 MB; no other
             language is downloaded), read with `datasets`; a local copy of that repository
             (the same files, read the same way); a directory of files in the hub's schema
             (tokens, ner_tags, lang) as JSON lines or Parquet, split by file name (train*,
             val*/dev*, test*); or a directory of the original Babelscape TSV release
             (train_<language>.tsv, dev_<language>.tsv, test_<language>.tsv). Only rows of
             the language are kept (the hub schema's lang; the TSV release's file names).
  conll2003  a directory with eng.train, eng.testa, eng.testb (optionally .gz): English.
  iob        a directory with one train, dev and test file each (CoNLL columns, or
             token/tag pairs; IOB1 or IOB2; the token first and the tag last on each line),
             in the language --language names.
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
    fail_line,
    ids_to_tags,
    open_binary,
    read_columns,
    remove_outputs,
    write_jsonl,
)
from .labels import (
    ALL,
    DATASETS,
    DEFAULT_LANGUAGE,
    LANGUAGE_NAMES,
    MULTINERD_HUB_ID,
    MULTINERD_LANGUAGES,
    MULTINERD_TAGS,
    SPLITS,
    hub_files,
    languages_of,
)

SOURCE_VAR = "source"  # the project.yml var that chooses the source
LANGUAGE_VAR = "language"  # the project.yml var that chooses the language
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
    languages = [p.languages for p in parts]
    return Sentences(
        pyarrow.concat_arrays([p.tokens for p in parts]),
        pyarrow.concat_arrays([p.tags for p in parts]),
        where,
        numpy.concatenate(lines) if all(x is not None for x in lines) else None,
        languages=pyarrow.concat_arrays(languages)
        if all(x is not None for x in languages)
        else None,
    )


def check_language(dataset: str, language: str) -> None:
    """Raise DataError, in one line naming the var, for a language the dataset lacks."""
    allowed = DATASETS[dataset].languages
    if allowed is None:  # an IOB corpus: any language spaCy has
        from spacy.util import get_lang_class

        try:
            get_lang_class(language)
        except ImportError:
            raise DataError(
                f"language {language!r}: spaCy has no such language; set the project var "
                f"{LANGUAGE_VAR!r} to a language code spaCy knows (en, de, es, nl, ...)."
            ) from None
        return
    if language not in allowed:
        raise DataError(
            f"language {language!r}: {dataset} has {', '.join(allowed)}; set the project var "
            f"{LANGUAGE_VAR!r} to one of them."
        )


def rows_of(language: str) -> str:
    """'English rows (lang == 'en')', for messages."""
    keep = languages_of(language)
    test = f"lang == {keep[0]!r}" if len(keep) == 1 else "lang in " + ", ".join(keep)
    return f"{LANGUAGE_NAMES.get(language, language)} rows ({test})"


def counts_text(counts: Dict[str, int]) -> str:
    """'en 64, de 5' (most first), or 'none'."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return ", ".join(f"{lang} {n:,}" for lang, n in ranked) or "none"


def no_rows(where: str, language: str, found: Dict[str, int]) -> DataError:
    return DataError(f"{where}: no {rows_of(language)}; the languages found: {counts_text(found)}.")


def json_lines(path: Path) -> numpy.ndarray:
    """The 1-based numbers of the lines of a JSON-lines file that hold a row (blank lines
    hold none), so that row i of the table is reported at its real line."""
    with open_binary(path) as f:
        return numpy.fromiter((n for n, raw in enumerate(f, 1) if raw.strip()), numpy.int64)


def first_non_integer_tags(path: Path, language: str) -> Optional[Tuple[int, object]]:
    """(line, value) of the first row of `language` in a JSON-lines file whose ner_tags holds
    something other than integers."""
    keep = languages_of(language)
    with open_binary(path) as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row = json.loads(raw)
            if row.get("lang", DEFAULT_LANGUAGE) not in keep:
                continue
            for value in row.get("ner_tags") or []:
                if not isinstance(value, int) or isinstance(value, bool):
                    return n, value
    return None


def kind_of(value) -> str:
    return {str: "strings", float: "floats", bool: "booleans", type(None): "nulls"}.get(
        type(value), type(value).__name__ + " values"
    )


def language_rows(
    table: pyarrow.Table,
    where: str,
    lines: numpy.ndarray,
    line_label: str,
    language: str,
    path: Optional[Path] = None,
) -> Sentences:
    """Keep the rows of a hub-schema table in `language` (every MultiNERD language for "all");
    map tag ids to tags. `lines[i]` is the line (or row) of table row i, for messages; `path`,
    the JSON-lines file the table was read from, to find the line of a bad value."""
    missing = [c for c in HUB_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(missing)}; the hub schema has tokens, ner_tags, lang."
        )
    keep = pyarrow.array(languages_of(language), pyarrow.string())
    lang = table.column("lang")
    mask = pc.fill_null(pc.is_in(lang, value_set=keep), False)
    rows = lines[numpy.flatnonzero(mask.to_numpy(zero_copy_only=False))]
    if len(rows) == 0:
        raise no_rows(where, language, language_counts(table))
    table = table.filter(mask).combine_chunks()
    tokens = table.column("tokens").chunk(0)
    ner_tags = table.column("ner_tags").chunk(0)
    name = LANGUAGE_NAMES.get(language, language)

    def locate(i: int) -> str:
        return f"{where}, sentence {i + 1} of the {name} rows ({line_label} {rows[i]})"

    value_type = ner_tags.type.value_type if hasattr(ner_tags.type, "value_type") else ner_tags.type
    if not pyarrow.types.is_integer(value_type):
        found = first_non_integer_tags(path, language) if path is not None else None
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
    languages = table.column("lang").chunk(0).cast(pyarrow.string())
    return Sentences(tokens, tags, where, rows, line_label, languages=languages)


def language_counts(table: pyarrow.Table) -> Dict[str, int]:
    """Rows a language of a hub-schema table ("?" for a row without one)."""
    if "lang" not in table.column_names:
        return {"?": len(table)}
    counts = pc.value_counts(pc.fill_null(table.column("lang").cast(pyarrow.string()), "?"))
    return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}


def read_hub_schema_file(path: Path, language: str) -> Tuple[Optional[Sentences], Dict]:
    """The rows of `language` of one hub-schema file (JSON lines or Parquet), or None for a
    file without any, and the rows of each language the file holds."""
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
    found = language_counts(table)
    if "lang" in table.column_names and not set(found) & set(languages_of(language)):
        return None, found  # a file of other languages
    if builder == "json":
        lines = json_lines(path)
        if len(lines) == len(table):  # one row a non-blank line: report lines
            return language_rows(table, str(path), lines, "line", language, path), found
    rows = numpy.arange(1, len(table) + 1)
    return language_rows(table, str(path), rows, "row", language), found


def repository_files(repo: str, language: str) -> Dict[str, List[Path]]:
    """The files of `language` (every language's for "all") of the MultiNERD hub repository,
    and only those, by split: downloaded into (or taken from) the Hugging Face cache for a hub
    id, or found in a local directory laid out like the repository (e.g. a git clone of it)."""
    names = {split: [] for split in SPLITS}
    for lang in languages_of(language):
        for split, name in hub_files(lang).items():
            names[split].append(name)
    every = [name for split in SPLITS for name in names[split]]
    local = Path(repo)
    if local.is_dir():
        missing = [name for name in every if not (local / name).is_file()]
        if missing:
            raise DataError(
                f"{local}: no {', '.join(missing)}; a copy of the {MULTINERD_HUB_ID} repository "
                f"has {', '.join(every)}."
            )
        return {split: [local / name for name in names[split]] for split in SPLITS}
    reason = hub.use_hub_or_cache()  # before huggingface_hub is imported
    from huggingface_hub import hf_hub_download

    size = {DEFAULT_LANGUAGE: "about 48 MB; ", ALL: "about 480 MB; "}.get(language, "")
    msg.info(
        f"{'Reading from the Hugging Face cache' if reason else 'Downloading'} the "
        f"{LANGUAGE_NAMES[language]} files of {repo}: {', '.join(every)} ({size}no other "
        "language is downloaded)"
    )
    try:
        return {
            split: [Path(hf_hub_download(repo, name, repo_type="dataset")) for name in files]
            for split, files in names.items()
        }
    except Exception as err:  # no network and not cached, a missing repo or file, auth...
        why = (
            f"{reason}, and the files are not in the local cache" if reason else hub.first_line(err)
        )
        raise HubUnavailable(why) from None


def read_split(split: str, paths: List[Path], language: str) -> Sentences:
    """The rows of `language` in a split's hub-schema files, in file order."""
    parts, found = [], {}
    for path in paths:
        sents, counts = read_hub_schema_file(path, language)
        for lang, n in counts.items():
            found[lang] = found.get(lang, 0) + n
        if sents is not None:
            parts.append(sents)
    if not parts:
        raise no_rows(f"split {split!r} ({', '.join(map(str, paths))})", language, found)
    return concat(parts, ", ".join(str(p.where) for p in parts))


def load_hub(
    repo: str = MULTINERD_HUB_ID, language: str = DEFAULT_LANGUAGE
) -> Dict[str, Sentences]:
    """MultiNERD's rows of `language` from the hub (or a local copy of its repository)."""
    files = repository_files(repo, language)
    return {split: read_split(split, paths, language) for split, paths in files.items()}


def language_of_name(path: Path) -> Optional[str]:
    """The MultiNERD language a file's name ends in (train_de.jsonl: de), if any."""
    stem = path.name.lower().split(".", 1)[0]
    code = stem.rsplit("_", 1)[-1] if "_" in stem else ""
    return code if code in MULTINERD_LANGUAGES else None


def by_language(files: Dict[str, List[Path]], language: str, directory: Path):
    """The files of each split whose names end in one of `language`'s codes, when the names
    end in language codes; else all of them (the rows say their language)."""
    named = {p: language_of_name(p) for ps in files.values() for p in ps}
    if not any(named.values()):
        return files
    keep = set(languages_of(language))
    chosen = {split: [p for p in ps if named[p] in keep] for split, ps in files.items()}
    missing = [split for split, ps in chosen.items() if not ps]
    if missing:
        found: Dict[str, int] = {}
        for lang in named.values():
            found[lang or "?"] = found.get(lang or "?", 0) + 1
        raise DataError(
            f"{directory}: no file of {LANGUAGE_NAMES.get(language, language)} rows for split "
            f"{', '.join(missing)} (names ending in _{'/_'.join(sorted(keep))}); the languages "
            f"found, in files: {counts_text(found)}."
        )
    return chosen


def load_hub_schema_dir(directory: Path, language: str) -> Dict[str, Sentences]:
    """Hub-schema files below a directory, split by file name. A copy of the hub repository
    (train/train_en.jsonl ...) is read like the hub: the language's files only. Elsewhere, when
    file names end in a language code (_en, _de, ...), only the language's are read; else every
    file, the language's rows kept."""
    if any((directory / name).is_file() for name in hub_files(DEFAULT_LANGUAGE).values()) or any(
        directory.glob("train/train_*.jsonl")
    ):
        return load_hub(str(directory), language)
    files = by_language(
        split_files(directory, (".jsonl", ".json", ".parquet")), language, directory
    )
    return {split: read_split(split, paths, language) for split, paths in files.items()}


def load_tsv_release(directory: Path, language: str) -> Dict[str, Sentences]:
    """The Babelscape TSV release (train_<language>.tsv, ...): the language's files; files
    whose names carry no language are taken as the language asked for."""
    files = by_language(split_files(directory, (".tsv",)), language, directory)
    out = {}
    for split, paths in files.items():
        parts = []
        for path in paths:
            sents = read_columns(path, "\t", where=f"{path} (split {split!r})")
            lang = language_of_name(path) or language
            if lang == ALL:  # a TSV row does not say its language: its file's name must
                raise DataError(
                    f"{path}: its name carries no language code (train_<code>.tsv ...), and "
                    "language=all needs each row's language."
                )
            sents.languages = pyarrow.array([lang] * len(sents), pyarrow.string())
            parts.append(sents)
        out[split] = concat(parts, ", ".join(p.where for p in parts))
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


def load(dataset: str, source: str, language: str = DEFAULT_LANGUAGE) -> Dict[str, Sentences]:
    check_language(dataset, language)
    if dataset == "multinerd" and source == "hub":
        return load_hub(language=language)
    directory = Path(source)
    if source == "hub" or not directory.is_dir():
        raise DataError(
            f"{source}: not a directory. Set the project var {SOURCE_VAR!r} to the directory "
            f"that holds the {dataset} files"
            + (" (or to 'hub')." if dataset == "multinerd" else ".")
        )
    if dataset == "multinerd":
        if any(directory.rglob("*.tsv")):  # the Babelscape TSV release
            return load_tsv_release(directory, language)
        return load_hub_schema_dir(directory, language)
    if dataset == "conll2003":
        return load_columns_dir(directory, ("eng.train", "eng.testa", "eng.testb", ".gz"), None)
    return load_columns_dir(directory, ("",), None)


def main(
    dataset: str = typer.Argument(..., help=f"One of: {', '.join(DATASETS)}"),
    output_dir: Path = typer.Argument(..., help="Where to write train/dev/test.jsonl"),
    source: str = typer.Option("hub", help="'hub' (multinerd only) or a local directory"),
    language: str = typer.Option(DEFAULT_LANGUAGE, help="The rows' language, or 'all'"),
):
    """Fetch a dataset's splits in one language, validate them and write
    assets/<language>_<dataset>/*.jsonl."""
    if dataset not in DATASETS:
        msg.fail(f"Unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}.", exits=1)
    info = DATASETS[dataset]
    remove_outputs(output_dir)
    try:
        check_language(dataset, language)
        msg.info(
            f"Loading {info.description}, {LANGUAGE_NAMES.get(language, language)}, from {source}"
        )
        splits = load(dataset, source, language)
        for split in SPLITS:
            check_sentences(splits[split], info.types)
        with atomic_write(output_dir, folder=True) as tmp:
            for split in SPLITS:
                write_jsonl(splits[split], tmp / f"{split}.jsonl", languages=language == ALL)
            meta = {
                "dataset": dataset,
                "language": language,
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
        fail_line(str(err))
    for split in SPLITS:
        msg.good(f"{split}: {len(splits[split]):,} sentences -> {output_dir / (split + '.jsonl')}")


if __name__ == "__main__":
    typer.run(main)
