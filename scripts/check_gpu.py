"""Can this machine run the project on GPU `gpu_id`? Checked in seconds, before any data is
loaded, by the first step that needs the device (train, evaluate, report).

spaCy needs two things on a GPU: a CUDA build of PyTorch (the transformer) and CuPy (thinc's
GPU arrays, which `spacy train --gpu-id` requires), both built for the same CUDA major version
and both seeing the device. Every way that fails gets one message that names what is missing
and both ways out: the pip line that fixes it, or the CPU.

    python -m scripts.check_gpu --gpu-id 0 --report   # all it found (`spacy project run check-gpu`)
    python -m scripts.check_gpu --gpu-id 0            # one line, or the failure (exit 1)
    # fp16 needs a GPU:
    python -m scripts.check_gpu --gpu-id -1 --mixed-precision true --config configs/trf.cfg
"""

import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from wasabi import msg

from .hub import first_line

# The requirements file for each CUDA major version of torch: torch and CuPy (with its CUDA
# libraries, `[ctk]`) for that CUDA, one copy of each library. `check-install` checks what they
# resolve to. Installing CuPy alone could upgrade a CUDA library that torch pins: a fix is
# always the whole file.
GPU_REQUIREMENTS = {"13": "requirements-gpu.txt", "12": "requirements-gpu-cuda12.txt"}
DEFAULT_CUDA = "13"  # pip's default torch on Linux (2.11 and newer)
CPU_WAY_OUT = (
    "Or run on the CPU: add `--vars.gpu_id=-1 --vars.mixed_precision=false` to the "
    "`spacy project run` command, e.g. `python -m spacy project run all . --vars.gpu_id=-1 "
    "--vars.mixed_precision=false` (and `--vars.config=cnn` for the CPU pipeline)."
)

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
GPU_WAY_OUT = (
    "Or train on a GPU: `--vars.gpu_id=0`, after "
    f"`pip install -r {GPU_REQUIREMENTS[DEFAULT_CUDA]}`."
)


@dataclass
class Probe:
    """What this machine has, as torch, CuPy and thinc see it."""

    gpu_id: int
    torch_version: Optional[str] = None  # None: torch is not installed
    torch_cuda: Optional[str] = None  # torch.version.cuda; None for a CPU-only build
    torch_devices: int = 0
    torch_note: str = ""  # why torch sees no device (its warning), if it said
    cupy_packages: List[Tuple[str, str]] = field(default_factory=list)  # (distribution, version)
    cupy_error: str = ""  # CuPy is installed but cannot be imported
    cupy_cuda: Optional[str] = None  # the CUDA runtime CuPy loaded, e.g. "13.0"
    cupy_devices: int = 0
    cupy_device_error: str = ""  # why CuPy sees no device
    thinc_error: str = ""  # thinc's own GPU imports (cupy.cublas, cupyx) failed
    device_name: str = ""
    driver: str = ""  # from nvidia-smi; "" when there is none


def cuda_major_of_package(name: str) -> Optional[str]:
    """'cupy-cuda12x' -> '12', 'cupy-cuda117' -> '11'; None for a source build or ROCm."""
    match = re.fullmatch(r"cupy-cuda(\d+)x?", name)
    if not match:
        return None
    digits = match.group(1)
    return digits if name.endswith("x") else digits[:-1]


def is_cupy(name: str) -> bool:
    """A CuPy distribution, by its canonical name: cupy (source build), cupy-cudaNN[x],
    cupy-rocm-*."""
    return name == "cupy" or name.startswith(("cupy-cuda", "cupy-rocm"))


def parse_bool(value: str, option: str) -> bool:
    """A true/false option as the project vars pass it; exits with a message otherwise."""
    if value.strip().lower() not in BOOLEANS:
        msg.fail(f"{option} must be true or false, not {value!r}.", exits=1)
    return BOOLEANS[value.strip().lower()]


def cupy_distributions() -> List[Tuple[str, str]]:
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    found = set()
    for dist in distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if is_cupy(name):
            found.add((name, dist.version))
    return sorted(found)


def probe(gpu_id: int) -> Probe:
    """Ask torch, CuPy, thinc and nvidia-smi. Takes a few seconds (importing torch)."""
    p = Probe(gpu_id)
    try:
        import torch
    except ImportError:
        pass
    else:
        p.torch_version = torch.__version__
        p.torch_cuda = torch.version.cuda
        if p.torch_cuda:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                available = torch.cuda.is_available()
                p.torch_devices = torch.cuda.device_count() if available else 0
            p.torch_note = "; ".join(str(w.message).strip().splitlines()[0] for w in caught)
            if 0 <= gpu_id < p.torch_devices:
                p.device_name = torch.cuda.get_device_name(gpu_id)
    p.cupy_packages = cupy_distributions()
    if p.cupy_packages:
        try:
            import cupy
        except Exception as err:  # a broken install: missing CUDA libraries, NumPy ABI...
            p.cupy_error = first_line(err)
        else:
            try:
                version = cupy.cuda.runtime.runtimeGetVersion()
                p.cupy_cuda = f"{version // 1000}.{version % 1000 // 10}"
            except Exception as err:
                p.cupy_device_error = first_line(err)
            try:
                p.cupy_devices = cupy.cuda.runtime.getDeviceCount()
            except Exception as err:
                p.cupy_device_error = first_line(err)
            try:  # what thinc imports before it calls CuPy usable (thinc/compat.py)
                import cupy.cublas  # noqa: F401
                import cupyx  # noqa: F401
            except Exception as err:
                p.thinc_error = first_line(err)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            p.driver = (
                out.stdout.strip().splitlines()[0]
                if out.returncode == 0 and out.stdout.strip()
                else ""
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return p


def install(cuda_major: Optional[str]) -> str:
    """The pip line that installs torch and CuPy for CUDA `cuda_major` (default: 13)."""
    return (
        f"pip install -r {GPU_REQUIREMENTS.get(cuda_major or '', GPU_REQUIREMENTS[DEFAULT_CUDA])}"
    )


def problems(p: Probe) -> List[Tuple[str, str]]:
    """(what is wrong, the command that fixes it) for GPU p.gpu_id; empty when it can be used."""
    found: List[Tuple[str, str]] = []
    torch_major = p.torch_cuda.split(".")[0] if p.torch_cuda else None
    if p.torch_version is None:
        found.append(("PyTorch is not installed", install(None)))
    elif not p.torch_cuda:
        found.append(
            (
                f"PyTorch {p.torch_version} is a CPU-only build (no CUDA)",
                f"pip uninstall -y torch && {install(None)} (a CUDA 13 build of torch; "
                f"{install('12')} for a driver older than 580)",
            )
        )
    wanted_name = f"cupy-cuda{torch_major or DEFAULT_CUDA}x"
    names = [name for name, _ in p.cupy_packages]
    if not names:
        found.append(
            (
                "CuPy is not installed (spaCy needs it for `--gpu-id`)",
                install(torch_major)
                + (f" (CuPy for torch's CUDA {torch_major})" if torch_major else ""),
            )
        )
    elif len(names) > 1:
        others = " ".join(n for n in names if n != wanted_name) or " ".join(names[1:])
        found.append(
            (
                f"several CuPy packages are installed ({', '.join(names)}); "
                "they overwrite each other",
                f"pip uninstall -y {others}"
                + ("" if wanted_name in names else f" && {install(torch_major)}"),
            )
        )
    else:
        name = names[0]
        major = cuda_major_of_package(name)
        if torch_major and major and major != torch_major:
            found.append(
                (
                    f"CuPy ({name}) is built for CUDA {major} but torch for CUDA {p.torch_cuda}",
                    f"pip uninstall -y {name} && {install(torch_major)}",
                )
            )
        elif p.cupy_error:
            found.append(
                (
                    f"CuPy ({name}) is installed but cannot be imported ({p.cupy_error})",
                    f"{install(major or torch_major)} (CuPy's CUDA libraries); if it still "
                    f"fails, pip install --force-reinstall --no-deps {name}",
                )
            )
        elif p.thinc_error:
            found.append(
                (
                    f"CuPy ({name}) imports, but not its cuBLAS module that spaCy needs "
                    f"({p.thinc_error})",
                    f"{install(major or torch_major)} (CuPy's CUDA libraries)",
                )
            )
    if found:
        return found  # the device question needs a working torch and CuPy
    seen = min(p.torch_devices, p.cupy_devices)
    if seen == 0:
        why = [
            f"torch: {p.torch_note}" if p.torch_note else "",
            f"CuPy: {p.cupy_device_error}" if p.cupy_device_error else "",
        ]
        why = "; ".join(w for w in why if w)
        driver = f"driver {p.driver}" if p.driver else "no nvidia-smi, so probably no NVIDIA driver"
        found.append(
            (
                f"no CUDA device is visible ({driver}{'; ' + why if why else ''})",
                "check the NVIDIA driver (`nvidia-smi`; CUDA 13 needs driver 580 or newer) and "
                "CUDA_VISIBLE_DEVICES",
            )
        )
    elif p.gpu_id >= seen:
        found.append(
            (
                f"there is no GPU {p.gpu_id}: {seen} device(s) visible, ids 0-{seen - 1}",
                f"--vars.gpu_id={seen - 1}",
            )
        )
    return found


def config_uses_mixed_precision(config: Path, mixed_precision: bool) -> bool:
    """Whether a training config, run with `--system.mixed_precision <mixed_precision>` as
    project.yml runs it, puts a transformer in fp16 mixed precision."""
    from spacy.util import load_config

    cfg = load_config(config, interpolate=False)
    if "mixed_precision" in cfg.get("system", {}):
        cfg["system"]["mixed_precision"] = mixed_precision
    cfg = cfg.interpolate()
    return any(
        cfg["components"].get(name, {}).get("model", {}).get("mixed_precision")
        for name in cfg["nlp"]["pipeline"]
    )


def precision_problem(
    gpu_id: int, mixed_precision: bool, config: Optional[Path]
) -> Optional[Tuple[str, str]]:
    """mixed_precision=true on the CPU, with a config that would use it (not the cnn one)."""
    if gpu_id >= 0 or not mixed_precision:
        return None
    if config is not None and not config_uses_mixed_precision(config, mixed_precision):
        return None
    return (
        "mixed_precision=true needs a GPU, but gpu_id is -1",
        "add `--vars.mixed_precision=false` to train on the CPU",
    )


def describe(p: Probe) -> List[Tuple[str, str]]:
    """The rows of the --report table."""
    cupy = ", ".join(f"{n} {v}" for n, v in p.cupy_packages) or "not installed"
    torch_devices = (
        f"{p.torch_devices}" + (f" ({p.torch_note})" if p.torch_note else "")
        if p.torch_cuda
        else "-"
    )
    return [
        ("torch", p.torch_version or "not installed"),
        ("torch built for CUDA", p.torch_cuda or "none (CPU-only build)"),
        ("devices torch sees", torch_devices),
        ("CuPy package", cupy),
        ("CuPy's CUDA runtime", p.cupy_cuda or (p.cupy_error or "-")),
        (
            "devices CuPy sees",
            str(p.cupy_devices) + (f" ({p.cupy_device_error})" if p.cupy_device_error else ""),
        ),
        (f"GPU {p.gpu_id}", p.device_name or "-"),
        ("NVIDIA driver", p.driver or "- (no nvidia-smi)"),
    ]


def fail(title: str, found: List[Tuple[str, str]], way_out: str = CPU_WAY_OUT) -> None:
    """One message: what is wrong, a fix for each part, and the other way out; exit 1."""
    msg.fail(title)
    print("Fix it:")
    for what, fix in found:
        print(f"  - {what}: {fix}")
    print(way_out)
    raise SystemExit(1)


def require(gpu_id: int, p: Optional[Probe] = None) -> Optional[Probe]:
    """For scripts that take --gpu-id: with gpu_id >= 0, stop with the one message unless the
    GPU can be used. Call it before loading any data."""
    if gpu_id < 0:
        return None
    p = p or probe(gpu_id)
    found = problems(p)
    if found:
        fail(f"GPU {gpu_id} cannot be used: " + "; ".join(what for what, _ in found) + ".", found)
    return p


def main(
    gpu_id: int = typer.Option(..., help="The GPU to check (project var gpu_id); -1: the CPU"),
    mixed_precision: str = typer.Option("false", help="The var mixed_precision: true or false"),
    config: Optional[Path] = typer.Option(
        None,
        help="Training config (mixed precision only matters with a transformer)",
        exists=True,
        dir_okay=False,
    ),
    report: bool = typer.Option(
        False, "--report", help="Print everything found, not just the verdict"
    ),
):
    """Check that the GPU can be used (torch with CUDA, CuPy for the same CUDA, the device), and
    that fp16 mixed precision is not asked of the CPU; exit 1 with what is missing and how to
    fix it."""
    precision = precision_problem(gpu_id, parse_bool(mixed_precision, "mixed_precision"), config)
    if precision:
        fail(f"Cannot train: {precision[0]}.", [precision], GPU_WAY_OUT)
    if gpu_id < 0 and not report:
        return
    p = None
    if report:
        p = probe(max(gpu_id, 0))
        msg.table(describe(p), header=("", "found"), divider=True)
        if gpu_id < 0:
            msg.info("gpu_id is -1: the steps run on the CPU.")
            return
    p = require(gpu_id, p)
    cupy_name, cupy_version = p.cupy_packages[0]
    torch_cupy = f"torch {p.torch_version} (CUDA {p.torch_cuda}), {cupy_name} {cupy_version}"
    msg.good(f"GPU {gpu_id}: {p.device_name} ({torch_cupy})")


if __name__ == "__main__":
    typer.run(main)
