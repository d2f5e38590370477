"""Step-level DPO with TRL's ``DPOTrainer`` (a peft LoRA adapter, or full fine-tuning), and SFT for IFT/EFT.

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

from presrm.config import InitConfig, TrainConfig
from presrm.models import hardware, pick_device, train_autocast

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


def _lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")


def _common_args(cfg: TrainConfig, device: str, seed: int, work: Path) -> dict[str, Any]:
    """Trainer arguments shared by DPO and SFT: bf16 autocast over fp32 weights where bf16 is native.

    The model comes in with fp32 master weights (``load_model(training=True)``); ``bf16=True`` makes the
    trainer run forward and backward under bf16 autocast while the optimizer updates the fp32 copy.
    """
    dev = pick_device(device)
    bf16 = train_autocast(dev, cfg.precision)
    return dict(output_dir=str(work), gradient_accumulation_steps=cfg.grad_accum, bf16=bf16, fp16=False,
                gradient_checkpointing=cfg.gradient_checkpointing, logging_steps=1, save_strategy="no",
                report_to=[], seed=seed, use_cpu=dev.type == "cpu", lr_scheduler_type="constant",
                warmup_steps=0, dataloader_num_workers=0)


def _trained_metrics(trainer, result, seconds: float, lora: bool) -> dict[str, Any]:
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    return {
        "optimizer_steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": last.get("loss"),
        "lora": lora,
        "lora_b_norm": lora_weights_norm(trainer.model) if lora else None,
        "seconds": seconds,
        "precision": "bf16 autocast" if trainer.args.bf16 else "fp32",
        "master_weights_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "hardware": hardware(trainer.args.device, "bfloat16" if trainer.args.bf16 else "float32"),
        "log_history": trainer.state.log_history,
    }


def _train_and_save(trainer, cfg: TrainConfig, adapter_dir: str | Path) -> dict[str, Any]:
    """Run ``trainer``, save its adapter (with LoRA) to ``adapter_dir``, and return the common metrics."""
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    if cfg.lora:
        trainer.model.save_pretrained(str(adapter_dir))
    return _trained_metrics(trainer, result, seconds, cfg.lora)


def train_step_dpo(model, tok, pairs: Sequence[dict[str, Any]], cfg: TrainConfig, adapter_dir: str | Path, *,
                   seed: int = 0, device: str = "auto") -> tuple[dict[str, Any], Any]:
    """Train on ``pairs`` with step-level DPO; save the adapter (or full model) to ``adapter_dir``.

    ``model`` is a plain (non-peft) causal LM loaded for training: the previous
    iteration's model, which is also the reference. With LoRA the reference is
    the same weights with the adapter disabled; without, TRL's precompute keeps
    no copy. Either way its log-probs are computed once, before training.
    Returns the metrics and the trained model (a peft model with LoRA:
    ``merge_and_unload()`` gives the next iteration's model).
    """
    from trl import DPOConfig

    if not pairs:
        raise ValueError("no preference pairs to train on")
    args = DPOConfig(
        **_common_args(cfg, device, seed, Path(adapter_dir).parent / ".trainer"),
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length,
        precompute_ref_log_probs=True, remove_unused_columns=False,
    )
    trainer = _trainer_cls()(model=model, args=args, train_dataset=pairs_dataset(pairs), processing_class=tok,
                             peft_config=_lora_config(cfg) if cfg.lora else None)
    trained = _train_and_save(trainer, cfg, adapter_dir)
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 for r in trainer.train_dataset)
    metrics = {
        "pairs": len(pairs),
        **trained,
        "last_reward_accuracy": last.get("rewards/accuracies"),
        "last_reward_margin": last.get("rewards/margins"),
        "tokens_per_epoch": tokens,
    }
    return metrics, trainer.model


def sft_dataset(examples: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` of TRL prompt-completion records (other keys dropped)."""
    import datasets

    return datasets.Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])


def train_sft(model, tok, examples: Sequence[dict[str, Any]], init: InitConfig, cfg: TrainConfig,
              adapter_dir: str | Path, *, seed: int = 0, device: str = "auto") -> tuple[dict[str, Any], Any]:
    """Supervised fine-tuning (IFT/EFT) on prompt-completion ``examples`` with TRL's ``SFTTrainer``.

    The loss covers the completion only; TRL appends EOS to each completion, so
    the model learns to stop after the final answer (IFT) or the verdict (EFT).
    LoRA settings, precision and ``lora`` come from ``cfg`` (the train section),
    the rest from ``init``. Returns the metrics and the trained model.
    """
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("no SFT examples to train on")
    common = _common_args(cfg, device, seed, Path(adapter_dir).parent / ".trainer")
    args = SFTConfig(**common, per_device_train_batch_size=init.batch_size, learning_rate=init.learning_rate,
                     num_train_epochs=init.epochs, max_steps=init.max_steps, max_length=init.max_length,
                     completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(examples), processing_class=tok,
                         peft_config=_lora_config(cfg) if cfg.lora else None)
    trained = _train_and_save(trainer, cfg, adapter_dir)
    tokens = sum(len(r["input_ids"]) for r in trainer.train_dataset)
    metrics = {"examples": len(examples), **trained,
               "tokens_per_epoch": tokens}
    return metrics, trainer.model


def load_with_adapter(model, adapter_dir: str | Path, *, merge: bool = True):
    """Apply a saved LoRA adapter to ``model``; merged into the weights by default."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = peft_model.merge_and_unload() if merge else peft_model
    merged.eval()
    return merged
