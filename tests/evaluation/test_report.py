"""The one report writer on hand-made records: known means, intervals that hold them, paired
differences, subjects counted once, every file written, prompts escaped in the page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from dti.evaluation.protocol import ScorerInfo
from dti.evaluation.report import REPORT_FILES, headline_keys, metric_key, table_columns, write_report

INFOS = {
    "img": ScorerInfo("img", "thumbs", None, "cosine in [-1, 1]", image_metric="Thumb"),
    "txt": ScorerInfo("txt", "words", "v1", "fraction in [0, 1]", text_metric="Words", notes="toy"),
    "both": ScorerInfo("both", "judge", None, "[0, 1]", image_metric="Judge image", text_metric="Judge text"),
}


def record(method, subject, seed, prompt, scores):
    return {
        "method": method,
        "subject": subject,
        "kind": "object",
        "prompt": prompt.replace("{}", "<t>"),
        "text_prompt": prompt.replace("{}", subject),
        "seed": seed,
        "image": f"images/{method}/{subject}-{seed}.png",
        "scores": scores,
    }


def hand_made():
    """ti: subject a has 3 images at 1.0, subject b 1 image at 0.0 (per image .75, per subject .5);
    dti is ti + 0.25 on the image metric and ti - 0.5 on the text metric, image for image."""
    records = []
    for method, di, dt in (("ti", 0.0, 0.0), ("dti", 0.25, -0.5)):
        for subject, seeds, value in (("a", (0, 1, 2), 1.0), ("b", (0,), 0.0)):
            for seed in seeds:
                scores = {"img.image": value + di, "txt.text": 0.9 - value * 0.1 + dt + seed * 0.01, "both.image": 0.5, "both.text": 0.25}
                records.append(record(method, subject, seed, "a {} <b>bold</b> & 'quoted'", scores))
    return records


class Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.src.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_summary_numbers_and_files(tmp_path):
    records = hand_made()
    summary = write_report(records, INFOS, tmp_path, "toy <report>", {"masks": "m/", "seeds": [0, 1, 2]})
    for name in REPORT_FILES:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    ti, dti = summary["methods"]["ti"], summary["methods"]["dti"]
    assert ti["images"] == 4 and ti["subjects"] == ["a", "b"]
    assert ti["overall"]["img.image"]["mean"] == pytest.approx(0.75)
    assert ti["over_subjects"]["img.image"]["mean"] == pytest.approx(0.5)  # each subject once
    assert ti["per_subject"] == {
        "a": pytest.approx({"img.image": 1.0, "txt.text": 0.81, "both.image": 0.5, "both.text": 0.25}),
        "b": pytest.approx({"img.image": 0.0, "txt.text": 0.9, "both.image": 0.5, "both.text": 0.25}),
    }
    for entry in (ti, dti):
        for over in ("overall", "over_subjects"):
            for iv in entry[over].values():
                assert iv["low"] <= iv["mean"] <= iv["high"]
    # a constant metric has a zero-width interval; a varying one does not
    assert ti["overall"]["both.image"]["low"] == ti["overall"]["both.image"]["high"] == 0.5
    assert ti["overall"]["img.image"]["low"] < 0.75 < ti["overall"]["img.image"]["high"]
    diff = summary["differences"]["dti - ti"]
    assert diff["pairs"] == 4 and diff["reference"] == "ti"
    assert diff["per_image"]["img.image"]["mean"] == pytest.approx(0.25)
    assert diff["per_image"]["txt.text"]["mean"] == pytest.approx(-0.5)
    assert diff["per_image"]["img.image"]["low"] == pytest.approx(0.25)  # identical differences: no spread
    assert diff["over_subjects"]["txt.text"]["n"] == 2
    assert summary["masks_used"] is True
    assert summary["scorers"]["txt"]["revision"] == "v1"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["methods"]["ti"]["overall"]["img.image"]["mean"] == pytest.approx(0.75)
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_markdown_table_has_the_method_columns(tmp_path):
    write_report(hand_made(), INFOS, tmp_path, "toy", {})
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    # METHOD.md section 6: image sim, text sim, then one column per remaining metric
    assert header == "| method | subjects | images | image sim (Thumb) | text sim (Words) | Judge image | Judge text |"
    ti_row = next(line for line in md.splitlines() if line.startswith("| ti |"))
    assert "0.750 [" in ti_row
    assert "| dti - ti | 4 | 0.250 [0.250, 0.250] | -0.500 [-0.500, -0.500]" in md
    assert "thumbs" in md and "cosine in [-1, 1]" in md


def test_html_escapes_prompts_and_links_every_image(tmp_path):
    records = hand_made()
    write_report(records, INFOS, tmp_path, "toy <report>", {}, extra_sections=[("Notes", "x < y")])
    page = (tmp_path / "report.html").read_text()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<report>" not in page
    parser = Sources()
    parser.feed(page)
    assert parser.src[0] == "scatter.png"
    assert sorted(set(parser.src[1:])) == sorted({r["image"] for r in records})
    assert any("x < y" in t for t in parser.text)


def test_no_ti_no_differences_and_missing_values_skipped(tmp_path):
    records = [r for r in hand_made() if r["method"] == "dti"]
    records[0]["scores"] = {"img.image": 0.25}  # this image has no text scores
    summary = write_report(records, INFOS, tmp_path, "toy", {})
    assert summary["differences"] == {}
    assert summary["methods"]["dti"]["overall"]["txt.text"]["n"] == 3
    assert summary["masks_used"] is False


def test_headline_follows_scorer_order():
    metrics = ["both.image", "both.text", "img.image", "txt.text"]
    assert headline_keys(INFOS, metrics) == ("img.image", "txt.text")
    reordered = {"both": INFOS["both"], "img": INFOS["img"]}
    assert headline_keys(reordered, metrics) == ("both.image", "both.text")
    summary = {"headline": {"image": "img.image", "text": None}, "metrics": {"img.image": {"label": "Thumb"}, "x.image": {"label": "X"}}}
    assert table_columns(summary) == [("image sim (Thumb)", "img.image"), ("X", "x.image")]
    assert metric_key("dinov2", "image") == "dinov2.image"
    with pytest.raises(ValueError):
        metric_key("dinov2", "both")


def test_long_run_lists_are_summarized_in_the_pages(tmp_path):
    runs = [{"method": "dti", "subject": f"s{i}"} for i in range(12)]
    summary = write_report(hand_made(), INFOS, tmp_path, "toy", {"runs": runs, "steps": 50})
    assert summary["settings"]["runs"] == runs and json.loads((tmp_path / "summary.json").read_text())["settings"]["runs"] == runs
    md = (tmp_path / "report.md").read_text()
    assert '"runs": "12 entries (see summary.json)"' in md and '"steps": 50' in md


def test_section_markdown_becomes_html_and_escapes_everything():
    """The demo's sections were raw Markdown in a <pre> (literal |---| and backticks); now HTML, escaped."""
    from dti.evaluation.markup import inline, to_html

    page = to_html(
        "Ran in 3 s (`<a & b>`).\nsecond line\n\n| word | note |\n|---|:---:|\n| `<ruby>` | a \\| b <script> |\n\n"
        "- one **two**\n  continued\n- ![plot](ruby/norms.png) [bad](javascript:alert(1)) [abs](/etc/passwd) [ok](https://x.org/a)\n\n"
        "```\n| not | a table |\n```"
    )
    assert page.startswith("<p>Ran in 3 s (<code>&lt;a &amp; b&gt;</code>). second line</p>")
    assert "<table><thead><tr><th>word</th><th>note</th></tr></thead>" in page and "---" not in page.split("<pre>")[0]
    assert "<td><code>&lt;ruby&gt;</code></td><td>a | b &lt;script&gt;</td>" in page and "<script>" not in page
    assert "<li>one <strong>two</strong> continued</li>" in page
    assert "<img src='ruby/norms.png' alt='plot' loading='lazy'>" in page and "<a href='https://x.org/a'>ok</a>" in page
    assert "href='javascript" not in page and "[bad](javascript:alert(1))" in page and "href='/etc" not in page
    assert page.endswith("<pre>| not | a table |</pre>")
    assert inline("Slerp from `<ruby>`") == "Slerp from <code>&lt;ruby&gt;</code>"
