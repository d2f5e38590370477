"""How presrm.steps segments real model output; writes the "steps" section of docs/BENCHMARKS.md.

Figures: on greedy GSM8K solutions of a model (default: the embedded
SmolLM2-135M-Instruct), the share segmented into at least two steps, the
distribution of steps per solution, which marker family was used, and
solutions segmented per second; on every GSM8K gold solution (train + test,
via :func:`gold_to_steps`), steps per solution for comparison.

Generations are cached in ``.benchcache/`` (gitignored), keyed by model, task,
count and token budget, so re-running the script only re-segments.

``--from-samples DIR`` reads the solutions from a ``presrm eval`` output
folder instead (``samples.jsonl`` + ``results.json``, e.g. a training run's
``eval_before``), so an evaluation already paid for is not generated twice.

Run: ``python benchmarks/bench_steps.py [--model embedded] [--n 200] [--from-samples DIR] [--no-write]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_verify import gsm8k_dir, load_gold  # noqa: E402 - after the path set-up

from presrm.jsonio import read_jsonl, write_jsonl  # noqa: E402
from presrm.steps import SegmentOptions, final_answer_index, gold_to_steps, marker_family, segment  # noqa: E402

log = logging.getLogger("bench_steps")
CACHE = ROOT / ".benchcache"
FAMILIES = ("step", "numbered", "discourse", "lines", "sentences", "empty")


def cache_path(model: str, task: str, n: int, max_new_tokens: int, precision: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)
    return CACHE / f"steps_{safe}_{task}_n{n}_t{max_new_tokens}_{precision}.jsonl"


def generations(model_spec: str, task_name: str, n: int, max_new_tokens: int, batch_size: int,
                precision: str = "auto") -> list[dict]:
    """``n`` greedy solutions (the response prefix included), from the cache or freshly generated."""
    path = cache_path(model_spec, task_name, n, max_new_tokens, precision)
    if path.exists():
        records = read_jsonl(path)
        if len(records) == n:
            log.info("Using %d cached generations from %s", n, path)
            return records
    from presrm.data import load_problems, load_task
    from presrm.engines.hf_generate import generate
    from presrm.grading import build_prompt
    from presrm.models import load_model

    task = load_task(task_name)
    problems = load_problems(task, limit=n)
    model, tok = load_model(model_spec, precision=precision)
    prompts = [build_prompt(tok, task, p.question) for p in problems]
    start = time.perf_counter()
    outs = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    stop=task.stop, desc="generate")
    seconds = time.perf_counter() - start
    records = [{"id": p.id, "solution": task.response_prefix + o[0], "model": model_spec,
                "task": task.name, "max_new_tokens": max_new_tokens, "dtype": str(model.dtype).removeprefix("torch."),
                "batch_size": batch_size, "seconds_total": round(seconds, 1)}
               for p, o in zip(problems, outs, strict=True)]
    CACHE.mkdir(exist_ok=True)
    write_jsonl(path, records)
    log.info("Generated %d solutions in %.0f s; cached in %s", n, seconds, path)
    return records


def from_samples(source: Path, n: int) -> list[dict]:
    """The first ``n`` completions of a ``presrm eval`` output: a folder (results.json + samples.jsonl)
    or a summary file (``eval_before.json`` + ``eval_before_samples.jsonl`` in a training run)."""
    import json

    from presrm.evaluate import samples_path

    summary = source / "results.json" if source.is_dir() else source
    samples = read_jsonl(samples_path(summary))
    if len(samples) < n:
        sys.exit(f"{samples_path(summary)} holds {len(samples)} solutions, fewer than --n {n}")
    results = json.loads(summary.read_text())
    protocol = results.get("protocol", {})
    meta = {"model": results.get("model", "?"), "task": protocol.get("task", "?"),
            "max_new_tokens": protocol.get("max_new_tokens", "?"), "dtype": protocol.get("dtype") or "dtype ?",
            "batch_size": protocol.get("batch_size", "?"), "seconds_total": results.get("seconds", 0.0),
            "source": str(summary)}
    return [{"id": r["id"], "solution": r["completion"], **meta} for r in samples[:n]]


def _rate(texts: Sequence[str], options: SegmentOptions, min_seconds: float = 1.0) -> float:
    """Texts segmented per second, repeating the whole list for at least ``min_seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for text in texts:
            segment(text, options)
        done += len(texts)
    return done / (time.perf_counter() - start)


def measure_model(texts: Sequence[str], options: SegmentOptions) -> dict:
    segmented = [segment(t, options) for t in texts]
    counts = [len(steps) for steps in segmented]
    return {"n": len(texts), "counts": counts,
            "answered": sum(final_answer_index(steps) is not None for steps in segmented),
            "families": Counter(marker_family(t) for t in texts),
            "rate": _rate(texts, options), "chars": statistics.mean(len(t) for t in texts) if texts else 0}


HOSTILE = {
    "1 MB of newlines": "\n" * 1_000_000,
    "1 MB of spaces": " " * 1_000_000,
    "1 MB of periods": "." * 1_000_000,
    "1 MB, one token": "x" * 1_000_000,
    "1 MB of `Step n:` lines": "".join(f"Step {i % 100}: {i} + 2 = {i + 2}\n" for i in range(38_000)),
    "1 MB of prose on one line": "She has 3 apples. He gives her 4 more. " * 25_000,
}


def measure_hostile() -> dict[str, tuple[int, int, float]]:
    """(characters, steps, seconds) of one :func:`segment` call on each hostile input."""
    out = {}
    for name, text in HOSTILE.items():
        start = time.perf_counter()
        steps = segment(text)
        out[name] = (len(text), len(steps), time.perf_counter() - start)
    return out


def measure_gold(answers: Sequence[str]) -> dict:
    start = time.perf_counter()
    counts = [len(gold_to_steps(a)) for a in answers]
    seconds = time.perf_counter() - start
    resegmented = [len(segment(a)) for a in answers]
    return {"n": len(answers), "counts": counts, "rate": len(answers) / seconds,
            "agree": sum(a == b for a, b in zip(counts, resegmented, strict=True))}


def _summary(counts: Sequence[int]) -> str:
    return (f"mean {statistics.mean(counts):.2f}, median {statistics.median(counts):g}, "
            f"min {min(counts)}, max {max(counts)}")


def _histogram(columns: dict[str, Sequence[int]]) -> list[str]:
    """Rows ``steps | share of solutions`` per column; counts of 10 and more share the last row."""
    buckets = list(range(11))
    rows = ["| steps | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for b in buckets:
        label = f"{b}+" if b == buckets[-1] else str(b)
        cells = []
        for counts in columns.values():
            k = sum(c >= b if b == buckets[-1] else c == b for c in counts)
            cells.append(f"{100 * k / len(counts):.1f}% ({k})")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def render(model: dict, gold: dict, hostile: dict, *, meta: dict, options: SegmentOptions) -> str:
    counts = model["counts"]
    multi = sum(c >= 2 for c in counts)
    fam = model["families"]
    return "\n".join([
        "## steps (`presrm.steps`)", "",
        (f"{model['n']} greedy solutions of `{meta['model']}` to the first {model['n']} GSM8K test problems "
         f"(task `{meta['task']}`: the prompt asks for `Step n:` lines and the response starts with `Step 1:`; "
         f"max_new_tokens {meta['max_new_tokens']}, batch {meta['batch_size']}, {meta['dtype']}; generating them "
         f"took {meta['seconds_total'] / 60:.0f} min on this CPU), segmented with the default options "
         f"(min_chars {options.min_chars}, max_chars {options.max_chars}). "
         f"Mean solution length {model['chars']:.0f} characters."
         + (f" The solutions are those of the evaluation in `{meta['source']}`." if meta.get("source") else "")), "",
        "| figure | value |", "| --- | --- |",
        f"| solutions segmented into ≥ 2 steps | {100 * multi / len(counts):.1f}% ({multi}/{len(counts)}) |",
        f"| steps per solution (model) | {_summary(counts)} |",
        (f"| model solutions with a final-answer step | "
         f"{100 * model['answered'] / len(counts):.1f}% ({model['answered']}/{len(counts)}) |"),
        f"| steps per solution (GSM8K gold, {gold['n']:,} solutions) | {_summary(gold['counts'])} |",
        (f"| gold: `segment(answer)` finds as many steps as `gold_to_steps` | "
         f"{100 * gold['agree'] / gold['n']:.2f}% ({gold['agree']:,}/{gold['n']:,}) |"),
        f"| `segment` speed on the model solutions | {model['rate']:,.0f} solutions/s |",
        f"| `gold_to_steps` speed | {gold['rate']:,.0f} solutions/s |",
        "", "Marker family that `segment` used (the first one found at least twice):", "",
        "| family | solutions |", "| --- | --- |",
        *[f"| {f} | {fam[f]} |" for f in FAMILIES if fam[f]],
        "", "Steps per solution:", "",
        *_histogram({f"model ({model['n']})": counts, f"gold ({gold['n']:,})": gold["counts"]}),
        "", "Hostile inputs (one `segment` call each; linear time, no input-length cap):", "",
        "| input | characters | steps | seconds |", "| --- | --- | --- | --- |",
        *[f"| {name} | {chars:,} | {steps:,} | {sec:.2f} |" for name, (chars, steps, sec) in hostile.items()],
        "", "The machine was shared with other jobs while this ran, so speeds are indicative.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="model spec for presrm.models.load_model")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--n", type=int, default=200, help="number of problems (greedy, one solution each)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (default: exact greedy; faster than bf16 on CPUs without bf16 units), auto, bf16")
    parser.add_argument("--data", help="GSM8K directory with train.jsonl and test.jsonl (gold figures)")
    parser.add_argument("--from-samples", type=Path,
                        help="a presrm eval output folder, or a run's eval_before.json, to read the solutions from")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data_dir = gsm8k_dir(args.data)
    if not (data_dir / "train.jsonl").exists():
        sys.exit(f"GSM8K not found in {data_dir}; pass --data or set PRESRM_GSM8K_DIR")
    if args.from_samples:
        records = from_samples(args.from_samples, args.n)
    else:
        records = generations(args.model, args.task, args.n, args.max_new_tokens, args.batch_size, args.precision)
    options = SegmentOptions()
    model = measure_model([r["solution"] for r in records], options)
    gold = measure_gold([r["answer"] for r in load_gold(data_dir)])
    body = render(model, gold, measure_hostile(), meta=records[0], options=options)
    from _report import publish

    publish("steps", body, write=not args.no_write)


if __name__ == "__main__":
    main()
