"""Evaluate: pick finished runs, run ``dti evaluate`` on them (the command itself, in the workspace) and
show its report."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import gradio as gr

from dti.core.errors import DTIError
from dti.ui.context import Context
from dti.ui.pages.common import guarded, say


def evaluate_argv(ctx: Context, runs: list[str], metrics: str, seeds: str, sample_steps: int, out: str) -> list[str]:
    """``dti evaluate`` arguments; on dti-mini, the mini judge and the model's own prompts (the only ones it can score)."""
    if not runs:
        raise DTIError("pick at least one finished run")
    argv = ["evaluate", *[ctx.workspace.relative(r) for r in runs], "--out", out, "--metrics", metrics, "--seeds", seeds]
    argv += ["--sample-steps", str(int(sample_steps)), "--quiet"]
    if metrics.strip() == "mini":
        from dti.models import model_hints

        prompts = model_hints(ctx.run_model(runs[0])).get("validation_prompts", ["a {}"])
        path = ctx.workspace.inside(".ui/mini-prompts.txt")
        path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
        argv += ["--prompts", ctx.workspace.relative(path)]
    return argv


def build(ctx: Context) -> Any:
    ws = ctx.workspace
    runs = gr.CheckboxGroup(ws.runs(finished=True), label="runs to evaluate", elem_id="eval-runs")
    with gr.Row():
        metrics = gr.Textbox("mini", label="metrics (mini: the dti-mini judge; dinov2,siglip on real photos)", elem_id="eval-metrics")
        seeds = gr.Textbox("0", label="seeds", elem_id="eval-seeds")
        steps = gr.Number(20, label="sampler steps", precision=0, elem_id="eval-steps")
    start = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
    message = gr.Markdown(elem_id="eval-message")
    report = gr.HTML(elem_id="eval-report")

    @guarded(2)
    def run(chosen: list[str], metric_names: str, seed_text: str, n: float) -> tuple[Any, ...]:
        out = f"evaluations/{time.strftime('%Y%m%d-%H%M%S')}"
        argv = evaluate_argv(ctx, chosen, metric_names, seed_text, int(n or 20), out)
        done = subprocess.run([sys.executable, "-m", "dti", *argv], cwd=ws.root, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.startswith("error:")] or done.stderr.splitlines()[-1:]
            raise DTIError((lines[-1] if lines else f"dti evaluate exited with {done.returncode}").removeprefix("error: "))
        page = ws.inside(f"{out}/report.html")
        frame = f'<iframe id="eval-frame" src="/gradio_api/file={page}" style="width:100%;height:720px;border:1px solid #ddd"></iframe>'
        return say(f"report written to {out}/report.html"), frame

    start.click(run, [runs, metrics, seeds, steps], [message, report])

    def listing() -> Any:
        return gr.update(choices=ws.runs(finished=True))

    return runs, listing
