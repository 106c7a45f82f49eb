"""Benchmark `scripts/annotate.py` on a corpus of at least 100,000 sentences: one process,
nlp.pipe with n_process=2, and local Ray with 2 actors, each run in its own process tree.

The corpus is the CoNLL-2003 sentences (assets/conll2003/*.jsonl, tokens joined by spaces)
repeated to --sentences, written as --files text files (so that Ray reads files in
parallel). Each system annotates it from scratch (--overwrite); the figures are wall time
(start-up included: Ray, the pipeline loads), words/s over that wall time, and the peak
resident memory summed over the process tree (sampled every 0.2 s; Ray's shared object store
is counted in each process that maps it, so its figure is an upper bound). One more run
annotates a quarter of the corpus in one process: its peak memory against the full corpus's
shows whether memory stays flat as the input grows. The outputs of all systems must be the
same, shard for shard.

    python -m benchmarks.bench_annotate --model training/en_conll2003_a_cnn/model-best --repeats 2
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import typer

from benchmarks.common import (
    CORPUS_STEP,
    ROOT,
    child_env,
    child_failed,
    require_inputs,
    require_pipeline,
    wait_peak_rss,
)

SYSTEMS = {
    "one process": ["--engine", "local", "--n-process", "1"],
    "n_process=2": ["--engine", "local", "--n-process", "2"],
    "ray, 2 actors": ["--engine", "ray", "--actors", "2"],
}


def slug(name: str) -> str:
    return "out-" + "".join(c if c.isalnum() else "-" for c in name)


def conll_sentences(assets: Path) -> List[str]:
    texts = []
    for split in ("train", "dev", "test"):
        for line in (assets / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            texts.append(" ".join(json.loads(line)["tokens"]))
    return texts


def write_corpus(texts: List[str], sentences: int, files: int, folder: Path) -> int:
    """`sentences` texts (the corpus repeated) in `files` text files; returns their words."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.txt"):
        old.unlink()
    per_file = -(-sentences // files)
    words = 0
    for f in range(files):
        with open(folder / f"part-{f:02d}.txt", "w", encoding="utf-8") as out:
            for i in range(f * per_file, min(sentences, (f + 1) * per_file)):
                text = texts[i % len(texts)]
                out.write(text + "\n")
                words += text.count(" ") + 1
    return words


def run(model: str, corpus: Path, out: Path, args: List[str], shard_size: int) -> Dict:
    cmd = [
        sys.executable,
        "-m",
        "scripts.annotate",
        model,
        str(corpus),
        str(out),
        "--shard-size",
        str(shard_size),
        "--overwrite",
        *args,
    ]
    log = out.parent / f"{out.name}.log"  # a file, not a pipe: the progress bar would fill a pipe
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env(), stdout=sink, stderr=subprocess.STDOUT
        )
        peak = wait_peak_rss(proc, interval=0.2)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        child_failed(cmd, log)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": wall,
        "words": summary["words"],
        "texts": summary["texts"],
        "words_per_s": summary["words"] / wall,
        "peak_rss_mib": peak / 2**20,
    }


def same_outputs(a: Path, b: Path) -> bool:
    parts = sorted(p.name for p in a.glob("part-*"))
    return parts == sorted(p.name for p in b.glob("part-*")) and all(
        (a / p).read_bytes() == (b / p).read_bytes() for p in parts
    )


def main(
    model: str = typer.Option(
        str(ROOT / "training" / "en_conll2003_a_cnn" / "model-best"), help="A trained pipeline"
    ),
    assets: Path = typer.Option(
        ROOT / "assets" / "en_conll2003", help="CoNLL-2003 as `fetch` writes it"
    ),
    sentences: int = typer.Option(100_000, help="Corpus size (the CoNLL sentences repeated)"),
    files: int = typer.Option(4),
    shard_size: int = typer.Option(5_000),
    repeats: int = typer.Option(2),
    work: Path = typer.Option(ROOT / "benchmarks" / "runs" / "annotate"),
    output: Path = typer.Option(ROOT / "benchmarks" / "runs" / "annotate.json"),
):
    """Annotate the corpus with each system, twice; print and save words/s and peak memory."""
    import os
    import platform
    from importlib.util import find_spec

    require_pipeline(
        model,
        "Train the CoNLL-2003 System A with `python -m spacy project run all . "
        "--vars.dataset=conll2003 --vars.source=<your CoNLL-2003 directory> --vars.config=cnn "
        "--vars.gpu_id=-1 --vars.mixed_precision=false` (benchmarks/RESULTS.md), or give --model.",
    )
    require_inputs([assets / f"{split}.jsonl" for split in ("train", "dev", "test")], CORPUS_STEP)
    if find_spec("ray") is None:
        sys.exit("Ray is not installed: pip install -r requirements-ray.txt")
    texts = conll_sentences(assets)
    words = write_corpus(texts, sentences, files, work / "corpus")
    quarter = write_corpus(texts, sentences // 4, files, work / "corpus-quarter")
    print(
        f"{sentences:,} sentences, {words:,} words in {files} files (CoNLL-2003's {len(texts):,} "
        f"sentences repeated); model {model}; {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    results: Dict[str, List[Dict]] = {name: [] for name in SYSTEMS}
    results["one process, quarter corpus"] = []
    for repeat in range(repeats):
        for name, args in SYSTEMS.items():
            r = run(model, work / "corpus", work / slug(name), args, shard_size)
            results[name].append(r)
            print(
                f"run {repeat + 1} {name:>14}: {r['wall_s']:7.1f} s, "
                f"{r['words_per_s']:9,.0f} words/s, "
                f"peak {r['peak_rss_mib']:7,.0f} MiB"
            )
        r = run(
            model, work / "corpus-quarter", work / "out-quarter", SYSTEMS["one process"], shard_size
        )
        results["one process, quarter corpus"].append(r)
        print(
            f"run {repeat + 1}  quarter corpus: {r['wall_s']:7.1f} s, "
            f"peak {r['peak_rss_mib']:7,.0f} MiB"
        )
    outs = [work / slug(n) for n in SYSTEMS]
    same = all(same_outputs(outs[0], o) for o in outs[1:])
    base = statistics.median(r["words_per_s"] for r in results["one process"])
    print(f"\nmedian of {repeats} ({sentences:,} sentences; wall time includes start-up)")
    print(f"{'system':>28} {'words/s':>9} {'x one process':>14} {'peak MiB':>9}")
    table = {}
    for name, runs in results.items():
        rate = statistics.median(r["words_per_s"] for r in runs)
        peak = statistics.median(r["peak_rss_mib"] for r in runs)
        table[name] = {
            "words_per_s": rate,
            "ratio": rate / base,
            "peak_rss_mib": peak,
            "runs": runs,
        }
        print(f"{name:>28} {rate:9,.0f} {rate / base:14.2f} {peak:9,.0f}")
    print(f"outputs of all systems identical, shard for shard: {same}")
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "sentences": sentences,
        "words": words,
        "quarter_words": quarter,
        "files": files,
        "shard_size": shard_size,
        "model": model,
        "repeats": repeats,
        "identical_outputs": same,
    }
    output.write_text(json.dumps({"meta": meta, "systems": table}, indent=2) + "\n")
    if not same:
        raise SystemExit("the systems' outputs differ")


if __name__ == "__main__":
    typer.run(main)
