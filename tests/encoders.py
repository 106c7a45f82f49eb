"""Pipelines of configs/trf.cfg on tiny random encoders of each family, built here, and the
same pipeline with spacy-transformers' own component and model: what the encoder tests
compare."""

from pathlib import Path

from scripts.tiny_transformer import build_tiny_transformer, write_tiny_config

from .conftest import ROOT

TEXTS = [
    "Angela Merkel visited New York .",
    "No entities here",
    "AL-AIN beat Real Madrid in the final of the Asian Champions League on Saturday evening .",
    "Rome",
    "The wolf lives near Lake Victoria .",
]
TAGS = {0: [(0, 2, "PER"), (3, 5, "LOC")], 2: [(0, 1, "ORG"), (2, 4, "ORG")], 3: [(0, 1, "LOC")]}
CPU_SETTINGS = ("cpu_max_batch_pieces", "cpu_bfloat16")  # what spacy-transformers' lacks
OLD_MODEL_SETTINGS = ("cpu_batch_pieces", "cpu_bfloat16")  # v2 accepts them, v3 does not
SPACY_TRANSFORMERS = "spacy-transformers.TransformerModel.v3"


def tiny_pipeline(base: Path, family: str):
    """configs/trf.cfg on a tiny random `family` encoder, initialized on TEXTS and TAGS, with
    every weight of the encoder moved a little (a fresh model has LayerNorm weights 1 and
    biases 0), so that its hidden states differ from text to text. The seed is fixed: the
    same weights in every run and every test process, with entities found."""
    import spacy
    import torch
    from spacy.training import Example
    from spacy.util import load_config

    tiny = build_tiny_transformer(base / f"tiny-{family}", TEXTS * 10, family)
    cfg_path = write_tiny_config(ROOT / "configs" / "trf.cfg", base / "tiny.cfg")
    config = load_config(
        cfg_path,
        overrides={
            "paths.transformer": str(tiny),
            "system.mixed_precision": False,
            # the labels from the examples below, not from a corpus' labels file
            "paths.labels": str(base / "no-labels.json"),
            "initialize.components.ner.labels.require": False,
        },
        interpolate=True,
    )
    spacy.util.fix_random_seed(0)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = []
    for i, text in enumerate(TEXTS):
        doc = nlp.make_doc(text)
        ents = [(doc[s:e].start_char, doc[s:e].end_char, label) for s, e, label in TAGS.get(i, [])]
        examples.append(Example.from_dict(doc, {"entities": ents}))
    nlp.initialize(lambda: examples)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in nlp.get_pipe("transformer").model.transformer.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return nlp


def with_model(nlp, architecture="multinerd.TransformerModel.v2", **settings):
    """The same pipeline and weights with another transformer architecture or settings."""
    import spacy

    config = nlp.config.copy()
    model = dict(config["components"]["transformer"]["model"])
    for key in OLD_MODEL_SETTINGS:  # what the architectures differ in: from `settings` only
        model.pop(key, None)
    model.update(settings, **{"@architectures": architecture})
    config["components"]["transformer"]["model"] = model
    return spacy.blank("en").from_config(config).from_bytes(nlp.to_bytes())


def with_component(nlp, **settings):
    """The same pipeline, weights and settings (a copy, from bytes as spacy.load does), with
    its transformer component's `settings` changed (cpu_max_batch_pieces, cpu_bfloat16)."""
    copy = with_model(nlp)
    copy.get_pipe("transformer").cfg.update(settings)
    return copy


def plain_path(nlp):
    """The same pipeline with spacy-transformers' own component and TransformerModel.v3."""
    import spacy

    config = nlp.config.copy()
    component = {k: v for k, v in config["components"]["transformer"].items()}
    for key in CPU_SETTINGS:
        component.pop(key, None)
    component["factory"] = "transformer"
    model = {k: v for k, v in component["model"].items() if k not in OLD_MODEL_SETTINGS}
    component["model"] = {**model, "@architectures": SPACY_TRANSFORMERS}
    config["components"]["transformer"] = component
    return spacy.blank("en").from_config(config).from_bytes(nlp.to_bytes())


def trf_outputs(nlp, texts):
    """The transformer's output of each doc, as spaCy's pipe sets it: doc._.trf_data."""
    return [doc._.trf_data for doc in nlp.pipe(texts, batch_size=64)]


def fields(trf_data):
    """A doc's output fields: last_hidden_state at its real word pieces (a sub-batch pads to
    its longest text; the listener reads the real pieces only), the others as they are."""
    mask = trf_data.wordpieces.attention_mask.astype(bool)
    out = dict(trf_data.model_output.items())
    out["last_hidden_state"] = out["last_hidden_state"][mask]
    return out


def entities(nlp, texts):
    return [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, batch_size=8)
    ]


def bit_for_bit(value):
    """`value` (a config dict) with every float as its hex string: equal only bit for bit."""
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {key: bit_for_bit(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [bit_for_bit(item) for item in value]
    return value


def norm_eps(encoder) -> dict:
    """{module name: eps} of the encoder's normalization layers, as its torch modules run."""
    return {name: m.eps for name, m in encoder.named_modules() if hasattr(m, "eps")}
