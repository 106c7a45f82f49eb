"""Scores of predicted docs against gold docs with the same tokens: token-level BIO accuracy,
entity P/R/F1 by spaCy's scorer and by seqeval (a cross-check), and a confusion matrix of
entity types with missed and spurious entities."""

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example

MISSED = "(missed)"
SPURIOUS = "(spurious)"


def doc_iob(doc: Doc, types: Optional[Iterable[str]] = None) -> List[str]:
    """The doc's entities as IOB2 tags, one a token; entities of other types become O."""
    keep = None if types is None else set(types)
    tags = ["O"] * len(doc)
    for ent in doc.ents:
        if keep is None or ent.label_ in keep:
            tags[ent.start] = f"B-{ent.label_}"
            for i in range(ent.start + 1, ent.end):
                tags[i] = f"I-{ent.label_}"
    return tags


def bare_copy(doc: Doc) -> Doc:
    """A doc with the same tokens and no annotation."""
    return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def with_gold_tokens(nlp, gold_docs: Iterable[Doc]) -> Iterable[Doc]:
    """Unannotated docs with the gold docs' tokens, for the pipeline to predict on."""
    return (bare_copy(gold) for gold in gold_docs)


def restrict(doc: Doc, types: Iterable[str]) -> Doc:
    """A copy of `doc` (tokens and entities only) that keeps the entities of `types`."""
    keep = set(types)
    out = bare_copy(doc)
    out.ents = [Span(out, e.start, e.end, label=e.label_) for e in doc.ents if e.label_ in keep]
    return out


def check_aligned(pred_docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> None:
    if len(pred_docs) != len(gold_docs):
        raise ValueError(f"{len(pred_docs)} predicted docs for {len(gold_docs)} gold docs")
    for i, (p, g) in enumerate(zip(pred_docs, gold_docs)):
        if [t.text for t in p] != [t.text for t in g]:
            raise ValueError(f"doc {i + 1}: the predicted doc's tokens differ from the gold doc's")


def token_accuracy(pred_docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> float:
    """Share of tokens whose predicted BIO tag (IOB2, with type) equals the gold tag."""
    check_aligned(pred_docs, gold_docs)
    right = total = 0
    for p, g in zip(pred_docs, gold_docs):
        right += sum(a == b for a, b in zip(doc_iob(p), doc_iob(g)))
        total += len(g)
    return right / total if total else 0.0


def spacy_scores(pred_docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> Dict:
    """Entity P/R/F1, overall and per type, by spaCy's own scorer."""
    check_aligned(pred_docs, gold_docs)
    examples = [Example(p, g) for p, g in zip(pred_docs, gold_docs)]
    s = Scorer.score_spans(examples, "ents")
    per_type = {
        label: {"p": v["p"], "r": v["r"], "f": v["f"]}
        for label, v in (s["ents_per_type"] or {}).items()
    }
    return {
        "p": s["ents_p"] or 0.0,
        "r": s["ents_r"] or 0.0,
        "f": s["ents_f"] or 0.0,
        "per_type": per_type,
    }


def seqeval_scores(pred_docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> Dict:
    """Entity P/R/F1, overall (micro) and per type, by seqeval on the IOB2 tags."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    check_aligned(pred_docs, gold_docs)
    y_true = [doc_iob(g) for g in gold_docs]
    y_pred = [doc_iob(p) for p in pred_docs]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {
        label: {
            "p": v["precision"],
            "r": v["recall"],
            "f": v["f1-score"],
            "support": int(v["support"]),
        }
        for label, v in report.items()
        if not label.endswith(" avg")
    }
    return {
        "p": precision_score(y_true, y_pred, zero_division=0),
        "r": recall_score(y_true, y_pred, zero_division=0),
        "f": f1_score(y_true, y_pred, zero_division=0),
        "per_type": per_type,
    }


def max_difference(a: Dict, b: Dict) -> float:
    """Largest absolute difference of overall and per-type P/R/F between two score dicts
    (a type that only one side has counts with its scores against 0)."""
    diffs = [abs(a[k] - b[k]) for k in ("p", "r", "f")]
    for label in set(a["per_type"]) | set(b["per_type"]):
        x = a["per_type"].get(label, {})
        y = b["per_type"].get(label, {})
        diffs += [abs(x.get(k, 0.0) - y.get(k, 0.0)) for k in ("p", "r", "f")]
    return max(diffs)


def confusion(pred_docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> Dict[Tuple[str, str], int]:
    """Counts of (gold type, predicted type) over entities matched by exact span. A gold
    entity with no prediction of the same span is (type, MISSED); a prediction with no gold
    entity of the same span is (SPURIOUS, type). A boundary error is both."""
    check_aligned(pred_docs, gold_docs)
    counts: Counter = Counter()
    for p, g in zip(pred_docs, gold_docs):
        gold = {(e.start, e.end): e.label_ for e in g.ents}
        pred = {(e.start, e.end): e.label_ for e in p.ents}
        for span, label in gold.items():
            counts[(label, pred.get(span, MISSED))] += 1
        for span, label in pred.items():
            if span not in gold:
                counts[(SPURIOUS, label)] += 1
    return dict(counts)


def confusion_table(counts: Dict[Tuple[str, str], int], labels: Sequence[str]):
    """Rows (gold labels + SPURIOUS) x columns (predicted labels + MISSED)."""
    rows = list(labels) + [SPURIOUS]
    cols = list(labels) + [MISSED]
    return rows, cols, [[counts.get((r, c), 0) for c in cols] for r in rows]
