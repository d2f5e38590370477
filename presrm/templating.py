"""The one Jinja environment that renders task prompts and judge templates.

A task's ``prompt`` and a judge template (``presrm/prompts/*.jinja`` or a user's file) are text that may
come with a downloaded recipe, so they render in jinja2's ``ImmutableSandboxedEnvironment``: a template
sees the variables it is given and nothing behind them. Reaching for Python internals
(``{{ ''.__class__.__mro__ }}``), a method that changes a value, or a global that is not there fails.
``StrictUndefined``: an unknown variable is an error, not an empty string. No autoescape (prompts are
not HTML); a template's final newline is kept.

Every failure, when the template compiles or when it renders, is a one-line :class:`ConfigError`
naming where the template came from (a file, or a task file and its key).

>>> compile_template("Problem: {{ question }}", "tasks/x.yaml: key 'prompt'").render(question="1+1?")
'Problem: 1+1?'
>>> compile_template("{{ ''.__class__.__mro__ }}", "t.jinja").render()
Traceback (most recent call last):
...
presrm.errors.ConfigError: t.jinja: access to attribute '__class__' of 'str' object is unsafe.
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from presrm.errors import ConfigError

__all__ = ["ENV", "Template", "compile_template"]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Template(jinja2.Template):
    """A template that knows where it came from (``where``); rendering it fails with a ConfigError naming that."""

    where = "template"

    def render(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().render(*args, **kwargs)
        # Rendering plain strings and lists, any exception (a sandbox refusal, an undefined variable,
        # ``{{ 1 / 0 }}``, ``{{ question + 1 }}``) is the template's fault: report it as such.
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"{self.where}: {_one_line(e)}") from e


class _Environment(ImmutableSandboxedEnvironment):
    template_class = Template


ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
"""The environment: sandboxed and immutable, strict about undefined names, no autoescape, final newline kept."""


@functools.lru_cache(maxsize=256)
def compile_template(source: str, where: str) -> Template:
    """``source`` compiled in :data:`ENV`; ``where`` (a file, or a file and key) names it in every error.

    Compiled once per (source, where): a task prompt is rendered for every problem and step.
    """
    try:
        template = typing.cast(Template, ENV.from_string(source))
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{where}, line {e.lineno}: {_one_line(e.message or e)}") from e
    template.where = where
    return template
