"""What every page shares: the workspace, its queue, the worker the UI started, and loaded pipelines
(one per model, used under a lock: loading a word into a pipeline is not thread-safe)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

from dti.ui.queue import Queue
from dti.ui.worker import held_by_other
from dti.ui.workspace import Workspace


class Context:
    def __init__(self, workspace: Workspace, start_worker: bool = True) -> None:
        self.workspace = workspace
        self.queue = Queue(workspace.queue_file)
        self.start_worker = start_worker
        self.worker: subprocess.Popen | None = None
        self.pipelines: dict[str, Any] = {}
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ the worker
    def ensure_worker(self) -> str:
        """Start the worker unless one runs (this UI's, or another UI's on the same workspace); one line on it."""
        if self.worker is not None and self.worker.poll() is None:
            return f"worker running (pid {self.worker.pid})"
        if held_by_other(self.workspace):
            return "another dti ui's worker runs this workspace's queue"
        if not self.start_worker:
            return "no worker (started with the worker off)"
        import os

        command = [sys.executable, "-m", "dti.ui.worker", str(self.workspace.root), "--parent", str(os.getpid())]
        log = open(self.workspace.state / "worker.log", "a")
        self.worker = subprocess.Popen(command, stdout=log, stderr=log)
        return f"worker started (pid {self.worker.pid})"

    def stop_worker(self, wait: float = 60.0) -> None:
        """End this UI's worker: it stops its job (dti saves a checkpoint) and puts it back in the queue."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(wait)
            except subprocess.TimeoutExpired:
                self.worker.kill()

    # ------------------------------------------------------------------ pipelines
    def pipeline(self, model: str) -> Any:
        """The loaded pipeline of ``model`` (loaded once); call under :attr:`lock`."""
        from dti.use.pipelines import load_pipeline

        if model not in self.pipelines:
            self.pipelines[model] = load_pipeline(
                self.workspace.root / model if "/" in model and (self.workspace.root / model).is_dir() else model
            )[0]
        return self.pipelines[model]

    def run_model(self, run: str) -> str:
        """The model a run folder trained on (its config.json)."""
        data = json.loads((self.workspace.inside(run) / "config.json").read_text())
        return str(data["model"])
