"""annotate's input: which files it reads (.txt, .jsonl, .parquet), and the records of one shard
of them, each good one with its id and fields, each bad one as an error record naming file and
line. docs/annotate.md#input-and-output says what each type holds."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}


class BadInput(ValueError):
    """A bad record or file; the message names the file and the line (or row)."""


@dataclass
class Options:
    """What a run's shards depend on besides the pipeline and the input."""

    fmt: str = "jsonl"
    text_field: str = "text"
    id_field: str = "id"
    errors: str = "stop"
    batch_size: int = 64
    max_length: int = 0  # 0: the pipeline's nlp.max_length


@dataclass(frozen=True)
class Shard:
    """Records [start, start + count) of one input file: lines of a text file (from byte
    `offset`), or row groups [offset, offset + groups) of a Parquet file."""

    index: int
    path: str
    name: str  # the file as ids name it: relative to the input folder
    kind: str
    start: int  # 0-based: the first line (txt, jsonl) or row (parquet)
    count: int
    offset: int
    groups: int = 0


@dataclass
class Record:
    id: str
    text: str
    fields: Dict
    line: int  # its line (txt, jsonl) or row (parquet), 1-based


def input_files(source: Path) -> List[Tuple[Path, str]]:
    """(file, the name ids give it) for a file, or every known file below a folder."""
    source = Path(source)
    if source.is_file():
        if source.suffix not in SUFFIXES:
            raise BadInput(f"{source}: unknown input type; use {', '.join(SUFFIXES)} files.")
        return [(source, source.name)]
    if not source.is_dir():
        raise BadInput(f"{source}: no such file or folder.")
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise BadInput(f"{source}: no {', '.join(SUFFIXES)} files in the folder.")
    return [(p, str(p.relative_to(source))) for p in files]


def read_shard(shard: Shard, opts: Options) -> Iterator[Tuple[Optional[Record], Optional[Dict]]]:
    """The shard's records in order: (record, None), or (None, error) for a bad one."""
    if shard.kind == "parquet":
        yield from read_parquet_shard(shard, opts)
        return
    with open(shard.path, "rb") as f:
        f.seek(shard.offset)
        for i in range(shard.count):
            raw = f.readline()
            line = shard.start + i + 1
            try:
                text_line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield None, error(shard, line, f"not UTF-8 (byte 0x{raw[err.start]:02x})")
                continue
            if not text_line.strip():
                continue  # a blank line holds no text: skipped, the other lines keep their number
            if shard.kind == "txt":
                yield Record(f"{shard.name}:{line}", text_line, {}, line), None
                continue
            try:
                row = json.loads(text_line)
            except json.JSONDecodeError as err:
                yield None, error(shard, line, f"not valid JSON ({err.msg})")
                continue
            # only a \u escape can put a lone surrogate into a string of valid UTF-8 JSON
            yield record_from_row(row, shard, line, opts, escaped="\\u" in text_line)


def read_parquet_shard(shard: Shard, opts: Options):
    import pyarrow.parquet as pq

    table = pq.ParquetFile(shard.path).read_row_groups(
        range(shard.offset, shard.offset + shard.groups)
    )
    for i, row in enumerate(table.to_pylist()):
        number = shard.start + i + 1
        yield record_from_row(row, shard, number, opts)


def lone_surrogate(value, field: str = "") -> Optional[Tuple[str, str]]:
    """(field, character) of the first string in a JSON value that holds a lone surrogate:
    valid JSON ("\\ud800"), but no Unicode text, and no encoding can write it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return field, value[err.start]
    elif isinstance(value, dict):
        for key, item in value.items():
            found = lone_surrogate(key, field) or lone_surrogate(item, f"{field}.{key}".lstrip("."))
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = lone_surrogate(item, field)
            if found:
                return found
    return None


def record_from_row(row, shard: Shard, line: int, opts: Options, escaped: bool = False):
    if not isinstance(row, dict):
        return None, error(shard, line, "not a JSON object")
    if opts.text_field not in row:
        return None, error(shard, line, f"no {opts.text_field!r} field")
    text = row[opts.text_field]
    if not isinstance(text, str):
        return None, error(
            shard, line, f"{opts.text_field!r} is not a string ({type(text).__name__})"
        )
    surrogate = lone_surrogate(row) if escaped else None
    if surrogate:
        field, char = surrogate
        where = f"field {field!r}" if field else "a field name"
        return None, error(
            shard,
            line,
            f"{where} holds a lone surrogate (\\u{ord(char):04x}): not a Unicode character, so "
            "the record can be neither annotated nor written",
        )
    fields = {k: v for k, v in row.items() if k != opts.text_field}
    own_id = fields.get(opts.id_field)
    rid = str(own_id) if own_id is not None else f"{shard.name}:{line}"
    fields.pop(opts.id_field, None)
    return Record(rid, text, fields, line), None


def error(shard: Shard, line: int, problem: str) -> Dict:
    """An error record: the file, its line (or row, for Parquet) and the problem."""
    return {
        "file": shard.name,
        "row" if shard.kind == "parquet" else "line": line,
        "problem": problem,
    }


def error_text(err: Dict) -> str:
    where = (
        err["file"]
        + (f", line {err['line']}" if err.get("line") else "")
        + (f", row {err['row']}" if err.get("row") else "")
    )
    return f"{where}: {err['problem']}"


def check_text(record: Record, max_length: int) -> Optional[str]:
    if not record.text.strip():
        return "empty text"
    if len(record.text) > max_length:
        return (
            f"the text has {len(record.text):,} characters, more than the pipeline's max_length "
            f"({max_length:,}); split it, or raise --max-length"
        )
    return None
