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
