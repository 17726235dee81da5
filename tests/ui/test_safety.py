"""Binding, auth, uploads and paths: another host needs --auth (one line, exit 2); uploads are checked
for type, size and content; files are served from the workspace only."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image
from tests.ui.conftest import mini_photos

from dti.commands import main
from dti.core.errors import DTIError
from dti.ui import forms, safety


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["ui", "--host", "0.0.0.0"], "--auth user:password"),
        (["ui", "--host", "192.168.1.5", "--auth", "me"], "--auth takes user:password"),
        (["ui", "--host", "0.0.0.0", "--auth", "me:short"], "shorter than 8"),
        (["ui", "--port", "70000"], "is not a port"),
    ],
)
def test_refused_in_one_line(argv, needle, capsys, tmp_path):
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "ws").exists()  # refused before anything is made


def test_local_hosts_need_no_auth_and_auth_is_parsed():
    assert safety.check_host("127.0.0.1", None) is None
    assert safety.check_host("::1", None) is None
    assert safety.check_host("0.0.0.0", "me:long-enough") == ("me", "long-enough")


def test_without_gradio_it_says_what_to_install(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["ui", "--workspace", str(tmp_path / "ws")]) == 2
    assert capsys.readouterr().err == 'error: dti ui needs gradio: pip install "dti[ui]"\n'


def test_uploads_are_checked_for_type_size_and_content(tmp_path, monkeypatch):
    good = sorted(mini_photos(tmp_path / "ok").iterdir())
    assert forms.collect_photos([str(p) for p in good], None) == good
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(DTIError, match=r"fake\.png is not a readable image"):
        forms.collect_photos([str(fake)], None)
    script = tmp_path / "run.sh"
    script.write_text("echo hi")
    with pytest.raises(DTIError, match=r"run\.sh is not a photo dti reads"):
        forms.collect_photos([str(script)], None)
    monkeypatch.setattr(safety, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(DTIError, match="are refused"):
        forms.collect_photos([str(good[0])], None)
    with pytest.raises(DTIError, match="is not a folder"):
        forms.collect_photos([], str(tmp_path / "nowhere"))


def test_workspace_paths_never_lead_out(workspace, tmp_path):
    (workspace.root / "runs" / "a").mkdir()
    assert workspace.inside("runs/a") == workspace.root / "runs" / "a"
    (workspace.root / "runs" / "out").symlink_to(tmp_path)
    for bad in ("../x", "runs/../../x", "/etc/passwd", "runs/out/secret"):
        with pytest.raises(DTIError, match="outside the workspace"):
            workspace.inside(bad)


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason='gradio is not installed (pip install "dti[ui]")')
def test_the_server_serves_files_from_the_workspace_only(tmp_path):
    from tests.ui.browser import served

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    root = tmp_path / "ws"
    with served(root, worker=False) as (url, _ctx):
        inside = root / "runs" / "a" / "samples.png"
        inside.parent.mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(inside)

        def status(path: str) -> int:
            try:
                return urllib.request.urlopen(url + "gradio_api/file=" + urllib.parse.quote(path, safe="/=")).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status(str(inside)) == 200
        for path in (
            str(secret),
            f"{root}/../secret.txt",
            f"{root}/runs/../../secret.txt",
            "/etc/passwd",
            str(root / ".ui" / "queue.lock"),
        ):
            assert status(path) in (403, 404), path
