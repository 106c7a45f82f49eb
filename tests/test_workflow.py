"""`spacy project run all` end to end on the fixture: offline, on CPU, with a tiny DeBERTa-v3
built here. Then the packaged wheels are installed into a fresh virtual environment and
loaded by name with no project checkout, no network and no transformer directory."""

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from importlib.metadata import version
from pathlib import Path
from typing import Dict, List

import pytest

from scripts.labels import MULTINERD_TYPES, SCHEMES
from scripts.report import loss_per_step
from scripts.tiny_transformer import (
    FAMILIES,
    build_tiny_transformer,
    fixture_texts,
    write_tiny_config,
)

from .conftest import FIXTURE, ROOT, copy_project, run_cli, wheel_requirements

SCHEME_B = SCHEMES["b"].types
PACKAGED_FAMILY = "deberta-v3"
TINY_EPS = 1e-12
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project after `spacy project run all` on the fixture."""
    base = tmp_path_factory.mktemp("workflow")
    project = copy_project(base / "project")
    write_tiny_config(project / "configs" / "trf.cfg", project / "configs" / "tiny.cfg")
    # a family beyond BERT, with no pooler and a SentencePiece tokenizer, is what the packages
    # carry (every family trains and predicts in test_encoders.py)
    tiny = build_tiny_transformer(base / "tiny-deberta", fixture_texts(FIXTURE), PACKAGED_FAMILY)
    # BERT's layer_norm_eps, which a JSON of 9 decimals loses: the packages must keep it
    config = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**config, "layer_norm_eps": TINY_EPS}))
    fresh = tree(project)
    vars_ = [
        f"--vars.source={FIXTURE}",
        "--vars.config=tiny",
        f"--vars.transformer={tiny}",
        "--vars.gpu_id=-1",
        "--vars.mixed_precision=false",
        "--vars.max_steps=80",
        "--vars.eval_frequency=20",
    ]
    result = run_cli("spacy", "project", "run", "all", project, *vars_, cwd=project, env=OFFLINE)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return {"dir": project, "tiny": tiny, "log": result.stdout, "vars": vars_, "fresh": fresh}


def tree(folder: Path) -> Dict[str, str]:
    """{path: md5} of the files under `folder`, without weasel's lock file and Python's
    caches (neither is an output of the workflow)."""
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "project.lock" and "__pycache__" not in p.parts
    }


def read_log(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_metrics_json_has_overall_and_per_type_scores(project):
    for scheme, types in (("a", MULTINERD_TYPES), ("b", SCHEME_B)):
        metrics = json.loads(
            (project["dir"] / "metrics" / f"en_multinerd_{scheme}_tiny.json").read_text()
        )
        for key in ("ents_p", "ents_r", "ents_f"):
            assert 0.0 <= metrics[key] <= 1.0
        assert set(metrics["ents_per_type"]) == set(types)
        assert metrics["ents_f"] > 0.3  # it learned something on the fixture


@pytest.mark.slow
def test_report_names_every_type_and_the_cross_check(project):
    metrics_dir = project["dir"] / "metrics"
    report = (metrics_dir / "en_multinerd_tiny_report.md").read_text()
    for etype in MULTINERD_TYPES:
        assert f"| {etype} |" in report
    data = json.loads((metrics_dir / "en_multinerd_tiny_report.json").read_text())
    assert data["shared_types"] and set(data["shared_types"]) == set(SCHEME_B)
    for name in ("en_multinerd_a_tiny", "en_multinerd_b_tiny"):
        system = data["systems"][name]
        assert system["encoder"] == f"{project['tiny']} (deberta-v2)"  # what was trained
        assert system["max_difference"] <= 0.001
        # the report's own predictions reproduce `spacy evaluate`'s figures
        assert abs(system["spacy"]["f"] - system["metrics"]["ents_f"]) < 1e-6
        assert 0.0 < system["token_accuracy"] <= 1.0
        for png in (f"{name}_confusion.png", f"{name}_training.png"):
            assert (metrics_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert "agree to 0.001 for every system" in report


@pytest.mark.slow
def test_training_curve_falls_per_step_where_the_raw_sum_grows(project):
    log = read_log(project["dir"] / "training" / "en_multinerd_a_tiny" / "train_log.jsonl")
    assert [row["step"] for row in log] == [0, 20, 40, 60, 80]
    raw = [row["losses"]["ner"] for row in log]
    assert raw[1] > raw[0]  # 20 steps summed against 1: what the old curve showed
    per_step = loss_per_step(log)["ner"]
    assert per_step[1] < per_step[0] and per_step[2] < per_step[0]


@pytest.mark.slow
def test_readme_results_table_is_filled_from_metrics(project):
    readme = (project["dir"] / "README.md").read_text()
    table = readme.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    a = json.loads((project["dir"] / "metrics" / "en_multinerd_a_tiny.json").read_text())
    assert f"{100 * a['ents_f']:.2f}" in table
    assert "(metrics/en_multinerd_tiny_report.md)" in table and "| System A F1 |" in table
    assert "| VEHI |" in table


@pytest.mark.slow
def test_package_meta_carries_scheme_dataset_and_test_scores(project):
    meta = json.loads((project["dir"] / "packages" / "en_multinerd_b_tiny-meta.json").read_text())
    assert meta["label_scheme"]["labels"] == list(SCHEME_B)
    assert meta["dataset"]["name"] == "multinerd"
    metrics = json.loads((project["dir"] / "metrics" / "en_multinerd_b_tiny.json").read_text())
    assert meta["performance"]["ents_per_type"] == metrics["ents_per_type"]
    assert meta["name"] == "multinerd_b_tiny" and meta["version"] == "1.0.0"
    assert meta["encoder"] == str(project["tiny"])  # what it was trained from


@pytest.mark.slow
def test_each_package_readme_states_multinerds_licence_terms(project):
    """`spacy package` writes the README from the meta's description: the licence's terms
    stand there, where a user decides whether the pipeline may be used."""
    for scheme in "ab":
        (readme,) = (project["dir"] / "packages").glob(f"en_multinerd_{scheme}_tiny-*/README.md")
        text = " ".join(readme.read_text(encoding="utf-8").split())
        assert "inherits its CC BY-NC-SA 4.0 terms: non-commercial use only" in text
        assert "under the same licence" in text


@pytest.mark.slow
def test_rerun_skips_finished_steps(project):
    again = run_cli(
        "spacy", "project", "run", "all", project["dir"], *project["vars"], cwd=project["dir"]
    )
    assert again.returncode == 0
    for step in ("fetch", "convert", "train-a", "train-b", "evaluate", "report", "package"):
        assert f"Skipping '{step}': nothing changed" in again.stdout


@pytest.mark.slow
def test_wheels_install_into_a_fresh_venv_and_load_offline(project, tmp_path):
    wheels = {
        s: next((project["dir"] / "packages").glob(f"en_multinerd_{s}_tiny-*/dist/*.whl"))
        for s in "ab"
    }
    for wheel in wheels.values():  # pip brings what loading it needs: spaCy and its plugin
        requires = wheel_requirements(wheel)
        assert {"spacy", "spacy-transformers"} <= set(requires), requires
        assert requires["spacy"].contains(version("spacy")), requires
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The fresh venv sees this environment's packages (spaCy, torch...) through a .pth file,
    # so that pip can check the wheel's requirements without a network.
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "deps.pth").write_text("\n".join(sorted(here)) + "\n")
    install = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            *map(str, wheels.values()),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    hidden = project["tiny"].with_name("moved-away")  # the pipeline must not need it
    project["tiny"].rename(hidden)
    texts = list(fixture_texts(FIXTURE))
    code = (
        "import json, sys, spacy\n"
        "texts = json.loads(sys.stdin.read())\n"
        "out = {}\n"
        "for name in ('en_multinerd_a_tiny', 'en_multinerd_b_tiny'):\n"
        "    nlp = spacy.load(name)\n"
        "    docs = list(nlp.pipe(texts))\n"
        "    out[name] = {'file': str(spacy.util.get_package_path(name)),\n"
        "                 'labels': sorted({e.label_ for d in docs for e in d.ents}),\n"
        "                 'n_ents': sum(len(d.ents) for d in docs),\n"
        "                 'scheme': nlp.meta['label_scheme']['labels']}\n"
        "    encoder = nlp.get_pipe('transformer').model.transformer\n"
        "    out[name].update(encoder=encoder.config.model_type,\n"
        "                     config_eps=encoder.config.layer_norm_eps.hex(),\n"
        "                     eps=sorted({m.eps for m in encoder.modules()\n"
        "                                 if hasattr(m, 'eps')}))\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run(
        [str(py), "-c", code],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**OFFLINE, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    hidden.rename(project["tiny"])
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for _name, info in out.items():
        assert info["file"].startswith(str(venv))  # installed, not the project checkout
        assert info["n_ents"] > 0
        assert info["encoder"] == FAMILIES[PACKAGED_FAMILY].model_type
        # the encoder's config as trained, bit for bit, and its layers built from it
        assert info["config_eps"] == TINY_EPS.hex() and info["eps"] == [TINY_EPS]
    assert set(out["en_multinerd_b_tiny"]["labels"]) <= set(SCHEME_B)
    assert out["en_multinerd_b_tiny"]["scheme"] == list(SCHEME_B)
    assert set(out["en_multinerd_a_tiny"]["labels"]) - set(SCHEME_B)  # A predicts more types


def test_unreachable_transformer_names_the_var_without_traceback(tmp_path):
    result = run_cli(
        "scripts.before_train",
        ROOT / "configs" / "trf.cfg",
        "--transformer",
        "roberta-base",
        env=OFFLINE,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "'transformer'" in output and "roberta-base" in output


def test_the_check_before_training_needs_no_transformer_for_cnn(tmp_path):
    result = run_cli(
        "scripts.before_train", ROOT / "configs" / "cnn.cfg", "--transformer", "roberta-base"
    )
    assert result.returncode == 0, result.stdout + result.stderr  # offline: not looked up
    assert "Transformer" not in result.stdout


def copy_of(project, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(project["dir"], copy)
    return copy


@pytest.mark.slow
def test_clean_removes_what_all_made_and_nothing_else(project, tmp_path):
    copy = copy_of(project, tmp_path)
    (copy / "notes.txt").write_text("mine")  # not the workflow's: it stays
    result = run_cli("spacy", "project", "run", "clean", copy, *project["vars"], cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(copy) == {**project["fresh"], "notes.txt": tree(copy)["notes.txt"]}


@pytest.mark.slow
def test_another_config_trains_beside_the_first_and_the_vars_name_its_outputs(project, tmp_path):
    from weasel.util import load_project_config

    copy = copy_of(project, tmp_path)
    before = tree(copy / "training" / "en_multinerd_a_tiny")
    cnn = [v for v in project["vars"] if not v.startswith("--vars.config")]
    cnn += ["--vars.config=cnn", "--vars.max_steps=10", "--vars.eval_frequency=10"]
    result = run_cli("spacy", "project", "run", "train-a", copy, *cnn, cwd=copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (copy / "training" / "en_multinerd_a_cnn" / "model-best" / "ner").is_dir()
    assert tree(copy / "training" / "en_multinerd_a_tiny") == before  # the trf one is kept
    config = load_project_config(copy, overrides={"vars.config": "cnn"})
    for var in ("demo_a", "annotate_model"):
        assert config["vars"][var] == "training/en_multinerd_a_cnn/model-best"
    assert config["vars"]["name_b"] == "en_multinerd_b_cnn"


@pytest.mark.slow
def test_a_killed_training_run_resumes_and_ends_as_the_uninterrupted_run(project, tmp_path):
    """Killed right after the checkpoint of step 20, the re-run goes on from step 20 and
    computes on the CPU exactly what the uninterrupted run computed: the same log, losses
    and scores, and the same model-best."""
    copy = copy_of(project, tmp_path)
    out = copy / "training" / "en_multinerd_a_tiny"
    shutil.rmtree(out)
    args = [sys.executable, "-m", "spacy", "project", "run", "train-a", str(copy)]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)}
    training = subprocess.Popen(args + project["vars"], cwd=copy, env=env, start_new_session=True)
    try:
        state = out / "model-last" / "training-state" / "state.json"
        deadline = time.monotonic() + 300
        while not (state.exists() and json.loads(state.read_text())["step"] == 20):
            assert training.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(training.pid, signal.SIGKILL)  # weasel and the training under it
        training.wait()
    assert [row["step"] for row in read_log(out / "train_log.jsonl")] == [0, 20]
    resumed = run_cli("spacy", "project", "run", "train-a", copy, *project["vars"], cwd=copy)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming after step 20" in " ".join(resumed.stdout.split())
    reference = project["dir"] / "training" / "en_multinerd_a_tiny"
    assert read_log(out / "train_log.jsonl") == read_log(reference / "train_log.jsonl")
    meta = [json.loads((d / "model-best" / "meta.json").read_text()) for d in (out, reference)]
    assert meta[0]["performance"] == meta[1]["performance"]


@pytest.mark.slow
def test_a_finished_run_is_kept(project, tmp_path):
    copy = copy_of(project, tmp_path)
    out = copy / "training" / "en_multinerd_a_tiny"
    before = tree(out)
    (copy / "project.lock").unlink()  # weasel would skip the step: ask the trainer
    again = run_cli("spacy", "project", "run", "train-a", copy, *project["vars"], cwd=copy)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "is trained already (step 80)" in " ".join(again.stdout.split())
    assert tree(out) == before


@pytest.mark.slow
def test_resume_false_starts_again_from_step_0(project, tmp_path):
    """The var reaches the trainer: the project's training line with resume=false (and, to
    be short, two steps) starts from step 0 instead of keeping the finished run."""
    from weasel.util import load_project_config

    copy = copy_of(project, tmp_path)
    overrides = dict(v[len("--vars.") :].split("=", 1) for v in project["vars"])
    overrides = {f"vars.{k}": v for k, v in overrides.items()} | {"vars.resume": False}
    command = next(
        c
        for c in load_project_config(copy, overrides=overrides)["commands"]
        if c["name"] == "train-a"
    )
    line = next(line for line in command["script"] if line.startswith("python -m scripts.train"))
    assert "--resume false" in line
    args = [*shlex.split(line)[2:], "--training.max_steps", "2", "--training.eval_frequency", "1"]
    fresh = run_cli(*args, cwd=copy)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "Starting fresh (resume=false)" in fresh.stdout
    log = copy / "training" / "en_multinerd_a_tiny" / "train_log.jsonl"
    assert [row["step"] for row in read_log(log)] == [0, 1, 2]
