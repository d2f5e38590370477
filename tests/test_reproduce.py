"""presrm reproduce: the report card, read from the kept evidence runs laid out as the two arms would be."""

from pathlib import Path

import pytest

from presrm.jsonio import read_json
from presrm.reproduce import CardLayout, collect, write_card

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture
def kept_arms(tmp_path) -> Path:
    """The judge ablation at M3 (docs/RESULTS.md) as a reproduction's folder: M1 from evidence_amx, the self-judge
    arm from evidence_norepeat (approach 4), the random arm from evidence_ablation_random."""
    links = {"self_judge/init": RESULTS / "evidence_amx" / "init",
             "self_judge/iter_1": RESULTS / "evidence_norepeat" / "iter_1",
             "random/iter_1": RESULTS / "evidence_ablation_random" / "iter_1"}
    for where, source in links.items():
        (tmp_path / where).mkdir(parents=True)
        for name in ("eval.json", "eval_samples.jsonl", "judge_eval"):
            if (source / name).exists():
                (tmp_path / where / name).symlink_to(source / name)
    (tmp_path / "self_judge" / "config.yaml").symlink_to(RESULTS / "evidence_norepeat" / "config.yaml")
    return tmp_path


def test_the_card_states_the_published_findings(kept_arms):
    data = collect(kept_arms, iterations=2)
    own, rnd = data["findings"]
    # docs/RESULTS.md: -12.2 points [-15.1, -9.1] against M1, -11.8 [-15.6, -7.9] against the random arm
    assert round(100 * own["difference"], 1) == -12.2 and [round(100 * x, 1) for x in own["ci95"]] == [-15.1, -9.1]
    assert round(100 * rnd["difference"], 1) == -11.8 and [round(100 * x, 1) for x in rnd["ci95"]] == [-15.6, -7.9]
    assert own["holds"] and rnd["holds"] and own["p"] < 0.001
    m1, final, random_final = data["models"]
    assert (m1["strict"]["correct"], final["strict"]["correct"], random_final["strict"]["correct"]) == (22, 23, 26)
    assert (m1["repeats"]["count"], final["repeats"]["count"], m1["no_answer"]["count"]) == (238, 56, 401)
    assert data["comparisons"]["self_vs_m1"]["strict"]["p_exact"] == pytest.approx(1.0)
    assert [j["model"] for j in data["judges"]] == ["M1", "M3, self-judge"]
    assert data["git"] == "63d5bb1d369d1398607a34ef52621babb8798aec"


def test_the_card_is_written_as_json_markdown_and_html(kept_arms):
    card = CardLayout(kept_arms)
    md, html = write_card(card, collect(kept_arms, iterations=2))
    text = md.read_text()
    assert "| the final model (M3) has a lower step error rate than M1 | -12.2% | [-15.1%, -9.1%] | < 0.001 | yes |" \
        in text
    assert "| M1 -> self-judge (1319 problems) | 22 -> 23 (p 1.000) |" in text
    page = html.read_text()
    assert page.startswith("<!doctype html>") and '<td class="yes">yes</td>' in page
    assert read_json(card.card_json)["findings"][1]["holds"] is True


def test_an_unfinished_reproduction_says_what_is_missing(kept_arms):
    (kept_arms / "random" / "iter_1" / "eval.json").unlink()
    with pytest.raises(Exception, match=r"random/iter_1/eval\.json missing; rerun with --resume"):
        collect(kept_arms, iterations=2)
