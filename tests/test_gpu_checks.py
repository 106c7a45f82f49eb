"""The GPU checks, on a CPU machine: every state torch, CuPy and the device can be in gets one
message naming what is missing and both ways out; the steps that use the device (train,
evaluate, report) stop within seconds, before any data is loaded."""

import time

import pytest
from packaging.requirements import Requirement

from scripts import check_gpu
from scripts.check_gpu import GPU_REQUIREMENTS, Probe, cuda_major_of_package, problems

from .conftest import ROOT, copy_project, run_cli

CUDA13 = dict(torch_version="2.15.0+cu130", torch_cuda="13.0", torch_devices=1)
CUPY13 = dict(cupy_packages=[("cupy-cuda13x", "14.2.0")], cupy_cuda="13.0", cupy_devices=1)


def working(**changes) -> Probe:
    return Probe(**{"gpu_id": 0, **CUDA13, **CUPY13, "device_name": "NVIDIA H100", **changes})


def only(found):
    assert len(found) == 1, found
    return found[0]


def test_a_working_gpu_has_no_problem():
    assert problems(working()) == []


def test_cpu_only_torch_and_no_cupy_are_both_named():
    found = problems(Probe(0, torch_version="2.13.0+cpu"))
    text = " | ".join(f"{what}: {fix}" for what, fix in found)
    assert "PyTorch 2.13.0+cpu is a CPU-only build" in text
    assert "CuPy is not installed" in text
    assert "pip uninstall -y torch && pip install -r requirements-gpu.txt" in text
    assert "pip install -r requirements-gpu-cuda12.txt for a driver older than 580" in text


def test_torch_missing():
    what, fix = problems(Probe(0, cupy_packages=[("cupy-cuda13x", "14.2.0")]))[0]
    assert what == "PyTorch is not installed" and fix == "pip install -r requirements-gpu.txt"


@pytest.mark.parametrize(
    "torch_cuda,file", [("13.0", "requirements-gpu.txt"), ("12.8", "requirements-gpu-cuda12.txt")]
)
def test_missing_cupy_gets_the_requirements_for_torchs_cuda(torch_cuda, file):
    what, fix = only(problems(working(torch_cuda=torch_cuda, cupy_packages=[])))
    assert "CuPy is not installed" in what
    assert fix.startswith(f"pip install -r {file}")
    assert f"CUDA {torch_cuda.split('.')[0]}" in fix


def test_cupy_for_another_cuda_than_torch():
    p = working(torch_cuda="13.0", cupy_packages=[("cupy-cuda12x", "14.2.0")])
    what, fix = only(problems(p))
    assert what == "CuPy (cupy-cuda12x) is built for CUDA 12 but torch for CUDA 13.0"
    assert fix == "pip uninstall -y cupy-cuda12x && pip install -r requirements-gpu.txt"


def test_two_cupy_packages():
    p = working(cupy_packages=[("cupy-cuda12x", "13.3.0"), ("cupy-cuda13x", "14.2.0")])
    what, fix = only(problems(p))
    assert "several CuPy packages" in what and "cupy-cuda12x, cupy-cuda13x" in what
    assert fix == "pip uninstall -y cupy-cuda12x"  # keeps the one that matches torch


def test_cupy_that_cannot_be_imported():
    err = "ImportError: libnvrtc.so.13: cannot open shared object file"
    what, fix = only(problems(working(cupy_error=err, cupy_cuda=None, cupy_devices=0)))
    assert "cannot be imported" in what and "libnvrtc.so.13" in what
    assert fix.startswith("pip install -r requirements-gpu.txt")
    assert "--force-reinstall --no-deps cupy-cuda13x" in fix


def test_cupy_without_the_cublas_module_spacy_needs():
    what, fix = only(problems(working(thinc_error="ImportError: libcublas.so.13")))
    assert "cuBLAS" in what and "libcublas.so.13" in what
    assert fix.startswith("pip install -r requirements-gpu.txt")


def test_no_device_names_the_driver():
    p = working(
        torch_devices=0,
        cupy_devices=0,
        torch_note="Found no NVIDIA driver on your system",
        cupy_device_error="CUDARuntimeError: cudaErrorInsufficientDriver",
    )
    what, fix = only(problems(p))
    assert what.startswith("no CUDA device is visible (no nvidia-smi")
    assert "Found no NVIDIA driver" in what and "cudaErrorInsufficientDriver" in what
    assert "nvidia-smi" in fix and "CUDA_VISIBLE_DEVICES" in fix
    assert "driver 550.54" in only(problems(working(torch_devices=0, driver="550.54")))[0]


def test_a_gpu_id_past_the_devices():
    what, fix = only(problems(working(gpu_id=2, torch_devices=2, cupy_devices=2)))
    assert what == "there is no GPU 2: 2 device(s) visible, ids 0-1"
    assert fix == "--vars.gpu_id=1"


def test_cuda_major_of_package_names():
    assert cuda_major_of_package("cupy-cuda12x") == "12"
    assert cuda_major_of_package("cupy-cuda13x") == "13"
    assert cuda_major_of_package("cupy-cuda117") == "11"
    assert cuda_major_of_package("cupy") is None
    assert cuda_major_of_package("cupy-rocm-5-0") is None


@pytest.mark.parametrize("major", sorted(GPU_REQUIREMENTS))
def test_each_requirements_file_installs_the_project_torch_and_cupy_of_one_cuda(major):
    """The file check_gpu names for a CUDA major version asks for that CuPy and a torch range;
    what pip makes of it is checked against the index in test_check_install.py."""
    text = (ROOT / GPU_REQUIREMENTS[major]).read_text()
    reqs = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert reqs[0] == "-r requirements.txt"
    names = [Requirement(r).name for r in reqs[1:]]
    assert names == ["torch", f"cupy-cuda{major}x"]


@pytest.mark.parametrize(
    "gpu_id,mixed,config,expected",
    [
        (-1, True, "trf", True),
        (-1, False, "trf", False),
        (0, True, "trf", False),
        (-1, True, "cnn", False),
    ],
)
def test_mixed_precision_on_the_cpu(gpu_id, mixed, config, expected):
    problem = check_gpu.precision_problem(gpu_id, mixed, ROOT / "configs" / f"{config}.cfg")
    assert (problem is not None) == expected
    if expected:
        assert "mixed_precision=true needs a GPU" in problem[0]
        assert "--vars.mixed_precision=false" in problem[1]


def cpu_machine_problems():
    """What keeps GPU 0 from being used on this machine (none on a working GPU machine)."""
    found = problems(check_gpu.probe(0))
    if not found:
        pytest.skip("GPU 0 works on this machine: nothing to report")
    return found


def assert_one_clear_message(result, found, seconds, limit=30.0):
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    for what, fix in found:
        assert what in out and fix in out
    # both ways out: the install, and the CPU
    assert "requirements-gpu.txt" in out or "cupy-cuda" in out
    assert "--vars.gpu_id=-1 --vars.mixed_precision=false" in out and "--vars.config=cnn" in out
    assert seconds < limit, f"took {seconds:.1f}s"


def test_check_gpu_cli_on_this_machine():
    found = cpu_machine_problems()
    start = time.perf_counter()
    result = run_cli("scripts.check_gpu", "--gpu-id", "0")
    assert_one_clear_message(result, found, time.perf_counter() - start, limit=20.0)
    report = run_cli("scripts.check_gpu", "--gpu-id", "0", "--report")
    assert "torch built for CUDA" in report.stdout and "CuPy package" in report.stdout
    assert run_cli("scripts.check_gpu", "--gpu-id", "-1").returncode == 0


@pytest.fixture
def project(tmp_path):
    """A project copy whose corpus, model and metrics files exist but are not data: a step
    that got past the check would fail on them with another message."""
    project = copy_project(tmp_path / "project")
    for scheme in ("a", "b"):
        for name in ("train/000.spacy", "dev.spacy", "test.spacy", "labels/ner.json"):
            path = project / "corpus" / f"en_multinerd_{scheme}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a DocBin")
        (project / "corpus" / f"en_multinerd_{scheme}" / "stats.json").write_text("{}")
        (project / "training" / f"en_multinerd_{scheme}_trf" / "model-best").mkdir(parents=True)
        (project / "training" / f"en_multinerd_{scheme}_trf" / "train_log.jsonl").write_text("{}")
        (project / "metrics").mkdir(exist_ok=True)
        (project / "metrics" / f"en_multinerd_{scheme}_trf.json").write_text("{}")
    return project


@pytest.mark.parametrize("command", ["train-a", "evaluate", "report"])
def test_steps_that_use_the_gpu_stop_at_once_without_one(project, command):
    found = cpu_machine_problems()
    start = time.perf_counter()
    result = run_cli(
        "spacy", "project", "run", command, project, cwd=project
    )  # gpu_id 0: the default
    assert_one_clear_message(result, found, time.perf_counter() - start)
    assert (project / "training" / "en_multinerd_a_trf" / "model-best").exists()  # not reset
    assert not (project / "metrics" / "en_multinerd_b_trf.json").read_text()[2:]  # not rewritten


def test_training_on_the_cpu_with_mixed_precision_is_refused(project):
    result = run_cli("spacy", "project", "run", "train-a", project, "--vars.gpu_id=-1", cwd=project)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out
    assert "mixed_precision=true needs a GPU, but gpu_id is -1" in out
    assert "--vars.mixed_precision=false" in out
    assert (project / "training" / "en_multinerd_a_trf" / "model-best").exists()
