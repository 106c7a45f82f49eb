"""bench-llm's rows and reading: the recipe's rows, the reading of what an LLM writes back
(perfect, partial, malformed, empty), and the scores under `spacy evaluate`'s keys and by its
scorer."""

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

from .conftest import ROOT

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
