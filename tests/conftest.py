"""Shared fixtures: a tiny random causal LM and tokenizer built in-process (no downloads)."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Step 1: Janet has 16 - 3 - 4 = 9 eggs. Step 2: She makes 9 * 2 = 18 dollars. The answer is 18.",
    "Solve the following math problem step by step. Is the step to check correct? Answer Yes or No.",
    "Problem: Tom buys 3 apples for $2 each. How much does he pay? Previous steps: Step to check:",
    "0 1 2 3 4 5 6 7 8 9 + - * / = % $ . , : ? ! ( ) Yes No yes no First Next Finally Then total",
]
SYNTHETIC = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 6 pens. How many pens are in 5 boxes?", "6 * 5 = <<6*5=30>>30\n#### 30"),
    ("Sam had 20 dollars and spent 8. How much is left?", "20 - 8 = <<20-8=12>>12\n#### 12"),
    ("Ann reads 10 pages a day for 3 days. How many pages?", "10 * 3 = <<10*3=30>>30\n#### 30"),
    ("A class of 24 splits into 4 teams. How many per team?", "24 / 4 = <<24/4=6>>6\n#### 6"),
    ("Bo has 9 cards and gives away 2. How many remain?", "9 - 2 = <<9-2=7>>7\n#### 7"),
]


def parser_refuses(capsys, argv: list[str], message: str) -> None:
    """The CLI's parser refuses ``argv`` (argparse's exit) with ``message`` on stderr."""
    from presrm.cli import make_parser

    with pytest.raises(SystemExit):
        make_parser().parse_args(argv)
    assert message in capsys.readouterr().err


def build_tiny_model(folder: Path, *, hidden_size: int = 32) -> Path:
    """A 2-layer Llama (2 heads of ``hidden_size / 2``) with a 400-token byte-level BPE tokenizer and ChatML.

    vLLM's CPU attention needs a head size of at least 32 (``hidden_size=64``); the default is smaller still.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, additional_special_tokens=specials[1:])
    tok.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """``(model, tokenizer)`` loaded through presrm's own loader, in fp32 on CPU."""
    from presrm.models import load_model

    return load_model(str(tiny_model_dir), device="cpu", precision="fp32")


@pytest.fixture()
def gsm8k_like(tmp_path) -> Path:
    """A small JSONL file in GSM8K's format (synthetic problems)."""
    import json

    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in SYNTHETIC))
    return path


# --- presrm's own deprecated calls fail the suite -------------------------------------------------------------
# A FutureWarning or DeprecationWarning fails the test when presrm made the deprecated call: walking out from the
# code that warned, past the warning library's own frames, torch's module dispatch (``model(...)`` reaching a
# deprecated ``forward`` keyword) and constructors (a TRL config's ``__post_init__`` handing presrm's argument
# to transformers'), the first frame is presrm's. Warnings that libraries raise about their own calls pass, and
# so do those of tests' direct library calls. (pytest's ``filterwarnings`` matches only the module a warning
# names, and a deprecated keyword names torch's dispatch or the library, never the caller.)
PRESRM_DIR = str(Path(__file__).resolve().parents[1] / "presrm") + os.sep
_TRANSPARENT = ("__init__", "__post_init__", "_call_impl", "_wrapped_call_impl")
_LIBRARY_OWN = [  # deprecations a library raises on a call of its own that presrm reaches (one reason each)
    re.compile(r"`is_gradient_checkpointing` is deprecated"),  # TRL's trainer reads it (trl/models/utils.py)
]


def deprecated_call_site(frame) -> str | None:
    """``file:line`` of presrm's call that reached the warning raised in ``frame``, or None if not presrm's."""
    pkg = frame.f_globals.get("__name__", "").split(".")[0]
    f = frame
    while f is not None:
        name = f.f_globals.get("__name__", "")
        if f.f_code.co_filename.startswith(PRESRM_DIR):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        if not (name.split(".")[0] == pkg or f.f_code.co_name in _TRANSPARENT or f.f_code.co_filename == "<string>"):
            return None  # another library (or a test) made the call
        f = f.f_back
    return None


@pytest.fixture(autouse=True)
def _presrm_deprecations_fail(monkeypatch):
    shown = warnings._showwarnmsg  # what the C warn calls for a warning that its filters let through

    def check(msg):
        if issubclass(msg.category, (DeprecationWarning, FutureWarning)) and not any(
                p.search(str(msg.message)) for p in _LIBRARY_OWN):
            site = deprecated_call_site(sys._getframe(1))
            if site is not None:
                pytest.fail(f"presrm made a deprecated call at {site}: {msg.category.__name__}: {msg.message}")
        shown(msg)

    monkeypatch.setattr(warnings, "_showwarnmsg", check)
