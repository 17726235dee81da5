"""The acceptance harness judges as its standard says: a harness that called everything good would
make every case pass, so its classifier and its before/after comparison are tested on made-up results."""

from __future__ import annotations

import pytest

from . import hostile


def judge(expect: str, code: int, stderr: str = "", mention: tuple[str, ...] = (), exc: str | None = None) -> str:
    case = hostile.Case("made-up", "cli", expect, mention=mention)
    return hostile.classify(case, hostile.Result(code=code, stderr=stderr, exc=exc))[0]


@pytest.mark.parametrize(
    ("expect", "code", "stderr", "mention", "want"),
    [
        ("refuse", 2, "error: --steps must be positive\n", ("steps",), "good"),
        ("refuse", 2, "error: --steps must be positive\nmore text\n", (), "poor"),
        ("refuse", 2, "error: something else\n", ("steps",), "poor"),
        ("refuse", 0, "", (), "poor"),
        ("refuse", 1, "", (), "poor"),
        ("refuse", 1, "Traceback (most recent call last):\n  File 'x', line 1\nValueError: boom\n", (), "traceback"),
        ("refuse", 2, "error: could not write /out/.c.safetensors.dti-new: No space left on device\n", (), "poor"),
        ("refuse-or-warn", 0, "", (), "poor"),
        ("refuse-or-warn", 0, "warning: --kappa is huge\n", (), "good"),
        ("ok", 0, "", (), "good"),
        ("ok", 0, "some noise\n", (), "poor"),
        ("ok", 2, "error: refused\n", (), "poor"),
        ("warn", 0, "", ("transparent",), "poor"),
        ("warn", 0, "warning: a.png is transparent\n", ("transparent",), "good"),
        ("warn", 0, "UserWarning: a.png is transparent\n", ("transparent",), "poor"),
        ("stop:143", 143, "stopped: SIGTERM; dti train --resume run\n", (), "good"),
        ("stop:143", 143, "stopped\n", (), "poor"),
        ("stop:143", 1, "stopped: dti train --resume run\n", (), "poor"),
        ("any", 0, "", (), "good"),
        ("any", 2, "error: no\n", (), "good"),
    ],
)
def test_classify(expect, code, stderr, mention, want):
    assert judge(expect, code, stderr, mention) == want


def test_an_uncaught_api_exception_is_a_traceback():
    assert judge("ok", 1, exc="AttributeError: 'NoneType' object has no attribute 'x'") == "traceback"


def test_compare_finds_lost_changed_temp_and_corrupt_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "gone.txt").write_text("mine")
    (tmp_path / "edit.txt").write_text("mine")
    before = hostile.snapshot(tmp_path)
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "edit.txt").write_text("changed")
    (tmp_path / ".out.safetensors.dti-new").write_bytes(b"half")
    (tmp_path / "out.safetensors").write_bytes(b"not a safetensors file")
    issues = hostile.compare(before, hostile.snapshot(tmp_path), tmp_path, expect_refusal=False, may_change=())
    notes = [note for cls, note in issues if cls == "data-loss"]
    assert any("removed gone.txt" in n for n in notes)
    assert any("changed edit.txt" in n for n in notes)
    assert any("temp/half-written" in n for n in notes)
    assert any("corrupt output out.safetensors" in n for n in notes)
    assert not any("keep.txt" in n for _, n in issues)


def test_compare_respects_may_change_and_flags_a_refusal_that_leaves_files(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    before = hostile.snapshot(tmp_path)
    (tmp_path / "run" / "config.json").write_text('{"steps": 2}')
    (tmp_path / "left.json").write_text("{}")
    issues = hostile.compare(before, hostile.snapshot(tmp_path), tmp_path, expect_refusal=True, may_change=("run/*",))
    assert issues == [("poor", "refusal left files behind: left.json")]


def test_a_python_warning_reaches_the_captured_stderr():
    """Under pytest a warning is recorded by pytest, not printed: a case must still see it, as a user would."""
    import warnings

    res = hostile.run_api(lambda: warnings.warn("a library's warning", UserWarning, stacklevel=1))
    assert res.code == 0 and "UserWarning: a library's warning" in res.stderr


def test_a_console_logging_handler_reaches_the_captured_stderr():
    import logging
    import sys

    logger = logging.getLogger("dti-acceptance-made-up")
    handler = logging.StreamHandler(sys.stderr)  # made before the capture, like transformers' own
    logger.addHandler(handler)
    try:
        res = hostile.run_api(lambda: logger.warning("a library logs this"))
    finally:
        logger.removeHandler(handler)
    assert "a library logs this" in res.stderr
    assert handler.stream is sys.stderr  # given back afterwards
