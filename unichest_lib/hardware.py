"""Where bfloat16 autocast pays, and the one autocast context the library uses.

``cfg.amp = True`` asks for bfloat16 autocast *where the hardware computes bfloat16
natively*: CUDA GPUs, and CPUs with AMX or AVX512-BF16. On other CPUs PyTorch emulates
bfloat16, and on the project's AVX2-only machine a ResNet-18 step measured tens of times
slower than float32, so autocast is then left off (the scores differ only by rounding).
Benchmarks that compare fp32 with bf16 call ``torch.autocast`` directly. The precision a run
really trains in (:func:`effective_precision`) is part of its store key.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has AMX tiles or AVX512-BF16 (PyTorch's own probes)."""
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
