"""bf16 autocast is on only where it is requested *and* the device computes bfloat16
natively (CUDA; CPUs with AMX or AVX512-BF16); elsewhere the library runs in float32."""

from __future__ import annotations

import pytest
import torch

from unichest_lib import hardware


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU does (True) or does not (False) compute bfloat16 natively."""
    def set_native(value: bool):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: value)
    return set_native


@pytest.mark.parametrize("amp, native, on", [(True, True, True), (True, False, False),
                                             (False, True, False), (False, False, False)])
def test_autocast_runs_bf16_on_cpu_only_when_asked_and_native(cpu_bf16, amp, native, on):
    cpu_bf16(native)
    assert hardware.amp_enabled(amp, torch.device("cpu")) is on
    x = torch.randn(4, 8)
    with hardware.autocast(amp, "cpu"):
        y = torch.nn.functional.linear(x, torch.randn(3, 8))
    assert y.dtype == (torch.bfloat16 if on else torch.float32)


def test_cuda_counts_as_native_and_other_devices_do_not(cpu_bf16):
    cpu_bf16(False)
    assert hardware.native_bf16(torch.device("cuda", 0))
    assert hardware.amp_enabled(True, "cuda") and not hardware.amp_enabled(False, "cuda")
    assert not hardware.native_bf16(torch.device("meta"))


def test_the_probe_is_a_cached_bool():
    assert isinstance(hardware.cpu_has_native_bf16(), bool)
    assert hardware._cpu_probes_bf16.cache_info().currsize == 1


def test_float32_can_be_forced_on_a_bf16_cpu_and_a_bad_value_says_what_to_use(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_probes_bf16", lambda: True)
    monkeypatch.delenv(hardware.FLOAT32_ENV, raising=False)
    assert hardware.effective_precision(True, "cpu") == "bfloat16"
    monkeypatch.setenv(hardware.FLOAT32_ENV, "1")
    assert hardware.effective_precision(True, "cpu") == "float32"
    assert not hardware.amp_enabled(True, torch.device("cpu"))
    monkeypatch.setenv(hardware.FLOAT32_ENV, "yes please")
    with pytest.raises(ValueError, match="use 1"):
        hardware.cpu_has_native_bf16()


def test_provenance_names_the_commit_the_cpu_and_the_precision_a_run_trains_in():
    from unichest_lib import hardware

    p = hardware.provenance(amp=True)
    assert p["precision"] == hardware.effective_precision(True)
    assert hardware.provenance(amp=False)["precision"] == "float32"
    assert p["cpu"] and p["torch"] == torch.__version__
    assert set(p["cpu_flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert p["commit"] == "unknown" or len(p["commit"].split("+")[0]) == 40
    assert hardware.git_commit("/") == "unknown"  # not a checkout: said, not guessed
