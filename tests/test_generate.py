import pytest

from presrm.data import load_task
from presrm.engines.base import cut_at_stop
from presrm.engines.hf_generate import generate
from presrm.generate import render_chat, step_prompter
from presrm.grading import build_prompt


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("a b\nStep 2: c", ["\nStep "], ("a b", True)),
        ("no stop here", ["\nStep "], ("no stop here", False)),
        ("x<|im_end|>y\nStep 3", ["\nStep ", "<|im_end|>"], ("x", True)),  # earliest stop wins
        ("abc", [], ("abc", False)),
        ("abc", [""], ("abc", False)),  # an empty stop string is ignored
    ],
)
def test_cut_at_stop(text, stop, expected):
    assert cut_at_stop(text, stop) == expected


def test_step_prompt_is_evaluations_prompt_then_the_steps(tiny):
    _, tok = tiny
    task = load_task("gsm8k")
    p = step_prompter(tok, task)("What is 2 + 2?", [], 1)
    assert p == build_prompt(tok, task, "What is 2 + 2?")  # gsm8k's response prefix is "Step 1:"
    assert p.startswith("<|im_start|>user\n")
    assert "Problem: What is 2 + 2?" in p
    assert p.endswith("<|im_start|>assistant\nStep 1:")
    assert step_prompter(tok, task)("Q", ["Step 1: x"], 2).endswith("assistant\nStep 1: x\nStep 2:")


def test_render_chat_without_template():
    class NoTemplate:
        chat_template = None

    assert render_chat(NoTemplate(), "hello", "Step 1:") == "hello\n\nStep 1:"


def test_generate_shapes_order_and_stops(tiny):
    model, tok = tiny
    prompts = [render_chat(tok, q) for q in ("a", "a much longer question with more words", "mid length")]
    out = generate(model, tok, prompts, max_new_tokens=12, batch_size=2, num_return_sequences=3,
                   temperature=1.0, stop=["Step"], seed=1)
    assert len(out) == 3 and all(len(o) == 3 for o in out)
    assert all("Step" not in s for o in out for s in o)


def test_generate_is_reproducible_and_greedy_is_batch_invariant(tiny):
    model, tok = tiny
    prompts = [render_chat(tok, q) for q in ("one", "two two", "three three three")]
    kw = dict(max_new_tokens=8, temperature=0.8, num_return_sequences=2, seed=7)
    assert generate(model, tok, prompts, batch_size=4, **kw) == generate(model, tok, prompts, batch_size=4, **kw)
    # fp32 greedy: left padding must not change the text
    single = [generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    assert single == batched
