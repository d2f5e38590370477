"""Device and precision choice in `presrm.models`."""

import pytest
import torch

from presrm.models import pick_dtype


@pytest.mark.parametrize(("device", "precision", "expected"), [
    ("cpu", "auto", torch.float32),  # bf16 is emulated (7x slower) on CPUs without native support
    ("cpu", "bf16", torch.bfloat16),
    ("cpu", "fp32", torch.float32),
])
def test_pick_dtype(device, precision, expected):
    assert pick_dtype(torch.device(device), precision) == expected


def test_pick_dtype_auto_is_bf16_on_a_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.float32
