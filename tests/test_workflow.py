"""`spacy project run all` end to end on the fixture: offline, on CPU, with a tiny transformer
built here. Then the packaged wheels are installed into a fresh virtual environment and
loaded with no project checkout, no network and no transformer directory."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from scripts.labels import MULTINERD_TYPES, SCHEMES
from scripts.report import loss_per_step
from scripts.tiny_transformer import build_tiny_transformer, fixture_texts, write_tiny_config

from .conftest import FIXTURE, ROOT, run_cli

SCHEME_B = SCHEMES["b"].types
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project after `spacy project run all` on the fixture."""
    base = tmp_path_factory.mktemp("workflow")
    project = base / "project"
    project.mkdir()
    for name in ("project.yml", "README.md"):
        shutil.copy(ROOT / name, project)
    for name in ("scripts", "configs"):
        shutil.copytree(ROOT / name, project / name)
    write_tiny_config(project / "configs" / "trf.cfg", project / "configs" / "tiny.cfg")
    tiny = build_tiny_transformer(base / "tiny-bert", fixture_texts(FIXTURE))
    result = run_cli(
        "spacy",
        "project",
        "run",
        "all",
        project,
        f"--vars.source={FIXTURE}",
        "--vars.config=tiny",
        f"--vars.transformer={tiny}",
        "--vars.gpu_id=-1",
        "--vars.mixed_precision=false",
        "--vars.max_steps=80",
        "--vars.eval_frequency=40",
        cwd=project,
        env=OFFLINE,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return {"dir": project, "tiny": tiny, "log": result.stdout}


@pytest.mark.slow
def test_metrics_json_has_overall_and_per_type_scores(project):
    for scheme, types in (("a", MULTINERD_TYPES), ("b", SCHEME_B)):
        metrics = json.loads((project["dir"] / "metrics" / f"multinerd_{scheme}.json").read_text())
        for key in ("ents_p", "ents_r", "ents_f"):
            assert 0.0 <= metrics[key] <= 1.0
        assert set(metrics["ents_per_type"]) == set(types)
        assert metrics["ents_f"] > 0.3  # it learned something on the fixture


@pytest.mark.slow
def test_report_names_every_type_and_the_cross_check(project):
    metrics_dir = project["dir"] / "metrics"
    report = (metrics_dir / "report.md").read_text()
    for etype in MULTINERD_TYPES:
        assert f"| {etype} |" in report
    data = json.loads((metrics_dir / "report.json").read_text())
    assert data["shared_types"] and set(data["shared_types"]) == set(SCHEME_B)
    for name in ("multinerd_a", "multinerd_b"):
        system = data["systems"][name]
        assert system["max_difference"] <= 0.001
        # the report's own predictions reproduce `spacy evaluate`'s figures
        assert abs(system["spacy"]["f"] - system["metrics"]["ents_f"]) < 1e-6
        assert 0.0 < system["token_accuracy"] <= 1.0
        for png in (f"{name}_confusion.png", f"{name}_training.png"):
            assert (metrics_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert "agree to 0.001 for every system" in report


@pytest.mark.slow
def test_training_curve_falls_per_step_where_the_raw_sum_grows(project):
    log = [
        json.loads(line)
        for line in (project["dir"] / "training" / "multinerd_a" / "train_log.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [row["step"] for row in log] == [0, 40, 80]
    raw = [row["losses"]["ner"] for row in log]
    assert raw[1] > raw[0]  # 40 steps summed against 1: what the old curve showed
    per_step = loss_per_step(log)["ner"]
    assert per_step[1] < per_step[0] and per_step[2] < per_step[0]


@pytest.mark.slow
def test_readme_results_table_is_filled_from_metrics(project):
    readme = (project["dir"] / "README.md").read_text()
    table = readme.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    a = json.loads((project["dir"] / "metrics" / "multinerd_a.json").read_text())
    assert f"{100 * a['ents_f']:.2f}" in table
    assert "| VEHI |" in table


@pytest.mark.slow
def test_package_meta_carries_scheme_dataset_and_test_scores(project):
    meta = json.loads((project["dir"] / "packages" / "multinerd_b-meta.json").read_text())
    assert meta["label_scheme"]["labels"] == list(SCHEME_B)
    assert meta["dataset"]["name"] == "multinerd"
    metrics = json.loads((project["dir"] / "metrics" / "multinerd_b.json").read_text())
    assert meta["performance"]["ents_per_type"] == metrics["ents_per_type"]
    assert meta["name"] == "multinerd_b_tiny" and meta["version"] == "1.0.0"


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
        "spacy",
        "project",
        "run",
        "all",
        project["dir"],
        f"--vars.source={FIXTURE}",
        "--vars.config=tiny",
        f"--vars.transformer={project['tiny']}",
        "--vars.gpu_id=-1",
        "--vars.mixed_precision=false",
        "--vars.max_steps=80",
        "--vars.eval_frequency=40",
        cwd=project["dir"],
        env=OFFLINE,
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
    shutil.rmtree(project["tiny"])  # the pipeline must not need the transformer directory
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
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for _name, info in out.items():
        assert info["file"].startswith(str(venv))  # installed, not the project checkout
        assert info["n_ents"] > 0
    assert set(out["en_multinerd_b_tiny"]["labels"]) <= set(SCHEME_B)
    assert out["en_multinerd_b_tiny"]["scheme"] == list(SCHEME_B)
    assert set(out["en_multinerd_a_tiny"]["labels"]) - set(SCHEME_B)  # A predicts more types


def test_unreachable_transformer_names_the_var_without_traceback(tmp_path):
    result = run_cli(
        "scripts.before_train",
        ROOT / "configs" / "trf.cfg",
        tmp_path / "out",
        "--transformer",
        "roberta-base",
        env=OFFLINE,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "'transformer'" in output and "roberta-base" in output


def test_before_train_resets_the_output_dir_and_skips_the_check_for_cnn(tmp_path):
    out = tmp_path / "out"
    (out / "model-best").mkdir(parents=True)
    (out / "train_log.jsonl").write_text("{}\n")
    result = run_cli("scripts.before_train", ROOT / "configs" / "cnn.cfg", out, env=OFFLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not out.exists()
