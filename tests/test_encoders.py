"""The encoder is the user's main choice (the `transformer` var). For every family the project
supports, a tiny random encoder built here (scripts/tiny_transformer.py) goes through the
project's own train command line (`train-a` of project.yml, on the CPU), `spacy evaluate`,
`nlp.to_disk` and `spacy.load`, and its pipeline predicts on the CPU exactly the entities that
spacy-transformers' own path predicts, with the same hidden states (within ATOL, float32). A
family that cannot work is refused before training, naming the var and the families that do.
(One family beyond BERT is packaged and installed into a fresh venv by test_workflow.)"""

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import srsly

from scripts import architectures, before_train  # noqa: F401  (the layers the pipelines name)
from scripts.tiny_transformer import (
    FAMILIES,
    build_tiny_transformer,
    fixture_texts,
    write_tiny_config,
)

from .conftest import FIXTURE, copy_project, run_cli
from .encoders import (
    bit_for_bit,
    entities,
    fields,
    norm_eps,
    plain_path,
    trf_outputs,
    with_component,
    with_model,
)

STEPS = 20  # enough for a tiny encoder to find the fixture's entities
ATOL = 1e-5
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def train_command(project, transformer):
    """The training line of the project's train-a command with these vars, and the
    model-best directory among its outputs, as weasel resolves them."""
    from weasel.util import load_project_config

    overrides = {
        "vars.transformer": str(transformer),
        "vars.config": "tiny",
        "vars.gpu_id": -1,
        "vars.mixed_precision": False,
        "vars.max_steps": STEPS,
        "vars.eval_frequency": STEPS,
    }
    config = load_project_config(project, overrides=overrides)
    command = next(c for c in config["commands"] if c["name"] == "train-a")
    line = next(line for line in command["script"] if line.startswith("python -m scripts.train"))
    model_best = next(out for out in command["outputs"] if out.endswith("model-best"))
    return line, project / model_best


@dataclass
class Trained:
    project: Path
    encoder: Path
    model_best: Path
    run: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{family: Trained}: each family's tiny encoder trained by the project's train command
    line in a copy of the project, two at a time."""
    base = tmp_path_factory.mktemp("encoders")
    corpus = copy_project(base / "corpus-project")
    write_tiny_config(corpus / "configs" / "trf.cfg", corpus / "configs" / "tiny.cfg")
    made = run_cli("spacy", "project", "run", "corpus", corpus, f"--vars.source={FIXTURE}")
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    texts = list(fixture_texts(FIXTURE))

    encoders = {f: build_tiny_transformer(base / f"tiny-{f}", texts, f) for f in FAMILIES}

    def train(family):
        project = base / family
        project.mkdir()
        for name in ("project.yml", "scripts", "configs", "corpus"):
            (project / name).symlink_to(corpus / name)
        encoder = encoders[family]
        line, model_best = train_command(project, encoder)
        args = shlex.split(line)
        env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1"}  # two trainings share the CPU
        run = subprocess.run(
            [sys.executable, *args[1:]], cwd=project, env=env, capture_output=True, text=True
        )
        return family, Trained(project, encoder, model_best, run)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(train, FAMILIES))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def pipeline(trained, family):
    import spacy

    run = trained[family].run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return spacy.load(trained[family].model_best)


def test_it_trains_through_the_projects_train_command(trained, family, pipeline):
    model_best = trained[family].model_best
    assert (model_best / "config.cfg").exists()
    log = [row["step"] for row in srsly.read_jsonl(model_best.parent / "train_log.jsonl")]
    assert log == [0, STEPS]
    encoder = pipeline.get_pipe("transformer").model.transformer
    assert encoder.config.model_type == FAMILIES[family].model_type


def test_spacy_evaluate_scores_it_on_the_cpu(trained, family, pipeline):
    from spacy.cli.evaluate import evaluate

    test = trained[family].project / "corpus" / "en_multinerd_a" / "test.spacy"
    model_best = str(trained[family].model_best)
    scores = evaluate(model_best, test, use_gpu=-1, gold_preproc=True, silent=True)
    assert 0.0 < scores["ents_f"] <= 1.0  # it learned something, and was scored


def test_it_predicts_what_spacy_transformers_predicts_also_after_saving(family, pipeline, tmp_path):
    import numpy
    import spacy

    texts = list(fixture_texts(FIXTURE))[:32]
    plain = plain_path(pipeline)
    expected = entities(plain, texts)
    assert any(expected), "the test needs a pipeline that finds entities"
    assert entities(pipeline, texts) == expected
    small = with_component(pipeline, cpu_max_batch_pieces=64)  # several sub-batches a batch
    assert entities(small, texts) == expected
    for a, b in zip(trf_outputs(small, texts[:16]), trf_outputs(plain, texts[:16])):
        assert list(a.model_output.keys()) == list(b.model_output.keys())
        for key, value in fields(b).items():
            assert numpy.allclose(fields(a)[key], value, atol=ATOL), key
    pipeline.to_disk(tmp_path / "saved")
    assert entities(spacy.load(tmp_path / "saved"), texts) == expected


def test_its_encoder_loads_with_the_config_it_was_trained_with(trained, family, pipeline):
    """spacy-transformers' own load writes the config through JSON with 9 decimals (BERT's and
    ELECTRA's layer_norm_eps of 1e-12 came back as 0.0); multinerd.TransformerModel.v2 loads
    it exactly, every key, from a folder (here), from bytes, or from a package
    (test_workflow)."""
    from transformers import AutoModel

    # what training started from: the encoder directory, read as spacy-transformers reads it
    want = AutoModel.from_pretrained(str(trained[family].encoder))
    loaded = pipeline.get_pipe("transformer").model.transformer
    assert bit_for_bit(loaded.config.to_dict()) == bit_for_bit(want.config.to_dict())
    assert norm_eps(loaded) == norm_eps(want)
    # a float that 9 decimals round, in a key every family has, is kept too
    texts = list(fixture_texts(FIXTURE))[:16]
    expected = entities(pipeline, texts)
    before, loaded.config.initializer_range = loaded.config.initializer_range, 0.02 + 1e-12
    try:
        reloaded = with_model(pipeline)  # from bytes, as spacy.load does
    finally:
        loaded.config.initializer_range = before
    again = reloaded.get_pipe("transformer").model.transformer
    assert again.config.initializer_range == 0.02 + 1e-12
    assert norm_eps(again) == norm_eps(want)
    assert entities(reloaded, texts) == expected  # the same weights


@pytest.mark.parametrize(
    "model_type, kind", [("gpt2", "a decoder-only model"), ("t5", "an encoder-decoder model")]
)
def test_a_family_that_cannot_work_is_refused_before_training(model_type, kind, tmp_path, capsys):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as stop:
        before_train.check_transformer(str(tmp_path))
    out = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 1
    assert f"it is {kind} ('{model_type}')" in out
    assert "project var 'transformer'" in out
    assert all(name in out for name in FAMILIES)


def test_an_encoder_of_an_untested_family_is_trained_with_a_warning(capsys):
    from transformers import AutoConfig

    before_train.check_family("albert-base-v2", AutoConfig.for_model("albert"))
    out = " ".join(capsys.readouterr().out.split())
    assert "'albert' model, a family this project does not test" in out


def test_every_family_is_accepted_by_the_check_before_training(trained, family, capsys):
    before_train.check_transformer(str(trained[family].encoder))
    assert "does not test" not in capsys.readouterr().out
