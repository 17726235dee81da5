"""The one process that runs a workspace's queue, apart from the web server.

Each job is ``python -m dti train ...`` in the workspace (the same code as the command line), its
output in ``.ui/logs/<job>.log``; a job whose run folder already holds a run continues it with
``dti train --resume``. One worker per workspace: it holds ``.ui/worker.lock`` (an ``flock``, freed by
the kernel when the worker dies), so two UIs on one workspace never run a job twice; dti's own run
folder lock is the second guard.

A stop asked in the queue file is sent to the job as SIGTERM: dti saves a checkpoint and exits 143. A
worker that is itself told to end (SIGTERM, or the UI that started it is gone) stops its job the same
way and puts it back in the queue, so the next worker resumes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from dti.ui.command import resume_argv
from dti.ui.queue import Job, Queue
from dti.ui.workspace import Workspace

STOPPED_CODES = (130, 143)  # dti's exit after Ctrl-C / SIGTERM: a checkpoint was saved


class WorkerLock:
    """The workspace's worker lock; ``held`` is False when another worker has it."""

    def __init__(self, workspace: Workspace) -> None:
        self.path = workspace.state / "worker.lock"
        self.file: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self.file = handle
        return True

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def held_by_other(workspace: Workspace) -> bool:
    """Whether a live worker holds the workspace's lock (the UI shows it; nothing is taken)."""
    lock = WorkerLock(workspace)
    if lock.acquire():
        lock.release()
        return False
    return True


class Worker:
    """Runs queued jobs one at a time until told to end (``ending``), or the queue is empty (``once``)."""

    def __init__(self, workspace: Workspace, poll: float = 0.3, parent: int | None = None) -> None:
        self.workspace = workspace
        self.queue = Queue(workspace.queue_file)
        self.poll = poll
        self.parent = parent  # the UI's pid: when it is gone, the worker ends too
        self.ending = False

    def should_end(self) -> bool:
        return self.ending or (self.parent is not None and os.getppid() != self.parent)

    def command(self, job: Job) -> list[str]:
        """The job's argv, or its resume when its run folder already holds a run (a stopped or killed job)."""
        out = self.workspace.root / job.output
        started = (out / "config.json").is_file() or (out / ".dti-overwrite" / "config.json").is_file()
        return resume_argv(job.output) if started else list(job.argv)

    def run_job(self, job: Job) -> str:
        """Run one claimed job to its end; returns its final state."""
        argv = self.command(job)
        log_path = self.workspace.log(job.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ dti {shlex.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "dti", *argv], cwd=self.workspace.root, stdout=log, stderr=log, env=env)
            self.queue.update(job.id, pid=proc.pid, message="resuming from its checkpoint" if "--resume" in argv else "training")
            asked, ended = False, False
            while proc.poll() is None:
                time.sleep(self.poll)
                current = _current(self.queue, job.id)
                if not asked and (current is None or current.state == "stopping" or self.should_end()):
                    asked, ended = True, current is not None and current.state != "stopping"
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
        code = proc.returncode
        last = _last_line(log_path)
        current = _current(self.queue, job.id)
        if current is None:  # removed meanwhile (it cannot be removed while running; a hand-edited file)
            return "removed"
        if code == 0:
            state, message = "done", last or "finished"
        elif current.state == "stopping":  # also a stop while the model was still loading (no checkpoint yet)
            state, message = "stopped", last if code in STOPPED_CODES and last else "stopped; resume continues from its last checkpoint"
        elif code in STOPPED_CODES or ended:
            state, message = "queued", "interrupted; it continues from its last checkpoint"
        else:
            state, message = "failed", last or f"dti exited with status {code}"
        self.queue.update(job.id, state=state, message=message, pid=None, worker=None, ended=time.time())
        return state

    def run(self, once: bool = False) -> int:
        """The loop; returns the exit status (0, or 3 when another worker holds the workspace)."""
        lock = WorkerLock(self.workspace)
        if not lock.acquire():
            print(f"another dti ui worker runs the queue of {self.workspace.root}; this one ends", file=sys.stderr)
            return 3
        try:
            self.queue.recover()
            while not self.should_end():
                job = self.queue.claim(os.getpid())
                if job is None:
                    if once:
                        break
                    time.sleep(self.poll)
                    continue
                self.run_job(job)
        finally:
            lock.release()
        return 0


def _current(queue: Queue, job_id: str) -> Job | None:
    return next((j for j in queue.jobs() if j.id == job_id), None)


def _last_line(path: Path) -> str:
    """The last line dti wrote (its result, or its one-line error), without progress-bar noise."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    said = [line for line in lines if line and not line.startswith("$ ")]
    keep = [line for line in said if line.startswith(("error:", "stopped:", "learned", "interrupted"))] or said
    return keep[-1][:400] if keep else ""


def main(argv: list[str] | None = None) -> int:
    """``python -m dti.ui.worker WORKSPACE [--parent PID] [--once]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dti.ui.worker")
    parser.add_argument("workspace")
    parser.add_argument("--parent", type=int)
    parser.add_argument("--once", action="store_true", help="end when the queue has nothing left to run")
    parser.add_argument("--poll", type=float, default=0.3)
    args = parser.parse_args(argv)
    worker = Worker(Workspace(args.workspace).create(), args.poll, args.parent)

    def end(signum: int, frame: object) -> None:
        worker.ending = True

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    return worker.run(args.once)


if __name__ == "__main__":
    sys.exit(main())
