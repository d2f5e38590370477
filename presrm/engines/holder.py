"""A run's engine lifecycle: the one open inference engine its stages share, opened and closed together on
every rank when engines are collective.

:data:`RUN_ENGINE` is the run's :class:`EngineHolder`; a stage asks for an engine with :func:`open_run_engine`
(the recipe's engine holding model M_k), the loop sets the holder up once per run (:meth:`EngineHolder.start`)
and releases it before every training stage and when the run ends (:meth:`EngineHolder.release`).
"""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

from presrm import dist
from presrm.engines import registry

if TYPE_CHECKING:
    from presrm.config import RunConfig


def inference_precision(cfg: RunConfig, *, search: bool = False) -> str:
    """Precision for generation and judging: fp32 for a deterministic search, else the loader's ``auto``.

    ``auto`` is bf16 where the hardware computes it natively (a bf16 GPU, a CPU
    measured faster in bf16: ``presrm.models.bf16_probe``) and fp32
    elsewhere (``presrm.models.compute_dtype``); bf16 batched sampling depends on padding, so
    ``search.deterministic`` asks for fp32.
    """
    return "fp32" if search and cfg.search.deterministic else "auto"


class EngineHolder:
    """The run's one open inference engine, kept between stages that read the same model.

    Loading a model into vLLM takes minutes on a small CPU, and a run reads each model M_k in several
    stages in a row (its evaluation, its judge evaluation, the next iteration's search). The holder
    keeps the engine open while the model and its settings stay the same, and closes it when another
    model is asked for, before every training stage (:meth:`release`) and when the run ends. A stage
    that samples gets a fresh engine when the open one has already drawn samples from a random state
    shared across requests (vLLM on CPU: ``Engine.sampled_from_shared_state``), so a stage's samples
    are the same whether the run went straight through or resumed there.

    Under ``accelerate launch`` with an engine the registry marks ``collective`` (vLLM: one engine per rank,
    built with ``distributed_executor_backend="external_launcher"``) building one takes every rank, so
    every rank must open and close the same engines in the same order. Rank 0 decides each change and
    broadcasts it; in a stage that only rank 0 works on, the other ranks :meth:`follow` its changes until
    rank 0 says the stage is over (:meth:`stop_followers`).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.engine = None
        self.collective = False

    def start(self, cfg: RunConfig) -> None:
        """Set the holder up for a run of ``cfg`` (after ``dist.init``): collective engines when the recipe's
        engine builds one per rank and this is an accelerate launch, and the ranks that hold one model together
        (``dist.set_group_size``: the engine's tensor parallel size)."""
        entry = registry.spec(cfg.engine)
        self.collective = entry.collective and dist.world_size() > 1
        dist.set_group_size(entry.group_size(cfg) if self.collective else 1)

    @contextlib.contextmanager
    def use(self, cfg: RunConfig, spec: str, *, search: bool = False, samples: bool = False):
        from presrm.engines import EngineOptions

        options = EngineOptions(name=cfg.engine, device=cfg.device, precision=inference_precision(cfg, search=search),
                                seed=cfg.seed, vllm=cfg.vllm)
        key = (spec, options)
        stale = samples and self.engine is not None and self.engine.sampled_from_shared_state
        reopen = self.key != key or stale
        if self.collective:  # rank 0's choice holds on every rank (a stale engine may be stale on one rank only)
            key, reopen = dist.broadcast((key, reopen))
        if reopen:
            self._open(key)
        yield self.engine

    def _open(self, key: tuple) -> None:
        from presrm.engines import open_engine

        self.release()
        self.engine, self.key = open_engine(*key), key

    def follow(self) -> None:
        """On a rank > 0 while rank 0 runs a stage alone: open what rank 0 opens, until it says the stage is over.
        Nothing to do when engines are not collective."""
        if not self.collective:
            return
        while (message := dist.broadcast(None)) is not None:
            key, reopen = message
            if reopen:
                self._open(key)

    def stop_followers(self) -> None:
        """On rank 0 after a stage it ran alone: the other ranks stop following (see :meth:`follow`)."""
        if self.collective:
            dist.broadcast(None)

    def release(self) -> None:
        """Close the open engine (its memory freed) before training loads a model, or at the end of the run."""
        engine, self.engine, self.key = self.engine, None, None
        if engine is not None:
            engine.close()
            gc.collect()


RUN_ENGINE = EngineHolder()
"""The engine the current run's stages share (one run at a time per process)."""


def open_run_engine(cfg: RunConfig, spec: str, *, search: bool = False, samples: bool = False):
    """The inference engine the recipe asks for (``engine``) holding model ``spec`` (M_k), as a context manager:
    the run's shared engine (:data:`RUN_ENGINE`), opened when the model changes."""
    return RUN_ENGINE.use(cfg, spec, search=search, samples=samples)
