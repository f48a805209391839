"""The humaneval page in a real headless Chromium (Debian's, driven by Playwright).

A scripted rater reads which model is on which side from the page itself, judges every item by
button and by keyboard, changes one choice, reloads (judgments must survive in localStorage), then
exports by download and as text; scoring both exports must give back exactly the intended outcomes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gad.eval.generations import Generation, append_generations
from gad.eval.humaneval import build_page, read_export, score_results

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright  # the dev extra; only the browser may be missing

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def _make_dirs(tmp_path: Path, n: int):
    """A answers "A says i", B answers "B says i"; item 1's answers would break a careless page."""
    nasty = " </script><b>bold?</b> & \u2028"
    a, b = [], []
    for i in range(1, n + 1):
        msgs = [{"role": "user", "content": f"Question {i}?"}]
        a.append(Generation("toy", str(i), msgs, f"A says {i}" + (nasty if i == 1 else "")))
        b.append(Generation("toy", str(i), msgs, f"B says {i}"))
    append_generations(tmp_path / "A", a)
    append_generations(tmp_path / "B", b)
    return tmp_path / "A", tmp_path / "B"


# What the rater means for each item (by model, not by side), and how they say it.
PLAN = {"1": "a", "2": "b", "3": "tie", "4": "a", "5": "b", "6": "a"}
BY_KEY = {"2", "4", "6"}  # keyboard for these items, buttons for the others


def _current(page) -> tuple[str, str]:
    """(item id, model on the left) read from what the page shows."""
    item_id = page.text_content("#item-meta").split("·")[-1].strip()
    left_model = "a" if page.text_content("#left-text").startswith("A says") else "b"
    return item_id, left_model


def _judge(page, want: str, left_model: str, by_key: bool) -> None:
    if want == "tie":
        side = "tie"
    else:
        side = "left" if want == left_model else "right"
    if by_key:
        page.keyboard.press({"left": "1", "tie": "t", "right": "ArrowRight"}[side])
    else:
        page.click(f"#choose-{side}")


def test_click_through_export_and_score(tmp_path, page):
    dir_a, dir_b = _make_dirs(tmp_path, len(PLAN))
    html = build_page(dir_a, dir_b, tmp_path / "page.html", name_a="model-A", name_b="model-B", seed=3)
    page.goto(html.as_uri())
    assert page.text_content("#progress-text") == "0 / 6 judged"
    assert "</script><b>bold?</b> &" in page.text_content("#left-text") + page.text_content("#right-text")

    sides = {}
    for k in range(len(PLAN)):
        item_id, left_model = _current(page)
        assert item_id == str(k + 1)  # choosing moves on to the next item
        sides[item_id] = left_model
        _judge(page, PLAN[item_id], left_model, item_id in BY_KEY)
        page.wait_for_function(f"document.body.dataset.judged === '{k + 1}'")
    assert set(sides.values()) == {"a", "b"}  # the seed put A on both sides at least once
    assert page.text_content("#progress-text") == "6 / 6 judged"
    assert page.is_visible("#done")

    # Change item 5 from "b" to "a": go back from item 6 with the keyboard and judge again.
    page.keyboard.press("p")
    assert _current(page)[0] == "5"
    assert page.get_attribute("#choose-" + ("left" if sides["5"] == "b" else "right"), "class").endswith(
        "active"
    )
    _judge(page, "a", sides["5"], by_key=False)
    plan = dict(PLAN, **{"5": "a"})

    # Judgments survive a reload (localStorage).
    page.reload()
    assert page.text_content("#progress-text") == "6 / 6 judged"
    page.fill("#rater", "tester")

    with page.expect_download() as download:
        page.click("#export-download")
    saved = tmp_path / "results.json"
    download.value.save_as(saved)
    page.click("#export-copy")
    copied = tmp_path / "copied.json"
    copied.write_text(page.input_value("#export-text"))

    expected = {"a": list(plan.values()).count("a"), "b": list(plan.values()).count("b"), "tie": 1}
    for path in (saved, copied):
        export = read_export(path)
        assert export["rater"] == "tester" and export["n_items"] == 6
        assert {j["id"]: j["left"] for j in export["judgments"]} == sides
        score = score_results([export])
        assert (score.a, score.b) == ("model-A", "model-B")
        assert (score.win.count, score.tie.count, score.loss.count) == (
            expected["a"],
            expected["tie"],
            expected["b"],
        )
    # per item, too: de-shuffling each judgment gives back the plan
    from gad.eval.humaneval import outcome

    assert {j["id"]: outcome(j) for j in json.loads(saved.read_text())["judgments"]} == plan
