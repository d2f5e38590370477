"""Recipe reference (docs/config.md) and `presrm config`."""

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml

from presrm.cli import main, make_parser
from presrm.config import RunConfig, load_config, reference, settings
from presrm.decoding import Decoding
from presrm.errors import ConfigError

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


FLOAT_SPELLINGS = [("2e-5", 2e-5), ("2E-5", 2e-5), (".5", 0.5), ("1_000", 1000.0), ("+1.5e+3", 1500.0),
                   ("3", 3.0), ("0.25", 0.25)]


@pytest.mark.parametrize(("text", "value"), FLOAT_SPELLINGS)
def test_float_keys_take_the_usual_spellings_in_overrides_and_files(tmp_path, text, value):
    assert load_config(None, [f"train.beta={text}"]).train.beta == value
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  beta: {text}\n  learning_rate: {text}\n")
    cfg = load_config(recipe)
    assert cfg.train.beta == value and cfg.train.learning_rate == value
    assert isinstance(cfg.train.beta, float)


def test_a_negative_spelling_is_read_as_a_number_and_then_range_checked(capsys):
    assert main(["config", "train.beta=-2e-5"]) == 2
    assert capsys.readouterr().err == "presrm: error: train.beta must be > 0, got -2e-05\n"


@pytest.mark.parametrize("text", ["e5", "2e", "1e-", "1,5", "two", ".inf", "nan", "1e999", "true", "0x1p3"])
def test_float_keys_refuse_what_is_no_finite_number(tmp_path, text, capsys):
    assert main(["config", f"train.beta={text}"]) == 2
    err = capsys.readouterr().err
    assert "key 'train.beta': expected float" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- every numeric key, range-checked

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _fields() -> list[tuple[str, typing.Any, dataclasses.Field]]:
    """Every recipe key with its annotation, read from the dataclasses themselves (not from presrm's own walk)."""
    out = []
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if dataclasses.is_dataclass(hints[f.name]):
            section = typing.get_type_hints(hints[f.name])
            out += [(f"{f.name}.{g.name}", section[g.name], g) for g in dataclasses.fields(hints[f.name])]
        else:
            out.append((f.name, hints[f.name], f))
    return out


def _number(tp) -> type | None:
    args = typing.get_args(tp) or (tp,)
    return float if float in args else int if int in args else None


NUMERIC = [key for key, tp, _ in _fields() if _number(tp)]


def _bad_values(key: str) -> list[tuple[str, str]]:
    """``(override value, what the error names)`` for ``key``: just below its range, just above where it has an
    upper bound, an entry of a list out of range where the key takes lists, and values that are no number."""
    s = settings()[key]
    r, step = s.range, (1 if s.number is int else 0.5)
    low = r.low if r.low_open else r.low - step
    out = [(repr(s.number(low)), r.text)]
    if math.isfinite(r.high):
        out.append((repr(s.number(r.high if r.high_open else r.high + step)), r.text))
    if list in typing.get_args(s.type):
        out.append((f"[{s.number(low)!r}]", r.text))
    out += [("abc", "expected"), ("[abc]" if list in typing.get_args(s.type) else "{a: 1}", key)]
    out += [("2.5", "expected")] if s.number is int else [("nan", "expected"), ("-.inf", "expected")]
    return out


def test_every_numeric_key_declares_a_valid_range_shown_in_the_reference():
    """A numeric key added without ``valid=`` fails here (and is then walked by the tests below)."""
    assert len(NUMERIC) > 40 and {"search.top_p", "train.beta", "eval.limit", "seed"} <= set(NUMERIC)
    text = reference()
    missing = [key for key in NUMERIC if settings()[key].range is None]
    assert not missing, f"numeric keys without a declared range (valid=...): {missing}"
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in text.splitlines()
            if line.startswith("| `")}
    for key in NUMERIC:
        assert rows[key][2] == f"`{settings()[key].range.text}`", rows[key]
        assert settings()[key].default in settings()[key].range or settings()[key].default is None, key


@pytest.mark.parametrize(("key", "bad", "named"), [(k, v, n) for k in NUMERIC for v, n in _bad_values(k)])
def test_config_refuses_every_numeric_key_out_of_range_in_one_line(key, bad, named, capsys):
    rc = main(["config", "--config", SMOKE, f"{key}={bad}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("presrm: error: "), err
    assert f"{key}" in err and named in err, err
    if named == settings()[key].range.text:
        assert f"{key} must be {settings()[key].range.phrase}" in err and "got " in err


@pytest.mark.parametrize("key", NUMERIC)
def test_train_refuses_an_out_of_range_key_before_any_stage(key, tmp_path, capsys, monkeypatch):
    import presrm.loop

    started = []
    monkeypatch.setattr(presrm.loop, "run", lambda cfg, resume=False: started.append(cfg) or {})  # no stage runs
    bad = _bad_values(key)[0][0]
    runs = tmp_path / "runs"
    rc = main(["train", "--config", SMOKE, f"output_dir={runs}", f"{key}={bad}"])
    err = capsys.readouterr().err
    assert not started, f"{key}={bad} reached the pipeline"
    assert rc == 2 and err.count("\n") == 1 and f"{key} must be" in err, err
    assert not runs.exists(), "a run folder was written before the recipe was refused"


def test_the_valid_edges_pass():
    """The bounds themselves, where closed, are valid: the ranges are not off by one."""
    for key in NUMERIC:
        s = settings()[key]
        edges = [e for e, is_open in ((s.range.low, s.range.low_open), (s.range.high, s.range.high_open))
                 if math.isfinite(e) and not is_open]
        for edge in edges:
            # an edge of loop.guard_offset (0) would put the dev slice on the searched problems: no guard then
            cfg = load_config(SMOKE, [f"{key}={s.number(edge)!r}", *(["loop.guard=off"] if key.startswith("loop.")
                                                                      else [])])
            section, _, name = key.rpartition(".")
            assert getattr(getattr(cfg, section) if section else cfg, name) == edge, key


# presrm eval's options that set what an eval-section (or top-level, judge) key sets
EVAL_OPTIONS = {"model": "model", "task": "eval.task", "batch_size": "eval.batch_size", "decoding": "eval.decoding",
                "k": "eval.k", "temperature": "eval.temperature", "top_p": "eval.top_p", "seed": "seed",
                "aggregate": "judge.aggregate", "beam_width": "eval.beam_width", "beam_expand": "eval.beam_expand",
                "max_steps": "eval.max_steps", "max_step_tokens": "eval.max_step_tokens"}


def test_eval_and_judge_eval_defaults_are_the_recipe_defaults():
    args = make_parser().parse_args(["eval", "--output-dir", "x"])
    assert {dest: getattr(args, dest) for dest in EVAL_OPTIONS} == {
        dest: settings()[key].default for dest, key in EVAL_OPTIONS.items()}
    args = make_parser().parse_args(["judge-eval", "--output-dir", "x"])
    assert (args.model, args.task, args.seed) == (settings()["model"].default, settings()["eval.task"].default,
                                                  settings()["seed"].default)


@pytest.mark.parametrize("dest", [d for d, k in EVAL_OPTIONS.items() if k in NUMERIC])
def test_eval_options_refuse_what_their_recipe_key_refuses(dest, capsys):
    """One range per value: presrm eval's option, the recipe key and the Decoding the eval stage builds agree."""
    key = EVAL_OPTIONS[dest]
    for bad, named in _bad_values(key):
        if named != settings()[key].range.text or bad.startswith("["):
            continue
        with pytest.raises(SystemExit) as exit_:
            make_parser().parse_args(["eval", "--output-dir", "x", f"--{dest.replace('_', '-')}", bad])
        assert exit_.value.code == 2
        assert f"must be {settings()[key].range.phrase}" in capsys.readouterr().err
        if dest in {f.name for f in dataclasses.fields(Decoding)}:
            with pytest.raises(ConfigError, match=f"^{key} must be "):
                Decoding(mode="maj", **{dest: yaml.safe_load(bad)})
