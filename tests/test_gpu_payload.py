"""The GPU payload's decisions, checked without a network: stub wheels that pip resolves, what
is carried and what is left to the image, the packed archive and the install lines. (The real
download needs PyPI: `python -m scripts.gpu_payload --pack`, figures in the README.)"""
import json
import tarfile

import pytest

from packaging.requirements import Requirement

from scripts import gpu_payload as gp

from .conftest import ROOT


def item(name, version, requires=(), url=None, extras=()):
    return {
        "metadata": {"name": name, "version": version, "requires_dist": list(requires)},
        "download_info": {"url": url or f"https://files.example/{name}-{version}-py3-none-any.whl"},
        "requested_extras": list(extras),
    }


REPORT = {"install": [
    item("spacy-transformers", "1.4.0", ["torch>=1.12.0", "transformers<4.53.3,>=3.4.0",
                                         'cupy>=5.0.0b4; extra == "cuda"']),
    item("transformers", "4.53.2", ["tokenizers<0.22,>=0.21", "huggingface-hub<1.0,>=0.30.0",
                                    "numpy>=1.17", "safetensors>=0.4.3",
                                    'torch>=2.1; extra == "torch"', 'dataclasses; python_version < "3.7"']),
    item("torch", "2.11.0+image", url="file:///tmp/stubs/torch-2.11.0+image-py3-none-any.whl"),
    item("numpy", "2.5.5"), item("tokenizers", "0.21.4"), item("huggingface-hub", "0.36.2"),
    item("safetensors", "0.8.0"), item("nvidia-cublas", "13.1.0"), item("seqeval", "1.2.2"),
]}  # fmt: skip
IMAGE = {"torch": "2.11.0", "numpy": "2.5.2", "tokenizers": "0.23.2", "huggingface-hub": "1.33.0",
         "safetensors": "0.8.0", "transformers": "5.17.0"}  # fmt: skip


def test_plan_carries_what_the_image_lacks_or_has_in_a_version_that_does_not_fit():
    top = [Requirement("spacy-transformers>=1.3.5,<1.5.0"), Requirement("transformers>=4.41.0,<4.53.3")]
    carry, left = gp.plan(REPORT, IMAGE, top)
    carried = [i["metadata"]["name"] for i in carry]
    # transformers 5.17, tokenizers 0.23, huggingface-hub 1.33 break transformers 4.53's pins
    assert carried == ["spacy-transformers", "transformers", "tokenizers", "huggingface-hub", "seqeval"]
    assert left == ["torch 2.11.0", "numpy 2.5.2", "safetensors 0.8.0", "nvidia-cublas (GPU stack)"]


def test_a_requirement_behind_an_unused_extra_or_old_python_is_ignored():
    reqs = gp.requirements_on(REPORT["install"], [])
    assert "cupy" not in reqs and "dataclasses" not in reqs
    assert [str(r.specifier) for r in reqs["torch"]] == [">=1.12.0"]  # not the extra's >=2.1
    cuda = [item("x", "1", ['cupy>=5; extra == "cuda"'], extras=["cuda"])]
    assert "cupy" in gp.requirements_on(cuda, [])


def test_an_image_version_that_is_any_or_too_old():
    reqs = {"numpy": [Requirement("numpy>=2.0")]}
    assert gp.image_satisfies("numpy", {"numpy": "2.5.2"}, reqs)
    assert not gp.image_satisfies("numpy", {"numpy": "1.26.4"}, reqs)
    assert gp.image_satisfies("numpy", {"numpy": gp.ANY}, reqs)
    assert not gp.image_satisfies("numpy", {}, reqs)


def test_the_gpu_stack_is_never_carried():
    for name in ("torch", "triton", "cupy-cuda13x", "cupy-cuda12x", "nvidia-cudnn-cu13", "cuda-toolkit", "fastrlock"):
        assert gp.GPU_STACK.match(name), name
    for name in ("spacy", "spacy-transformers", "cupyx-extra", "numpy"):
        assert not gp.GPU_STACK.match(name), name


def test_stub_wheels_resolve_and_install_with_pip(tmp_path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    wheel = gp.stub_wheel(stubs, "torch", "2.11.0+image")
    assert wheel.name == "torch-2.11.0+image-py3-none-any.whl"
    report = tmp_path / "report.json"
    result = gp.pip("install", "--dry-run", "--ignore-installed", "--quiet", "--no-index",
                    "--find-links", str(stubs), "--report", str(report), "torch==2.11.0+image")  # fmt: skip
    assert result.returncode == 0, result.stderr
    installed = json.loads(report.read_text())["install"]
    assert [(i["metadata"]["name"], i["metadata"]["version"]) for i in installed] == [("torch", "2.11.0+image")]
    assert not installed[0]["metadata"].get("requires_dist")


def test_pack_writes_an_archive_of_the_installed_site(tmp_path):
    wheels = [gp.stub_wheel(tmp_path, "demo-pkg", "1.0"), gp.stub_wheel(tmp_path, "other", "2.0")]
    archive = tmp_path / "site.tar.xz"
    size = gp.pack(wheels, archive, tmp_path / "work")
    assert size == archive.stat().st_size > 0
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert "site/demo_pkg-1.0.dist-info/METADATA" in names and "site/other-2.0.dist-info/METADATA" in names
    assert gp.PACKED_INSTALL.format(dir=".whl").startswith("mkdir -p /tmp && tar -xJf .whl/site.tar.xz -C /tmp")
    assert gp.PACKED_INSTALL.endswith("export PYTHONPATH=/tmp/site")


def test_requirement_files_and_freeze_lists_are_read(tmp_path):
    names = [r.name for r in gp.top_requirements(ROOT / "requirements-gpu.txt")]
    assert "spacy" in names and "spacy-transformers" in names and "cupy-cuda13x" in names
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# image\nTorch==2.11.0+cu130\nhuggingface_hub==1.33.0\n-e git+https://x#egg=y\n")
    assert gp.read_freeze(freeze) == {"torch": "2.11.0+cu130", "huggingface-hub": "1.33.0"}


def test_the_documented_install_line_is_the_one_written():
    assert gp.INSTALL.format(dir=".whl") in gp.__doc__
    args = gp.platform_args()
    assert args[:2] == ["--python-version", "3.12"] and "--only-binary=:all:" in args
    assert "manylinux_2_28_x86_64" in args  # torch's and spaCy's wheels are tagged so


def test_only_shared_libraries_are_stripped():
    for name in ("libarrow.so.2300", "tokenizer.cpython-312-x86_64-linux-gnu.so", "libx.so"):
        assert gp.SHARED_LIBRARY.search(name), name
    for name in ("v0.7.1.some-named-index.parquet", "notes.sources", "x.so.txt"):
        assert not gp.SHARED_LIBRARY.search(name), name


def test_another_python_version_can_be_targeted():
    try:
        gp.set_target("3.11")
        args = gp.platform_args()
        assert args[:2] == ["--python-version", "3.11"] and "cp311" in args
        assert gp.TARGET_ENV["python_version"] == "3.11"
        assert not Requirement('x; python_version >= "3.12"').marker.evaluate(gp.TARGET_ENV)
        with pytest.raises(ValueError):
            gp.set_target("py3")
    finally:
        gp.set_target("3.12")
    assert gp.platform_args()[1] == "3.12"
