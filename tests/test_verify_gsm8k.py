"""presrm.verify on a sample of real GSM8K gold solutions (skipped when the data is absent).

The data is read from ``$PRESRM_GSM8K_DIR`` or ``shared/data/gsm8k`` next to the
repository, never copied. The figures are computed by benchmarks/bench_verify.py,
whose helpers these tests reuse on 500 solutions.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from presrm.perturb import KINDS, perturb_value
from tests.gsm8k_data import GSM8K_DIR

DATA = GSM8K_DIR
SAMPLE = 500

if not (DATA / "test.jsonl").exists():
    pytest.skip(f"GSM8K not found in {DATA} (set PRESRM_GSM8K_DIR or PRESRM_DATA_DIR)", allow_module_level=True)

_spec = importlib.util.spec_from_file_location(
    "bench_verify", Path(__file__).parents[1] / "benchmarks" / "bench_verify.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def records():
    gold = bench.load_gold(DATA, ("test",))
    return random.Random(0).sample(gold, min(SAMPLE, len(gold)))


def test_extract_answer_finds_every_gold_answer(records):
    result = bench.extraction(records)
    assert result["hits"] == result["total"], result["misses"]


def test_gold_annotations_are_correct(records):
    result = bench.annotations(records)
    assert result["verdicts"]["correct"] >= 0.995 * result["lines"], result["exceptions"]
    assert result["alone"]["correct"] == sum(result["alone"].values())


def test_perturbed_annotations_are_flagged(records):
    result = bench.perturbation(records, seed=0)
    flagged = sum(n for (_, ok), n in result["kept"].items() if ok)
    assert flagged >= 0.99 * sum(result["kept"].values()), result["missed"]
    prose_flagged = sum(n for (_, ok), n in result["prose"].items() if ok)
    assert prose_flagged >= 0.97 * sum(result["prose"].values())


def test_answers_match_gives_intended_verdicts(records):
    for record in records[:200]:
        gold = bench.gold_value(record["answer"])
        for name, pred, expected in bench._variants(gold):
            assert bench.answers_match(pred, gold) is expected, (name, pred, gold)


def test_perturbation_changes_the_value():
    rng = random.Random(1)
    for result in ["0", "7", "24", "0.5", "18.00", "1000", "-3"]:
        for kind in KINDS:
            new = perturb_value(result, kind, rng)
            assert float(new) != float(result), (result, kind, new)
            assert not (len(new.lstrip("-").split(".")[0]) > 1 and new.lstrip("-")[0] == "0"), new
