"""Wheels for a GPU machine without internet whose image already has the GPU stack: Python
3.12, torch built for CUDA, CuPy, the CUDA libraries (e.g. the lent H100/H200 image: torch
2.11 for CUDA 13, cupy-cuda13x, and transformers 5.x, too new for spacy-transformers).

Run it where pip reaches PyPI:

    python -m scripts.gpu_payload --pack           # -> .whl/ (git-ignored): wheels, site.tar.xz, INSTALL
    python -m scripts.gpu_payload --image-freeze freeze.txt   # the image's `pip list --format=freeze`

It resolves requirements.txt with pip for CPython 3.12 on manylinux x86_64, with the image's
GPU stack (torch, triton, CuPy, nvidia-*/cuda-* libraries) standing in as empty stubs so that
pip never fetches them; leaves out every package the image has in a version that satisfies
all requirements on it (the built-in list, --image-freeze, --leave); builds wheels for the few
requirements PyPI has only as source (seqeval); downloads the rest into a fresh folder. On the
GPU machine, one line installs them in front of the image's own packages:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site

The wheels are large (spaCy's shared libraries carry debug symbols); --pack also writes
site.tar.xz, the same packages installed here with the debug symbols stripped, a fraction of
the size, installed with the line in .whl/INSTALL. The device tool carries 64 MiB a call:
leave out what the GPU steps do not need there (e.g. `--leave pyarrow --leave pandas
--leave datasets` when fetch and convert run here and corpus/ travels).
"""
import base64
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import typer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from wasabi import msg

from .corpus import atomic_dir

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "3.12"
MANYLINUX = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 26, 27, 28, 31, 34, 35, 39)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
# What the GPU image brings and the payload never carries: the CUDA builds are gigabytes and
# must match the machine's driver. They stand in as stubs while pip resolves.
GPU_STACK = re.compile(r"^(torch|triton|cupy(-cuda\d+x?|-rocm.*)?|nvidia-.*|cuda-.*|fastrlock)$")
# The lent GPU image as seen there (the device tool's KINDS.md, 2026-11); --image-freeze
# replaces it with the image's full `pip list --format=freeze`. "*": a version not seen but
# taken to fit (sentence-transformers 6.0.1 is there, so are its scikit-learn, scipy, Pillow).
IMAGE_PACKAGES = {
    "torch": "2.11.0", "triton": "3.6.0", "cupy-cuda13x": "14.2.0", "numpy": "2.5.2",
    "safetensors": "0.8.0", "tokenizers": "0.23.2", "transformers": "5.17.0",
    "huggingface-hub": "1.33.0", "accelerate": "1.15.0", "sentencepiece": "0.2.2",
    "sentence-transformers": "6.0.1", "scikit-learn": "*", "scipy": "*", "pillow": "*",
}  # fmt: skip
TARGET_ENV = {
    "python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "platform_system": "Linux",
    "sys_platform": "linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
}  # fmt: skip
INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
    "{dir}/*.whl && export PYTHONPATH=/tmp/site"
)
PACKED_INSTALL = (
    "mkdir -p /tmp && tar -xJf {dir}/site.tar.xz -C /tmp && export PYTHONPATH=/tmp/site"
)
ANY = "*"  # a package the image has in a version that is taken to fit
DEVICE_LIMIT = 60 * 2**20  # the device tool carries 64 MiB a call, the working tree included
SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")  # libx.so, x.cpython-312-x86_64-linux-gnu.so, liby.so.2.1
NO_MATCH = re.compile(r"No matching distribution found for ([^\s;]+)")


def read_freeze(path: Path) -> Dict[str, str]:
    """name -> version from `pip list --format=freeze` / `pip freeze` output."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def stub_wheel(directory: Path, name: str, version: str) -> Path:
    """An installable wheel that holds nothing but the metadata of `name` `version`."""
    dist = f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gpu_payload\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            data = text.encode()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{dist}.dist-info/RECORD,,")
        zf.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def set_target(python: str) -> None:
    """Resolve for another CPython than the image's 3.12 (e.g. "3.11")."""
    global PYTHON
    if not re.fullmatch(r"3\.\d+", python):
        raise ValueError(f"--python takes a CPython version such as 3.12, not {python!r}")
    PYTHON = python
    TARGET_ENV.update(python_version=python, python_full_version=f"{python}.0")


def platform_args() -> List[str]:
    args = ["--python-version", PYTHON, "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}"]
    for tag in MANYLINUX:
        args += ["--platform", tag]
    return args + ["--only-binary=:all:"]


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def resolve(requirements: Path, stubs: Path, constraints: Path, built: Path, work: Path) -> Dict:
    """pip's resolution of the requirements for the target platform (its --report JSON).
    A requirement PyPI has only as source is built into a wheel here and resolution retried."""
    for _ in range(10):
        report = work / "report.json"
        result = pip(
            "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "--target", str(work / "target"), *platform_args(),
            "--find-links", str(stubs), "--find-links", str(built),
            "-c", str(constraints), "-r", str(requirements),
        )  # fmt: skip
        if result.returncode == 0:
            return json.loads(report.read_text(encoding="utf-8"))
        missing = NO_MATCH.search(result.stderr)
        if not missing:
            raise RuntimeError(f"pip could not resolve {requirements}:\n{result.stderr[-3000:]}")
        req = missing.group(1)
        msg.info(f"{req} has no wheel for CPython {PYTHON} on PyPI: building one from its source")
        wheel = pip("wheel", "--no-deps", "--quiet", "-w", str(built), req)
        made = [w for w in built.glob(f"{canonicalize_name(Requirement(req).name).replace('-', '_')}-*.whl")]
        if wheel.returncode != 0 or not made:
            raise RuntimeError(f"{req}: no wheel for CPython {PYTHON}, and building one failed:\n{wheel.stderr[-2000:]}")
        if not all(w.name.endswith("-none-any.whl") for w in made):
            raise RuntimeError(f"{req}: the wheel built here is not pure Python ({made[0].name}); it cannot travel.")
    raise RuntimeError("resolution kept failing on packages without wheels")


def requirements_on(items: Iterable[Dict], top: Iterable[Requirement]) -> Dict[str, List[Requirement]]:
    """Every requirement that applies on the target platform, by the name it is on."""
    out: Dict[str, List[Requirement]] = {}
    for req in top:
        out.setdefault(canonicalize_name(req.name), []).append(req)
    for item in items:
        extras = set(item.get("requested_extras") or [])
        for text in item["metadata"].get("requires_dist") or []:
            req = Requirement(text)
            if req.marker and not any(
                req.marker.evaluate({**TARGET_ENV, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def image_satisfies(name: str, image: Dict[str, str], reqs: Dict[str, List[Requirement]]) -> bool:
    """Whether the image's version of `name` meets every requirement on it."""
    version = image.get(canonicalize_name(name))
    if version is None:
        return False
    if version == ANY:
        return True
    return all(
        req.specifier.contains(Version(version), prereleases=True)
        for req in reqs.get(canonicalize_name(name), [])
    )


def top_requirements(path: Path) -> List[Requirement]:
    reqs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            reqs += top_requirements(path.parent / line[3:].strip())
        elif line and not line.startswith("-"):
            req = Requirement(line)
            if not req.marker or req.marker.evaluate(TARGET_ENV):
                reqs.append(req)
    return reqs


def plan(report: Dict, image: Dict[str, str], top: List[Requirement]) -> Tuple[List[Dict], List[str]]:
    """(the items to carry, the names left to the image) from pip's resolution report."""
    items = report["install"]
    reqs = requirements_on(items, top)
    carry: List[Dict] = []
    left: List[str] = []
    for item in items:
        name = canonicalize_name(item["metadata"]["name"])
        if GPU_STACK.match(name) or image_satisfies(name, image, reqs):
            left.append(f"{name} {image.get(name, '(GPU stack)')}")
        else:
            carry.append(item)
    return carry, left


def pack(wheels: List[Path], archive: Path, work: Path) -> int:
    """Install the wheels for the target platform into a folder here, strip the debug
    symbols of its shared libraries (spaCy's alone shrink from 113 to 14 MB), drop bytecode,
    and write it as one .tar.xz; returns the archive's size."""
    import shutil
    import tarfile

    site = work / "site"
    done = pip("install", "--quiet", "--no-index", "--no-deps", "--no-compile", "--target", str(site),
               *platform_args(), *map(str, wheels))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pip could not unpack the wheels:\n{done.stderr[-3000:]}")
    strip = shutil.which("strip")
    if strip:
        libs = [str(p) for p in site.rglob("*.so*")
                if SHARED_LIBRARY.search(p.name) and p.is_file() and not p.is_symlink()]  # fmt: skip
        for start in range(0, len(libs), 200):
            subprocess.run([strip, "--strip-debug", *libs[start:start + 200]], capture_output=True)
    else:
        msg.warn("No `strip` on this machine: the shared libraries keep their debug symbols.")
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        tar.add(site, arcname="site")
    return archive.stat().st_size


def main(
    out: Path = typer.Option(ROOT / ".whl", help="The folder to fill (replaced whole; keep it git-ignored)"),
    requirements: Path = typer.Option(ROOT / "requirements.txt", exists=True, dir_okay=False),
    image_freeze: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                help="The image's `python3 -m pip list --format=freeze`; default: the built-in list"),
    leave: List[str] = typer.Option([], "--leave", help="A package the image has (any version) or that the GPU steps do not need: not carried (repeatable)"),
    pack_site: bool = typer.Option(False, "--pack", help="Also write OUT/site.tar.xz: the wheels installed here, debug symbols stripped (a fraction of their size), with its own one-line install"),
    python: str = typer.Option(PYTHON, help="The GPU machine's CPython version"),
):  # fmt: skip
    """Download the cp312 manylinux wheels the project needs on a GPU machine whose image has
    torch and CuPy, into OUT, with the one-line install in OUT/INSTALL."""
    set_target(python)
    image = read_freeze(image_freeze) if image_freeze else dict(IMAGE_PACKAGES)
    image = {canonicalize_name(k): v for k, v in image.items()}
    image.update({canonicalize_name(name): ANY for name in leave})
    top = top_requirements(requirements)
    with tempfile.TemporaryDirectory(prefix="gpu-payload-") as tmp:
        work = Path(tmp)
        stubs, built = work / "stubs", work / "built"
        stubs.mkdir(), built.mkdir()
        pins = []
        for name, version in image.items():
            if GPU_STACK.match(name) and version != ANY:
                stub_wheel(stubs, name, f"{version}+image")
                pins.append(f"{name}=={version}+image")
        (work / "constraints.txt").write_text("\n".join(pins) + "\n")
        msg.info(f"Resolving {requirements.name} for CPython {PYTHON} on manylinux x86_64")
        report = resolve(requirements, stubs, work / "constraints.txt", built, work)
        carry, left = plan(report, image, top)
        with atomic_dir(out) as folder:
            local = [i for i in carry if i["download_info"]["url"].startswith("file:")]
            remote = [i for i in carry if i not in local]
            for item in local:  # built here from source, or in a local wheel folder of pip's
                src = Path(item["download_info"]["url"][len("file://"):])
                (folder / src.name).write_bytes(src.read_bytes())
            specs = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in remote]
            msg.info(f"Downloading {len(specs)} wheels ({len(local)} more from local folders)")
            got = pip("download", "--no-deps", "--quiet", "-d", str(folder), *platform_args(), *specs)
            if got.returncode != 0:
                raise RuntimeError(f"pip download failed:\n{got.stderr[-3000:]}")
            wheels = sorted(folder.glob("*.whl"))
            names = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
            missing = {canonicalize_name(i["metadata"]["name"]) for i in carry} - names
            if missing:
                raise RuntimeError(f"no wheel downloaded for {', '.join(sorted(missing))}")
            install = INSTALL.format(dir=out.name)
            if pack_site:
                msg.info("Packing the installed wheels into site.tar.xz (a few minutes)")
                pack(wheels, folder / "site.tar.xz", work)
                install = PACKED_INSTALL.format(dir=out.name)
                for wheel in wheels:  # the archive replaces them: the folder travels whole
                    wheel.unlink()
            (folder / "INSTALL").write_text(install + "\n")
            manifest = {
                "python": PYTHON,
                "platforms": MANYLINUX,
                "requirements": requirements.name,
                "wheels": [w.name for w in wheels],
                "left_to_the_image": left,
                "install": install,
            }
            (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    carried = sum(f.stat().st_size for f in out.iterdir())
    what = "site.tar.xz" if pack_site else f"{len(list(out.glob('*.whl')))} wheels"
    msg.good(f"{out}: {what} of {len(manifest['wheels'])} packages, {carried / 2**20:.1f} MiB")
    msg.text(f"Left to the image: {', '.join(left)}")
    if carried > DEVICE_LIMIT:
        msg.warn(
            f"{carried / 2**20:.0f} MiB is over what one call of the device tool carries "
            f"(64 MiB with the working tree): --pack, or --leave what the image has "
            "(--image-freeze reads its list) or what the GPU steps do not need."
        )
    msg.text(f"On the GPU machine, from the folder that holds {out.name}/:")
    print(install)


if __name__ == "__main__":
    typer.run(main)
