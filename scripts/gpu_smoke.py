"""A minute that proves the training path on a new GPU machine, before a long training run.

Builds a tiny transformer NER pipeline here (no download: a random 2-layer encoder of the
family of the user's transformer, BERT, DeBERTa or another, with a tokenizer of its kind
trained on the project's MultiNERD fixture), trains it as the train steps do (scripts/train.py:
spaCy's loop, with the checkpoints a run resumes from; configs/trf.cfg, fp16 mixed precision on
GPU `gpu_id`) for a few hundred steps on the fixture, and checks, one row each:

- the loss falls and stays finite, and so do the weights (fp16 loss scaling did not overflow);
- the trained pipeline finds the same entities on the GPU and on the CPU on a held sample;
- `nlp.to_disk` then `spacy.load` on the CPU finds the same entities again;
- words/s of training twice: with the tiny encoder, the most the training loop can feed
  that machine (the encoder's arithmetic costs next to nothing), and with a random encoder of
  the same family at base size (12 layers of 768), what the GPU gives; one row says which of
  the two sets the pace (docs/gpu.md);
- words/s of inference, and the peak GPU memory.

    python -m scripts.gpu_smoke --gpu-id 0 --transformer microsoft/deberta-v3-base
                                                        # `spacy project run gpu-smoke`
    python -m scripts.gpu_smoke --gpu-id -1 --mixed-precision false   # the same on the CPU

Exit 1 when a check fails, or at once (one line) when GPU `gpu_id` cannot be used.
"""

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from wasabi import msg

from . import check_gpu
from .labels import DEFAULT_LANGUAGE, MULTINERD_TYPES, SCHEMES, SPLITS, resolve_transformer
from .report import loss_per_step

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "trf.cfg"
FIXTURE = ROOT / "tests" / "fixtures" / "multinerd"
# fp16 on the GPU against fp32 on the CPU: a near-tie may tip the other way in a few sentences
FP16_AGREEMENT = 0.98
INFERENCE_SECONDS = 2.0  # the held sample is annotated again and again for this long
# the base-size encoder's words/s over the tiny one's at or above which the loop, not the GPU,
# sets the pace: the encoder's arithmetic then hides behind the CPU's work
LOOP_BOUND = 0.8


@dataclass
class Check:
    name: str
    result: str
    ok: bool = True
    fix: str = ""


def build_corpus(fixture: Path, out: Path) -> Tuple[Dict[str, Path], List[str]]:
    """train.spacy, dev.spacy and the NER labels file (System A) from the MultiNERD fixture's
    English rows, and the held sample: the test split's sentences as text."""
    import srsly

    from .corpus import EncodedSplit, check_sentences, ner_label_data
    from .fetch import load

    splits = load("multinerd", str(fixture))
    labels = SCHEMES["a"].keep(MULTINERD_TYPES)
    paths = {}
    for split in SPLITS:
        check_sentences(splits[split], MULTINERD_TYPES)
        enc = EncodedSplit.encode(splits[split])
        iob, label, _ = enc.entities(labels)
        paths[split] = out / f"{split}.spacy"
        paths[split].write_bytes(enc.docbin_bytes(labels, iob, label))
        if split == "train":
            paths["labels"] = out / "ner.json"
            srsly.write_json(paths["labels"], ner_label_data(labels, label))
    sample = [" ".join(tokens) for tokens in splits["test"].tokens.to_pylist()]
    return paths, sample


def record_log(record: List[Dict]):
    """spaCy's console logger, which also keeps each evaluation's step, words, losses and
    time in `record`."""
    from spacy.training.loggers import console_logger_v3

    console = console_logger_v3(progress_bar="eval")

    def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
        console_step, finalize = console(nlp, stdout, stderr)

        def log_step(info: Optional[Dict]) -> None:
            if info is not None:
                row = {k: info[k] for k in ("step", "words")}
                row.update(losses=dict(info["losses"]), time=time.perf_counter())
                record.append(row)
            console_step(info)

        return log_step, finalize

    return setup


def train(
    gpu_id: int,
    mixed_precision: bool,
    steps: int,
    every: int,
    corpus: Dict[str, Path],
    tiny: Path,
    out: Path,
) -> Tuple[List[Dict], List[Tuple[float, int]]]:
    """configs/trf.cfg with the tiny model's settings, on the encoder `tiny`, trained as the
    project's train steps train (scripts/train.py: spaCy's loop, with resumable checkpoints),
    evaluated every `every` steps: its evaluations, and the start and words of each step."""
    import spacy

    from benchmarks import batch_timer  # noqa: F401  (the timed batchers)
    from benchmarks.common import read_batches, timed_config

    from . import architectures  # noqa: F401  (the config's registered layers)
    from .corpus import remove_outputs
    from .tiny_transformer import TINY_OVERRIDES
    from .train import train as train_resumable

    overrides = {
        **TINY_OVERRIDES,
        "paths.train": str(corpus["train"]),
        "paths.dev": str(corpus["dev"]),
        "paths.labels": str(corpus["labels"]),
        "paths.transformer": str(tiny),
        "system.mixed_precision": mixed_precision,
        "training.max_steps": steps,
        "training.eval_frequency": every,
        "training.patience": 0,
    }
    log = out.parent / f"{out.name}-batches.tsv"  # the start and words of each step
    remove_outputs(log)
    config = timed_config(CONFIG, log, overrides)
    record: List[Dict] = []
    config["training"]["logger"] = {"@loggers": "multinerd.smoke_record.v1"}
    spacy.registry.loggers.register("multinerd.smoke_record.v1", func=lambda: record_log(record))
    config.to_disk(out.parent / "smoke.cfg")
    train_resumable(out.parent / "smoke.cfg", out, {}, gpu_id, resume=False)
    batches = read_batches(log)
    return record, batches


def training_speed(batches: List[Tuple[float, int]], every: int) -> float:
    """Words/s of the training steps, from the clock times at which the loop asked for each
    batch (the start of its step, so the end of the one before): the steps followed by an
    evaluation and its checkpoint (every `every` steps, step 0 among them) left out."""
    words = seconds = 0.0
    for step, ((start, n), (end, _)) in enumerate(zip(batches, batches[1:])):
        if step % every:
            words, seconds = words + n, seconds + end - start
    return words / max(seconds, 1e-9)


def pace_check(ceiling: float, base: float, family: str, steps: int) -> Check:
    """Which sets the pace of training on this machine: the loop (the base-size encoder trains
    nearly as fast as the tiny one) or the GPU."""
    share = base / max(ceiling, 1e-9)
    who = "the training loop (the CPU's work)" if share >= LOOP_BOUND else "the encoder (the GPU)"
    return Check(
        f"training speed, base-size {family} (random)",
        f"{base:,.0f} words/s over {steps} steps, {share:.0%} of the loop's most: {who} sets "
        "the pace",
    )


def loss_check(record: List[Dict]) -> Check:
    curves = loss_per_step(record)
    total = [sum(values) for values in zip(*curves.values())]
    finite = all(math.isfinite(x) for x in total)
    first, last = total[0], total[-1]
    falls = finite and last < first / 2
    fix = (
        ""
        if falls
        else "inf/NaN with fp16: check the driver and CUDA libraries (`spacy project run "
        "check-gpu`), or train with --vars.mixed_precision=false"
        if not finite
        else "the loss did not fall: check the GPU's results against the CPU's "
        "(--gpu-id -1 --mixed-precision false)"
    )
    return Check("loss falls, stays finite", f"{first:.2f} -> {last:.2f} a step", falls, fix)


def weights_check(nlp) -> Check:
    """Every transformer weight is finite after training."""
    import torch

    bad = 0
    for name in nlp.pipe_names:
        for node in nlp.get_pipe(name).model.walk():
            for shim in node.shims:
                model = getattr(shim, "_model", None)
                if isinstance(model, torch.nn.Module):
                    bad += sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())
    fix = "" if not bad else "train with --vars.mixed_precision=false, and report it"
    return Check("weights finite", f"{bad} non-finite values", bad == 0, fix)


def entities(nlp, texts: List[str]) -> List[List[Tuple[int, int, str]]]:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


def words_per_second(nlp, texts: List[str]) -> float:
    """Words/s of nlp.pipe over `texts`, again and again for INFERENCE_SECONDS."""
    words, start = 0, time.perf_counter()
    while words == 0 or time.perf_counter() - start < INFERENCE_SECONDS:
        words += sum(len(doc) for doc in nlp.pipe(texts, batch_size=128))
    return words / (time.perf_counter() - start)


def agreement_check(name: str, on_device: List[List], on_cpu: List[List], fp16: bool) -> Check:
    """The same entities in every sentence; with fp16 on the device against fp32 on the CPU,
    in at least FP16_AGREEMENT of them. A pipeline that finds no entity fails too."""
    same = sum(x == y for x, y in zip(on_device, on_cpu))
    needed = FP16_AGREEMENT if fp16 else 1.0
    n_ents = sum(map(len, on_cpu))
    ok = same >= needed * len(on_cpu) and n_ents > 0
    result = f"{same} of {len(on_cpu)} sentences ({n_ents} entities)"
    fix = "" if ok else "compare `spacy evaluate` with --gpu-id 0 and --gpu-id -1"
    return Check(name, result + (" (fp16 against fp32)" if fp16 else ""), ok, fix)


def family_of_transformer(transformer: str) -> Tuple[str, str]:
    """The family of FAMILIES that `transformer` (a hub name or a local directory) belongs to,
    from the model_type of its config, and a note when that cannot be told (then BERT)."""
    from . import hub
    from .tiny_transformer import FAMILIES, family_of

    if not transformer:
        return "bert", ""
    try:
        if not Path(transformer).is_dir():
            hub.use_hub_or_cache()  # without a network: the local cache, at once
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(transformer).to_dict()
    except Exception as err:
        return "bert", f"{transformer}'s config cannot be read ({hub.first_line(err)})"
    family = family_of(config)
    if family is None:
        model_type = config.get("model_type")
        return "bert", f"{transformer} is a {model_type!r} model, not one of {', '.join(FAMILIES)}"
    return family, ""


def smoke(
    gpu_id: int,
    mixed_precision: bool,
    steps: int,
    fixture: Path,
    tmp: Path,
    family: str,
    base_steps: int,
) -> List[Check]:
    import spacy
    import torch

    from .tiny_transformer import build_tiny_transformer, fixture_texts

    corpus, sample = build_corpus(fixture, tmp)
    tiny = build_tiny_transformer(tmp / f"tiny-{family}", fixture_texts(fixture), family)
    on_gpu = gpu_id >= 0
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(gpu_id)
    every = max(steps // 10, 1)
    record, batches = train(gpu_id, mixed_precision, steps, every, corpus, tiny, tmp / "training")

    device = torch.cuda.get_device_name(gpu_id) if on_gpu else "CPU"
    nlp = spacy.load(tmp / "training" / "model-last")  # on the device the training set up
    encoder = type(nlp.get_pipe("transformer").model.transformer).__name__
    checks = [Check("encoder", f"a tiny {family} ({encoder})")]
    checks += [loss_check(record), weights_check(nlp)]
    on_device = entities(nlp, sample)
    infer_speed = words_per_second(nlp, sample)
    nlp.to_disk(tmp / "saved")
    spacy.require_cpu()
    on_cpu = entities(spacy.load(tmp / "training" / "model-last"), sample)
    reloaded = entities(spacy.load(tmp / "saved"), sample)

    name = f"same entities on {device} and on the CPU" if on_gpu else "same entities again"
    checks.append(agreement_check(name, on_device, on_cpu, on_gpu and mixed_precision))
    checks.append(
        Check(
            "to_disk, then spacy.load on the CPU",
            f"{sum(x == y for x, y in zip(reloaded, on_cpu))} of {len(sample)} sentences the same",
            reloaded == on_cpu,
            "" if reloaded == on_cpu else "the saved pipeline differs from the trained one",
        )
    )
    ceiling = training_speed(batches, every)
    checks.append(
        Check(
            "training speed, tiny encoder (the loop's most)",
            f"{ceiling:,.0f} words/s over {steps} steps",
        )
    )
    if base_steps:  # evaluated after its last step only: its steps are timed without one
        base = build_tiny_transformer(
            tmp / f"base-{family}", fixture_texts(fixture), family, "base"
        )
        out = tmp / "training-base"
        _, base_batches = train(gpu_id, mixed_precision, base_steps, base_steps, corpus, base, out)
        speed = training_speed(base_batches, base_steps)
        checks.append(pace_check(ceiling, speed, family, base_steps))
    checks.append(Check(f"inference speed ({device}, tiny encoder)", f"{infer_speed:,.0f} words/s"))
    peak = torch.cuda.max_memory_allocated(gpu_id) / 2**20 if on_gpu else None
    checks.append(Check("peak GPU memory", f"{peak:,.0f} MiB (base size)" if peak else "- (CPU)"))
    return checks


def main(
    gpu_id: int = typer.Option(0, help="The GPU to train on (project var gpu_id); -1: the CPU"),
    mixed_precision: str = typer.Option("true", help="fp16 mixed precision: true or false"),
    steps: int = typer.Option(300, min=10, help="Training steps of the tiny encoder"),
    base_steps: int = typer.Option(
        30, help="Training steps of the base-size encoder (for its words/s); 0: none"
    ),
    transformer: str = typer.Option(
        "", help="The transformer you will train (project var transformer): its family is built"
    ),
    language: str = typer.Option(
        DEFAULT_LANGUAGE, help="The language you will train (var language): for 'default'"
    ),
    fixture: Path = typer.Option(FIXTURE, exists=True, file_okay=False, help="MultiNERD files"),
):
    """Train a tiny transformer NER pipeline on GPU `gpu_id` for a few hundred steps and check
    the loss, the weights, the same entities on the GPU and on the CPU, and the speed."""
    precision = check_gpu.parse_bool(mixed_precision, "mixed_precision")
    if gpu_id >= 0:
        found = check_gpu.problems(check_gpu.probe(gpu_id))
        if found:  # one line, however long (wasabi would wrap it)
            why = "; ".join(what for what, _ in found)
            print(f"✘ No usable GPU {gpu_id}: {why} (`spacy project run check-gpu` has the fixes).")
            raise SystemExit(1)
    elif precision:
        msg.fail("mixed_precision=true needs a GPU: add --mixed-precision false.", exits=1)
    if base_steps == 1 or base_steps < 0:
        msg.fail("--base-steps: 0 (no base-size run), or 2 and more (a step to time).", exits=1)
    family, note = family_of_transformer(transformer and resolve_transformer(transformer, language))
    if note:
        msg.info(f"{note}: the smoke run builds a tiny BERT.")
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        checks = smoke(gpu_id, precision, steps, fixture, Path(tmp), family, base_steps)
    rows = [("✔" if c.ok else "✘", c.name, c.result, c.fix) for c in checks]
    msg.table(rows, header=("", "check", "result", "fix"), divider=True, max_col=80)
    if not all(c.ok for c in checks):
        msg.fail("The smoke run failed: fix the rows marked ✘ before a long training run.")
        raise SystemExit(1)
    where = f"GPU {gpu_id}" if gpu_id >= 0 else "the CPU"
    msg.good(f"Training, prediction and saving work on {where}.")


if __name__ == "__main__":
    typer.run(main)
