"""The training loop's ceiling: words/s of a transformer NER training step when the encoder's own
arithmetic costs next to nothing, as on a fast GPU, for this project's training (configs/trf.cfg
through scripts/train.py) and for stock spaCy's (`spacy init config -p ner -G`: spacy.Corpus.v1,
`spacy train`), on the same sentences, with the same tiny random encoder, on one CPU thread.

On a GPU the encoder's arithmetic is fast and runs beside the CPU; what sets the pace is what
each step does in Python and on the CPU: the reader, the Examples, the word-piece tokenizer, the
NER model, the glue between them. A random encoder of 2 layers of width 32 (the project's
scripts/tiny_transformer.py, with a word-piece vocabulary of a real model's size trained on the
corpus, so that a word has as many pieces as with a released model) stands in for that encoder:
the figures are an upper bound on the words/s this loop can feed a GPU.

Each figure is the marginal cost of more sentences: one epoch over the first --sentences
SMALL,LARGE sentences of the corpus (file order, `--corpora.train.limit`), the wall time of the
LARGE run less that of the SMALL one (start-up, initialization, the dev evaluation and the saving
cancel out), the words in between over that time. The systems run interleaved, --repeats times;
the ratio is this project's words/s over stock spaCy's, run by run, and its median.

    python -m benchmarks.bench_train_ceiling --repeats 3 --profile

`--profile` runs each system once more at LARGE with benchmarks/loop_profile.py: which part of
the step costs what, in ms per 1,000 words.
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import typer

from .common import CORPUS_STEP, ROOT, child_env, machine, require_inputs, run_child

SYSTEMS = ("stock", "project")
TINY_VOCAB = 8000  # word pieces: about 1.5 a word on CoNLL-2003, as roberta-base has
PROFILE_ROWS = [  # (row, how it is computed from loop_profile's parts)
    ("data: read, shuffle, make Examples, batch", ["data"], []),
    ("Language.update: copy the Examples", ["copy"], []),
    ("transformer: word-piece tokenizer", ["tokenize"], []),
    (
        "transformer: spans, alignment, split by doc",
        ["transformer"],
        ["tokenize", "encoder_forward"],
    ),
    ("encoder forward (torch)", ["encoder_forward"], []),
    ("encoder backward (torch)", ["encoder_backward"], []),
    (
        "NER: features, parser, gold, pooling",
        ["update"],
        ["copy", "transformer", "encoder_backward"],
    ),
    ("loop: optimizer, schedules, logging", ["loop"], ["data", "update", "evaluate"]),
]


def stock_config(encoder: Path, out: Path) -> Path:
    """Stock spaCy's transformer NER config (`spacy init config -p ner -G`) on `encoder`."""
    from spacy.cli.init_config import init_config

    config = init_config(lang="en", pipeline=["ner"], gpu=True)
    config["components"]["transformer"]["model"]["name"] = str(encoder)
    config["components"]["transformer"]["model"]["mixed_precision"] = False
    config.to_disk(out)
    return out


def command(
    system: str, corpus: Path, encoder: Path, out: Path, configs: Dict[str, Path], n: int
) -> List[str]:
    """One epoch of `system` (configs[system]) over the first `n` training sentences, on the
    CPU."""
    common = [
        "--paths.train",
        str(corpus / "train"),
        "--paths.dev",
        str(corpus / "dev.spacy"),
        "--corpora.train.limit",
        str(n),
        "--corpora.dev.limit",
        "20",
        "--training.max_epochs",
        "1",
        "--training.eval_frequency",
        "1000000",
        "--gpu-id",
        "-1",
    ]
    code = ["--code", str(ROOT / "benchmarks" / "loop_profile.py")]
    if system == "stock":
        return [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(configs[system]),
            "--output",
            str(out),
        ] + (common + code)
    return [
        sys.executable,
        "-m",
        "scripts.train",
        str(configs[system]),
        str(out),
        *code,
        "--paths.labels",
        str(corpus / "labels" / "ner.json"),
        "--paths.transformer",
        str(encoder),
        "--system.mixed_precision",
        "false",
        "--resume",
        "false",
        *common,
    ]


def run(cmd: List[str], log: Path, profile: Optional[Path] = None) -> float:
    """Wall seconds of `cmd` on one CPU thread; its output in `log`."""
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if profile:
        env["LOOP_PROFILE"] = str(profile)
    start = time.perf_counter()
    run_child(cmd, log, env=env)
    return time.perf_counter() - start


def profile_rows(seconds: Dict[str, float], words: int) -> Dict[str, float]:
    """ms per 1,000 words of each PROFILE_ROWS row."""
    rows = {}
    for row, plus, minus in PROFILE_ROWS:
        total = sum(seconds.get(k, 0.0) for k in plus) - sum(seconds.get(k, 0.0) for k in minus)
        rows[row] = 1e6 * total / words
    rows["total (the loop, evaluations out)"] = (
        1e6 * (seconds["loop"] - seconds["evaluate"]) / words
    )
    return rows


def main(
    corpus: Path = typer.Option(ROOT / "corpus" / "en_conll2003_a", help="A corpus of `convert`"),
    sentences: str = typer.Option("1000,4000", help="SMALL,LARGE: the first N sentences"),
    repeats: int = typer.Option(3, help="Runs of each system at each size, interleaved"),
    family: str = typer.Option("roberta", help="Family of the tiny encoder (tiny_transformer)"),
    config: Path = typer.Option(ROOT / "configs" / "trf.cfg", help="This project's config"),
    profile: bool = typer.Option(False, help="Also profile one LARGE run of each system"),
    workdir: Path = typer.Option(ROOT / "benchmarks" / "runs" / "train-ceiling"),
    output: Optional[Path] = typer.Option(None, help="Also write the figures to this JSON file"),
):
    """Words/s of the training loop with a tiny encoder on one CPU thread: this project's
    against stock spaCy's, side by side, and their ratio."""
    from scripts.tiny_transformer import FAMILIES

    require_inputs([corpus / n for n in ("train", "dev.spacy", "labels/ner.json")], CORPUS_STEP)
    require_inputs([config], "Give a training config of the project with --config.")
    if family not in FAMILIES:
        sys.exit(f"--family {family}: not one of {', '.join(FAMILIES)}.")
    small, large = (int(n) for n in sentences.split(","))
    if not 0 < small < large:
        sys.exit(f"--sentences {sentences}: give SMALL,LARGE with 0 < SMALL < LARGE.")
    import spacy  # after the checks: a missing input stops at once

    from scripts.architectures import StreamedCorpus
    from scripts.tiny_transformer import build_tiny_transformer

    vocab = spacy.blank("en").vocab
    docs = list(StreamedCorpus(corpus / "train", limit=large).docs(vocab))
    if len(docs) < large:
        sys.exit(f"--sentences {sentences}: {corpus / 'train'} has only {len(docs):,} sentences.")
    words = {n: sum(len(d) for d in docs[:n]) for n in (small, large)}
    workdir.mkdir(parents=True, exist_ok=True)
    encoder = workdir / f"tiny-{family}"
    if not encoder.exists():
        texts = [d.text for d in StreamedCorpus(corpus / "train").docs(vocab)]
        build_tiny_transformer(encoder, texts, family, vocab=TINY_VOCAB)
    configs = {"stock": stock_config(encoder, workdir / "stock.cfg"), "project": config}
    described = machine()
    print(described)
    print(
        f"{corpus}: sentences {small:,} and {large:,} ({words[small]:,} and {words[large]:,} "
        f"words), one epoch, one CPU thread; a tiny random {family} encoder ({encoder})"
    )
    walls: Dict[str, Dict[int, List[float]]] = {s: {small: [], large: []} for s in SYSTEMS}
    for repeat in range(repeats):
        for n in (small, large):
            for system in SYSTEMS:
                out = workdir / f"{system}-{n}"
                cmd = command(system, corpus, encoder, out, configs, n)
                walls[system][n].append(run(cmd, workdir / f"{system}-{n}.log"))
        rates = {
            s: (words[large] - words[small]) / (walls[s][large][-1] - walls[s][small][-1])
            for s in SYSTEMS
        }
        print(
            f"run {repeat + 1}: stock {rates['stock']:,.0f} words/s, project "
            f"{rates['project']:,.0f} words/s, ratio {rates['project'] / rates['stock']:.2f}"
        )
    extra = words[large] - words[small]
    rates = {
        s: [extra / (b - a) for a, b in zip(walls[s][small], walls[s][large])] for s in SYSTEMS
    }
    ratios = [p / s for p, s in zip(rates["project"], rates["stock"])]
    median = {s: statistics.median(rates[s]) for s in SYSTEMS}
    print(
        f"\nmedian of {repeats}: stock spaCy {median['stock']:,.0f} words/s, this project "
        f"{median['project']:,.0f} words/s; ratio {statistics.median(ratios):.2f} "
        f"(runs {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    result = {
        "machine": described,
        "corpus": str(corpus),
        "sentences": [small, large],
        "words": [words[small], words[large]],
        "family": family,
        "config": str(config),
        "walls": walls,
        "words_per_s": rates,
        "median_words_per_s": median,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
    }
    if profile:
        result["profile_ms_per_1000_words"] = profiles = {}
        for system in SYSTEMS:
            path = workdir / f"{system}-profile.json"
            cmd = command(system, corpus, encoder, workdir / f"{system}-profile", configs, large)
            run(cmd, workdir / f"{system}-profile.log", profile=path)
            measured = json.loads(path.read_text(encoding="utf-8"))
            if measured["missing"]:
                print(f"{system}: not profiled (not found): {', '.join(measured['missing'])}")
            profiles[system] = profile_rows(measured["seconds"], words[large])
        print(f"\nprofile, ms per 1,000 words ({large:,} sentences, one run each)")
        print(f"{'part of the step':<46} {'stock':>8} {'project':>8}")
        for row in profiles["stock"]:
            print(f"{row:<46} {profiles['stock'][row]:8.1f} {profiles['project'][row]:8.1f}")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    typer.run(main)
