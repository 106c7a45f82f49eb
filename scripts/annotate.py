"""Annotate raw text with a trained pipeline, at any size: on one machine, or on a Ray cluster.

Run it as a project command, from the project folder or from anywhere with the project's path:

    spacy project run annotate . --vars.annotate_input=texts/ --vars.annotate_output=annotated/
    spacy project run annotate ~/multinerd-project --vars.annotate_input=texts/ \
        --vars.annotate_model=en_multinerd_a_trf --vars.annotate_format=parquet

Relative paths are read from the folder the command was run in (the project command passes
it as --relative-to); a relative MODEL or INPUT that is not there is read from the project
folder, which holds the defaults (training/<dataset>_a/model-best). From the project folder,
the script also runs alone, with every option:

    python -m scripts.annotate MODEL INPUT OUTPUT [--format jsonl|parquet|spacy]
                               [--engine local|ray] [--n-process 2] [--gpu-id 0] [--errors skip]

MODEL is anything spacy.load takes (training/<name>/model-best, or an installed package).
INPUT is a file or a folder of files (read recursively, in name order):
  .txt      one text a line (blank lines are skipped); its id is "<file>:<line>"
  .jsonl    one JSON object a line with a "text" field (--text-field); the other fields are
            kept as they are; its id is its "id" field, else "<file>:<line>"
  .parquet  a "text" column; the other columns are kept; its id is its "id" column, else
            "<file>:<row>"
OUTPUT is a folder of shards, part-000000.jsonl ... (or .parquet, or .spacy DocBins): each
text's id, its entities (start and end character offsets, label, text) and its other fields.

The input is cut into shards of --shard-size texts (line ranges of a text file, row groups of
a Parquet file), planned from the files alone. Each shard is read, annotated (texts sorted
by length, in batches) and written in one rename, so a run that stops half-way leaves whole
shards only, and a second run skips the shards already written. Memory stays that of one
shard whatever the input's size. --n-process N runs N worker processes on the CPU, each
loading the pipeline once and annotating and writing whole shards.

--engine ray runs the same shards on Ray Data: each Ray actor loads the pipeline once
(`map_batches` with an actor pool), reads its shards' files and writes their outputs itself,
with one GPU an actor when the cluster has GPUs. Without RAY_ADDRESS it starts a local Ray;
with RAY_ADDRESS=ray://head:10001 (or `auto`) it joins that cluster, whose nodes must all
see INPUT, OUTPUT and MODEL (a shared file system; MODEL may be an installed package).

Bad input (an unreadable file, a line that is not JSON, a record without its text, an empty
text, a string that is not Unicode text (a lone surrogate such as "\\ud800"), a text longer
than the pipeline's max_length) stops the run with a message naming file and line
(--errors stop, the default), or is written to OUTPUT/errors/ and skipped, with a count at
the end (--errors skip). Shards already written are kept either way.
"""

import base64
import datetime
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import typer
from wasabi import msg

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}
OUTPUT_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "spacy": ".spacy"}
ERRORS = ("stop", "skip")
ENGINES = ("local", "ray")
CHUNK = 1 << 24
# the project vars that set the options, for messages (`spacy project run annotate`)
VARS = {
    "MODEL": "annotate_model",
    "INPUT": "annotate_input",
    "--format": "annotate_format",
    "--engine": "annotate_engine",
    "--errors": "annotate_errors",
    "--n-process": "annotate_n_process",
    "--actors": "annotate_actors",
    "--gpu-id": "gpu_id",
}


def named(option: str) -> str:
    """An option as the message names it: the script's flag and the project var."""
    return f"{option} (var {VARS[option]})"


class BadInput(ValueError):
    """A bad record or file; the message names the file and the line (or row)."""


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

    def output(self, folder: Path, fmt: str) -> Path:
        return Path(folder) / f"part-{self.index:06d}{OUTPUT_SUFFIX[fmt]}"


@dataclass
class Options:
    fmt: str = "jsonl"
    text_field: str = "text"
    id_field: str = "id"
    errors: str = "stop"
    batch_size: int = 64
    max_length: int = 0  # 0: the pipeline's nlp.max_length


@dataclass
class Record:
    id: str
    text: str
    fields: Dict
    line: int  # its line (txt, jsonl) or row (parquet), 1-based


@dataclass
class ShardResult:
    index: int
    texts: int = 0
    words: int = 0
    errors: int = 0


# --- the plan: which shards the input holds ----------------------------------------------


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


# --- reading one shard -------------------------------------------------------------------


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


# --- annotating and writing one shard ----------------------------------------------------


def entities(doc) -> List[Dict]:
    return [
        {"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text}
        for e in doc.ents
    ]


def annotate_shard(nlp, shard: Shard, out: Path, opts: Options, progress=None) -> ShardResult:
    """Read, annotate and write one shard (its errors first, then the output in one rename).
    With --errors stop, a bad record raises BadInput before anything of the shard is written."""
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


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(shard: Shard, out: Path, opts: Options, records, docs, errors) -> None:
    out = Path(out)
    errors_file = out / "errors" / f"part-{shard.index:06d}.jsonl"
    if errors:
        errors_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            errors_file,
            lambda p: p.write_text(
                "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8"
            ),
        )
    elif errors_file.exists():
        errors_file.unlink()  # from an earlier, interrupted run of this shard
    target = shard.output(out, opts.fmt)
    if opts.fmt == "spacy":
        from spacy.tokens import DocBin

        db = DocBin(store_user_data=True)
        for record, doc in zip(records, docs):
            doc.user_data["id"] = record.id
            doc.user_data["fields"] = json_types(record.fields)
            db.add(doc)
        atomic_write(target, lambda p: p.write_bytes(db.to_bytes()))
        return
    rows = [{"id": r.id, "entities": entities(d), **r.fields} for r, d in zip(records, docs)]
    if opts.fmt == "jsonl":
        atomic_write(
            target,
            lambda p: p.write_text(
                "".join(json.dumps(json_types(row), ensure_ascii=False) + "\n" for row in rows),
                encoding="utf-8",
            ),
        )
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    entity = pa.struct(
        [("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string())]
    )
    entities_column = pa.array([row["entities"] for row in rows], pa.list_(entity))
    try:  # the other fields as Arrow infers them; the entities with their own type
        table = pa.Table.from_pylist(
            [{k: v for k, v in row.items() if k != "entities"} for row in rows]
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise BadInput(
            f"{shard.name}: its fields do not make one Parquet table ({err}); use --format jsonl."
        ) from None
    if not rows:
        table = pa.table({"id": pa.array([], pa.string())})
    table = table.add_column(1, "entities", entities_column)
    atomic_write(target, lambda p: pq.write_table(table, p))


# --- running the plan --------------------------------------------------------------------


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
        "format": opts.fmt,
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
    atomic_write(
        path, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    )


def load_pipeline(model: str, gpu_id: int = -1):
    import spacy

    from scripts import architectures  # noqa: F401  (the trained pipelines' custom layers)

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    return spacy.load(model)


def words_per_second(words: int, started: float) -> str:
    return f"{words / max(time.perf_counter() - started, 1e-9):,.0f} words/s"


def run_local(
    model: str, todo: List[Shard], out: Path, opts: Options, gpu_id: int, total: int
) -> List[ShardResult]:
    """This process, one shard after the other; the progress bar moves with every text."""
    from tqdm import tqdm

    nlp = load_pipeline(model, gpu_id)
    results: List[ShardResult] = []
    started = time.perf_counter()
    words = 0
    with tqdm(total=total, unit=" texts", desc="annotate", smoothing=0.05) as bar:

        def progress(texts, doc_words):
            nonlocal words
            words += doc_words
            bar.update(texts)
            if bar.n % 200 == 0:
                bar.set_postfix_str(words_per_second(words, started), refresh=False)

        for shard in todo:
            results.append(annotate_shard(nlp, shard, out, opts, progress))
            bar.set_postfix_str(words_per_second(words, started))
    return results


def follow(finished: Iterable[Dict], todo: List[Shard], total: int, desc: str) -> List[ShardResult]:
    """Collect the results of shards annotated elsewhere (worker processes, Ray actors) as
    they finish, with a progress bar that moves a shard at a time."""
    from tqdm import tqdm

    sizes = {s.index: s.count for s in todo}
    results: List[ShardResult] = []
    started, words = time.perf_counter(), 0
    with tqdm(total=total, unit=" texts", desc=desc) as bar:
        for row in finished:
            result = ShardResult(
                **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            )
            results.append(result)
            words += result.words
            bar.update(sizes[result.index])
            bar.set_postfix_str(words_per_second(words, started))
    return results


_WORKER: Dict = {}  # a worker process's pipeline and settings (run_processes)


def _worker_init(model: str, out: str, opts: Dict, threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)  # the processes share the cores
    except ImportError:
        pass
    _WORKER.update(nlp=load_pipeline(model), out=Path(out), opts=Options(**opts))


def _worker_run(spec: Dict) -> Dict:
    return asdict(annotate_shard(_WORKER["nlp"], Shard(**spec), _WORKER["out"], _WORKER["opts"]))


def run_processes(
    model: str, todo: List[Shard], out: Path, opts: Options, n_process: int, total: int
) -> List[ShardResult]:
    """n_process worker processes, each loading the pipeline once and annotating and writing
    whole shards, as the Ray actors do. (spaCy's nlp.pipe(n_process=...) sends every doc back
    to the parent process: on 2 cores that ran at 0.81x one process, benchmarks/RESULTS.md.)"""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork and torch's threads do not mix
    threads = max(1, (os.cpu_count() or 1) // n_process)
    with ctx.Pool(n_process, _worker_init, (model, str(out), asdict(opts), threads)) as pool:
        finished = pool.imap_unordered(_worker_run, [asdict(s) for s in todo])
        return follow(finished, todo, total, f"annotate ({n_process} processes)")


class ShardAnnotator:
    """A Ray actor: loads the pipeline once, then annotates and writes the shards it is given."""

    def __init__(self, model: str, out: str, opts: Dict, use_gpu: bool):
        self.nlp = load_pipeline(model, 0 if use_gpu else -1)  # Ray shows each actor its GPU as 0
        self.out = Path(out)
        self.opts = Options(**opts)

    def __call__(self, batch: Dict) -> Dict:
        import numpy

        results = []
        for values in zip(*(batch[k] for k in SHARD_FIELDS)):
            spec = {
                k: (v.item() if hasattr(v, "item") else v) for k, v in zip(SHARD_FIELDS, values)
            }
            results.append(annotate_shard(self.nlp, Shard(**spec), self.out, self.opts))
        return {k: numpy.array([getattr(r, k) for r in results]) for k in RESULT_FIELDS}


SHARD_FIELDS = [f.name for f in Shard.__dataclass_fields__.values()]
RESULT_FIELDS = [f.name for f in ShardResult.__dataclass_fields__.values()]


def run_ray(
    model: str,
    todo: List[Shard],
    out: Path,
    opts: Options,
    actors: int,
    gpus_per_actor: Optional[float],
    total: int,
) -> List[ShardResult]:
    import logging

    import ray

    address = os.environ.get("RAY_ADDRESS")
    # the workers import this package from the copy Ray ships them (a cluster has no checkout)
    runtime_env = {
        "py_modules": [str(ROOT / "scripts")],
        "env_vars": {"TOKENIZERS_PARALLELISM": "false"},
    }
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": runtime_env}
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=max(actors, os.cpu_count() or 1), include_dashboard=False, **quiet)
    try:
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        msg.info(
            f"Ray: {actors} actor(s), {gpus_per_actor:g} GPU each, "
            f"cluster {ray.cluster_resources()}"
        )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([asdict(s) for s in todo], override_num_blocks=max(len(todo), 1))
        annotated = ds.map_batches(
            ShardAnnotator,
            fn_constructor_kwargs={
                "model": model,
                "out": str(Path(out).resolve()),
                "opts": asdict(opts),
                "use_gpu": gpus_per_actor > 0,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            num_gpus=gpus_per_actor,
        )
        return follow(annotated.iter_rows(), todo, total, "annotate (ray)")
    except Exception as err:
        bad = worker_bad_input(err)
        if bad is not None:
            raise bad from None
        raise
    finally:
        ray.shutdown()


def worker_bad_input(err: BaseException) -> Optional[BadInput]:
    """The BadInput that a Ray worker raised, out of the exceptions Ray wraps it in."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BadInput):
            return BadInput(str(e))
        for line in reversed(str(e).splitlines()):  # the worker's traceback, as text
            if "BadInput: " in line:
                return BadInput(line.split("BadInput: ", 1)[1].strip())
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def annotate(
    model: str,
    source: Path,
    out: Path,
    opts: Options,
    *,
    engine: str = "local",
    n_process: int = 1,
    gpu_id: int = -1,
    shard_size: int = 10_000,
    actors: int = 2,
    gpus_per_actor: Optional[float] = None,
    overwrite: bool = False,
) -> Dict:
    """Annotate every shard of SOURCE not yet in OUT; returns the run's summary."""
    files = input_files(source)
    shards, unreadable = plan(files, shard_size, opts.text_field)
    if unreadable and opts.errors == "stop":
        raise BadInput(error_text(unreadable[0]))
    prepare_output(Path(out), fingerprint(model, source, shard_size, opts, files), overwrite)
    if unreadable:  # --errors skip: the files are left out and listed
        (Path(out) / "errors").mkdir(exist_ok=True)
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in unreadable)
        atomic_write(
            Path(out) / "errors" / "unreadable-files.jsonl",
            lambda p: p.write_text(lines, encoding="utf-8"),
        )
    todo = [s for s in shards if not s.output(out, opts.fmt).exists()]
    done = len(shards) - len(todo)
    if done:
        msg.info(f"{done} of {len(shards)} shards are already in {out}: skipped")
    total = sum(s.count for s in todo)
    started = time.perf_counter()
    if not todo:
        results: List[ShardResult] = []
    elif engine == "ray":
        results = run_ray(model, todo, out, opts, actors, gpus_per_actor, total)
    elif n_process > 1:
        results = run_processes(model, todo, out, opts, n_process, total)
    else:
        results = run_local(model, todo, out, opts, gpu_id, total)
    seconds = time.perf_counter() - started  # starting Ray and loading the pipeline included
    error_count = sum(
        len(p.read_text(encoding="utf-8").splitlines())
        for p in (Path(out) / "errors").glob("*.jsonl")
    )
    summary = {
        "shards": len(shards),
        "shards_run": len(results),
        "shards_skipped": done,
        "texts": sum(r.texts for r in results),
        "words": sum(r.words for r in results),
        "seconds": round(seconds, 2),
        "errors": error_count,
        "engine": engine,
    }
    summary["words_per_second"] = (
        round(summary["words"] / seconds, 1) if seconds > 0 and results else None
    )
    atomic_write(
        Path(out) / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n")
    )
    return summary


def find(path: Path, folders: List[Path]) -> Optional[Path]:
    """`path` if absolute, else the first of folders/path that exists; None if none does."""
    if path.is_absolute():
        return path if path.exists() else None
    return next((folder / path for folder in folders if (folder / path).exists()), None)


def resolve_paths(
    model: str, source: Path, out: Path, relative_to: Optional[Path], check_model: bool = True
) -> Tuple[str, Path, Path]:
    """MODEL, INPUT and OUTPUT as absolute paths (MODEL may stay a package name). Relative
    paths are read from `relative_to` (the folder `spacy project run` was started in; default:
    the current folder); a relative MODEL or INPUT that is not there is read from the current
    folder, which under `spacy project run` is the project folder with the defaults."""
    here = Path.cwd()
    base = (here / (relative_to or ".")).resolve()
    folders = list(dict.fromkeys([base, here]))
    looked = " and ".join(str(f) for f in folders)
    found = find(Path(source), folders)
    if found is None:
        raise BadInput(
            f"{named('INPUT')} {str(source)!r}: no such file or folder (looked in {looked})."
        )
    pipeline = find(Path(model), folders)
    if pipeline is not None:
        if not (pipeline / "config.cfg").exists():
            raise BadInput(f"{named('MODEL')} {str(pipeline)!r}: not a spaCy pipeline folder.")
        model = str(pipeline.resolve())
    elif check_model:
        from spacy.util import is_package

        if not is_package(model):
            raise BadInput(
                f"{named('MODEL')} {model!r}: neither a pipeline folder (looked in "
                f"{looked}) nor an installed pipeline package."
            )
    return model, found.resolve(), (base / out).resolve()


def main(
    model: str = typer.Argument(
        ..., help="A pipeline folder or installed package (var annotate_model)"
    ),
    source: Path = typer.Argument(
        ..., help="A .txt/.jsonl/.parquet file or a folder of them (var annotate_input)"
    ),
    out: Path = typer.Argument(..., help="The output folder of shards (var annotate_output)"),
    fmt: str = typer.Option(
        "jsonl", "--format", help="jsonl, parquet or spacy (DocBin); var annotate_format"
    ),
    engine: str = typer.Option(
        "local",
        help="local (one machine) or ray (Ray Data; RAY_ADDRESS to join a cluster); "
        "var annotate_engine",
    ),
    n_process: int = typer.Option(
        1,
        help="local: worker processes on the CPU, each loading the pipeline once and "
        "annotating whole shards; var annotate_n_process",
    ),
    gpu_id: int = typer.Option(-1, help="local: GPU id, -1 for the CPU; var gpu_id"),
    actors: int = typer.Option(
        2, help="ray: actors, each loading the pipeline once; var annotate_actors"
    ),
    gpus_per_actor: Optional[float] = typer.Option(
        None, help="ray: GPUs an actor (default: 1 when the cluster has GPUs, else 0)"
    ),
    shard_size: int = typer.Option(
        10_000, help="Texts a shard (the unit of output, resume and memory)"
    ),
    batch_size: int = typer.Option(64, help="nlp.pipe batch size"),
    text_field: str = typer.Option("text", help="The text's field (jsonl) or column (parquet)"),
    id_field: str = typer.Option("id", help="The id's field or column, when the records have one"),
    errors: str = typer.Option(
        "stop",
        help="Bad input: stop (a message naming file and line) or skip (to OUT/errors/, "
        "counted); var annotate_errors",
    ),
    max_length: int = typer.Option(
        0, help="Longest text in characters (0: the pipeline's max_length)"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start OUT afresh instead of resuming"
    ),
    relative_to: Optional[Path] = typer.Option(
        None,
        help="The folder relative paths are read from (default: the current folder); "
        "`spacy project run annotate` passes the folder it was run in",
    ),
):
    """Annotate raw text with a trained pipeline and write its entities, shard by shard.

    Run it as a project command, from the project folder:
    spacy project run annotate . --vars.annotate_input=texts/
    or from any folder, with the project's path in place of "." (docs/annotate.md).
    From the project folder, python -m scripts.annotate MODEL INPUT OUTPUT also works.
    """
    for value, allowed, name in (
        (fmt, OUTPUT_SUFFIX, "--format"),
        (engine, ENGINES, "--engine"),
        (errors, ERRORS, "--errors"),
    ):
        if value not in allowed:
            msg.fail(f"{named(name)} must be one of {', '.join(allowed)}, not {value!r}.", exits=1)
    for value, name in ((n_process, "--n-process"), (actors, "--actors")):
        if value < 1:
            msg.fail(f"{named(name)} must be at least 1, not {value}.", exits=1)
    if shard_size < 1:
        msg.fail(f"--shard-size must be at least 1, not {shard_size}.", exits=1)
    if engine == "local" and gpu_id >= 0 and n_process > 1:
        msg.fail(
            f"{named('--n-process')} above 1 runs on the CPU: set {named('--gpu-id')} to -1, or "
            "use one process on the GPU.",
            exits=1,
        )
    try:
        # the nodes of a cluster may have a pipeline package that the driver has not
        on_cluster = engine == "ray" and bool(os.environ.get("RAY_ADDRESS"))
        model, source, out = resolve_paths(model, source, out, relative_to, not on_cluster)
    except BadInput as err:
        msg.fail(str(err), exits=1)
    if engine == "local" and gpu_id >= 0:
        from .check_gpu import require

        require(gpu_id)
    opts = Options(fmt, text_field, id_field, errors, batch_size, max_length)
    try:
        summary = annotate(
            model,
            source,
            out,
            opts,
            engine=engine,
            n_process=n_process,
            gpu_id=gpu_id,
            shard_size=shard_size,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            overwrite=overwrite,
        )
    except BadInput as err:
        msg.fail(
            str(err),
            "Shards written before this are kept; the next run resumes after them."
            if (Path(out) / "manifest.json").exists()
            else "",
            exits=1,
        )
    rate = f", {summary['words_per_second']:,.0f} words/s" if summary["words_per_second"] else ""
    msg.good(
        f"{summary['texts']:,} texts, {summary['words']:,} words in {summary['seconds']:.1f}s "
        f"(start-up included){rate} -> {out}"
    )
    if summary["errors"]:
        msg.warn(f"{summary['errors']:,} bad records skipped: see {Path(out) / 'errors'}")


if __name__ == "__main__":
    typer.run(main)
