"""gpu-smoke: its CPU form runs the whole smoke (a tiny transformer of the user's family,
spaCy's training loop, the same entities after saving and loading) here, for two families;
its verdicts are checked on constructed runs."""

import math
import re
import time

import pytest
from transformers import AutoConfig, AutoModel

from scripts.gpu_smoke import (
    LOOP_BOUND,
    agreement_check,
    family_of_transformer,
    loss_check,
    pace_check,
)
from scripts.tiny_transformer import build_tiny_transformer

from .conftest import run_cli


def log(losses):
    """A training record as the smoke run keeps it: evaluations every 10 steps."""
    return [
        {"step": 10 * i, "losses": {"transformer": 0.0, "ner": x}} for i, x in enumerate(losses)
    ]


def test_a_falling_finite_loss_passes():
    check = loss_check(log([50.0, 300.0, 100.0, 20.0]))
    assert check.ok and check.result == "50.00 -> 2.00 a step"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_loss_that_turns_nan_or_inf_fails_with_the_fp16_fix(bad):
    check = loss_check(log([50.0, 300.0, bad, 20.0]))
    assert not check.ok and "--vars.mixed_precision=false" in check.fix


def test_a_loss_that_does_not_fall_fails():
    check = loss_check(log([50.0, 400.0, 450.0, 400.0]))
    assert not check.ok and "did not fall" in check.fix


def test_entities_must_agree_exactly_in_fp32_and_nearly_in_fp16():
    cpu = [[(0, 3, "PER")]] * 50
    one_off = cpu[:-1] + [[]]
    assert agreement_check("x", cpu, cpu, fp16=False).ok
    assert not agreement_check("x", one_off, cpu, fp16=False).ok
    assert agreement_check("x", one_off, cpu, fp16=True).ok  # 49 of 50 >= 98%
    assert not agreement_check("x", cpu[:-2] + [[], []], cpu, fp16=True).ok
    assert not agreement_check("x", [[]] * 50, [[]] * 50, fp16=False).ok  # found nothing


@pytest.mark.slow
@pytest.mark.parametrize("family, base_steps", [("distilbert", 2), ("deberta-v3", 0)])
def test_the_cpu_form_trains_the_users_family_predicts_saves_and_passes(
    family, base_steps, tmp_path
):
    """The user's transformer (a local directory here) names the family the smoke builds; the
    base-size encoder's speed is timed for one family (for the other, --base-steps 0)."""
    users = build_tiny_transformer(tmp_path / "users-model", ["Some text ."], family)
    run = run_cli(
        "scripts.gpu_smoke",
        "--gpu-id",
        "-1",
        "--mixed-precision",
        "false",
        "--steps",
        "40",
        "--base-steps",
        str(base_steps),
        "--transformer",
        users,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = [ln for ln in run.stdout.splitlines() if ln.startswith(("✔ ", "✘ "))]
    rows = dict(re.split(r"\s{2,}", ln)[1:3] for ln in table)
    base_row = f"training speed, base-size {family} (random)"
    assert list(rows) == [
        "encoder",
        "loss falls, stays finite",
        "weights finite",
        "same entities again",
        "to_disk, then spacy.load on the CPU",
        "training speed, tiny encoder (the loop's most)",
        *([base_row] if base_steps else []),
        "inference speed (CPU, tiny encoder)",
        "peak GPU memory",
    ]
    model_class = type(AutoModel.from_pretrained(users)).__name__
    assert rows["encoder"] == f"a tiny {family} ({model_class})"
    assert all(ln.startswith("✔") for ln in table), table
    speed = rows["training speed, tiny encoder (the loop's most)"]
    ceiling = int(re.match(r"([\d,]+) words/s over 40 steps", speed).group(1).replace(",", ""))
    if base_steps:
        base = re.match(r"([\d,]+) words/s over 2 steps, (\d+)% of", rows[base_row])
        assert ceiling > int(base.group(1).replace(",", "")) > 0  # a base-size encoder, a CPU
    assert "16 of 16 sentences the same" in run.stdout
    assert "Training, prediction and saving work on the CPU." in run.stdout


def test_the_training_speed_leaves_out_the_steps_with_an_evaluation():
    """Each batch's request marks its step's start; a step followed by an evaluation and its
    checkpoint (every 2 steps, step 0 too) is not counted."""
    from scripts.gpu_smoke import training_speed

    batches = [(0.0, 10), (9.0, 20), (10.0, 30), (30.0, 40), (32.0, 50)]
    # steps 1 and 3 count: 20 words in 1 s, 40 words in 2 s
    assert training_speed(batches, every=2) == pytest.approx(60 / 3)
    assert training_speed(batches, every=4) == pytest.approx((20 + 30 + 40) / 23)


def test_the_pace_row_names_the_loop_when_the_base_encoder_trains_nearly_as_fast():
    loop = pace_check(1000.0, LOOP_BOUND * 1000.0 + 1, "bert", 30)
    gpu = pace_check(1000.0, LOOP_BOUND * 1000.0 - 1, "bert", 30)
    assert loop.name == "training speed, base-size bert (random)"
    assert "801 words/s over 30 steps, 80% of the loop's most" in loop.result
    assert loop.result.endswith("the training loop (the CPU's work) sets the pace")
    assert gpu.result.endswith("the encoder (the GPU) sets the pace")


@pytest.mark.parametrize(
    "model_type, family", [("deberta-v2", "deberta-v3"), ("electra", "electra"), ("bert", "bert")]
)
def test_the_family_is_read_from_a_local_config(model_type, family, tmp_path):
    AutoConfig.for_model(model_type).save_pretrained(tmp_path)
    assert family_of_transformer(str(tmp_path)) == (family, "")


def test_a_family_it_cannot_tell_is_bert_with_a_note(tmp_path):
    AutoConfig.for_model("albert").save_pretrained(tmp_path)
    family, note = family_of_transformer(str(tmp_path))
    assert family == "bert" and "'albert' model" in note
    # a hub name without a network or a cached copy (the tests run offline)
    family, note = family_of_transformer("someone/not-cached")
    assert family == "bert" and "someone/not-cached's config cannot be read" in note


def test_without_a_usable_gpu_it_says_why_in_one_line_and_exits_1():
    start = time.perf_counter()
    run = run_cli("scripts.gpu_smoke", "--gpu-id", "0", env={"CUDA_VISIBLE_DEVICES": ""})
    assert time.perf_counter() - start < 60
    assert run.returncode == 1
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("✘ No usable GPU 0: ") and "check-gpu" in lines[0]
    assert "Traceback" not in run.stderr


def test_mixed_precision_on_the_cpu_is_refused():
    run = run_cli("scripts.gpu_smoke", "--gpu-id", "-1")
    assert run.returncode == 1 and "mixed_precision=true needs a GPU" in run.stdout
