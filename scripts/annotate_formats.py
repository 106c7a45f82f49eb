"""annotate's output formats, one entry each in FORMATS: a shard's file suffix, how a shard is
written, and what of the format goes into the run's fingerprint. A format is added or changed
here and nowhere else; docs/annotate.md#input-and-output describes what each one holds."""

import base64
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

from .annotate_input import BadInput, Record


@dataclass(frozen=True)
class Format:
    suffix: str
    # write(file, the shard's input file as ids name it, its records, their docs)
    write: Callable[[Path, str, List[Record], List], None]
    # what a shard in this format depends on, beside the run's settings: a run that differs
    # is refused instead of resumed (a writer whose output changes adds a version here)
    fingerprint: Dict


def entities(doc) -> List[Dict]:
    return [
        {"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text}
        for e in doc.ents
    ]


def json_types(value):
    """A Parquet field in JSON's types, for the JSON-lines and DocBin outputs: dates and times
    as ISO 8601 text, bytes as base64 text, decimals and anything else as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_types(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def rows(records: List[Record], docs: List) -> List[Dict]:
    """Each text's id, its entities and its other fields."""
    return [{"id": r.id, "entities": entities(d), **r.fields} for r, d in zip(records, docs)]


def write_jsonl(path: Path, name: str, records: List[Record], docs: List) -> None:
    lines = (json.dumps(json_types(row), ensure_ascii=False) + "\n" for row in rows(records, docs))
    path.write_text("".join(lines), encoding="utf-8")


def write_parquet(path: Path, name: str, records: List[Record], docs: List) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    entity = pa.struct(
        [("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string())]
    )
    shard_rows = rows(records, docs)
    entities_column = pa.array([row["entities"] for row in shard_rows], pa.list_(entity))
    try:  # the other fields as Arrow infers them; the entities with their own type
        table = pa.Table.from_pylist(
            [{k: v for k, v in row.items() if k != "entities"} for row in shard_rows]
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise BadInput(
            f"{name}: its fields do not make one Parquet table ({err}); use --format jsonl."
        ) from None
    if not shard_rows:
        table = pa.table({"id": pa.array([], pa.string())})
    pq.write_table(table.add_column(1, "entities", entities_column), path)


def write_docbin(path: Path, name: str, records: List[Record], docs: List) -> None:
    """spaCy's DocBin, each text's id and other fields in doc.user_data."""
    from spacy.tokens import DocBin

    db = DocBin(store_user_data=True)
    for record, doc in zip(records, docs):
        doc.user_data["id"] = record.id
        doc.user_data["fields"] = json_types(record.fields)
        db.add(doc)
    path.write_bytes(db.to_bytes())


FORMATS = {
    "jsonl": Format(".jsonl", write_jsonl, {"format": "jsonl"}),
    "parquet": Format(".parquet", write_parquet, {"format": "parquet"}),
    "spacy": Format(".spacy", write_docbin, {"format": "spacy"}),
}
