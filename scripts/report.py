"""Write a report (metrics/<dataset>_<config>_report.md and .json, and PNG pictures beside it)
for the trained systems.

For each system (e.g. multinerd_a_trf multinerd_b_trf, with their corpora multinerd_a and
multinerd_b) it reads the `spacy evaluate` figures in metrics/<name>.json, names the
pipeline's encoder, predicts the test split again (one sentence a doc, the gold tokens) and
adds what `spacy evaluate` does not give: token-level accuracy over the BIO tags, entity
P/R/F1 by seqeval as a cross-check of spaCy's scorer, a confusion matrix of entity types with
missed and spurious entities, the shared types of the systems compared on the same test
sentences, and the training curve read from training/<name>/train_log.jsonl.
Where `bench-llm` scored a fine-tuned LLM on a system's test split
(metrics/<corpus>_llm.json), the LLM stands beside that system in the overall and per-type
tables. With --readme, the results table between the README's results markers is rewritten
(MultiNERD runs only: the table is MultiNERD's); with --clear, it is emptied again if this
report filled it (the clean step).
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
from .corpus import LANGUAGE_KEY
from .labels import ALL, DEFAULT_LANGUAGE, MULTINERD_TYPES
from .package_meta import encoder_name

AGREE = 0.001  # spaCy and seqeval must agree to this on well-formed IOB2 gold
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def load_json(path: Path) -> Dict:
    if not path.exists():
        msg.fail(f"{path} not found: run the evaluate step first.", exits=1)
    return json.loads(path.read_text(encoding="utf-8"))


# What a pipeline without a transformer encodes its words with, in words (spaCy's PREFIX and
# SUFFIX: the first letter and the last three letters of a word)
ENCODERS_IN_WORDS = {
    "spacy.MaxoutWindowEncoder.v2": "CNN",
    "spacy.MishWindowEncoder.v2": "CNN",
    "spacy.TorchBiLSTMEncoder.v1": "BiLSTM",
}
ATTRS_IN_WORDS = {
    "ORTH": "text",
    "LOWER": "lowercase form",
    "NORM": "normalized form",
    "PREFIX": "first letter",
    "SUFFIX": "last three letters",
    "SHAPE": "shape (Xxxx, dd)",
}


def encoder_of(nlp) -> str:
    """The pipeline's encoder in words: its transformer (name or path, and model type), or the
    tok2vec it has instead."""
    if "transformer" not in nlp.pipe_names:
        return tok2vec_in_words(nlp.config)
    model_type = nlp.get_pipe("transformer").model.transformer.config.model_type
    return f"{encoder_name(nlp.config)} ({model_type})"


def tok2vec_in_words(config) -> str:
    """A pipeline's tok2vec component (spaCy's Tok2Vec: hash embeddings of token attributes and
    a window encoder) in words; "no transformer" for any other."""
    model = config.interpolate()["components"].get("tok2vec", {}).get("model", {})
    embed, encode = model.get("embed", {}), model.get("encode", {})
    kind = ENCODERS_IN_WORDS.get(encode.get("@architectures"))
    if kind is None or not embed.get("attrs") or "depth" not in encode:
        return "no transformer"
    attrs = [ATTRS_IN_WORDS.get(attr, attr) for attr in embed["attrs"]]
    listed = " and ".join([", ".join(attrs[:-1]), attrs[-1]] if len(attrs) > 1 else attrs)
    return (
        f"spaCy's {kind} tok2vec ({encode['depth']} layers of width {encode['width']}, no "
        f"transformer) over hash embeddings of each word's {listed}"
    )


def predict(model: Path, test: Path, gpu_id: int, batch_size: int):
    """The gold docs of `test`, the pipeline's predictions on them, and its encoder."""
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
    return gold, pred, encoder_of(nlp)


def per_language(pred, gold, name: str, metrics_dir: Path) -> Dict[str, Dict]:
    """A pipeline of every language (its corpus' docs carry their language): the test split
    scored language by language, beside the F1 of that language's own pipeline of the same
    dataset, scheme and config (all_multinerd_a_trf: de_multinerd_a_trf, ...) where its
    metrics exist. Empty for a corpus of one language."""
    groups: Dict[str, List[int]] = {}
    for i, doc in enumerate(gold):
        language = doc.user_data.get(LANGUAGE_KEY)
        if language is not None:
            groups.setdefault(language, []).append(i)
    own = name[len(ALL) + 1 :] if name.startswith(f"{ALL}_") else None
    out = {}
    for language, index in sorted(groups.items()):
        scores = ev.spacy_scores([pred[i] for i in index], [gold[i] for i in index])
        own_metrics = metrics_dir / f"{language}_{own}.json" if own else None
        own_f = None
        if own_metrics is not None and own_metrics.exists():
            own_f = json.loads(own_metrics.read_text(encoding="utf-8"))["ents_f"]
        out[language] = {"sentences": len(index), **scores, "own_pipeline_f": own_f}
    return out


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


def results_table(systems: Dict[str, Dict], titles: Optional[List[str]] = None) -> str:
    """Overall and per-type F1 of every system from the `spacy evaluate` figures, each column
    titled by the system's name or by `titles`."""
    names = list(systems)
    types: List[str] = []
    for s in systems.values():
        types += [t for t in s["labels"] if t not in types]
    header = ["type"] + [f"{n} {k}" for n in titles or names for k in ("P", "R", "F1")]
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


def llm_of(metrics_dir: Path, corpus_name: str, sentences: int) -> Optional[Dict]:
    """The scores of bench-llm's LLM on the system's test split, metrics/<corpus>_llm.json,
    if it exists and scored the same number of test sentences as the pipeline."""
    path = metrics_dir / f"{corpus_name}_llm.json"
    if not path.exists():
        return None
    metrics = load_json(path)
    llm = metrics.get("llm", {})
    if llm.get("test_sentences") != sentences:
        msg.warn(
            f"{path}: {llm.get('test_sentences')} test sentences, not the {sentences:,} of the "
            "pipeline's split; left out (run bench-llm again)."
        )
        return None
    return {"name": path.stem, "labels": llm.get("labels", []), "metrics": metrics, "llm": llm}


def beside(data: Dict[str, Dict], systems: List[str], llms: Dict[str, Dict]) -> Dict[str, Dict]:
    """The systems in order, each followed by its LLM where there is one."""
    out = {}
    for name in systems:
        out[name] = data[name]
        if name in llms:
            out[llms[name]["name"]] = llms[name]
    return out


README_TITLES = ["System A", "System B"]
README_EMPTY = "Filled by the `report` step from metrics/ once a full run exists; no figures yet."


def readme_block(readme: Path) -> Optional[str]:
    text = readme.read_text(encoding="utf-8")
    found = re.search(re.escape(README_START) + "(.*?)" + re.escape(README_END), text, flags=re.S)
    if not found:
        msg.warn(f"{readme} has no {README_START} ... {README_END} markers; not updated.")
    return found.group(1) if found else None


def update_readme(readme: Path, table: str, note: str) -> None:
    if readme_block(readme) is None:
        return
    block = f"{README_START}\n{note}\n\n{table}\n{README_END}"
    text = re.sub(
        re.escape(README_START) + ".*?" + re.escape(README_END),
        lambda _: block,
        readme.read_text(encoding="utf-8"),
        flags=re.S,
    )
    readme.write_text(text, encoding="utf-8")
    msg.good(f"Updated the results table in {readme}")


def empty_table() -> str:
    """The README's results table before any run: MultiNERD's types, no figures."""
    nothing = {"labels": MULTINERD_TYPES, "metrics": dict.fromkeys(("ents_p", "ents_r", "ents_f"))}
    return results_table(dict.fromkeys(README_TITLES, nothing))


def clear_readme(readme: Path, report: Path) -> None:
    """Empty the README's results table if `report` filled it."""
    block = readme_block(readme)
    if block is None or f"]({report.with_suffix('.md').as_posix()})" not in block:
        msg.info(f"The results table of {readme} is not from {report}.md: left as it is.")
        return
    update_readme(readme, empty_table(), README_EMPTY)


def main(
    systems: Optional[List[str]] = typer.Argument(
        None, help="The systems' names: training/<name>/ and metrics/<name>.json"
    ),
    corpus: Optional[List[str]] = typer.Option(
        None, help="Each system's corpus (corpus/<corpus>/), in the same order"
    ),
    report: Path = typer.Option(..., help="The report without suffix: <report>.md and .json"),
    corpus_dir: Path = typer.Option(Path("corpus")),
    training_dir: Path = typer.Option(Path("training")),
    metrics_dir: Path = typer.Option(Path("metrics")),
    gpu_id: int = typer.Option(-1, help="GPU for the predictions (-1: CPU)"),
    batch_size: int = typer.Option(128),
    readme: Optional[Path] = typer.Option(None, help="README whose results table to fill"),
    clear: bool = typer.Option(
        False,
        "--clear",
        help="Only empty the README's table if this report filled it (the clean step)",
    ),
):
    """Write <report>.md, <report>.json and the PNGs beside them."""
    if clear:
        if readme:
            clear_readme(readme, report)
        return
    systems, corpus = systems or [], corpus or []
    if not systems or len(corpus) != len(systems):
        msg.fail(
            "Give each system (its name) and its corpus (--corpus), in the same order.", exits=1
        )
    require(gpu_id)  # before any model or data is loaded
    data: Dict[str, Dict] = {}
    datasets, languages = set(), set()
    preds = {}
    for name, corpus_name in zip(systems, corpus):
        metrics = load_json(metrics_dir / f"{name}.json")
        stats = load_json(corpus_dir / corpus_name / "stats.json")
        datasets.add(stats.get("dataset"))
        languages.add(stats.get("language", DEFAULT_LANGUAGE))
        gold, pred, encoder = predict(
            training_dir / name / "model-best",
            corpus_dir / corpus_name / "test.spacy",
            gpu_id,
            batch_size,
        )
        preds[name] = (gold, pred)
        spacy_s = ev.spacy_scores(pred, gold)
        seqeval_s = ev.seqeval_scores(pred, gold)
        labels = stats["labels"]
        rows, cols, table = ev.confusion_table(ev.confusion(pred, gold), labels)
        plot_confusion(rows, cols, table, name, report.parent / f"{name}_confusion.png")
        has_curve = plot_training(
            read_log(training_dir / name / "train_log.jsonl"),
            name,
            report.parent / f"{name}_training.png",
        )
        data[name] = {
            "encoder": encoder,
            "labels": labels,
            "test_sentences": len(gold),
            "metrics": metrics,
            "token_accuracy": ev.token_accuracy(pred, gold),
            "spacy": spacy_s,
            "seqeval": seqeval_s,
            "max_difference": ev.max_difference(spacy_s, seqeval_s),
            "confusion": {"rows": rows, "cols": cols, "table": table},
            "training_curve": has_curve,
            "languages": per_language(pred, gold, name, metrics_dir),
        }
    llms = {
        name: llm
        for name, corpus_name in zip(systems, corpus)
        if (llm := llm_of(metrics_dir, corpus_name, data[name]["test_sentences"]))
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
    markdown = report.with_suffix(".md")
    report.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render(data, systems, shared, llms), encoding="utf-8")
    report.with_suffix(".json").write_text(
        json.dumps({"systems": data, "shared_types": shared, "llm": llms}, indent=2) + "\n"
    )
    msg.good(f"Wrote {markdown}")
    for name in systems:
        if data[name]["max_difference"] > AGREE:
            msg.warn(
                f"{name}: spaCy and seqeval differ by {data[name]['max_difference']:.4f}; "
                "see the report."
            )
    if readme and (datasets != {"multinerd"} or languages != {DEFAULT_LANGUAGE}):
        run = ", ".join(sorted(map(str, languages))) + " " + ", ".join(sorted(map(str, datasets)))
        msg.info(
            f"The README's results table is English MultiNERD's; this run ({run}) does not fill "
            f"it (see {markdown})."
        )
    elif readme:
        encoders = sorted({data[n]["encoder"] for n in systems})
        models = sorted({llm["llm"].get("model", "?") for llm in llms.values()})
        with_llm = f" and of the fine-tuned LLM {', '.join(models)} (`bench-llm`)" if llms else ""
        note = (
            "Test-split scores from `spacy evaluate` (entity P/R/F1 in %) of "
            f"{' and '.join(systems)}, encoder {', '.join(encoders)}{with_llm}, written by the "
            f"`report` step; see [{markdown.as_posix()}]({markdown.as_posix()})."
        )
        titles = []
        for title, name in zip(README_TITLES, systems):
            titles += [title] + ([f"{title} LLM"] if name in llms else [])
        update_readme(readme, results_table(beside(data, systems, llms), titles), note)


def language_section(name: str, languages: Dict[str, Dict]) -> List[str]:
    """The test split of a pipeline of every language, scored language by language."""
    out = [f"## Per language: {name}", ""]
    out.append(
        "One pipeline for every language, its test split scored language by language, beside "
        "the test F1 of each language's own pipeline (same dataset, scheme and config) where "
        "it has been trained and evaluated."
    )
    out.append("")
    rows = [
        [
            language,
            f"{v['sentences']:,}",
            pct(v["p"]),
            pct(v["r"]),
            pct(v["f"]),
            pct(v["own_pipeline_f"]),
        ]
        for language, v in languages.items()
    ]
    header = ["language", "sentences", "P", "R", "F1", "F1 of its own pipeline"]
    return out + [md_table(header, rows), ""]


def render(
    data: Dict[str, Dict], systems: List[str], shared: List[str], llms: Dict[str, Dict]
) -> str:
    out = ["# Evaluation report", ""]
    out.append(
        "Test split of each system, one sentence a doc, scored on the gold tokens "
        "(`spacy evaluate --gold-preproc`). Figures are percentages."
    )
    out += ["", "## Overall", ""]
    out.append(
        md_table(
            ["system", "encoder", "sentences", "P", "R", "F1", "token accuracy (BIO)"],
            [
                [
                    n,
                    data[n]["encoder"],
                    f"{data[n]['test_sentences']:,}",
                    pct(data[n]["metrics"]["ents_p"]),
                    pct(data[n]["metrics"]["ents_r"]),
                    pct(data[n]["metrics"]["ents_f"]),
                    pct(data[n]["token_accuracy"]),
                ]
                for n in systems
            ]
            + [
                [
                    llm["name"],
                    f"LLM: {llm['llm'].get('model', '?')}",
                    f"{llm['llm']['test_sentences']:,}",
                    pct(llm["metrics"]["ents_p"]),
                    pct(llm["metrics"]["ents_r"]),
                    pct(llm["metrics"]["ents_f"]),
                    "",
                ]
                for llm in llms.values()
            ],
        )
    )
    out += [
        "",
        "Token accuracy counts every token, O included, whose IOB2 tag (with its type) "
        "equals the gold tag: the accuracy column of earlier MultiNERD work.",
        "",
    ]
    if llms:
        out += render_llms(llms)
    out += ["## Per type", "", results_table(beside(data, systems, llms)), ""]
    for n in systems:
        if data[n]["languages"]:
            out += language_section(n, data[n]["languages"])
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


def render_llms(llms: Dict[str, Dict]) -> List[str]:
    """What `bench-llm` measured of each LLM beside its scores."""
    rows = []
    for llm in llms.values():
        info, u = llm["llm"], llm["llm"].get("unreadable", {})
        rows.append(
            [
                llm["name"],
                info.get("device", ""),
                f"{info['train']['seconds'] / 60:,.1f} min" if "train" in info else "",
                f"{llm['metrics']['speed']:,.0f}" if llm["metrics"].get("speed") else "",
                f"{info['peak_memory_mib']:,.0f} MiB ({info['peak_memory']})"
                if "peak_memory_mib" in info
                else "",
                pct(u.get("share")),
                pct(info.get("format_ceiling_f")),
            ]
        )
    header = ["LLM", "fine-tuned", "training", "words/s", "peak memory", "unreadable (%)"]
    return [
        "## The fine-tuned LLM",
        "",
        "A causal LM fine-tuned by `bench-llm` with the public QLoRA recipe on the system's "
        "training split, its generations for the test split read back into entities and scored "
        "by the same scorer on the gold tokens. Unreadable: the generations with a pair that "
        "could not be read (malformed, an unknown tag, a token not in the sentence). Ceiling: "
        "the gold answers read back, the most the row format allows.",
        "",
        md_table(header + ["ceiling F1"], rows),
        "",
    ]


if __name__ == "__main__":
    typer.run(main)
