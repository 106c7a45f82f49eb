"""scripts/train.py: a fresh run is spaCy's own training (the same log as `spacy train`), a
checkpoint is valid only for the inputs that made it, and the optimizer's state survives the
new ids of a reloaded pipeline. (Killing and resuming a run end to end: test_workflow.py.)"""

import json
import random
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.training import Example

from scripts import train
from scripts.gpu_smoke import build_corpus

from .conftest import FIXTURE, ROOT, run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    paths, _ = build_corpus(FIXTURE, out)
    return paths


def cnn_overrides(corpus, log: Path):
    return {
        "paths.train": str(corpus["train"]),
        "paths.dev": str(corpus["dev"]),
        "paths.labels": str(corpus["labels"]),
        "paths.log": str(log),
        "training.max_steps": 20,
        "training.eval_frequency": 10,
    }


def train_args(corpus, out: Path, **changes) -> list:
    overrides = {**cnn_overrides(corpus, out / "train_log.jsonl"), **changes}
    args = [f"--{k}={v}" for k, v in overrides.items()]
    return [*args, "--code", ROOT / "scripts" / "architectures.py"]  # the configs' reader


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    """A run of scripts/train.py (cnn config, 20 steps, an evaluation every 10)."""
    out = tmp_path_factory.mktemp("ours") / "out"
    run = run_cli("scripts.train", ROOT / "configs" / "cnn.cfg", out, *train_args(corpus, out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def test_a_fresh_run_logs_what_spacy_train_logs(corpus, finished, tmp_path):
    """The library's own loop against ours, on the same config and seed."""
    out = tmp_path / "spacy"
    args = ["--output", out, *train_args(corpus, out)]
    run = run_cli("spacy", "train", ROOT / "configs" / "cnn.cfg", *args)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ours = (finished / "train_log.jsonl").read_text()
    assert ours == (out / "train_log.jsonl").read_text()
    assert [row["step"] for row in srsly.read_jsonl(finished / "train_log.jsonl")] == [0, 10, 20]
    state = train.read_state(finished)
    assert state.finished and state.step == 20
    assert (finished / "model-best" / "meta.json").exists()
    assert not (finished / "model-best" / train.STATE).exists()


def config_with(corpus, tmp_path, **changes):
    overrides = {**cnn_overrides(corpus, tmp_path / "log.jsonl"), **changes}
    return spacy.util.load_config(ROOT / "configs" / "cnn.cfg", overrides=overrides)


def test_the_fingerprint_follows_config_and_corpus_but_not_the_log(corpus, tmp_path):
    base = train.fingerprint(config_with(corpus, tmp_path))
    assert base == train.fingerprint(config_with(corpus, tmp_path))
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0}\n')  # written during training: not an input
    assert base == train.fingerprint(config_with(corpus, tmp_path))
    dropout = config_with(corpus, tmp_path, **{"training.dropout": 0.2})
    assert base != train.fingerprint(dropout)
    labels = Path(corpus["labels"])
    original = labels.read_text()
    try:
        labels.write_text(original + "\n")  # another file, however small the change
        assert base != train.fingerprint(config_with(corpus, tmp_path))
    finally:
        labels.write_text(original)


def write_state(output: Path, **fields):
    folder = output / train.MODEL_LAST / train.STATE
    folder.mkdir(parents=True)
    state = {"fingerprint": "abc", "step": 30, "epoch": 2, "best_score": 0.5, "best_step": 20}
    (folder / "state.json").write_text(json.dumps({**state, **fields}))


def test_a_checkpoint_resumes_only_the_run_that_made_it(tmp_path, capsys):
    assert train.starting_point(tmp_path, "abc", resume=True) is None  # nothing there
    write_state(tmp_path)
    assert train.starting_point(tmp_path, "abc", resume=True).step == 30
    assert train.starting_point(tmp_path, "abc", resume=False) is None
    assert "Starting fresh (resume=false)" in capsys.readouterr().out
    assert train.starting_point(tmp_path, "other", resume=True) is None
    out = " ".join(capsys.readouterr().out.split())
    assert "(step 30) was trained with another config, corpus or encoder" in out
    assert "starting fresh" in out


def test_the_log_keeps_the_rows_of_the_checkpoint_it_resumes(tmp_path):
    log = tmp_path / "train_log.jsonl"
    srsly.write_jsonl(log, [{"step": s} for s in (0, 10, 20)])  # 20: after the checkpoint
    train.keep_log_until(log, 10)
    assert [row["step"] for row in srsly.read_jsonl(log)] == [0, 10]


def small_pipeline():
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    examples = [
        Example.from_dict(nlp.make_doc("Ada went to Paris"), {"entities": [(0, 3, "PER")]}),
        Example.from_dict(nlp.make_doc("Rome is old"), {"entities": [(0, 4, "LOC")]}),
    ]
    nlp.initialize(lambda: examples)
    return nlp, examples


def test_the_optimizer_state_comes_back_under_the_new_ids_of_a_reloaded_pipeline(tmp_path):
    import numpy

    nlp, examples = small_pipeline()
    optimizer = nlp.create_optimizer()
    random.seed(0)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    assert train.save_optimizer(nlp, optimizer, tmp_path)
    nlp.to_disk(tmp_path / "nlp")

    reloaded = spacy.load(tmp_path / "nlp")
    again = reloaded.create_optimizer()
    assert train.restore_optimizer(reloaded, again, tmp_path)
    old, new = train.parameter_names(nlp), train.parameter_names(reloaded)
    assert set(old.values()) == set(new.values()) and set(old) != set(new)  # new ids
    by_name = {name: key for key, name in new.items()}
    assert len(optimizer.mom1) == len(again.mom1) > 0
    for key, moments in optimizer.mom1.items():
        numpy.testing.assert_array_equal(moments, again.mom1[by_name[old[key]]])
        assert again.nr_update[by_name[old[key]]] == optimizer.nr_update[key] == 3


def test_an_optimizer_key_of_an_unknown_layout_is_not_saved(tmp_path):
    nlp, examples = small_pipeline()
    optimizer = nlp.create_optimizer()
    nlp.update(examples, sgd=optimizer)
    optimizer.mom1[(10**9, "W")] = optimizer.mom1[next(iter(optimizer.mom1))]  # no such node
    assert not train.save_optimizer(nlp, optimizer, tmp_path)
    assert not train.restore_optimizer(nlp, nlp.create_optimizer(), tmp_path)


def test_what_a_killed_checkpoint_write_left_is_put_right(tmp_path):
    """Killed between atomic_write's two renames: model-last is only the hidden old copy;
    killed while writing: a hidden half-written copy."""
    (tmp_path / ".model-last.old-123" / train.STATE).mkdir(parents=True)
    (tmp_path / ".model-last.tmp-456").mkdir()
    (tmp_path / train.MODEL_BEST).mkdir()
    (tmp_path / ".model-best.tmp-789").mkdir()
    train.tidy(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [train.MODEL_BEST, train.MODEL_LAST]
    assert (tmp_path / train.MODEL_LAST / train.STATE).is_dir()


def run_until_a_checkpoint(args, output: Path) -> train.State:
    """Start `python -m scripts.train args`, kill it once it has saved a checkpoint that is
    not its last, and return that checkpoint's state."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "scripts.train", *map(str, args)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while (state := train.read_state(output)) is None or state.step == 0:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return train.read_state(output)


def test_a_killed_run_with_averaged_weights_resumes_as_the_uninterrupted_run(corpus, tmp_path):
    """With use_averages, model-last holds the averages: the weights to go on from are saved
    beside them. The resumed run logs what the uninterrupted one logged."""
    logs = {}
    for name in ("whole", "killed"):
        out = tmp_path / name
        changes = {"training.optimizer.use_averages": "true", "training.max_steps": 60}
        args = [ROOT / "configs" / "cnn.cfg", out, *train_args(corpus, out, **changes)]
        if name == "killed":
            state = run_until_a_checkpoint(args, out)
            assert not state.finished and state.step % 10 == 0 and state.step > 0
            assert (out / train.MODEL_LAST / train.STATE / "weights").is_dir()
        run = run_cli("scripts.train", *args)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        logs[name] = (out / "train_log.jsonl").read_text()
    assert logs["killed"] == logs["whole"]
    assert f"resuming after step {state.step:,}" in " ".join(run.stdout.split())


def test_a_run_killed_while_it_saved_its_last_step_only_finishes(corpus, finished, tmp_path):
    """Its checkpoint is at max_steps: nothing is left to train (and no limit is lost)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    state_file = out / train.MODEL_LAST / train.STATE / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))  # as at step 20's checkpoint
    again = run_cli("scripts.train", ROOT / "configs" / "cnn.cfg", out, *train_args(corpus, out))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert train.read_state(out).finished
    assert [r["step"] for r in srsly.read_jsonl(out / "train_log.jsonl")] == [0, 10, 20]


@pytest.mark.parametrize(
    "steps, every, rate, warnings",
    [
        (
            200,
            1000,
            {"warmup_steps": 250},
            ["eval_frequency 1,000 is more than max_steps 200", "warm-up (250 steps) is not over"],
        ),
        (250, 100, 0.001, ["the last 50 steps are not scored"]),
        (2000, 100, {"warmup_steps": 250}, []),
        (0, 1000, {"warmup_steps": 250}, []),  # no step limit: patience or epochs end it
    ],
)
def test_the_plan_warns_of_a_run_too_short_for_its_schedule(
    steps, every, rate, warnings, tmp_path, capsys
):
    plan = {"max_steps": steps, "eval_frequency": every, "optimizer": {"learn_rate": rate}}
    train.print_plan(plan, tmp_path, None)
    out = " ".join(capsys.readouterr().out.split())  # wasabi wraps its lines
    for warning in warnings:
        assert warning in out
    said = [w for w in ("is more than max_steps", "is not over", "not scored") if w in out]
    assert len(said) == len(warnings), out


def test_a_run_that_never_beats_step_0_says_so(corpus, tmp_path):
    """With a learning rate of 0 no evaluation scores higher than the first: model-best is
    the untrained pipeline, and the run says so."""
    out = tmp_path / "out"
    args = train_args(corpus, out, **{"training.optimizer.learn_rate": 0.0})
    run = run_cli("scripts.train", ROOT / "configs" / "cnn.cfg", out, *args)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    said = " ".join(run.stdout.split())
    assert "(step 0)." in said and "is the pipeline before training (step 0)" in said
