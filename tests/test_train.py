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


def test_a_fresh_run_logs_what_spacy_train_logs(corpus, tmp_path):
    """The library's own loop against ours, on the same config and seed."""
    logs = {}
    for name, command in (("spacy", ["spacy", "train"]), ("ours", ["scripts.train"])):
        out = tmp_path / name
        overrides = cnn_overrides(corpus, out / "train_log.jsonl")
        args = [f"--{k}={v}" for k, v in overrides.items()]
        args += ["--code", ROOT / "scripts" / "architectures.py"]  # the configs' corpus reader
        where = ["--output", out] if name == "spacy" else [out]
        run = run_cli(*command, ROOT / "configs" / "cnn.cfg", *where, *args)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        logs[name] = (out / "train_log.jsonl").read_text()
        assert (out / "model-best" / "meta.json").exists()
    assert logs["ours"] == logs["spacy"]
    assert [row["step"] for row in srsly.read_jsonl(tmp_path / "ours" / "train_log.jsonl")] == [
        0,
        10,
        20,
    ]
    state = train.read_state(tmp_path / "ours")
    assert state.finished and state.step == 20
    assert not (tmp_path / "ours" / "model-best" / train.STATE).exists()


def config_with(corpus, tmp_path, **changes):
    overrides = {**cnn_overrides(corpus, tmp_path / "log.jsonl"), **changes}
    return spacy.util.load_config(ROOT / "configs" / "cnn.cfg", overrides=overrides)


def test_the_fingerprint_follows_config_code_and_corpus_but_not_the_log(corpus, tmp_path):
    code = ROOT / "scripts" / "architectures.py"
    base = train.fingerprint(config_with(corpus, tmp_path), code)
    assert base == train.fingerprint(config_with(corpus, tmp_path), code)
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0}\n')  # written during training: not an input
    assert base == train.fingerprint(config_with(corpus, tmp_path), code)
    assert base != train.fingerprint(
        config_with(corpus, tmp_path, **{"training.dropout": 0.2}), code
    )
    assert base != train.fingerprint(config_with(corpus, tmp_path), None)
    labels = Path(corpus["labels"])
    original = labels.read_text()
    try:
        labels.write_text(original + "\n")  # another file, however small the change
        assert base != train.fingerprint(config_with(corpus, tmp_path), code)
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
    assert "(step 30) was trained with another config, corpus, code or encoder" in out
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
