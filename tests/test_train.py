import pytest

from presrm.config import TrainConfig
from presrm.generate import render_chat
from presrm.train import load_with_adapter, lora_weights_norm, pairs_dataset, strip_step_eos, train_step_dpo


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
    assert metrics["optimizer_steps"] == 3 and metrics["precision"] == "fp32"
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
