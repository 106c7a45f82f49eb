"""check-install: what pip would install for the GPU on a fresh machine. Its reading and its
verdicts are checked on stored pip reports, and an old pip offline (no network); one test,
marked `live`, asks the live index."""

import copy
import json
import subprocess
import sys
import sysconfig

import pytest
from typer.testing import CliRunner

from scripts import check_install
from scripts.check_install import Package, Resolution, problems, read_report, row

from .conftest import ROOT

REPORTS = ROOT / "tests" / "fixtures" / "pip_reports"


def stored(name: str, python: str = "3.11") -> Resolution:
    report = json.loads((REPORTS / name).read_text())
    return Resolution("requirements-gpu.txt", python, read_report(report))


@pytest.fixture
def good() -> Resolution:
    return stored("cuda13-py3.11.json")


def test_a_coherent_cuda_13_install_passes_and_its_row_reads_the_report(good):
    assert problems(good) == []
    cells = dict(zip(check_install.HEADER, row(good)))
    assert cells["torch"] == "2.15.0" and cells["torch's CUDA"] == "13.2"  # cuda-toolkit==13.2.2
    assert cells["CuPy"] == "cupy-cuda13x 14.2.0"
    assert cells["CUDA runtime"] == "13.2 (nvidia-cuda-runtime)"
    assert cells["NumPy"].startswith("2.") and cells["spaCy"].startswith("3.8")
    assert cells["transformers"] == "4.53.2" and cells[""] == "ok"


def test_torch_2_10_beside_cupy_for_cuda_13_fails_with_every_reason():
    """What pip resolved for requirements-gpu.txt before it had a torch floor."""
    bad = stored("torch2.10-cupy13-py3.11.json")
    found = problems(bad)
    text = " | ".join(found)
    assert "torch is built for CUDA 12.8 but cupy-cuda13x for CUDA 13" in text
    assert "2 CUDA runtimes: 13.5 (nvidia-cuda-runtime), 12.8 (nvidia-cuda-runtime-cu12)" in text
    assert "nvidia-cublas installed twice: nvidia-cublas 13" in text
    assert row(bad)[-1] == "FAIL"


def test_a_failed_resolution_is_a_failure():
    res = Resolution("requirements-gpu.txt", "3.10", error="ERROR: ResolutionImpossible")
    assert problems(res) == ["pip could not resolve it: ERROR: ResolutionImpossible"]


def test_a_cpu_torch_numpy_1_two_cupys_and_a_transformers_out_of_range(good):
    pk = copy.deepcopy(good.packages)
    pk["torch"].requires = [r for r in pk["torch"].requires if "cuda" not in r.lower()]
    pk["numpy"] = Package("1.26.4")
    pk["cupy-cuda12x"] = Package("14.2.0")
    pk["transformers"] = Package("4.57.0")
    text = " | ".join(problems(Resolution("r.txt", "3.11", pk)))
    assert "torch 2.15.0 is not a CUDA build" in text
    assert "NumPy 1.26.4" in text
    assert "several CuPy packages: cupy-cuda12x, cupy-cuda13x" in text
    assert "transformers 4.57.0 is outside spacy-transformers' range" in text


def test_requirements_are_read_for_the_target_python_only(good):
    """A requirement behind a marker for another Python does not count."""
    torch = good.packages["torch"]
    marked = Package(torch.version, ['cuda-toolkit==12.9.1; python_version < "3.11"'])
    pk = {**good.packages, "torch": marked}
    assert check_install.torch_cuda(pk, "3.10") == "12.9"
    assert check_install.torch_cuda(pk, "3.11") is None


def test_every_manylinux_tag_up_to_the_glibc_is_named():
    tags = check_install.platform_tags("2.35")
    for tag in ("manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64"):
        assert tag in tags
    assert "manylinux_2_18_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_36_x86_64" not in tags and "linux_x86_64" in tags
    with pytest.raises(Exception, match="2.17"):
        check_install.platform_tags("3.1")


def test_the_local_pip_configuration_is_left_out(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/wheelhouse")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/pip/constraints.txt")
    monkeypatch.setenv("PIP_INDEX_URL", "http://mirror.example/simple")
    monkeypatch.setenv("PIP_CERT", "/etc/ssl/certs/ca.pem")
    env = check_install.clean_environment()
    assert not {"PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_INDEX_URL"} & set(env)
    assert env["PIP_CERT"] == "/etc/ssl/certs/ca.pem"  # how to reach the index stays
    assert env["PIP_CONFIG_FILE"] == check_install.os.devnull


def test_source_only_requirements_are_found_through_r_lines():
    files = [ROOT / "requirements-gpu.txt", ROOT / "requirements-gpu-cuda12.txt"]
    found = check_install.source_only_requirements(files)
    assert [r.split(">")[0] for r in found] == ["seqeval"]


def test_the_command_prints_one_table_and_exits_1_with_the_reason(monkeypatch, tmp_path):
    reports = {"3.11": "cuda13-py3.11.json", "3.10": "torch2.10-cupy13-py3.11.json"}
    monkeypatch.setattr(check_install, "resolver_pip", lambda *args: None)
    monkeypatch.setattr(check_install, "build_wheels", lambda *args: None)
    monkeypatch.setattr(
        check_install,
        "resolve",
        lambda path, python, *rest: Resolution(
            str(path), python, read_report(json.loads((REPORTS / reports[python]).read_text()))
        ),
    )
    app = check_install.typer.Typer()
    app.command()(check_install.main)
    args = [str(ROOT / "requirements-gpu.txt"), "--python", "3.10", "--python", "3.11"]
    result = CliRunner().invoke(app, args + ["--markdown"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.startswith("| requirements-gpu.txt")]
    assert [ln.split(" | ")[1] for ln in lines] == ["3.10", "3.11"]
    assert lines[0].endswith("FAIL |") and lines[1].endswith("ok |")
    assert "requirements-gpu.txt, Python 3.10: torch is built for CUDA 12.8" in result.output
    result = CliRunner().invoke(app, [str(ROOT / "requirements-gpu.txt"), "--python", "3.11"])
    assert result.exit_code == 0, result.output


def test_an_old_pip_stops_with_one_line_that_names_the_pip_needed(tmp_path):
    """The pip that `python -m venv` gives on CPython 3.11 (23.2.1) refuses --dry-run with
    --platform: check-install, run with it and no index to reach, tries a current pip in a
    temporary environment and stops with one line: the pip it needs and the upgrade command."""
    old = tmp_path / "old-pip"
    subprocess.run([sys.executable, "-m", "venv", str(old)], check=True)
    python = old / "bin" / "python"
    pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    old_version = pip.stdout.split()[1]  # "pip 23.2.1 from ..."
    if check_install.Version(old_version) >= check_install.MIN_PIP:
        pytest.skip(f"this Python's venv gives a pip new enough: {pip.stdout.strip()}")
    # the project's dependencies from this environment, after the venv's own pip
    (old_site,) = old.glob("lib/python*/site-packages")
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (old_site / "deps.pth").write_text("\n".join(sorted(here)) + "\n")
    unreachable = "http://127.0.0.1:9/simple"
    run = subprocess.run(
        [python, "-m", "scripts.check_install", "requirements-gpu.txt", "--python", "3.11"]
        + ["--index-url", unreachable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**check_install.os.environ, "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "5"},
    )
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    (message,) = " ".join(run.stdout.split()).split("✘")[1:]  # one message (wrapped to 80)
    assert message.startswith(f" Cannot check the install: this environment's pip {old_version} ")
    assert f"pip {check_install.MIN_PIP} or newer could not be installed" in message
    assert "python -m pip install --upgrade pip" in message


@pytest.mark.live
def test_requirements_gpu_resolves_today_for_this_python(tmp_path):
    """The live index: what a fresh machine with this Python would install today (with a
    current pip of its own where this environment's is too old)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = [ROOT / "requirements-gpu.txt"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pip = check_install.resolver_pip(tmp_path, None)
    check_install.build_wheels(check_install.source_only_requirements(files), wheels, pip)
    res = check_install.resolve(
        files[0], python, check_install.GLIBC, pip, wheels, tmp_path / "r.json"
    )
    assert problems(res) == [], row(res)
    assert "seqeval" in res.packages
