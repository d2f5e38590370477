"""The one sandboxed Jinja environment: every shipped prompt renders as before; a template that reaches past
its variables is a one-line error naming its file (exit 2 from the CLI)."""

from __future__ import annotations

import jinja2
import pytest
import yaml

from presrm.cli import main
from presrm.data import REPO_TASKS, load_task
from presrm.errors import ConfigError
from presrm.judges.common import PROMPTS, load_template
from presrm.templating import compile_template

# Fixed inputs, awkward ones included: braces and Jinja syntax in the text, markup, unicode, blank lines.
QUESTIONS = ["Tom has 3 apples and buys 4. How many?", "What is {{ 2 + 2 }}? {% raw %} <b>&amp;</b> {#",
             "Café: 5 € each.\n\nHow much for 3?\n", ""]
PREVIOUS = [[], ["Step 1: 3 + 4 = 7"], ["Step 1: {{ x }}", "Step 2: <i>7</i>\n"]]
HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ question.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ [].append(1) }}",
]


@pytest.mark.parametrize("path", sorted(REPO_TASKS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_task_prompt_renders_as_a_plain_environment_did(path):
    task = load_task(str(path))
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    for q in QUESTIONS:
        assert task.template().render(question=q) == plain.from_string(task.prompt).render(question=q)


@pytest.mark.parametrize("path", sorted(PROMPTS.glob("*.jinja")), ids=lambda p: p.stem)
def test_every_judge_template_renders_as_a_plain_environment_did(path):
    template = load_template(None, path.stem)
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    old = plain.from_string(path.read_text(encoding="utf-8").strip())
    for q in QUESTIONS:
        for previous in PREVIOUS:
            values = dict(question=q, previous=previous, step="Step 2: 7 * 2 = 14", a="Step 2: {{ a }}",
                          b="Step 2: <b>", solution="Step 1: 3 + 4 = 7\nThe answer is 7.")
            assert template.render(**values) == old.render(**values)


@pytest.mark.parametrize("source", HOSTILE)
def test_a_template_sees_its_variables_and_nothing_behind_them(source):
    with pytest.raises(ConfigError, match=r"^t\.jinja: .*(unsafe|undefined)") as e:
        compile_template(source, "t.jinja").render(question="q", previous=[])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("source", HOSTILE[:3])
def test_a_task_prompt_reaching_past_its_variables_fails_when_the_task_loads(tmp_path, source):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "version": 1, "prompt": "Problem: {{ question }} " + source}))
    with pytest.raises(ConfigError, match=f"^{path}: key 'prompt': .*unsafe"):
        load_task(str(path))


def test_a_judge_template_reaching_past_its_variables_fails_when_it_loads(tmp_path):
    path = tmp_path / "judge.jinja"
    path.write_text("{{ question }} {{ step }} {{ cycler.__init__.__globals__.os.system('true') }}")
    with pytest.raises(ConfigError, match=f"^judge template {path}: .*unsafe"):
        load_template(str(path), "pointwise", question="<QUESTION>", previous=["<PREVIOUS>"], step="<STEP>")


def test_a_task_prompt_without_syntax_names_the_key_and_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nversion: 1\nprompt: \"Problem:\\n{{ question }\"\n")
    with pytest.raises(ConfigError, match=f"^{path}: key 'prompt', line 2: "):
        load_task(str(path))


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_exits_2_on_a_hostile_task_prompt_or_judge_template(tmp_path, tiny_model_dir, gsm8k_like, capsys):
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nversion: 1\nprompt: \"{{ question }} {{ ''.__class__.__mro__ }}\"\n")
    judge = tmp_path / "judge.jinja"
    judge.write_text("{{ question }} {{ step }} {{ lipsum.__globals__['os'] }}")
    common = ["eval", "--model", str(tiny_model_dir), "--data-file", str(gsm8k_like), "--device", "cpu",
              "--limit", "1", "--output-dir", str(tmp_path / "out")]
    assert main([*common, "--task", str(task)]) == 2
    assert f"{task}: key 'prompt': access to attribute '__class__'" in _one_error_line(capsys)
    assert main([*common, "--judge", "pointwise", "--judge-template", str(judge)]) == 2
    assert f"judge template {judge}: " in _one_error_line(capsys)
    assert not any((tmp_path / "out").rglob("*"))  # failed before any decoding
