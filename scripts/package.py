"""Package a trained pipeline as `spacy package` does, into the folder the workflow names, and
build its wheel there (no network: `python -m build --no-isolation`):

    python -m scripts.package training/en_multinerd_a_trf/model-best \\
        packages/en_multinerd_a_trf-1.0.0 --meta-path packages/en_multinerd_a_trf-meta.json \\
        --name multinerd_a_trf --version 1.0.0 --code scripts/architectures.py

spaCy names the package <lang>_<name> after the pipeline's language (en_multinerd_a_trf;
xx_multinerd_a_trf for a pipeline of every language); its folder is `output` whatever the
language, with the wheel in output/dist/. A failed run leaves no `output`.
"""

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from .corpus import atomic_write, remove_outputs


def main(
    model: Path = typer.Argument(..., help="The pipeline: training/<name>/model-best", exists=True),
    output: Path = typer.Argument(..., help="The package's folder: packages/<name>-<version>"),
    meta_path: Path = typer.Option(..., help="Its meta.json (scripts/package_meta.py)"),
    name: str = typer.Option(..., help="The package's name without its language"),
    version: str = typer.Option(..., help="The package's version"),
    code: Optional[Path] = typer.Option(None, help="Python file the package carries"),
):
    """Build the package's source and wheel into `output`."""
    from spacy.cli.package import package

    remove_outputs(output)  # an earlier package of another pipeline is not left to trust
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:  # renamed into place
        package(
            model,
            Path(tmp),
            meta_path=meta_path,
            code_paths=[code] if code else [],
            name=name,
            version=version,
            create_sdist=False,
            force=True,
            require_parent=True,  # spacy package's default: the wheel requires spaCy
        )
        (built,) = Path(tmp).iterdir()  # <lang>_<name>-<version>
        with atomic_write(output, folder=True) as folder:
            folder.rmdir()
            built.rename(folder)
            cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
            subprocess.run(cmd + ["--outdir", str(folder / "dist"), str(folder)], check=True)
    (wheel,) = (output / "dist").glob("*.whl")
    msg.good(f"Package {built.name}: {wheel}")


if __name__ == "__main__":
    typer.run(main)
