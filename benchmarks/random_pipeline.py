"""A pipeline of configs/trf.cfg on a random encoder of a given family and size, built here, for
speed figures (which do not depend on the weights): the encoder's tokenizer is trained on the
training texts, the NER component is initialized with the corpus' labels and left untrained.

    python -m benchmarks.random_pipeline --family deberta-v3 --size base \\
        --out benchmarks/runs/random-deberta-v3-base

Writes <out>/encoder (a Hugging Face model directory) and <out>/pipeline (a spaCy pipeline),
and prints how many word pieces a word of the test texts becomes.
"""

from pathlib import Path

import typer

from .common import CORPUS_STEP, ROOT, require_inputs


def main(
    family: str = typer.Option("deberta-v3", help="An encoder family of the tested ones"),
    size: str = typer.Option("base", help="tiny, small (MiniLM-L6) or base (BERT-base)"),
    out: Path = typer.Option(..., help="Writes <out>/encoder and <out>/pipeline"),
    assets: Path = typer.Option(ROOT / "assets" / "en_conll2003", help="train/test.jsonl"),
    labels: Path = typer.Option(ROOT / "corpus" / "en_conll2003_a" / "labels" / "ner.json"),
):
    """Build the encoder and the pipeline; print word pieces a word."""
    import spacy
    from spacy.training import Example

    from scripts import architectures  # noqa: F401  (the config's layers)
    from scripts.corpus import read_jsonl
    from scripts.tiny_transformer import FAMILIES, SIZES, build_tiny_transformer

    if family not in FAMILIES or size not in SIZES:
        raise typer.BadParameter(f"family: one of {', '.join(FAMILIES)}; size: {', '.join(SIZES)}")
    require_inputs([assets / "train.jsonl", assets / "test.jsonl", labels], CORPUS_STEP)
    texts = [" ".join(t) for t in read_jsonl(assets / "train.jsonl").tokens.to_pylist()]
    encoder = build_tiny_transformer(out / "encoder", texts, family, size)
    overrides = {
        "paths.transformer": str(encoder),
        "paths.labels": str(labels),
        "system.mixed_precision": False,
    }
    config = spacy.util.load_config(
        ROOT / "configs" / "trf.cfg", overrides=overrides, interpolate=True
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    nlp.initialize(lambda: [Example.from_dict(nlp.make_doc(t), {}) for t in texts[:100]])
    nlp.to_disk(out / "pipeline")
    test = read_jsonl(assets / "test.jsonl").tokens.to_pylist()
    tokenizer = nlp.get_pipe("transformer").model.tokenizer
    pieces = sum(len(tokenizer.tokenize(" ".join(t))) for t in test)
    words = sum(map(len, test))
    print(f"{out / 'pipeline'}: a random {family} of size {size}")
    print(f"{pieces / words:.2f} word pieces a word on the test texts ({words:,} words)")


if __name__ == "__main__":
    typer.run(main)
