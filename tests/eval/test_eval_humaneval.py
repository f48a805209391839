"""The humaneval page's data and the scoring of its exports (the browser test is in test_eval_humaneval_browser.py)."""

from __future__ import annotations

import json

import pytest

from gad.eval.generations import Generation, append_generations
from gad.eval.humaneval import (
    build_page,
    outcome,
    page_data,
    read_export,
    render_page,
    score_results,
    side_of_a,
)


def make_dirs(tmp_path, n=6, extra=""):
    """Two generation folders over the same n prompts: A answers "A says i", B answers "B says i"."""
    msgs = [[{"role": "user", "content": f"question {i}"}] for i in range(1, n + 1)]
    a = [Generation("toy", str(i), msgs[i - 1], f"A says {i}{extra}") for i in range(1, n + 1)]
    b = [Generation("toy", str(i), msgs[i - 1], f"B says {i}{extra}") for i in range(1, n + 1)]
    a.append(Generation("toy", "only-a", [{"role": "user", "content": "q"}], "A alone"))
    append_generations(tmp_path / "model-a", a)
    append_generations(tmp_path / "model-b", b)
    return tmp_path / "model-a", tmp_path / "model-b"


def test_page_data_pairs_and_shuffles(tmp_path):
    dir_a, dir_b = make_dirs(tmp_path, n=20)
    data = page_data(dir_a, dir_b, seed=0)
    assert (data["a"], data["b"]) == ("model-a", "model-b")
    assert [it["id"] for it in data["items"]] == [str(i) for i in range(1, 21)]  # "only-a" has no pair
    lefts = [it["left"] for it in data["items"]]
    assert 0 < lefts.count("a") < 20  # both sides occur
    for it in data["items"]:
        assert it["responses"][0].startswith("A" if it["left"] == "a" else "B")
        assert it["left"] == ("a" if side_of_a(0, "toy", it["id"]) == "left" else "b")
    assert page_data(dir_a, dir_b, seed=0) == data  # deterministic
    assert [it["left"] for it in page_data(dir_a, dir_b, seed=1)["items"]] != lefts
    assert len(page_data(dir_a, dir_b, limit=3)["items"]) == 3
    with pytest.raises(ValueError, match="no \\(set, id\\) in common"):
        page_data(dir_a, dir_b, sets=["other"])


def test_page_escapes_script_breaking_text(tmp_path):
    dir_a, dir_b = make_dirs(tmp_path, n=2, extra="</script><script>alert(1)</script>\u2028")
    html = render_page(page_data(dir_a, dir_b, title="<b>T</b>"))
    assert "</script><script>alert(1)" not in html
    assert "<title>&lt;b&gt;T&lt;/b&gt;</title>" in html
    assert html.count("</script>") == 2  # the data element and the page's own script


def test_outcome_undoes_the_shuffle():
    assert outcome({"left": "a", "choice": "left"}) == "a"
    assert outcome({"left": "b", "choice": "left"}) == "b"
    assert outcome({"left": "b", "choice": "right"}) == "a"
    assert outcome({"left": "a", "choice": "tie"}) == "tie"
    with pytest.raises(ValueError, match="choice"):
        outcome({"left": "a", "choice": "A"})


def _export(judgments, a="A", b="B"):
    return {"format": "gad-humaneval-results", "a": a, "b": b, "judgments": judgments}


def test_score_results_by_hand(tmp_path):
    # A wins 6, tie 2, B wins 2 (n = 10); decisive 8, A preferred 6/8 → sign test p = 2·(28+8+1)/256
    j = [{"left": "a", "choice": "left"}] * 3 + [{"left": "b", "choice": "right"}] * 3
    j += [{"left": "a", "choice": "tie"}] * 2 + [
        {"left": "a", "choice": "right"},
        {"left": "b", "choice": "left"},
    ]
    score = score_results([_export(j[:5]), _export(j[5:])])
    assert (score.win.count, score.tie.count, score.loss.count, score.win.n) == (6, 2, 2, 10)
    assert score.win.rate == 0.6 and score.n_raters == 2
    assert score.a_preferred.count == 6 and score.a_preferred.n == 8
    assert score.p_value == pytest.approx(2 * 37 / 256)
    assert score.win.low < 0.6 < score.win.high
    text = score.format()
    assert "A wins" in text and "60.0%" in text
    with pytest.raises(ValueError, match="different models"):
        score_results([_export(j), _export(j, a="C")])
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a humaneval export"):
        read_export(p)


def test_commands(tmp_path, capsys, monkeypatch):
    from gad import cli

    # Only these two: the parser imports every command module, and others may be mid-construction.
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k.startswith("humaneval")})
    dir_a, dir_b = make_dirs(tmp_path, n=3)
    out = tmp_path / "page.html"
    assert cli.main(["humaneval", "--a", str(dir_a), "--b", str(dir_b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"page: {out}")
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert cli.main(["humaneval", "--a", str(dir_a), "--b", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no generations at" in capsys.readouterr().err

    export = tmp_path / "results.json"
    export.write_text(json.dumps(_export([{"left": "b", "choice": "right"}], a="x", b="y")))
    assert cli.main(["humaneval-score", str(export), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["win"]["count"] == 1 and printed["a"] == "x"
    assert cli.main(["humaneval-score", str(tmp_path / "missing.json")]) == 2
    assert "humaneval-score: error:" in capsys.readouterr().err
    assert build_page(dir_a, dir_b, tmp_path / "sub" / "p.html").is_file()


def test_an_export_with_a_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "r.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(_export([{"left": "a", "choice": "left"}])).encode())
    assert read_export(p)["a"] == "A"


def test_an_export_that_is_not_utf8_names_file_and_line(tmp_path):
    from gad.errors import UserError

    p = tmp_path / "r.json"
    p.write_bytes(json.dumps(_export([]), indent=1).encode() + b"\n\xff")
    with pytest.raises(UserError, match=r"r.json:7: not UTF-8 text \(byte 0xff at column 1\)"):
        read_export(p)
    p.write_text("{")
    with pytest.raises(UserError, match=r"r.json: not valid JSON"):
        read_export(p)
