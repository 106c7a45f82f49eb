"""Benchmark the corpus step at the official size of English MultiNERD.

Generates a synthetic set in the hub's schema (tokens, ner_tags, lang; JSON lines) with the
official English split sizes (262,560 / 32,820 / 32,908 sentences), random words, the
official test entity counts (so the official-count check passes) and a like mix in train and
dev, plus non-English rows that must be filtered out. Then times `fetch` (local source) and
`convert` (both schemes), each in its own process, and prints wall time and peak memory.

    python -m benchmarks.bench_convert --repeats 2
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
from tqdm import tqdm

from scripts.labels import DATASETS, MULTINERD_TAGS

TAG_ID = {tag: i for i, tag in enumerate(MULTINERD_TAGS)}
OFFICIAL = DATASETS["multinerd"]
TEST_COUNTS = OFFICIAL.references["test"].entities


def entity_plan(rng: random.Random, n_sentences: int, exact: bool):
    """Entity types to place, by official test proportions; exact counts when `exact`."""
    scale = n_sentences / OFFICIAL.sizes["test"]
    types = []
    for etype, count in TEST_COUNTS.items():
        types += [etype] * (count if exact else round(count * scale))
    rng.shuffle(types)
    plan = [[] for _ in range(n_sentences)]
    for etype in types:
        plan[rng.randrange(n_sentences)].append(etype)
    return plan


def write_split(path: Path, rng, n_english: int, exact: bool, vocab, foreign_share=0.1):
    plan = entity_plan(rng, n_english, exact)
    n_foreign = int(n_english * foreign_share)
    langs = ["en"] * n_english + [rng.choice(["de", "fr", "es", "it"]) for _ in range(n_foreign)]
    order = list(range(len(langs)))
    rng.shuffle(order)
    with open(path, "w", encoding="utf-8") as f:
        for i in tqdm(order, desc=path.name, unit=" rows", leave=False):
            ents = plan[i] if i < n_english else entity_plan(rng, 1, False)[0]
            length = max(4, int(rng.gauss(24, 9)))
            tokens = rng.choices(vocab, k=length)
            tags = [0] * length
            slots = sorted(
                rng.sample(range(0, length, 4), min(len(ents), len(range(0, length, 4))))
            )
            if len(slots) < len(ents):  # a long sentence for many entities
                tokens += rng.choices(vocab, k=4 * (len(ents) - len(slots)))
                tags += [0] * (len(tokens) - len(tags))
                slots = list(range(0, len(tokens), 4))[: len(ents)]
            for start, etype in zip(slots, ents):
                span = rng.choice([1, 1, 2, 3])
                tags[start] = TAG_ID[f"B-{etype}"]
                for j in range(start + 1, min(start + span, start + 3, len(tags))):
                    tags[j] = TAG_ID[f"I-{etype}"]
            f.write(json.dumps({"tokens": tokens, "ner_tags": tags, "lang": langs[i]}) + "\n")


def make_synthetic(directory: Path, seed: int = 0, scale: float = 1.0) -> None:
    """The synthetic set in `directory`, generated unless it is there (a generation cut short
    leaves only a .partial directory beside it)."""
    if directory.exists():
        return
    print(f"Generating the synthetic set in {directory} ...")
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(200_000)] + ["the", "of", ",", ".", "and", "in"] * 20_000
    hub_names = {"train": "train", "dev": "validation", "test": "test"}
    for split, name in hub_names.items():
        n = int(OFFICIAL.sizes[split] * scale)
        write_split(partial / f"{name}_en.jsonl", rng, n, split == "test" and scale == 1.0, vocab)
    partial.rename(directory)


def timed(cmd) -> tuple:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024  # MiB (Linux reports KiB)


def main(
    repeats: int = typer.Option(2, help="Runs of each step; the median is printed"),
    scale: float = typer.Option(1.0, help="Fraction of the official size (1.0 = full)"),
    workdir: Path = typer.Option(None, help="Keep the data here (default: a temp dir)"),
):
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        source, assets, corpus = root / "synthetic", root / "assets", root / "corpus"
        make_synthetic(source, scale=scale)
        env_py = sys.executable
        steps = {
            "fetch (local JSONL, English filter)": [
                env_py,
                "-m",
                "scripts.fetch",
                "multinerd",
                str(assets),
                "--source",
                str(source),
            ],
            "convert (3 splits x 2 schemes)": [
                env_py,
                "-m",
                "scripts.convert",
                "multinerd",
                str(assets),
                str(corpus),
            ],
        }
        results = {name: [] for name in steps}
        for _ in range(repeats):
            for name, cmd in steps.items():
                results[name].append(timed(cmd))
        stats = json.loads((corpus / "multinerd_a" / "stats.json").read_text())["splits"]
        sizes = ", ".join(f"{s} {v['sentences']:,}" for s, v in stats.items())
        tokens = sum(v["tokens"] for v in stats.values())
        print(f"English sentences: {sizes}; tokens: {tokens:,}; runs: {repeats}")
        for name, runs in results.items():
            walls = [w for w, _ in runs]
            mem = max(m for _, m in runs)
            print(
                f"{name}: median wall {statistics.median(walls):.1f}s "
                f"(runs {', '.join(f'{w:.1f}' for w in walls)}), peak RSS {mem:,.0f} MiB"
            )


if __name__ == "__main__":
    typer.run(main)
