"""The worker: one per workspace; a job that fails ends ``failed`` with dti's one line; a job whose
dti process was killed (a dead job, its worker gone too) is resumed from its checkpoint by the next
worker and finishes with nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.ui.conftest import mini_photos
from tests.ui.test_queue import dead_pid

from dti.ui.command import train_argv
from dti.ui.queue import Queue
from dti.ui.worker import Worker, WorkerLock, held_by_other


def test_one_worker_per_workspace(workspace):
    first = WorkerLock(workspace)
    assert first.acquire()
    try:
        assert held_by_other(workspace)
        assert Worker(workspace).run(once=True) == 3  # the second worker ends at once
    finally:
        first.release()
    assert not held_by_other(workspace)


def test_a_failing_job_ends_failed_with_dtis_line(workspace):
    queue = Queue(workspace.queue_file)
    job = queue.add(
        "<x>", ["train", "photos/none", "--token", "<x>", "--init", "star", "--model", "dti-mini", "--output", "runs/x"], "runs/x"
    )
    assert Worker(workspace, poll=0.1).run(once=True) == 0
    done = queue.get(job.id)
    assert done.state == "failed" and done.message.startswith("error:") and "photos/none" in done.message
    assert done.pid is None and done.worker is None


def test_a_dead_job_is_resumed_by_the_next_worker(workspace):
    mini_photos(workspace.root / "photos" / "ruby")
    settings = {"steps": 12, "batch_size": 1, "checkpoint_every": 2, "validation_every": 0, "sample_steps": 1}
    argv = train_argv("photos/ruby", "<ruby>", "star", "dti-mini", "runs/ruby", "dti", settings)
    queue = Queue(workspace.queue_file)
    job = queue.add("<ruby>", argv, "runs/ruby")
    queue.claim(worker=dead_pid())  # the worker that ran it is gone ...
    run = workspace.root / "runs" / "ruby"
    proc = subprocess.Popen([sys.executable, "-m", "dti", *argv], cwd=workspace.root, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # ... and its dti process is killed mid-run: no clean checkpoint, no concept
    proc.wait()
    assert not (run / "concept.safetensors").exists()
    queue.update(job.id, pid=proc.pid)
    assert Worker(workspace, poll=0.1).run(once=True) == 0
    done = queue.get(job.id)
    assert done.state == "done" and done.runs == 2, done
    log = workspace.log(job.id).read_text()
    assert "$ dti train --resume runs/ruby" in log and "resumed at step" in log, log[-400:]
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(13))
    assert (run / "concept.safetensors").is_file()


def test_closing_the_ui_puts_the_running_job_back_and_the_next_worker_finishes_it(workspace):
    mini_photos(workspace.root / "photos" / "mint", "mint")
    settings = {"steps": 12, "batch_size": 1, "checkpoint_every": 2, "validation_every": 0, "sample_steps": 1}
    queue = Queue(workspace.queue_file)
    job = queue.add("<mint>", train_argv("photos/mint", "<mint>", "circle", "dti-mini", "runs/mint", "dti", settings), "runs/mint")
    worker = subprocess.Popen([sys.executable, "-m", "dti.ui.worker", str(workspace.root), "--poll", "0.1"])
    run = workspace.root / "runs" / "mint"
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    worker.terminate()  # what closing the UI does to its worker
    assert worker.wait(60) == 0
    left = queue.get(job.id)
    assert left.state == "queued" and "continues from its last checkpoint" in left.message, left
    assert "SIGTERM" in workspace.log(job.id).read_text()  # dti was asked to stop, and saved a checkpoint
    assert Worker(workspace, poll=0.1).run(once=True) == 0
    assert queue.get(job.id).state == "done"
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(13))


def test_stop_then_resume(workspace):
    import threading

    mini_photos(workspace.root / "photos" / "sky", "sky")
    settings = {"steps": 6, "batch_size": 1, "checkpoint_every": 2, "validation_every": 0, "sample_steps": 1}
    queue = Queue(workspace.queue_file)
    job = queue.add("<sky>", train_argv("photos/sky", "<sky>", "square", "dti-mini", "runs/sky", "dti", settings), "runs/sky")

    def stop_once_started() -> None:
        deadline = time.time() + 60
        while queue.get(job.id).pid is None and time.time() < deadline:
            time.sleep(0.05)
        queue.stop(job.id)

    stopper = threading.Thread(target=stop_once_started)
    stopper.start()
    Worker(workspace, poll=0.1).run(once=True)
    stopper.join()
    stopped = queue.get(job.id)
    assert stopped.state == "stopped" and stopped.pid is None, stopped
    assert not (workspace.root / "runs" / "sky" / "concept.safetensors").exists()
    assert Worker(workspace, poll=0.1).run(once=True) == 0  # a stopped job stays stopped
    assert queue.get(job.id).state == "stopped"
    queue.resume(job.id)
    Worker(workspace, poll=0.1).run(once=True)
    assert queue.get(job.id).state == "done" and (workspace.root / "runs" / "sky" / "concept.safetensors").is_file()
