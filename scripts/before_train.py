"""Get ready to train: check that the config's transformer can be loaded (a hub name that
cannot be reached stops here with one message naming the var, not a traceback deep inside
`spacy train`), and remove an earlier training/<name>/ so that nothing stale is left."""
import os
import shutil
from pathlib import Path

import typer
from spacy.util import load_config
from wasabi import msg

TRANSFORMER_VAR = "transformer"


def check_transformer(name: str) -> None:
    """Load the transformer's config and tokenizer (no weights) or stop with a clear message."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(name)
        AutoTokenizer.from_pretrained(name)
    except Exception as err:
        local = Path(name).exists()
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        msg.fail(
            f"Cannot load the transformer {name!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}).",
            (
                f"{name} is a local path but not a Hugging Face model directory "
                "(config.json and tokenizer files)."
                if local
                else "It is not a local directory, and the Hugging Face Hub cannot be reached"
                + (" (HF_HUB_OFFLINE is set)" if offline else "")
                + "."
            )
            + f" Set the project var {TRANSFORMER_VAR!r} to a local model directory, e.g. "
            f"`spacy project run all . --vars.{TRANSFORMER_VAR}=/models/roberta-base`, or "
            "download the model once with network access (then HF_HUB_OFFLINE=1 works).",
            exits=1,
        )


def main(
    config: Path = typer.Argument(..., help="Training config", exists=True, dir_okay=False),
    output_dir: Path = typer.Argument(..., help="The training output directory to reset"),
    transformer: str = typer.Option("", help="The transformer name or path (var transformer)"),
):
    """Check the transformer (when the config has one) and reset the output directory."""
    cfg = load_config(config, interpolate=False)
    if "transformer" in cfg["nlp"]["pipeline"]:
        check_transformer(transformer or cfg["paths"]["transformer"])
        msg.good(f"Transformer {transformer!r} can be loaded")
    if output_dir.exists():
        shutil.rmtree(output_dir)
        msg.info(f"Removed the earlier {output_dir}")


if __name__ == "__main__":
    typer.run(main)
