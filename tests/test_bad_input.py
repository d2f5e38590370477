"""Bad input to every command, as a new user would give it: one table, one row per mistake.

Each row runs the command in-process and asserts: exit code 2, exactly one line on stderr that names the
file (and line) or the key at fault, no traceback, and every file that existed before is unchanged (nothing
already written is lost or overwritten). Hostile text, which is no error, is at the end: it must be
handled, in bounded time, by verify, the segmenter and the judge-reply parsers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from presrm.cli import main, make_parser
from tests.report_fixtures import make_eval_dir, make_run_dir

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
BAR_LINE = re.compile(r"\d+/\d+ \[[^\]]*\]")  # a progress bar's redraw (train draws its stage bar first)


@dataclass
class Ctx:
    """Every file the table's rows point at, built fresh in the test's folder."""

    tmp: Path
    model: str

    def p(self, name: str) -> str:
        return str(self.tmp / name)

    def train(self, *overrides: str) -> list[str]:
        """``presrm train`` on the tiny model and the good data, plus ``overrides``."""
        return ["train", "--config", self.p("recipe.yaml"), f"model={self.model}", f"output_dir={self.p('runs')}",
                "name=t", "device=cpu", f"search.data_file={self.p('good.jsonl')}",
                f"eval.data_file={self.p('good.jsonl')}", "eval.limit=1", *overrides]

    def eval(self, *args: str, out: str = "out") -> list[str]:
        """``presrm eval`` on the tiny model and the good data; later flags win over these."""
        return ["eval", "--model", self.model, "--data-file", self.p("good.jsonl"), "--device", "cpu",
                "--output-dir", self.p(out), *args]


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _unwritable(tmp: Path) -> Path:
    """A folder path nobody can create or write, also for root (a chmod does not stop root)."""
    if os.geteuid() != 0:
        locked = tmp / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "out"
    for base in (Path("/sys/fs"), Path("/proc")):
        try:
            (base / "presrm-probe").mkdir()
        except OSError:
            return base / "presrm-out"
        (base / "presrm-probe").rmdir()
    pytest.skip("no unwritable folder on this machine")


@pytest.fixture()
def ctx(tmp_path, tiny_model_dir) -> Ctx:
    t = tmp_path
    good = [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
            {"question": "Sam had 20 dollars and spent 8. How much is left?", "answer": "20 - 8 = 12\n#### 12"}]
    _jsonl(t / "good.jsonl", good)
    _jsonl(t / "bad_json.jsonl", [good[0], "{not json"])
    _jsonl(t / "not_object.jsonl", ["[1, 2]"])
    _jsonl(t / "no_answer.jsonl", [{"question": "q?"}])
    _jsonl(t / "no_hashes.jsonl", [{"question": "q?", "answer": "5"}])
    (t / "empty.jsonl").write_text("")
    (t / "latin1.jsonl").write_bytes(json.dumps(good[0]).encode() + b"\n" + b'{"question": "caf\xe9?"}\n')
    (t / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (t / "verify_latin1.jsonl").write_bytes(b'{"completion": "7", "answer": "7"}\n{"completion": "caf\xe9"}\n')
    (t / "recipe.yaml").write_text("search:\n  k: 2\n")
    (t / "bad_yaml.yaml").write_text("search: [k: 2\n")
    (t / "list.yaml").write_text("- 1\n- 2\n")
    (t / "unknown_key.yaml").write_text("search:\n  kk: 2\n")
    (t / "wrong_type.yaml").write_text("search:\n  k: many\n")
    (t / "float.yaml").write_text("train:\n  beta: 1e-x\n")
    (t / "task_unknown_key.yaml").write_text("name: t\nversion: 1\nprompt: '{{ question }}'\nfoo: 1\n")
    (t / "task_invalid.yaml").write_text("name: t\nprompt: [\n")
    (t / "task_no_prompt.yaml").write_text("name: t\nversion: 1\n")
    (t / "task_hub.yaml").write_text("name: hubonly\nversion: 1\nprompt: '{{ question }}'\n"
                                     "data:\n  hf_dataset: presrm-test/no-such-dataset\n")
    (t / "a_file").write_text("precious\n")
    (t / "broken.gguf").write_text("not a GGUF file")
    (t / "trunc.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (t / "no_config").mkdir()
    (t / "no_adapter").mkdir()
    make_run_dir(t / "run", problems=4, searched=2, iterations=1)
    (make_run_dir(t / "bad_config_run", problems=2, searched=1, iterations=1) / "config.yaml").write_text("a: [\n")
    make_eval_dir(t / "eval_a", problems=4)
    make_eval_dir(t / "eval_b", problems=3)
    partial = make_run_dir(t / "partial", problems=4, searched=2, iterations=1)
    with (partial / "iter_0" / "samples.jsonl").open("a") as f:
        f.write('{"id": "cut off by a crash", "steps": [\n')
    bad_results = make_eval_dir(t / "bad_results", problems=2)
    (bad_results / "results.json").write_text('{"n": 2,')
    (make_eval_dir(t / "no_samples", problems=2) / "samples.jsonl").unlink()
    with (make_eval_dir(t / "cut_samples", problems=4) / "samples.jsonl").open("a") as f:
        f.write('{"id": "gsm8k-test-4", "correct_str\n')
    (t / "report_blocked").mkdir()
    make_eval_dir(t / "report_blocked", problems=2)
    (t / "report_blocked" / "report.html").mkdir()
    existing = t / "runs" / "t"
    existing.mkdir(parents=True)
    (existing / "config.yaml").write_text("config: {name: t, search: {k: 3}}\n")
    (t / "runs" / "damaged").mkdir()
    (t / "runs" / "damaged" / "config.yaml").write_text("config: {name: [\n")
    _jsonl(t / "verify_bad.jsonl", [{"completion": "3 + 4 = 7", "answer": "7"}, "{oops"])
    _jsonl(t / "verify_no_key.jsonl", [{"answer": "7"}])
    _jsonl(t / "verify_not_str.jsonl", [{"completion": 7, "answer": "7"}])
    _jsonl(t / "verify_good.jsonl", [{"completion": "3 + 4 = 7\n#### 7", "answer": "7"}])
    return Ctx(t, str(tiny_model_dir))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


# (case id, argv, what the one error line must contain). ``c`` is the Ctx.
CASES = [
    # config files and overrides
    ("config: file missing", lambda c: ["config", "--config", c.p("nope.yaml")], lambda c: "nope.yaml: cannot read"),
    ("reproduce: file missing", lambda c: ["reproduce", "--config", c.p("nope.yaml"), "engine=hf"],
     lambda c: "nope.yaml: cannot read"),
    ("reproduce: unknown key", lambda c: ["reproduce", "--config", c.p("recipe.yaml"), "engine=hf", "serch.k=2"],
     lambda c: "key 'serch' is not a known setting"),
    ("reproduce: no M1 to start the arms from", lambda c: ["reproduce", "--config", c.p("recipe.yaml"), "engine=hf",
                                                          f"output_dir={c.p('runs')}"],
     lambda c: "reproduce needs a recipe that trains M1 (init.ift or init.eft)"),
    ("config: invalid YAML", lambda c: ["config", "--config", c.p("bad_yaml.yaml")],
     lambda c: "bad_yaml.yaml:2: invalid YAML (expected ',' or ']'"),
    ("config: not a mapping", lambda c: ["config", "--config", c.p("list.yaml")],
     lambda c: "list.yaml: expected a mapping"),
    ("config: unknown key in file", lambda c: ["config", "--config", c.p("unknown_key.yaml")],
     lambda c: "unknown_key.yaml: key 'search.kk'"),
    ("config: wrong type in file", lambda c: ["config", "--config", c.p("wrong_type.yaml")],
     lambda c: "wrong_type.yaml: key 'search.k'"),
    ("config: no float in file", lambda c: ["config", "--config", c.p("float.yaml")],
     lambda c: "float.yaml: key 'train.beta'"),
    ("config: recipe not UTF-8", lambda c: ["config", "--config", c.p("latin1.yaml")],
     lambda c: "latin1.yaml: not UTF-8 text"),
    ("config: override without =", lambda c: ["config", "search.k"], lambda c: "override 'search.k'"),
    ("config: unknown override", lambda c: ["config", "search.kk=2"], lambda c: "key 'search.kk'"),
    ("config: override of wrong type", lambda c: ["config", "train.beta=abc"], lambda c: "key 'train.beta'"),
    ("config: nan float", lambda c: ["config", "train.learning_rate=nan"], lambda c: "key 'train.learning_rate'"),
    ("config: out of range", lambda c: ["config", "search.k=1"], lambda c: "search.k must be >= 2"),
    ("config: zero limit", lambda c: ["config", "eval.limit=0"], lambda c: "eval.limit must be >= 1"),
    ("config: empty list", lambda c: ["config", "search.num_problems=[]"], lambda c: "search.num_problems"),
    ("config: section as scalar", lambda c: ["config", "search=3"], lambda c: "key 'search'"),
    ("config: unknown judge mode", lambda c: ["config", "judge.mode=oracle"], lambda c: "judge.mode 'oracle'"),
    ("config: negative temperature", lambda c: ["config", "search.temperature=-1"], lambda c: "search.temperature"),
    ("config: zero top_p", lambda c: ["config", "search.top_p=0"], lambda c: "search.top_p must be in (0, 1], got 0.0"),
    ("config: zero LoRA rank", lambda c: ["config", "train.lora_r=0"], lambda c: "train.lora_r must be >= 1, got 0"),
    ("config: override not YAML", lambda c: ["config", "search.k=[1"], lambda c: "override 'search.k=[1'"),
    # the old loop sampled M0's steps for on-policy EFT, then dropped them all for a generative judge
    ("config: on-policy EFT for a generative judge", lambda c: ["config", "judge.mode=generative", "init.eft=true",
                                                                "init.eft_sources=[on_policy]"],
     lambda c: "init.eft_sources: on_policy gives judge.mode generative no examples"),
    ("config: guard slice on the searched problems", lambda c: ["config", "loop.guard_offset=0"],
     lambda c: "loop.guard: the dev slice (loop.guard_offset, loop.guard_problems) overlaps"),
    ("config: guard mode unknown", lambda c: ["config", "loop.guard=halt"],
     lambda c: "loop.guard must be stop, warn or off, got 'halt'"),
    # train: recipes, run folders, data, models
    ("train: recipe missing", lambda c: ["train", "--config", c.p("nope.yaml")], lambda c: "nope.yaml: cannot read"),
    ("train: run exists, no --resume", lambda c: c.train(), lambda c: "pass --resume"),
    ("train: --resume from another config", lambda c: [*c.train(), "--resume"],
     lambda c: f"{c.p('runs/t/config.yaml')} holds a different config"),
    ("train: --resume of a damaged run", lambda c: [*c.train("name=damaged"), "--resume"],
     lambda c: f"{c.p('runs/damaged/config.yaml')}:2: invalid YAML"),
    ("train: output_dir is a file", lambda c: c.train(f"output_dir={c.p('a_file')}"),
     lambda c: f"output_dir {c.p('a_file')}: is a file"),
    ("train: output_dir under a file", lambda c: c.train(f"output_dir={c.p('a_file')}/runs"),
     lambda c: f"output_dir {c.p('a_file')}/runs: cannot write there"),
    ("train: eval data missing", lambda c: c.train("name=n1", f"eval.data_file={c.p('nope.jsonl')}"),
     lambda c: "nope.jsonl does not exist"),
    ("train: eval data malformed", lambda c: c.train("name=n2", f"eval.data_file={c.p('bad_json.jsonl')}"),
     lambda c: "bad_json.jsonl:2: invalid JSON"),
    ("train: eval data empty", lambda c: c.train("name=n3", f"eval.data_file={c.p('empty.jsonl')}"),
     lambda c: "no problems to evaluate"),
    ("train: unknown eval task", lambda c: c.train("name=n4", "eval.task=nope"), lambda c: "task 'nope' not found"),
    ("train: model folder missing", lambda c: c.train("name=n5", f"model={c.p('nope_model')}"),
     lambda c: "nope_model"),
    ("train: negative beta", lambda c: c.train("name=n7", "train.beta=-1"), lambda c: "train.beta must be > 0"),
    ("train: zero batch size", lambda c: c.train("name=n8", "search.batch_size=0"),
     lambda c: "search.batch_size must be >= 1, got 0"),
    ("train: model is a broken gguf", lambda c: c.train("name=n6", f"model={c.p('broken.gguf')}"),
     lambda c: "broken.gguf: not a GGUF model"),
    # eval: numbers
    ("eval: negative limit", lambda c: c.eval("--limit", "-5"), lambda c: "argument --limit: must be >= 1"),
    ("eval: zero limit", lambda c: c.eval("--limit", "0"), lambda c: "argument --limit: must be >= 1"),
    ("eval: limit not a number", lambda c: c.eval("--limit", "ten"), lambda c: "argument --limit: expected an"),
    ("eval: zero batch size", lambda c: c.eval("--batch-size", "0"), lambda c: "argument --batch-size"),
    ("eval: huge max-new-tokens", lambda c: c.eval("--max-new-tokens", "1000000000"),
     lambda c: "argument --max-new-tokens: must be in [1, 32768], got 1000000000"),
    ("eval: zero k", lambda c: c.eval("--decoding", "maj@k", "--k", "0"), lambda c: "argument --k"),
    ("eval: huge k", lambda c: c.eval("--decoding", "maj@k", "--k", "100000"), lambda c: "argument --k"),
    ("eval: nan temperature", lambda c: c.eval("--temperature", "nan"), lambda c: "argument --temperature"),
    ("eval: zero temperature for maj@k", lambda c: c.eval("--decoding", "maj@2", "--temperature", "0"),
     lambda c: "argument --temperature: must be > 0, got 0"),
    ("eval: top-p above 1", lambda c: c.eval("--top-p", "1.5"), lambda c: "argument --top-p: must be in (0, 1]"),
    ("eval: zero top-p", lambda c: c.eval("--top-p", "0"), lambda c: "argument --top-p: must be in (0, 1], got 0"),
    ("eval: negative shots", lambda c: c.eval("--num-fewshot", "-1"), lambda c: "argument --num-fewshot"),
    ("eval: negative seed", lambda c: c.eval("--seed", "-1"), lambda c: "argument --seed"),
    ("eval: zero beam width", lambda c: c.eval("--decoding", "beam", "--beam-width", "0"),
     lambda c: "argument --beam-width"),
    ("eval: unknown decoding", lambda c: c.eval("--decoding", "nucleus"), lambda c: "--decoding 'nucleus'"),
    ("eval: unknown aggregate", lambda c: c.eval("--aggregate", "median"), lambda c: "--aggregate must be one of"),
    # eval: tasks and data
    ("eval: unknown task", lambda c: c.eval("--task", "nope"), lambda c: "task 'nope' not found"),
    ("eval: task with unknown key", lambda c: c.eval("--task", c.p("task_unknown_key.yaml")),
     lambda c: "task_unknown_key.yaml: key 'foo'"),
    ("eval: task not YAML", lambda c: c.eval("--task", c.p("task_invalid.yaml")),
     lambda c: "task_invalid.yaml:3: invalid YAML"),
    ("eval: task without prompt", lambda c: c.eval("--task", c.p("task_no_prompt.yaml")),
     lambda c: "task_no_prompt.yaml: missing required key 'prompt'"),
    ("eval: hub dataset offline", lambda c: ["eval", "--task", c.p("task_hub.yaml"), "--output-dir", c.p("out")],
     lambda c: "'presrm-test/no-such-dataset' could not be loaded"),
    ("eval: data file missing", lambda c: c.eval("--data-file", c.p("nope.jsonl")),
     lambda c: "nope.jsonl does not exist"),
    ("eval: data file invalid JSON", lambda c: c.eval("--data-file", c.p("bad_json.jsonl")),
     lambda c: "bad_json.jsonl:2: invalid JSON"),
    ("eval: data line not an object", lambda c: c.eval("--data-file", c.p("not_object.jsonl")),
     lambda c: "not_object.jsonl:1: expected a JSON object"),
    ("eval: data line without answer", lambda c: c.eval("--data-file", c.p("no_answer.jsonl")),
     lambda c: "no_answer.jsonl:1: missing key 'answer'"),
    ("eval: gold without ####", lambda c: c.eval("--data-file", c.p("no_hashes.jsonl")),
     lambda c: "no_hashes.jsonl:1: gold answer has no '#### N'"),
    ("eval: data file not UTF-8", lambda c: c.eval("--data-file", c.p("latin1.jsonl")),
     lambda c: "latin1.jsonl:2: not UTF-8 text (byte 0xe9"),
    ("eval: task not UTF-8", lambda c: c.eval("--task", c.p("latin1.yaml")), lambda c: "latin1.yaml: not UTF-8"),
    ("eval: empty data file", lambda c: c.eval("--data-file", c.p("empty.jsonl")),
     lambda c: "no problems to evaluate"),
    ("eval: data file is a folder", lambda c: c.eval("--data-file", c.p("no_config")),
     lambda c: "no_config does not exist"),
    # eval: models, adapters, output folders
    ("eval: model folder missing", lambda c: c.eval("--model", c.p("nope_model")), lambda c: "nope_model"),
    ("eval: model folder without config.json", lambda c: c.eval("--model", c.p("no_config")),
     lambda c: "no_config is a folder but not a Hugging Face model"),
    ("eval: gguf missing", lambda c: c.eval("--model", c.p("nope.gguf")), lambda c: "nope.gguf does not exist"),
    ("eval: gguf not GGUF", lambda c: c.eval("--model", c.p("broken.gguf")),
     lambda c: "broken.gguf: not a GGUF model"),
    ("eval: gguf truncated", lambda c: c.eval("--model", c.p("trunc.gguf")),
     lambda c: "trunc.gguf: not a GGUF model"),
    ("eval: hub id not cached offline", lambda c: c.eval("--model", "presrm-test/no-such-model"),
     lambda c: "'presrm-test/no-such-model' is not in the local Hugging Face cache"),
    ("eval: adapter missing", lambda c: c.eval("--adapter", c.p("nope_adapter")), lambda c: "--adapter"),
    ("eval: adapter folder empty", lambda c: c.eval("--adapter", c.p("no_adapter")),
     lambda c: f"--adapter {c.p('no_adapter')}: not a LoRA adapter folder"),
    ("eval: output-dir is a file", lambda c: c.eval(out="a_file"), lambda c: f"--output-dir {c.p('a_file')}: is a"),
    ("eval: output-dir under a file", lambda c: c.eval(out="a_file/out"),
     lambda c: f"--output-dir {c.p('a_file/out')}: cannot write there"),
    ("eval: output-dir not writable", lambda c: c.eval(out=str(_unwritable(c.tmp))), lambda c: "cannot write there"),
    # report and compare: run folders
    ("report: folder missing", lambda c: ["report", c.p("nope_run")], lambda c: "nope_run: not a presrm run"),
    ("report: partial run, a cut line", lambda c: ["report", c.p("partial")],
     lambda c: f"{c.p('partial/iter_0/samples.jsonl')}:"),
    ("report: config.yaml not YAML", lambda c: ["report", c.p("bad_config_run")],
     lambda c: "bad_config_run/config.yaml:2: invalid YAML"),
    ("report: results.json cut off", lambda c: ["report", c.p("bad_results")],
     lambda c: "bad_results/results.json:1: invalid JSON"),
    ("report: report.html is a folder", lambda c: ["report", c.p("report_blocked")],
     lambda c: "report_blocked/report.html: cannot write (Is a directory)"),
    ("compare: results missing", lambda c: ["compare", c.p("nope_eval"), c.p("eval_a")],
     lambda c: "nope_eval: no such results file"),
    ("compare: different problems", lambda c: ["compare", c.p("eval_a"), c.p("eval_b")],
     lambda c: "cover different problems"),
    ("compare: samples missing", lambda c: ["compare", c.p("no_samples"), c.p("eval_a")],
     lambda c: "no_samples/samples.jsonl: missing"),
    ("compare: samples cut off", lambda c: ["compare", c.p("cut_samples"), c.p("eval_a")],
     lambda c: "cut_samples/samples.jsonl:5: invalid JSON"),
    ("compare: --output under a file", lambda c: ["compare", c.p("eval_a"), c.p("eval_a"), "--output",
                                                  c.p("a_file/cmp.json")], lambda c: "a_file: is a file"),
    # verify
    ("verify: input missing", lambda c: ["verify", c.p("nope.jsonl"), "--output", c.p("v.jsonl")],
     lambda c: "nope.jsonl: cannot read"),
    ("verify: invalid JSON line", lambda c: ["verify", c.p("verify_bad.jsonl"), "--output", c.p("v.jsonl")],
     lambda c: "verify_bad.jsonl:2: invalid JSON"),
    ("verify: input not UTF-8", lambda c: ["verify", c.p("verify_latin1.jsonl"), "--output", c.p("v.jsonl")],
     lambda c: "verify_latin1.jsonl:2: not UTF-8 text"),
    ("verify: missing key", lambda c: ["verify", c.p("verify_no_key.jsonl"), "--output", c.p("v.jsonl")],
     lambda c: "verify_no_key.jsonl:1: missing key 'completion'"),
    ("verify: completion not text", lambda c: ["verify", c.p("verify_not_str.jsonl"), "--output", c.p("v.jsonl")],
     lambda c: "verify_not_str.jsonl:1: 'completion' must be a string"),
    ("verify: --output under a file", lambda c: ["verify", c.p("verify_good.jsonl"), "--output",
                                                 c.p("a_file/v.jsonl")], lambda c: "a_file: is a file"),
    # judge-eval
    ("judge-eval: zero limit", lambda c: ["judge-eval", "--model", c.model, "--data-file", c.p("good.jsonl"),
                                          "--limit", "0", "--output-dir", c.p("je")],
     lambda c: "--limit must be at least 1"),
    ("judge-eval: negative seed", lambda c: ["judge-eval", "--seed", "-3", "--output-dir", c.p("je")],
     lambda c: "argument --seed"),
    ("judge-eval: tie margin out of range", lambda c: ["judge-eval", "--judge", "pairwise", "--tie-margin", "1.5",
                                                       "--output-dir", c.p("je")],
     lambda c: "argument --tie-margin: must be"),
    ("judge-eval: unknown judge", lambda c: ["judge-eval", "--judge", "oracle", "--output-dir", c.p("je")],
     lambda c: "argument --judge: invalid choice"),
    ("judge-eval: zero samples", lambda c: ["judge-eval", "--judge", "generative", "--samples", "0",
                                            "--output-dir", c.p("je")],
     lambda c: "argument --samples: must be"),
    ("judge-eval: zero judge temperature", lambda c: ["judge-eval", "--judge", "generative", "--temperature", "0",
                                                      "--output-dir", c.p("je")],
     lambda c: "argument --temperature: must be"),
    ("judge-eval: a samples curve with 0", lambda c: ["judge-eval", "--judge", "generative", "--samples-curve",
                                                      "1,0,4", "--output-dir", c.p("je")],
     lambda c: "argument --samples-curve: must be"),
    ("judge-eval: a samples curve for a logit judge", lambda c: ["judge-eval", "--model", c.model, "--judge",
                                                                 "pairwise", "--samples-curve", "1,2",
                                                                 "--output-dir", c.p("je")],
     lambda c: "--samples-curve needs a judge that writes its judgments"),
    ("judge-eval: output-dir is a file", lambda c: ["judge-eval", "--model", c.model, "--output-dir",
                                                    c.p("a_file")], lambda c: f"--output-dir {c.p('a_file')}: is"),
    ("judge-eval: data file missing", lambda c: ["judge-eval", "--model", c.model, "--data-file",
                                                 c.p("nope.jsonl"), "--output-dir", c.p("je")],
     lambda c: "nope.jsonl does not exist"),
    ("judge-eval: adapter folder empty", lambda c: ["judge-eval", "--model", c.model, "--adapter",
                                                    c.p("no_adapter"), "--output-dir", c.p("je")],
     lambda c: f"--adapter {c.p('no_adapter')}: not a LoRA adapter folder"),
    ("judge-eval: threshold above 1", lambda c: ["judge-eval", "--threshold", "2", "--output-dir", c.p("je")],
     lambda c: "--threshold must be in [0, 1], got 2.0"),
    ("judge-eval: zero batch size", lambda c: ["judge-eval", "--batch-size", "0", "--output-dir", c.p("je")],
     lambda c: "--batch-size must be at least 1, got 0"),
    ("judge-eval: zero max-new-tokens", lambda c: ["judge-eval", "--judge", "generative", "--max-new-tokens", "0",
                                                   "--output-dir", c.p("je")],
     lambda c: "--max-new-tokens must be at least 1, got 0"),
    ("judge-eval: unknown device", lambda c: ["judge-eval", "--device", "tpu", "--output-dir", c.p("je")],
     lambda c: "argument --device: invalid choice: 'tpu'"),
    ("judge-eval: unknown engine", lambda c: ["judge-eval", "--engine", "onnx", "--output-dir", c.p("je")],
     lambda c: "argument --engine: invalid choice: 'onnx'"),
    ("judge-eval: unknown precision", lambda c: ["judge-eval", "--precision", "fp8", "--output-dir", c.p("je")],
     lambda c: "argument --precision: invalid choice: 'fp8'"),
    ("judge-eval: one candidate per prefix", lambda c: ["judge-eval", "--natural", c.p("nat.jsonl"), "--natural-k",
                                                        "1", "--output-dir", c.p("je")],
     lambda c: "--natural-k must be at least 2, got 1"),
    ("judge-eval: zero natural steps", lambda c: ["judge-eval", "--natural", c.p("nat.jsonl"),
                                                  "--natural-max-steps", "0", "--output-dir", c.p("je")],
     lambda c: "--natural-max-steps must be at least 1, got 0"),
    ("judge-eval: zero natural temperature", lambda c: ["judge-eval", "--natural", c.p("nat.jsonl"),
                                                        "--natural-temperature", "0", "--output-dir", c.p("je")],
     lambda c: "--natural-temperature must be in (0, 2], got 0.0"),
    ("eval: unknown engine", lambda c: c.eval("--engine", "onnx"),
     lambda c: "argument --engine: invalid choice: 'onnx'"),
    ("eval: unknown precision", lambda c: c.eval("--precision", "fp8"),
     lambda c: "argument --precision: invalid choice: 'fp8'"),
    ("eval: zero beam expand", lambda c: c.eval("--decoding", "beam", "--beam-expand", "0"),
     lambda c: "argument --beam-expand"),
    ("eval: zero max steps", lambda c: c.eval("--decoding", "beam", "--max-steps", "0"),
     lambda c: "argument --max-steps"),
    ("eval: zero max step tokens", lambda c: c.eval("--decoding", "beam", "--max-step-tokens", "0"),
     lambda c: "argument --max-step-tokens"),
    ("eval: pair judge for step scores", lambda c: c.eval("--judge", "pairwise"),
     lambda c: "argument --judge: invalid choice: 'pairwise'"),
    ("export: not a run", lambda c: ["export", c.p("no_config"), "--format", "step-dpo", "--output", c.p("exp")],
     lambda c: f"{c.p('no_config')}: not a presrm run directory"),
    ("export: unknown format", lambda c: ["export", c.p("run"), "--format", "csv", "--output", c.p("exp")],
     lambda c: "argument --format: invalid choice: 'csv'"),
    ("export: unknown unverifiable", lambda c: ["export", c.p("run"), "--format", "trl-stepwise", "--unverifiable",
                                                "guess", "--output", c.p("exp")],
     lambda c: "argument --unverifiable: invalid choice: 'guess'"),
    ("export: output not empty", lambda c: ["export", c.p("run"), "--format", "step-dpo", "--output", c.p("run")],
     lambda c: f"--output {c.p('run')} exists and is not an empty folder"),
]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse reports usage errors by exiting
        return e.code


@pytest.mark.parametrize(("argv", "expected"), [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_bad_input_gives_one_line_and_exit_2(ctx, capsys, argv, expected):
    before = _snapshot(ctx.tmp)
    rc = run_cli(argv(ctx))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines()
             if line.strip() and not LOG_LINE.match(line) and not BAR_LINE.search(line)]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert expected(ctx) in lines[0]
    after = _snapshot(ctx.tmp)
    assert {f: h for f, h in after.items() if f in before} == before, "a file written before was changed"


def _checked_options() -> dict[str, list[tuple[str, ...]]]:
    """Per command of the CLI's parser, the options it checks itself (a choice list or a typed value), each as
    its spellings (``--k``, ``--n``)."""
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: [tuple(a.option_strings) for a in sub._actions
                   if a.option_strings and (a.choices is not None or a.type not in (None, str))]
            for name, sub in commands.items()}


def test_the_table_covers_every_command_and_every_checked_option(tmp_path):
    """Read from the parser, so a new command, or a new checked option, without a row here fails."""
    ctx = Ctx(tmp_path, "tiny")
    used: dict[str, set[str]] = {}
    for ident, argv, _ in CASES:
        used.setdefault(ident.split(":")[0], set()).update(argv(ctx))
    options = _checked_options()
    assert set(used) == set(options)
    missing = [f"{name} {flags[-1]}" for name, spellings in options.items() for flags in spellings
               if not set(flags) & used[name]]
    assert not missing, f"no bad-input row gives these options a value: {missing}"


# --------------------------------------------------------------------------- hostile text (no error)

HOSTILE = [
    "The answer is $\\binom{10000000}{5000000}$.", "#### 10000000!", "\\boxed{9^{9^{9^{9}}}}", "(" * 10_000,
    "Step 1: " + "9" * 100_000 + " = 1", "__import__('os').system('echo pwned') = 0", "1 = " * 5_000 + "1",
    "Step 1: " * 3_000, "\x00\x1b[2J" * 100, "The answer is " + "\\frac{1}{" * 500 + "2" + "}" * 500,
    "[[A]] [[B]] " * 2_000 + "Score: 4/5 " * 1_000, "<<" * 5_000 + ">>" * 5_000,
]


def test_verify_command_handles_hostile_text_in_bounded_time(tmp_path, capsys):
    src = tmp_path / "hostile.jsonl"
    _jsonl(src, [{"completion": text, "answer": "5"} for text in HOSTILE])
    start = time.monotonic()
    assert main(["verify", str(src), "--output", str(tmp_path / "out.jsonl")]) == 0
    assert time.monotonic() - start < 2.0 * len(HOSTILE)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(HOSTILE)
    assert f"records: {len(HOSTILE)}" in capsys.readouterr().out


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_segmenter_and_judge_reply_parsers_on_hostile_text_in_a_thread(text):
    from presrm.judges.generative import parse_verdict
    from presrm.judges.outcome import parse_score
    from presrm.steps import segment

    out: dict = {}

    def work():
        out["steps"] = segment(text)
        out["verdict"] = parse_verdict(text)
        out["score"] = parse_score(text)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(1.0)
    assert not worker.is_alive(), "still running after 1 s"
    assert isinstance(out["steps"], list) and out["verdict"] in (None, "A", "B", "tie")
    assert out["score"] is None or 0 <= out["score"] <= 5
