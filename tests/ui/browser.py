"""Driving the app in a real browser (system chromium through Playwright): a served app on a fresh
workspace, and the steps a person takes. Shared by the browser tests and the screenshot script."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMEOUT_MS = 90_000


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the one line saying why they skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    try:
        import gradio  # noqa: F401
    except ImportError:
        return 'gradio is not installed (pip install "dti[ui]")'
    if not chromium():
        return "no chromium on PATH (apt-get install chromium)"
    return None


def chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)


@contextlib.contextmanager
def served(root: Path, worker: bool = True) -> Iterator[tuple[str, Any]]:
    """The app on a free local port over workspace ``root``, its worker running (``worker``); (url, context)."""
    from tests.ui.conftest import free_port

    from dti.ui.app import serve
    from dti.ui.workspace import Workspace

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = free_port()
    demo, ctx = serve(Workspace(root).create(), "127.0.0.1", port, None, start_worker=worker, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", ctx
    finally:
        ctx.stop_worker()
        demo.close()


@contextlib.contextmanager
def browser_page(url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.requested = []  # every address the page asks for: all must be the app's own
            page.on("request", lambda request: page.requested.append(request.url))
            page.goto(url)
            page.wait_for_selector("#start")
            yield page
        finally:
            browser.close()


def fill(page: Any, elem_id: str, value: Any) -> None:
    """Type into a textbox or number field and leave it (as a person does)."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(str(value))
    box.press("Tab")


def choose(page: Any, elem_id: str, option: str) -> None:
    """Pick ``option`` (text it contains) in a dropdown."""
    page.locator(f"#{elem_id} input").first.click()
    page.locator("ul[role=listbox] li", has_text=option).first.click()


def tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def text(page: Any, elem_id: str) -> str:
    """What an element shows: a textbox's value, else its text."""
    box = page.locator(f"#{elem_id} textarea")
    return box.first.input_value() if box.count() else page.locator(f"#{elem_id}").inner_text()


def wait_text(page: Any, elem_id: str, needle: str, timeout: int = TIMEOUT_MS) -> None:
    """Wait until the element (or its textbox's value) shows ``needle``."""
    page.wait_for_function(
        """([id, needle]) => {
            const el = document.getElementById(id); if (!el) return false;
            const box = el.querySelector('textarea');
            return ((box ? box.value : '') + (el.innerText || '')).includes(needle);
        }""",
        arg=[elem_id, needle],
        timeout=timeout,
    )


def new_word(page: Any, photos: list[Path], token: str, init: str, settings: dict[str, Any]) -> None:
    """Fill the New word page and press Start."""
    tab(page, "New word")
    page.locator("#photos-upload input[type=file]").set_input_files([str(p) for p in photos])
    page.wait_for_function(f"document.querySelectorAll('#thumbs img').length >= {len(photos)}")
    page.wait_for_function("document.querySelector('#set-steps input').value !== ''")
    fill(page, "token", token)
    fill(page, "init", init)
    for name, value in settings.items():
        fill(page, f"set-{name}", value)
    wait_text(page, "word-notes", "is a new word")
    page.locator("#start").click()
    wait_text(page, "start-result", f"queued {token}")
