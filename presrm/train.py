"""Step-level DPO with TRL's ``DPOTrainer`` and a peft LoRA adapter.

This is the only module that imports TRL. A pair's prompt is the question and
the previous steps (the exact text the policy saw during search), and chosen /
rejected are one next step each. TRL appends EOS to every completion of a
plain-text pair, which for a *step* would teach the model to stop after one
step; ``StepDPOTrainer`` removes that EOS unless the step is the final answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from presrm.config import TrainConfig
from presrm.models import pick_device

log = logging.getLogger(__name__)


def strip_step_eos(example: dict[str, Any], eos_id: int) -> dict[str, list[int]]:
    """Drop the EOS TRL appended to a completion unless that step ends the solution.

    >>> strip_step_eos({"chosen_ids": [5, 2], "rejected_ids": [6, 2], "chosen_final": False,
    ...                 "rejected_final": True}, eos_id=2)
    {'chosen_ids': [5], 'rejected_ids': [6, 2]}
    """
    out = {}
    for key in ("chosen", "rejected"):
        ids = example[f"{key}_ids"]
        if not example[f"{key}_final"] and ids and ids[-1] == eos_id:
            ids = ids[:-1]
        out[f"{key}_ids"] = ids
    return out


def _trainer_cls():
    from trl import DPOTrainer

    class StepDPOTrainer(DPOTrainer):
        """DPOTrainer whose completions end with EOS only when they end the solution."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return dataset.map(strip_step_eos, fn_kwargs={"eos_id": self._tokenizer.eos_token_id},
                               desc=f"Keeping EOS on final steps only ({dataset_name})")

    return StepDPOTrainer


def lora_weights_norm(model) -> float:
    """L2 norm of the LoRA B matrices: zero at init, non-zero once training moved the adapter."""
    total = 0.0
    for name, p in model.named_parameters():
        if "lora_B" in name:
            total += float(p.detach().float().pow(2).sum())
    return total ** 0.5


def pairs_dataset(pairs: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` in TRL's preference shape plus flags for final-answer steps."""
    import datasets

    from presrm.steps import is_final_answer

    return datasets.Dataset.from_list([
        {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
         "chosen_final": is_final_answer(p["chosen"]), "rejected_final": is_final_answer(p["rejected"])}
        for p in pairs
    ])


def train_step_dpo(model, tok, pairs: Sequence[dict[str, Any]], cfg: TrainConfig, adapter_dir: str | Path, *,
                   seed: int = 0, device: str = "auto") -> tuple[dict[str, Any], Any]:
    """Train a LoRA adapter on ``pairs`` with step-level DPO; save it to ``adapter_dir``.

    ``model`` is a plain (non-peft) causal LM loaded for training. The reference
    model is the same weights with the adapter disabled, and its log-probs are
    computed once before training. Returns the training metrics and the trained
    peft model (``merge_and_unload()`` gives the next iteration's model).
    """
    from peft import LoraConfig
    from trl import DPOConfig

    if not pairs:
        raise ValueError("no preference pairs to train on")
    dev = pick_device(device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    work = Path(adapter_dir).parent / ".trainer"
    args = DPOConfig(
        output_dir=str(work), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, beta=cfg.beta, loss_type=[cfg.loss_type],
        max_length=cfg.max_length, bf16=bf16, fp16=False, gradient_checkpointing=cfg.gradient_checkpointing,
        precompute_ref_log_probs=True, logging_steps=1, save_strategy="no", report_to=[], seed=seed,
        use_cpu=dev.type == "cpu", remove_unused_columns=False, lr_scheduler_type="constant",
        warmup_steps=0, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    trainer = _trainer_cls()(model=model, args=args, train_dataset=pairs_dataset(pairs), processing_class=tok,
                             peft_config=lora)
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    trainer.model.save_pretrained(str(adapter_dir))
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 for r in trainer.train_dataset)
    metrics = {
        "pairs": len(pairs),
        "optimizer_steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": last.get("loss"),
        "last_reward_accuracy": last.get("rewards/accuracies"),
        "last_reward_margin": last.get("rewards/margins"),
        "lora_b_norm": lora_weights_norm(trainer.model),
        "seconds": seconds,
        "tokens_per_epoch": tokens,
        "precision": "bf16" if bf16 else "fp32",
        "log_history": trainer.state.log_history,
    }
    return metrics, trainer.model


def load_with_adapter(model, adapter_dir: str | Path, *, merge: bool = True):
    """Apply a saved LoRA adapter to ``model``; merged into the weights by default."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = peft_model.merge_and_unload() if merge else peft_model
    merged.eval()
    return merged
