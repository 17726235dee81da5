"""The app as a person uses it, in a real browser, end to end on dti-mini: upload photos, start two
words, watch progress and a sample appear, stop and resume one, see them finish, open a word, move the
blend slider, read an evaluation report. Skips in one line where chromium or playwright is missing."""

from __future__ import annotations

import json
import re

import pytest
from tests.ui import browser
from tests.ui.conftest import mini_photos

pytestmark = [
    pytest.mark.skipif(browser.why_no_browser() is not None, reason=str(browser.why_no_browser())),
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),  # gradio's pandas calls
]

FAST = {"validation_every": 4, "checkpoint_every": 4, "sample_steps": 4}


def job_state(ctx, name: str) -> str:
    return next(j.state for j in ctx.queue.jobs() if j.name == name)


def test_a_word_from_photos_to_report(tmp_path):
    root = tmp_path / "ws"
    ruby = sorted(mini_photos(tmp_path / "ruby", "ruby", 4).iterdir())
    mint = sorted(mini_photos(tmp_path / "mint", "mint", 4).iterdir())
    with browser.served(root) as (url, ctx), browser.browser_page(url) as page:
        # New word: the command shown is the command queued
        browser.new_word(page, ruby, "<ruby>", "star", {"steps": 16, **FAST})
        browser.wait_text(page, "command", "--steps 16")
        command = browser.text(page, "command")
        assert "--steps 16" in command and "--validation-every 4" in command and "--token '<ruby>'" in command
        browser.new_word(page, mint, "<mint>", "circle", {"steps": 4, **FAST})
        jobs = ctx.queue.jobs()
        assert [j.name for j in jobs] == ["<ruby>", "<mint>"]
        assert jobs[0].argv[jobs[0].argv.index("--steps") + 1] == "16"
        for name in ("ruby", "mint"):  # each word its own photos: the form starts empty after Start
            assert sorted(p.name for p in (root / "photos" / name).iterdir()) == [f"{i:02d}.png" for i in range(4)]
        assert (root / "photos" / "mint" / "00.png").read_bytes() == mint[0].read_bytes()

        # Queue: progress and a sample appear while it trains; stop it, then resume it
        browser.tab(page, "Queue")
        page.wait_for_function("() => /step ([4-9]|1[0-5]) of 16/.test(document.getElementById('progress')?.innerText || '')")
        page.wait_for_selector("#live-sample img", timeout=60_000)
        page.wait_for_selector("#live-chart img")
        browser.choose(page, "job-pick", "<ruby>")
        page.locator("#job-stop").click()
        browser.wait_text(page, "job-action", "stop asked")
        page.wait_for_function("() => (document.getElementById('jobs')?.innerText || '').includes('stopped')", timeout=60_000)
        assert job_state(ctx, "<ruby>") == "stopped"
        stopped_at = max(int(p.stem.split("-")[1]) for p in (root / "runs" / "ruby" / "checkpoints").glob("step-*.pt"))
        assert 0 < stopped_at < 16
        page.locator("#job-resume").click()
        browser.wait_text(page, "job-action", "back in the queue")
        # the worker took <mint> meanwhile (it was next), then comes back to <ruby>
        page.wait_for_function("() => (document.getElementById('jobs')?.innerText.match(/done/g) || []).length >= 2", timeout=150_000)
        log = (root / ".ui" / "logs" / f"{ctx.queue.jobs()[0].id}.log").read_text()
        assert "--resume runs/ruby" in log and re.search(r"resumed at step \d+", log), log[-500:]
        records = [json.loads(line) for line in (root / "runs" / "ruby" / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(17))  # one record per step: the resume continued, nothing lost

        # Words: the word's samples, norm chart, inspect with the nearest vocabulary words, its files
        browser.tab(page, "Words")
        browser.choose(page, "word-pick", "runs/ruby")
        browser.wait_text(page, "word-inspect", "nearest by cosine")
        assert "<ruby>" in browser.text(page, "word-inspect")
        page.wait_for_selector("#word-samples img")
        link = page.locator('#word-files td[aria-label="concept.safetensors"] ~ td a')
        link.wait_for()
        download = page.request.get(link.get_attribute("href"))  # the file for download is the run's own
        assert download.ok and download.body() == (root / "runs" / "ruby" / "concept.safetensors").read_bytes()

        page.locator("#convert").click()  # ComfyUI's file, made on request
        browser.wait_text(page, "word-message", "wrote 1 file(s) for comfyui")
        assert [p.name for p in (root / "runs" / "ruby" / "converted" / "comfyui").iterdir()] == ["ruby.safetensors"]

        # Play: the blend strip, and the slider moves along it
        browser.tab(page, "Play")
        browser.choose(page, "play-word", "runs/ruby")
        browser.fill(page, "play-steps", 4)
        page.locator("#play-generate").click()
        browser.wait_text(page, "play-message", "2 images of <ruby>")
        page.wait_for_selector("#play-images img")
        browser.choose(page, "blend-a", "runs/ruby")
        browser.choose(page, "blend-b", "runs/mint")
        browser.fill(page, "blend-steps", 4)
        page.locator("#blend-make").click()
        browser.wait_text(page, "play-message", "slerp from <ruby> to <mint>")
        page.wait_for_selector("#blend-frame img")
        first = page.locator("#blend-frame img").get_attribute("src")
        slider = page.locator("#blend-slider input[type=range]")
        slider.focus()
        for _ in range(6):
            slider.press("ArrowRight")
        page.wait_for_function("(src) => document.querySelector('#blend-frame img')?.src !== src", arg=first)
        assert (root / "blends" / "ruby--mint.png").is_file()

        # Evaluate: pick the runs, run dti evaluate, read its report in the page
        browser.tab(page, "Evaluate")
        page.locator("#eval-runs label", has_text="runs/ruby").click()
        browser.fill(page, "eval-steps", 4)
        page.locator("#eval-start").click()
        browser.wait_text(page, "eval-message", "report written", timeout=120_000)
        frame = page.frame_locator("#eval-frame")
        frame.locator("body").wait_for()
        assert "dti evaluate: 1 run(s) on dti-mini" in frame.locator("body").inner_text()
        # offline: the page, its scripts, fonts and images all came from the app itself
        elsewhere = [u for u in page.requested if not u.startswith((url, "data:", "blob:"))]
        assert page.requested and not elsewhere, elsewhere[:5]
