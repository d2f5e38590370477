"""report.html / report.json from synthetic run and eval directories (no model, no browser)."""

import json
import re

import pytest

from presrm import plots
from presrm.errors import DataError
from presrm.report import _score_colour, collect, eval_view, mark_claims, script_json, search_view, write_report
from tests.report_fixtures import eval_records, make_eval_dir, make_run_dir, search_run


@pytest.mark.parametrize(("score", "colour"), [(None, "#eee"), (0.0, "hsl(0, 70%, 85%)"), (0.5, "hsl(60, 70%, 85%)"),
                                               (1.0, "hsl(120, 70%, 85%)"), (2.0, "hsl(120, 70%, 85%)")])
def test_score_colour(score, colour):
    assert _score_colour(score) == colour


WRONG = {"text": "3 + 4 = 8", "ok": False, "value": "7", "reason": "left side is 7, right side is 8"}
RIGHT = {"text": "8*2 = 16", "ok": True, "value": "16", "reason": "exact"}


@pytest.mark.parametrize(("text", "claims", "expected"), [
    ("no claims <here>", [], "no claims &lt;here&gt;"),
    ("so 3 + 4 = 8.", [WRONG],
     'so <mark class="wrong" title="3 + 4 = 8: left side is 7, right side is 8; computed 7">3 + 4 = 8</mark>.'),
    ("3 + 4 = 8 and 8*2 = 16", [WRONG, RIGHT],
     '<mark class="wrong" title="3 + 4 = 8: left side is 7, right side is 8; computed 7">3 + 4 = 8</mark> and '
     '<span class="claim" title="8*2 = 16: exact; computed 16">8*2 = 16</span>'),
    ("claim text not in the step", [WRONG], "claim text not in the step"),
    ("<b>1 + 1 = 3</b>", [{"text": "1 + 1 = 3", "ok": False, "value": None, "reason": "r\"<x>"}],
     '&lt;b&gt;<mark class="wrong" title="1 + 1 = 3: r&#34;&lt;x&gt;">1 + 1 = 3</mark>&lt;/b&gt;'),
])
def test_mark_claims_escapes_and_highlights(text, claims, expected):
    assert str(mark_claims(text, claims)) == expected


@pytest.mark.parametrize(("score", "verdict", "disagrees"), [
    (0.9, "correct", False), (0.2, "correct", True), (0.9, "incorrect", True), (0.1, "incorrect", False),
    (0.5, "correct", False), (0.9, "unverifiable", False), (None, "incorrect", False), (0.9, None, False)])
def test_pointwise_disagrees(score, verdict, disagrees):
    assert plots.pointwise_disagrees(score, verdict) is disagrees


def _c(verdict, score=None, wins=None):
    return {"verdict": verdict, "score": score, "wins": wins}


@pytest.mark.parametrize(("cands", "expected"), [
    ([_c("correct", 0.9), _c("incorrect", 0.1)], (1.0, 1)),
    ([_c("correct", 0.1), _c("incorrect", 0.9)], (0.0, 1)),
    ([_c("correct", 0.5), _c("incorrect", 0.5), _c("unverifiable", 0.9)], (0.5, 1)),
    ([_c("correct", wins=3), _c("correct", wins=0), _c("incorrect", wins=1)], (1.0, 2)),  # wins rank when present
    ([_c("correct", 0.9), _c("unverifiable", 0.1)], (0.0, 0)),
    ([], (0.0, 0)),
])
def test_ranking_couples(cands, expected):
    assert plots.ranking_couples(cands) == expected


@pytest.mark.parametrize(("cand", "n", "score"), [({"score": 0.25}, 4, 0.25), ({"wins": 1.5}, 4, 0.5),
                                                  ({"wins": 1.0}, 1, None), ({}, 4, None),
                                                  ({"score": 0.7, "wins": 3}, 4, 0.7)])
def test_candidate_score(cand, n, score):
    assert plots.candidate_score(cand, n) == score


@pytest.mark.parametrize(("reason", "key"), [("score margin 0.0012 <= min_margin", "score margin <= min_margin"),
                                             ("score margin -1e-05 <= min_margin", "score margin <= min_margin"),
                                             ("chosen step has verifiably wrong arithmetic",
                                              "chosen step has verifiably wrong arithmetic")])
def test_reason_key_groups_reasons_that_differ_in_numbers(reason, key):
    assert plots._reason_key(reason) == key


def lists(html: str) -> dict[str, list[dict]]:
    """Every problem list of a report page: section id -> its items (id, html, filter flags)."""
    found = re.findall(r'<section class="plist-section" id="([^"]+)">.*?'
                       r'<script type="application/json" class="items">(.*?)</script>', html, re.S)
    return {sec: json.loads(body) for sec, body in found}


def test_script_json_cannot_break_out_of_its_script():
    text = str(script_json([{"html": "</script><script>alert(1)</script><!-- x"}]))
    assert "</" not in text and "<!--" not in text
    assert json.loads(text) == [{"html": "</script><script>alert(1)</script><!-- x"}]


def test_dashboard_series_match_the_records(tmp_path):
    data = collect(make_run_dir(tmp_path / "run", problems=20, searched=12, iterations=2))
    dash = data["dashboard"]
    assert [a["label"] for a in dash["accuracy"]] == ["M0", "M1", "M2"]
    assert dash["accuracy"][0]["strict"] == data["evals"][0]["summary"]["strict"]
    m0 = next(j for j in dash["judges"] if j["label"] == "M0")
    # M0 judged the eval_before steps and iteration 0's search candidates (pointwise scores). Of the 20 eval
    # solutions only step 2 ("a + b = total") is decided: right in 5, wrong in 15. Its score lies on the wrong
    # side of 0.5 in 7 of them (wrong steps scored 0.722, 0.545, 0.758, 0.797, 0.911; right ones 0.017, 0.346).
    assert {k: m0["agreement"]["eval_pointwise"][k] for k in ("k", "n", "rate")} == {"k": 13, "n": 20, "rate": 0.65}
    hists = {h["source"]: h for h in m0["hists"]}
    assert hists["eval"]["n"] == {"correct": 5, "incorrect": 15} and hists["eval"]["kind"] == "probability"
    cands = [c for r in data["iterations"][0]["search"] for e in r["search"] for c in e["candidates"]
             if e.get("score_kind") == "pointwise"]
    assert sum(hists["search"]["n"].values()) == sum(c["verdict"] != "unverifiable" for c in cands)
    assert sum(hists["search"]["hist"]["correct"]) == hists["search"]["n"]["correct"]
    m1 = next(j for j in dash["judges"] if j["label"] == "M1")
    assert "search_pointwise" not in m1["agreement"]  # pairwise search: a win rate is no probability
    assert [h["kind"] for h in m1["hists"] if h["source"] == "search"] == ["win rate"]
    stats = data["iterations"][1]["stats"]["judge_verifier"]
    assert m1["agreement"]["search_within_step"]["n"] == stats["right_vs_wrong_couples"]
    assert m1["agreement"]["search_within_step"]["rate"] == pytest.approx(stats["within_step_agreement"])
    for it, p in zip(data["iterations"], dash["pairs"], strict=True):
        entries = [e for r in it["search"] for e in r["search"]]
        assert p["steps_with_pair"] == sum(bool(e.get("pair")) for e in entries) == it["pairs"] == p["pairs"]
        assert p["rollbacks"] == sum(e.get("action") == "rollback" for e in entries) == it["stats"]["rollbacks"]
    assert dash["pairs"][1]["rollbacks"] > 0 and dash["pairs"][0]["rollbacks"] == 0
    assert {s["source"] for s in dash["steps"]} == {"eval", "search"}


def test_init_stage_shifts_the_labels(tmp_path):
    data = collect(make_run_dir(tmp_path / "run", problems=6, searched=3, iterations=1, init=True))
    assert [(e["label"], e["model_index"]) for e in data["evals"]] == [("M0", -1), ("M1", 0), ("M2", 1)]
    assert data["model_shift"] == 1
    assert data["init"] == {"ift_examples": 5, "eft_examples": None,
                            "train": {"optimizer_steps": 3, "first_loss": 1.9, "last_loss": 1.2}}
    html = write_report(tmp_path / "run").read_text()
    assert "Initialisation (M1 = M0, the base model, after IFT/EFT fine-tuning)" in html
    assert "step search <small>(policy and judge M1)</small>" in html


def test_train_run_report_is_self_contained_and_complete(tmp_path):
    root = make_run_dir(tmp_path / "run", problems=30, searched=10)
    html = write_report(root).read_text()
    for section in ("summary", "dashboard", "eval-0", "eval-1", "eval-2", "search-0", "search-1", "config"):
        assert f'id="{section}"' in html
    assert html.count("<svg") == 5  # accuracy, agreement, steps, pairs, histograms
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "@import" not in html and "<link" not in html
    assert "search.temperature" in html and "0123abc" in html and "2.13.0" in html  # config, git, versions
    items = lists(html)
    assert {k: len(v) for k, v in items.items()} == {"eval-0": 30, "eval-1": 30, "eval-2": 30, "search-0": 10,
                                                      "search-1": 10}
    assert items["eval-1"][7]["id"] == "eval-1-p7" and set(items["eval-1"][7]["f"]) == {"ok_strict", "ok_flexible",
                                                                                         "disagree"}
    frag = "".join(it["html"] for v in items.values() for it in v)
    assert "Ann has" in frag and "&lt;and&gt;" in frag and "<and>" not in frag  # dataset text escaped
    assert "pair kept: #" in frag and "rollback: all candidates tie" in frag
    assert "pairwise matches" in frag and '<mark class="wrong"' in frag
    # Without JavaScript the first problems of each list are in the page as HTML.
    assert html.count('<details class="prob"') == 3 * 30 + 2 * 10
    assert items["eval-0"][0]["html"] in html
    report = json.loads((root / "report.json").read_text())
    assert len(report["evals"]) == 3 and len(report["iterations"][1]["search"]) == 10
    assert report["dashboard"]["pairs"][0]["pairs"] == report["iterations"][0]["pairs"]
    assert report["config"]["git"] == "0123abc" and report["kind"] == "train"


def test_eval_dir_report(tmp_path):
    root = make_eval_dir(tmp_path / "eval", problems=12)
    html = write_report(root).read_text()
    assert "Evaluation: solutions" in html and 'id="search-' not in html
    assert "protocol.decoding" not in html and ">decoding.mode<" in html and "greedy" in html
    assert html.count("<svg") == 4  # no pairs figure without step search
    data = json.loads((root / "report.json").read_text())
    assert data["kind"] == "eval" and data["evals"][0]["label"] == "embedded"
    assert len(data["evals"][0]["samples"]) == 12


def test_eval_dir_of_no_problems_reports_without_steps_figure(tmp_path):
    """An evaluation of zero problems (an empty data file) used to crash the steps figure (mean None)."""
    root = make_eval_dir(tmp_path / "eval", problems=0)
    html = write_report(root).read_text()
    data = json.loads((root / "report.json").read_text())
    assert data["evals"][0]["summary"]["n"] == 0 and data["dashboard"]["steps"][0]["mean"] is None
    assert "Evaluation: solutions" in html


def test_caps_limit_the_html_not_the_json(tmp_path):
    root = make_run_dir(tmp_path / "run", problems=12, searched=6, iterations=1)
    html = write_report(root, caps={"eval": 5, "search": 2, "nojs": 3}).read_text()
    assert [len(v) for v in lists(html).values()] == [5, 5, 2]
    assert html.count('<details class="prob"') == 3 + 3 + 2
    assert "This page holds the first 5 of 12 problems" in html
    assert "JavaScript is off: the first 3 of 5 problems are shown" in html
    assert len(json.loads((root / "report.json").read_text())["evals"][0]["samples"]) == 12


def test_eval_view_flags():
    rec = eval_records(1, seed=3, p_right=0.0)[0]  # one step has wrong arithmetic
    rec["step_scores"] = [0.9, 0.95, 0.2]
    rec["beam"] = {"width": 4}
    v = eval_view(rec, 0)
    assert v["wrong_steps"] == 1 and v["disagree"] and v["min_score"] == 0.2
    assert v["extra"] == {"beam": {"width": 4}}
    assert [s["verdict"] for s in v["steps"]] == ["unverifiable", "incorrect", "unverifiable"]


def test_search_view_tolerates_missing_and_unknown_keys():
    rec = {"id": "x", "steps": ["Step 1: 2 + 2 = 5"], "search": [
        {"step": 1, "candidates": [{"text": "Step 1: 2 + 2 = 5", "verdict": "incorrect", "score": 0.8, "flag": "m"},
                                   {"text": "Step 1: 2 + 2 = 4", "verdict": "correct", "score": 0.3}],
         "chosen": 0, "rejected": 1, "pair": False, "dropped": "chosen step has verifiably wrong arithmetic",
         "new_key": 1},
        {"step": 2, "action": "rollback"}, {"step": 3, "candidates": [], "pair": False, "dropped": "no candidate"}]}
    v = search_view(rec, 0)
    assert [e["kind"] for e in v["entries"]] == ["drop", "rollback", "drop"]
    assert v["entries"][0]["misranked"] and v["disagree"] and v["rollbacks"] == 1
    assert v["entries"][0]["extra"] == {"new_key": 1}
    assert v["entries"][0]["candidates"][0]["extra"] == {"flag": "m"}
    # The wrong claim is found again by the verifier when the record kept only the verdict.
    assert v["path"][0]["verdict"] == "incorrect" and "<mark" in str(v["path"][0]["html"])
    assert v["pred"] is None and not v["correct"]


def test_search_records_render_in_both_shapes():
    for pairwise in (False, True):
        records, _ = search_run(6, seed=1, pairwise=pairwise)
        for i, rec in enumerate(records):
            v = search_view(rec, i)
            assert len(v["path"]) == len(rec["steps"])
            assert v["pairs"] == sum(bool(e["pair"]) for e in rec["search"])
            for e in v["entries"]:
                assert e["has_scores"] is (not pairwise and len(e["candidates"]) > 1)
                assert e["kind"] != "rollback" or not any(c["role"] for c in e["candidates"])


def test_eval_view_shows_decoding_details():
    rows = eval_records(14, seed=2, p_right=0.5)
    maj, best, beam = eval_view(rows[3], 3), eval_view(rows[5], 5), eval_view(rows[6], 6)
    assert maj["votes"]["flexible"][0]["count"] == 2 and [c["shown"] for c in maj["candidates"]] == [True, False,
                                                                                                       False]
    assert best["process_reward"] == 0.61 and best["candidates"][1]["process_reward"] == 0.42
    assert len(beam["beam"]) == 1 and beam["beam"][0]["candidates"][0]["kept"]
    assert eval_view(rows[0], 0)["candidates"] == [] and not eval_view(rows[0], 0)["extra"]


def test_run_dir_with_only_a_config_renders(tmp_path):
    (tmp_path / "config.yaml").write_text("config: {model: embedded}\nversions: {}\ngit: null\n")
    html = write_report(tmp_path).read_text()
    assert "No figures" in html and "embedded" in html


def test_not_a_run_dir(tmp_path):
    with pytest.raises(DataError, match="not a presrm run"):
        write_report(tmp_path)


def test_accuracy_table_shows_the_step_error_rate(tmp_path):
    root = make_eval_dir(tmp_path / "eval", problems=12)
    e = json.loads((root / "results.json").read_text())["step_errors"]
    assert e["verifiable"] > e["wrong"] > 0
    html = write_report(root).read_text()
    lo, hi = e["ci95"]
    assert "wrong steps (95% CI)" in html
    assert f"{100 * e['rate']:.1f}%</span> <small>[{100 * lo:.1f}%, {100 * hi:.1f}%]</small>" in html
    assert f"{e['wrong']} wrong of {e['verifiable']} verifiable steps over 12 problems" in html
    assert "verifier timeouts" not in html  # none happened


def test_old_summary_without_step_errors_renders(tmp_path):
    root = make_eval_dir(tmp_path / "eval", problems=3)
    res = json.loads((root / "results.json").read_text())
    for key, value in (("step_errors", None), ("verifier_timeouts", 2)):
        res[key] = value  # a summary without the rate (an old one would lack the key: .get gives None too)
    (root / "results.json").write_text(json.dumps(res))
    html = write_report(root).read_text()
    assert re.search(r"\]</small></td><td>n/a <small class=\"warn\">2 verifier timeouts</small></td>", html)
    del res["step_errors"], res["verifier_timeouts"]
    (root / "results.json").write_text(json.dumps(res))
    assert re.search(r"\]</small></td><td>n/a</td>", write_report(root).read_text())


def test_accuracy_table_shows_repeats_even_for_old_summaries(tmp_path):
    root = make_eval_dir(tmp_path / "eval", problems=4)
    rows = [json.loads(line) for line in (root / "samples.jsonl").read_text().splitlines()]
    rows[0]["steps"] = rows[0]["steps"] + rows[0]["steps"][-1:]  # problem 0 states its last step twice
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = json.loads((root / "results.json").read_text())
    del res["repeats"], res["no_answer"]  # written before the counts existed: the report counts the samples
    (root / "results.json").write_text(json.dumps(res))
    html = write_report(root).read_text()
    assert "repeats a step (95% CI)" in html and '<span title="count: 1">25.0%</span>' in html
    report = json.loads((root / "report.json").read_text())
    assert report["evals"][0]["summary"]["repeats"]["count"] == 1
