"""bench-llm: the recipe's rows, the reading of what an LLM writes back (perfect, partial,
malformed, empty), the scores under `spacy evaluate`'s keys and by its scorer, the report's
LLM column, and the whole command with a tiny random LLM on the CPU."""

import json

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from benchmarks.llm_format import (
    MALFORMED,
    NOT_IN_SENTENCE,
    UNKNOWN_TAG,
    load_recipe,
    prompt_of,
    read_generation,
    scheme_tags,
    score,
    unreadable,
)
from scripts.corpus import EncodedSplit, Sentences

from .conftest import FIXTURE, ROOT, run_cli

RECIPE = ROOT / "benchmarks" / "llm_recipe.cfg"
PROMPT = prompt_of(load_recipe(RECIPE))
LABELS = ["PER", "ORG", "LOC"]
TOKENS = ["Angela", "Merkel", "visited", "New", "York", "and", "Paris", "."]
TAGS = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O"]
ANSWER = "Angela:B-PER, Merkel:I-PER, New:B-LOC, York:I-LOC, Paris:B-LOC"


def test_a_row_is_the_recipes_prompt_answer_and_end():
    ginseng = ["Each", "included", "ginseng", "."]
    row = PROMPT.row(ginseng, ["O", "O", "B-PLANT", "O"])
    assert row == "<s>[INST] Each included ginseng . [/INST] ginseng:B-PLANT </s>"
    assert PROMPT.row(TOKENS, TAGS) == (
        f"<s>[INST] Angela Merkel visited New York and Paris . [/INST] {ANSWER} </s>"
    )
    nothing = ["No", "entities", "here"]
    assert PROMPT.row(nothing, ["O"] * 3) == "<s>[INST] No entities here [/INST] </s>"
    assert PROMPT.row(TOKENS, TAGS).startswith(PROMPT.text(TOKENS) + " ")  # what generation gets
    assert PROMPT.markers() == ["<s>", "[INST]", "[/INST]", "</s>"]


def test_the_rows_tags_are_the_schemes_as_the_corpus_step_writes_them():
    tokens = [["Ada", "Lovelace", "had", "flu", "in", "Rome"], ["a", "gray", "wolf"]]
    tags = [["B-PER", "I-PER", "O", "B-DIS", "O", "I-LOC"], ["O", "B-FOOD", "B-ANIM"]]
    enc = EncodedSplit.encode(Sentences.from_lists(tokens, tags, "test"))
    # System B keeps DIS and ANIM, drops FOOD; an I- after O starts an entity
    assert scheme_tags(enc, ["PER", "ORG", "LOC", "DIS", "ANIM"]) == [
        ["B-PER", "I-PER", "O", "B-DIS", "O", "B-LOC"],
        ["O", "O", "B-ANIM"],
    ]


def test_a_perfect_generation_gives_the_gold_tags():
    reading = read_generation(ANSWER, TOKENS, LABELS)
    assert reading.tags == TAGS and reading.problems == [] and reading.pairs == 5


def test_a_partial_generation_leaves_the_rest_o_and_is_readable():
    joined = "Merkel:I-PER,Paris:B-LOC"  # no space after the comma: one pair, of no token
    assert read_generation(joined, TOKENS, LABELS).problems == [(NOT_IN_SENTENCE, joined)]
    reading = read_generation("Merkel:I-PER, Paris:B-LOC", TOKENS, LABELS)
    assert reading.tags == ["O", "I-PER", "O", "O", "O", "O", "B-LOC", "O"]
    assert reading.problems == []


def test_what_cannot_be_read_is_counted_by_kind_and_the_rest_is_read():
    text = (
        "Angela B-PER, Merkel:I-PER, :B-LOC, New:B-LOCATION, Obama:B-PER, York:B-MISC, "
        "Paris:B-LOC, New:B-LOC"
    )
    reading = read_generation(text, TOKENS, LABELS)
    assert reading.problems == [
        (MALFORMED, "Angela"),
        (MALFORMED, "B-PER,"),
        (MALFORMED, ":B-LOC,"),
        (UNKNOWN_TAG, "New:B-LOCATION,"),
        (UNKNOWN_TAG, "York:B-MISC,"),  # not a type of this scheme
        (NOT_IN_SENTENCE, "Obama:B-PER,"),
        (NOT_IN_SENTENCE, "New:B-LOC"),  # New comes before Paris, not after
    ]
    assert reading.tags == ["O", "I-PER", "O", "O", "O", "O", "B-LOC", "O"]
    garbage = "[INST] <s> dis dis ::: , ,"
    reading = read_generation(garbage, TOKENS, LABELS)
    assert reading.pairs == 0 and reading.tags == ["O"] * len(TOKENS)
    assert [kind for kind, _ in reading.problems] == [MALFORMED] * 4 + [UNKNOWN_TAG]


def test_an_empty_generation_is_a_sentence_without_entities():
    reading = read_generation("", TOKENS, LABELS)
    assert reading.tags == ["O"] * len(TOKENS) and not reading.problems
    texts = ["", ANSWER, "dis dis", "Angela:B-PER, Obama:B-PER"]
    readings = [read_generation(t, TOKENS, LABELS) for t in texts]
    assert unreadable(readings, texts) == {
        "generations": 4,
        "with_problems": 2,
        "share": 0.5,
        "nothing_readable": 1,
        "empty": 1,
        "problems": {MALFORMED: 2, UNKNOWN_TAG: 0, NOT_IN_SENTENCE: 1},
    }


def test_an_entity_goes_on_its_run_of_tokens_and_a_token_with_a_colon_reads_right():
    tokens = ["Paris", "met", "Paris", "Hilton", "at", "12:30"]
    reading = read_generation("Paris:B-PER, Hilton:I-PER, 12:30:B-TIME", tokens, ["PER", "TIME"])
    assert reading.tags == ["O", "O", "B-PER", "I-PER", "O", "B-TIME"]
    tokens = ["Washington", ",", "D.C.", "and", "Paris"]
    reading = read_generation("Washington:B-LOC, ,:I-LOC, D.C.:I-LOC", tokens, LABELS)
    assert reading.tags == ["B-LOC", "I-LOC", "I-LOC", "O", "O"] and not reading.problems
    # the format cannot tell two equal one-token entities apart: the first is taken
    reading = read_generation("Paris:B-LOC", ["Paris", "met", "Paris"], LABELS)
    assert reading.tags == ["B-LOC", "O", "O"]


def gold_and_predicted():
    tokens = [TOKENS, ["Rome", "fell"], ["No", "entities"]]
    gold = [TAGS, ["B-LOC", "O"], ["O", "O"]]
    pred = [  # Merkel left out of PER (a boundary error), New York an ORG, Paris right
        ["B-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "O"],
        ["B-LOC", "O"],
        ["B-PER", "O"],  # spurious
    ]
    return tokens, gold, pred


def test_the_scores_are_spacy_evaluates_keys_and_figures():
    tokens, gold, pred = gold_and_predicted()
    scores = score(tokens, gold, pred, LABELS)
    assert set(scores) == {"ents_p", "ents_r", "ents_f", "ents_per_type"}
    # 2 right (Paris, Rome) of 5 predicted and 4 gold
    assert scores["ents_p"] == pytest.approx(2 / 5)
    assert scores["ents_r"] == pytest.approx(2 / 4)
    assert scores["ents_f"] == pytest.approx(2 * 2 / (5 + 4))
    assert scores["ents_per_type"]["LOC"] == pytest.approx({"p": 1.0, "r": 2 / 3, "f": 0.8})
    assert scores["ents_per_type"]["PER"] == pytest.approx({"p": 0.0, "r": 0.0, "f": 0.0})
    # an I- that starts an entity is a B-, as in the gold corpus
    repaired = score(tokens, gold, [TAGS[:3] + ["I-LOC"] + TAGS[4:], *gold[1:]], LABELS)
    assert repaired["ents_f"] == 1.0


def test_spacy_evaluate_gives_the_same_scores_for_a_pipeline_that_predicts_the_same(tmp_path):
    """A pipeline whose entity ruler predicts the same entities, scored by `spacy evaluate`
    on the gold DocBin with the gold tokens, as the evaluate step runs it."""
    from spacy.cli.evaluate import evaluate

    tokens, gold, pred = gold_and_predicted()
    nlp = spacy.blank("en")
    patterns = []
    for toks, tags in zip(tokens, pred):
        ents = Doc(nlp.vocab, words=toks, ents=tags).ents
        patterns += [{"label": e.label_, "pattern": [{"ORTH": t.text} for t in e]} for e in ents]
    nlp.add_pipe("entity_ruler").add_patterns(patterns)
    nlp.to_disk(tmp_path / "pipeline")
    gold_docs = DocBin(docs=[Doc(nlp.vocab, words=t, ents=g) for t, g in zip(tokens, gold)])
    gold_docs.to_disk(tmp_path / "test.spacy")
    out = tmp_path / "metrics.json"
    evaluate(str(tmp_path / "pipeline"), tmp_path / "test.spacy", out, gold_preproc=True)
    written = json.loads(out.read_text())
    ours = score(tokens, gold, pred, LABELS)
    for key in ("ents_p", "ents_r", "ents_f"):
        assert ours[key] == pytest.approx(written[key])
    assert set(ours["ents_per_type"]) == set(written["ents_per_type"]) == {"PER", "ORG", "LOC"}
    for label, figures in written["ents_per_type"].items():
        assert ours["ents_per_type"][label] == pytest.approx(figures)


def test_the_report_sets_the_llm_beside_its_system_where_its_metrics_exist(tmp_path, monkeypatch):
    from scripts import report

    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=["Ada", "in", "Paris"], ents=["B-PER", "O", "B-LOC"])
    monkeypatch.setattr(report, "predict", lambda *args: ([doc], [doc], "no transformer"))
    corpus, metrics = tmp_path / "corpus", tmp_path / "metrics"
    for scheme in "ab":
        (corpus / f"multinerd_{scheme}").mkdir(parents=True)
        (corpus / f"multinerd_{scheme}" / "stats.json").write_text(
            json.dumps({"dataset": "multinerd", "labels": ["PER", "LOC"]})
        )
    metrics.mkdir()
    per_type = {"PER": {"p": 1.0, "r": 1.0, "f": 1.0}, "LOC": {"p": 1.0, "r": 0.5, "f": 2 / 3}}
    for name in ("multinerd_a_trf", "multinerd_b_trf"):
        scores = {"ents_p": 0.9, "ents_r": 0.8, "ents_f": 0.85, "ents_per_type": per_type}
        (metrics / f"{name}.json").write_text(json.dumps(scores))
    llm = {"model": "tiny", "labels": ["PER", "LOC"], "test_sentences": 1, "device": "CPU"}
    llm.update(train={"seconds": 60.0}, peak_memory_mib=500.0, peak_memory="RSS")
    llm.update(unreadable={"share": 0.25}, format_ceiling_f=1.0)
    scores = {"ents_p": 0.5, "ents_r": 0.25, "ents_f": 1 / 3, "speed": 120.0, "llm": llm}
    scores["ents_per_type"] = {"LOC": {"p": 0.5, "r": 0.25, "f": 1 / 3}}
    (metrics / "multinerd_a_llm.json").write_text(json.dumps(scores))
    readme = tmp_path / "README.md"

    def run():
        readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\n")
        report.main(
            ["multinerd_a_trf", "multinerd_b_trf"],
            corpus=["multinerd_a", "multinerd_b"],
            report=metrics / "report",
            corpus_dir=corpus,
            training_dir=tmp_path / "training",
            metrics_dir=metrics,
            gpu_id=-1,
            batch_size=8,
            readme=readme,
            clear=False,
        )
        return (metrics / "report.md").read_text(), readme.read_text()

    markdown, table = run()
    header = "| type | multinerd_a_trf P | multinerd_a_trf R | multinerd_a_trf F1 | "
    assert header + "multinerd_a_llm P | multinerd_a_llm R | multinerd_a_llm F1 | " in markdown
    assert "| LOC | 100.00 | 50.00 | 66.67 | 50.00 | 25.00 | 33.33 | 100.00 |" in markdown
    assert "| PER | 100.00 | 100.00 | 100.00 |  |  |  | 100.00 |" in markdown
    assert "| multinerd_a_llm | LLM: tiny | 1 | 50.00 | 25.00 | 33.33 |  |" in markdown
    assert "| multinerd_a_llm | CPU | 1.0 min | 120 | 500 MiB (RSS) | 25.00 | 100.00 |" in markdown
    assert "| System A F1 | System A LLM P |" in table and "System B LLM" not in table
    assert "fine-tuned LLM tiny (`bench-llm`)" in table
    # an LLM scored on another number of test sentences is left out, and so is a missing one
    llm["test_sentences"] = 2
    (metrics / "multinerd_a_llm.json").write_text(json.dumps(scores))
    markdown, table = run()
    assert "llm" not in markdown and "LLM" not in table


def write_assets(tmp_path, train: int, test: int):
    """The first sentences of CoNLL-2003 where its files are beside the checkout, else of the
    MultiNERD fixture, as assets/<dataset>/ (the dev split is read for its types only)."""
    from scripts import fetch
    from scripts.corpus import write_jsonl

    from .test_other_corpora import CONLL

    dataset, source = ("conll2003", CONLL) if CONLL.exists() else ("multinerd", FIXTURE)
    splits = fetch.load(dataset, str(source))
    assets = tmp_path / "assets"
    assets.mkdir()
    for split, n in (("train", train), ("dev", 5), ("test", test)):
        sents = splits[split]
        part = Sentences(sents.tokens.slice(0, n), sents.tags.slice(0, n), sents.where)
        write_jsonl(part, assets / f"{split}.jsonl")
    return dataset, assets


def test_the_whole_command_with_a_tiny_llm_on_the_cpu(tmp_path):
    """Rows built, LoRA trains (the loss falls), generations read, scores written and printed
    beside the pipeline's; in well under a minute on 2 cores."""
    dataset, assets = write_assets(tmp_path, train=40, test=16)  # the fixture has 16
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    pipeline = {"ents_p": 0.8, "ents_r": 0.7, "ents_f": 0.75, "speed": 2345.0}
    (metrics / f"{dataset}_a_trf.json").write_text(json.dumps(pipeline))
    output, run_dir = metrics / f"{dataset}_a_llm.json", tmp_path / "run"
    args = [dataset, "--llm", "tiny", "--gpu-id", "-1", "--assets", assets, "--output", output]
    args += ["--pipeline", metrics / f"{dataset}_a_trf.json", "--run-dir", run_dir]
    run = run_cli("benchmarks.bench_llm", *args, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = " ".join(run.stdout.split())
    assert "QLoRA needs a GPU; this run trains plain LoRA in float32" in out
    result = json.loads(output.read_text())
    assert {"ents_p", "ents_r", "ents_f", "ents_per_type", "speed"} <= set(result)
    llm = result["llm"]
    written = [len((assets / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "test")]
    assert [llm["train_sentences"], llm["test_sentences"]] == written == [40, 16]
    assert llm["device"] == "plain LoRA, CPU (float32)" and llm["recipe"]["lora"]["r"] == 8
    losses = [loss for _, loss in llm["train"]["losses"]]
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.1, losses
    assert result["speed"] > 0 and llm["peak_memory_mib"] > 0 and llm["train"]["seconds"] > 0
    assert llm["format_ceiling_f"] > 0.95
    unread = llm["unreadable"]
    assert unread["generations"] == 16 and 0 <= unread["share"] <= 1
    assert unread["with_problems"] == round(unread["share"] * 16)
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    assert sum(bool(r["problems"]) for r in rows) == unread["with_problems"]
    assert f"{dataset}_a_trf 80.00 70.00 75.00 2,345 - -" in out  # the pipeline's row
    assert "LLM (tiny (random, built here))" in out and "Generations not read in full" in out


def test_qlora_without_a_gpu_stops_with_one_line_naming_the_way_out(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the QLoRA path runs in the test below")
    assets = tmp_path / "assets"  # the GPU is checked before the data is read
    assets.mkdir()
    for split in ("train", "dev", "test"):
        (assets / f"{split}.jsonl").write_text(json.dumps({"tokens": ["A"], "tags": ["O"]}))
    args = ["conll2003", "--llm", "tiny", "--gpu-id", "0", "--assets", assets]
    run = run_cli("benchmarks.bench_llm", *args, "--run-dir", tmp_path / "run")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    (line,) = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert line.startswith("GPU 0: torch") and "--vars.gpu_id=-1 runs plain LoRA" in line
    assert not (tmp_path / "run").exists()


def test_qlora_on_a_gpu_loads_the_base_in_4_bits_and_trains(tmp_path):
    """The GPU path, as gpu-smoke checks a new GPU machine: the tiny model in 4 bits,
    bf16 or fp16, paged AdamW. Runs only where a CUDA GPU and bitsandbytes are."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA GPU: this machine has none (the CPU path runs above)")
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("QLoRA needs bitsandbytes: pip install -r requirements-bench-gpu.txt")
    dataset, assets = write_assets(tmp_path, train=40, test=16)
    output = tmp_path / "llm.json"
    args = [dataset, "--llm", "tiny", "--gpu-id", "0", "--assets", assets, "--output", output]
    run = run_cli("benchmarks.bench_llm", *args, "--run-dir", tmp_path / "run")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    llm = json.loads(output.read_text())["llm"]
    assert llm["device"].startswith("QLoRA, GPU 0") and llm["peak_memory"] == "GPU"
    losses = [loss for _, loss in llm["train"]["losses"]]
    assert losses[-1] < losses[0]
