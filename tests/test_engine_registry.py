"""The engine registry is the one home of the engine names: a toy engine added there is accepted everywhere."""

import subprocess
import sys

import pytest

from presrm import dist
from presrm.cli import make_parser
from presrm.config import load_config
from presrm.engines import EngineBase, EngineOptions, HFEngine, open_engine
from presrm.engines.holder import EngineHolder
from presrm.engines.registry import EngineSpec, check_runnable, names, register, spec, unregister
from presrm.engines.vllm import VLLMEngine, vllm_available
from presrm.errors import ConfigError
from presrm.judge_eval import JudgeEvalArgs
from presrm.loop import check_runnable as loop_check_runnable
from tests.conftest import parser_refuses


class ToyEngine(EngineBase):
    """An engine that loads nothing: it remembers what it was asked to load."""

    name = "toy"

    def __init__(self, spec, options):
        self.spec, self.options = spec, options

    @classmethod
    def load(cls, spec, options):
        return cls(spec, options)


WHY_NOT = None


def toy_unavailable():
    """The toy's availability check: None, or why it cannot run (the tests set WHY_NOT)."""
    return WHY_NOT


TOY = EngineSpec("toy", f"{__name__}:ToyEngine", "a toy", available=f"{__name__}:toy_unavailable",
                 tensor_parallel="vllm.tensor_parallel_size", collective=True)


@pytest.fixture
def toy(monkeypatch):
    register(TOY)
    monkeypatch.setattr(sys.modules[__name__], "WHY_NOT", None)
    yield TOY
    unregister("toy")


def test_builtin_table():
    assert names() == ["hf", "vllm"]
    assert (spec("hf").load(), spec("vllm").load()) == (HFEngine, VLLMEngine)  # the class loads without vllm
    assert spec("hf").unavailable() is None and spec("vllm").unavailable() == vllm_available()
    assert (spec("hf").collective, spec("vllm").collective) == (False, True)
    assert (spec("hf").tensor_parallel, spec("vllm").tensor_parallel) == (None, "vllm.tensor_parallel_size")


def test_entry_and_class_must_agree():
    with pytest.raises(TypeError, match="has name='hf'; the registry says 'vllm'"):
        EngineSpec("vllm", "presrm.engines.hf:HFEngine", "wrong class").load()
    with pytest.raises(ValueError, match="target must be 'module:name'"):
        EngineSpec("x", "presrm.engines.hf.HFEngine", "no colon")
    with pytest.raises(ValueError, match="tensor_parallel must be a config key"):
        EngineSpec("x", "a:B", "a bare key", tensor_parallel="tensor_parallel_size")
    with pytest.raises(ValueError, match="already registered"):
        register(EngineSpec("hf", "presrm.engines.hf:HFEngine", "again"))
    with pytest.raises(ConfigError, match="engine 'toy' is not one of: hf, vllm"):
        spec("toy")


def test_a_toy_engine_in_one_place_is_accepted_everywhere(toy, tmp_path, capsys):
    # config validation, and the run's checks before its first stage
    cfg = load_config(None, ["engine=toy"])
    assert cfg.engine == "toy"
    loop_check_runnable(cfg)
    # the CLI's choices and help, judge-eval's validation
    parser = make_parser()
    assert parser.parse_args(["eval", "--engine", "toy", "--output-dir", str(tmp_path)]).engine == "toy"
    assert parser.parse_args(["judge-eval", "--engine", "toy", "--output-dir", str(tmp_path)]).engine == "toy"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--help"])
    assert "or toy (a toy)" in " ".join(capsys.readouterr().out.split())
    JudgeEvalArgs(engine="toy", output_dir=str(tmp_path / "out")).validate()
    # the factory builds it through its class's load(spec, options)
    engine = open_engine("some/model", EngineOptions(name="toy", batch_size=3))
    assert isinstance(engine, ToyEngine) and engine.spec == "some/model" and engine.options.batch_size == 3


def test_availability_and_tensor_parallel_come_from_the_entry(toy, monkeypatch):
    cfg = load_config(None, ["engine=toy", "vllm.tensor_parallel_size=2"])
    monkeypatch.setattr(sys.modules[__name__], "WHY_NOT", "toy is not installed (pip install toy)")
    with pytest.raises(ConfigError, match=r"^engine: toy cannot run here: toy is not installed \(pip install toy\); "
                                          "or set engine: hf$"):
        loop_check_runnable(cfg)
    monkeypatch.setattr(sys.modules[__name__], "WHY_NOT", None)
    with pytest.raises(ConfigError, match="key 'vllm.tensor_parallel_size': 2 GPUs per model do not divide the 3 "):
        check_runnable(cfg, processes=3)
    check_runnable(cfg, processes=4)
    check_runnable(cfg, processes=1)  # one process: the engine spreads the model over its GPUs itself
    hf = load_config(None, ["engine=hf", "vllm.tensor_parallel_size=2"])
    check_runnable(hf, processes=3)  # the hf engine has no tensor parallelism: the key is not its


def test_the_run_holder_is_collective_only_for_a_collective_engine_under_a_launch(toy, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    holder = EngineHolder()
    try:
        holder.start(load_config(None, ["engine=toy", "vllm.tensor_parallel_size=2"]))
        assert holder.collective and dist._group_size == 2
        holder.start(load_config(None, ["engine=hf", "vllm.tensor_parallel_size=2"]))
        assert not holder.collective and dist._group_size == 1
        monkeypatch.setenv("WORLD_SIZE", "1")
        holder.start(load_config(None, ["engine=toy"]))
        assert not holder.collective and dist._group_size == 1
    finally:
        monkeypatch.setenv("WORLD_SIZE", "1")
        dist.set_group_size(1)


def test_a_removed_engine_is_refused_everywhere(tmp_path, capsys):
    assert "toy" not in names()
    with pytest.raises(ConfigError, match="engine must be one of: hf, vllm; got 'toy'"):
        load_config(None, ["engine=toy"])
    for command in ("eval", "judge-eval"):
        parser_refuses(capsys, [command, "--engine", "toy", "--output-dir", str(tmp_path)],
                       "argument --engine: invalid choice: 'toy'")
    with pytest.raises(ConfigError, match="--engine must be one of hf, vllm, got 'toy'"):
        JudgeEvalArgs(engine="toy", output_dir=str(tmp_path / "out")).validate()
    with pytest.raises(ConfigError, match="engine 'toy' is not one of: hf, vllm"):
        EngineOptions(name="toy")


def test_the_registry_and_the_engines_package_import_no_torch():
    code = ("import sys, presrm.engines, presrm.engines.holder, presrm.config, presrm.cli; "
            "presrm.cli.make_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
