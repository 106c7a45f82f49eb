"""Check, before training, that the config's transformer can be loaded and can be the
pipeline's encoder: a hub name that cannot be reached, or a model that is no encoder, stops
here with one message naming the var, not with a traceback deep inside the training; an
encoder that looks English-only, for a language other than English, is warned about.
(Whether a run starts fresh or resumes is scripts/train.py's to decide.)"""

import re
from pathlib import Path

import typer
from wasabi import msg

from . import hub
from .labels import (
    DEFAULT_LANGUAGE,
    DEFAULT_TRANSFORMER,
    LANGUAGE_NAMES,
    MULTILINGUAL_TRANSFORMER,
    resolve_transformer,
)

TRANSFORMER_VAR = "transformer"
# What marks a multilingual encoder: its family (XLM-RoBERTa), a name that says so
# (bert-base-multilingual-cased, mdeberta-v3-base, LaBSE, multilingual MiniLM, ...), or a
# vocabulary of many scripts (200,000 word pieces and more; English ones have 30,000 to 130,000)
MULTILINGUAL_TYPES = ("xlm-roberta", "xlm")
MULTILINGUAL_NAME = re.compile(r"multilingual|xlm|mdeberta|mbert|labse|mminilm|mt5|-mult", re.I)
MULTILINGUAL_VOCAB = 200_000


def fail(name: str, problem: str, why: str) -> None:
    msg.fail(
        f"Cannot load the transformer {name!r} ({problem}).",
        why + f" Set the project var {TRANSFORMER_VAR!r} to a local model directory, e.g. "
        f"`spacy project run all . --vars.{TRANSFORMER_VAR}=/models/roberta-base`, or "
        "download the model once with network access (it is then read from the cache).",
        exits=1,
    )


def multilingual(name: str, config) -> bool:
    """Whether the encoder looks multilingual (MULTILINGUAL_*)."""
    return (
        config.model_type in MULTILINGUAL_TYPES
        or bool(MULTILINGUAL_NAME.search(name))
        or (getattr(config, "vocab_size", 0) or 0) >= MULTILINGUAL_VOCAB
    )


def check_language(name: str, config, language: str) -> None:
    """Warn when an encoder that looks English-only is to learn another language."""
    if language == DEFAULT_LANGUAGE or multilingual(name, config):
        return
    pieces = getattr(config, "vocab_size", None)
    pieces = f"{pieces:,}" if pieces else "an unknown number of"
    msg.warn(
        f"{name} looks English-only (a {config.model_type!r} model with "
        f"{pieces} word pieces, none of the marks of a "
        f"multilingual one), and the rows are {LANGUAGE_NAMES.get(language, language)}: it may "
        f"split their words into many pieces it never saw trained. A multilingual encoder fits "
        f"them: --vars.{TRANSFORMER_VAR}={DEFAULT_TRANSFORMER} ({MULTILINGUAL_TRANSFORMER})."
    )


def check_transformer(name: str, language: str = DEFAULT_LANGUAGE) -> None:
    """Load the transformer's config and tokenizer (no weights) or stop with a clear message.
    A hub name is looked up once: without a connection it is read from the local cache, and
    if it is not there this stops at once (no retries, and before transformers is imported,
    which takes seconds)."""
    local = Path(name).exists()
    user_offline = hub.offline_requested()
    reason = None if local else hub.use_hub_or_cache()  # before transformers is imported
    if reason:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            fail(
                name,
                "not in the local Hugging Face cache",
                f"It is not a local directory, and the Hugging Face Hub cannot be used ({reason}).",
            )
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name)
        check_family(name, config)
        AutoTokenizer.from_pretrained(name)
    except Exception as err:
        fail(
            name,
            hub.first_line(err),
            f"{name} is a local path but not a Hugging Face model directory (config.json and "
            "tokenizer files)."
            if local
            else f"It is not a local directory, and the Hugging Face Hub cannot be used ({reason})."
            if reason
            else "It is not a local directory, and the Hugging Face Hub has no such model.",
        )
    check_language(name, config, language)  # its warnings are not a loading error
    if reason and not user_offline:
        msg.warn(
            f"{reason}: {name} is read from the Hugging Face cache. Run the project with "
            "HF_HUB_OFFLINE=1 so that `spacy train` does not wait for the network either."
        )


def check_family(name: str, config) -> None:
    """Stop on a model that cannot be the pipeline's encoder (an encoder-decoder or a
    decoder-only model: spacy-transformers runs AutoModel on padded word pieces and reads its
    last hidden states); warn on an encoder of a family the project does not test."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    from .tiny_transformer import FAMILIES, family_of

    model_type = config.model_type
    tested = ", ".join(FAMILIES)
    if config.is_encoder_decoder:
        kind = "an encoder-decoder model"
    elif model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        kind = "a decoder-only model"
    elif family_of(config.to_dict()) is None:
        msg.warn(
            f"{name} is a {model_type!r} model, a family this project does not test "
            f"({tested}): it may train, but check it on a short run first."
        )
        return
    else:
        return
    msg.fail(
        f"Cannot train with the transformer {name!r}: it is {kind} ({model_type!r}), and the "
        "NER pipeline needs an encoder.",
        f"Set the project var {TRANSFORMER_VAR!r} to an encoder of a family that works "
        f"({tested}), e.g. `spacy project run all . --vars.{TRANSFORMER_VAR}=roberta-base`.",
        exits=1,
    )


def pipeline_of(config: Path):
    """The config's pipeline and transformer path, read without importing spaCy (seconds)."""
    from confection import Config

    cfg = Config().from_disk(config, interpolate=False)
    return cfg["nlp"]["pipeline"], cfg["paths"].get("transformer")


def main(
    config: Path = typer.Argument(..., help="Training config", exists=True, dir_okay=False),
    transformer: str = typer.Option("", help="The transformer name or path (var transformer)"),
    language: str = typer.Option(DEFAULT_LANGUAGE, help="The rows' language (var language)"),
):
    """Check the transformer, when the config has one."""
    pipeline, config_transformer = pipeline_of(config)
    if "transformer" in pipeline:
        name = resolve_transformer(transformer or config_transformer, language)
        check_transformer(name, language)
        msg.good(f"Transformer {name!r} can be loaded")


if __name__ == "__main__":
    typer.run(main)
