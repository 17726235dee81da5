"""Queue: every job with its state; stop, resume, reorder, remove (with confirmation); the chosen job's
progress, loss and norm chart and newest sample, live (a timer rereads the queue file and run folder)."""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from dti.ui.context import Context
from dti.ui.live import chart, read_progress
from dti.ui.pages.common import refusal, say
from dti.ui.queue import Job

REFRESH_S = 1.0


def _label(i: int, job: Job) -> str:
    return f"{i + 1}. {job.name} ({job.state}) [{job.id}]"


def _tail(path: Any, n: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


def build(ctx: Context) -> gr.Timer:
    ws, queue = ctx.workspace, ctx.queue
    worker_line = gr.Markdown(elem_id="worker")
    table = gr.Dataframe(
        headers=["#", "word", "state", "progress", "message"],
        interactive=False,
        elem_id="jobs",
        wrap=True,
        column_widths=["5%", "15%", "10%", "25%", "45%"],
    )
    with gr.Row():
        pick = gr.Dropdown([], value=None, label="job", elem_id="job-pick", scale=3)
        stop = gr.Button("Stop", elem_id="job-stop", scale=1)
        resume = gr.Button("Resume", elem_id="job-resume", scale=1)
        up = gr.Button("Move up", elem_id="job-up", scale=1)
        down = gr.Button("Move down", elem_id="job-down", scale=1)
    with gr.Row():
        confirm = gr.Checkbox(label="yes, remove it (its run folder and photos stay)", elem_id="job-confirm")
        remove = gr.Button("Remove from the queue", variant="stop", elem_id="job-remove")
    action = gr.Markdown(elem_id="job-action")
    progress = gr.Markdown(elem_id="progress")
    with gr.Row():
        plot = gr.Image(label="loss and norm", type="pil", elem_id="live-chart", interactive=False, scale=2)
        sample = gr.Image(label="newest samples", type="filepath", elem_id="live-sample", interactive=False, scale=1)
    log = gr.Textbox(label="dti's output", lines=6, max_lines=12, elem_id="job-log", interactive=False)
    choices_state = gr.State([])
    shown_state = gr.State({})

    def refresh(chosen: str | None, known: list, shown: dict) -> tuple[Any, ...]:
        jobs = queue.jobs()
        rows, choices = [], []
        for i, job in enumerate(jobs):
            p = read_progress(ws.root / job.output)
            rows.append([i + 1, job.name, job.state, p.line(), job.message])
            choices.append((_label(i, job), job.id))
        ids = [c[1] for c in choices]
        if chosen not in ids:
            active = [j.id for j in jobs if j.state in ("running", "stopping")]
            chosen = active[0] if active else (ids[-1] if ids else None)
        pick_update = gr.update(choices=choices, value=chosen) if choices != known or chosen != shown.get("id") else gr.skip()
        line = ctx.ensure_worker()
        if chosen is None:
            return line, rows, pick_update, choices, "the queue is empty: start a word on the New word page", None, None, "", {"id": None}
        job = next(j for j in jobs if j.id == chosen)
        p = read_progress(ws.root / job.output)
        key = {"id": chosen, "step": p.step, "sample": str(p.sample), "state": job.state}
        same = key == shown
        text = f"**{html.escape(job.name)}** ({job.state}): {p.line()}" + (f" · newest samples at step {p.sample_step}" if p.sample else "")
        plot_out = gr.skip() if same else chart(p.records)
        sample_out = gr.skip() if same else (str(p.sample) if p.sample else None)
        return line, rows, pick_update, choices, text, plot_out, sample_out, _tail(ws.log(job.id)), key

    outputs = [worker_line, table, pick, choices_state, progress, plot, sample, log, shown_state]
    timer = gr.Timer(REFRESH_S)
    timer.tick(refresh, [pick, choices_state, shown_state], outputs, show_progress="hidden")
    pick.change(refresh, [pick, choices_state, gr.State({})], outputs, show_progress="hidden")

    def act(fn: Any, done: str) -> Any:
        def run(chosen: str | None, *extra: Any) -> str:
            if not chosen:
                return say("choose a job first", "error")
            try:
                job = fn(chosen, *extra)
            except Exception as exc:
                return refusal(exc)
            return say(done.format(name=job.name if job else "", at=time.strftime("%H:%M:%S")))

        return run

    stop.click(act(queue.stop, "stop asked of {name}: dti saves a checkpoint ({at})"), pick, action)
    resume.click(act(queue.resume, "{name} is back in the queue; it continues from its checkpoint ({at})"), pick, action)
    up.click(act(lambda j: queue.move(j, -1) or queue.get(j), "moved {name} up"), pick, action)
    down.click(act(lambda j: queue.move(j, 1) or queue.get(j), "moved {name} down"), pick, action)
    remove.click(act(lambda j, yes: queue.remove(j, bool(yes)), "removed {name} from the queue"), [pick, confirm], action).then(
        lambda: False, None, confirm
    )
    return timer
