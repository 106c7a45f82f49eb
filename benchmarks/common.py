"""What the benchmark scripts share: the project root, the checks of their inputs (each stops
with one line that names what is missing and how to make it), their child processes (their
environment, their logs, and one line when one fails), the memory of a process tree, a
measure of how fast the machine is right now, `spacy train` with the batch timer, the step
rate from its batch log, and the synthetic MultiNERD of the official size."""

import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, List, NoReturn, Optional, Sequence, Tuple

from tqdm import tqdm

from scripts.labels import DATASETS, MULTINERD_TAGS

ROOT = Path(__file__).resolve().parent.parent
CORPUS_STEP = (
    "Make it with `python -m spacy project run corpus . --vars.dataset=conll2003 "
    "--vars.source=<your CoNLL-2003 directory>` (docs/benchmarks.md)."
)


def machine() -> str:
    """CPU model, cores, memory and the versions that matter, as a user would name them."""
    from importlib.metadata import version

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; Python {platform.python_version()}, "
        f"spaCy {version('spacy')}, spacy-transformers {version('spacy-transformers')}, "
        f"torch {version('torch')}"
    )


def require_inputs(paths: Iterable[Path], how: str) -> None:
    """Stop with one line at the first input that is missing: its path and `how` to make it."""
    for path in paths:
        if not Path(path).exists():
            sys.exit(f"{path}: not found. {how}")


def require_pipeline(model: str, how: str) -> None:
    """Stop with one line unless `model` is a pipeline directory or an installed package."""
    from spacy.util import is_package

    if not Path(model).exists() and not is_package(model):
        sys.exit(f"{model}: no such pipeline directory or installed package. {how}")


def needs_encoder(config: Path) -> bool:
    """Whether a training config reads the pretrained encoder (`${paths.transformer}`)."""
    return "${paths.transformer}" in config.read_text(encoding="utf-8")


def encoder_dir(package: Optional[str]) -> Optional[Path]:
    """The model directory of an installed encoder package (None for None); stops with one line
    that names the install when the package is missing."""
    from scripts.encoder import resolve

    if package is None:
        return None
    try:
        return resolve(package)
    except LookupError as err:
        sys.exit(str(err))


def child_env(**extra: str) -> dict:
    """The environment of a benchmark's child process: the hub offline (the backbone is a
    local directory), quiet tokenizers, and the project in front of the caller's PYTHONPATH
    (kept: it may hold the installed packages)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(
        os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=path, **extra
    )


LOGS = ROOT / "benchmarks" / "runs" / "logs"  # child processes' logs, where no run folder is


def run_child(cmd: Sequence, log: Path, **options) -> None:
    """Run a benchmark's child process in the project root, its output (stdout and stderr)
    written to `log`; stop with one line if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as sink:
        done = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, **options)
    if done.returncode != 0:
        child_failed(cmd, log)


def child_failed(cmd: Sequence, log: Path) -> NoReturn:
    """Stop the benchmark with one line: the child's command, and where its output is."""
    sys.exit(f"{shlex.join(map(str, cmd))} failed: its output is in {log}")


def tree_rss(process) -> int:
    """Resident bytes of a process (a psutil.Process) and all its descendants."""
    import psutil

    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def wait_peak_rss(proc, interval: float = 0.1) -> int:
    """Wait for a subprocess.Popen to end, sampling the resident memory of its process tree;
    the peak, in bytes."""
    import psutil

    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            pass
        time.sleep(interval)
    return peak


def linear_gflops(rows: int, n_in: int, n_out: int, seconds: float = 0.5) -> float:
    """GFLOP/s of one torch.nn.Linear(n_in, n_out) on a (rows, n_in) input, no grad."""
    import torch

    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(rows, n_in)
    with torch.no_grad():
        for _ in range(3):
            layer(x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            layer(x)
            calls += 1
        elapsed = time.perf_counter() - start
    return 2 * rows * n_in * n_out * calls / elapsed / 1e9


def machine_gflops(repeats: int = 5) -> float:
    """How fast this machine's torch runs a MiniLM-sized linear layer now (median of short
    runs): timed before and after each system's training, it shows a shared machine that
    slowed down in between."""
    return statistics.median(linear_gflops(1024, 384, 1536, seconds=0.4) for _ in range(repeats))


# --- `spacy train` with the batch timer (benchmarks/batch_timer.py) ------------------------
TIMED_BATCHERS = {
    "spacy.batch_by_words.v1": "benchmarks.timed_batch_by_words.v1",
    "spacy.batch_by_padded.v1": "benchmarks.timed_batch_by_padded.v1",
}


def timed_config(config: Path, log: Path, overrides: Optional[dict] = None):
    """`config` (uninterpolated, with `overrides`) with the timed copy of its batcher, which
    appends the clock time and the words of every batch to `log`: the loop asks for batch N
    when step N starts."""
    from spacy.util import load_config

    cfg = load_config(config, overrides=overrides or {}, interpolate=False)
    batcher = cfg["training"]["batcher"]
    batcher["@batchers"] = TIMED_BATCHERS[batcher["@batchers"]]
    batcher["log_path"] = str(log)
    return cfg


def read_batches(path) -> List[Tuple[float, int]]:
    """(clock time, words) of every batch, in order."""
    rows = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [(float(t), int(n)) for t, n in rows]


def step_rate(
    batches: Sequence[Tuple[float, int]], first: int = 1, steps: Optional[int] = None
) -> Tuple[float, float]:
    """(seconds a step, words a second) of `steps` steps from step `first` (None: every step
    whose end the log has, the next one's start), from the batch log: (clock time at which
    each step started, its words). Step 0 is left out by default: spaCy scores the dev split
    after it. The mean over the steps, not the median: a budget and a rate are sums, and the
    step time varies with the batch (one slow batch in ten made the median underestimate it
    by 8-10% in the first runs)."""
    steps = len(batches) - 1 - first if steps is None else steps
    if steps < 1 or len(batches) < first + steps + 1:
        raise ValueError(
            f"{len(batches)} steps logged: too few to time {max(steps, 1)} after step {first}"
        )
    seconds = batches[first + steps][0] - batches[first][0]
    return seconds / steps, sum(n for _, n in batches[first : first + steps]) / seconds


def spacy_train_cmd(config, corpus, model_dir, output, steps, extra, gpu_id: int = -1):
    """`spacy train` of a config on a corpus folder with the backbone (model_dir; None for a
    config without one) and the benchmarks' code (the project's architectures and the batch
    timer); on a GPU with mixed precision."""
    return [
        sys.executable,
        "-m",
        "spacy",
        "train",
        str(config),
        "--output",
        str(output),
        "--code",
        str(ROOT / "benchmarks" / "spacy_code.py"),
        "--paths.train",
        str(corpus / "train"),
        "--paths.dev",
        str(corpus / "dev.spacy"),
        "--paths.labels",
        str(corpus / "labels" / "ner.json"),
        *(["--paths.transformer", str(model_dir)] if model_dir else []),
        "--paths.log",
        str(output / "train_log.jsonl"),
        "--system.mixed_precision",
        str(gpu_id >= 0).lower(),
        "--gpu-id",
        str(gpu_id),
        "--training.max_steps",
        str(steps),
        *extra,
    ]


# --- the synthetic set: English MultiNERD's official size, in the hub's schema ---------------
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
    """The synthetic set in `directory`, generated unless it is there (written atomically: a
    generation cut short leaves no `directory`)."""
    from scripts.corpus import atomic_write

    if directory.exists():
        return
    print(f"Generating the synthetic set in {directory} ...")
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(200_000)] + ["the", "of", ",", ".", "and", "in"] * 20_000
    hub_names = {"train": "train", "dev": "validation", "test": "test"}
    with atomic_write(directory, folder=True) as partial:
        for split, name in hub_names.items():
            n = int(OFFICIAL.sizes[split] * scale)
            test = split == "test" and scale == 1.0
            write_split(partial / f"{name}_en.jsonl", rng, n, test, vocab)
