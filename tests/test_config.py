"""Recipe reference (docs/config.md) and `presrm config`."""

from pathlib import Path

import yaml

from presrm.cli import main
from presrm.config import RunConfig, reference

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
