"""Screenshots of each page of `dti ui` (docs/ui/*.png, shown in README): a fresh workspace, two
dti-mini words trained through the app, each page as a person sees it. Needs gradio, playwright and
chromium. Run from the repository root: python docs/ui/screenshots.py [--out docs/ui]"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.ui import browser  # noqa: E402  (the browser tests' own helpers)
from tests.ui.conftest import mini_photos  # noqa: E402

SETTINGS = {"validation_every": 10, "checkpoint_every": 10, "sample_steps": 10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "ui"))
    out = Path(parser.parse_args().out)
    why = browser.why_no_browser()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ruby = sorted(mini_photos(tmp_path / "ruby", "ruby", 5).iterdir())
        mint = sorted(mini_photos(tmp_path / "mint", "mint", 5).iterdir())
        with browser.served(tmp_path / "dti-workspace") as (url, _ctx), browser.browser_page(url) as page:

            def shot(name: str) -> None:
                page.locator("h2").first.click()  # no field focused
                page.wait_for_timeout(600)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(f"wrote {out / name}.png")

            browser.new_word(page, mint, "<mint>", "circle", {"steps": 40, **SETTINGS})
            browser.tab(page, "New word")
            page.locator("#photos-upload input[type=file]").set_input_files([str(p) for p in ruby])
            page.wait_for_function("document.querySelectorAll('#thumbs img').length >= 5")
            browser.fill(page, "token", "<ruby>")
            browser.fill(page, "init", "star")
            for name, value in {"steps": 80, **SETTINGS}.items():
                browser.fill(page, f"set-{name}", value)
            browser.wait_text(page, "word-notes", "is a new word")
            browser.wait_text(page, "command", "--steps 80")
            shot("new-word")
            page.locator("#start").click()
            browser.wait_text(page, "start-result", "queued <ruby>")
            browser.tab(page, "Queue")
            page.wait_for_function("() => /<ruby>.*running/s.test(document.getElementById('jobs')?.innerText || '')", timeout=300_000)
            browser.choose(page, "job-pick", "<ruby>")
            halfway = "() => /step ([3-7][0-9]) of 80/.test(document.getElementById('progress')?.innerText || '')"
            page.wait_for_function(halfway, timeout=300_000)
            page.wait_for_selector("#live-sample img")
            shot("queue")
            page.wait_for_function("() => (document.getElementById('jobs')?.innerText.match(/done/g) || []).length >= 2", timeout=300_000)
            browser.tab(page, "Words")
            browser.choose(page, "word-pick", "runs/ruby")
            browser.wait_text(page, "word-inspect", "nearest by cosine")
            page.wait_for_selector("#word-norms img")
            shot("words")
            browser.tab(page, "Play")
            browser.choose(page, "play-word", "runs/ruby")
            browser.fill(page, "play-prompt", "a {} on the left on a striped teal background")
            page.locator("#play-generate").click()
            browser.wait_text(page, "play-message", "images of <ruby>", timeout=300_000)
            browser.choose(page, "blend-a", "runs/ruby")
            browser.choose(page, "blend-b", "runs/mint")
            page.locator("#blend-make").click()
            browser.wait_text(page, "play-message", "slerp from", timeout=300_000)
            slider = page.locator("#blend-slider input[type=range]")
            slider.focus()
            for _ in range(3):
                slider.press("ArrowRight")
            shot("play")
            browser.tab(page, "Evaluate")
            page.locator("#eval-runs label", has_text="runs/ruby").click()
            page.locator("#eval-runs label", has_text="runs/mint").click()
            page.locator("#eval-start").click()
            browser.wait_text(page, "eval-message", "report written", timeout=300_000)
            page.frame_locator("#eval-frame").locator("body").wait_for()
            time.sleep(1)
            shot("evaluate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
