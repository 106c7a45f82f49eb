"""`spacy train` that resumes an interrupted run: re-run after a crash, a preempted machine or a
dropped session, and training goes on from the last evaluation instead of from step 0.

    python -m scripts.train configs/trf.cfg training/en_multinerd_a_trf \\
        --code scripts/architectures.py --gpu-id 0 --paths.train ... [--resume false]

A fresh run is spaCy's own: its initialization, its training loop (`train_while_improving`),
its evaluations, model-best and model-last. Each evaluation also saves, inside model-last,
what the loop needs to go on (model-last/training-state/): the step, the best score so far,
the optimizer's moment estimates, the random generators' states and the run's fingerprint
(the config with its overrides, and the corpus and encoder files the config names). A re-run
with the same fingerprint loads model-last, moves the learning-rate and dropout schedules and
the training data on to that step, and continues; the log is appended, model-best is replaced
only by a better score. Not carried over: fp16's loss scale (it adapts again within a few
steps) and, on a GPU, the random generator of spaCy's own layers (CuPy's), so dropout differs
there. docs/workflow.md#resuming-a-training-run has what this costs.

A run whose fingerprint differs, or `--resume false`, starts fresh; a finished run with the
same fingerprint is left as it is (the code is not in the fingerprint: an edit to it does not
throw hours of training away; `--resume false` trains again). An interruption keeps the last
evaluation's checkpoint.
"""

import json
import pickle
import sys
from dataclasses import asdict, dataclass
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import srsly
import typer
from wasabi import msg

from .corpus import atomic_write, remove_outputs
from .labels import DEFAULT_LANGUAGE, resolve_transformer, spacy_language, tokenizer_config

STATE = "training-state"  # inside model-last
MODEL_BEST, MODEL_LAST = "model-best", "model-last"
LOG_KEY = "log"  # [paths] log: the training log, appended to when a run resumes


@dataclass
class State:
    """Where a run stands, saved with each checkpoint (model-last/training-state/state.json)."""

    fingerprint: str
    step: int  # the last evaluated step; the data up to it is trained on
    epoch: int
    best_score: float
    best_step: int
    finished: bool = False


def fingerprint(config) -> str:
    """What a checkpoint is valid for: the config with its overrides, and every corpus, label
    or model file or folder that the config's [paths] name (a hub model by its name)."""
    import hashlib

    from weasel.util import get_checksum

    parts = [config.to_str()]
    for key, value in sorted(config["paths"].items()):
        if key != LOG_KEY and isinstance(value, str) and value and Path(value).exists():
            parts.append(f"{key}={get_checksum(value)}")
    return hashlib.md5("\n".join(parts).encode("utf-8")).hexdigest()


def read_state(output: Path) -> Optional[State]:
    path = output / MODEL_LAST / STATE / "state.json"
    try:
        return State(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def starting_point(output: Path, config_fingerprint: str, resume: bool) -> Optional[State]:
    """The checkpoint to resume from (None: start fresh), said in one line."""
    state = read_state(output)
    if not resume:
        msg.info("Starting fresh (resume=false).")
        return None
    if state is None:
        if (output / MODEL_LAST).exists():
            msg.warn(f"{output / MODEL_LAST} has no training state: starting fresh.")
        return None
    if state.fingerprint != config_fingerprint:
        msg.warn(
            f"{output / MODEL_LAST} (step {state.step:,}) was trained with another config, "
            "corpus or encoder: starting fresh."
        )
        return None
    return state


# --- The optimizer's state: the only place that relies on thinc's keys ---------------------
# thinc's optimizer keeps its moments by (node or shim id, parameter name), and the ids change
# from process to process: they are saved under names from the pipeline's structure instead
# (component, position in model.walk(), parameter). If some key has no such name, the moments
# are not carried over, with a warning, and Adam starts them again.
OPTIMIZER_ARRAYS = ("mom1", "mom2", "averages")
OPTIMIZER_COUNTS = ("nr_update", "last_seen")


def parameter_names(nlp) -> Dict[Tuple[int, str], str]:
    from thinc.api import Model

    names: Dict[Tuple[int, str], str] = {}
    for component, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if not isinstance(model, Model):
            continue
        for i, node in enumerate(model.walk()):
            for param in node.param_names:
                names.setdefault((node.id, param), f"{component}/{i}/{param}")
            for j, shim in enumerate(node.shims):
                module = getattr(shim, "_model", None)  # a torch module (PyTorchShim)
                for param, _ in getattr(module, "named_parameters", lambda: [])():
                    names.setdefault((shim.id, param), f"{component}/{i}/shim{j}/{param}")
    return names


def save_optimizer(nlp, optimizer, folder: Path) -> bool:
    import numpy
    from thinc.backends import get_array_ops

    names = parameter_names(nlp)
    arrays, counts = {}, {}
    for attr in OPTIMIZER_ARRAYS:
        for key, value in (getattr(optimizer, attr, None) or {}).items():
            if key not in names:
                return False
            arrays[f"{attr}:{names[key]}"] = get_array_ops(value).to_numpy(value)
    for attr in OPTIMIZER_COUNTS:
        table = getattr(optimizer, attr)
        if any(key not in names for key in table):
            return False
        counts[attr] = {names[key]: n for key, n in table.items()}
    numpy.savez(folder / "optimizer.npz", **arrays)
    (folder / "optimizer.json").write_text(json.dumps(counts), encoding="utf-8")
    return True


def restore_optimizer(nlp, optimizer, folder: Path) -> bool:
    """All of the saved state under the reloaded pipeline's ids, or none of it."""
    import numpy
    from thinc.api import get_current_ops

    if not (folder / "optimizer.npz").exists():
        return False
    keys = {name: key for key, name in parameter_names(nlp).items()}
    ops = get_current_ops()
    found: Dict[str, Dict] = {}
    with numpy.load(folder / "optimizer.npz") as arrays:
        for entry in arrays.files:
            attr, name = entry.split(":", 1)
            if name not in keys or getattr(optimizer, attr, None) is None:
                return False
            found.setdefault(attr, {})[keys[name]] = ops.asarray(arrays[entry])
    counts = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    for attr, table in counts.items():
        if any(name not in keys for name in table):
            return False
        found[attr] = {keys[name]: n for name, n in table.items()}
    for attr, values in found.items():
        getattr(optimizer, attr).update(values)
    return True


# ------------------------------------------------------------------------------------------


def random_states() -> Dict[str, Any]:
    import random

    import numpy
    import torch

    states = {"random": random.getstate(), "numpy": numpy.random.get_state()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: Dict[str, Any]) -> None:
    import random

    import numpy
    import torch

    random.setstate(states["random"])
    numpy.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def save_checkpoint(nlp, optimizer, T, output: Path, state: State, best: bool) -> None:
    """model-last, with what resuming needs in it (unless the run is finished), in one
    rename; before that rename, model-best, a copy of it without that, when the score is the
    best so far (so that a checkpoint's best score is always in model-best)."""
    import shutil

    from spacy.training.loop import create_before_to_disk_callback

    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    with atomic_write(output / MODEL_LAST, folder=True) as last:
        with nlp.use_params(optimizer.averages):
            before_to_disk(nlp).to_disk(last)
        folder = last / STATE
        folder.mkdir()
        if not state.finished:
            if optimizer.averages:  # model-last holds the averages: resuming needs the weights
                nlp.to_disk(folder / "weights")
            if not save_optimizer(nlp, optimizer, folder):
                msg.warn("The optimizer's state cannot be saved: a resumed run restarts Adam.")
            (folder / "random.pkl").write_bytes(pickle.dumps(random_states()))
        (folder / "state.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
        if best:
            with atomic_write(output / MODEL_BEST, folder=True) as best_dir:
                ignore = shutil.ignore_patterns(STATE)
                shutil.copytree(last, best_dir, ignore=ignore, dirs_exist_ok=True)


def tidy(output: Path) -> None:
    """Put right what a checkpoint write that was killed left: a model folder that was
    between its two renames comes back, and half-written copies go."""
    for name in (MODEL_LAST, MODEL_BEST):
        old = sorted(output.glob(f".{name}.old-*"))
        if old and not (output / name).exists():
            old[-1].rename(output / name)
        remove_outputs(*output.glob(f".{name}.tmp-*"), *output.glob(f".{name}.old-*"))


def log_row(info: Dict, trainable, score_weights) -> Dict:
    """The JSON line spaCy's ConsoleLogger.v3 writes to its output_file for an evaluation."""
    scores = {
        col: float(info["other_scores"].get(col, 0.0)) * (1 if col == "speed" else 100)
        for col, weight in score_weights.items()
        if weight is not None
    }
    return {
        "epoch": info["epoch"],
        "step": info["step"],
        "losses": {pipe: float(info["losses"][pipe]) for pipe in trainable},
        "scores": scores,
        "score": float(info["score"]),
    }


def keep_log_until(log: Path, step: int) -> None:
    """The training log's rows up to `step`: what the checkpoint a run resumes from saw."""
    if log.exists():
        rows = [row for row in srsly.read_jsonl(log) if row["step"] <= step]
        with atomic_write(log) as tmp:
            srsly.write_jsonl(tmp, rows)


def train_loop(nlp, output: Path, start: Optional[State], config_fingerprint: str) -> None:
    """spaCy's training loop (spacy.training.loop.train) from `start`, or from step 0, with
    the checkpoints that let a later run resume."""
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.loop import (
        create_evaluation_callback,
        create_train_batches,
        train_while_improving,
        update_meta,
    )
    from spacy.util import registry, resolve_dot_names
    from thinc.api import fix_random_seed
    from tqdm import tqdm

    config = nlp.config.interpolate()
    if config["training"]["seed"] is not None:
        fix_random_seed(config["training"]["seed"])
    training = config["training"].copy()
    log_file = training["logger"].get("output_file")  # appended to here, not by the logger
    if log_file:
        training["logger"] = {**training["logger"], "output_file": None}
    T = registry.resolve(training, schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer, frozen = T["optimizer"], T["frozen_components"]
    batches = create_train_batches(nlp, train_corpus, T["batcher"], T["max_epochs"])
    offset = start.step if start else 0
    if start is not None and T["max_steps"] and start.step >= T["max_steps"]:
        batches = iter(())  # it was killed while it saved its last step: nothing to train
    elif start is not None:  # the interrupted run's data, schedules, optimizer and generators
        done = start.step + 1  # batches it trained on: steps 0 to start.step
        skipped = tqdm(islice(batches, done), total=done, desc="Skipping trained batches")
        for _ in skipped:
            pass
        for _ in range(start.step):  # one more at the replayed step below: start.step + 1
            optimizer.step_schedules()
            if not isinstance(T["dropout"], float):  # a schedule: next() a step
                next(T["dropout"])
        folder = output / MODEL_LAST / STATE
        if not restore_optimizer(nlp, optimizer, folder):
            msg.warn("The optimizer's state was not saved: Adam starts its moments again.")
        set_random_states(pickle.loads((folder / "random.pkl").read_bytes()))
        # a first step without data: spaCy's loop evaluates it (the checkpoint's score
        # again), so that its later evaluations fall on the interrupted run's steps
        batches = chain([(start.epoch, [])], batches)
    before_update = T["before_update"]
    if before_update and offset:  # it is told the step of the whole run
        before_update = partial(shifted, before_update, offset)
    steps_iter = train_while_improving(
        nlp,
        optimizer,
        batches,
        create_evaluation_callback(nlp, dev_corpus, T["score_weights"]),
        dropout=T["dropout"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=0,  # counted below, from the best score of the whole run
        max_steps=T["max_steps"] - offset if T["max_steps"] else 0,
        eval_frequency=T["eval_frequency"],
        exclude=frozen,
        annotating_components=T["annotating_components"],
        before_update=before_update,
    )
    best_score, best_step = (start.best_score, start.best_step) if start else (None, 0)
    msg.info(f"Pipeline: {nlp.pipe_names}")
    msg.info(f"Initial learn rate: {optimizer.learn_rate}")
    with nlp.select_pipes(disable=frozen):
        log_step, finalize_logger = T["logger"](nlp, sys.stdout, sys.stderr)
        trainable = [n for n, p in nlp.pipeline if getattr(p, "is_trainable", False)]
    if log_file and start:
        keep_log_until(Path(log_file), start.step)
    log = open(log_file, "a" if start else "w", encoding="utf-8") if log_file else None
    step, epoch = offset, start.epoch if start else 0
    try:
        for _, info, evaluated in steps_iter:
            info["step"] = step = info["step"] + offset
            epoch = info["epoch"]
            if evaluated is not None and not (start and step == offset):
                best = best_score is None or info["score"] >= best_score
                if best_score is None or info["score"] > best_score:  # the earliest best
                    best_score, best_step = info["score"], step
                if log:  # before the checkpoint: a resumed run drops rows after its step
                    log.write(srsly.json_dumps(log_row(info, trainable, T["score_weights"])))
                    log.write("\n")
                    log.flush()
                with nlp.select_pipes(disable=frozen):
                    update_meta(T, nlp, info)
                state = State(config_fingerprint, step, epoch, best_score, best_step)
                save_checkpoint(nlp, optimizer, T, output, state, best)
                log_step(info)
            elif evaluated is None:
                log_step(None)
            if T["patience"] and step - best_step >= T["patience"]:
                break
    finally:
        finalize_logger()
        if log:
            log.close()
    state = State(config_fingerprint, step, epoch, best_score or 0.0, best_step, finished=True)
    save_checkpoint(nlp, optimizer, T, output, state, best=False)
    msg.good(f"Trained to step {step:,}: {output / MODEL_BEST} (step {best_step:,}).")
    if best_step == 0 and step > 0:
        msg.warn(
            f"{output / MODEL_BEST} is the pipeline before training (step 0): no later "
            "evaluation scored higher on the dev split. Train longer or check the data."
        )


def shifted(before_update, offset: int, nlp, args: Dict) -> None:
    before_update(nlp, {**args, "step": args["step"] + offset})


def print_plan(T: Dict, output: Path, start: Optional[State]) -> None:
    steps, every = T["max_steps"], T["eval_frequency"]
    done = f"resuming after step {start.step:,}" if start else "from step 0"
    msg.info(
        f"Training {steps:,} steps ({done}), evaluating every {every:,}: each evaluation "
        f"saves {output / MODEL_LAST} (and {output / MODEL_BEST} when it is the best so far)."
    )
    msg.info(
        "If the run stops, run the same command again to resume from the last evaluation; "
        "--vars.resume=false starts again from step 0."
    )
    schedule = T["optimizer"].get("learn_rate")
    warmup = schedule.get("warmup_steps") if isinstance(schedule, dict) else None
    if steps and warmup and warmup >= steps:
        msg.warn(
            f"The learning rate's warm-up ({warmup:,} steps) is not over by max_steps "
            f"{steps:,}: the rate never reaches its initial_rate (for a short run, lower "
            "warmup_steps in the config's [training.optimizer.learn_rate])."
        )
    if steps and every > steps:
        msg.warn(
            f"eval_frequency {every:,} is more than max_steps {steps:,}: the dev split is scored "
            f"at step 0 only, so {output / MODEL_BEST} will be the untrained pipeline (set "
            "--vars.eval_frequency to at most max_steps)."
        )
    elif steps and steps % every:
        msg.warn(
            f"max_steps {steps:,} is not a multiple of eval_frequency {every:,}: the last "
            f"{steps % every:,} steps are not scored, and reach {output / MODEL_LAST} only."
        )


def for_language(config, language: str) -> None:
    """The config of a pipeline for `language` rows: its [nlp] lang and tokenizer (those of
    scripts/labels.py), and the encoder the transformer "default" names for the language."""
    nlp = config["nlp"]
    nlp["lang"] = spacy_language(language)
    if nlp.get("tokenizer") != tokenizer_config(language):
        nlp["tokenizer"] = tokenizer_config(language)
    paths = config["paths"]
    if paths.get("transformer") is not None:
        paths["transformer"] = resolve_transformer(paths["transformer"], language)


def train(
    config_path: Path,
    output: Path,
    overrides: Dict,
    gpu_id: int,
    resume: bool,
    language: str = DEFAULT_LANGUAGE,
) -> None:
    """Train the config with its overrides for `language` rows into `output` on GPU `gpu_id`
    (-1: the CPU), going on from the last evaluation of an interrupted run with the same
    fingerprint if `resume`."""
    import spacy
    from spacy.cli._util import setup_gpu, show_validation_error
    from spacy.training.initialize import init_nlp
    from thinc.api import set_gpu_allocator

    setup_gpu(gpu_id)
    with show_validation_error(config_path):
        config = spacy.util.load_config(config_path, overrides=overrides, interpolate=False)
        for_language(config, language)
        allocator = config.interpolate()["training"]["gpu_allocator"]
    if gpu_id >= 0 and allocator:  # before a resumed run loads its weights onto the GPU
        set_gpu_allocator(allocator)
    config_fingerprint = fingerprint(config)
    output.mkdir(parents=True, exist_ok=True)
    tidy(output)
    start = starting_point(output, config_fingerprint, resume)
    if start is not None and start.finished:
        msg.good(
            f"{output} is trained already (step {start.step:,}) with this config, corpus and "
            "encoder: nothing to do (--vars.resume=false trains it again)."
        )
        return
    with show_validation_error(config_path, hint_fill=False):
        if start is None:
            remove_outputs(*(output / name for name in (MODEL_BEST, MODEL_LAST)))
            log = config["paths"].get(LOG_KEY)
            if log:
                remove_outputs(Path(log))
            nlp = init_nlp(config, use_gpu=gpu_id)
        else:
            weights = output / MODEL_LAST / STATE / "weights"  # saved if model-last is averaged
            nlp = spacy.load(weights if weights.exists() else output / MODEL_LAST)
    print_plan(nlp.config.interpolate()["training"], output, start)
    train_loop(nlp, output, start, config_fingerprint)


def main(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config", exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Output directory: model-best, model-last"),
    code: Optional[Path] = typer.Option(None, help="Python file with registered functions"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    resume: str = typer.Option("true", help="Resume an interrupted run: true or false"),
    language: str = typer.Option(DEFAULT_LANGUAGE, help="The corpus' language, or all"),
):
    """Train like `spacy train` (the same config overrides, e.g. --paths.train), resuming an
    interrupted run with the same fingerprint from its last evaluation."""
    from spacy.cli._util import import_code, parse_config_overrides

    from .check_gpu import parse_bool

    wants_resume = parse_bool(resume, "resume")
    import_code(code)
    train(config_path, output, parse_config_overrides(ctx.args), gpu_id, wants_resume, language)


if __name__ == "__main__":
    app = typer.Typer(add_completion=False)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(main)
    app()
