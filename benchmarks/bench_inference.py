"""Inference: words/s of the spaCy pipeline's `nlp.pipe` against
`transformers.pipeline("token-classification")` with the same fine-tuned backbone, on the same
raw test sentences with the same batch size, one after the other in one run (median of the
timed passes, each system in its own process for its peak memory). Also the exact-span F1 of
what each returns against the gold entities: a fast pipeline that cuts entities inside words
is not a win; and whether each returns the same entities as the first system.

    python -m benchmarks.bench_inference \
        --spacy-model benchmarks/runs/accuracy/spacy-model/model-best \
        --hf-model benchmarks/runs/accuracy/hf-model

The transformer's sub-batch size on the CPU, swept, on a pipeline of another encoder family
(benchmarks/random_pipeline.py: random weights, the speed is the same):

    python -m benchmarks.bench_inference --systems spacy,spacy-128,spacy-512,spacy-4096 \
        --limit 500 --spacy-model benchmarks/runs/random-deberta-v3-base/pipeline
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Set, Tuple, Union

import typer

from .common import (
    CORPUS_STEP,
    LOGS,
    ROOT,
    child_env,
    child_failed,
    require_inputs,
    require_pipeline,
)

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


def run_spacy(
    model: str,
    texts: List[str],
    batch_size: int,
    gpu_id: int,
    max_batch_items: Optional[int],
    mode: Optional[str] = None,
):
    import spacy

    from scripts import architectures  # noqa: F401

    if gpu_id >= 0:
        from thinc.api import set_gpu_allocator

        spacy.require_gpu(gpu_id)
        set_gpu_allocator("pytorch")  # cupy's arrays in torch's pool: one peak GPU memory figure
    nlp = spacy.load(model)
    trf = nlp.get_pipe("transformer")
    if max_batch_items:  # the transformer's inference sub-batches: padded words on a GPU,
        # padded word pieces on a CPU
        trf.cfg.update(max_batch_items=max_batch_items, cpu_max_batch_pieces=max_batch_items)
    if mode == "bf16":
        trf.cfg["cpu_bfloat16"] = True
    list(nlp.pipe(texts[:64], batch_size=batch_size))  # warm-up

    def once():
        return [
            (i, e.start_char, e.end_char, e.label_)
            for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size))
            for e in doc.ents
        ]

    return once


def run_hf(model: str, texts: List[str], batch_size: int, gpu_id: int, aggregation: str):
    from transformers import pipeline

    pipe = pipeline(
        "token-classification", model=model, aggregation_strategy=aggregation, device=gpu_id
    )
    pipe(texts[:64], batch_size=batch_size)  # warm-up

    def once():
        out = pipe(texts, batch_size=batch_size)
        return [
            (i, e["start"], e["end"], e["entity_group"]) for i, ents in enumerate(out) for e in ents
        ]

    return once


HF_AGGREGATIONS = ("simple", "first", "average", "max")


def parse_system(system: str) -> Tuple[str, Union[Tuple[Optional[str], Optional[int]], str]]:
    """ "spacy" (as trained) -> ("spacy", (None, None)); "spacy-N" (the transformer's
    sub-batches of N padded words on a GPU, N padded word pieces on a CPU) -> ("spacy", (None,
    N));
    "spacy-bf16[-N]": with the component's cpu_bfloat16 on -> ("spacy", ("bf16", N or None));
    "hf-<aggregation>" -> ("hf", aggregation)."""
    spacy_system = re.fullmatch(r"spacy(?:-(bf16))?(?:-([1-9][0-9]*))?", system)
    if spacy_system:
        mode, items = spacy_system.groups()
        return "spacy", (mode, int(items) if items else None)
    kind, _, arg = system.partition("-")
    if kind == "hf" and arg in HF_AGGREGATIONS:
        return "hf", arg
    raise typer.BadParameter(
        f"unknown system {system!r}: use spacy or spacy-bf16, each with an optional -N "
        "(N > 0), or "
        f"hf-<aggregation> with one of {', '.join(HF_AGGREGATIONS)}",
        param_hint="--systems",
    )


def worker(
    system: str,
    spacy_model: str,
    hf_model: str,
    assets: Path,
    batch_size: int,
    repeats: int,
    limit: int,
    gpu_id: int,
):
    texts, gold, n_words = load_test(assets, limit)
    kind, arg = parse_system(system)
    if kind == "spacy":
        mode, items = arg
        once = run_spacy(spacy_model, texts, batch_size, gpu_id, items, mode)
    else:
        once = run_hf(hf_model, texts, batch_size, gpu_id, arg)
    times, pred = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        pred = once()
        times.append(time.perf_counter() - start)
    result = {
        "words": n_words,
        "sentences": len(texts),
        "seconds": times,
        "words_per_s": n_words / statistics.median(times),
        "exact_span_f1": exact_f1(set(pred), gold),
        "entities": sorted(pred),  # compared with the first system's, then dropped
    }
    if gpu_id >= 0:
        import torch

        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(gpu_id) / 2**20
    return result


def main(
    spacy_model: str = typer.Option(..., help="spaCy pipeline: path or installed package"),
    hf_model: str = typer.Option("", help="fine-tuned transformers model (hf-* systems)"),
    assets: Path = typer.Option(ROOT / "assets" / "en_conll2003"),
    batch_size: int = typer.Option(64),
    repeats: int = typer.Option(3),
    limit: int = typer.Option(0, help="first N test sentences (0: all)"),
    gpu_id: int = typer.Option(-1, help="GPU id; -1 for CPU"),
    output: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    logs: Path = typer.Option(LOGS, help="where each system's process writes its messages"),
    systems: str = typer.Option(
        "spacy,spacy-bf16,hf-simple,hf-first",
        help="spacy (as trained), spacy-N (sub-batches of N padded words; on a CPU, word "
        "pieces), spacy-bf16[-N] "
        "(the transformer's cpu_bfloat16 on), hf-<aggregation>",
    ),
    only: str = typer.Option("", help="internal: run one system and print JSON"),
):
    if only:
        result = worker(only, spacy_model, hf_model, assets, batch_size, repeats, limit, gpu_id)
        print("RESULT " + json.dumps(result))
        return
    from scripts.check_gpu import require

    require(gpu_id)
    names = systems.split(",")
    kinds = {parse_system(system)[0] for system in names}  # all checked before the first runs
    require_inputs([assets / "test.jsonl"], CORPUS_STEP)
    trained_by = "`python -m spacy project run bench-accuracy` trains both models."
    if "spacy" in kinds:
        require_pipeline(spacy_model, trained_by)
    if "hf" in kinds:
        require_inputs([Path(hf_model)], trained_by)
    env = child_env()
    results = {}
    for system in names:
        cmd = [sys.executable, "-m", "benchmarks.bench_inference", *sys.argv[1:], "--only", system]
        log = logs / f"inference-{system}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT, text=True
            )
            stdout = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            child_failed(cmd, log)
        results[system] = json.loads(stdout.split("RESULT ", 1)[1])
        results[system]["peak_rss_mib"] = usage.ru_maxrss / 1024
    first = next(iter(results))  # the ratios and entities are against the first system
    r0 = results[first]
    first_entities = {tuple(e) for e in r0["entities"]}
    for r in results.values():
        r["entities_not_as_first"] = len({tuple(e) for e in r.pop("entities")} ^ first_entities)
    print(
        f"{r0['sentences']:,} test sentences, {r0['words']:,} words, batch size {batch_size}, "
        f"{'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}, median of {repeats}"
    )
    for system, r in results.items():
        ratio = r0["words_per_s"] / r["words_per_s"]
        print(
            f"{system}: {r['words_per_s']:,.0f} words/s "
            f"(runs {', '.join(f'{s:.1f}' for s in r['seconds'])} s), "
            f"exact-span F1 {100 * r['exact_span_f1']:.2f}, peak RSS {r['peak_rss_mib']:,.0f} MiB"
            + (f", peak GPU {r['peak_gpu_mib']:,.0f} MiB" if "peak_gpu_mib" in r else "")
            + (
                ""
                if system == first
                else f"; {first} is {ratio:.2f}x, "
                + (
                    "the same entities"
                    if not r["entities_not_as_first"]
                    else f"{r['entities_not_as_first']:,} entities not the same"
                )
            )
        )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "batch_size": batch_size,
            "repeats": repeats,
            "gpu_id": gpu_id,
            "spacy_model": spacy_model,
            "hf_model": hf_model,
        }
        output.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
