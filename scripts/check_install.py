"""What does `pip install -r requirements-gpu.txt` install on a fresh machine? Asks pip's
resolver, against pip's default index (PyPI) and with the local pip configuration left out,
for each supported CPython on Linux x86_64, and checks that torch and CuPy are built for one
CUDA version, that each CUDA library is installed once, and that the spaCy stack fits (NumPy
2, spacy-transformers' bound on transformers). Nothing is downloaded but metadata, and, where
this environment's pip is older than MIN_PIP, a current pip into a temporary environment.

    python -m scripts.check_install                      # both GPU requirement files, 3.10-3.13
    python -m scripts.check_install requirements-gpu.txt --python 3.12 --markdown

Exit 1 when a resolution fails or installs something spaCy cannot use on the GPU.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import venv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import typer
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name as canonical
from packaging.version import Version
from wasabi import msg

from .check_gpu import GPU_REQUIREMENTS, cuda_major_of_package, is_cupy

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The first pip that resolves for another platform without installing (`--dry-run` with
# `--platform`); older ones stop with "Can not use any platform or abi specific options unless
# installing via '--target'". CPython 3.11's `python -m venv` gives pip 23.2.1.
MIN_PIP = Version("23.3")
# A machine accepts every manylinux_2_X wheel up to its glibc, while pip given --platform
# accepts only the tags named: torch, triton and NCCL publish _2_28, _2_27 and _2_18 wheels.
# 2.35 is Ubuntu 22.04's glibc.
GLIBC = "2.35"
# pip settings that only say how to reach the index are kept; every other PIP_* variable and
# every pip configuration file is left out, as on a fresh machine.
CONNECTION_VARS = (
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_PROXY",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
)
# Published as source distributions only, which pip refuses with --only-binary=:all: (needed
# to resolve for another Python): built here into pure-Python wheels, valid for every target.
SOURCE_ONLY = ("seqeval",)
CUDA_RUNTIME = re.compile(r"nvidia-cuda-runtime(-cu\d+)?$")
CUDA_SUFFIX = re.compile(r"-cu\d+$")


@dataclass
class Package:
    version: str
    requires: List[str] = field(default_factory=list)


@dataclass
class Resolution:
    """What pip would install for one requirements file and one Python (or why it cannot)."""

    requirements: str
    python: str
    packages: Dict[str, Package] = field(default_factory=dict)
    error: str = ""


def read_report(report: Dict) -> Dict[str, Package]:
    """The packages of a `pip install --dry-run --report` JSON report."""
    packages = {}
    for item in report.get("install", []):
        meta = item["metadata"]
        packages[canonical(meta["name"])] = Package(
            meta["version"], meta.get("requires_dist") or []
        )
    return packages


def target_environment(python: str) -> Dict[str, str]:
    """Marker values of CPython `python` on Linux x86_64."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def requirements_of(package: Package, python: str) -> Iterator[Requirement]:
    """The package's requirements that apply on the target (no extras)."""
    env = target_environment(python)
    for line in package.requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            yield req


def pinned_minor(req: Requirement) -> Optional[str]:
    """'13.2' of 'cuda-toolkit==13.2.2'; None for a range."""
    for spec in req.specifier:
        if spec.operator in ("==", "===") and not spec.version.endswith("*"):
            release = Version(spec.version).release
            return f"{release[0]}.{release[1] if len(release) > 1 else 0}"
    return None


def torch_cuda(packages: Dict[str, Package], python: str) -> Optional[str]:
    """The CUDA version torch is built for, from the CUDA runtime it requires: the pinned
    cuda-toolkit release (torch 2.11 and newer) or nvidia-cuda-runtime-cuNN (older)."""
    torch = packages.get("torch")
    if torch is None:
        return None
    for req in requirements_of(torch, python):
        name = canonical(req.name)
        if name == "cuda-toolkit" or CUDA_RUNTIME.match(name):
            return pinned_minor(req)
    return None


def cuda_runtimes(packages: Dict[str, Package]) -> List[str]:
    return [
        f"{'.'.join(p.version.split('.')[:2])} ({name})"
        for name, p in sorted(packages.items())
        if CUDA_RUNTIME.match(name)
    ]


def cupy_packages(packages: Dict[str, Package]) -> List[str]:
    return sorted(n for n in packages if is_cupy(n))


def library_copies(packages: Dict[str, Package]) -> Dict[str, List[str]]:
    """NVIDIA libraries installed twice under two names (nvidia-cublas and nvidia-cublas-cu12)."""
    by_library: Dict[str, List[str]] = {}
    for name, p in sorted(packages.items()):
        if name.startswith("nvidia-"):
            by_library.setdefault(CUDA_SUFFIX.sub("", name), []).append(f"{name} {p.version}")
    return {lib: names for lib, names in by_library.items() if len(names) > 1}


def problems(res: Resolution) -> List[str]:
    """Why spaCy could not use this install on a GPU; empty when it can."""
    if res.error:
        return [f"pip could not resolve it: {res.error}"]
    pk = res.packages
    found = []
    for name in ("torch", "spacy", "thinc", "spacy-transformers", "transformers", "numpy"):
        if name not in pk:
            found.append(f"{name} is not installed")
    cuda = torch_cuda(pk, res.python)
    if "torch" in pk and cuda is None:
        found.append(f"torch {pk['torch'].version} is not a CUDA build")
    cupys = cupy_packages(pk)
    if not cupys:
        found.append("CuPy is not installed")
    elif len(cupys) > 1:
        found.append(f"several CuPy packages: {', '.join(cupys)}")
    elif cuda and cuda_major_of_package(cupys[0]) != cuda.split(".")[0]:
        found.append(
            f"torch is built for CUDA {cuda} but {cupys[0]} for CUDA "
            f"{cuda_major_of_package(cupys[0])}"
        )
    runtimes = cuda_runtimes(pk)
    if len(runtimes) > 1:
        found.append(f"{len(runtimes)} CUDA runtimes: {', '.join(runtimes)}")
    for library, names in library_copies(pk).items():
        found.append(f"{library} installed twice: {', '.join(names)}")
    if "numpy" in pk and Version(pk["numpy"].version).major < 2:
        found.append(f"NumPy {pk['numpy'].version}: CuPy 14 and this stack need NumPy 2")
    if "spacy-transformers" in pk and "transformers" in pk:
        for req in requirements_of(pk["spacy-transformers"], res.python):
            wanted = req.specifier or SpecifierSet()
            if canonical(req.name) == "transformers" and pk["transformers"].version not in wanted:
                found.append(
                    f"transformers {pk['transformers'].version} is outside spacy-transformers' "
                    f"range {wanted}"
                )
    return found


def row(res: Resolution, found: Optional[List[str]] = None) -> List[str]:
    """The table's row for a resolution; `found`: its `problems`, if computed already."""
    found = problems(res) if found is None else found
    pk = res.packages
    version = lambda name: pk[name].version if name in pk else "-"  # noqa: E731
    cupys = cupy_packages(pk)
    return [
        Path(res.requirements).name,
        res.python,
        version("torch"),
        torch_cuda(pk, res.python) or "-",
        ", ".join(f"{n} {pk[n].version}" for n in cupys) or "-",
        ", ".join(cuda_runtimes(pk)) or "-",
        version("numpy"),
        version("spacy"),
        version("thinc"),
        version("transformers"),
        "ok" if not found else "FAIL",
    ]


HEADER = [
    "requirements",
    "Python",
    "torch",
    "torch's CUDA",
    "CuPy",
    "CUDA runtime",
    "NumPy",
    "spaCy",
    "thinc",
    "transformers",
    "",
]


def clean_environment() -> Dict[str, str]:
    """This process's environment without the local pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in CONNECTION_VARS}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf of the user, the site or the machine
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def platform_tags(glibc: str) -> List[str]:
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2 or minor < 17:
        raise typer.BadParameter(f"glibc {glibc}: give a version from 2.17 on, e.g. 2.35")
    legacy = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    return [f"manylinux_2_{m}_x86_64" for m in range(minor, 4, -1)] + legacy + ["linux_x86_64"]


def last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed without a message"])[-1][:400]


def source_only_requirements(files: List[Path]) -> List[str]:
    """The requirement lines (with their versions) of SOURCE_ONLY packages in these files."""
    found = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(("-r", "--requirement")):
                found += source_only_requirements([path.parent / line.split(None, 1)[1]])
            elif line and canonical(Requirement(line).name) in SOURCE_ONLY:
                found.append(line)
    return sorted(set(found))


@dataclass
class Pip:
    """`python -m pip` of one environment, asking `index_url` (None: pip's default, PyPI),
    with the local pip configuration left out."""

    python: str
    index_url: Optional[str] = None

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess:
        index = ["--index-url", self.index_url] if self.index_url else []
        return subprocess.run(
            [self.python, "-m", "pip", command, "--quiet", *index, *args],
            capture_output=True,
            text=True,
            env=clean_environment(),
        )


def resolver_pip(work: Path, index_url: Optional[str]) -> Pip:
    """This environment's pip if it is MIN_PIP or newer; else a current pip, installed from
    the index into a temporary environment under `work`."""
    try:
        mine = metadata.version("pip")
        if Version(mine) >= MIN_PIP:
            return Pip(sys.executable, index_url)
    except metadata.PackageNotFoundError:
        mine = "(none)"
    msg.info(
        f"This environment's pip {mine} cannot resolve for another platform: installing pip "
        f"{MIN_PIP} or newer into a temporary environment"
    )
    env_dir = work / "pip-env"
    pip = Pip(str(env_dir / "bin" / "python"), index_url)
    try:
        venv.create(env_dir, with_pip=True)
        run = pip.run("install", f"pip>={MIN_PIP}")
        error = last_error(run.stderr) if run.returncode != 0 else ""
    except (OSError, subprocess.CalledProcessError) as err:
        error = str(err)
    if error:
        raise RuntimeError(
            f"this environment's pip {mine} cannot resolve for another platform, and pip "
            f"{MIN_PIP} or newer could not be installed into a temporary environment ({error}). "
            "Upgrade yours: python -m pip install --upgrade pip"
        )
    return pip


def build_wheels(requirements: List[str], out: Path, pip: Pip) -> None:
    """Pure-Python wheels of source-only requirements, for pip's --find-links."""
    if not requirements:
        return
    run = pip.run("wheel", "--no-deps", "--wheel-dir", str(out), *requirements)
    if run.returncode != 0:
        raise RuntimeError(f"building {', '.join(requirements)}: {last_error(run.stderr)}")
    impure = [w.name for w in out.glob("*.whl") if not w.name.endswith("-none-any.whl")]
    if impure:
        raise RuntimeError(f"not pure-Python wheels, valid for this Python only: {impure}")


def resolve(
    requirements: Path, python: str, glibc: str, pip: Pip, wheels: Path, report: Path
) -> Resolution:
    """Ask pip what `pip install -r requirements` installs for CPython `python`."""
    args = ["--dry-run", "--ignore-installed", "--report", str(report), "--find-links", str(wheels)]
    args += ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    for tag in platform_tags(glibc):
        args += ["--platform", tag]
    run = pip.run("install", *args, "-r", str(requirements))
    res = Resolution(str(requirements), python)
    if run.returncode != 0 or not report.exists():
        res.error = last_error(run.stderr)
    else:
        res.packages = read_report(json.loads(report.read_text(encoding="utf-8")))
    return res


def markdown(rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(HEADER[:-1] + ["verdict"]) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(
    requirements: List[Path] = typer.Argument(
        None, help=f"Requirement files (default: {', '.join(GPU_REQUIREMENTS.values())})"
    ),
    python: List[str] = typer.Option(list(PYTHONS), help="CPython versions to resolve for"),
    glibc: str = typer.Option(GLIBC, help="The target machine's glibc (manylinux tags)"),
    index_url: Optional[str] = typer.Option(
        None, help="The package index users install from (default: pip's, PyPI)"
    ),
    reports: Optional[Path] = typer.Option(None, help="Keep pip's JSON reports in this folder"),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table"),
):
    """Resolve the GPU install for each Python as a fresh machine would; exit 1 on a
    failed resolution, two CUDA versions or runtimes, a library installed twice, or a
    spaCy stack that does not fit."""
    files = requirements or [Path(f) for f in sorted(GPU_REQUIREMENTS.values())]
    for path in files:
        if not path.is_file():
            msg.fail(f"{path}: no such requirements file.", exits=1)
    platform_tags(glibc)  # a bad --glibc stops here
    with tempfile.TemporaryDirectory(prefix="check-install-") as tmp:
        work = Path(reports or tmp)
        work.mkdir(parents=True, exist_ok=True)
        wheels = Path(tmp) / "wheels"
        wheels.mkdir()
        try:
            pip = resolver_pip(Path(tmp), index_url)
            build_wheels(source_only_requirements(files), wheels, pip)
        except RuntimeError as err:
            msg.fail(f"Cannot check the install: {err}", exits=1)
        jobs = [(f, v) for f in files for v in python]
        msg.info(
            f"Resolving {len(jobs)} installs against {index_url or 'PyPI'} for Linux x86_64, glibc "
            f"{glibc} (pip reads package metadata only; a minute or two)"
        )

        def one(job) -> Tuple[Resolution, List[str]]:
            path, version = job
            report = work / f"{path.stem}-py{version}.json"
            res = resolve(path, version, glibc, pip, wheels, report)
            found = problems(res)
            print(f"{'✘' if found else '✔'} {path.name} on Python {version}", flush=True)
            return res, found

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(one, jobs))
    rows = [row(res, found) for res, found in results]
    if as_markdown:
        print(markdown(rows))
    else:
        msg.table(rows, header=HEADER, divider=True)
    failed = [(res, found) for res, found in results if found]
    for res, found in failed:
        msg.fail(f"{Path(res.requirements).name}, Python {res.python}: " + "; ".join(found))
    if failed:
        raise SystemExit(1)
    msg.good("Every install resolves to one CUDA version with torch, CuPy and spaCy that fit.")


if __name__ == "__main__":
    typer.run(main)
