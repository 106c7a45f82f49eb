"""Inference: words/s of the spaCy pipeline's `nlp.pipe` against
`transformers.pipeline("token-classification")` with the same fine-tuned backbone, on the same
raw test sentences with the same batch size, one after the other in one run (median of the
timed passes, each system in its own process for its peak memory). Also the exact-span F1 of
what each returns against the gold entities: a fast pipeline that cuts entities inside words
is not a win.

    python -m benchmarks.bench_inference --spacy-model benchmarks/runs/accuracy/spacy-model/model-best \
        --hf-model benchmarks/runs/accuracy/hf-model
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Set, Tuple

import typer

ROOT = Path(__file__).resolve().parent.parent
Span = Tuple[int, int, int, str]  # sentence, start char, end char, label


def load_test(assets: Path, limit: int):
    from seqeval.metrics.sequence_labeling import get_entities

    from scripts.corpus import read_jsonl

    sents = read_jsonl(assets / "test.jsonl")
    tokens, tags = sents.tokens.to_pylist(), sents.tags.to_pylist()
    if limit:
        tokens, tags = tokens[:limit], tags[:limit]
    texts, gold = [], set()
    for i, (toks, tgs) in enumerate(zip(tokens, tags)):
        starts, pos = [], 0
        for tok in toks:
            starts.append(pos)
            pos += len(tok) + 1
        texts.append(" ".join(toks))
        for label, s, e in get_entities(tgs):
            gold.add((i, starts[s], starts[e] + len(toks[e]), label))
    return texts, gold, sum(len(t) for t in tokens)


def exact_f1(pred: Set[Span], gold: Set[Span]) -> float:
    tp = len(pred & gold)
    return 2 * tp / (len(pred) + len(gold)) if pred or gold else 1.0


def run_spacy(model: str, texts: List[str], batch_size: int, gpu: bool):
    import spacy

    from scripts import architectures  # noqa: F401

    if gpu:
        spacy.require_gpu()
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:64], batch_size=batch_size))  # warm-up

    def once():
        return [
            (i, e.start_char, e.end_char, e.label_)
            for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size))
            for e in doc.ents
        ]

    return once


def run_hf(model: str, texts: List[str], batch_size: int, gpu: bool, aggregation: str):
    from transformers import pipeline

    pipe = pipeline("token-classification", model=model, aggregation_strategy=aggregation,
                    device=0 if gpu else -1)  # fmt: skip
    pipe(texts[:64], batch_size=batch_size)  # warm-up

    def once():
        out = pipe(texts, batch_size=batch_size)
        return [(i, e["start"], e["end"], e["entity_group"]) for i, ents in enumerate(out) for e in ents]

    return once


def worker(system: str, spacy_model: str, hf_model: str, assets: Path, batch_size: int,
           repeats: int, limit: int, gpu: bool):  # fmt: skip
    texts, gold, n_words = load_test(assets, limit)
    if system == "spacy":
        once = run_spacy(spacy_model, texts, batch_size, gpu)
    else:
        once = run_hf(hf_model, texts, batch_size, gpu, system.split("-", 1)[1])
    times, pred = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        pred = once()
        times.append(time.perf_counter() - start)
    return {
        "words": n_words, "sentences": len(texts), "seconds": times,
        "words_per_s": n_words / statistics.median(times),
        "exact_span_f1": exact_f1(set(pred), gold),
    }  # fmt: skip


def main(
    spacy_model: str = typer.Option(..., help="spaCy pipeline: path or installed package"),
    hf_model: str = typer.Option(..., help="fine-tuned transformers model directory"),
    assets: Path = typer.Option(ROOT / "assets" / "conll2003"),
    batch_size: int = typer.Option(64),
    repeats: int = typer.Option(3),
    limit: int = typer.Option(0, help="first N test sentences (0: all)"),
    gpu: bool = typer.Option(False),
    only: str = typer.Option("", help="internal: run one system and print JSON"),
):
    if only:
        result = worker(only, spacy_model, hf_model, assets, batch_size, repeats, limit, gpu)
        print("RESULT " + json.dumps(result))
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    results = {}
    for system in ("spacy", "hf-simple", "hf-first"):
        cmd = [sys.executable, "-m", "benchmarks.bench_inference", *sys.argv[1:], "--only", system]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT, text=True)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{system} failed")
        results[system] = json.loads(stdout.split("RESULT ", 1)[1])
        results[system]["peak_rss_mib"] = usage.ru_maxrss / 1024
    r0 = results["spacy"]
    print(f"{r0['sentences']:,} test sentences, {r0['words']:,} words, batch size {batch_size}, "
          f"{'GPU' if gpu else 'CPU'}, median of {repeats}")  # fmt: skip
    for system, r in results.items():
        ratio = r0["words_per_s"] / r["words_per_s"]
        print(f"{system}: {r['words_per_s']:,.0f} words/s (runs {', '.join(f'{s:.1f}' for s in r['seconds'])} s), "
              f"exact-span F1 {100 * r['exact_span_f1']:.2f}, peak RSS {r['peak_rss_mib']:,.0f} MiB"
              + ("" if system == "spacy" else f"; spaCy is {ratio:.2f}x"))  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
