"""Quality and speed of presrm.verify on GSM8K; writes the "verify" section of docs/BENCHMARKS.md.

Figures: final-answer extraction on every gold solution, gold calculator
annotations judged ``correct``, perturbed annotations judged ``incorrect``,
agreement of :func:`answers_match` with math-verify, and calls per second.

Run: ``python benchmarks/bench_verify.py [--data DIR] [--mv-sample N] [--no-write]``.
The data directory defaults to ``$PRESRM_GSM8K_DIR`` or ``../shared/data/gsm8k``
next to the repository; it is read, never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from presrm.perturb import perturb_value  # noqa: E402 - after the path set-up
from presrm.verify import answers_match, check_step, extract_answer  # noqa: E402

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
PERTURBATIONS = ("plus_one", "times_ten", "digit")  # kinds of presrm.perturb.KINDS measured here


def gsm8k_dir(override: str | None = None) -> Path:
    """The GSM8K folder: the argument, ``$PRESRM_GSM8K_DIR``, ``$PRESRM_DATA_DIR/gsm8k`` or ``../shared/data/gsm8k``."""
    if override or os.environ.get("PRESRM_GSM8K_DIR"):
        return Path(override or os.environ["PRESRM_GSM8K_DIR"])
    if os.environ.get("PRESRM_DATA_DIR"):
        return Path(os.environ["PRESRM_DATA_DIR"]) / "gsm8k"
    return ROOT.parent / "shared" / "data" / "gsm8k"


def load_gold(data_dir: Path, splits: tuple[str, ...] = ("train", "test")) -> list[dict]:
    """The records of the given splits, in file order."""
    records = []
    for split in splits:
        with (data_dir / f"{split}.jsonl").open(encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh if line.strip())
    return records


def gold_value(answer: str) -> str:
    return answer.rsplit("####", 1)[1].strip()


def extraction(records: list[dict]) -> dict:
    """How often :func:`extract_answer` returns exactly the ``####`` value of a gold solution."""
    misses = [r["answer"][-80:] for r in records if extract_answer(r["answer"]) != gold_value(r["answer"])]
    return {"total": len(records), "hits": len(records) - len(misses), "misses": misses[:10]}


def annotated_lines(records: list[dict]) -> list[str]:
    return [line for r in records for line in r["answer"].split("\n") if ANNOTATION.search(line)]


def annotations(records: list[dict]) -> dict:
    """Verdicts on gold lines with calculator annotations, on each annotation alone, and the exceptions."""
    lines = annotated_lines(records)
    verdicts = Counter()
    exceptions = []
    for line in lines:
        check = check_step(line)
        verdicts[check.verdict] += 1
        if check.verdict != "correct":
            exceptions.append((line, check.reason))
    alone = Counter(check_step(m.group(0)).verdict for line in lines for m in ANNOTATION.finditer(line))
    prose = Counter(check_step(ANNOTATION.sub("", line)).verdict for line in lines)
    return {"lines": len(lines), "verdicts": verdicts, "alone": alone, "prose": prose,
            "exceptions": exceptions}


def perturb_line(line: str, rng: random.Random, kind: str) -> str | None:
    """``line`` with the result of one annotation (and the visible copy after it) perturbed."""
    found = [m for m in ANNOTATION.finditer(line) if re.fullmatch(r"-?\d+(?:\.\d+)?", m.group(2).strip())]
    if not found:
        return None
    m = rng.choice(found)
    result = m.group(2).strip()
    new = perturb_value(result, kind, rng)
    after = line[m.end():]
    if re.match(re.escape(result) + r"(?![\d.]\d)", after):
        after = new + after[len(result):]
    return line[:m.start()] + f"<<{m.group(1)}={new}>>" + after


def perturbation(records: list[dict], seed: int = 0) -> dict:
    """Flag rate of perturbed annotated steps, with annotations kept and with them stripped (prose only)."""
    rng = random.Random(seed)
    kept, prose = Counter(), Counter()
    missed = []
    for line in annotated_lines(records):
        kind = rng.choice(PERTURBATIONS)
        bad = perturb_line(line, rng, kind)
        if bad is None:
            continue
        flagged = check_step(bad).verdict == "incorrect"
        kept[kind, flagged] += 1
        if not flagged:
            missed.append(bad)
        plain, plain_bad = ANNOTATION.sub("", line), ANNOTATION.sub("", bad)
        if check_step(plain).verdict == "correct" and plain != plain_bad:
            prose[kind, check_step(plain_bad).verdict == "incorrect"] += 1
    return {"kept": kept, "prose": prose, "missed": missed[:10]}


def _variants(gold: str) -> list[tuple[str, str, bool]]:
    """(name, prediction, should match) for one gold answer."""
    plain = gold.replace(",", "")
    value = int(plain)
    return [
        ("as is", gold, True), ("no separators", plain, True), ("$1,000", f"${value:,}", True),
        ("1000.00", f"{plain}.00", True), ("\\boxed{}", f"\\boxed{{{plain}}}", True),
        ("$\\boxed{}$", f"$\\boxed{{{plain}}}$", True), ("N dollars", f"{plain} dollars", True),
        ("\\$N", f"\\${plain}", True), ("N\\text{ units}", f"{plain}\\text{{ apples}}", True),
        ("$N$", f"${plain}$", True), ("N.", f"{plain}.", True), ("N apples.", f"{plain} apples.", True),
        ("sci 1.5e3", f"{value / 10:.{len(plain)}g}e1", True),
        ("\\frac{2N}{2}", f"\\frac{{{2 * value}}}{{2}}", True),
        ("wrong: +1", str(value + 1), False), ("wrong: x10", str(value * 10), False),
        ("wrong: negated", str(-value) if value else "-1", False), ("wrong: +0.5", f"{plain}.5", False),
    ]


def mv_agreement(records: list[dict], sample: int, seed: int = 0) -> dict:
    """Agreement of ``answers_match(pred, gold)`` with ``math_verify.verify(parse(gold), parse(pred))``."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    golds = [gold_value(r["answer"]) for r in random.Random(seed).sample(records, min(sample, len(records)))]
    ours_right, agree, total = 0, 0, 0
    disagreements: Counter = Counter()
    examples: dict[str, tuple[str, str, bool, bool]] = {}
    for gold in golds:
        for name, pred, expected in _variants(gold):
            ours = answers_match(pred, gold)
            theirs = bool(verify(parse(gold), parse(pred)))
            total += 1
            agree += ours == theirs
            ours_right += ours == expected
            if ours != theirs:
                disagreements[name] += 1
                examples.setdefault(name, (pred, gold, ours, theirs))
    return {"golds": len(golds), "total": total, "agree": agree, "ours_right": ours_right,
            "disagreements": disagreements, "examples": examples}


def _rate(fn, items, min_seconds: float = 1.0) -> float:
    """Calls per second of ``fn(*item)`` over ``items``, repeated for at least ``min_seconds``."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for item in items:
            fn(*item)
        calls += len(items)
    return calls / (time.perf_counter() - start)


def speed(records: list[dict]) -> dict:
    golds = [gold_value(r["answer"]) for r in records[:1000]]
    pairs = [(pred, gold) for gold in golds for name, pred, _ in _variants(gold) if "frac" not in name]
    latex = [(pred, gold) for gold in golds[:100] for name, pred, _ in _variants(gold) if "frac" in name]
    lines = [(line,) for r in records[:1000] for line in r["answer"].split("\n")]
    prose = [(ANNOTATION.sub("", line),) for (line,) in lines]
    return {"answers_match": _rate(answers_match, pairs), "answers_match_latex": _rate(answers_match, latex),
            "check_step": _rate(check_step, lines),
            "check_step_prose": _rate(check_step, prose), "extract_answer": _rate(extract_answer, lines)}


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}% ({part:,}/{whole:,})" if whole else "n/a"


def _flag_table(counts: Counter) -> list[str]:
    rows = ["| perturbation | flagged `incorrect` |", "| --- | --- |"]
    for kind in PERTURBATIONS:
        rows.append(f"| {kind} | {_pct(counts[kind, True], counts[kind, True] + counts[kind, False])} |")
    flagged = sum(v for (_, ok), v in counts.items() if ok)
    rows.append(f"| **all** | **{_pct(flagged, sum(counts.values()))}** |")
    return rows


def render(res: dict) -> str:
    ext, ann, per = res["extraction"], res["annotations"], res["perturbation"]
    mv, spd = res["mv"], res["speed"]
    alone, prose = ann["alone"], ann["prose"]
    lines = [
        "## verify (`presrm.verify`)", "",
        f"GSM8K train + test gold solutions ({ext['total']:,}), read from the shared data directory.", "",
        "| figure | value | target |", "| --- | --- | --- |",
        f"| `extract_answer` returns the `####` value | {_pct(ext['hits'], ext['total'])} | 100% |",
        (f"| gold lines with calculator annotations judged `correct` | "
        f"{_pct(ann['verdicts']['correct'], ann['lines'])} | ≥ 99.5% |"),
        f"| each annotation `<<a=b>>` alone judged `correct` | {_pct(alone['correct'], alone.total())} | |",
        (f"| same lines, annotations stripped: `correct` / `incorrect` | "
         f"{_pct(prose['correct'], ann['lines'])} / {_pct(prose['incorrect'], ann['lines'])} | |"),
        (f"| perturbed annotated steps flagged `incorrect` | "
        f"{_pct(sum(v for (_, ok), v in per['kept'].items() if ok), sum(per['kept'].values()))} | ≥ 99% |"),
        (f"| same, annotations stripped (prose arithmetic only) | "
        f"{_pct(sum(v for (_, ok), v in per['prose'].items() if ok), sum(per['prose'].values()))} | |"),
        f"| `answers_match` agrees with math-verify | {_pct(mv['agree'], mv['total'])} | |",
        f"| `answers_match` gives the intended verdict | {_pct(mv['ours_right'], mv['total'])} | |",
        f"| `answers_match` calls/s (plain-number formats) | {spd['answers_match']:,.0f} | ≥ 20,000 |",
        f"| `answers_match` calls/s (`\\frac` via math-verify) | {spd['answers_match_latex']:,.0f} | |",
        f"| `check_step` calls/s (gold lines) | {spd['check_step']:,.0f} | ≥ 5,000 |",
        f"| `check_step` calls/s (gold lines, annotations stripped) | {spd['check_step_prose']:,.0f} | |",
        f"| `extract_answer` calls/s (gold lines) | {spd['extract_answer']:,.0f} | |",
        "", "Perturbation (one annotated result per line, seed 0; the visible copy after `>>` too):", "",
        *_flag_table(per["kept"]), "",
        (f"math-verify agreement: {mv['golds']:,} sampled gold answers × 18 predictions (14 reformatted, "
        "4 wrong); disagreements by prediction format (example: pred, gold, ours, math-verify):"), "",
        "| format | disagreements | example |", "| --- | --- | --- |",
        *[f"| {name} | {n} | `{mv['examples'][name]}` |" for name, n in mv["disagreements"].most_common()],
        "", f"Gold annotated lines not judged `correct` ({len(ann['exceptions'])}; see docs/verify.md):", "",
        *[f"- `{line.strip()[:150]}` — {reason[:120]}" for line, reason in ann["exceptions"]],
    ]
    return "\n".join(lines)


def run(data_dir: Path, mv_sample: int) -> dict:
    records = load_gold(data_dir)
    return {"extraction": extraction(records), "annotations": annotations(records),
            "perturbation": perturbation(records), "mv": mv_agreement(records, mv_sample),
            "speed": speed(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="GSM8K directory with train.jsonl and test.jsonl")
    parser.add_argument("--mv-sample", type=int, default=1000,
                        help="gold answers for the math-verify comparison")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    data_dir = gsm8k_dir(args.data)
    if not (data_dir / "train.jsonl").exists():
        sys.exit(f"GSM8K not found in {data_dir}; pass --data or set PRESRM_GSM8K_DIR")
    body = render(run(data_dir, args.mv_sample))
    from _report import publish

    publish("verify", body, write=not args.no_write)


if __name__ == "__main__":
    main()
