"""``train.push_to_hub``: the run's final model, with a model card holding the run's tables, to the hub.

:func:`check_push` runs when the run starts, so an offline machine or a missing token fails in a second
rather than after hours of training; :func:`push` uploads when the run ends (rank 0). The card is also
kept as ``<run>/model_card.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from presrm.config import RunConfig, dump_config
from presrm.errors import ConfigError, HubError
from presrm.layout import RunLayout


def final_model_dir(cfg: RunConfig, root: Path) -> Path | None:
    """The folder of the last model the run trains (None when it trains none)."""
    return RunLayout(root).final_model(cfg.iterations, init=cfg.init.ift or cfg.init.eft)


def check_push(cfg: RunConfig) -> None:
    """Fail at once, with one line naming the key, when ``train.push_to_hub`` cannot work here."""
    if not cfg.train.push_to_hub:
        return
    from huggingface_hub import get_token

    from presrm.models import _hub_reachable

    if final_model_dir(cfg, Path(".")) is None:
        raise ConfigError("train.push_to_hub: this run trains no model (iterations=0 and no init.ift / init.eft)")
    if not _hub_reachable():
        raise HubError("train.push_to_hub: the Hugging Face hub cannot be reached (offline or HF_HUB_OFFLINE=1); "
                       "set train.push_to_hub=false and upload the final model folder later (hf upload)")
    if get_token() is None:
        raise HubError("train.push_to_hub: no Hugging Face token; run `hf auth login` or set HF_TOKEN, "
                       "or set train.push_to_hub=false")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _acc_row(label: str, ev: dict[str, Any]) -> str:
    s, f = ev["strict"], ev["flexible"]
    return (f"| {label} | {_pct(s['accuracy'])} [{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}] | "
            f"{_pct(f['accuracy'])} | {ev['n']} |")


def model_card(cfg: RunConfig, summary: dict[str, Any]) -> str:
    """A hub model card (YAML front matter + Markdown) with the run's accuracy and iteration tables and recipe.

    ``summary`` is :func:`presrm.loop.run`'s.
    """
    base = cfg.model if cfg.model.count("/") == 1 and not Path(cfg.model).exists() else None
    front = ["---", "library_name: transformers", "tags: [presrm, dpo, step-dpo, self-rewarding, math, gsm8k]"]
    front += [f"base_model: {base}"] if base else []
    lines = [*front, "---", "", f"# {cfg.train.hub_model_id or cfg.name}", "",
             f"{cfg.model} after {cfg.iterations} iteration(s) of process-based self-rewarding with presrm: the "
             "model writes `Step n:` solutions, judges its own candidate steps, and trains on the step pairs "
             f"by step-level DPO ({'LoRA, merged' if cfg.train.lora else 'full fine-tuning'}, lr "
             f"{cfg.train.learning_rate:g}). Weights are fp32, the training's master copy.", ""]
    evals = [("M0 (base)", summary.get("before"))]
    init = summary.get("init") or {}
    evals += [("M1 (after IFT/EFT)", init.get("eval"))] if init else []
    shift = 1 if init else 0
    evals += [(f"M{it['iteration'] + 1 + shift} (after iteration {it['iteration']})", it.get("eval"))
              for it in summary.get("iterations", [])]
    rows = [_acc_row(label, ev) for label, ev in evals if ev]
    if rows:
        lines += [f"## Accuracy on {cfg.eval.task}", "", "| model | strict [95% CI] | flexible | problems |",
                  "| --- | --- | --- | --- |", *rows, ""]
    its = summary.get("iterations", [])
    if its:
        lines += ["## Iterations", "",
                  "| iteration | problems searched | pairs | judge right-above-wrong | DPO steps | loss first -> last "
                  "|",
                  "| --- | --- | --- | --- | --- | --- |"]
        for it in its:
            st, tr = it["search"], it["train"]
            loss = ("n/a" if tr.get("first_loss") is None
                    else f"{tr['first_loss']:.4f} -> {tr['last_loss']:.4f}")
            jv = st.get("judge_verifier", {}).get("within_step_agreement")
            lines.append(f"| {it['iteration']} | {st.get('problems')} | {it['pairs']} | {_pct(jv)} | "
                         f"{tr.get('optimizer_steps')} | {loss} |")
        lines.append("")
    lines += ["## Recipe", "", "```yaml", dump_config(cfg).rstrip(), "```", ""]
    return "\n".join(lines)


def push(cfg: RunConfig, root: Path, summary: dict[str, Any]) -> str:
    """Upload the final model folder and its card (``<run>/model_card.md``); return the repository id."""
    from huggingface_hub import HfApi

    from presrm.jsonio import write_text_atomic

    check_push(cfg)  # again: the network or the token may have gone while the run trained
    folder = final_model_dir(cfg, root)
    card = model_card(cfg, summary)
    write_text_atomic(RunLayout(root).model_card, card)
    api = HfApi()
    repo = cfg.train.hub_model_id
    try:
        repo = repo or f"{api.whoami()['name']}/{cfg.name}"
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message=f"presrm run {cfg.name}")
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo,
                        commit_message=f"presrm run {cfg.name}: model card")
    except Exception as e:  # noqa: BLE001 - any hub failure is one line for the user
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise HubError(f"train.push_to_hub: uploading {folder} to {repo or 'the hub'} failed ({why}); the run is "
                       "complete, upload the folder later (hf upload)") from e
    return repo


def push_dataset(dd, repo: str) -> str:
    """Push an exported ``datasets.DatasetDict`` to the hub repository ``repo``; one line when it cannot."""
    from huggingface_hub import get_token

    from presrm.models import _hub_reachable

    if not _hub_reachable():
        raise HubError(f"--push-to-hub {repo}: the Hugging Face hub cannot be reached (offline or HF_HUB_OFFLINE=1); "
                       "the export is on disk, push it later (hf upload, or load_from_disk(...).push_to_hub)")
    if get_token() is None:
        raise HubError(f"--push-to-hub {repo}: no Hugging Face token; run `hf auth login` or set HF_TOKEN")
    try:
        dd.push_to_hub(repo)
    except Exception as e:  # noqa: BLE001 - any hub failure is one line for the user
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise HubError(f"--push-to-hub {repo}: the upload failed ({why}); the export is on disk") from e
    return repo
