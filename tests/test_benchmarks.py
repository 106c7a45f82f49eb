"""The scoring parts of the benchmarks: what they count must be right, or the figures in
benchmarks/RESULTS.md mean nothing. (The benchmarks themselves are project commands.) And what
a fresh clone with the install docs/benchmarks.md names meets: every module they import is a
named requirement, and a missing input stops a benchmark with one line, never a traceback."""

import ast
import json
import shlex
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.bench_accuracy import hf_encode
from benchmarks.bench_inference import exact_f1, load_test
from scripts.tiny_transformer import build_tiny_transformer

from .conftest import ROOT, run_cli

SENTS = [
    {
        "tokens": ["Angela", "Merkel", "visited", "New", "York", "."],
        "tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"],
    },
    {"tokens": ["No", "entities", "here"], "tags": ["O", "O", "O"]},
    {"tokens": ["AL-AIN", "beat", "Real", "Madrid"], "tags": ["B-ORG", "O", "B-ORG", "I-ORG"]},
]


@pytest.fixture
def assets(tmp_path):
    path = tmp_path / "assets"
    path.mkdir()
    (path / "test.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SENTS), encoding="utf-8")
    return path


def test_load_test_gold_spans_are_char_offsets_of_the_joined_text(assets):
    texts, gold, n_words = load_test(assets, limit=0)
    assert texts[0] == "Angela Merkel visited New York ."
    assert n_words == 13
    found = {(i, texts[i][s:e], label) for i, s, e, label in gold}
    assert found == {
        (0, "Angela Merkel", "PER"),
        (0, "New York", "LOC"),
        (2, "AL-AIN", "ORG"),
        (2, "Real Madrid", "ORG"),
    }
    texts, gold, n_words = load_test(assets, limit=1)
    assert len(texts) == 1 and len(gold) == 2 and n_words == 6


def test_exact_span_f1_counts_a_word_cut_inside_as_wrong(assets):
    _, gold, _ = load_test(assets, limit=0)
    assert exact_f1(set(gold), gold) == 1.0
    # "AL-AIN" returned as "AL" and "AIN": two false positives and one miss
    cut = (set(gold) - {(2, 0, 6, "ORG")}) | {(2, 0, 2, "ORG"), (2, 3, 6, "ORG")}
    assert exact_f1(cut, gold) == pytest.approx(2 * 3 / (5 + 4))
    wrong_label = (set(gold) - {(0, 0, 13, "PER")}) | {(0, 0, 13, "ORG")}
    assert exact_f1(wrong_label, gold) == pytest.approx(0.75)
    assert exact_f1(set(), set()) == 1.0


def test_hf_recipe_labels_the_first_subword_only(tmp_path):
    from transformers import AutoTokenizer

    texts = [" ".join(s["tokens"]) for s in SENTS] * 20
    model_dir = build_tiny_transformer(tmp_path / "tiny", texts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label2id = {"O": 0, "B-LOC": 1, "B-ORG": 2, "B-PER": 3, "I-LOC": 4, "I-ORG": 5, "I-PER": 6}
    tokens = [["Madridrid", "beat", "Yorker"]]
    enc = hf_encode(tokenizer, tokens, [["B-PER", "O", "B-LOC"]], label2id)
    word_ids, labels = enc.word_ids(0), enc["labels"][0]
    assert word_ids.count(0) > 1, "the test needs a word split into several pieces"
    first = {w: word_ids.index(w) for w in (0, 1, 2)}
    for pos, (word, label) in enumerate(zip(word_ids, labels)):
        if word is None or pos != first[word]:
            assert label == -100
    assert [labels[first[w]] for w in (0, 1, 2)] == [3, 0, 1]


def test_child_processes_see_the_project_first_and_keep_the_callers_pythonpath(monkeypatch):
    import os

    from benchmarks.common import ROOT, child_env

    monkeypatch.setenv("PYTHONPATH", "/opt/site")
    env = child_env(OMP_NUM_THREADS="2")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/opt/site"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "2"
    monkeypatch.delenv("PYTHONPATH")
    assert child_env()["PYTHONPATH"] == str(ROOT)


def test_bench_inference_rejects_a_bad_system_before_running_any(tmp_path):
    import typer
    from typer.testing import CliRunner

    from benchmarks.bench_inference import main

    app = typer.Typer()
    app.command()(main)
    out = tmp_path / "inference.json"
    args = [
        "--spacy-model",
        str(tmp_path / "none"),
        "--hf-model",
        str(tmp_path / "none"),
        "--systems",
        "spacy-256,hf-bogus",
        "--output",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    # a usage error (2), not the first system's failure on the missing model (1)
    assert result.exit_code == 2, result.output
    assert "hf-bogus" in result.output
    assert not out.exists()


def test_bench_accuracy_checks_spacy_overrides_before_training(tmp_path):
    from typer.testing import CliRunner

    from benchmarks.bench_accuracy import app, spacy_settings

    settings = spacy_settings(2e-4, 1000, ["training.dropout=0.2", "a.b=x=y"])
    assert settings["training.dropout"] == "0.2" and settings["a.b"] == "x=y"
    assert settings["training.optimizer.learn_rate.initial_rate"] == 2e-4
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--spacy-set", "training.dropout", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "KEY=VALUE" in result.output
    assert not out.exists()


def test_bench_accuracy_on_a_config_without_the_backbone_says_what_it_compares(tmp_path):
    from typer.testing import CliRunner

    from benchmarks.bench_accuracy import app

    out = tmp_path / "run"
    cnn = ROOT / "configs" / "cnn.cfg"
    result = CliRunner().invoke(app, ["--config", str(cnn), "--out", str(out)])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{cnn}: reads no transformer; bench_accuracy compares a pipeline")
    assert "(${paths.transformer}, as configs/trf.cfg)" in line
    assert not out.exists()


def test_inference_systems_are_parsed_or_refused():
    import typer

    from benchmarks.bench_inference import parse_system

    assert parse_system("spacy") == ("spacy", (None, None))
    assert parse_system("spacy-256") == ("spacy", (None, 256))
    assert parse_system("spacy-bf16") == ("spacy", ("bf16", None))
    assert parse_system("spacy-bf16-128") == ("spacy", ("bf16", 128))
    assert parse_system("hf-first") == ("hf", "first")
    bad_systems = [
        "spacy-0",
        "spacy-007",
        "spacy-",
        "spacy-plain",
        "spacy-bf16-x",
        "spacy-bf16--5",
        "spacy-bf16-",
        "spacy-fp16",
    ]
    for bad in bad_systems + ["hf-mean", "flair"]:
        with pytest.raises(typer.BadParameter, match="unknown system"):
            parse_system(bad)


def test_the_step_rate_is_the_mean_over_the_timed_steps():
    from benchmarks.common import step_rate

    # two slow warm steps, then nine steps of 1 s and one slow batch of 6 s
    times = [0.0, 5.0, 10.0] + [10.0 + i for i in range(1, 10)] + [25.0]
    batches = [(t, 100) for t in times]
    seconds, words = step_rate(batches, first=2)  # bench_accuracy's calibration
    assert seconds == pytest.approx(1.5)  # 15 s over 10 steps; the median says 1
    assert words == pytest.approx(100 * 10 / 15)
    # words/s of steps 1..N: step 0 (and the dev evaluation after it) left out
    batches = [(0.0, 1000), (10.0, 100), (11.0, 200), (13.0, 300)]
    assert step_rate(batches, steps=2) == (1.5, (100 + 200) / (13.0 - 10.0))
    assert step_rate(batches) == step_rate(batches, steps=2)  # every step whose end is logged
    with pytest.raises(ValueError, match="4 steps logged"):
        step_rate(batches, steps=3)
    with pytest.raises(ValueError, match="3 steps logged"):
        step_rate([(0.0, 1), (1.0, 1), (2.0, 1)], first=2)


def test_linear_gflops_counts_two_flops_per_multiply_add(monkeypatch):
    import benchmarks.common as common

    clock = iter(range(100))
    monkeypatch.setattr(common.time, "perf_counter", lambda: float(next(clock)))
    # clock 0: start; 1 and 2: two calls fit in 2.5 s; 3: stop; 4: elapsed = 4 s
    assert common.linear_gflops(8, 4, 2, seconds=2.5) == pytest.approx(2 * 8 * 4 * 2 * 2 / 4 / 1e9)


def test_machine_drift_compares_every_measure_of_the_run():
    from benchmarks.bench_accuracy import machine_drift

    steady = {"hf": {"before": 60.0, "after": 61.0}, "spacy": {"before": 60.5, "after": 60.0}}
    assert machine_drift(steady) == pytest.approx(61 / 60 - 1)
    slowed = {"hf": {"before": 60.0, "after": 60.0}, "spacy": {"before": 50.0, "after": 40.0}}
    assert machine_drift(slowed) == pytest.approx(0.5)


def test_timed_batcher_hands_out_spacys_batches_and_logs_their_words(tmp_path):
    import spacy
    from spacy.training import Example
    from spacy.util import registry

    from benchmarks import batch_timer  # noqa: F401  (registers the timed batchers)
    from benchmarks.common import ROOT, read_batches, timed_config

    nlp = spacy.blank("en")
    examples = [
        Example(nlp.make_doc(" ".join(["w"] * n)), nlp.make_doc(" ".join(["w"] * n)))
        for n in (3, 5, 2, 7, 4, 6, 1, 8)
    ]
    plain = registry.batchers.get("spacy.batch_by_words.v1")(
        size=10, tolerance=0.2, discard_oversize=False
    )
    timed = registry.batchers.get("benchmarks.timed_batch_by_words.v1")(
        log_path=str(tmp_path / "log.tsv"), size=10, tolerance=0.2, discard_oversize=False
    )
    expected = [[len(eg) for eg in batch] for batch in plain(examples)]
    assert [[len(eg) for eg in batch] for batch in timed(examples)] == expected
    logged = read_batches(tmp_path / "log.tsv")
    assert [n for _, n in logged] == [sum(b) for b in expected]
    # each config's batcher, swapped for its timed copy with the same settings
    for config, timed_name in (
        ("cnn", "benchmarks.timed_batch_by_words.v1"),
        ("trf", "benchmarks.timed_batch_by_padded.v1"),
    ):
        timed = timed_config(ROOT / "configs" / f"{config}.cfg", tmp_path / "x.tsv")
        as_is = spacy.util.load_config(ROOT / "configs" / f"{config}.cfg")
        settings = dict(as_is["training"]["batcher"], log_path=str(tmp_path / "x.tsv"))
        settings["@batchers"] = timed_name
        assert dict(timed["training"]["batcher"]) == settings


def test_wait_peak_rss_sees_the_memory_of_a_child_of_the_child():
    """The peak of the whole process tree: a child that starts a process holding 200 MB."""
    import subprocess
    import sys

    from benchmarks.common import wait_peak_rss

    grandchild = "import time; x = bytearray(200_000_000); time.sleep(1.5)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    peak = wait_peak_rss(subprocess.Popen([sys.executable, "-c", code]))
    assert peak > 200_000_000


def test_synthetic_set_has_the_official_proportions_and_is_generated_once(tmp_path, monkeypatch):
    from benchmarks import common
    from benchmarks.common import OFFICIAL

    source = tmp_path / "synthetic"
    common.make_synthetic(source, scale=0.001)
    for split, name in {"train": "train", "dev": "validation", "test": "test"}.items():
        rows = (source / f"{name}_en.jsonl").read_text(encoding="utf-8").splitlines()
        english = [r for r in map(json.loads, rows) if r["lang"] == "en"]
        assert len(english) == int(OFFICIAL.sizes[split] * 0.001)  # beside other languages
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # nothing half-written left
    monkeypatch.setattr(common, "write_split", None)  # a second call writes nothing
    common.make_synthetic(source, scale=0.001)


def requirement_names(path: Path) -> set:
    """The distributions a requirements file names, through its -r lines."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= requirement_names(path.parent / line[2:].strip())
        elif line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def imported_modules(folder: Path) -> dict:
    """{top-level module: files} of every import in the folder's Python files."""
    found = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], set()).add(path.name)
    return found


def test_every_module_the_benchmarks_import_is_a_named_requirement():
    named = requirement_names(ROOT / "requirements-bench.txt")
    distributions = packages_distributions()
    imported = imported_modules(ROOT / "benchmarks")
    assert {"psutil", "typer", "torch"} <= set(imported)  # the parser finds them
    missing = []
    for module, files in sorted(imported.items()):
        if module in sys.stdlib_module_names or (ROOT / module).is_dir():
            continue  # the standard library, the project's own scripts/ and benchmarks/
        provided_by = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not provided_by & named:
            missing.append(f"{module} ({', '.join(sorted(files))}): from {sorted(provided_by)}")
    assert not missing, "not in requirements-bench.txt or requirements.txt: " + "; ".join(missing)


def one_line_stop(result, *expected: str) -> str:
    """The one line a benchmark stopped with; it must name each of `expected`."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    for text in expected:
        assert text in line
    return line


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["benchmarks.bench_accuracy", "--corpus", "{tmp}/corpus", "--out", "{tmp}/out"]
            + ["--assets", "{tmp}"],
            ["{tmp}/train.jsonl: not found", "spacy project run corpus"],
        ),
        (
            ["benchmarks.bench_train_speed", "--corpus", "{tmp}/corpus"],
            ["{tmp}/corpus/train: not found", "spacy project run corpus"],
        ),
        (
            ["benchmarks.bench_inference", "--spacy-model", "{tmp}/spacy-model"]
            + ["--hf-model", "{tmp}/hf-model", "--assets", "{tmp}"],
            ["{tmp}/test.jsonl: not found"],
        ),
        (
            ["benchmarks.bench_inference", "--spacy-model", "{tmp}/spacy-model"]
            + ["--hf-model", "{tmp}/hf-model", "--assets", "{tmp}/assets"],
            ["{tmp}/spacy-model: no such pipeline", "spacy project run bench-accuracy"],
        ),
        (
            ["benchmarks.bench_annotate", "--model", "{tmp}/model", "--work", "{tmp}/work"],
            ["{tmp}/model: no such pipeline", "--vars.dataset=conll2003"],
        ),
        (
            ["benchmarks.bench_train_scale", "--configs", "cnn,trf", "--encoder", "no_such_encoder"]
            + ["--workdir", "{tmp}/work"],
            ["'no_such_encoder' is not installed", "requirements-encoder.txt"],
        ),
        (
            ["benchmarks.bench_llm", "conll2003", "--assets", "{tmp}", "--gpu-id", "-1"]
            + ["--run-dir", "{tmp}/work", "--output", "{tmp}/out/llm.json"],
            ["{tmp}/train.jsonl: not found", "spacy project run corpus"],
        ),
        (
            ["benchmarks.bench_train_ceiling", "--corpus", "{tmp}/corpus"]
            + ["--workdir", "{tmp}/work"],
            ["{tmp}/corpus/train: not found", "spacy project run corpus"],
        ),
    ],
    ids=[
        "accuracy",
        "train-speed",
        "inference-data",
        "inference-model",
        "annotate",
        "scale",
        "llm",
        "ceiling",
    ],
)
def test_a_missing_input_stops_a_benchmark_with_one_line(tmp_path, args, expected):
    (tmp_path / "assets").mkdir()  # {tmp}/assets has the test split, {tmp} nothing
    (tmp_path / "assets" / "test.jsonl").write_text(json.dumps(SENTS[0]) + "\n")
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    one_line_stop(result, *[e.replace("{tmp}", str(tmp_path)) for e in expected])
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()  # before work


def test_a_failing_child_stops_a_benchmark_with_one_line_naming_it_and_its_log(tmp_path):
    from benchmarks.common import run_child

    cmd = [sys.executable, "-c", "print('working'); raise SystemExit('out of memory')"]
    log = tmp_path / "logs" / "child.log"
    with pytest.raises(SystemExit) as stop:
        run_child(cmd, log)
    assert stop.value.code == f"{shlex.join(cmd)} failed: its output is in {log}"
    assert log.read_text().splitlines() == ["working", "out of memory"]


def test_a_benchmark_whose_child_fails_ends_with_one_line(assets, tmp_path):
    """bench_inference runs each system in a child process: a pipeline that does not load."""
    (tmp_path / "broken").mkdir()
    args = ["--spacy-model", tmp_path / "broken", "--assets", assets, "--systems", "spacy"]
    result = run_cli("benchmarks.bench_inference", *args, "--logs", tmp_path / "logs")
    log = tmp_path / "logs" / "inference-spacy.log"
    one_line_stop(
        result, "-m benchmarks.bench_inference", "--only spacy", f"its output is in {log}"
    )
    assert "Traceback" in log.read_text()  # the child's own, for whoever reads the log


def test_bench_train_scale_with_cnn_alone_needs_no_encoder(tmp_path):
    """cnn reads no pretrained encoder: a missing encoder package does not stop it."""
    args = ["benchmarks.bench_train_scale", "--configs", "cnn", "--encoder", "no_such_encoder"]
    args += ["--scale", "0.001", "--repeats", "0", "--workdir", str(tmp_path)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = json.loads((tmp_path / "corpus" / "en_multinerd_a" / "stats.json").read_text())
    assert stats["splits"]["train"]["sentences"] > 0


def test_the_cpu_sub_batches_swept_on_a_random_pipeline_of_another_family(assets, tmp_path, capsys):
    """bench-inference's second part, tiny: random_pipeline builds a DeBERTa-v3 pipeline, and
    bench_inference finds the same entities with another sub-batch size."""
    import shutil

    from benchmarks import random_pipeline
    from scripts.gpu_smoke import build_corpus

    from .conftest import FIXTURE

    shutil.copy(assets / "test.jsonl", assets / "train.jsonl")
    corpus, _ = build_corpus(FIXTURE, tmp_path)  # its labels file: System A's 15 types
    out = tmp_path / "random"
    random_pipeline.main("deberta-v3", "tiny", out, assets, corpus["labels"])
    assert "word pieces a word on the test texts (13 words)" in capsys.readouterr().out
    args = ["--spacy-model", out / "pipeline", "--assets", assets, "--repeats", "1"]
    args += ["--logs", tmp_path / "logs"]
    # 8 padded pieces: each text a sub-batch of its own, against the 3 texts in one
    run = run_cli("benchmarks.bench_inference", *args, "--systems", "spacy,spacy-8")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (line,) = [ln for ln in run.stdout.splitlines() if ln.startswith("spacy-8:")]
    assert "spacy is " in line and line.endswith("the same entities")


def test_the_loop_profile_finds_every_part_it_times_in_the_installed_libraries():
    """What it wraps exists: a library that moved a function shows here, not as a profile
    with a part missing."""
    from benchmarks import loop_profile

    found = loop_profile.targets()
    assert set(found) == set(loop_profile.PARTS)
    assert all(func is not None for _, _, func in found.values()), found


def test_the_loop_profile_counts_nested_calls_once_and_times_inside_a_generator(monkeypatch):
    from benchmarks import loop_profile

    monkeypatch.setattr(loop_profile, "totals", {"update": 0.0, "data": 0.0})
    clock = iter(range(100))
    monkeypatch.setattr(loop_profile.time, "perf_counter", lambda: float(next(clock)))

    def update(depth):
        return update_timed(depth - 1) if depth else "done"

    update_timed = loop_profile.timed("update", update)
    assert update_timed(3) == "done"
    assert loop_profile.totals["update"] == 1.0  # one outer call: two clock readings

    def items():
        yield from "ab"

    assert list(loop_profile.timed("data", items)()) == ["a", "b"]
    assert loop_profile.totals["data"] == 3.0  # three next() calls, the last one empty


def test_the_ceiling_profile_rows_are_ms_per_1000_words_and_add_up():
    from benchmarks.bench_train_ceiling import profile_rows

    seconds = {"loop": 10.0, "data": 1.0, "update": 8.0, "copy": 0.5, "transformer": 3.0}
    seconds.update(tokenize=0.5, encoder_forward=1.5, encoder_backward=2.0, evaluate=0.5)
    rows = profile_rows(seconds, words=5000)
    total = rows.pop("total (the loop, evaluations out)")
    assert total == pytest.approx(1e6 * 9.5 / 5000)
    assert sum(rows.values()) == pytest.approx(total)
    assert rows["NER: features, parser, gold, pooling"] == pytest.approx(1e6 * 2.5 / 5000)
