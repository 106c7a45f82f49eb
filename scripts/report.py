"""Write metrics/report.md (+ report.json and PNG pictures) for the trained systems.

For each system (e.g. multinerd_a multinerd_b) it reads the `spacy evaluate` figures in
metrics/<name>.json, predicts the test split again (one sentence a doc, the gold tokens) and
adds what `spacy evaluate` does not give: token-level accuracy over the BIO tags, entity
P/R/F1 by seqeval as a cross-check of spaCy's scorer, a confusion matrix of entity types with
missed and spurious entities, the shared types of the systems compared on the same test
sentences, and the training curve read from training/<name>/train_log.jsonl.
With --readme, the results table between the README's results markers is rewritten
(MultiNERD runs only: the table is MultiNERD's).
"""

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

import spacy
import typer
from spacy.tokens import DocBin
from tqdm import tqdm
from wasabi import msg

from . import architectures  # noqa: F401  (registers the pipelines' custom layers)
from . import evaluation as ev
from .check_gpu import require

AGREE = 0.001  # spaCy and seqeval must agree to this on well-formed IOB2 gold
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def load_json(path: Path) -> Dict:
    if not path.exists():
        msg.fail(f"{path} not found: run the evaluate step first.", exits=1)
    return json.loads(path.read_text(encoding="utf-8"))


def predict(model: Path, test: Path, gpu_id: int, batch_size: int):
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    pred = list(
        tqdm(
            nlp.pipe(ev.with_gold_tokens(nlp, gold), batch_size=batch_size),
            total=len(gold),
            desc=f"predict {test}",
            unit=" docs",
        )
    )
    return gold, pred


def read_log(path: Path) -> List[Dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def loss_per_step(log: List[Dict]) -> Dict[str, List[float]]:
    """Each component's mean loss a step over the steps since the previous evaluation.
    spaCy's log holds the loss summed since the previous evaluation (it resets the sum after
    each), so the raw figure grows with the number of steps between evaluations: the first
    evaluation after step 0 covers eval_frequency steps, the one at step 0 a single step."""
    curves: Dict[str, List[float]] = {pipe: [] for pipe in (log[0]["losses"] if log else {})}
    previous = -1
    for row in log:
        steps = max(row["step"] - previous, 1)
        for pipe in curves:
            curves[pipe].append(row["losses"].get(pipe, 0.0) / steps)
        previous = row["step"]
    return curves


def plot_training(log: List[Dict], name: str, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log:
        return False
    steps = [row["step"] for row in log]
    fig, (ax_loss, ax_f) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for pipe, curve in loss_per_step(log).items():
        ax_loss.plot(steps, curve, marker=".", label=f"loss {pipe}")
    ax_loss.set_yscale("symlog")
    ax_loss.set_ylabel("training loss per step")
    ax_loss.legend()
    # spaCy's logger writes scores as percentages
    ax_f.plot(steps, [row["scores"].get("ents_f") or 0.0 for row in log], marker="o")
    ax_f.set_ylabel("dev entity F1 (%)")
    ax_f.set_xlabel("step")
    fig.suptitle(f"Training: {name}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def plot_confusion(rows, cols, table, name: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy

    data = numpy.array(table, dtype=float)
    size = max(4.0, 0.55 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(numpy.log1p(data), cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if table[i][j]:
                ax.text(j, i, str(table[i][j]), ha="center", va="center", fontsize=7)
    ax.set_title(f"Entity confusion (exact spans): {name}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def md_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(systems: Dict[str, Dict]) -> str:
    """Overall and per-type F1 of every system from the `spacy evaluate` figures."""
    names = list(systems)
    types: List[str] = []
    for s in systems.values():
        types += [t for t in s["labels"] if t not in types]
    header = ["type"] + [f"{n} {k}" for n in names for k in ("P", "R", "F1")]
    rows = [
        ["**overall**"]
        + [pct(systems[n]["metrics"][k]) for n in names for k in ("ents_p", "ents_r", "ents_f")]
    ]
    for t in types:
        row = [t]
        for n in names:
            v = (systems[n]["metrics"].get("ents_per_type") or {}).get(t)
            row += [pct(v["p"]), pct(v["r"]), pct(v["f"])] if v else ["", "", ""]
        rows.append(row)
    return md_table(header, rows)


def update_readme(readme: Path, table: str, note: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        msg.warn(f"{readme} has no {README_START} ... {README_END} markers; not updated.")
        return
    block = f"{README_START}\n{note}\n\n{table}\n{README_END}"
    text = re.sub(
        re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S
    )
    readme.write_text(text, encoding="utf-8")
    msg.good(f"Updated the results table in {readme}")


def main(
    systems: List[str] = typer.Argument(..., help="Corpus names, e.g. multinerd_a multinerd_b"),
    corpus_dir: Path = typer.Option(Path("corpus")),
    training_dir: Path = typer.Option(Path("training")),
    metrics_dir: Path = typer.Option(Path("metrics")),
    gpu_id: int = typer.Option(-1, help="GPU for the predictions (-1: CPU)"),
    batch_size: int = typer.Option(128),
    readme: Optional[Path] = typer.Option(None, help="README whose results table to fill"),
):
    """Write metrics/report.md, report.json and the PNGs."""
    require(gpu_id)  # before any model or data is loaded
    data: Dict[str, Dict] = {}
    datasets = set()
    preds = {}
    for name in systems:
        metrics = load_json(metrics_dir / f"{name}.json")
        stats = load_json(corpus_dir / name / "stats.json")
        datasets.add(stats.get("dataset"))
        gold, pred = predict(
            training_dir / name / "model-best", corpus_dir / name / "test.spacy", gpu_id, batch_size
        )
        preds[name] = (gold, pred)
        spacy_s = ev.spacy_scores(pred, gold)
        seqeval_s = ev.seqeval_scores(pred, gold)
        labels = stats["labels"]
        rows, cols, table = ev.confusion_table(ev.confusion(pred, gold), labels)
        plot_confusion(rows, cols, table, name, metrics_dir / f"{name}_confusion.png")
        has_curve = plot_training(
            read_log(training_dir / name / "train_log.jsonl"),
            name,
            metrics_dir / f"{name}_training.png",
        )
        data[name] = {
            "labels": labels,
            "test_sentences": len(gold),
            "metrics": metrics,
            "token_accuracy": ev.token_accuracy(pred, gold),
            "spacy": spacy_s,
            "seqeval": seqeval_s,
            "max_difference": ev.max_difference(spacy_s, seqeval_s),
            "confusion": {"rows": rows, "cols": cols, "table": table},
            "training_curve": has_curve,
        }
    shared = []
    if len(systems) > 1:
        shared = [
            t for t in data[systems[0]]["labels"] if all(t in data[n]["labels"] for n in systems)
        ]
        for name in systems:
            gold, pred = preds[name]
            data[name]["shared"] = ev.spacy_scores(
                [ev.restrict(d, shared) for d in pred], [ev.restrict(d, shared) for d in gold]
            )
    report = render(data, systems, shared)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    (metrics_dir / "report.md").write_text(report, encoding="utf-8")
    (metrics_dir / "report.json").write_text(
        json.dumps({"systems": data, "shared_types": shared}, indent=2) + "\n"
    )
    msg.good(f"Wrote {metrics_dir / 'report.md'}")
    for name in systems:
        if data[name]["max_difference"] > AGREE:
            msg.warn(
                f"{name}: spaCy and seqeval differ by {data[name]['max_difference']:.4f}; "
                "see the report."
            )
    if readme and datasets != {"multinerd"}:
        msg.info(
            f"The README's results table is MultiNERD's: a {', '.join(sorted(map(str, datasets)))} "
            "run does not fill it (see metrics/report.md)."
        )
    elif readme:
        note = (
            "Test-split scores from `spacy evaluate` (entity P/R/F1 in %), written by the "
            "`report` step from metrics/; see [metrics/report.md](metrics/report.md)."
        )
        update_readme(readme, results_table(data), note)


def render(data: Dict[str, Dict], systems: List[str], shared: List[str]) -> str:
    out = ["# Evaluation report", ""]
    out.append(
        "Test split of each system, one sentence a doc, scored on the gold tokens "
        "(`spacy evaluate --gold-preproc`). Figures are percentages."
    )
    out += ["", "## Overall", ""]
    out.append(
        md_table(
            ["system", "sentences", "P", "R", "F1", "token accuracy (BIO)"],
            [
                [
                    n,
                    f"{data[n]['test_sentences']:,}",
                    pct(data[n]["metrics"]["ents_p"]),
                    pct(data[n]["metrics"]["ents_r"]),
                    pct(data[n]["metrics"]["ents_f"]),
                    pct(data[n]["token_accuracy"]),
                ]
                for n in systems
            ],
        )
    )
    out += [
        "",
        "Token accuracy counts every token, O included, whose IOB2 tag (with its type) "
        "equals the gold tag: the accuracy column of earlier MultiNERD work.",
        "",
    ]
    out += ["## Per type", "", results_table(data), ""]
    if shared:
        out += ["## The shared types on the same test sentences", ""]
        out.append(
            f"Only the entities of {', '.join(shared)} in gold and predictions; the systems "
            "see the same test sentences."
        )
        out.append("")
        header = ["type"] + [f"{n} F1" for n in systems]
        rows = [["**all shared (micro)**"] + [pct(data[n]["shared"]["f"]) for n in systems]]
        for t in shared:
            rows.append(
                [t] + [pct(data[n]["shared"]["per_type"].get(t, {}).get("f")) for n in systems]
            )
        out += [md_table(header, rows), ""]
    out += ["## Cross-check: spaCy's scorer and seqeval", ""]
    out.append(
        "Both score the same predictions; seqeval reads the IOB2 tags. On well-formed IOB2 "
        f"gold they must agree to {AGREE}."
    )
    out.append("")
    rows = []
    for n in systems:
        s, q, d = data[n]["spacy"], data[n]["seqeval"], data[n]["max_difference"]
        rows.append(
            [
                n,
                pct(s["p"]),
                pct(s["r"]),
                pct(s["f"]),
                pct(q["p"]),
                pct(q["r"]),
                pct(q["f"]),
                f"{d:.5f}",
                "yes" if d <= AGREE else "**NO**",
            ]
        )
    out += [
        md_table(
            [
                "system",
                "spaCy P",
                "spaCy R",
                "spaCy F1",
                "seqeval P",
                "seqeval R",
                "seqeval F1",
                "max difference (overall and per type)",
                f"agree to {AGREE}",
            ],
            rows,
        ),
        "",
    ]
    verdict = all(data[n]["max_difference"] <= AGREE for n in systems)
    out.append(
        f"**spaCy and seqeval agree to {AGREE} for every system.**"
        if verdict
        else f"**spaCy and seqeval do NOT agree to {AGREE}** for at least one system."
    )
    out += ["", "## Confusion matrices", ""]
    out.append(
        "Entities matched by exact span. Rows: gold type, or (spurious) for a predicted entity "
        "with no gold entity of that span. Columns: predicted type, or (missed) for a gold "
        "entity with no prediction of that span. A boundary error counts as one missed and one "
        "spurious entity."
    )
    for n in systems:
        c = data[n]["confusion"]
        out += ["", f"### {n}", "", f"![confusion matrix of {n}]({n}_confusion.png)", ""]
        out.append(
            md_table(
                ["gold \\ predicted"] + c["cols"],
                [[r] + row for r, row in zip(c["rows"], c["table"])],
            )
        )
    out += ["", "## Training curves", ""]
    for n in systems:
        if data[n]["training_curve"]:
            out += [f"![training curve of {n}]({n}_training.png)", ""]
        else:
            out += [f"{n}: no training log (training/{n}/train_log.jsonl).", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    typer.run(main)
