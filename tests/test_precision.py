"""Mixed precision: the paper recipe's settings train at lr 5e-7; pure bf16 weights do not; merges are fp32.

The weights of the model here are all at |w| in [1/64, 3/64]. Half a bf16 ulp there is at least
2^-6 * 2^-8 = 6.1e-5, and Adam's first step moves a weight by at most the learning rate (5e-7), so a bf16
weight cannot move at all, while an fp32 master weight moves by up to 5e-7 (fp32's ulp there is < 4e-9).
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from presrm.config import TrainConfig, load_config
from presrm.generate import render_chat
from presrm.models import load_model, load_with_adapter
from presrm.train import _fix_precision, rebuild, train_step_dpo

PAPER = Path(__file__).resolve().parents[1] / "configs" / "presrm_paper.yaml"
FLOOR = 2.0 ** -6


@pytest.fixture(scope="module")
def scaled_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with every weight at |w| in [FLOOR, 3 * FLOOR], random signs, saved in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("scaled")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            sign = torch.randint(0, 2, p.shape, generator=g) * 2 - 1
            p.copy_(sign * FLOOR * (1 + 2 * torch.rand(p.shape, generator=g)))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _pairs(tok):
    prompt = render_chat(tok, "Tom has 3 apples and buys 4. How many?")
    return [{"prompt": prompt, "chosen": "Step 1: 3 + 4 = 7\n", "rejected": "Step 1: 3 + 4 = 9\n"},
            {"prompt": prompt + "Step 1: 3 + 4 = 7\n", "chosen": "Step 2: The answer is 7.\n",
             "rejected": "Step 2: The answer is 9.\n"}]


def _paper_cfg(model_dir):
    cfg = load_config(PAPER, [f"model={model_dir}", "device=cpu", "train.max_steps=1", "train.batch_size=2",
                              "train.grad_accum=1", "train.max_length=64"])
    assert (cfg.train.lora, cfg.train.learning_rate, cfg.train.precision) == (False, 5e-7, "bf16")
    return cfg


def _one_step(model, tok, cfg, tmp_path) -> tuple[dict, dict[str, float]]:
    """One optimizer step; the largest absolute change of each weight tensor."""
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    metrics, trained = train_step_dpo(model, tok, _pairs(tok), cfg.train, tmp_path / "adapter", device="cpu")
    assert metrics["optimizer_steps"] == 1
    after = dict(trained.named_parameters())
    return metrics, {n: float((after[n].detach().float() - w).abs().max()) for n, w in before.items()}


def test_paper_precision_moves_every_weight_at_lr_5e_7(scaled_model_dir, tmp_path):
    cfg = _paper_cfg(scaled_model_dir)
    model, tok = load_model(cfg.model, device="cpu", training=True, precision=cfg.train.precision)
    metrics, change = _one_step(model, tok, cfg, tmp_path)
    assert metrics["precision"] == "bf16 autocast" and metrics["master_weights_dtype"] == "float32"
    lr = cfg.train.learning_rate
    assert all(0 < c <= 1.01 * lr for c in change.values()), change  # every tensor moved, by Adam's step at most
    assert sorted(change.values())[len(change) // 2] > 0.5 * lr  # and the typical one by a whole step


def test_pure_bf16_weights_do_not_move_at_lr_5e_7(scaled_model_dir, tmp_path):
    cfg = _paper_cfg(scaled_model_dir)
    model, tok = load_model(cfg.model, device="cpu", precision="bf16")  # weights in bf16: no fp32 master copy
    metrics, change = _one_step(model, tok, cfg, tmp_path)
    assert metrics["master_weights_dtype"] == "bfloat16"
    assert max(change.values()) == 0.0  # every update rounded away


def test_lora_merge_is_computed_from_fp32_weights(tiny_model_dir, tmp_path):
    """q_proj sits just below a bf16 rounding midpoint; a LoRA delta of 3e-6 lifts it over in fp32 only."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    grid = 168 * 2.0 ** -13  # a bf16 value; its ulp is 2^-13
    base_dir = tmp_path / "base"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    q = model.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        q.fill_(grid + 2.0 ** -14 - 1e-6)
    model.save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=["q_proj"], init_lora_weights=False))
    layer = peft.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.fill_(1.0)
        layer.lora_B["default"].weight.fill_(3e-6)
    peft.save_pretrained(tmp_path / "adapter")

    bf16, _ = load_model(str(base_dir), device="cpu", precision="bf16")
    assert bf16.model.layers[0].self_attn.q_proj.weight.unique().tolist() == [grid]
    merged = load_with_adapter(bf16, tmp_path / "adapter")
    w = merged.model.layers[0].self_attn.q_proj.weight
    assert w.dtype == torch.bfloat16 and w.unique().tolist() == [grid + 2.0 ** -13]
    # the same delta merged into the bf16 weights directly is lost
    direct = get_peft_model(load_model(str(base_dir), device="cpu", precision="bf16")[0],
                            LoraConfig(r=1, lora_alpha=1, target_modules=["q_proj"], init_lora_weights=False))
    layer = direct.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.fill_(1.0)
        layer.lora_B["default"].weight.fill_(3e-6)
    assert direct.merge_and_unload().model.layers[0].self_attn.q_proj.weight.unique().tolist() == [grid]


@pytest.mark.parametrize("lora", [True, False])
def test_rebuild_puts_gathered_weights_into_fresh_fp32_model(tiny_model_dir, lora):
    """What rank 0 does after DeepSpeed / FSDP training: base weights from disk + the trained ones by name."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from presrm.train import _lora_config

    cfg = TrainConfig(lora=lora, lora_r=2, lora_alpha=4)
    trained = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if lora:
        trained = get_peft_model(trained, _lora_config(cfg))
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01)
    params = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    model = rebuild(tiny_model_dir, params, _lora_config(cfg) if lora else None)
    assert next(model.parameters()).dtype == torch.float32
    want = trained.merge_and_unload() if lora else trained
    got = model.merge_and_unload() if lora else model
    for (n, a), (_, b) in zip(want.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(RuntimeError, match="missing from the rebuilt model"):
        rebuild(tiny_model_dir, {"no.such.weight": torch.zeros(1)})


@pytest.mark.parametrize(("precision", "env", "ds", "want_mp", "want_autocast"), [
    ("fp32", "bf16", False, "no", None),   # the accelerate config's bf16 does not override train.precision
    ("bf16", "no", False, "bf16", None),
    ("bf16", "bf16", True, "no", {"enabled": True, "dtype": "bfloat16"}),  # DeepSpeed: torch autocast, fp32 module
    ("fp32", "bf16", True, "no", None),
])
def test_precision_follows_train_precision(precision, env, ds, want_mp, want_autocast):
    plugin = SimpleNamespace(deepspeed_config={"bf16": {"enabled": True}}) if ds else None
    args = SimpleNamespace(bf16=precision == "bf16" and not ds, mixed_precision=env, deepspeed_plugin=plugin)
    _fix_precision(args, TrainConfig(precision=precision), "cpu")
    assert args.mixed_precision == want_mp
    if ds:
        assert plugin.deepspeed_config["bf16"] == {"enabled": False}
        assert plugin.deepspeed_config.get("torch_autocast") == want_autocast
