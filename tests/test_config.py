"""Recipe reference (docs/config.md) and `presrm config`."""

from pathlib import Path

import pytest
import yaml

from presrm.cli import main
from presrm.config import RunConfig, load_config, reference

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_the_generated_reference():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert doc == reference(), "docs/config.md is stale: run `presrm config --reference > docs/config.md`"


def test_reference_lists_every_key_with_its_default():
    text = reference()
    cfg = RunConfig().to_dict()
    for key, value in cfg.items():
        if isinstance(value, dict):
            for sub in value:
                assert f"| `{key}.{sub}` |" in text
        else:
            assert f"| `{key}` |" in text
    assert "| `search.k` | `6` |" in text and "| `judge.mode` | `pairwise` |" in text
    assert "\\|P(A better) - 0.5\\|" in text  # a '|' in a meaning does not break the table


def test_config_command_prints_the_resolved_recipe(capsys):
    rc = main(["config", "--config", str(ROOT / "configs" / "quickstart.yaml"), "search.k=3", "judge.mode=pointwise"])
    assert rc == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["name"] == "quickstart" and resolved["search"]["k"] == 3
    assert resolved["judge"]["mode"] == "pointwise" and resolved["init"]["ift"] is True


def test_config_command_bad_override_exits_2(capsys):
    assert main(["config", "search.kk=3"]) == 2
    assert "search.kk" in capsys.readouterr().err
    assert main(["config", "search.k=many"]) == 2
    assert "search.k" in capsys.readouterr().err


FLOAT_SPELLINGS = [("2e-5", 2e-5), ("2E-5", 2e-5), (".5", 0.5), ("1_000", 1000.0), ("-2e-5", -2e-5),
                   ("+1.5e+3", 1500.0), ("3", 3.0), ("0.25", 0.25)]


@pytest.mark.parametrize(("text", "value"), FLOAT_SPELLINGS)
def test_float_keys_take_the_usual_spellings_in_overrides_and_files(tmp_path, text, value):
    assert load_config(None, [f"train.beta={text}"]).train.beta == value
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  beta: {text}\n  learning_rate: {text.lstrip('-')}\n")
    cfg = load_config(recipe)
    assert cfg.train.beta == value and cfg.train.learning_rate == abs(value)
    assert isinstance(cfg.train.beta, float)


@pytest.mark.parametrize("text", ["e5", "2e", "1e-", "1,5", "two", ".inf", "nan", "1e999", "true", "0x1p3"])
def test_float_keys_refuse_what_is_no_finite_number(tmp_path, text, capsys):
    assert main(["config", f"train.beta={text}"]) == 2
    err = capsys.readouterr().err
    assert "key 'train.beta': expected float" in err and err.count("\n") == 1
