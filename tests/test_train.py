import pytest
import torch

from presrm.config import InitConfig, TrainConfig
from presrm.generate import render_chat
from presrm.models import load_with_adapter, train_autocast
from presrm.train import (
    lora_weights_norm,
    pairs_dataset,
    sft_dataset,
    strip_step_eos,
    train_sft,
    train_step_dpo,
)


@pytest.mark.parametrize(
    ("chosen_final", "rejected_final", "expected"),
    [(False, False, ([5], [6])), (True, False, ([5, 2], [6])), (True, True, ([5, 2], [6, 2]))],
)
def test_strip_step_eos(chosen_final, rejected_final, expected):
    ex = {"chosen_ids": [5, 2], "rejected_ids": [6, 2], "chosen_final": chosen_final,
          "rejected_final": rejected_final}
    out = strip_step_eos(ex, eos_id=2)
    assert (out["chosen_ids"], out["rejected_ids"]) == expected


def test_pairs_dataset_flags_final_steps():
    ds = pairs_dataset([{"prompt": "p", "chosen": "Step 2: The answer is 7.\n", "rejected": "Step 2: 3 + 4\n"}])
    assert ds[0]["chosen_final"] and not ds[0]["rejected_final"]


def test_train_moves_adapter_and_saves(tiny_model_dir, tmp_path):
    from presrm.models import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True)
    prompt = render_chat(tok, "Tom has 3 apples and buys 4. How many?")
    pairs = [{"prompt": prompt, "chosen": "Step 1: 3 + 4 = 7\n", "rejected": "Step 1: 3 + 4 = 9\n"},
             {"prompt": prompt + "Step 1: 3 + 4 = 7\n", "chosen": "Step 2: The answer is 7.\n",
              "rejected": "Step 2: The answer is 9.\n"}]
    cfg = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, lora_r=4, lora_alpha=8)
    metrics, trained = train_step_dpo(model, tok, pairs, cfg, tmp_path / "adapter", device="cpu")
    assert metrics["optimizer_steps"] == 3 and metrics["master_weights_dtype"] == "float32"
    assert metrics["precision"] == ("bf16 autocast" if train_autocast(torch.device("cpu")) else "fp32")
    assert metrics["lora_b_norm"] > 0 and lora_weights_norm(trained) == pytest.approx(metrics["lora_b_norm"])
    assert metrics["last_loss"] < metrics["first_loss"]  # lr 1e-2 on two pairs: the loss must fall
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    base, _ = load_model(str(tiny_model_dir), device="cpu", precision="fp32")
    w0 = base.model.layers[0].self_attn.q_proj.weight.clone()
    merged = load_with_adapter(base, tmp_path / "adapter")
    assert not merged.model.layers[0].self_attn.q_proj.weight.equal(w0)


def test_no_pairs_is_an_error(tiny):
    with pytest.raises(ValueError, match="no preference pairs"):
        train_step_dpo(tiny[0], tiny[1], [], TrainConfig(), "/nonexistent/adapter")


def _pairs(tok):
    prompt = render_chat(tok, "Tom has 3 apples and buys 4. How many?")
    return [{"prompt": prompt, "chosen": "Step 1: 3 + 4 = 7\n", "rejected": "Step 1: 3 + 4 = 9\n"},
            {"prompt": prompt + "Step 1: 3 + 4 = 7\n", "chosen": "Step 2: The answer is 7.\n",
             "rejected": "Step 2: The answer is 9.\n"}]


def test_full_finetune_moves_every_weight_without_adapter(tiny_model_dir, tmp_path):
    from presrm.models import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True)
    w0 = model.model.layers[0].mlp.up_proj.weight.detach().clone()  # LoRA would leave the MLP alone
    cfg = TrainConfig(lora=False, max_steps=2, batch_size=2, learning_rate=1e-3)
    metrics, trained = train_step_dpo(model, tok, _pairs(tok), cfg, tmp_path / "adapter", device="cpu")
    assert metrics["lora"] is False and metrics["lora_b_norm"] is None and metrics["optimizer_steps"] == 2
    assert not hasattr(trained, "merge_and_unload") and not (tmp_path / "adapter").exists()
    assert not trained.model.layers[0].mlp.up_proj.weight.equal(w0)


def test_sft_weight_adds_the_chosen_steps_nll(tiny_model_dir, tmp_path):
    """train.sft_weight > 0: TRL's 'sft' loss on the chosen step joins DPO's. At the first step DPO's loss is
    log 2 (policy = reference); with the SFT term the logged loss adds the chosen step's mean NLL, which for the
    random tiny model (a vocabulary of about 400 tokens) is near log 400 = 6."""
    from presrm.models import load_model

    first = {}
    for weight in (0.0, 1.0):
        model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
        cfg = TrainConfig(max_steps=1, batch_size=2, learning_rate=1e-3, lora_r=2, lora_alpha=4, sft_weight=weight,
                          precision="fp32")
        metrics, _ = train_step_dpo(model, tok, _pairs(tok), cfg, tmp_path / f"a{weight}", device="cpu")
        first[weight] = metrics["first_loss"]
    assert first[0.0] == pytest.approx(0.6931, abs=1e-3)
    assert first[1.0] - first[0.0] > 3.0


def test_sft_learns_completion_only(tiny_model_dir, tmp_path):
    import torch

    from presrm.models import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True)
    prompt = render_chat(tok, "Tom has 3 apples and buys 4. How many?") + "Step 1:"
    examples = [{"prompt": prompt, "completion": " 3 + 4 = 7\nStep 2: The answer is 7.", "kind": "ift"},
                {"prompt": render_chat(tok, "Is it right?") + "[[", "completion": "A]]", "kind": "eft"}]
    assert sft_dataset(examples).column_names == ["prompt", "completion"]
    init = InitConfig(max_steps=4, batch_size=2, learning_rate=1e-2)

    def nll(m):
        ids = tok(prompt + examples[0]["completion"], return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            return float(m(input_ids=ids, labels=ids).loss)

    before = nll(model)
    metrics, trained = train_sft(model, tok, examples, init, TrainConfig(lora_r=4, lora_alpha=8),
                                 tmp_path / "adapter", device="cpu")
    assert metrics["optimizer_steps"] == 4 and metrics["examples"] == 2 and metrics["lora_b_norm"] > 0
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged = trained.merge_and_unload()
    assert nll(merged) < before  # lr 1e-2 on two examples: the completion gets likelier
    with pytest.raises(ValueError, match="no SFT examples"):
        train_sft(model, tok, [], init, TrainConfig(), tmp_path / "x", device="cpu")


def test_training_logs_compact_lines_not_raw_dicts(tiny_model_dir, tmp_path, capfd, caplog):
    """No metric dict and no escape code on stderr (a log here); one compact line per interval, and the last."""
    import logging

    from presrm.models import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True)
    cfg = TrainConfig(max_steps=2, batch_size=2, learning_rate=1e-3, lora_r=2, lora_alpha=4)
    with caplog.at_level(logging.INFO, logger="presrm.train"):
        metrics, _ = train_step_dpo(model, tok, _pairs(tok), cfg, tmp_path / "adapter", device="cpu")
    err = capfd.readouterr().err
    assert "{'loss'" not in err and "\x1b" not in err, err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train step")]
    assert lines and lines[-1].startswith("train step 2/2: loss ") and "rewards/margins" in lines[-1], lines
    assert metrics["optimizer_steps"] == 2 and len(metrics["log_history"]) >= 2  # the full history is kept


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_padding_free_sft_has_the_padded_loss_and_gradients(tiny_model_dir, tmp_path, lora):
    """init.padding_free: a batch of SFT examples of unequal lengths as one row, no padding, gives the padded
    batch's loss and gradients within 1e-5 in fp32 (attention stays within each example: one that leaked
    into the previous example would change both)."""
    import copy

    from presrm.models import load_model
    from presrm.train import sft_trainer

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
    examples = [{"prompt": render_chat(tok, q), "completion": c} for q, c in [
        ("Tom has 3 apples and buys 4. How many?", "Step 1: 3 + 4 = 7\nThe answer is 7."),
        ("A shop sells 12 pens a day for 5 days. How many pens?",
         "Step 1: 12 * 5 = 60 pens over the five days\nThe answer is 60."),
        ("What is 9 - 2?", "The answer is 7.")]]
    out = {}
    for padding_free in (False, True):
        init = InitConfig(batch_size=3, padding_free=padding_free)
        cfg = TrainConfig(lora=lora, precision="fp32", lora_r=4, lora_alpha=8)
        trainer = sft_trainer(copy.deepcopy(model), tok, examples, init, cfg, tmp_path / str(padding_free),
                              device="cpu")
        assert trainer.padding_free is padding_free
        with torch.no_grad():  # move the weights off a fresh adapter's zero B, the same way in both
            g = torch.Generator().manual_seed(0)
            for _, p in sorted(trainer.model.named_parameters()):
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
        assert ("attention_mask" in batch) is not padding_free
        if padding_free:
            assert batch["input_ids"].shape[0] == 1 and batch["position_ids"][0].tolist().count(0) == 3
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        out[padding_free] = (loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                             if p.requires_grad})
    (loss_a, grads_a), (loss_b, grads_b) = out[False], out[True]
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)
    assert sorted(grads_a) == sorted(grads_b)
    for name, g in grads_a.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(grads_b[name], g, atol=1e-5, rtol=1e-5)
