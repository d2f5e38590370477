"""Device and precision choice in `presrm.models`."""


import pytest
import torch

from presrm import models
from presrm.errors import ModelLoadError
from presrm.models import pick_dtype, train_autocast


@pytest.mark.parametrize(("native", "precision", "expected"), [
    (False, "auto", torch.float32),  # bf16 measured slower (emulated on AVX2-only CPUs: 7x)
    (True, "auto", torch.bfloat16),  # bf16 measured faster (AMX-BF16: 6.9x; avx512_bf16 EPYC: 2.1x)
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


def test_the_bf16_probe_measures_once_per_cpu_kind(monkeypatch, tmp_path):
    """auto picks bf16 where this CPU's bf16 matmuls were measured at least 1.25x fp32's; the figures are cached per
    CPU model, torch version and thread count, and recorded in the hardware block of every result."""
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    probe = models.bf16_probe(n=256, reps=1)
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0
    assert probe["ratio"] == round(probe["bf16_gflops"] / probe["fp32_gflops"], 2)
    assert probe["bf16_faster"] == (probe["ratio"] >= models.BF16_FASTER) == models.cpu_native_bf16()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(models, "_timed", no_measuring)
    assert models.bf16_probe(n=256, reps=1) == probe  # cached: read, not measured
    monkeypatch.setattr(models, "cpu_model", lambda: "another CPU")
    with pytest.raises(AssertionError, match="measured again"):
        models.bf16_probe(n=256, reps=1)
    monkeypatch.undo()
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN held to fewer instructions: a kind of its own
    monkeypatch.setattr(models, "_timed", no_measuring)
    with pytest.raises(AssertionError, match="measured again"):
        models.bf16_probe(n=256, reps=1)
    monkeypatch.undo()
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    hw = models.hardware("cpu", torch.float32)
    assert hw["cpu"] and hw["dtype"] == "float32" and hw["bf16_probe"]["ratio"] > 0


@pytest.mark.parametrize(("fp32", "bf16", "faster"), [
    (93.0, 199.0, True),  # an EPYC with avx512_bf16 (family 25), the figures
    (93.0, 13.0, False),  # an AVX2-only EPYC: bf16 emulated, 7x slower
    (414.0, 2836.0, True),  # a Xeon with AMX-BF16
    (100.0, 110.0, False),  # a little faster is not worth bf16's rounding
])
def test_auto_follows_the_measured_rates(monkeypatch, tmp_path, fp32, bf16, faster):
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    seconds = {torch.float32: 2 * 256 ** 3 / fp32 / 1e9, torch.bfloat16: 2 * 256 ** 3 / bf16 / 1e9}
    monkeypatch.setattr(models, "_timed", lambda fn, a, b, clock: seconds[a.dtype])
    assert models.bf16_probe(n=256, reps=1)["bf16_faster"] is faster
    expected = torch.bfloat16 if faster else torch.float32
    assert pick_dtype(torch.device("cpu"), "auto") == expected
    assert pick_dtype(torch.device("cpu"), "fp32") == torch.float32  # fp32 stays one setting away


def test_pick_dtype_auto_is_bf16_on_a_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(torch.device("cuda"), "auto") == torch.float32
    assert pick_dtype(torch.device("cuda"), "auto", training=True) == torch.float32
