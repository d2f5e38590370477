"""The judge registry is the one home of the judge modes: a toy mode added there is accepted everywhere."""

import subprocess
import sys

import pytest

from presrm.cli import make_parser
from presrm.config import JudgeConfig, load_config
from presrm.errors import ConfigError
from presrm.init_data import eft_examples
from presrm.judge import judge_class, make_judge, make_judge_from_config
from presrm.judge_eval import JudgeEvalArgs
from presrm.judges.common import ScoreJudgeBase
from presrm.judges.registry import (
    JudgeSpec,
    eft_modes,
    modes,
    register,
    search_modes,
    spec,
    step_modes,
    unregister,
)
from presrm.loop import step_judge_mode
from tests.conftest import parser_refuses


class ToyJudge(ScoreJudgeBase):
    """Scores a step by its length (a judge that needs no model)."""

    mode = "toy"
    unit = "step"

    def __init__(self, engine=None, *, template: str | None = None, seed: int = 0, batch_size: int = 16):
        self.engine, self.template, self.seed, self.batch_size = engine, template, seed, batch_size

    def prompt(self, item):
        return item.step

    def score(self, items, *, desc=None):
        return [len(it.step) / 100 for it in items]


TOY = JudgeSpec("toy", f"{__name__}:ToyJudge", "step", "a step's length", options={"template": "template"})


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister("toy")


def test_builtin_table():
    assert modes() == ["pointwise", "pairwise", "generative", "outcome", "likelihood", "random"]
    assert step_modes() == ["pointwise", "likelihood", "random"]
    assert search_modes() == ["pointwise", "pairwise", "generative", "likelihood", "random"]
    assert eft_modes() == ["pointwise", "pairwise", "generative"]
    for mode in modes():  # every entry's class exists and agrees with its entry
        cls = judge_class(mode)
        assert (cls.mode, cls.unit) == (mode, spec(mode).unit)


def test_entry_and_class_must_agree():
    with pytest.raises(TypeError, match="the registry says 'pairwise', 'step'"):
        JudgeSpec("pairwise", "presrm.judges.pairwise:PairwiseJudge", "step", "wrong unit").load()
    with pytest.raises(ValueError, match="unit must be one of"):
        JudgeSpec("x", "a:B", "token", "no such unit")
    with pytest.raises(ValueError, match="already registered"):
        register(JudgeSpec("random", "presrm.judges.random:RandomJudge", "step", "again"))
    with pytest.raises(ConfigError, match="judge mode 'toy' is not one of"):
        spec("toy")


def test_a_toy_mode_in_one_place_is_accepted_everywhere(toy, tmp_path):
    # config validation, and the run's per-step judge
    cfg = load_config(None, ["judge.mode=toy"])
    assert cfg.judge.mode == "toy" and step_judge_mode(cfg) == "toy"
    with pytest.raises(ConfigError, match="judge.mode toy reads none"):
        load_config(None, ["judge.mode=toy", "init.eft=true"])
    # the CLI's choices
    parser = make_parser()
    assert parser.parse_args(["eval", "--judge", "toy", "--output-dir", str(tmp_path)]).judge == "toy"
    assert parser.parse_args(["judge-eval", "--judge", "toy", "--output-dir", str(tmp_path)]).judge == "toy"
    # judge-eval's validation
    JudgeEvalArgs(judge=JudgeConfig(mode="toy"), output_dir=str(tmp_path / "out")).validate()
    # the builders: the config keys of its entry, the run's context its constructor takes
    judge = make_judge_from_config(JudgeConfig(mode="toy", template="t.jinja", batch_size=3), None, seed=5,
                                   task="gsm8k")
    assert isinstance(judge, ToyJudge) and (judge.template, judge.seed, judge.batch_size) == ("t.jinja", 5, 3)
    assert make_judge("toy", None).tournament("q", (), ["Step 1: a", "Step 1: longer"]).wins == [0.0, 1.0]
    # and where it does not belong
    with pytest.raises(ValueError, match="EFT has no examples for judge mode 'toy'"):
        eft_examples([], str, mode="toy")


def test_a_removed_mode_is_refused_everywhere(tmp_path, capsys):
    assert "toy" not in modes()
    with pytest.raises(ConfigError, match="judge.mode 'toy' is not one of"):
        load_config(None, ["judge.mode=toy"])
    parser_refuses(capsys, ["eval", "--judge", "toy", "--output-dir", str(tmp_path)],
                   "argument --judge: invalid choice: 'toy'")
    with pytest.raises(ConfigError, match="--judge must be one of"):
        JudgeEvalArgs(judge=JudgeConfig(mode="toy"), output_dir=str(tmp_path / "out")).validate()


def test_the_cli_reads_the_registry_without_torch():
    code = "import sys, presrm.cli; presrm.cli.make_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
