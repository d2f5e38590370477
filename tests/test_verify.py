"""Table-driven tests of presrm.verify: answer extraction, answer matching, step checking, files."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from sympy import Rational

from presrm.verify import (
    NUMBER_RE,
    Limits,
    VerifyInputError,
    answers_match,
    check_solution,
    check_step,
    extract_answer,
    parse_number,
    verify_file,
)

STRICT = [
    ("Natalia sold 72 clips.\n#### 72", "72"),
    ("#### 1,080", "1,080"),
    ("#### -3", "-3"),
    ("The answer is 18.", "18"),
    ("So the answer is: 18 dollars", "18"),
    ("The final answer is $18.", "18"),
    ("Final answer: 42", "42"),
    ("**Answer:** 1,000", "1,000"),
    ("**Final Answer**: 7", "7"),
    ("Answer: $5.50", "5.50"),
    ("The answer is -3", "-3"),
    ("The answer is −3.5.", "-3.5"),
    ("The answer is 25%.", "25%"),
    ("Answer: 1 1/2 cups", "1 1/2"),
    ("The answer is 3/4", "3/4"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\$18}", "18"),
    ("so \\boxed{12}. Then the answer is 13", "13"),
    ("The answer is 13. Check: \\boxed{12}", "12"),
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("The answer is \\(42\\)", "42"),
    ("The answer to the question is 9", "9"),
    ("#### 5\nThe answer is 6", "6"),
    ("The answer is 5. #### 6", "6"),
    ("She has 18 apples.", None),
    ("To answer this, 3 + 4 = 7.", None),
    ("The answer is unclear.", None),
    ("", None),
    ("\\boxed{12", None),
]

FLEXIBLE = [
    ("She paid $5.50 in total.", "5.50"),
    ("It is -3 degrees", "-3"),
    ("1,000 people came.", "1,000"),
    ("She ate 3/4 of the cake", "3/4"),
    ("Total 12.", "12"),
    ("5-3 leaves 2 and then 3-1", "1"),
    ("no numbers", None),
    ("The answer is 7, not 8", "7"),
    ("first 1, then .5", ".5"),
]


@pytest.mark.parametrize(("text", "expected"), STRICT)
def test_extract_strict(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), FLEXIBLE)
def test_extract_flexible(text, expected):
    assert extract_answer(text, mode="flexible") == expected


def test_extract_unknown_mode():
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract_answer("#### 1", mode="fuzzy")


MATCH = [
    ("$1,000", "1000", True),
    ("1000.00", "1000", True),
    ("\\boxed{1000}", "1000", True),
    ("$\\boxed{1000}$", "1000", True),
    ("18 dollars", "18", True),
    ("5 apples.", "5", True),
    ("18.", "18", True),
    ("10.00", "10", True),
    ("3/4", "0.75", True),
    ("0.75", "3/4", True),
    ("1 1/2", "1.5", True),
    ("-3", "-3", True),
    ("- 3", "-3", True),
    ("−3", "-3", True),
    ("1.5e3", "1500", True),
    ("1.5 \\times 10^3", "1500", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\dfrac{3}{4}", "3/4", True),
    ("\\$18", "18", True),
    ("18\\text{ dollars}", "18", True),
    ("\\$18\\text{ per hour}", "18", True),
    ("25%", "25", True),
    ("25\\%", "0.25", True),
    ("€5", "5", True),
    ("£5.00", "5", True),
    ("1,000", "1,000", True),
    ("**42**", "42", True),
    ("x+1", "1+x", True),
    ("\\sqrt{4}", "2", True),
    ("\\frac{1}{2}", "\\frac{2}{4}", True),
    ("19", "18", False),
    ("18.5", "18", False),
    ("1,001", "1000", False),
    ("-18", "18", False),
    ("180", "18", False),
    ("3/4", "4/3", False),
    ("18 or 19", "18", False),
    ("", "18", False),
    ("seven", "7", False),
    (None, "1", False),
    ("1", None, False),
    ("10^{10^{10}}", "1", False),
    ("9^9^9^9", "1", False),
    ("1000000!", "1", False),
    ("1" * 600, "1", False),
    ("{" * 6 + "1" + "}" * 6, "1", False),
    ("(" * 300, "1", False),
    ("\\frac{1}{2} + x" * 10, "1", False),
    ("__import__('os').system('echo pwned')", "0", False),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), MATCH)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_answers_match_off_main_thread():
    """math-verify's signal timeouts only work in the main thread; we switch them off elsewhere."""
    results = {}

    def work():
        results["latex"] = answers_match("\\frac{3}{4}", "0.75")
        results["plain"] = answers_match("$1,000", "1000")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert results == {"latex": True, "plain": True}


def test_math_verify_overrun_kills_its_worker_and_does_not_match(monkeypatch):
    """A worker stuck past MV_TIMEOUT_S (here: stopped, like a C loop no signal reaches) is killed, in any thread;
    the call does not match and the next call gets a fresh worker."""
    from presrm import _mathverify

    assert answers_match("\\frac{3}{4}", "0.75")  # a worker is up and idle
    worker = _mathverify._POOL._idle[-1]
    os.kill(worker.proc.pid, signal.SIGSTOP)
    monkeypatch.setattr(_mathverify, "MV_TIMEOUT_S", 0.2)
    results = {}
    thread = threading.Thread(target=lambda: results.setdefault("late", answers_match("\\frac{3}{4}", "0.75")))
    start = time.monotonic()
    thread.start()
    thread.join(5)
    assert results == {"late": False} and time.monotonic() - start < 2
    assert worker.proc.poll() is not None and worker not in _mathverify._POOL._idle
    assert answers_match("\\frac{3}{4}", "0.75") and _mathverify._POOL._idle[-1] is not worker


@pytest.mark.parametrize(("text", "safe"), [
    ("\\frac{3}{4}", True), ("x+1", True), ("3\\sqrt{2}", True), ("2 \\times 10^{3}", True), ("\\pi r^2", True),
    ("\\binom{10000000}{5000000}", False), ("{9 \\choose 4}", False), ("10!", False), ("2^{2^{10}}", False),
    ("10^{1000}", False), ("2**10", False), ("1e99999", False), ("9" * 31, False), ("\\sum_{k=1}^{9} k", False),
    ("\\Gamma(5)", False), ("\\operatorname{binomial}(9, 4)", False), ("(((((1)))))", False), ("(1", False),
    ("x" * 101, False),
])
def test_math_verify_input_bounds(text, safe):
    from presrm._mathverify import mv_safe

    assert mv_safe(text) is safe


STEPS = [
    ("16 - 3 - 4 = 9", "correct"),
    ("16 - 3 - 4 = 10", "incorrect"),
    ("She makes 9 * 2 = $18 every day.", "correct"),
    ("She makes 9 * 2 = $20 every day.", "incorrect"),
    ("12 + 30 = 42 = 6 * 7", "correct"),
    ("12 + 30 = 42 = 6 * 8", "incorrect"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "correct"),
    ("Natalia sold 48/2 = <<48/2=25>>25 clips in May.", "incorrect"),
    ("Natalia sold 48/2 = <<48/2=24>>25 clips in May.", "incorrect"),
    ("3 x 4 = 12", "correct"),
    ("3 × 4 = 12", "correct"),
    ("12 ÷ 4 = 3", "correct"),
    ("2^10 = 1024", "correct"),
    ("2**10 = 1024", "correct"),
    ("(3 + 4) * 2 = 14", "correct"),
    ("[3 + 4] * 2 = 14", "correct"),
    ("2(3 + 4) = 14", "correct"),
    ("20% of 50 = 10", "correct"),
    ("50 * 20% = 10", "correct"),
    ("20 percent of 50 = 10", "correct"),
    ("1/2 of 30 = 15", "correct"),
    ("$1,200 + $300 = $1,500", "correct"),
    ("10/3 = 3.33", "correct"),
    ("10/3 = 3.3", "correct"),
    ("10/3 = 3.5", "incorrect"),
    ("2/3 = 0.67", "correct"),
    ("2/3 = 0.66", "correct"),
    ("2/3 = 0.65", "incorrect"),
    ("10/3 = 3", "incorrect"),
    ("10/3 ≈ 3", "correct"),
    ("1/3 = 33.33%", "correct"),
    ("100 - 20 = 80%", "correct"),
    ("15 / 90 * 100% = 16.67", "correct"),
    ("5 apples x 3 = 15 apples", "correct"),
    ("5 apples x 3 = 16 apples", "incorrect"),
    ("$12 per hour * 8 hours = $96", "correct"),
    ("3 times 4 = 12", "correct"),
    ("12 divided by 4 = 3", "correct"),
    ("$2.50 - $2.24 = 26 cents", "correct"),
    ("2 1/2 * 4 = 10", "correct"),
    ("1 and 1/4 + 1/4 = 1.5", "correct"),
    ("25 / 1/3 = 75", "correct"),
    ("¾ x 8 = 6", "correct"),
    ("2 * 3 = 6 + 4 = 10", "correct"),
    ("**3 + 4 = 7**", "correct"),
    ("$\\frac{3}{4} \\times 8 = 6$", "correct"),
    ("\\( 9 \\times 2 = \\$18 \\)", "correct"),
    ("\\[ 9 \\cdot 2 = \\boxed{18} \\]", "correct"),
    ("So 12 - 5 = 7.", "correct"),
    ("560//10 = 56", "correct"),
    ("5 - 8 = -3", "correct"),
    ("Step 2 (3 + 4 = 7)", "correct"),
    ("(since 3 + 4 = 7)", "correct"),
    ("3 + 4 = 7, and 7 * 2 = 14", "correct"),
    ("3 + 4 = 7, and 7 * 2 = 15", "incorrect"),
    ("7/0 = 0", "incorrect"),
    ("We get 18 - 5 = 13 (the remaining cookies).", "correct"),
    ("a) 3 + 4 = 7", "correct"),
    ("The area is 5 m × 4 m = 20 m².", "correct"),
    ("120 km / 2 h = 60 km/h", "correct"),
    ("He earns $15/hour * 40 hours = $600.", "correct"),
    ("He earns $15/hour * 40 hours = $500.", "incorrect"),
    ("Average = (80 + 90 + 100) / 3 = 90.", "correct"),
    ("Each person gets 100/3 ≈ 33.33 dollars.", "correct"),
    # prose, algebra and labels are no claims
    ("Step 2: count the eggs.", "unverifiable"),
    ("Step 1 = one", "unverifiable"),
    ("1 = one", "unverifiable"),
    ("1 hour = 60 minutes", "unverifiable"),
    ("On 12/25/2020 she left.", "unverifiable"),
    ("x + 3 = 8", "unverifiable"),
    ("2x + 3 = 11", "unverifiable"),
    ("2m+55 = 215", "unverifiable"),
    ("Combining like terms, we get X*5 + 1 = 31.", "unverifiable"),
    ("Let y = 5", "unverifiable"),
    ("3P = 220 - 4 = 216 pages", "correct"),
    ("6Z + 4Z = 10Z = 10 ounces", "unverifiable"),
    ("Week 1 + Week 2 = 35 + 35 = 70 hours", "correct"),
    ("She left at 6:00+48=6:48 PM", "unverifiable"),
    ("the total is 18 000 = 600 x 30", "unverifiable"),
    ("Remaining 10 = 62,300/10", "unverifiable"),
    ("√(144) = 12", "unverifiable"),
    ("X*2 - $40 = $250", "unverifiable"),
    ("3 packs of 210 / 3 = 70 acorns", "correct"),
    ("0900-0130 = 0730 hours", "unverifiable"),
    ("10 + 20% = 12", "unverifiable"),
    ("4^0.5 = 2", "unverifiable"),
    ("9^9^9^9 = 1", "unverifiable"),
    ("10**10**10 = 1", "unverifiable"),
    ("", "unverifiable"),
    ("a <= 5 and b >= 3 => c", "unverifiable"),
]


@pytest.mark.parametrize(("text", "expected"), STEPS)
def test_check_step(text, expected):
    check = check_step(text)
    assert check.verdict == expected, check


def test_claim_fields():
    check = check_step("So 16 - 3 - 4 = 10 eggs.")
    (claim,) = check.claims
    fields = (claim.text, claim.lhs, claim.rhs, claim.value, claim.ok)
    assert fields == ("16 - 3 - 4 = 10", "16 - 3 - 4", "10", "9", False)
    assert "left side is 9" in claim.reason
    assert check.to_dict()["claims"][0]["value"] == "9"


def test_chain_links_each_checked():
    check = check_step("(36/3) x 2 = 12 x 2 = 24 sticks")
    assert [c.text for c in check.claims] == ["(36/3) x 2 = 12 x 2", "12 x 2 = 24"]
    assert all(c.ok for c in check.claims)


def test_rounding_reason_documents_truncation():
    (claim,) = check_step("2/3 = 0.66").claims
    assert claim.ok and claim.reason == "truncated to 2 decimal places"


def test_bounds_give_unverifiable():
    assert check_step("1 + 1 = 2 " * 500).reason.startswith("step longer than")
    assert check_step("(" * 30 + "1" + ")" * 30 + " = 1").verdict == "unverifiable"
    assert check_step("1" * 40 + " + 1 = 2").verdict == "unverifiable"
    tight = Limits(max_claims=2)
    assert check_step("1+1=2, 2+2=4, 3+3=6", limits=tight).verdict == "unverifiable"


def test_uncomputable_claims_do_not_decide():
    check = check_step("4^0.5 = 2 and 3 + 4 = 7")
    assert check.verdict == "correct"
    assert [c.ok for c in check.claims] == [None, True]


def test_check_solution_first_incorrect():
    checks, first = check_solution(["3 + 4 = 7", "We know nothing.", "7 * 2 = 15", "15 - 1 = 13"])
    assert [c.verdict for c in checks] == ["correct", "unverifiable", "incorrect", "incorrect"]
    assert first == 2
    assert check_solution([]) == ([], None)
    assert check_solution(["3 + 4 = 7"])[1] is None


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_verify_file(tmp_path):
    gold = "He sold 48/2 = <<48/2=24>>24 clips.\n#### 24"
    src = _write(tmp_path / "in.jsonl", [
        json.dumps({"id": "a", "completion": "48/2 = 24\nThe answer is 24.", "answer": gold}),
        "",
        json.dumps({"completion": "48/2 = 25\nSo 25", "answer": "24", "question": "q?"}),
    ])
    summary = verify_file(src, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["records"] == 2 and summary["correct_strict"] == 1 and summary["correct_flexible"] == 1
    assert summary["steps"] == 4 and summary["steps_incorrect"] == 1
    assert summary["records_with_incorrect_step"] == 1
    assert summary["accuracy_strict"] == 0.5
    first, second = rows
    assert first["id"] == "a" and first["gold"] == "24" and first["pred_strict"] == "24"
    assert first["correct_strict"] and first["first_incorrect_step"] is None
    assert first["steps"][1] == {"index": 1, "text": "The answer is 24.", "start": 10, "end": 27}
    assert second["id"] == "3" and second["pred_strict"] is None and second["pred_flexible"] == "25"
    assert not second["correct_flexible"] and second["first_incorrect_step"] == 0
    assert second["step_checks"][0]["verdict"] == "incorrect"


def test_verify_file_custom_keys(tmp_path):
    src = _write(tmp_path / "in.jsonl", [json.dumps({"text": "#### 7", "gold": 7})])
    summary = verify_file(src, tmp_path / "out.jsonl", completion_key="text", gold_key="gold")
    assert summary["correct_strict"] == 1


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"in\.jsonl:2: invalid JSON"),
    (json.dumps({"answer": "1"}), r"in\.jsonl:2: missing key 'completion'"),
    (json.dumps({"completion": "1"}), r"in\.jsonl:2: missing key 'answer'"),
    (json.dumps([1, 2]), r"in\.jsonl:2: expected a JSON object"),
    (json.dumps({"completion": 5, "answer": "5"}), r"in\.jsonl:2: 'completion' must be a string"),
])
def test_verify_file_bad_input(tmp_path, line, message):
    src = _write(tmp_path / "in.jsonl", [json.dumps({"completion": "#### 1", "answer": "1"}), line])
    with pytest.raises(VerifyInputError, match=message):
        verify_file(src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert issubclass(VerifyInputError, ValueError)


NUMBERS = [
    ("12", 12), ("1,000", 1000), ("-3", -3), ("−3", -3), ("+4", 4), ("2.5", Rational(5, 2)), (".5", Rational(1, 2)),
    ("$5.50", Rational(11, 2)), ("-$5", -5), ("$-5", -5), ("\\$18", 18), ("€5", 5), ("3/4", Rational(3, 4)),
    ("6 / 8", Rational(3, 4)), ("1 1/2", Rational(3, 2)), (" 7 ", 7), ("0", 0), ("9" * 30, int("9" * 30)),
    ("5/0", None), ("5/00", None), ("1 1/0", None), ("9" * 31, None), ("1,00", None), ("1,0000", None),
    ("2e5", None), ("five", None), ("7 apples", None), ("", None), ("-", None), ("$", None), ("1.2.3", None),
    ("٣", None), ("1/2/3", None), ("--3", None),
]


@pytest.mark.parametrize(("text", "expected"), NUMBERS)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(("text", "found"), [
    ("1,000 pens at $2.50 each, .5 kg", ["1,000", "2.50", ".5"]),
    ("1,00 and 12,3456", ["1", "00", "12", "3456"]),
    ("x٣y", []),
])
def test_number_pattern(text, found):
    assert [m.group() for m in NUMBER_RE.finditer(text)] == found
