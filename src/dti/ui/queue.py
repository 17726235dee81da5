"""The job queue: one JSON file in the workspace, rewritten atomically under a lock.

The file is the only state: a UI or worker that is closed or killed loses nothing, and a restarted one
reads where things stand. Every change is read-modify-write under an ``flock`` (released by the kernel
when its holder dies), so two UIs on one workspace never lose each other's edits, and a job is claimed
by one worker only.

A job moves ``queued`` -> ``running`` -> ``done`` / ``failed``; a stop asked of a running job makes it
``stopping`` until the worker has seen dti save its checkpoint, then ``stopped``; ``resume`` puts a
stopped or failed job back in the queue (the worker then continues its run folder with
``dti train --resume``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError
from dti.core.files import write_json

STATES = ("queued", "running", "stopping", "stopped", "done", "failed")
ACTIVE = ("running", "stopping")  # a worker owns the job


@dataclass
class Job:
    """One ``dti train`` to run: ``argv`` after ``dti``, its run folder ``output`` (workspace-relative)."""

    id: str
    name: str
    argv: list[str]
    output: str
    state: str = "queued"
    message: str = ""
    worker: int | None = None  # pid of the worker running it
    pid: int | None = None  # pid of its dti process
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    runs: int = 0  # how many times a worker started it (a resume is a new start)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (a zombie child counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Queue:
    """The queue file of a workspace (``path``); every method reads the file afresh."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_suffix(".lock")

    # ------------------------------------------------------------------ reading and writing
    def jobs(self) -> list[Job]:
        """The jobs, in queue order (an absent file is an empty queue)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
            return [Job.from_dict(j) for j in data["jobs"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DTIError(f"the queue file {self.path} is damaged ({exc}); move it aside to start an empty queue") from None

    def get(self, job_id: str) -> Job:
        for job in self.jobs():
            if job.id == job_id:
                return job
        raise DTIError(f"no job {job_id!r} in the queue (removed meanwhile?)")

    @contextlib.contextmanager
    def edit(self) -> Iterator[list[Job]]:
        """``with queue.edit() as jobs:`` change the list in place; written back atomically on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                jobs = self.jobs()
                yield jobs
                write_json(self.path, {"version": 1, "jobs": [asdict(j) for j in jobs]})
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _change(self, job_id: str, allowed: tuple[str, ...], what: str, **changes: Any) -> Job:
        with self.edit() as jobs:
            job = _find(jobs, job_id)
            if job.state not in allowed:
                raise DTIError(f"{job.name} is {job.state}; only a {' or '.join(allowed)} job can be {what}")
            for key, value in changes.items():
                setattr(job, key, value)
            return job

    # ------------------------------------------------------------------ what a person does
    def add(self, name: str, argv: list[str], output: str) -> Job:
        """Put a job at the end of the queue."""
        job = Job(id=uuid.uuid4().hex[:10], name=name, argv=list(argv), output=output)
        with self.edit() as jobs:
            if any(j.output == output for j in jobs):
                raise DTIError(f"a job already writes {output}; choose another name")
            jobs.append(job)
        return job

    def move(self, job_id: str, by: int) -> None:
        """Move a job ``by`` places (negative: earlier), among all jobs; the worker takes the first queued one."""
        with self.edit() as jobs:
            job = _find(jobs, job_id)
            at = jobs.index(job)
            jobs.insert(max(0, min(len(jobs) - 1, at + by)), jobs.pop(at))

    def remove(self, job_id: str, confirmed: bool = False) -> Job:
        """Take a job out of the queue (its run folder and photos stay); a running job must be stopped first."""
        if not confirmed:
            raise DTIError("removing a job needs confirmation: tick 'yes, remove it' first")
        with self.edit() as jobs:
            job = _find(jobs, job_id)
            if job.state in ACTIVE:
                raise DTIError(f"{job.name} is {job.state}; stop it first, then remove it")
            jobs.remove(job)
            return job

    def stop(self, job_id: str) -> Job:
        """A running job: ask its worker to stop it (dti saves a checkpoint); a queued one is held back."""
        with self.edit() as jobs:
            job = _find(jobs, job_id)
            if job.state == "running":
                job.state, job.message = "stopping", "stop asked; dti saves a checkpoint after this step"
            elif job.state == "queued":
                job.state, job.message = "stopped", "held back before it started"
            else:
                raise DTIError(f"{job.name} is {job.state}; only a running or queued job can be stopped")
            return job

    def resume(self, job_id: str) -> Job:
        """A stopped or failed job goes back in the queue; the worker continues its run folder."""
        return self._change(job_id, ("stopped", "failed"), "resumed", state="queued", message="waiting to resume")

    # ------------------------------------------------------------------ what the worker does
    def claim(self, worker: int) -> Job | None:
        """The first queued job, now ``running`` for ``worker``; None when nothing waits."""
        with self.edit() as jobs:
            for job in jobs:
                if job.state == "queued":
                    job.state, job.worker, job.pid, job.message = "running", worker, None, "starting"
                    job.started, job.ended, job.runs = time.time(), None, job.runs + 1
                    return job
        return None

    def update(self, job_id: str, **changes: Any) -> Job | None:
        """Change a job's fields (None if it was removed meanwhile)."""
        with self.edit() as jobs:
            for job in jobs:
                if job.id == job_id:
                    for key, value in changes.items():
                        setattr(job, key, value)
                    return job
        return None

    def recover(self) -> list[Job]:
        """Jobs a dead worker left ``running`` / ``stopping``: back in the queue (to resume) or stopped.
        Their dti process, if it outlived the worker, is asked to stop first (it holds the run folder)."""
        with self.edit() as jobs:
            orphans = [j for j in jobs if j.state in ACTIVE and not alive(j.worker)]
        for job in orphans:
            stop_process(job.pid)
        with self.edit() as jobs:
            recovered = []
            for job in jobs:
                if job.id in {o.id for o in orphans} and job.state in ACTIVE:
                    if job.state == "stopping":
                        job.state, job.message = "stopped", "stopped (its worker ended)"
                    else:
                        job.state, job.message = "queued", "its worker ended; it continues from its last checkpoint"
                    job.worker, job.pid = None, None
                    recovered.append(job)
            return recovered


def stop_process(pid: int | None, wait: float = 60.0) -> None:
    """SIGTERM ``pid`` (dti saves a checkpoint and exits) and wait for it to be gone."""
    import signal

    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
    end = time.time() + wait
    while alive(pid) and time.time() < end:
        time.sleep(0.1)


def _find(jobs: list[Job], job_id: str) -> Job:
    for job in jobs:
        if job.id == job_id:
            return job
    raise DTIError(f"no job {job_id!r} in the queue (removed meanwhile?)")
