"""Annotate raw text with a trained pipeline, at any size: the command line and annotate().
docs/annotate.md says how to run it, what it reads and writes, where relative paths are read
from, and how it runs on Ray. Its parts: annotate_input.py (the records of the input files),
annotate_shards.py (the plan of shards, the manifest, one shard), annotate_formats.py (the
output formats, one table) and annotate_engines.py (one process, N processes, Ray).
"""

import os
import time
from enum import Enum
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from wasabi import msg

from .annotate_engines import run_local, run_processes, run_ray
from .annotate_formats import FORMATS
from .annotate_input import BadInput, Options, error_text, input_files
from .annotate_shards import (
    ShardResult,
    fingerprint,
    output_file,
    plan,
    prepare_output,
    write_json,
    write_json_lines,
)

OutputFormat = Enum("OutputFormat", {name: name for name in FORMATS}, type=str)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class OnBadInput(str, Enum):
    stop = "stop"
    skip = "skip"


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
        write_json_lines(Path(out) / "errors" / "unreadable-files.jsonl", unreadable)
    todo = [s for s in shards if not output_file(out, s, opts.fmt).exists()]
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
    write_json(Path(out) / "summary.json", summary)
    return summary


def candidates(path: str, relative_to: Optional[Path]) -> List[Path]:
    """Where a relative path is read from, in order: the folder the command was run in
    (`relative_to`; default: the current folder), then the current folder, which under
    `spacy project run` is the project folder. The rule: docs/annotate.md#paths."""
    return list(dict.fromkeys((Path(f) / path).resolve() for f in (relative_to or ".", ".")))


def resolve_paths(
    model: str, source: str, out: str, relative_to: Optional[Path], check_model: bool = True
) -> Tuple[str, Path, Path]:
    """MODEL, INPUT and OUTPUT as absolute paths (MODEL may stay a package name); BadInput,
    naming the project var, for an INPUT or MODEL that is not there."""
    inputs, pipelines = candidates(source, relative_to), candidates(model, relative_to)
    found = next((p for p in inputs if p.exists()), None)
    if found is None:
        looked = " and ".join(map(str, inputs))
        raise BadInput(
            f"INPUT (var annotate_input) {source!r}: no such file or folder (looked for {looked})."
        )
    pipeline = next((p for p in pipelines if p.exists()), None)
    if pipeline is not None:
        if not (pipeline / "config.cfg").exists():
            raise BadInput(
                f"MODEL (var annotate_model) {str(pipeline)!r}: not a spaCy pipeline folder."
            )
        model = str(pipeline)
    elif check_model:
        from spacy.util import is_package

        if not is_package(model):
            looked = " and ".join(map(str, pipelines))
            raise BadInput(
                f"MODEL (var annotate_model) {model!r}: neither a pipeline folder (looked for "
                f"{looked}) nor an installed pipeline package."
            )
    return model, found, candidates(out, relative_to)[0]


def main(
    model: str = typer.Argument(
        ..., help="A pipeline folder or installed package (var annotate_model)"
    ),
    source: str = typer.Argument(
        ..., help="A .txt/.jsonl/.parquet file or a folder of them (var annotate_input)"
    ),
    out: str = typer.Argument(..., help="The output folder of shards (var annotate_output)"),
    fmt: OutputFormat = typer.Option(
        "jsonl", "--format", help="The output format (spacy: DocBins); var annotate_format"
    ),
    engine: Engine = typer.Option(
        "local",
        help="local (one machine) or ray (Ray Data; RAY_ADDRESS to join a cluster); "
        "var annotate_engine",
    ),
    n_process: int = typer.Option(
        1,
        min=1,
        help="local: worker processes on the CPU, each loading the pipeline once and "
        "annotating whole shards; var annotate_n_process",
    ),
    gpu_id: int = typer.Option(-1, help="local: GPU id, -1 for the CPU; var gpu_id"),
    actors: int = typer.Option(
        2, min=1, help="ray: actors, each loading the pipeline once; var annotate_actors"
    ),
    gpus_per_actor: Optional[float] = typer.Option(
        None, help="ray: GPUs an actor (default: 1 when the cluster has GPUs, else 0)"
    ),
    shard_size: int = typer.Option(
        10_000, min=1, help="Texts a shard (the unit of output, resume and memory)"
    ),
    batch_size: int = typer.Option(64, help="nlp.pipe batch size"),
    text_field: str = typer.Option("text", help="The text's field (jsonl) or column (parquet)"),
    id_field: str = typer.Option("id", help="The id's field or column, when the records have one"),
    errors: OnBadInput = typer.Option(
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
    """Annotate raw text with a trained pipeline and write its entities, shard by shard
    (docs/annotate.md)."""
    if engine is Engine.local and gpu_id >= 0 and n_process > 1:
        msg.fail(
            "--n-process (var annotate_n_process) above 1 runs on the CPU: set --gpu-id "
            "(var gpu_id) to -1, or use one process on the GPU.",
            exits=1,
        )
    try:
        # the nodes of a cluster may have a pipeline package that the driver has not
        on_cluster = engine is Engine.ray and bool(os.environ.get("RAY_ADDRESS"))
        model, found, out_dir = resolve_paths(model, source, out, relative_to, not on_cluster)
    except BadInput as err:
        msg.fail(str(err), exits=1)
    if engine is Engine.local and gpu_id >= 0:
        from .check_gpu import require

        require(gpu_id)
    opts = Options(fmt.value, text_field, id_field, errors.value, batch_size, max_length)
    try:
        summary = annotate(
            model,
            found,
            out_dir,
            opts,
            engine=engine.value,
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
            if (out_dir / "manifest.json").exists()
            else "",
            exits=1,
        )
    rate = f", {summary['words_per_second']:,.0f} words/s" if summary["words_per_second"] else ""
    msg.good(
        f"{summary['texts']:,} texts, {summary['words']:,} words in {summary['seconds']:.1f}s "
        f"(start-up included){rate} -> {out_dir}"
    )
    if summary["errors"]:
        msg.warn(f"{summary['errors']:,} bad records skipped: see {out_dir / 'errors'}")


if __name__ == "__main__":
    typer.run(main)
