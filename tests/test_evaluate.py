"""Evaluation protocols, decoding modes, and accuracy recomputed from samples.jsonl."""

import dataclasses
import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from presrm.data import Extractor, Match, load_problems, load_shots, load_task
from presrm.decoding import Decoding, majority_vote, vote_key
from presrm.engines import HFEngine
from presrm.errors import ConfigError
from presrm.evaluate import (
    build_prompt,
    evaluate,
    score_record,
    summarize,
    wilson_interval,
    write_eval,
)
from presrm.jsonio import read_json, read_jsonl
from presrm.judge import PointwiseJudge
from presrm.judges.common import ScoreJudgeBase
from presrm.schema import Problem

COT = load_task("gsm8k_cot_zeroshot")
STRICT, FLEX = COT.extractors["strict"], COT.extractors["flexible"]


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 0, 0.0, 1.0), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (1, 50, 0.0035, 0.1050)],
)
def test_wilson_interval(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert (a, b) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))


@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        ("Step 1: 3 + 4 = 7\nStep 2: The answer is 7.", True, True),
        ("Step 1: 3 + 4 = 7 apples", False, True),
        ("Step 1: 3 + 4 = 8\nThe answer is 8.", False, False),
        ("I do not know", False, False),
    ],
)
def test_score_record(completion, strict, flexible):
    r = score_record(Problem(id="p", question="q", answer="7"), completion)
    assert (r.correct_strict, r.correct_flexible) == (strict, flexible)
    assert len(r.step_checks) == len(r.steps) >= (0 if completion == "I do not know" else 1)


def test_wrong_arithmetic_is_marked():
    r = score_record(Problem(id="p", question="q", answer="8"), "Step 1: 3 + 4 = 8\nThe answer is 8.")
    assert r.correct_strict and r.step_checks[0]["verdict"] == "incorrect"


# lm-eval's gsm8k_cot_zeroshot filters: strict = first "The answer is N." match, flexible = last number-ish run.
@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("So 3 + 4 = 7. The answer is 7.", "7", "7."),
        ("The answer is 1,234.5 dollars", "1,234.5", "1,234.5"),
        ("The answer is 5. Later the answer is 6.", "5.", "6."),  # greedy: "5." then any char
        ("She pays $18.", None, "$18."),
        ("x is -3 and then 4", None, "4"),
        ("The answer is -2!", "-2", "-2"),
        ("no digits at all", None, None),
        ("The answer is 7", None, "7"),  # the pattern's final "." needs one more character
        ("1 and 22 and 3", None, "3"),
    ],
)
def test_lmeval_regex_extractors(text, strict, flexible):
    assert (STRICT.extract(text), FLEX.extract(text)) == (strict, flexible)


GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 1,800"


@pytest.mark.parametrize(
    ("pred", "correct"),
    [("1800", True), ("1,800", True), ("$1,800.", True), ("1800.0", False), ("180", False), (None, False),
     ("1800.", True), ("#### 1800", True), (" 1800", False)],
)
def test_lmeval_exact_match(pred, correct):
    assert COT.match.correct(pred, GOLD) is correct


def test_exact_match_reference_is_the_raw_answer_field():
    p = Problem(id="p", question="q", answer="1800", solution=GOLD)
    assert COT.match.reference(p) == GOLD and Match().reference(p) == "1800"


@given(st.text(alphabet="0123456789.,$-The answrisx \n", max_size=60))
@settings(max_examples=300, deadline=None)
def test_regex_extractors_agree_with_lm_eval(text):
    why = "lm-eval is not installed (the lm-eval extra; make setup installs it)"
    filters = pytest.importorskip("lm_eval.filters.extraction", reason=why)
    metrics = pytest.importorskip("lm_eval.api.metrics", reason=why)
    for ours, spec in ((STRICT, {}), (FLEX, {"group_select": -1})):
        theirs = filters.RegexFilter(regex_pattern=ours.pattern, **spec).apply([[text]], [{}])[0][0]
        got = ours.extract(text)
        assert (got if got is not None else "[invalid]") == theirs
        em = metrics.exact_match_hf_evaluate([theirs], [GOLD], regexes_to_ignore=list(COT.match.regexes_to_ignore),
                                             ignore_case=True, ignore_punctuation=False)["exact_match"]
        assert COT.match.correct(got, GOLD) == bool(em)


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_extractors_never_raise(text):
    for ex in (STRICT, FLEX, Extractor("presrm", "strict"), Extractor("presrm", "flexible")):
        out = ex.extract(text)
        assert out is None or isinstance(out, str)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("presrm_loose", "must be presrm_strict"), ({"regex": "("}, "not a valid regex"),
     ({"regex": "x", "group_select": "last"}, "must be an integer")],
)
def test_bad_extractor_spec(spec, message):
    with pytest.raises(ConfigError, match=message):
        Extractor.from_spec("strict", spec, "t.yaml")


@pytest.mark.parametrize(
    ("preds", "winner", "counts"),
    [
        (["18", "$18.", "20", None, "20"], "18", [2, 2]),  # tie: the answer seen first wins
        (["20", "18", "18"], "18", [1, 2]),
        (["1,000", "1000.00", "999"], "1,000", [2, 1]),
        ([None, None], None, []),
        (["3/4", "0.75", "6/8"], "3/4", [3]),
    ],
)
def test_majority_vote(preds, winner, counts):
    got, votes = majority_vote(preds, Match())
    assert got == winner and [v["count"] for v in votes] == counts


def test_majority_record_keeps_each_sample_and_grades_the_votes():
    from presrm.decoding import _majority_record

    task = load_task("gsm8k")
    p = Problem(id="p", question="q", answer="18")
    group = [score_record(p, c, task) for c in ("so 18", "The answer is 20.", "The answer is 18.", "The answer is 20.")]
    rec = _majority_record(task, group)
    assert [c["pred_strict"] for c in rec.candidates] == [None, "20", "18", "20"]  # each sample's own answers
    assert [c["pred_flexible"] for c in rec.candidates] == ["18", "20", "18", "20"]
    assert (rec.pred_strict, rec.correct_strict) == ("20", False)  # strict: 20 has two votes, 18 one
    assert (rec.pred_flexible, rec.correct_flexible) == ("18", True)  # flexible tie 2-2: 18 was seen first
    assert rec.chosen == 0 and rec.completion == "so 18"
    assert [(v["answer"], v["count"]) for v in rec.votes["strict"]] == [("20", 2), ("18", 1)]


@pytest.mark.parametrize(
    ("pred", "key"),
    [("$1,000.", "1000"), ("1000.0", "1000"), ("-2.50", "-5/2"), ("18 apples", "18 apples"), ("1/0", "1/0"),
     ("9" * 41, "9" * 41), ("5/00", "5/00"), ("0/000", "0/000"), ("-7/0.", "-7/0"), ("6/08", "3/4"),
     ("1 1/2", "3/2"), ("1,00", "1,00"), (".5", "1/2"), ("−3", "-3")],
)
def test_vote_key(pred, key):
    assert vote_key(pred, Match()) == key


def test_vote_key_under_exact_match_is_lm_eval_normalization():
    assert vote_key("$1,800.", COT.match) == vote_key("1800", COT.match) == "1800"


@pytest.mark.parametrize(
    ("spec", "params", "mode", "k", "label"),
    [("greedy", {}, "greedy", 1, "greedy"), ("maj@k", {"k": 5}, "maj", 5, "maj@5"), ("maj@8", {}, "maj", 8, "maj@8"),
     ("best-of-n", {"k": 3}, "best_of_n", 3, "best-of-3"), ("Best_of_16", {}, "best_of_n", 16, "best-of-16"),
     ("beam", {"beam_width": 3}, "beam", 1, "beam(width=3, expand=4)")],
)
def test_decoding_parse(spec, params, mode, k, label):
    d = Decoding.parse(spec, **params)
    assert (d.mode, d.k, d.label) == (mode, k, label)
    assert d.to_dict()["name"] == label


def test_decoding_from_run_config():
    from presrm.config import load_config

    cfg = load_config(None, ["eval.decoding=best-of-n", "eval.k=3", "judge.aggregate=gmean", "seed=7"])
    d = Decoding.from_config(cfg)
    assert (d.mode, d.k, d.aggregate, d.seed) == ("best_of_n", 3, "gmean", 7)


@pytest.mark.parametrize(
    ("spec", "params", "message"),
    [("top-k", {}, "use greedy, maj@k"), ("maj@k", {"k": 0}, r"eval.k must be in \[1, 1024\], got 0"),
     ("best-of-n", {"aggregate": "max"}, "--aggregate"),
     ("maj@4", {"temperature": 0.0}, "eval.temperature must be > 0"),
     ("maj@2000", {}, "eval.k must be in"), ("beam", {"top_p": 0.0}, r"eval.top_p must be in \(0, 1\]")],
)
def test_decoding_parse_errors(spec, params, message):
    with pytest.raises(ConfigError, match=message):
        Decoding.parse(spec, **params)


def test_cot_prompt_is_lm_eval_text_exactly(tiny):
    _, tok = tiny
    assert build_prompt(tok, COT, "How many?") == "Q: How many?\nA: Let's think step by step."


def test_shots_are_deterministic_and_recorded(tiny, gsm8k_like, tmp_path):
    _, tok = tiny
    task = load_task("gsm8k")
    (tmp_path / "t.yaml").write_text(
        open(task.source_file).read().replace("- ../../shared/data/gsm8k/train.jsonl", f"- {gsm8k_like}"))
    t2 = load_task(str(tmp_path / "t.yaml")).with_shots(2)
    shots = load_shots(t2)
    assert [s.id for s in shots] == [s.id for s in load_shots(t2)] and len({s.id for s in shots}) == 2
    chat = build_prompt(tok, t2, "Q?", shots)
    assert chat.count("<|im_start|>user") == 3 and chat.count("<|im_start|>assistant") == 3
    assert "Step 1: " + shots[0].solution.split(" = <<")[0] in chat and chat.endswith("assistant\nStep 1:")
    plain = build_prompt(tok, dataclasses.replace(t2, chat_template=False), "Q?", shots)
    assert plain.count("Problem: ") == 3 and "\n\n" in plain and plain.endswith("Problem: Q? Step 1:")
    with pytest.raises(ConfigError, match="no 'fewshot' section"):
        COT.with_shots(1)


class LengthJudge(ScoreJudgeBase):
    """A fake pointwise judge: shorter steps score higher (deterministic, easy to check)."""

    mode = "pointwise"

    def score(self, items, *, desc=None):
        return [1.0 / (1.0 + len(it.step)) for it in items]


def _recompute(task, samples):
    """Accuracy from samples.jsonl and gold alone: re-extract, re-match, and (maj@k) re-vote."""
    counts = {"strict": 0, "flexible": 0}
    for s in samples:
        assert s["target"] == s["gold"] if task.match.target == "answer" else s["target"].endswith(s["gold"])
        for name, ex in task.extractors.items():
            if s["candidates"] and "votes" in s and s["votes"]:
                pred = majority_vote([c[f"pred_{name}"] for c in s["candidates"]], task.match)[0]
            else:
                pred = ex.extract(s["completion"])
            assert pred == s[f"pred_{name}"]
            assert task.match.correct(pred, s["target"]) == s[f"correct_{name}"]
            counts[name] += s[f"correct_{name}"]
    return counts


# Three completions graded by hand, put in place of the tiny model's (which state no answer and no arithmetic:
# "Step 1:::::::::" under gsm8k, "........" under gsm8k_cot_zeroshot): (problem, completion, strict and flexible
# predictions per task, strict and flexible right, steps wrong, steps the verifier decided).
HAND_GRADED = [
    (0, "Step 1: 3 + 4 = 8\nStep 2: 8 - 1 = 7\nThe answer is 7.",
     {"gsm8k": ("7", "7"), "gsm8k_cot_zeroshot": ("7", "7.")}, True, True, 1, 2),
    (1, "Step 1: 6 * 5 = 30\nThe answer is 31.",
     {"gsm8k": ("31", "31"), "gsm8k_cot_zeroshot": ("31", "31.")}, False, False, 0, 1),
    (2, "Step 1: 20 - 8 = 12 dollars are left.",  # no "The answer is": only the flexible extractor finds 12
     {"gsm8k": (None, "12"), "gsm8k_cot_zeroshot": (None, "12")}, False, True, 0, 1),
]


@pytest.mark.parametrize("task_name", ["gsm8k", "gsm8k_cot_zeroshot"])
def test_greedy_eval_files_hold_the_hand_graded_results(tiny, gsm8k_like, tmp_path, task_name):
    engine = HFEngine(*tiny)
    task = load_task(task_name)
    problems = load_problems(task, data_file=str(gsm8k_like))
    summary, records = evaluate(engine, task, problems, max_new_tokens=8, batch_size=4, judge=PointwiseJudge(engine))
    for i, completion, *_ in HAND_GRADED:
        records[i] = score_record(problems[i], completion, task)
    write_eval(tmp_path, {**summary, **summarize(records)}, records)
    res, samples = read_json(tmp_path / "results.json"), read_jsonl(tmp_path / "samples.jsonl")
    assert res["n"] == len(samples) == len(problems) == 6
    p = res["protocol"]
    assert (p["task"], p["decoding"]["name"], p["shots"], p["max_new_tokens"]) == (task_name, "greedy", 0, 8)
    assert p["extractors"] == {k: e.name for k, e in task.extractors.items()} and p["stop"] == list(task.stop)
    assert p["prompt"] == task.prompt and p["example_prompt"].startswith(
        "Q: Tom has 3" if task_name == "gsm8k_cot_zeroshot" else "<|im_start|>")
    for i, completion, preds, strict, flexible, wrong, decided in HAND_GRADED:
        s = samples[i]
        assert (s["completion"], s["pred_strict"], s["pred_flexible"]) == (completion, *preds[task_name])
        assert (s["correct_strict"], s["correct_flexible"], s["steps_wrong"], s["steps_verifiable"]) == (
            strict, flexible, wrong, decided)
    assert [(s["correct_strict"], s["correct_flexible"], s["steps_verifiable"]) for s in samples[3:]] == [
        (False, False, 0)] * 3
    assert all(len(s["step_scores"]) == len(s["steps"]) for s in samples[3:])
    assert (res["strict"]["correct"], res["flexible"]["correct"]) == (1, 2)
    assert (res["strict"]["accuracy"], res["flexible"]["accuracy"]) == (1 / 6, 2 / 6)
    # the step error rate, pooled over problems: 1 wrong step of the 4 the verifier decided
    assert {k: res["step_errors"][k] for k in ("rate", "wrong", "verifiable", "problems")} == {
        "rate": 0.25, "wrong": 1, "verifiable": 4, "problems": 6}
    assert res["verifier_timeouts"] == 0


def test_maj_at_k_records_votes_and_recomputes(tiny, gsm8k_like, tmp_path):
    engine = HFEngine(*tiny)
    task = load_task("gsm8k")
    problems = load_problems(task, data_file=str(gsm8k_like), limit=3)
    summary, records = evaluate(engine, task, problems, max_new_tokens=6, batch_size=8,
                                decoding=Decoding.parse("maj@3", seed=1))
    write_eval(tmp_path, summary, records)
    samples = read_jsonl(tmp_path / "samples.jsonl")
    for s in samples:
        assert len(s["candidates"]) == 3 and set(s["votes"]) == {"strict", "flexible"}
        assert sum(v["count"] for v in s["votes"]["flexible"]) == sum(c["pred_flexible"] is not None
                                                                      for c in s["candidates"])
        assert s["completion"] == s["candidates"][s["chosen"]]["completion"]
    counts = _recompute(task, samples)
    assert counts["flexible"] == summary["flexible"]["correct"]
    assert summary["protocol"]["decoding"] == {"name": "maj@3", "mode": "maj", "k": 3, "temperature": 0.7,
                                               "top_p": 0.95, "seed": 1}


def test_best_of_n_keeps_the_highest_process_reward(tiny, gsm8k_like):
    engine = HFEngine(*tiny)
    task = load_task("gsm8k")
    problems = load_problems(task, data_file=str(gsm8k_like), limit=3)
    dec = Decoding.parse("best-of-3", aggregate="mean")
    summary, records = evaluate(engine, task, problems, max_new_tokens=8, batch_size=8, judge=LengthJudge(),
                                decoding=dec)
    for r in records:
        rewards = [c["process_reward"] for c in r.candidates]
        assert len(rewards) == 3 and r.process_reward == max(rewards)
        assert r.chosen == rewards.index(max(rewards))  # ties go to the lowest index
        assert r.step_scores == r.candidates[r.chosen]["step_scores"]
        assert r.process_reward == pytest.approx(sum(r.step_scores) / len(r.step_scores))
    assert summary["protocol"]["judge"]["aggregate"] == "mean"
    with pytest.raises(ConfigError, match="needs a judge"):
        evaluate(engine, task, problems, max_new_tokens=4, decoding=dec)


def test_beam_search_keeps_top_beams_by_process_reward(tiny, gsm8k_like, tmp_path):
    engine = HFEngine(*tiny)
    task = load_task("gsm8k")
    problems = load_problems(task, data_file=str(gsm8k_like), limit=2)
    dec = Decoding.parse("beam", beam_width=2, beam_expand=3, max_steps=3, max_step_tokens=6)
    summary, records = evaluate(engine, task, problems, batch_size=16, judge=LengthJudge(), decoding=dec)
    write_eval(tmp_path, summary, records)
    for r in read_jsonl(tmp_path / "samples.jsonl"):
        assert 1 <= len(r["steps"]) <= 3 and len(r["step_scores"]) == len(r["steps"])
        assert "\n".join(s["text"] for s in r["steps"]) == r["completion"]  # a step may hold newlines
        assert all(r["completion"][s["start"]:s["end"]] == s["text"] for s in r["steps"])
        assert r["steps"][0]["text"].startswith("Step 1: ")
        for rnd in r["search"]:
            kept = [c for c in rnd["candidates"] if c["kept"]]
            dropped = [c for c in rnd["candidates"] if not c["kept"]]
            assert 1 <= len(kept) <= 2
            assert all(k["process_reward"] >= d["process_reward"] for k in kept for d in dropped)
        assert r["process_reward"] == pytest.approx(min(r["step_scores"]))
        final = [c for c in r["candidates"] if c["final"]] or r["candidates"]  # ended beams; final answers first
        assert r["process_reward"] == max(c["process_reward"] for c in final)
    assert summary["protocol"]["decoding"]["mode"] == "beam"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("match", {"kind": "fuzzy"}, "match.kind"), ("match", {"target": "gold"}, "match.target"),
     ("num_fewshot", "two", "num_fewshot"), ("max_new_tokens", 0, "max_new_tokens"),
     ("extractors", {"strict": "presrm_strict"}, "exactly 'strict' and 'flexible'"),
     ("fewshot", {"target": "steps"}, "needs paths or hf_dataset"), ("prompt_style", "x", "not a task setting")],
)
def test_task_protocol_fields_are_validated(tmp_path, key, value, message):
    raw = yaml.safe_load(open(load_task("gsm8k").source_file))
    raw[key] = value
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_task(str(tmp_path / "t.yaml"))


def test_protocol_is_json():
    p = json.loads(json.dumps(load_task("gsm8k").with_shots(3).protocol()))
    assert p["shots"] == 3 and p["fewshot"]["seed"] == 1234 and len(p["prompt_sha256"]) == 64
