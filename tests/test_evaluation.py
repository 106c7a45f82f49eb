"""The report's measures on hand-made docs with known answers."""

import pytest
import spacy
from spacy.tokens import Doc

from scripts import evaluation as ev
from scripts.report import loss_per_step, plot_training, results_table, update_readme


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def make(nlp, words, ents):
    doc = Doc(nlp.vocab, words=words)
    doc.ents = [spacy.tokens.Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


WORDS = ["Ada", "Lovelace", "met", "Zeus", "in", "Paris"]


@pytest.fixture
def docs(nlp):
    gold = [
        make(nlp, WORDS, [(0, 2, "PER"), (3, 4, "MYTH"), (5, 6, "LOC")]),
        make(nlp, ["Rome", "fell"], [(0, 1, "LOC")]),
    ]
    pred = [
        # PER cut short (boundary error), MYTH called LOC, Paris right
        make(nlp, WORDS, [(0, 1, "PER"), (3, 4, "LOC"), (5, 6, "LOC")]),
        make(nlp, ["Rome", "fell"], [(0, 1, "LOC")]),
    ]
    return pred, gold


def test_doc_iob(nlp):
    doc = make(nlp, WORDS, [(0, 2, "PER"), (5, 6, "LOC")])
    assert ev.doc_iob(doc) == ["B-PER", "I-PER", "O", "O", "O", "B-LOC"]
    assert ev.doc_iob(doc, ["LOC"]) == ["O", "O", "O", "O", "O", "B-LOC"]


def test_token_accuracy(docs):
    pred, gold = docs
    # doc 1: Ada ok, Lovelace wrong (O vs I-PER), met ok, Zeus wrong, in ok, Paris ok; doc 2: 2/2
    assert ev.token_accuracy(pred, gold) == pytest.approx(6 / 8)


def test_entity_scores_of_spacy_and_seqeval_agree_with_the_known_answer(docs):
    pred, gold = docs
    # 4 gold, 4 predicted, 2 right (Paris, Rome)
    for scores in (ev.spacy_scores(pred, gold), ev.seqeval_scores(pred, gold)):
        assert scores["p"] == pytest.approx(0.5)
        assert scores["r"] == pytest.approx(0.5)
        assert scores["f"] == pytest.approx(0.5)
        assert scores["per_type"]["LOC"]["p"] == pytest.approx(2 / 3)
        assert scores["per_type"]["LOC"]["r"] == pytest.approx(1.0)
        assert scores["per_type"]["PER"]["f"] == pytest.approx(0.0)
    assert ev.max_difference(ev.spacy_scores(pred, gold), ev.seqeval_scores(pred, gold)) < 1e-9


def test_max_difference_sees_a_disagreement():
    a = {"p": 0.5, "r": 0.5, "f": 0.5, "per_type": {"PER": {"p": 1.0, "r": 1.0, "f": 1.0}}}
    b = {"p": 0.5, "r": 0.5, "f": 0.5, "per_type": {"PER": {"p": 1.0, "r": 0.9, "f": 1.0}}}
    assert ev.max_difference(a, b) == pytest.approx(0.1)


def test_confusion_counts_missed_and_spurious(docs):
    pred, gold = docs
    counts = ev.confusion(pred, gold)
    assert counts == {
        ("PER", ev.MISSED): 1,  # boundary error: missed ...
        (ev.SPURIOUS, "PER"): 1,  # ... and spurious
        ("MYTH", "LOC"): 1,
        ("LOC", "LOC"): 2,
    }
    rows, cols, table = ev.confusion_table(counts, ["PER", "LOC", "MYTH"])
    assert rows == ["PER", "LOC", "MYTH", ev.SPURIOUS]
    assert cols == ["PER", "LOC", "MYTH", ev.MISSED]
    assert table == [[0, 0, 0, 1], [0, 2, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]


def test_restrict_keeps_only_the_shared_types(docs):
    pred, gold = docs
    shared = ["PER", "LOC"]
    scores = ev.spacy_scores(
        [ev.restrict(d, shared) for d in pred], [ev.restrict(d, shared) for d in gold]
    )
    # gold: PER, LOC, LOC; pred: PER(cut), LOC(Zeus), LOC, LOC -> 2 right of 4 predicted, 3 gold
    assert scores["p"] == pytest.approx(2 / 4) and scores["r"] == pytest.approx(2 / 3)


def test_misaligned_docs_are_refused(nlp, docs):
    pred, gold = docs
    with pytest.raises(ValueError, match="tokens differ"):
        ev.token_accuracy([make(nlp, ["x"] * 6, []), pred[1]], gold)


def test_training_curve_png(tmp_path):
    log = [
        {"step": 0, "losses": {"transformer": 1.0, "ner": 5.0}, "scores": {"ents_f": 0.0}},
        {"step": 10, "losses": {"transformer": 0.5, "ner": 2.0}, "scores": {"ents_f": 55.0}},
    ]
    out = tmp_path / "curve.png"
    assert plot_training(log, "x", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_training([], "x", tmp_path / "none.png")


def test_training_loss_is_plotted_per_step():
    # spaCy logs the loss summed since the previous evaluation: 1 step at step 0, then 40
    log = [
        {"step": 0, "losses": {"ner": 30.0, "transformer": 2.0}},
        {"step": 40, "losses": {"ner": 400.0, "transformer": 40.0}},
        {"step": 80, "losses": {"ner": 200.0}},
    ]
    assert loss_per_step(log) == {"ner": [30.0, 10.0, 5.0], "transformer": [2.0, 1.0, 0.0]}
    assert loss_per_step([]) == {}


def test_readme_results_table_is_filled_between_markers(tmp_path):
    systems = {
        "a": {
            "labels": ["PER", "LOC"],
            "metrics": {
                "ents_p": 0.9,
                "ents_r": 0.8,
                "ents_f": 0.85,
                "ents_per_type": {"PER": {"p": 1.0, "r": 0.5, "f": 2 / 3}},
            },
        },
    }
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    update_readme(readme, results_table(systems), "note")
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| **overall** | 90.00 | 80.00 | 85.00 |" in text
    assert "| PER | 100.00 | 50.00 | 66.67 |" in text
    assert "| LOC |  |  |  |" in text


CNN_IN_WORDS = (
    "spaCy's CNN tok2vec (4 layers of width 96, no transformer) over hash embeddings of each "
    "word's normalized form, first letter, last three letters and shape (Xxxx, dd)"
)


def test_the_encoder_of_a_pipeline_without_a_transformer_is_named_in_words():
    from spacy.util import load_config

    from scripts import report

    from .conftest import ROOT

    assert report.tok2vec_in_words(load_config(ROOT / "configs" / "cnn.cfg")) == CNN_IN_WORDS
    assert report.encoder_of(spacy.blank("en")) == "no transformer"


def test_report_fills_the_readme_table_for_multinerd_only(tmp_path, monkeypatch):
    import json

    import spacy
    from spacy.tokens import Doc

    from scripts import report

    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=["Ada", "in", "Paris"], ents=["B-PER", "O", "B-LOC"])
    monkeypatch.setattr(report, "predict", lambda *args: ([doc], [doc], CNN_IN_WORDS))
    for dataset in ("conll2003", "multinerd"):
        corpus, metrics = tmp_path / dataset / "corpus", tmp_path / dataset / "metrics"
        (corpus / f"{dataset}_a").mkdir(parents=True)
        metrics.mkdir()
        (corpus / f"{dataset}_a" / "stats.json").write_text(
            json.dumps({"dataset": dataset, "labels": ["PER", "LOC"]})
        )
        (metrics / f"{dataset}_a.json").write_text(
            json.dumps({"ents_p": 0.9, "ents_r": 0.8, "ents_f": 0.85})
        )
        readme = tmp_path / dataset / "README.md"
        readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\n")
        report.main(
            [f"{dataset}_a"],
            corpus=[f"{dataset}_a"],
            report=metrics / "report",
            corpus_dir=corpus,
            training_dir=tmp_path / "training",
            metrics_dir=metrics,
            gpu_id=-1,
            batch_size=8,
            readme=readme,
            clear=False,
        )
        assert (metrics / "report.md").exists()
        assert ("old" in readme.read_text()) == (dataset == "conll2003")
    assert f"of multinerd_a, encoder {CNN_IN_WORDS}, written by" in " ".join(
        readme.read_text().split()
    )


def test_clear_empties_the_readme_table_only_if_that_report_filled_it(tmp_path):
    from pathlib import Path

    from scripts import report

    from .conftest import ROOT

    readme = tmp_path / "README.md"
    filled = "x\n<!-- results:start -->\nsee [metrics/a_trf_report.md](metrics/a_trf_report.md)\n"
    readme.write_text(filled + "| table |\n<!-- results:end -->\n")
    report.clear_readme(readme, Path("metrics/a_cnn_report"))  # another report's table
    assert readme.read_text().startswith(filled)
    report.clear_readme(readme, Path("metrics/a_trf_report"))
    block = readme.read_text().split("<!-- results:start -->\n")[1]
    assert block.startswith(report.README_EMPTY) and "| **overall** |" in block
    assert (ROOT / "README.md").read_text().count(block) == 1  # what a fresh checkout has
