"""Interactive demo: System A and System B side by side on the same text, with displaCy's
entity view (spacy-streamlit), one fixed colour a type (scripts/labels.py:ENTITY_COLORS), a
few example sentences that show the fine types, and each system's per-type scores from its
meta.

    spacy project run demo                        # the pipelines the workflow trained
    spacy project run demo . --vars.demo_a=en_multinerd_a_trf --vars.demo_b=en_multinerd_b_trf
    python -m streamlit run scripts/demo.py --server.address 127.0.0.1 -- MODEL_A MODEL_B

MODEL_A and MODEL_B are anything spacy.load takes: a pipeline directory
(training/<name>/model-best) or an installed package name.
"""

import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import streamlit as st
import typer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # streamlit puts scripts/ on the path, not the project
    sys.path.insert(0, str(ROOT))

from scripts.labels import ENTITY_COLORS  # noqa: E402

# Sentences that show the fine types: an animal, a disease, a plant, a vehicle, a food...
EXAMPLES: Dict[str, str] = {
    "Animal, disease, place": (
        "In 1854 John Snow traced the cholera outbreak in Soho to a water pump on Broad Street, "
        "while rats and fleas spread the plague in Yunnan."
    ),
    "Plant, food, vehicle": (
        "The Boeing 747 carried crates of basmati rice and saffron from Delhi to London, and "
        "the crew planted an olive tree at Heathrow."
    ),
    "Myth, celestial body, event": (
        "During the 1969 Apollo 11 mission, Neil Armstrong walked on the Moon; the Greeks had "
        "named the Moon goddess Selene long before the Olympic Games began."
    ),
    "Media, instrument, time": (
        "Yo-Yo Ma played a Stradivarius cello in The Godfather Part II soundtrack recorded in "
        "the 1970s for Paramount Pictures."
    ),
    "Biological entity, organisation": (
        "Researchers at the World Health Organization found that Escherichia coli and the "
        "influenza virus spread faster among penguins in Antarctica."
    ),
}


@st.cache_resource(show_spinner="Loading the pipeline")
def load(name: str):
    """spacy.load once per pipeline (cached across reruns and sessions of the page)."""
    import spacy

    from scripts import architectures  # noqa: F401  (the trained pipelines' custom layers)

    return spacy.load(name)


ENTITY_FACTORIES = ("ner", "beam_ner", "entity_ruler")


def ner_labels(nlp) -> List[str]:
    """The entity labels the pipeline can predict."""
    labels: List[str] = []
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory in ENTITY_FACTORIES:
            labels += [label for label in nlp.get_pipe(name).labels if label not in labels]
    return labels


def score_rows(meta: Dict) -> Tuple[Optional[str], List[Dict[str, object]]]:
    """(caption, per-type rows) from a pipeline's meta: the test scores `package` writes,
    or the best dev scores `spacy train` writes; (None, []) when it has none."""
    performance = meta.get("performance") or {}
    per_type = performance.get("ents_per_type") or {}
    if not per_type:
        return None, []
    split = "test" if performance.get("split") == "test" else "dev (best during training)"
    rows = [
        {
            "type": label,
            "P": round(100 * v["p"], 2),
            "R": round(100 * v["r"], 2),
            "F1": round(100 * v["f"], 2),
        }
        for label, v in per_type.items()
    ]
    overall = performance.get("ents_f")
    caption = f"Per-type scores on the {split} split" + (
        f"; overall F1 {100 * overall:.2f}" if overall is not None else ""
    )
    return caption, rows


def show_system(column, title: str, name: str, text: str) -> None:
    """One system's column: its name and labels, the displaCy view, its entities and scores."""
    import pandas as pd
    from spacy_streamlit import visualize_ner

    with column:
        nlp = load(name)
        doc = nlp(text)
        st.subheader(f"{title}: {nlp.meta.get('name', name)}")
        scheme = (nlp.meta.get("label_scheme") or {}).get("description")
        dataset = (nlp.meta.get("dataset") or {}).get("name")
        about = " · ".join(x for x in (name, dataset, scheme) if x)
        st.caption(f"{about} · labels: {', '.join(ner_labels(nlp)) or 'none'}")
        visualize_ner(
            doc,
            labels=ner_labels(nlp),
            attrs=["text", "label_", "start_char", "end_char"],
            show_table=True,
            title=None,
            colors=ENTITY_COLORS,
            key=title,
        )
        if not doc.ents:
            st.info("No entities found.")
        caption, rows = score_rows(nlp.meta)
        if rows:
            st.caption(caption)
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def render(model_a: str, model_b: str) -> None:
    """The page: a text box and both systems on it, side by side."""
    st.set_page_config(page_title="MultiNERD NER: System A and System B", layout="wide")
    st.title("Fine-grained NER: System A and System B")
    st.markdown(
        "Each column shows one pipeline on the same text; a type has the same colour in both. "
        "In this project System A keeps every entity type of its dataset (all 15 of MultiNERD) "
        "and System B only PER, ORG, LOC, DIS and ANIM."
    )
    example = st.selectbox("Example", list(EXAMPLES))
    text = st.text_area("Text", EXAMPLES[example], height=110, key=f"text-{example}")
    left, right = st.columns(2)
    show_system(left, "System A", model_a, text)
    show_system(right, "System B", model_b, text)


def main(
    model_a: str = typer.Argument(..., help="System A: a pipeline directory or package name"),
    model_b: str = typer.Argument(..., help="System B: a pipeline directory or package name"),
):
    """System A and System B side by side
    (run with `python -m streamlit run scripts/demo.py -- A B`)."""
    render(model_a, model_b)


if __name__ == "__main__":  # streamlit runs the file as __main__ and passes the args after --
    app = typer.Typer(add_completion=False)
    app.command()(main)
    typer.main.get_command(app).main(args=sys.argv[1:], prog_name="demo", standalone_mode=False)
