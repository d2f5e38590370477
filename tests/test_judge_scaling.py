"""judge.samples: k sampled judgments and a vote, for the judges that write (generative, outcome).

With k = 1 a judge decodes one greedy judgment, as before (the paper). With k > 1 it samples k at
judge.temperature with the run's seed in one engine call, reads each, and votes over the parseable ones: a
generative order's p_a is the share naming A (a split vote ties, as two orders that disagree do), an outcome
score the mean of the read scores. An unreadable judgment is left out of the vote, never read as a verdict.
The SPCT-style template (principles, critique, verdict) ships beside the paper's as ``generative_spct``.
"""

from __future__ import annotations

import re

import pytest

from presrm.config import JudgeConfig, load_config
from presrm.engines.base import EngineBase
from presrm.errors import ConfigError
from presrm.judge import make_judge_from_config
from presrm.judges.common import PairToJudge, SolutionToJudge, load_template
from presrm.judges.generative import GenerativeJudge
from presrm.judges.outcome import OutcomeJudge

Q = "Tom has 3 apples and buys 4. How many?"


class VotingEngine(EngineBase):
    """Sample i of a prompt is ``replies(prompt)[i % len]``; every generate call is recorded."""

    name = "voting"

    def __init__(self, tok, replies):
        self.tok, self.replies, self.calls = tok, replies, []

    def _generate(self, prompts, *, max_new_tokens, n, temperature, top_p, stop, seed, batch_size, desc):
        self.calls.append({"prompts": len(prompts), "n": n, "temperature": temperature, "seed": seed})
        return [[self.replies(p)[i % len(self.replies(p))] for i in range(n)] for p in prompts]


def _shown_first(prompt: str) -> str:
    return re.search(r"\[The Start of Step A\]\n(.*?)\n", prompt).group(1)


@pytest.mark.parametrize(("votes", "p_a", "winner"), [
    (["[[A]]", "[[A]]", "[[A]]", "[[B]]"], 0.75, "A"),  # 3 of 4 name the good step, in both orders
    (["[[A]]", "no verdict", "no verdict", "no verdict"], 1.0, "A"),  # unreadable judgments are left out
    (["[[A]]", "[[B]]", "[[A]]", "[[B]]"], 0.5, "tie"),  # a split vote is a tie
    (["no verdict"] * 4, None, None),  # nothing readable: no verdict at all
])
def test_generative_votes_over_sampled_judgments(tiny, votes, p_a, winner):
    """Replies name the *good* step (q=9) by the letter it is shown under, so both orders agree."""
    _, tok = tiny

    def replies(prompt):
        good_first = _shown_first(prompt).endswith("q=9")
        flip = {"[[A]]": "[[B]]", "[[B]]": "[[A]]"}
        return [v if good_first else flip.get(v, v) for v in votes]

    engine = VotingEngine(tok, replies)
    judge = GenerativeJudge(engine, samples=4, temperature=0.9, seed=7)
    v = judge.compare([PairToJudge(Q, (), "Step 1: q=9", "Step 1: q=1")])[0]
    assert engine.calls == [{"prompts": 2, "n": 4, "temperature": 0.9, "seed": 7}]  # both orders, one call
    assert v.winner == winner and (v.p_a == pytest.approx(p_a) if p_a is not None else v.p_a is None)
    assert [len(o["votes"]) for o in v.orders] == [4, 4]
    assert all(o["raw"].count("\n\n") == 3 for o in v.orders)  # every sampled judgment kept


def test_orders_that_disagree_still_tie(tiny):
    """Pure position bias survives voting: every sample names the step shown first."""
    _, tok = tiny
    judge = GenerativeJudge(VotingEngine(tok, lambda p: ["[[A]]"]), samples=3)
    v = judge.compare([PairToJudge(Q, (), "Step 1: q=9", "Step 1: q=1")])[0]
    assert v.winner == "tie" and [o["p_a"] for o in v.orders] == [1.0, 0.0]


def test_one_sample_is_the_greedy_judgment(tiny):
    _, tok = tiny
    engine = VotingEngine(tok, lambda p: ["[[A]]", "[[B]]"])
    v = GenerativeJudge(engine, both_orders=False).compare([PairToJudge(Q, (), "a", "b")])[0]
    assert engine.calls == [{"prompts": 1, "n": 1, "temperature": 0.0, "seed": 0}]
    assert v.winner == "A" and "votes" not in v.orders[0]


def test_outcome_judge_averages_the_read_scores(tiny):
    _, tok = tiny
    engine = VotingEngine(tok, lambda p: ["Score: 4", "Score: 2", "no score", "Score: 5"])
    judge = OutcomeJudge(engine, samples=4, temperature=1.0, seed=3)
    assert judge.score([SolutionToJudge(Q, "Step 1: 3 + 4 = 7. The answer is 7.")]) == [pytest.approx(11 / 15)]
    assert judge.last_verdicts[0].points == pytest.approx(11 / 3) and engine.calls[0]["n"] == 4
    none = OutcomeJudge(VotingEngine(tok, lambda p: ["no score"]), samples=2)
    assert none.score([SolutionToJudge(Q, "x")]) == [None]


def test_config_reaches_the_judges(tiny):
    _, tok = tiny
    engine = VotingEngine(tok, lambda p: ["[[A]]"])
    cfg = JudgeConfig(mode="generative", samples=8, temperature=1.2)
    judge = make_judge_from_config(cfg, engine, seed=5)
    assert (judge.samples, judge.temperature, judge.seed) == (8, 1.2, 5)
    outcome = make_judge_from_config(cfg, engine, mode="outcome", seed=5)
    assert (outcome.samples, outcome.temperature, outcome.seed) == (8, 1.2, 5)
    for bad in ("judge.samples=0", "judge.temperature=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
            load_config(None, [bad])


def test_spct_template_ships_beside_the_papers():
    """Principles, then a critique, then the verdict: the built-in ``generative_spct`` by name."""
    template = load_template("generative_spct", "generative", question="<Q>", previous=["<P>"], a="<A>", b="<B>")
    text = template.render(question="<Q>", previous=["<P>"], a="<A>", b="<B>")
    assert text.index("Principles") < text.index("Critique") < text.index("Verdict") < text.index("[[A]]")
    assert load_config(None, ["judge.mode=generative", "judge.generative_template=generative_spct"])


def test_judge_eval_scaling_curve(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    """presrm judge-eval --samples-curve 1,2: the judge measured again at each judge.samples, on the same set;
    results.json records the curve and the command line that reproduces it."""
    from tests.test_judge_eval import _read, _run_cli

    out = tmp_path / "curve"
    assert _run_cli(tiny_model_dir, gsm8k_like, out, "generative", "--max-new-tokens", "3", "--temperature", "0.9",
                    "--samples-curve", "1,2") == 0
    res, samples = _read(out)
    assert [p["samples"] for p in res["scaling"]] == [1, 2]
    assert all(p["pairwise"]["n"] == res["pairwise"]["n"] == len(samples) for p in res["scaling"])
    assert res["scaling"][0]["pairwise"] == res["pairwise"]  # k = 1 is the judge as measured (greedy)
    assert "--samples-curve 1,2" in res["protocol"]["command"] and "--temperature 0.9" in res["protocol"]["command"]
    assert res["protocol"]["judge_options"]["temperature"] == 0.9
    assert "samples 2: pairwise accuracy" in capsys.readouterr().out


def test_samples_curve_needs_a_judge_that_writes(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    from tests.test_judge_eval import _run_cli

    assert _run_cli(tiny_model_dir, gsm8k_like, tmp_path / "o", "pairwise", "--samples-curve", "1,4") == 2
    assert "--samples-curve needs a judge that writes" in capsys.readouterr().err
