import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Keep the Hugging Face caches of the tests out of the user's home, and never reach the hub.
_CACHE = tempfile.mkdtemp(prefix="multinerd-tests-hf-")
os.environ.setdefault("HF_HOME", _CACHE)
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "multinerd"
HUB_SPLIT_FILES = {"train": "train.jsonl", "dev": "validation.jsonl", "test": "test.jsonl"}


def read_rows(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture
def fixture_rows():
    """{split: rows of the hub-schema fixture, every language}"""
    return {split: read_rows(FIXTURE / name) for split, name in HUB_SPLIT_FILES.items()}


def copy_project(dest: Path) -> Path:
    """`dest` (made here) with what `spacy project run` needs of the project: project.yml, the
    README (the report fills its table), scripts/ and configs/."""
    import shutil

    dest.mkdir(parents=True)
    for name in ("project.yml", "README.md"):
        shutil.copy(ROOT / name, dest)
    for name in ("scripts", "configs"):
        shutil.copytree(ROOT / name, dest / name)
    return dest


def wheel_requirements(wheel: Path) -> dict:
    """The wheel's Requires-Dist: {name: specifier}."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        lines = whl.read(meta).decode("utf-8").splitlines()
    found = [
        Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")
    ]
    return {req.name: req.specifier for req in found}


def run_cli(*args, cwd=ROOT, env=None):
    """Run `python -m <args>` like project.yml does; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), (env or {}).get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
    )


def fetch_error(source) -> str:
    """The DataError message of loading and checking a MultiNERD source (it must fail)."""
    from scripts import fetch
    from scripts.corpus import DataError, check_sentences
    from scripts.labels import MULTINERD_TYPES, SPLITS

    with pytest.raises(DataError) as err:
        splits = fetch.load("multinerd", str(source))
        for split in SPLITS:
            check_sentences(splits[split], MULTINERD_TYPES)
    return str(err.value)
