"""Device and precision choice in `presrm.models`."""

from pathlib import Path

import pytest
import torch

from presrm import models
from presrm.errors import ModelLoadError
from presrm.models import pick_dtype, train_autocast


@pytest.mark.parametrize(("native", "precision", "expected"), [
    (False, "auto", torch.float32),  # bf16 is emulated (7x slower) on CPUs without native support
    (True, "auto", torch.bfloat16),  # AMX-BF16: bf16 matmuls 6.9x faster than fp32
    (False, "bf16", torch.bfloat16),
    (True, "fp32", torch.float32),
])
def test_pick_dtype_on_cpu(monkeypatch, native, precision, expected):
    monkeypatch.setattr(models, "cpu_native_bf16", lambda: native)
    assert pick_dtype(torch.device("cpu"), precision) == expected
    assert pick_dtype(torch.device("cpu"), precision, training=True) == torch.float32  # fp32 master weights
    assert train_autocast(torch.device("cpu"), precision) == (expected == torch.bfloat16)


def test_unknown_precision_is_an_error():
    with pytest.raises(ModelLoadError, match="precision"):
        pick_dtype(torch.device("cpu"), "fp16")


def test_cpu_probe_matches_the_cpu_flags():
    """The AMX probe agrees with what the kernel reports for this CPU."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo here")
    assert models.cpu_native_bf16() == (" amx_bf16" in flags)
    hw = models.hardware("cpu", torch.float32)
    assert hw["cpu"] and hw["dtype"] == "float32" and hw["cpu_native_bf16"] == models.cpu_native_bf16()


def test_pick_dtype_auto_is_bf16_on_a_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.float32
    assert pick_dtype(torch.device("cuda"), "auto", training=True) == torch.float32
