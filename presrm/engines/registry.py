"""The engine registry: every inference engine, once. Importing it imports no torch and no vLLM, so
``presrm --help`` stays fast.

One :class:`EngineSpec` per engine names its class (loaded on first use by :func:`presrm.engines.open_engine`),
how to tell whether it can run here and why not, and what it supports: one model split over several GPUs
(``tensor_parallel``: the config key of the GPUs per model) and, under ``accelerate launch``, one engine per
rank built together by every rank (``collective``). Everything that lists engines reads this table: config
validation, the CLI's ``--engine`` choices (eval, judge-eval), judge-eval's checks, ``EngineOptions``,
``open_engine`` and the run's checks before its first stage (:func:`check_runnable`). A new engine is one
:func:`register` call (or one entry below) plus its class, which has a ``name`` and a classmethod
``load(spec, options)``.

>>> names()
['hf', 'vllm']
>>> spec("vllm").tensor_parallel, spec("hf").collective
('vllm.tensor_parallel_size', False)
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from presrm.errors import ConfigError
from presrm.registry import Table

DEFAULT = "hf"
"""The engine a recipe or a command uses when it names none."""


def _target(what: str, name: str, target: str) -> tuple[str, str]:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"engine {name!r}: {what} must be 'module:name', got {target!r}")
    return module, attr


@dataclass(frozen=True)
class EngineSpec:
    """One inference engine.

    ``target``: ``"module:Class"``, imported by :meth:`load`; the class has ``name`` and a classmethod
    ``load(spec, options)``. ``summary``: a few words for ``--help``. ``available``: ``"module:function"``
    returning None when the engine can run here, else why not (None: it always can). ``tensor_parallel``:
    the config key (``section.key``) of how many GPUs hold one model, whose ranks work together (None:
    one model per process). ``collective``: under ``accelerate launch`` every rank builds its own engine
    in a step all ranks take together, so they open and close engines in the same order
    (:class:`presrm.engines.holder.EngineHolder`).
    """

    name: str
    target: str
    summary: str
    available: str | None = None
    tensor_parallel: str | None = None
    collective: bool = False

    def __post_init__(self) -> None:
        _target("target", self.name, self.target)
        if self.available is not None:
            _target("available", self.name, self.available)
        if self.tensor_parallel is not None and "." not in self.tensor_parallel:
            raise ValueError(f"engine {self.name!r}: tensor_parallel must be a config key 'section.key', "
                             f"got {self.tensor_parallel!r}")

    def load(self) -> type:
        """The engine class (imported now); its ``name`` must agree with this entry."""
        module, attr = _target("target", self.name, self.target)
        cls = getattr(importlib.import_module(module), attr)
        if getattr(cls, "name", None) != self.name:
            raise TypeError(f"{self.target} has name={getattr(cls, 'name', None)!r}; the registry says {self.name!r}")
        return cls

    def unavailable(self) -> str | None:
        """None when the engine can run here; otherwise why not (what to install)."""
        if self.available is None:
            return None
        module, attr = _target("available", self.name, self.available)
        return getattr(importlib.import_module(module), attr)()

    def group_size(self, cfg: Any) -> int:
        """How many processes hold one model together under ``cfg`` (a RunConfig): 1 without tensor parallelism."""
        if self.tensor_parallel is None:
            return 1
        return functools.reduce(getattr, self.tensor_parallel.split("."), cfg)


_TABLE: Table[EngineSpec] = Table("engine", "name")
register, unregister, spec, names = _TABLE.register, _TABLE.unregister, _TABLE.spec, _TABLE.names
"""Add an engine (``replace`` to redefine one), remove one (tests), the entry of an engine (ConfigError for an
unknown one), every engine in registration order."""


def describe() -> str:
    """Every engine with its summary, for ``--engine``'s help: ``hf (...) or vllm (...)``."""
    return " or ".join(f"{n} ({s.summary})" for n, s in _TABLE.items())


def check_runnable(cfg: Any, *, processes: int) -> None:
    """Refuse, in one line, a recipe whose ``engine`` cannot run here: it cannot be imported (say what to
    install), or its ``tensor_parallel`` GPUs per model do not divide the ``processes`` of an accelerate launch."""
    entry = spec(cfg.engine)
    reason = entry.unavailable()
    if reason:
        raise ConfigError(f"engine: {entry.name} cannot run here: {reason}; or set engine: {DEFAULT}")
    size = entry.group_size(cfg)
    if processes > 1 and processes % size:
        raise ConfigError(f"key {entry.tensor_parallel!r}: {size} GPUs per model do not divide the {processes} "
                          "processes of this accelerate launch")


register(EngineSpec(
    "hf", "presrm.engines.hf:HFEngine", "transformers"))
register(EngineSpec(
    "vllm", "presrm.engines.vllm:VLLMEngine", "needs vLLM installed; docs/engines.md",
    available="presrm.engines.vllm:vllm_available", tensor_parallel="vllm.tensor_parallel_size", collective=True))
