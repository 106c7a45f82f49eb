"""Write the meta.json that `spacy package` builds a pipeline package with: the trained
pipeline's meta plus the label scheme, the source dataset, the encoder and the per-type test
scores."""

import json
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from .labels import DATASETS, DEFAULT_LANGUAGE, LANGUAGE_NAMES, SCHEMES


def encoder_name(config) -> Optional[str]:
    """The transformer a pipeline config names (a hub name or the path it was trained from),
    or None for a pipeline without one."""
    components = config.interpolate()["components"]
    return components["transformer"]["model"].get("name") if "transformer" in components else None


def build_meta(model: Path, stats: dict, metrics: dict, name: str, version: str) -> dict:
    from confection import Config

    meta = json.loads((model / "meta.json").read_text(encoding="utf-8"))
    dataset = DATASETS[stats["dataset"]]
    scheme = SCHEMES[stats["scheme"]]
    language = stats.get("language", DEFAULT_LANGUAGE)
    rows = LANGUAGE_NAMES.get(language, language)
    test = {k: metrics[k] for k in ("ents_p", "ents_r", "ents_f", "ents_per_type") if k in metrics}
    meta.update(
        {
            "name": name,
            "version": version,
            # spacy package writes this as the package's README, above the licence row
            "description": (
                f"Named entity recognition trained on {dataset.description}, {rows} rows. "
                f"{scheme.description}. Labels: {', '.join(stats['labels'])}. {dataset.terms}"
            ).strip(),
            "license": dataset.license,
            "sources": [
                {"name": dataset.description, "url": dataset.url, "license": dataset.license}
            ],
            "performance": {**test, "split": "test"},
            "dev_performance": meta.get("performance", {}),
            "encoder": encoder_name(Config().from_disk(model / "config.cfg")),
            "label_scheme": {
                "name": scheme.name,
                "description": scheme.description,
                "labels": stats["labels"],
            },
            "dataset": {
                "name": dataset.name,
                "language": language,
                "url": dataset.url,
                "sentences": {s: v["sentences"] for s, v in stats["splits"].items()},
            },
        }
    )
    return meta


def main(
    model: Path = typer.Argument(..., help="training/<name>/model-best", exists=True),
    stats: Path = typer.Argument(..., help="corpus/<name>/stats.json", exists=True),
    metrics: Path = typer.Argument(
        ..., help="metrics/<name>.json from spacy evaluate", exists=True
    ),
    output: Path = typer.Argument(..., help="Where to write the meta.json"),
    name: str = typer.Option(..., help="Package name without its language (multinerd_a_trf)"),
    version: str = typer.Option(..., help="Package version"),
):
    """Write the package meta.json."""
    meta = build_meta(
        model,
        json.loads(stats.read_text(encoding="utf-8")),
        json.loads(metrics.read_text(encoding="utf-8")),
        name,
        version,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    msg.good(f"Wrote {output}")


if __name__ == "__main__":
    typer.run(main)
