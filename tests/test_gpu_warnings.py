"""A readable log on the GPU, checked on the CPU: CuPy 14's toDlpack deprecation, which thinc
prints at every CuPy-to-torch transfer, is silenced wherever the project's code is loaded (and
nothing else is); a pipeline trained with mixed precision loads quietly on a CPU and keeps
fp16 where it is created on a GPU."""

import subprocess
import sys

import pytest
import spacy
from spacy.training import Example
from thinc.api import NumpyOps, get_current_ops, set_current_ops

from scripts.tiny_transformer import TINY_OVERRIDES, build_tiny_transformer

from .conftest import ROOT, run_cli

# thinc's xp2torch, the path of every training and prediction step on a GPU, given an array
# whose toDlpack() warns as CuPy 14's does (a CPU tensor stands in for the CuPy array).
XP2TORCH = """
import warnings, numpy, torch, thinc.util
{imports}
class CupyLike:
    def __init__(self, message):
        self.message = message
    def toDlpack(self):
        warnings.warn(self.message, numpy.exceptions.VisibleDeprecationWarning)
        return torch.utils.dlpack.to_dlpack(torch.arange(3.0))
CUPY = ("This function is deprecated and will be removed in a future release. "
        "Use the cupy.from_dlpack() array constructor instead.")
print(thinc.util.xp2torch(CupyLike(CUPY)).tolist())
print(thinc.util.xp2torch(CupyLike("another deprecation")).tolist())
"""


def xp2torch_stderr(imports: str) -> str:
    code = XP2TORCH.format(imports=imports)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["[0.0,", "1.0,", "2.0]"] * 2
    return run.stderr


def test_cupys_todlpack_warning_is_silenced_where_the_project_code_is_loaded():
    without = xp2torch_stderr("")
    assert "cupy.from_dlpack() array constructor" in without  # what users would see
    # what `spacy train --code scripts/architectures.py` and the packages import
    spacy_code = (
        "from spacy.util import import_file; import_file('code', 'scripts/architectures.py')"
    )
    with_code = xp2torch_stderr(spacy_code)
    assert "cupy.from_dlpack() array constructor" not in with_code
    assert "another deprecation" in with_code  # only that one warning


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny trf pipeline whose config asks for mixed precision, packaged with its code."""
    from scripts import architectures  # noqa: F401

    base = tmp_path_factory.mktemp("fp16")
    texts = ["Ada Lovelace lived in London .", "The wolf ate a fig in Paris ."] * 5
    tiny = build_tiny_transformer(base / "tiny-bert", texts)
    overrides = {
        **TINY_OVERRIDES,
        "paths.transformer": str(tiny),
        "system.mixed_precision": True,
        # the labels from the example below, not from a corpus' labels file
        "paths.labels": str(base / "no-labels.json"),
        "initialize.components.ner.labels.require": False,
    }
    config = spacy.util.load_config(
        ROOT / "configs" / "trf.cfg", overrides=overrides, interpolate=True
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    doc = nlp.make_doc(texts[0])
    examples = [Example.from_dict(doc, {"entities": [(0, 12, "PER"), (22, 28, "LOC")]})]
    nlp.initialize(lambda: examples)
    nlp.to_disk(base / "model")
    out = base / "packages"
    out.mkdir()
    run = run_cli(
        "spacy",
        "package",
        base / "model",
        out,
        "--name",
        "fp16_tiny",
        "--version",
        "0.0.1",
        "--code",
        ROOT / "scripts" / "architectures.py",
        "--build",
        "none",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    site = base / "site"  # installed as a user installs it (pip), here into a folder of its own
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    run = subprocess.run(
        pip + ["--target", str(site), str(out / "en_fp16_tiny-0.0.1")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return site


def test_a_mixed_precision_package_loads_and_predicts_quietly_on_a_cpu(package):
    code = (
        f"import sys; sys.path.insert(0, {str(package)!r}); import spacy; "
        "nlp = spacy.load('en_fp16_tiny'); "
        "assert nlp.config['components']['transformer']['model']['mixed_precision']; "
        "docs = list(nlp.pipe(['Ada Lovelace lived in London .'] * 3)); "
        "print(nlp.get_pipe('transformer').model.layers[0].shims[0]._mixed_precision)"
    )
    run = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, cwd="/"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"  # fp32 on the CPU
    assert "autocast" not in run.stderr and "Warning" not in run.stderr, run.stderr


def test_the_same_package_keeps_fp16_where_it_is_created_on_a_gpu(package):
    sys.path.insert(0, str(package))
    previous = get_current_ops()
    # what `spacy.require_gpu()` makes current, as far as the pipeline's creation asks
    set_current_ops(NumpyOps(device_type="gpu"))
    try:
        nlp = spacy.load("en_fp16_tiny")
    finally:
        set_current_ops(previous)
        sys.path.remove(str(package))
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    assert shim._mixed_precision is True
    assert shim._grad_scaler._enabled is True
