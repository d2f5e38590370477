import json

import pytest

from presrm.errors import DataError
from presrm.report import _score_colour, write_report


@pytest.mark.parametrize(("score", "colour"), [(None, "#eee"), (0.0, "hsl(0, 70%, 85%)"),
                                               (1.0, "hsl(120, 70%, 85%)"), (2.0, "hsl(120, 70%, 85%)")])
def test_score_colour(score, colour):
    assert _score_colour(score) == colour


def test_eval_dir_report_shows_steps_scores_and_verdicts(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({
        "n": 1, "strict": {"correct": 0, "accuracy": 0.0, "ci95": [0, 0.79]},
        "flexible": {"correct": 0, "accuracy": 0.0, "ci95": [0, 0.79]}, "mean_steps": 2, "seconds": 1.0}))
    rec = {"id": "p<1>", "question": "What is 3 + 4?", "gold": "7", "completion": "...",
           "steps": [{"index": 0, "text": "Step 1: 3 + 4 = 8", "start": 0, "end": 17},
                     {"index": 1, "text": "Step 2: The answer is 8.", "start": 18, "end": 42}],
           "pred_strict": "8", "pred_flexible": "8", "correct_strict": False, "correct_flexible": False,
           "step_scores": [0.25, 0.9], "step_checks": [{"verdict": "incorrect"}, {"verdict": "unverifiable"}]}
    (tmp_path / "samples.jsonl").write_text(json.dumps(rec) + "\n")
    html = write_report(tmp_path).read_text()
    assert "Step 1: 3 + 4 = 8" in html and "0.250" in html and "0.900" in html
    assert 'class="step incorrect"' in html
    assert "p&lt;1&gt;" in html  # escaped, never raw model/dataset text
    assert json.loads((tmp_path / "report.json").read_text())["evals"][0]["samples"][0]["id"] == "p<1>"


def test_not_a_run_dir(tmp_path):
    with pytest.raises(DataError, match="not a presrm run"):
        write_report(tmp_path)
