"""annotate's unit of work, the shard: the plan of shards (from the input files alone), the
manifest that a resumed run must agree with, and one shard read, annotated and written, its
output in one rename (docs/annotate.md#shards-resuming-speed)."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .annotate_formats import FORMATS
from .annotate_input import (
    SUFFIXES,
    BadInput,
    Options,
    Record,
    Shard,
    check_text,
    error,
    error_text,
    read_shard,
)
from .corpus import atomic_write, write_json

CHUNK = 1 << 24


@dataclass
class ShardResult:
    index: int
    texts: int = 0
    words: int = 0
    errors: int = 0
    # the message of the bad record that stopped the shard (--errors stop) in a worker process
    # or a Ray actor, for the main process to raise; empty when the shard was written
    stopped: str = ""


# --- the plan: which shards the input holds ----------------------------------------------


def line_starts(path: Path, every: int) -> Tuple[List[int], int]:
    """Byte offsets of lines 0, every, 2*every, ... and the number of lines (a last line
    without a newline counts), from one pass over the bytes."""
    starts, lines, position, last = [0], 0, 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            newlines = chunk.count(b"\n")
            at = -1
            while lines + newlines >= len(starts) * every:  # a shard starts in this chunk
                for _ in range(len(starts) * every - lines):
                    at = chunk.find(b"\n", at + 1)
                newlines -= len(starts) * every - lines
                lines = len(starts) * every
                starts.append(position + at + 1)
            lines += newlines
            position += len(chunk)
            last = chunk[-1:]
    if last != b"\n":
        lines += 1  # a final line without a newline
    if starts[-1] >= position and len(starts) > 1:
        starts.pop()  # no line starts at the end of the file
    return starts, lines


def plan(
    files: List[Tuple[Path, str]], shard_size: int, text_field: str = "text"
) -> Tuple[List[Shard], List[Dict]]:
    """The shards of the input files, and the files that cannot be read (as error records)."""
    import pyarrow.parquet as pq

    shards: List[Shard] = []
    unreadable: List[Dict] = []
    for path, name in files:
        kind = SUFFIXES[path.suffix]
        try:
            if kind == "parquet":
                parquet = pq.ParquetFile(path)
                if text_field not in parquet.schema_arrow.names:
                    columns = ", ".join(parquet.schema_arrow.names)
                    unreadable.append(
                        {
                            "file": name,
                            "line": None,
                            "problem": f"no column {text_field!r} (columns: {columns})",
                        }
                    )
                    continue
                meta = parquet.metadata
                row = group = 0
                while group < meta.num_row_groups:
                    first_group, rows = group, 0
                    while group < meta.num_row_groups and (
                        rows == 0 or rows + meta.row_group(group).num_rows <= shard_size
                    ):
                        rows += meta.row_group(group).num_rows
                        group += 1
                    shards.append(
                        Shard(
                            len(shards),
                            str(path),
                            name,
                            kind,
                            row,
                            rows,
                            first_group,
                            group - first_group,
                        )
                    )
                    row += rows
            else:
                starts, lines = line_starts(path, shard_size)
                for i, offset in enumerate(starts):
                    count = min(shard_size, lines - i * shard_size)
                    if count > 0:
                        shards.append(
                            Shard(len(shards), str(path), name, kind, i * shard_size, count, offset)
                        )
        except Exception as err:  # permissions, a broken Parquet footer...
            unreadable.append(
                {
                    "file": name,
                    "line": None,
                    "problem": f"cannot read the file ({type(err).__name__}: {err})",
                }
            )
    return shards, unreadable


# --- the output folder: its manifest, and one file of it written whole --------------------


def output_file(out: Path, shard: Shard, fmt: str) -> Path:
    return Path(out) / f"part-{shard.index:06d}{FORMATS[fmt].suffix}"


def write_json_lines(path: Path, items: List[Dict]) -> None:
    with atomic_write(path) as tmp:
        lines = (json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        tmp.write_text("".join(lines), encoding="utf-8")


def fingerprint(model: str, source: Path, shard_size: int, opts: Options, files) -> Dict:
    """What a finished shard depends on: a second run must agree to reuse it."""
    listed = [
        {"file": name, "bytes": path.stat().st_size, "modified": int(path.stat().st_mtime)}
        for path, name in files
    ]
    return {
        "model": model,
        "input": str(Path(source).resolve()),
        "files": listed,
        "shard_size": shard_size,
        **FORMATS[opts.fmt].fingerprint,
        "text_field": opts.text_field,
        "id_field": opts.id_field,
        "max_length": opts.max_length,
    }


def prepare_output(out: Path, manifest: Dict, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    if path.exists() and not overwrite:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(
            k for k in set(earlier) | set(manifest) if earlier.get(k) != manifest.get(k)
        )
        if differ:
            raise BadInput(
                f"{out} holds a run with other settings ({', '.join(differ)} differ): use another "
                "output folder, or --overwrite to start it afresh."
            )
    for stale in list(out.glob(".part-*.tmp-*")) + list((out / "errors").glob(".part-*.tmp-*")):
        stale.unlink()  # a worker killed while writing (Ctrl-C, a stopped pool or cluster)
    if overwrite:
        for part in (
            list(out.glob("part-*"))
            + list((out / "errors").glob("*.jsonl"))
            + [out / "summary.json"]
        ):
            if part.exists():
                part.unlink()
    write_json(path, manifest)


# --- one shard ---------------------------------------------------------------------------


def annotate_shard(
    nlp, shard: Shard, out: Path, opts: Options, progress: Optional[Callable] = None
) -> ShardResult:
    """Read, annotate and write one shard (its errors first, then the output in one rename);
    progress(texts, words) after each text. With --errors stop, a bad record raises BadInput
    before anything of the shard is written."""
    max_length = opts.max_length or nlp.max_length
    records: List[Record] = []
    errors: List[Dict] = []
    for record, bad in read_shard(shard, opts):
        if record is not None:
            problem = check_text(record, max_length)
            if problem:
                bad, record = error(shard, record.line, problem), None
        if bad is not None:
            if opts.errors == "stop":
                raise BadInput(error_text(bad))
            errors.append(bad)
        else:
            records.append(record)
    if progress is not None and shard.count > len(records):
        progress(shard.count - len(records), 0)  # blank lines and skipped records
    order = sorted(range(len(records)), key=lambda i: len(records[i].text))  # batches by length
    docs: List = [None] * len(records)
    texts = (records[i].text for i in order)
    for i, doc in zip(order, nlp.pipe(texts, batch_size=opts.batch_size)):
        docs[i] = doc
        if progress is not None:
            progress(1, len(doc))
    write_shard(shard, out, opts, records, docs, errors)
    return ShardResult(shard.index, len(records), sum(len(d) for d in docs), len(errors))


def write_shard(shard: Shard, out: Path, opts: Options, records, docs, errors) -> None:
    errors_file = Path(out) / "errors" / f"part-{shard.index:06d}.jsonl"
    if errors:
        write_json_lines(errors_file, errors)
    elif errors_file.exists():
        errors_file.unlink()  # from an earlier, interrupted run of this shard
    with atomic_write(output_file(out, shard, opts.fmt)) as tmp:
        FORMATS[opts.fmt].write(tmp, shard.name, records, docs)
