"""`xlsearch eval` on the issue's Tatoeba reference set, pooled and pairwise: the language-neutral
targets. A file of its own: the suite's longest test, and `make test`'s workers take a file at a time."""

import json

import pytest

from tests.conftest import xlsearch

TATOEBA_POOL = ["cmn-eng", "jpn-eng", "kor-eng", "deu-eng", "ara-eng"]


@pytest.mark.processes
@pytest.mark.slow
def test_eval_meets_the_language_neutral_targets_on_tatoeba(tatoeba, tmp_path):
    """The issue's reference set: last 400 pairs of five languages plus their English sides, pooled, with
    language statistics fitted on the first 500 of each file."""
    report_path, plot = tmp_path / "report.json", tmp_path / "recall.png"
    result = xlsearch("eval", tatoeba, "--pairs", ",".join(TATOEBA_POOL), "--fit", "500", "--score", "400",
                      "--out", report_path, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "neutral+margin" in result.stdout and "en->ja" in result.stdout
    report = json.loads(report_path.read_text())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    configs = {(c["method"], c["scoring"]): c for c in report["configurations"]}
    plain, best = configs[("plain", "cosine")], configs[("neutral", "margin")]
    assert len(best["directions"]) == 10 and best["directions"]["zh->en"]["queries"] == 400
    assert plain["average"]["recall@1"] < 0.40 and plain["same_language_top10_non_english"] > 0.8
    assert best["average"]["recall@1"] >= 0.70
    assert best["worst"]["recall@1"] >= 0.45
    assert best["same_language_top10_non_english"] <= 0.30
    assert configs[("neutral", "cosine")]["average"]["recall@1"] >= 0.68
    assert report["language_detection_accuracy"] >= 0.95

    pairwise = xlsearch("eval", tatoeba, "--pairs", ",".join(TATOEBA_POOL), "--fit", "500", "--score", "400",
                        "--mode", "pairwise", "--format", "json")
    assert pairwise.returncode == 0, pairwise.stderr
    by_config = {(c["method"], c["scoring"]): c["directions"] for c in json.loads(pairwise.stdout)["configurations"]}
    # the search default (language-neutral margin) is never below plain cosine, in any direction
    for direction, plain_scores in by_config[("plain", "cosine")].items():
        assert by_config[("neutral", "margin")][direction]["recall@1"] >= plain_scores["recall@1"], direction
