"""``dti ui`` as a command: it serves the page offline (no script or stylesheet from elsewhere), a taken
port is one line, and Ctrl-C ends it cleanly."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from tests.ui.conftest import free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason='gradio is not installed (pip install "dti[ui]")')


def test_serves_offline_refuses_a_taken_port_and_ends_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "dti", "ui", "--workspace", str(tmp_path / "ws"), "--port", str(port), "--no-worker"]
    out, err = (open(tmp_path / name, "w") for name in ("stdout", "stderr"))  # files: a full pipe never blocks the server
    # Ctrl-C as in a terminal: a shell that starts a job in the background ignores SIGINT for it, and the child
    # would inherit that (CI launched with `&` saw the server ignore the Ctrl-C)
    terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env, preexec_fn=terminal)
    try:
        page, deadline = None, time.time() + 90
        while page is None and time.time() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.3)
        assert page is not None, (tmp_path / "stderr").read_text() if proc.poll() is not None else "no page"
        outside = re.findall(r"<(?:script[^>]*src|link[^>]*rel=\"stylesheet\"[^>]*href)=\"(https?://[^\"]+)", page)
        assert not [u for u in outside if not u.startswith(f"http://127.0.0.1:{port}")], outside
        assert (tmp_path / "ws" / ".ui").is_dir() and (tmp_path / "ws" / "runs").is_dir()
        second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert (
            second.returncode == 2
            and second.stderr == f"error: cannot serve on 127.0.0.1:{port}: Address already in use; choose another --port\n"
        )
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, (code, (tmp_path / "stderr").read_text()[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
