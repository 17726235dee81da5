"""The queue file: add, reorder, stop, resume, remove (confirmed), claim; edits from two processes at
once are all kept; a job a dead worker left running goes back in the queue."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from dti.core.errors import DTIError
from dti.ui.queue import Queue


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make(tmp_path, names=("a", "b", "c")) -> tuple[Queue, list]:
    queue = Queue(tmp_path / "queue.json")
    return queue, [queue.add(f"<{n}>", ["train", n], f"runs/{n}") for n in names]


def test_add_reorder_claim_and_the_file(tmp_path):
    queue, (a, b, c) = make(tmp_path)
    queue.move(c.id, -2)
    queue.move(a.id, 5)  # past the end: stays last
    assert [j.name for j in queue.jobs()] == ["<c>", "<b>", "<a>"]
    data = json.loads((tmp_path / "queue.json").read_text())
    assert [j["id"] for j in data["jobs"]] == [c.id, b.id, a.id]  # the file is the state
    claimed = queue.claim(worker=1234)
    assert claimed.id == c.id and claimed.state == "running" and claimed.worker == 1234 and claimed.runs == 1
    assert queue.claim(worker=1234).id == b.id  # the next queued one, never the running one
    with pytest.raises(DTIError, match="already writes runs/a"):
        queue.add("<a2>", ["train"], "runs/a")


def test_stop_resume_and_remove_need_the_right_state(tmp_path):
    queue, (a, b, _) = make(tmp_path)
    queue.claim(worker=1)
    assert queue.stop(a.id).state == "stopping"
    assert queue.stop(b.id).state == "stopped"  # queued: held back, never started
    with pytest.raises(DTIError, match="stop it first"):
        queue.remove(a.id, confirmed=True)
    with pytest.raises(DTIError, match="confirmation"):
        queue.remove(b.id)
    assert queue.get(b.id).state == "stopped"  # nothing removed without confirmation
    with pytest.raises(DTIError, match="only a stopped or failed job can be resumed"):
        queue.resume(a.id)
    assert queue.resume(b.id).state == "queued"
    queue.remove(b.id, confirmed=True)
    assert [j.name for j in queue.jobs()] == ["<a>", "<c>"]
    with pytest.raises(DTIError, match="no job"):
        queue.stop(b.id)


def test_a_failed_edit_writes_nothing(tmp_path):
    queue, _ = make(tmp_path)
    before = (tmp_path / "queue.json").read_text()
    with pytest.raises(DTIError), queue.edit() as jobs:
        jobs.clear()
        raise DTIError("changed my mind")
    assert (tmp_path / "queue.json").read_text() == before


def test_a_damaged_file_is_one_line(tmp_path):
    (tmp_path / "queue.json").write_text("{not json")
    with pytest.raises(DTIError, match=r"damaged.*move it aside"):
        Queue(tmp_path / "queue.json").jobs()


def _add_many(path: str, prefix: str) -> None:
    queue = Queue(path)
    for i in range(15):
        queue.add(f"{prefix}{i}", ["train"], f"runs/{prefix}{i}")


def test_two_processes_editing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "queue.json")
    procs = [multiprocessing.get_context("fork").Process(target=_add_many, args=(path, p)) for p in ("x", "y")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    names = sorted(j.name for j in Queue(path).jobs())
    assert names == sorted([f"x{i}" for i in range(15)] + [f"y{i}" for i in range(15)])


def test_restart_recovery_of_a_dead_workers_jobs(tmp_path):
    queue, (a, b, _) = make(tmp_path)
    queue.claim(worker=dead_pid())  # a: running, its worker gone
    queue.claim(worker=dead_pid())
    queue.stop(b.id)  # b: stopping, its worker gone before it saw the stop
    live = queue.claim(worker=1)  # c: pid 1 is alive: another worker's job, left alone
    recovered = {j.id: j.state for j in queue.recover()}
    assert recovered == {a.id: "queued", b.id: "stopped"}
    assert queue.get(live.id).state == "running"
    assert queue.get(a.id).worker is None and "continues from its last checkpoint" in queue.get(a.id).message
