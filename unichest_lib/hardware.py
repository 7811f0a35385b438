"""Where bfloat16 autocast pays, and the one autocast context the library uses.

``cfg.amp = True`` asks for bfloat16 autocast *where the hardware computes bfloat16
natively*: CUDA GPUs, and CPUs with AMX or AVX512-BF16. On other CPUs PyTorch emulates
bfloat16, and on the project's AVX2-only machine a ResNet-18 step measured tens of times
slower than float32, so autocast is then left off (the scores differ only by rounding).
Benchmarks that compare fp32 with bf16 call ``torch.autocast`` directly. The precision a run
really trains in (:func:`effective_precision`) is part of its store key.
"""

from __future__ import annotations

import datetime
import functools
import os
import pathlib
import platform
import subprocess

import torch


#: Set to 1 to train in float32 on a CPU with native bf16 (as an AVX2-only CPU does), e.g. to
#: time or reproduce a float32 record on a bf16 machine.
FLOAT32_ENV = "UNICHEST_FLOAT32"


def _float32_forced() -> bool:
    value = os.environ.get(FLOAT32_ENV, "").strip().lower()
    if value not in ("", "0", "1", "false", "true"):
        raise ValueError(f"{FLOAT32_ENV}={value!r}: use 1 (float32 everywhere on the CPU) or 0")
    return value in ("1", "true")


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AMX tiles or AVX512-BF16 (PyTorch's own probes), unless
    ``UNICHEST_FLOAT32=1`` asks for float32."""
    return False if _float32_forced() else _cpu_probes_bf16()


@functools.lru_cache(maxsize=None)
def _cpu_probes_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without the probes: assume emulated
        return False


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute bfloat16 natively?"""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def amp_enabled(amp: bool, device: torch.device) -> bool:
    """The effective autocast switch: requested *and* native on this device."""
    return bool(amp) and native_bf16(device)


def autocast(amp: bool, device: torch.device):
    """``torch.autocast`` in bfloat16 when :func:`amp_enabled`, else a disabled context."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_enabled(amp, device))


def effective_precision(amp: bool, device: str = "auto") -> str:
    """``"bfloat16"`` when autocast will run on ``device`` (``"auto"``: CUDA when available,
    else the CPU), else ``"float32"``: the precision a run of ``cfg.amp`` really trains in on
    this machine, which the store keys record so that a run is never served for another."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "bfloat16" if amp_enabled(amp, torch.device(device)) else "float32"


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else what :mod:`platform` knows)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The CPU flags that decide a run's speed and precision here (float32 AVX2, native bf16).
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """Which of the flags that matter to this project the CPU has (Linux; else [])."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in _FLAGS if f in have]


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The library's commit (``git rev-parse HEAD``), with ``+dirty`` when tracked files under
    ``unichest_lib/`` differ from it; ``"unknown"`` outside a git checkout."""
    root = pathlib.Path(root or pathlib.Path(__file__).resolve().parents[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "unichest_lib")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(amp: bool, device: str = "auto") -> dict:
    """Where a measurement comes from: commit, CPU (name, flags, cores), accelerator, the
    precision the run really trains in, torch and Python versions, and the date (UTC)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return dict(commit=git_commit(), cpu=cpu_name(), cpu_flags=cpu_flags(),
                cores=os.cpu_count(), gpu=gpu, precision=effective_precision(amp, device),
                torch=torch.__version__, python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
